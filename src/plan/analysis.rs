//! What a plan tells an author before it runs: per phase, the critical path (the longest chain
//! of tasks) and the width (most tasks at one depth, i.e. ready together when tasks take equal
//! time); per pool, the peak demand against its `count`; and the items that will never run.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{Node, Plan};
use crate::check::ir::{Agent, AgentId, Phase, Workflow};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Analysis {
    pub phases: Vec<PhaseAnalysis>,
    pub pools: Vec<PoolDemand>,
    /// Tasks that fan out, with their size.
    pub fan_outs: Vec<FanOutAnalysis>,
    /// Agents no task uses.
    pub unused_agents: Vec<String>,
    /// Phases without tasks (their gate passes at once).
    pub empty_phases: Vec<String>,
    /// Problems worth a look: pools that will queue, `max_parallel` below the width.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PhaseAnalysis {
    pub phase: String,
    pub tasks: usize,
    /// Task names along the longest chain, in run order.
    pub critical_path: Vec<String>,
    /// The most tasks at one depth of the phase.
    pub width: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct FanOutAnalysis {
    pub task: String,
    pub phase: String,
    /// `×4 (matrix)` or `× up to 256 (for_each)`.
    pub size: String,
    /// A matrix's instances; null for a list known only at run time.
    pub count: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PoolDemand {
    pub agent: String,
    pub count: u32,
    /// The most tasks of this pool at one depth of one phase.
    pub peak: usize,
    /// The phase where the peak occurs.
    pub phase: Option<String>,
    /// Whether tasks will wait for an instance of this pool.
    pub queues: bool,
}

pub(super) fn analyse(wf: &Workflow, plan: &Plan) -> Analysis {
    let depth = depths(wf, plan);
    let mut analysis = Analysis::default();
    // (agent) → (peak, phase index)
    let mut peaks: BTreeMap<AgentId, (usize, usize)> = BTreeMap::new();
    for phase in &wf.phases {
        if phase.tasks.is_empty() {
            analysis.empty_phases.push(phase.name.clone());
            analysis.phases.push(PhaseAnalysis {
                phase: phase.name.clone(),
                tasks: 0,
                critical_path: Vec::new(),
                width: 0,
            });
            continue;
        }
        for &task in &phase.tasks {
            if let Some(f) = &wf.task(task).fan_out {
                analysis.fan_outs.push(FanOutAnalysis {
                    task: wf.task(task).name.clone(),
                    phase: phase.name.clone(),
                    size: f.describe(),
                    count: f.static_count(),
                });
            }
        }
        let width = levels(wf, phase, &depth, &mut peaks);
        if let Some(max) = wf.settings.max_parallel {
            if width > max as usize {
                analysis.warnings.push(format!(
                    "phase `{}`: up to {width} tasks are ready at once, but `max_parallel` is {max}; they will queue",
                    phase.name
                ));
            }
        }
        analysis.phases.push(PhaseAnalysis {
            phase: phase.name.clone(),
            tasks: phase.tasks.len(),
            critical_path: critical_path(wf, phase, &depth),
            width,
        });
    }
    for agent in &wf.agents {
        pool_demand(&mut analysis, wf, agent, peaks.get(&agent.id).copied());
    }
    analysis
}

/// Depth of each task inside its phase: 0 without `after`, else 1 + deepest dependency.
fn depths(wf: &Workflow, plan: &Plan) -> Vec<usize> {
    // Plan order is topological, so dependencies are seen first.
    let mut depth = vec![0usize; wf.tasks.len()];
    for &node in &plan.order {
        if let Node::Task { task, .. } = plan.node(node) {
            let t = wf.task(task);
            depth[task.index()] = t
                .after
                .iter()
                .map(|d| depth[d.index()] + 1)
                .max()
                .unwrap_or(0);
        }
    }
    depth
}

/// The phase's width; raises each pool's peak in `peaks` to its most tasks at one depth here.
fn levels(
    wf: &Workflow,
    phase: &Phase,
    depth: &[usize],
    peaks: &mut BTreeMap<AgentId, (usize, usize)>,
) -> usize {
    let mut per_level: Vec<usize> = Vec::new();
    let mut per_pool_level: HashMap<(AgentId, usize), usize> = HashMap::new();
    for &task in &phase.tasks {
        let d = depth[task.index()];
        if per_level.len() <= d {
            per_level.resize(d + 1, 0);
        }
        // A matrix's instances are ready together, as many as its `max_parallel` lets run.
        let n = wf
            .task(task)
            .fan_out
            .as_ref()
            .map_or(1, |f| f.static_width());
        per_level[d] += n;
        *per_pool_level.entry((wf.task(task).agent, d)).or_default() += n;
    }
    for ((agent, _), n) in per_pool_level {
        let entry = peaks.entry(agent).or_insert((0, phase.id.index()));
        if n > entry.0 {
            *entry = (n, phase.id.index());
        }
    }
    per_level.iter().copied().max().unwrap_or(0)
}

/// The critical path of a phase with tasks, as task names in run order.
fn critical_path(wf: &Workflow, phase: &Phase, depth: &[usize]) -> Vec<String> {
    // The critical path ends at the deepest task (the first declared among equals) and
    // walks back through the deepest dependency.
    let mut end = phase.tasks[0];
    for &task in &phase.tasks {
        if depth[task.index()] > depth[end.index()] {
            end = task;
        }
    }
    let mut path = vec![wf.task(end).name.clone()];
    let mut at = end;
    while let Some(&prev) = wf
        .task(at)
        .after
        .iter()
        .find(|d| depth[d.index()] + 1 == depth[at.index()])
    {
        path.push(wf.task(prev).name.clone());
        at = prev;
    }
    path.reverse();
    path
}

/// Records a pool's demand, given its peak and the index of the phase where it occurs.
fn pool_demand(
    analysis: &mut Analysis,
    wf: &Workflow,
    agent: &Agent,
    peak: Option<(usize, usize)>,
) {
    match peak {
        Some((peak, phase)) => {
            let queues = peak > agent.count as usize;
            let phase_name = wf.phases[phase].name.clone();
            if queues {
                analysis.warnings.push(format!(
                    "phase `{phase_name}`: up to {peak} tasks of pool `{}` are ready at once, but it has {} instance{}; they will queue",
                    agent.name,
                    agent.count,
                    if agent.count == 1 { "" } else { "s" }
                ));
            }
            analysis.pools.push(PoolDemand {
                agent: agent.name.clone(),
                count: agent.count,
                peak,
                phase: Some(phase_name),
                queues,
            });
        }
        None => {
            analysis.unused_agents.push(agent.name.clone());
            analysis.pools.push(PoolDemand {
                agent: agent.name.clone(),
                count: agent.count,
                peak: 0,
                phase: None,
                queues: false,
            });
        }
    }
}
