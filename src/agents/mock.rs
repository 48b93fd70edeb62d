//! The `mock` agent: latency, scripted and seeded failures, a fixed output. Deterministic, so
//! any workflow can be exercised offline and in tests under paused time.

use std::hash::Hasher;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AgentFuture, Preparing, Renderer};
use crate::check::ir::{self, AgentKind, ErrorClass, Role};
use crate::model::{ErrorCode, RunId, TaskError};

/// One attempt of a mock: how long it takes, whether it fails and how, and its output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MockCall {
    pub latency_ms: u64,
    /// Decided when the call is prepared: the first `fail_first` attempts fail, then a seeded
    /// draw against `fail_rate`.
    pub fail: bool,
    pub error: ErrorClass,
    pub output: serde_json::Value,
    /// A file each execution appends a line to (`RUN TASK ATTEMPT LOOP`): the mock's own
    /// record of what really ran, for checking crash safety.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}

impl MockCall {
    /// A stand-in for any agent: no latency, no failure, an output shaped like its role's.
    pub fn dry_run(kind: &AgentKind) -> MockCall {
        MockCall {
            latency_ms: 0,
            fail: false,
            error: ErrorClass::Retryable,
            output: dry_run_output(kind),
            log: None,
        }
    }
}

/// The call for one attempt of a mock pool, its output's templates rendered.
pub(super) fn prepare(
    m: &ir::MockAgent,
    p: &Preparing<'_>,
    r: &Renderer<'_>,
) -> Result<MockCall, TaskError> {
    let output = m
        .output_tree
        .render(
            r.templates,
            r.ctx,
            &format_args!("in the mock `output` of task `{}`", p.task.name),
            r.strict,
        )
        .map_err(|e| TaskError::fatal(ErrorCode::Template, e.0))?;
    Ok(MockCall {
        latency_ms: m.latency.as_millis() as u64,
        fail: fails(m, &p.task.name, p.attempt, p.loop_count),
        error: m.error,
        output,
        log: m.log.as_ref().map(|l| p.env.base.join(l)),
    })
}

/// Whether this attempt fails: the first `fail_first` attempts do, then a seeded draw.
fn fails(m: &ir::MockAgent, task: &str, attempt: u32, loop_count: u32) -> bool {
    if attempt <= m.fail_first {
        return true;
    }
    if m.fail_rate <= 0.0 {
        return false;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write_u64(m.seed);
    h.write(task.as_bytes());
    h.write_u32(attempt);
    h.write_u32(loop_count);
    let draw = (splitmix64(h.finish()) >> 11) as f64 / (1u64 << 53) as f64;
    draw < m.fail_rate
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Runs one mock attempt.
pub(super) fn execute(
    call: MockCall,
    run: &RunId,
    task: &str,
    attempt: u32,
    loop_count: u32,
) -> AgentFuture {
    if let Some(path) = &call.log {
        use std::io::Write;
        let line = format!("{run} {task} {attempt} {loop_count}\n");
        // One short O_APPEND write: lines from concurrent executions do not interleave.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
    let task = task.to_string();
    Box::pin(async move {
        if call.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(call.latency_ms)).await;
        }
        if call.fail {
            let message = format!("mock failure of `{task}` (attempt {attempt})");
            return Err(match call.error {
                ErrorClass::Retryable => TaskError::retryable(ErrorCode::Transient, message),
                ErrorClass::Fatal => TaskError::fatal(ErrorCode::Fatal, message),
            });
        }
        Ok(call.output)
    })
}

/// The output a dry run gives an agent of this kind: the shape its role promises, all clear.
pub fn dry_run_output(kind: &AgentKind) -> serde_json::Value {
    use serde_json::json;
    match kind {
        AgentKind::Llm(l) => match l.role {
            Some(Role::Reviewer) => json!({ "approved": true, "score": 100, "findings": [],
                                            "recommendations": [], "summary": "dry run" }),
            Some(Role::Monitor) => json!({ "severity": "ok", "summary": "dry run", "findings": [],
                                           "metrics": {} }),
            _ => json!({ "files": [], "summary": "dry run" }),
        },
        AgentKind::Shell(_) => json!({ "exit_code": 0, "stdout": "", "stderr": "" }),
        AgentKind::Http(_) => json!({ "status": 200, "body": "" }),
        AgentKind::Approval => json!({ "decision": "approve", "by": "--dry-run", "reason": null }),
        AgentKind::Child(c) => c.outputs.iter().map(|o| (o.clone(), json!(""))).collect(),
        AgentKind::Script(_) | AgentKind::Mock(_) => json!({}),
    }
}
