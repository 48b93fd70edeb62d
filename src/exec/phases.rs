//! Phases in order; when every task of a phase is final its gate decides; after the last phase
//! the feedback rule decides whether the run loops back.

use serde_json::{json, Value};

use super::context::{self, Tally};
use super::dispatch::describe_rule;
use super::dispatcher::Dispatcher;
use crate::check::ir::{OnMaxLoops, Phase, PhaseId, Rule, Workflow};
use crate::model::{EventKind, RunState, RunStatus, TaskStatus};
use crate::policy::{Evaluation, Severity, Verdict};

/// A gate's or the feedback's decision, as recorded.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct GateDecision {
    pub pass: bool,
    pub reason: String,
    pub rule: String,
}

impl Dispatcher {
    pub(super) fn enter_phase(&mut self, k: usize) {
        let wf = self.run.wf.clone();
        let phase = wf.phase(PhaseId(k as u32));
        self.phase = k;
        self.record(EventKind::PhaseEntered {
            phase: phase.name.clone(),
            loop_count: self.state.feedback_loop_count,
        });
        self.phase_open = phase.tasks.len();
        for &t in &phase.tasks {
            let rt = &mut self.tasks[t.index()];
            // The wait token stays monotonic: a stale `agent_wait` timer must never match.
            *rt = super::dispatcher::TaskRt {
                wait_token: rt.wait_token,
                ..Default::default()
            };
            rt.remaining = wf.task(t).after.len() as u32;
            if rt.remaining == 0 {
                self.ready.push_back(t);
            }
        }
    }

    /// Every task of the phase is final: the gate decides.
    pub(super) fn end_phase(&mut self) {
        let wf = self.run.wf.clone();
        let phase = &wf.phases[self.phase];
        let tally = tally(phase, &self.state);
        let decision = match &phase.gate {
            Some(rule) => {
                let ctx = context::gate(&phase.name, tally, &self.state, &self.run.params_json);
                let e = crate::policy::PolicyHost::get().evaluate_cached(
                    &mut self.rules,
                    &rule.compiled,
                    &ctx,
                );
                gate_rule_decision(rule, e)
            }
            None => default_gate(phase, &wf, tally),
        };
        self.record(EventKind::GateDecided {
            phase: phase.name.clone(),
            pass: decision.pass,
            reason: decision.reason.clone(),
            rule: decision.rule,
        });
        if !decision.pass {
            self.finish = Some((
                RunStatus::Failed,
                Some(format!(
                    "the gate of phase `{}` failed: {}",
                    phase.name, decision.reason
                )),
            ));
        } else if self.phase + 1 < wf.phases.len() {
            self.enter_phase(self.phase + 1);
        } else {
            self.decide_feedback();
        }
    }

    /// After the last phase: loop back, or finish.
    fn decide_feedback(&mut self) {
        let wf = self.run.wf.clone();
        let loop_count = self.state.feedback_loop_count;
        let max = wf.settings.max_feedback_loops;
        let (severity, summary, details, rule) = match &wf.feedback {
            Some(f) => {
                let ctx = context::feedback(&self.state, &self.run.params_json, max);
                let e = crate::policy::PolicyHost::get().evaluate_cached(
                    &mut self.rules,
                    &f.rule.compiled,
                    &ctx,
                );
                let (severity, summary) = feedback_verdict(e);
                (severity, summary, Value::Null, describe_rule(&f.rule))
            }
            None => default_feedback(&wf, &self.state),
        };
        self.record(EventKind::FeedbackDecided {
            severity,
            summary: summary.clone(),
            details,
            rule,
        });
        self.views.feedback_changed(&self.state);
        if severity < Severity::Error {
            self.finish = Some((RunStatus::Completed, None));
        } else if loop_count < max {
            let target = wf.feedback.as_ref().map_or(PhaseId(0), |f| f.target);
            self.record(EventKind::LoopStarted {
                loop_count: loop_count + 1,
                target: wf.phase(target).name.clone(),
            });
            self.views.feedback_changed(&self.state);
            self.enter_phase(target.index());
        } else {
            let message = format!(
                "feedback is still `{severity}` after {max} loop{} (the limit): {summary}",
                crate::text::plural(max)
            );
            match wf.settings.on_max_loops {
                OnMaxLoops::Complete => {
                    self.record(EventKind::Warning { message });
                    self.finish = Some((RunStatus::Completed, None));
                }
                OnMaxLoops::Fail => self.finish = Some((RunStatus::Failed, Some(message))),
            }
        }
    }
}

/// What a phase's tasks came to.
pub(super) fn tally(phase: &Phase, state: &RunState) -> Tally {
    let count = |s: TaskStatus| {
        phase
            .tasks
            .iter()
            .filter(|t| state.tasks[t.index()].status == s)
            .count()
    };
    Tally {
        total: phase.tasks.len(),
        completed: count(TaskStatus::Completed),
        failed: count(TaskStatus::Failed),
        skipped: count(TaskStatus::Skipped),
    }
}

/// A gate rule's verdict as a decision; a rule that gives none fails the gate.
pub(super) fn gate_rule_decision(rule: &Rule, e: Evaluation) -> GateDecision {
    match e.verdict {
        Verdict::Gate { pass, reason } => GateDecision {
            pass,
            reason: reason.unwrap_or_else(|| "the gate rule passed".into()),
            rule: describe_rule(rule),
        },
        _ => GateDecision {
            pass: false,
            reason: "the gate rule gave no verdict".into(),
            rule: describe_rule(rule),
        },
    }
}

/// The default gate: the success rate against `min_success_rate` (the phase's, else the
/// workflow's). A phase with nothing to count passes.
pub(super) fn default_gate(phase: &Phase, wf: &Workflow, tally: Tally) -> GateDecision {
    let min = phase
        .min_success_rate
        .unwrap_or(wf.settings.min_success_rate);
    let rate = tally.success_rate();
    let pass = tally.total == 0 || rate >= min;
    GateDecision {
        pass,
        reason: format!(
            "success rate {rate:.2} ({} of {} completed) {} the minimum {min}",
            tally.completed,
            tally.total,
            if pass { "meets" } else { "is below" }
        ),
        rule: "default gate".to_string(),
    }
}

/// The feedback rule's verdict; a rule that gives none is critical.
fn feedback_verdict(e: Evaluation) -> (Severity, String) {
    match e.verdict {
        Verdict::Feedback { severity, summary } => (severity, summary),
        _ => (
            Severity::Critical,
            "the feedback rule gave no verdict".into(),
        ),
    }
}

/// The default feedback: the highest `severity` in the outputs of the last phase's tasks.
pub(super) fn default_feedback(
    wf: &Workflow,
    state: &RunState,
) -> (Severity, String, Value, String) {
    let last = wf.phases.last().map(|p| p.name.as_str()).unwrap_or("");
    let mut worst = Severity::Ok;
    let mut summary = String::new();
    let mut details = serde_json::Map::new();
    for t in state.tasks.iter().filter(|t| &*t.phase == last) {
        let Some(sev) = t
            .output
            .get("severity")
            .and_then(Value::as_str)
            .and_then(Severity::parse)
        else {
            continue;
        };
        details.insert(t.task.to_string(), json!(sev.as_str()));
        if sev > worst || summary.is_empty() && sev == worst {
            worst = sev;
            summary = t.output.get("summary").and_then(Value::as_str).map_or_else(
                || format!("task `{}` reported `{sev}`", t.task),
                str::to_string,
            );
        }
    }
    if summary.is_empty() {
        summary = "no task of the last phase reported a severity".into();
    }
    (
        worst,
        summary,
        Value::Object(details),
        "default feedback".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn workflow(text: &str) -> Workflow {
        let mut map = crate::source::SourceMap::new();
        let checked = crate::check::check_source(&mut map, "t.cond", Path::new("t.cond"), text);
        checked.workflow.expect("checks")
    }

    fn tally(total: usize, completed: usize) -> Tally {
        Tally {
            total,
            completed,
            failed: total - completed,
            skipped: 0,
        }
    }

    #[test]
    fn the_default_gate_compares_the_success_rate_with_the_minimum() {
        let wf = workflow(
            r#"workflow w { min_success_rate = 0.5 agent m { kind = "mock" }
               phase p { task a on m } phase q { min_success_rate = 1.0 task b on m } }"#,
        );
        let pass = default_gate(&wf.phases[0], &wf, tally(4, 2));
        assert!(pass.pass);
        assert_eq!(
            pass.reason,
            "success rate 0.50 (2 of 4 completed) meets the minimum 0.5"
        );
        let fail = default_gate(&wf.phases[1], &wf, tally(4, 3));
        assert!(!fail.pass);
        assert!(
            default_gate(&wf.phases[1], &wf, tally(0, 0)).pass,
            "nothing to count"
        );
    }

    #[test]
    fn a_gate_rule_without_a_verdict_fails_the_gate() {
        let wf = workflow(
            r#"workflow w { agent m { kind = "mock" } phase p { task a on m gate { total > 0 } } }"#,
        );
        let rule = wf.phases[0].gate.as_ref().unwrap();
        let d = gate_rule_decision(
            rule,
            Evaluation {
                verdict: Verdict::When(true),
                error: None,
            },
        );
        assert!(!d.pass);
        assert!(d.rule.starts_with("rule at t.cond:1:"), "{}", d.rule);
        let ok = gate_rule_decision(
            rule,
            Evaluation {
                verdict: Verdict::Gate {
                    pass: true,
                    reason: None,
                },
                error: None,
            },
        );
        assert!(ok.pass);
        assert_eq!(ok.reason, "the gate rule passed");
    }

    #[test]
    fn the_default_feedback_is_the_worst_severity_of_the_last_phase() {
        let wf = workflow(
            r#"workflow w { agent m { kind = "mock" } phase p { task a on m } phase q { task b on m task c on m } }"#,
        );
        let mut state = RunState::default();
        let info = |n: &str, p: &str| crate::model::TaskInfo {
            name: n.into(),
            phase: p.into(),
            agent: "m".into(),
        };
        state.apply(&crate::model::Event {
            seq: 1,
            at: crate::model::Timestamp(0),
            kind: EventKind::RunStarted {
                run_id: "r".into(),
                workflow: "w".into(),
                file: "t.cond".into(),
                params: Default::default(),
                tasks: vec![info("a", "p"), info("b", "q"), info("c", "q")],
                agents: vec![],
                dry_run: false,
            },
        });
        state.tasks[0].output = json!({ "severity": "critical" });
        state.tasks[1].output = json!({ "severity": "high", "summary": "down" });
        state.tasks[2].output = json!({ "severity": "info" });
        let (sev, summary, details, rule) = default_feedback(&wf, &state);
        assert_eq!(
            sev,
            Severity::Error,
            "`high` reads as error; phase p is not the last"
        );
        assert_eq!(summary, "down");
        assert_eq!(details, json!({ "b": "error", "c": "info" }));
        assert_eq!(rule, "default feedback");
        assert_eq!(
            feedback_verdict(Evaluation {
                verdict: Verdict::When(true),
                error: None
            })
            .0,
            Severity::Critical
        );
    }
}
