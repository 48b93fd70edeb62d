//! The run screen's picture of the plan: a layered layout computed once per run, in time
//! linear in nodes and edges — layers by longest path from the sources, each layer ordered by
//! the mean position of its predecessors (one barycentre sweep), tall layers wrapped into
//! several columns. The browser only draws it and colours it.
//!
//! The plan comes from the workflow file the run started with; when that file is gone or no
//! longer has the run's tasks, from the run's own log (tasks by phase, without their `after`
//! edges), so every task is drawn from the first second either way.

use std::sync::Arc;

use serde::Serialize;

use crate::check::ir::Workflow;
use crate::model::RunState;
use crate::plan::{Node, Plan};

/// The most nodes a column holds before a layer wraps into another column.
const MAX_ROWS: usize = 40;

#[derive(Debug, Serialize)]
pub(crate) struct Layout {
    /// `workflow` (the file's plan) or `log` (the run's tasks, without `after` edges).
    pub source: &'static str,
    pub nodes: Vec<LayoutNode>,
    /// `[from, to]` node indexes.
    pub edges: Vec<[u32; 2]>,
    pub columns: u32,
    pub rows: u32,
    pub phases: Vec<PhaseSpan>,
    /// The feedback edge: from the last gate back to a phase.
    pub feedback: Option<FeedbackEdge>,
}

#[derive(Debug, Serialize)]
pub(crate) struct LayoutNode {
    /// The task's name (a fan-out's instances `name[key]` are drawn as this one node), or the
    /// phase's name for a gate.
    pub name: Arc<str>,
    pub kind: &'static str,
    pub phase: Arc<str>,
    pub agent: Option<Arc<str>>,
    pub col: u32,
    /// Row within the column, centred against the tallest column.
    pub row: f32,
    /// A gate's rule and where it is written (`rule at FILE:L:C`), or `default gate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PhaseSpan {
    pub name: Arc<str>,
    pub first_col: u32,
    pub last_col: u32,
    pub always: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct FeedbackEdge {
    pub from: u32,
    pub to_phase: String,
    pub max_loops: u32,
    pub rule: String,
}

/// A graph to lay out: nodes, edges, and a topological order.
struct Graph {
    nodes: Vec<LayoutNode>,
    edges: Vec<[u32; 2]>,
    order: Vec<u32>,
}

/// The layout of a workflow's plan.
pub(crate) fn from_plan(wf: &Workflow, plan: &Plan) -> Layout {
    let nodes = plan
        .graph
        .node_indices()
        .map(|n| match plan.node(n) {
            Node::Task { task, phase } => {
                let t = wf.task(task);
                node(
                    &t.name,
                    "task",
                    &wf.phase(phase).name,
                    Some(&wf.agent(t.agent).name),
                )
            }
            Node::Gate { phase } => {
                let p = wf.phase(phase);
                let mut n = node(&p.name, "gate", &p.name, None);
                n.rule = Some(
                    p.gate
                        .as_ref()
                        .map_or("default gate".into(), crate::exec::describe_rule),
                );
                n
            }
        })
        .collect();
    let edges = plan
        .graph
        .raw_edges()
        .iter()
        .map(|e| [e.source().index() as u32, e.target().index() as u32])
        .collect();
    let order = plan.order.iter().map(|n| n.index() as u32).collect();
    let mut layout = lay_out(Graph {
        nodes,
        edges,
        order,
    });
    layout.source = "workflow";
    layout.phases = phase_spans(&layout.nodes, |p| {
        wf.phases.iter().any(|ph| *ph.name == **p && ph.always)
    });
    layout.feedback = match (&plan.feedback, &wf.feedback) {
        (Some(f), Some(rule)) => Some(FeedbackEdge {
            from: f.from.index() as u32,
            to_phase: wf.phase(f.target).name.clone(),
            max_loops: f.max_loops,
            rule: crate::exec::describe_rule(&rule.rule),
        }),
        _ => None,
    };
    layout
}

/// Whether a workflow still describes a run: each of the run's tasks (or fan-out instances,
/// by their task's name) is a task of the same phase in the workflow.
pub(crate) fn describes(wf: &Workflow, state: &RunState) -> bool {
    !state.tasks.is_empty()
        && state.tasks.iter().all(|t| {
            wf.task_by_name(group_of(&t.task))
                .is_some_and(|w| *wf.phase(w.phase).name == *t.phase)
        })
}

/// The task a fan-out instance `name[key]` belongs to; a task's own name otherwise.
pub(crate) fn group_of(task: &str) -> &str {
    match task.find('[') {
        Some(i) if task.ends_with(']') => &task[..i],
        _ => task,
    }
}

/// The layout of a run's tasks as its log lists them: per phase its tasks, then its gate.
pub(crate) fn from_log(state: &RunState) -> Layout {
    let mut nodes: Vec<LayoutNode> = Vec::new();
    let mut edges = Vec::new();
    let mut phases: Vec<Arc<str>> = Vec::new();
    for t in &state.tasks {
        if !phases.contains(&t.phase) {
            phases.push(t.phase.clone());
        }
    }
    let mut previous_gate: Option<u32> = None;
    for phase in &phases {
        let mut seen: Vec<&str> = Vec::new();
        let first = nodes.len() as u32;
        for t in state.tasks.iter().filter(|t| t.phase == *phase) {
            let name = group_of(&t.task);
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            let i = nodes.len() as u32;
            nodes.push(node(name, "task", phase, None));
            if let Some(g) = previous_gate {
                edges.push([g, i]);
            }
        }
        let gate = nodes.len() as u32;
        let mut g = node(phase, "gate", phase, None);
        g.rule = Some("the workflow file is not available: rule unknown".into());
        nodes.push(g);
        edges.extend((first..gate).map(|i| [i, gate]));
        if first == gate {
            if let Some(p) = previous_gate {
                edges.push([p, gate]);
            }
        }
        previous_gate = Some(gate);
    }
    let order = (0..nodes.len() as u32).collect();
    let mut layout = lay_out(Graph {
        nodes,
        edges,
        order,
    });
    layout.source = "log";
    layout.phases = phase_spans(&layout.nodes, |_| false);
    layout
}

fn node(name: &str, kind: &'static str, phase: &str, agent: Option<&str>) -> LayoutNode {
    LayoutNode {
        name: Arc::from(name),
        kind,
        phase: Arc::from(phase),
        agent: agent.map(Arc::from),
        col: 0,
        row: 0.0,
        rule: None,
    }
}

/// Layers, order within layers, wrapping: linear in nodes and edges (plus a sort per layer).
fn lay_out(mut g: Graph) -> Layout {
    let n = g.nodes.len();
    let mut preds: Vec<Vec<u32>> = vec![Vec::new(); n];
    for &[a, b] in &g.edges {
        preds[b as usize].push(a);
    }
    // Longest path from a source, in topological order.
    let mut layer = vec![0usize; n];
    for &v in &g.order {
        let v = v as usize;
        layer[v] = preds[v]
            .iter()
            .map(|&p| layer[p as usize] + 1)
            .max()
            .unwrap_or(0);
    }
    let layers = layer.iter().copied().max().map_or(0, |m| m + 1);
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); layers];
    for &v in &g.order {
        members[layer[v as usize]].push(v);
    }
    // Position of each node within its layer, decided layer by layer: predecessors are
    // always in earlier layers, so their positions are known.
    let mut pos = vec![0f32; n];
    let mut col = 0u32;
    let mut tallest = 0usize;
    let mut placed: Vec<(u32, usize, usize)> = Vec::with_capacity(n); // node, column, row
    for members in &mut members {
        let key = |v: &u32| -> f32 {
            let p = &preds[*v as usize];
            if p.is_empty() {
                *v as f32 / n.max(1) as f32
            } else {
                p.iter().map(|&u| pos[u as usize]).sum::<f32>() / p.len() as f32
            }
        };
        let mut keyed: Vec<(f32, u32)> = members.iter().map(|v| (key(v), *v)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let count = keyed.len();
        for (i, (_, v)) in keyed.iter().enumerate() {
            pos[*v as usize] = i as f32 / count.max(1) as f32;
            placed.push((*v, col as usize + i / MAX_ROWS, i % MAX_ROWS));
        }
        tallest = tallest.max(count.min(MAX_ROWS));
        col += count.div_ceil(MAX_ROWS).max(1) as u32;
    }
    // Centre each column against the tallest.
    let mut height = vec![0usize; col as usize];
    for &(_, c, r) in &placed {
        height[c] = height[c].max(r + 1);
    }
    for (v, c, r) in placed {
        let node = &mut g.nodes[v as usize];
        node.col = c as u32;
        node.row = r as f32 + (tallest - height[c]) as f32 / 2.0;
    }
    Layout {
        source: "workflow",
        nodes: g.nodes,
        edges: g.edges,
        columns: col,
        rows: tallest as u32,
        phases: Vec::new(),
        feedback: None,
    }
}

fn phase_spans(nodes: &[LayoutNode], always: impl Fn(&Arc<str>) -> bool) -> Vec<PhaseSpan> {
    let mut spans: Vec<PhaseSpan> = Vec::new();
    for n in nodes {
        match spans.iter_mut().find(|s| s.name == n.phase) {
            Some(s) => {
                s.first_col = s.first_col.min(n.col);
                s.last_col = s.last_col.max(n.col);
            }
            None => spans.push(PhaseSpan {
                name: n.phase.clone(),
                first_col: n.col,
                last_col: n.col,
                always: always(&n.phase),
            }),
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(n: usize, edges: &[[u32; 2]]) -> Graph {
        Graph {
            nodes: (0..n)
                .map(|i| node(&format!("t{i}"), "task", "p", None))
                .collect(),
            edges: edges.to_vec(),
            order: (0..n as u32).collect(),
        }
    }

    #[test]
    fn layers_follow_the_longest_path() {
        // 0 → 1 → 3, 0 → 2 → 3, 0 → 3: 3 is two layers after 0.
        let l = lay_out(graph(4, &[[0, 1], [1, 3], [0, 2], [2, 3], [0, 3]]));
        let cols: Vec<u32> = l.nodes.iter().map(|n| n.col).collect();
        assert_eq!(cols, [0, 1, 1, 2]);
        assert_eq!(l.columns, 3);
    }

    #[test]
    fn a_wide_layer_wraps_into_columns_of_at_most_max_rows() {
        let n = MAX_ROWS * 2 + 1;
        let l = lay_out(graph(n, &[]));
        assert_eq!(l.columns, 3);
        assert_eq!(l.rows as usize, MAX_ROWS);
        let mut cells: Vec<(u32, u32)> = l.nodes.iter().map(|n| (n.col, n.row as u32)).collect();
        cells.sort_unstable();
        cells.dedup();
        assert_eq!(cells.len(), n, "two nodes in one cell");
    }

    #[test]
    fn instances_of_a_fan_out_belong_to_their_task() {
        assert_eq!(group_of("lint[a.rs]"), "lint");
        assert_eq!(group_of("lint"), "lint");
        assert_eq!(group_of("odd[name"), "odd[name");
    }
}
