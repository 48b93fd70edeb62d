//! `check --explain`'s worst case of the model calls, before the run: per phase and pass, calls
//! × `max_tokens` × the output price (prompts are not known until rendered), fan-outs at their
//! static size or their `max_items`; and the budgets that can never be met or are certain to be
//! exceeded.

use std::fmt::Write;

use crate::check::ir::{AgentKind, Owner, Task, Workflow};
use crate::config::Config;
use crate::model::{Rates, Usd};
use crate::source::Span;

/// The worst case of one task's calls in one pass, and what is certain of them.
struct TaskCalls {
    /// At most: two turns per attempt, every attempt, every instance.
    calls: u64,
    tokens: u64,
    usd: Option<Usd>,
    /// At least, when it runs: one call per instance (0 for a `when` task or a list fan-out).
    certain: u64,
    /// What one call reserves at the least: its `max_tokens`, priced.
    one_tokens: u64,
    one_usd: Option<Usd>,
}

fn task_calls(wf: &Workflow, task: &Task, config: Option<&Config>) -> Option<TaskCalls> {
    let AgentKind::Llm(l) = &wf.agent(task.agent).kind else {
        return None;
    };
    let provider = config.and_then(|c| c.providers.get(&l.provider));
    let max_tokens = u64::from(
        l.max_tokens
            .or_else(|| provider.and_then(|p| p.max_tokens))
            .unwrap_or(crate::agents::llm::DEFAULT_MAX_TOKENS),
    );
    let rates = config.and_then(|c| {
        let model = crate::agents::llm::model_for(l, c)?;
        c.price(&l.provider, &model).map(Rates::from)
    });
    let (instances, static_size) = match &task.fan_out {
        Some(f) => match f.static_count() {
            Some(n) => (n as u64, true),
            None => (u64::from(f.max_items), false),
        },
        None => (1, true),
    };
    let calls = 2 * (1 + u64::from(task.retry)) * instances;
    let one_usd = rates.map(|r| r.cost(0, 0, max_tokens));
    Some(TaskCalls {
        calls,
        tokens: calls * max_tokens,
        usd: one_usd.map(|u| Usd(u.0.saturating_mul(calls))),
        certain: if task.when.is_none() && static_size {
            instances
        } else {
            0
        },
        one_tokens: max_tokens,
        one_usd,
    })
}

/// How many passes a phase may run: the phases a feedback loop goes back over run
/// `1 + max_feedback_loops` times.
fn passes(wf: &Workflow, phase: usize) -> u64 {
    let p = &wf.phases[phase];
    if p.always {
        return 1;
    }
    let target = wf.feedback.as_ref().map_or(0, |f| f.target.index());
    let last = wf.phases.iter().rposition(|p| !p.always).unwrap_or(0);
    if (target..=last).contains(&phase) {
        1 + u64::from(wf.settings.max_feedback_loops)
    } else {
        1
    }
}

fn money(usd: Option<Usd>) -> String {
    usd.map_or_else(|| "unpriced".to_string(), |u| u.to_string())
}

/// The estimate's lines, for `check --explain`; empty when no task uses an llm agent.
pub fn estimate_text(wf: &Workflow, config: Option<&Config>) -> String {
    let mut out = String::new();
    let mut total = (0u64, 0u64, Some(Usd::ZERO));
    let mut any = false;
    for (k, phase) in wf.phases.iter().enumerate() {
        let (mut calls, mut tokens, mut usd) = (0u64, 0u64, Some(Usd::ZERO));
        for &t in &phase.tasks {
            if let Some(c) = task_calls(wf, wf.task(t), config) {
                calls += c.calls;
                tokens += c.tokens;
                usd = usd.zip(c.usd).map(|(a, b)| a.plus(b));
            }
        }
        if calls == 0 {
            continue;
        }
        any = true;
        let n = passes(wf, k);
        let _ = writeln!(
            out,
            "  phase {}: each pass up to {calls} llm calls, {tokens} output tokens, {}; {n} pass{} at most",
            phase.name,
            money(usd),
            if n == 1 { "" } else { "es" }
        );
        total.0 += calls * n;
        total.1 += tokens * n;
        total.2 = total
            .2
            .zip(usd)
            .map(|(a, b)| Usd(a.0 + b.0.saturating_mul(n)));
    }
    if !any {
        return String::new();
    }
    let _ = writeln!(
        out,
        "  run: up to {} llm calls, {} output tokens, {}",
        total.0,
        total.1,
        money(total.2)
    );
    format!("worst case (llm calls × max_tokens × output price; prompts not counted)\n{out}")
}

/// Budgets that allow no call, or that the calls certain to be made exceed: each with the
/// budget's place.
pub fn budget_warnings(wf: &Workflow, config: Option<&Config>) -> Vec<(Span, String)> {
    let mut owners: Vec<(Owner, String, &crate::check::ir::Budget)> = Vec::new();
    if let Some(b) = &wf.budgets.workflow.budget {
        owners.push((Owner::Workflow, "the workflow's budget".into(), b));
    }
    for (id, s) in &wf.budgets.phases {
        if let Some(b) = &s.budget {
            owners.push((
                Owner::Phase(*id),
                format!("the budget of phase `{}`", wf.phase(*id).name),
                b,
            ));
        }
    }
    for (id, s) in &wf.budgets.agents {
        if let Some(b) = &s.budget {
            owners.push((
                Owner::Agent(*id),
                format!("the budget of agent `{}`", wf.agent(*id).name),
                b,
            ));
        }
    }
    for (id, s) in &wf.budgets.tasks {
        if let Some(b) = &s.budget {
            owners.push((
                Owner::Task(*id),
                format!("the budget of task `{}`", wf.task(*id).name),
                b,
            ));
        }
    }
    let mut warnings = Vec::new();
    for (owner, name, b) in owners {
        let inside: Vec<TaskCalls> = wf
            .tasks
            .iter()
            .filter(|t| wf.budgets.containing(t).any(|(o, _)| o == owner))
            .filter_map(|t| task_calls(wf, t, config))
            .collect();
        if inside.is_empty() {
            continue;
        }
        let certain: u64 = inside.iter().map(|c| c.certain).sum();
        let least_tokens = inside.iter().map(|c| c.one_tokens).min().unwrap_or(0);
        let least_usd = inside.iter().filter_map(|c| c.one_usd).min();
        if b.llm_calls == Some(0) {
            warnings.push((b.span, format!("{name} allows no llm call (llm_calls = 0)")));
        } else if let Some(max) = b.tokens.filter(|m| *m < least_tokens) {
            warnings.push((
                b.span,
                format!(
                    "{name} can never be met: {max} tokens, and each call reserves at least its \
                 max_tokens ({least_tokens}) plus its prompt"
                ),
            ));
        } else if let (Some(max), Some(one)) = (b.usd.map(Usd::from_dollars), least_usd) {
            if max < one {
                warnings.push((
                    b.span,
                    format!(
                        "{name} can never be met: {max}, and each call reserves at least {one} \
                     (its max_tokens at the output price) plus its prompt"
                    ),
                ));
            }
        }
        if let Some(max) = b.llm_calls.filter(|m| *m > 0 && certain > *m) {
            warnings.push((
                b.span,
                format!(
                    "{name} is certain to be exceeded: {certain} llm calls are made in the first \
                 pass alone, and it allows {max}"
                ),
            ));
        }
    }
    warnings
}
