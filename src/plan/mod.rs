//! IR → Plan: the petgraph DAG the executor walks, and its analysis.
//!
//! Nodes are tasks and phase gates. Edges: each `after` dependency (dependency → task); the gate
//! of phase k → every task of phase k+1 with no `after`; every task of a phase → its gate. The
//! feedback back-edge (last gate → target phase) is kept beside the DAG, so the graph stays
//! acyclic. Orders are deterministic: topological, declaration order breaking ties.

mod analysis;
mod estimate;
mod export;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

pub use analysis::{Analysis, PhaseAnalysis, PoolDemand};
pub use estimate::{budget_warnings, estimate_text};
pub use export::{analysis_text, to_dot, to_json, to_mermaid, to_text, PlanJson};

use crate::check::ir::{PhaseId, TaskId, Workflow};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    Task { task: TaskId, phase: PhaseId },
    Gate { phase: PhaseId },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// `task b after a`: a → b.
    After,
    /// A phase's gate → a task of the next phase that has no `after`.
    PhaseOrder,
    /// A task → its phase's gate.
    ToGate,
}

/// Feedback: after the last gate, the run may return to `target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedbackEdge {
    pub from: NodeIndex,
    pub target: PhaseId,
    pub max_loops: u32,
}

/// The execution plan of one workflow.
#[derive(Debug)]
pub struct Plan {
    pub graph: DiGraph<Node, Edge>,
    /// The node of each task, by `TaskId`.
    pub task_nodes: Vec<NodeIndex>,
    /// The gate node of each phase, by `PhaseId`.
    pub gate_nodes: Vec<NodeIndex>,
    pub feedback: Option<FeedbackEdge>,
    /// Every node in topological order, declaration order breaking ties.
    pub order: Vec<NodeIndex>,
    pub analysis: Analysis,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The checker reports cycles with their paths; reaching this is a bug.
    #[error("internal error: the plan of `{0}` has a cycle the checker did not report")]
    Cycle(String),
}

impl Plan {
    pub fn node(&self, index: NodeIndex) -> Node {
        self.graph[index]
    }

    /// Nodes that must finish before `index` can start.
    pub fn dependencies(&self, index: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.neighbors_directed(index, Direction::Incoming)
    }

    /// Nodes waiting for `index`.
    pub fn dependents(&self, index: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.neighbors_directed(index, Direction::Outgoing)
    }
}

/// Lowers a checked workflow into its plan.
pub fn plan(wf: &Workflow) -> Result<Plan, PlanError> {
    // Exactly the edges added below: each `after`, each task to its gate, a first task from
    // the previous gate, an empty phase from the previous gate.
    let edges = wf
        .tasks
        .iter()
        .map(|t| t.after.len() + 1 + usize::from(t.after.is_empty()))
        .sum::<usize>()
        + wf.phases.len();
    let mut graph = DiGraph::with_capacity(wf.tasks.len() + wf.phases.len(), edges);
    let mut task_nodes = vec![NodeIndex::end(); wf.tasks.len()];
    let mut gate_nodes = Vec::with_capacity(wf.phases.len());
    // Nodes in declaration order: each phase's tasks, then its gate. Indices are the tie-break.
    for phase in &wf.phases {
        for &task in &phase.tasks {
            task_nodes[task.index()] = graph.add_node(Node::Task {
                task,
                phase: phase.id,
            });
        }
        gate_nodes.push(graph.add_node(Node::Gate { phase: phase.id }));
    }
    for (k, phase) in wf.phases.iter().enumerate() {
        let gate = gate_nodes[k];
        let previous_gate = k.checked_sub(1).map(|p| gate_nodes[p]);
        for &task in &phase.tasks {
            let node = task_nodes[task.index()];
            let t = wf.task(task);
            if t.after.is_empty() {
                if let Some(prev) = previous_gate {
                    graph.add_edge(prev, node, Edge::PhaseOrder);
                }
            }
            for dep in &t.after {
                graph.add_edge(task_nodes[dep.index()], node, Edge::After);
            }
            graph.add_edge(node, gate, Edge::ToGate);
        }
        // An empty phase still waits for the previous one.
        if phase.tasks.is_empty() {
            if let Some(prev) = previous_gate {
                graph.add_edge(prev, gate, Edge::PhaseOrder);
            }
        }
    }
    let order = topological(&graph).ok_or_else(|| PlanError::Cycle(wf.name.clone()))?;
    let feedback = wf.feedback.as_ref().and_then(|f| {
        gate_nodes.last().map(|&from| FeedbackEdge {
            from,
            target: f.target,
            max_loops: wf.settings.max_feedback_loops,
        })
    });
    let mut plan = Plan {
        graph,
        task_nodes,
        gate_nodes,
        feedback,
        order,
        analysis: Analysis::default(),
    };
    plan.analysis = analysis::analyse(wf, &plan);
    Ok(plan)
}

/// Kahn's algorithm with a min-heap on node index, so ties go to the node declared first.
fn topological(graph: &DiGraph<Node, Edge>) -> Option<Vec<NodeIndex>> {
    let mut indegree: Vec<usize> = graph
        .node_indices()
        .map(|n| graph.neighbors_directed(n, Direction::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<Reverse<NodeIndex>> = graph
        .node_indices()
        .filter(|n| indegree[n.index()] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(graph.node_count());
    while let Some(Reverse(n)) = ready.pop() {
        order.push(n);
        for next in graph.neighbors_directed(n, Direction::Outgoing) {
            indegree[next.index()] -= 1;
            if indegree[next.index()] == 0 {
                ready.push(Reverse(next));
            }
        }
    }
    (order.len() == graph.node_count()).then_some(order)
}

#[cfg(test)]
mod tests;
