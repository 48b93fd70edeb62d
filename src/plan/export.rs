//! The plan in four shapes: deterministic text (snapshots, the default), Graphviz DOT, a Mermaid
//! flowchart and JSON (schema: `docs/plan.schema.json`).

use std::fmt::Write;

use serde::Serialize;

use super::{Analysis, Edge, Node, Plan};
use crate::check::ir::Workflow;
use crate::source::{SourceMap, Span};

fn node_id(wf: &Workflow, node: Node) -> String {
    match node {
        Node::Task { task, .. } => format!("task:{}", wf.task(task).name),
        Node::Gate { phase } => format!("gate:{}", wf.phase(phase).name),
    }
}

fn node_label(wf: &Workflow, node: Node) -> String {
    match node {
        Node::Task { task, .. } => wf.task(task).name.clone(),
        Node::Gate { phase } => format!("gate {}", wf.phase(phase).name),
    }
}

/// The plan as text: phases with their tasks and gates, the order, the feedback edge and the
/// analysis.
pub fn to_text(wf: &Workflow, plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan {}: {} tasks, {} gates, {} edges",
        wf.name,
        wf.tasks.len(),
        wf.phases.len(),
        plan.graph.edge_count()
    );
    for phase in &wf.phases {
        let _ = writeln!(out, "phase {}", phase.name);
        for &task in &phase.tasks {
            let node = plan.task_nodes[task.index()];
            let t = wf.task(task);
            let deps: Vec<String> = plan
                .graph
                .neighbors_directed(node, petgraph::Direction::Incoming)
                .map(|d| node_label(wf, plan.node(d)))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let _ = write!(out, "  task {} on {}", t.name, wf.agent(t.agent).name);
            if let Some(f) = &t.fan_out {
                let _ = write!(out, " {}", f.describe());
            }
            if !deps.is_empty() {
                let _ = write!(out, " after {}", deps.join(", "));
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "  gate {} ({})",
            phase.name,
            if phase.gate.is_some() {
                "rule"
            } else {
                "default"
            }
        );
    }
    if let Some(f) = plan.feedback {
        let _ = writeln!(
            out,
            "feedback: {} ⇢ phase {} (at most {} loop{})",
            node_label(wf, plan.node(f.from)),
            wf.phase(f.target).name,
            f.max_loops,
            if f.max_loops == 1 { "" } else { "s" }
        );
    }
    let order: Vec<String> = plan
        .order
        .iter()
        .map(|n| node_label(wf, plan.node(*n)))
        .collect();
    let _ = writeln!(out, "order: {}", order.join(", "));
    out.push_str(&analysis_text(&plan.analysis));
    out
}

/// The analysis alone, as `conductor check --explain` prints it.
pub fn analysis_text(a: &Analysis) -> String {
    let mut out = String::from("analysis\n");
    for p in &a.phases {
        let _ = writeln!(
            out,
            "  phase {}: {} task{}, critical path {} ({}), width {}",
            p.phase,
            p.tasks,
            if p.tasks == 1 { "" } else { "s" },
            if p.critical_path.is_empty() {
                "-".to_string()
            } else {
                p.critical_path.join(" → ")
            },
            p.critical_path.len(),
            p.width
        );
    }
    for pool in &a.pools {
        let _ = writeln!(
            out,
            "  pool {} (count {}): peak {}{}{}",
            pool.agent,
            pool.count,
            pool.peak,
            pool.phase
                .as_ref()
                .map_or(String::new(), |p| format!(" in phase {p}")),
            if pool.queues { ", queues" } else { "" }
        );
    }
    for f in &a.fan_outs {
        let _ = writeln!(out, "  fan-out {} in phase {}: {}", f.task, f.phase, f.size);
    }
    for name in &a.unused_agents {
        let _ = writeln!(out, "  unused agent: {name}");
    }
    for name in &a.empty_phases {
        let _ = writeln!(out, "  empty phase: {name}");
    }
    for w in &a.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    out
}

/// Graphviz: phases as clusters, gates as diamonds, the feedback edge dashed.
pub fn to_dot(wf: &Workflow, plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", wf.name);
    out.push_str("  compound=true;\n  rankdir=TB;\n");
    out.push_str("  node [shape=box, style=\"rounded,filled\", fillcolor=\"#eef4fb\", fontname=\"Helvetica\"];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=10];\n");
    for phase in &wf.phases {
        let _ = writeln!(out, "  subgraph \"cluster_{}\" {{", phase.name);
        let _ = writeln!(out, "    label=\"phase {}\";", phase.name);
        out.push_str("    style=\"rounded\";\n    color=\"#8899aa\";\n");
        for &task in &phase.tasks {
            let t = wf.task(task);
            let agent = wf.agent(t.agent);
            let fan = t
                .fan_out
                .as_ref()
                .map(|f| format!(" {}", f.describe()))
                .unwrap_or_default();
            let style = if t.fan_out.is_some() {
                ", peripheries=2"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    \"task:{}\" [label=\"{}{fan}\\n{} ({})\"{style}];",
                t.name,
                t.name,
                agent.name,
                agent.kind.name()
            );
        }
        let _ = writeln!(
            out,
            "    \"gate:{}\" [shape=diamond, style=filled, fillcolor=\"#fdf3d8\", label=\"gate\"];",
            phase.name
        );
        out.push_str("  }\n");
    }
    for e in plan.graph.edge_indices() {
        let (a, b) = plan.graph.edge_endpoints(e).expect("edge of this graph");
        let style = match plan.graph[e] {
            Edge::After => "",
            Edge::PhaseOrder => " [color=\"#556677\"]",
            Edge::ToGate => " [color=\"#aab4be\", arrowhead=none]",
        };
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\"{style};",
            node_id(wf, plan.node(a)),
            node_id(wf, plan.node(b))
        );
    }
    if let Some(f) = plan.feedback {
        let target = wf.phase(f.target);
        let head = target.tasks.first().map_or_else(
            || format!("gate:{}", target.name),
            |t| format!("task:{}", wf.task(*t).name),
        );
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{head}\" [style=dashed, color=\"#c0504d\", constraint=false, lhead=\"cluster_{}\", label=\"feedback (≤ {})\"];",
            node_id(wf, plan.node(f.from)),
            target.name,
            f.max_loops
        );
    }
    out.push_str("}\n");
    out
}

/// A Mermaid `flowchart` with phases as subgraphs.
pub fn to_mermaid(wf: &Workflow, plan: &Plan) -> String {
    let id = |node: Node| match node {
        Node::Task { task, .. } => format!("t_{}", wf.task(task).name),
        Node::Gate { phase } => format!("g_{}", wf.phase(phase).name),
    };
    let mut out = String::from("flowchart TD\n");
    for phase in &wf.phases {
        let _ = writeln!(out, "  subgraph p_{}[\"phase {}\"]", phase.name, phase.name);
        for &task in &phase.tasks {
            let t = wf.task(task);
            let fan = t
                .fan_out
                .as_ref()
                .map(|f| format!(" {}", f.describe()))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    t_{}[\"{}{fan}<br/>{}\"]",
                t.name,
                t.name,
                wf.agent(t.agent).name
            );
        }
        let _ = writeln!(out, "    g_{}{{\"gate\"}}", phase.name);
        out.push_str("  end\n");
    }
    for e in plan.graph.edge_indices() {
        let (a, b) = plan.graph.edge_endpoints(e).expect("edge of this graph");
        let arrow = match plan.graph[e] {
            Edge::ToGate => "---",
            _ => "-->",
        };
        let _ = writeln!(out, "  {} {arrow} {}", id(plan.node(a)), id(plan.node(b)));
    }
    if let Some(f) = plan.feedback {
        let target = wf.phase(f.target);
        let _ = writeln!(
            out,
            "  {} -. \"feedback (max {})\" .-> p_{}",
            id(plan.node(f.from)),
            f.max_loops,
            target.name
        );
    }
    out
}

#[derive(Debug, Serialize)]
pub struct PlanJson {
    pub workflow: String,
    pub nodes: Vec<JsonNode>,
    pub edges: Vec<JsonEdge>,
    pub feedback: Option<JsonFeedback>,
    pub order: Vec<String>,
    pub analysis: Analysis,
}

#[derive(Debug, Serialize)]
pub struct JsonNode {
    pub id: String,
    pub kind: &'static str,
    pub name: String,
    pub phase: String,
    pub agent: Option<String>,
    pub span: Option<JsonSpan>,
    /// A task that fans out: over what, and how many instances when `check` knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<JsonFanOut>,
}

#[derive(Debug, Serialize)]
pub struct JsonFanOut {
    /// `matrix` or `for_each`.
    pub kind: &'static str,
    /// A matrix's instances; null for a list known only at run time.
    pub count: Option<usize>,
    pub max_items: u32,
    pub max_parallel: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct JsonSpan {
    pub file: String,
    pub start: u32,
    pub end: u32,
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Serialize)]
pub struct JsonEdge {
    pub from: String,
    pub to: String,
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
pub struct JsonFeedback {
    pub from: String,
    pub to_phase: String,
    pub max_loops: u32,
}

fn json_span(map: &SourceMap, span: Span) -> JsonSpan {
    let file = map.get(span.file);
    let (line, column) = file.line_col(span.start as usize);
    JsonSpan {
        file: file.name.clone(),
        start: span.start,
        end: span.end,
        line,
        column,
    }
}

/// The plan as JSON, following `docs/plan.schema.json`.
pub fn to_json(wf: &Workflow, plan: &Plan, map: &SourceMap) -> PlanJson {
    let nodes = plan
        .graph
        .node_indices()
        .map(|n| {
            let node = plan.node(n);
            match node {
                Node::Task { task, phase } => {
                    let t = wf.task(task);
                    JsonNode {
                        id: node_id(wf, node),
                        kind: "task",
                        name: t.name.clone(),
                        phase: wf.phase(phase).name.clone(),
                        agent: Some(wf.agent(t.agent).name.clone()),
                        span: Some(json_span(map, t.span)),
                        fan_out: t.fan_out.as_ref().map(|f| JsonFanOut {
                            kind: if f.static_count().is_some() {
                                "matrix"
                            } else {
                                "for_each"
                            },
                            count: f.static_count(),
                            max_items: f.max_items,
                            max_parallel: f.max_parallel,
                        }),
                    }
                }
                Node::Gate { phase } => {
                    let p = wf.phase(phase);
                    JsonNode {
                        id: node_id(wf, node),
                        kind: "gate",
                        name: p.name.clone(),
                        phase: p.name.clone(),
                        agent: None,
                        span: Some(json_span(map, p.gate.as_ref().map_or(p.span, |g| g.span))),
                        fan_out: None,
                    }
                }
            }
        })
        .collect();
    let edges = plan
        .graph
        .edge_indices()
        .map(|e| {
            let (a, b) = plan.graph.edge_endpoints(e).expect("edge of this graph");
            JsonEdge {
                from: node_id(wf, plan.node(a)),
                to: node_id(wf, plan.node(b)),
                kind: match plan.graph[e] {
                    Edge::After => "after",
                    Edge::PhaseOrder => "phase_order",
                    Edge::ToGate => "to_gate",
                },
            }
        })
        .collect();
    PlanJson {
        workflow: wf.name.clone(),
        nodes,
        edges,
        feedback: plan.feedback.map(|f| JsonFeedback {
            from: node_id(wf, plan.node(f.from)),
            to_phase: wf.phase(f.target).name.clone(),
            max_loops: f.max_loops,
        }),
        order: plan
            .order
            .iter()
            .map(|n| node_id(wf, plan.node(*n)))
            .collect(),
        analysis: plan.analysis.clone(),
    }
}
