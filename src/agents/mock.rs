//! The `mock` agent: latency, scripted and seeded failures, a fixed output. Deterministic, so
//! any workflow can be exercised offline and in tests under paused time.

use std::hash::Hasher;
use std::time::Duration;

use super::{Agent, AgentFuture, TaskRequest};
use crate::check::ir::{self, AgentKind, ErrorClass, Role};
use crate::model::{ErrorCode, TaskError};

pub struct MockAgent {
    latency: Duration,
    fail_first: u32,
    fail_rate: f64,
    seed: u64,
    error: ErrorClass,
    output: serde_json::Value,
}

impl MockAgent {
    pub fn new(m: &ir::MockAgent) -> MockAgent {
        MockAgent {
            latency: m.latency,
            fail_first: m.fail_first,
            fail_rate: m.fail_rate,
            seed: m.seed,
            error: m.error,
            output: m.output.to_json(),
        }
    }

    /// A stand-in for any agent: no latency, no failures, an output shaped like its role's.
    pub fn dry_run(agent: &ir::Agent) -> MockAgent {
        match &agent.kind {
            AgentKind::Mock(m) => MockAgent::new(m),
            other => MockAgent {
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
        let output = self.output.clone();
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
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
