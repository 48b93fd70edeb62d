//! Phases in order; when every task of a phase is final its gate decides; after the last phase
//! the feedback rule decides whether the run loops back.

use serde_json::{json, Value};

use super::context::{self, Tally};
use super::dispatch::describe_rule;
use super::dispatcher::Dispatcher;
use crate::check::ir::{OnMaxLoops, Phase, PhaseId, Rule, Workflow};
use crate::model::{EventKind, RunState, RunStatus, SkipReason, TaskStatus};
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

    /// Every task of the phase is final: its gate decides — except after the last normal
    /// phase, where the feedback decides first.
    pub(super) fn end_phase(&mut self) {
        let wf = self.run.wf.clone();
        let phase = &wf.phases[self.phase];
        if phase.always {
            // Decided and recorded; a failure shows in the final status.
            self.gate(phase);
            self.next_always();
            return;
        }
        if self.wrapping_up {
            self.finish = Some((RunStatus::Completed, None));
            return;
        }
        if self.next_normal(self.phase).is_none() {
            self.end_last_phase();
            return;
        }
        let decision = self.gate(phase);
        if decision.pass {
            let next = self.next_normal(self.phase).unwrap_or(self.phase);
            self.enter_phase(next);
        } else {
            self.gate_failed(phase, &decision);
        }
    }

    /// Decides and records a phase's gate.
    fn gate(&mut self, phase: &Phase) -> GateDecision {
        let tally = tally(phase, &self.state);
        let decision = match &phase.gate {
            Some(rule) => {
                let budget = self.budget_json();
                let ctx = context::gate(
                    &phase.name,
                    tally,
                    &self.state,
                    &self.run.params_json,
                    budget,
                );
                let e = crate::policy::PolicyHost::get().evaluate_cached(
                    &mut self.rules,
                    &rule.compiled,
                    &ctx,
                );
                gate_rule_decision(rule, e)
            }
            None => default_gate(phase, &self.run.wf, tally),
        };
        self.record(EventKind::GateDecided {
            phase: phase.name.clone(),
            pass: decision.pass,
            reason: decision.reason.clone(),
            rule: decision.rule.clone(),
        });
        decision
    }

    fn gate_failed(&mut self, phase: &Phase, decision: &GateDecision) {
        self.finish = Some((
            RunStatus::Failed,
            Some(format!(
                "the gate of phase `{}` failed: {}",
                phase.name, decision.reason
            )),
        ));
    }

    /// The next normal phase after `k`, if any.
    pub(super) fn next_normal(&self, k: usize) -> Option<usize> {
        let phases = &self.run.wf.phases;
        (k + 1..phases.len()).find(|&i| !phases[i].always)
    }

    /// After the last normal phase: the feedback decides first — a loop goes back without
    /// consulting the last phase's gate (the seed draws none before the feedback decision);
    /// otherwise the gate decides, then `on_max_loops` when the feedback still wants a loop.
    fn end_last_phase(&mut self) {
        let wf = self.run.wf.clone();
        let loop_count = self.state.feedback_loop_count;
        let max = wf.settings.max_feedback_loops;
        let (severity, summary) = self.decide_feedback();
        if severity >= Severity::Error && loop_count < max {
            let target = wf.feedback.as_ref().map_or(PhaseId(0), |f| f.target);
            self.record(EventKind::LoopStarted {
                loop_count: loop_count + 1,
                target: wf.phase(target).name.clone(),
            });
            self.views.feedback_changed(&self.state);
            self.enter_phase(target.index());
            return;
        }
        let phase = &wf.phases[self.phase];
        let decision = self.gate(phase);
        if !decision.pass {
            self.gate_failed(phase, &decision);
        } else if severity >= Severity::Error {
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
        } else {
            self.finish = Some((RunStatus::Completed, None));
        }
    }

    /// Evaluates and records the feedback of the pass that just ended.
    fn decide_feedback(&mut self) -> (Severity, String) {
        let wf = self.run.wf.clone();
        let max = wf.settings.max_feedback_loops;
        let (severity, summary, details, rule) = match &wf.feedback {
            Some(f) => {
                let budget = self.budget_json();
                let ctx = context::feedback(&self.state, &self.run.params_json, max, budget);
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
        (severity, summary)
    }

    /// The run is ending with `status`: its `always` phases run first, once; returns whether
    /// they do (else the run ends now).
    pub(super) fn start_always(&mut self, status: RunStatus, error: Option<String>) -> bool {
        let first = self.run.wf.phases.iter().position(|p| p.always);
        let Some(first) = first else {
            return false;
        };
        if self.state.ending.is_some()
            || !matches!(
                status,
                RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
            )
        {
            return false;
        }
        self.record(EventKind::RunEnding { status, error });
        self.views.show_all(&self.state);
        self.views
            .run_changed(&self.state, self.run.env.workspace.as_deref());
        self.enter_phase(first);
        true
    }

    /// The next `always` phase, or the end: FAILED stays FAILED; COMPLETED becomes FAILED
    /// when an `always` phase failed.
    pub(super) fn next_always(&mut self) {
        let phases = &self.run.wf.phases;
        if let Some(next) = (self.phase + 1..phases.len()).find(|&i| phases[i].always) {
            self.enter_phase(next);
            return;
        }
        let (status, error) = self
            .state
            .ending
            .clone()
            .unwrap_or((RunStatus::Completed, None));
        self.finish = Some(match (status, &self.state.always_failure) {
            (RunStatus::Completed, Some(why)) => (RunStatus::Failed, Some(why.clone())),
            _ => (status, error),
        });
    }
}

/// What a phase's tasks came to.
pub(super) fn tally(phase: &Phase, state: &RunState) -> Tally {
    let mut tally = Tally {
        total: phase.tasks.len(),
        ..Tally::default()
    };
    for t in &phase.tasks {
        let r = &state.tasks[t.index()];
        match r.status {
            TaskStatus::Completed => tally.completed += 1,
            TaskStatus::Failed => tally.failed += 1,
            TaskStatus::Skipped => {
                tally.skipped += 1;
                match r.skip_reason {
                    Some(SkipReason::WhenFalse) => tally.when_false += 1,
                    Some(SkipReason::Decision | SkipReason::WrapUp) => tally.decision += 1,
                    Some(SkipReason::EmptyFanOut) => tally.empty_fan_out += 1,
                    Some(SkipReason::UpstreamFailed | SkipReason::SiblingFailed) | None => {
                        tally.upstream_failed += 1
                    }
                }
            }
            _ => {}
        }
    }
    tally
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
    let pass = tally.counted() == 0 || rate >= min;
    let not_counted = match tally.skipped_by_choice() {
        0 => String::new(),
        n => format!("; {n} skipped by choice, not counted"),
    };
    GateDecision {
        pass,
        reason: format!(
            "success rate {rate:.2} ({} of {} completed{not_counted}) {} the minimum {min}",
            tally.completed,
            tally.counted(),
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
            ..Tally::default()
        }
    }

    #[test]
    fn skips_by_choice_are_not_counted_and_upstream_failures_are() {
        let wf = workflow(r#"workflow w { agent m { kind = "mock" } phase p { task a on m } }"#);
        let mut t = Tally {
            total: 4,
            completed: 2,
            skipped: 2,
            when_false: 1,
            decision: 1,
            ..Tally::default()
        };
        let d = default_gate(&wf.phases[0], &wf, t);
        assert!(d.pass, "{}", d.reason);
        assert_eq!(
            d.reason,
            "success rate 1.00 (2 of 2 completed; 2 skipped by choice, not counted) meets the minimum 1"
        );
        t.decision = 0;
        t.upstream_failed = 1;
        assert!(
            !default_gate(&wf.phases[0], &wf, t).pass,
            "an upstream failure counts"
        );
        let nothing = Tally {
            total: 1,
            skipped: 1,
            when_false: 1,
            ..Tally::default()
        };
        assert!(
            default_gate(&wf.phases[0], &wf, nothing).pass,
            "nothing to count passes"
        );
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
                source: None,
                parent: None,
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
