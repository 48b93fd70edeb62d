//! The `mock` agent: latency, scripted and seeded failures, a fixed output. Deterministic, so
//! any workflow can be exercised offline and in tests under paused time.

use std::hash::Hasher;
use std::time::Duration;

use super::{Agent, AgentFuture, TaskRequest};
use crate::check::ir::{self, AgentKind, ErrorClass, Role};
use crate::model::{ErrorCode, TaskError};

pub struct MockAgent {
    /// Whether `output` holds template tags, rendered per attempt.
    templated: bool,
    /// `CONDUCTOR_MOCK_LOG`: a file each execution appends a line to (`RUN TASK ATTEMPT LOOP`),
    /// so crash tests can count real executions.
    log: Option<std::path::PathBuf>,
    latency: Duration,
    fail_first: u32,
    fail_rate: f64,
    seed: u64,
    error: ErrorClass,
    output: serde_json::Value,
}

impl MockAgent {
    pub fn new(m: &ir::MockAgent) -> MockAgent {
        let output = m.output.to_json();
        MockAgent {
            templated: has_tags(&output),
            log: std::env::var_os("CONDUCTOR_MOCK_LOG").map(Into::into),
            latency: m.latency,
            fail_first: m.fail_first,
            fail_rate: m.fail_rate,
            seed: m.seed,
            error: m.error,
            output,
        }
    }

    /// A stand-in for any agent: no latency, no failures, an output shaped like its role's.
    pub fn dry_run(agent: &ir::Agent) -> MockAgent {
        match &agent.kind {
            AgentKind::Mock(m) => MockAgent::new(m),
            other => MockAgent {
                templated: false,
                log: None,
                latency: Duration::ZERO,
                fail_first: 0,
                fail_rate: 0.0,
                seed: 0,
                error: ErrorClass::Retryable,
                output: dry_run_output(other),
            },
        }
    }

    /// Whether this attempt fails: the first `fail_first` attempts do, then a seeded draw.
    fn fails(&self, req: &TaskRequest) -> bool {
        if req.attempt <= self.fail_first {
            return true;
        }
        if self.fail_rate <= 0.0 {
            return false;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write_u64(self.seed);
        h.write(req.task.as_bytes());
        h.write_u32(req.attempt);
        h.write_u32(req.loop_count);
        let draw = (splitmix64(h.finish()) >> 11) as f64 / (1u64 << 53) as f64;
        draw < self.fail_rate
    }
}

fn has_tags(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains("{{") || s.contains("{%") || s.contains("{#"),
        serde_json::Value::Array(items) => items.iter().any(has_tags),
        serde_json::Value::Object(map) => map.values().any(has_tags),
        _ => false,
    }
}

/// Renders the templates of a mock's output with what the request carries: `params`,
/// `input`, `feedback`, `loop_count`, `attempt`, and `tasks` — the outputs of the tasks in its
/// `after` list.
fn render_output(
    output: &serde_json::Value,
    req: &TaskRequest,
) -> Result<serde_json::Value, TaskError> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let tasks: serde_json::Map<String, serde_json::Value> = req
        .upstream
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::json!({ "status": "completed", "output": v }),
            )
        })
        .collect();
    let ctx = serde_json::json!({
        "params": &*req.params,
        "input": req.input,
        "feedback": req.feedback.as_ref().map(|f| serde_json::json!({
            "severity": f.severity.as_str(), "summary": f.summary, "details": f.details })),
        "loop_count": req.loop_count,
        "attempt": req.attempt,
        "tasks": tasks,
    });
    fn walk(
        env: &minijinja::Environment<'_>,
        v: &serde_json::Value,
        ctx: &serde_json::Value,
        task: &str,
    ) -> Result<serde_json::Value, TaskError> {
        Ok(match v {
            serde_json::Value::String(s)
                if s.contains("{{") || s.contains("{%") || s.contains("{#") =>
            {
                serde_json::Value::String(env.render_str(s, ctx).map_err(|e| {
                    TaskError::fatal(
                        ErrorCode::Template,
                        format!("template in the mock `output` of task `{task}`: {e}"),
                    )
                })?)
            }
            serde_json::Value::Array(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|i| walk(env, i, ctx, task))
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), walk(env, v, ctx, task)?)))
                    .collect::<Result<_, TaskError>>()?,
            ),
            other => other.clone(),
        })
    }
    walk(&env, output, &ctx, &req.task)
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Agent for MockAgent {
    fn execute(&self, req: TaskRequest) -> AgentFuture {
        let fails = self.fails(&req);
        let latency = self.latency;
        let error = self.error;
        if let Some(path) = &self.log {
            use std::io::Write;
            let line = format!(
                "{} {} {} {}\n",
                req.run_id, req.task, req.attempt, req.loop_count
            );
            // One short O_APPEND write: lines from concurrent executions do not interleave.
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
        let output = if self.templated {
            render_output(&self.output, &req)
        } else {
            Ok(self.output.clone())
        };
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let output = output?;
            if fails {
                let message = format!("mock failure of `{}` (attempt {})", req.task, req.attempt);
                return Err(match error {
                    ErrorClass::Retryable => TaskError::retryable(ErrorCode::Transient, message),
                    ErrorClass::Fatal => TaskError::fatal(ErrorCode::Fatal, message),
                });
            }
            Ok(output)
        })
    }
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
        AgentKind::Script(_) | AgentKind::Mock(_) => json!({}),
    }
}
