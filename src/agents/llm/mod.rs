//! `llm` agents: a role's system prompt, the task's rendered prompt, a [`Provider`] that
//! answers, and validation of the answer against the role's JSON shape.
//!
//! A reply that does not validate is sent back once with the validation error (a corrective
//! turn); a second bad reply fails the task as INVALID_OUTPUT. Every call — the corrective one
//! too — is recorded with its token usage on the attempt.

mod cassette;
mod providers;
pub mod roles;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use cassette::{Cassette, Exchange, Recorder, ReplayProvider};
pub use providers::{AnthropicProvider, OpenAiProvider};

use super::{Agent, AgentFuture, TaskRequest};
use crate::check::ir::{self, Role};
use crate::config::{Config, ProviderKind};
use crate::model::{ErrorCode, LlmCall, TaskError};

/// Used when neither the agent nor its provider sets `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// One turn of a conversation after the system prompt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Message {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Message {
        Message {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// What a provider is asked.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    /// The task and role asking, for cassettes and messages.
    pub task: String,
    pub role: String,
    pub model: String,
    pub system: String,
    pub messages: Vec<Message>,
    pub temperature: Option<f64>,
    pub max_tokens: u32,
    /// The JSON schema of the expected answer.
    pub schema: Value,
}

impl ChatRequest {
    /// The request's identity for replay and recording: SHA-256 over the system prompt and the
    /// messages. The model and sampling settings are recorded but not hashed, so a cassette
    /// recorded with one model replays under any configuration.
    pub fn hash(&self) -> String {
        let canonical = serde_json::json!({ "system": self.system, "messages": self.messages });
        format!("{:x}", Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// What a provider answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatReply {
    pub model: String,
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The reply stopped at `max_tokens`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

pub type ChatFuture<'a> = Pin<Box<dyn Future<Output = Result<ChatReply, TaskError>> + Send + 'a>>;

/// A source of chat completions.
pub trait Provider: Send + Sync {
    fn complete<'a>(&'a self, request: &'a ChatRequest) -> ChatFuture<'a>;

    /// Whether replies come from a recording rather than a model.
    fn replays(&self) -> bool {
        false
    }
}

/// Builds the provider named in `conductor.toml`. The API key is read from the environment
/// variable the configuration names, here and nowhere else.
pub fn provider(
    name: &str,
    config: &Config,
    recorder: Option<&Arc<Recorder>>,
) -> Result<Arc<dyn Provider>, String> {
    let Some(p) = config.providers.get(name) else {
        let known: Vec<&str> = config.providers.keys().map(String::as_str).collect();
        return Err(format!(
            "provider `{name}` is not configured ({}){}; add [providers.{name}] to conductor.toml{}",
            config.describe(),
            if known.is_empty() {
                String::new()
            } else {
                format!("; configured: {}", known.join(", "))
            },
            crate::config::env_kind_var(name)
                .map(|v| format!(" or set {v}"))
                .unwrap_or_default()
        ));
    };
    let key = match &p.api_key_env {
        Some(var) => match std::env::var(var) {
            Ok(k) if !k.trim().is_empty() => Some(k.trim().to_string()),
            _ => {
                return Err(format!(
                    "provider `{name}` reads its API key from the environment variable `{var}`, \
                     which is not set"
                ))
            }
        },
        None => None,
    };
    let inner: Arc<dyn Provider> = match p.kind {
        ProviderKind::Openai => Arc::new(OpenAiProvider::new(name, p, key)?),
        ProviderKind::Anthropic => Arc::new(AnthropicProvider::new(name, p, key)?),
        ProviderKind::Replay => {
            let path = p.cassette.as_deref().unwrap_or(std::path::Path::new(""));
            Arc::new(ReplayProvider::open(path)?)
        }
    };
    Ok(match recorder {
        Some(r) => Arc::new(cassette::Recording {
            inner,
            recorder: r.clone(),
        }),
        None => inner,
    })
}

/// An `llm` pool's agent.
pub struct LlmAgent {
    provider_name: String,
    provider: Arc<dyn Provider>,
    role: Option<Role>,
    model: String,
    temperature: Option<f64>,
    max_tokens: u32,
}

impl LlmAgent {
    pub fn new(
        agent: &ir::Agent,
        llm: &ir::LlmAgent,
        config: &Config,
        provider: Arc<dyn Provider>,
    ) -> Result<LlmAgent, String> {
        let p = config.providers.get(&llm.provider);
        let model = llm
            .model
            .clone()
            .or_else(|| p.and_then(|p| p.model.clone()));
        let model = match (model, p.map(|p| p.kind)) {
            (Some(m), _) => m,
            (None, Some(ProviderKind::Replay)) => "replay".to_string(),
            (None, _) => {
                return Err(format!(
                    "agent `{}` names no `model`, and provider `{}` sets none",
                    agent.name, llm.provider
                ))
            }
        };
        Ok(LlmAgent {
            provider_name: llm.provider.clone(),
            provider,
            role: llm.role,
            model,
            temperature: llm.temperature.or_else(|| p.and_then(|p| p.temperature)),
            max_tokens: llm
                .max_tokens
                .or_else(|| p.and_then(|p| p.max_tokens))
                .unwrap_or(DEFAULT_MAX_TOKENS),
        })
    }
}

impl Agent for LlmAgent {
    fn execute(&self, req: TaskRequest) -> AgentFuture {
        let provider = self.provider.clone();
        let provider_name = self.provider_name.clone();
        let role = self.role;
        let mut chat = ChatRequest {
            task: req.task.to_string(),
            role: role.map_or("custom", Role::as_str).to_string(),
            model: self.model.clone(),
            system: req.system.clone().unwrap_or_else(|| match role {
                Some(r) => roles::system_prompt(r),
                None => roles::generic_system_prompt(),
            }),
            messages: vec![Message::user(user_message(&req))],
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            schema: roles::schema(role),
        };
        Box::pin(async move {
            let mut problem = String::new();
            for turn in 0..2 {
                let begun = Instant::now();
                let reply = provider.complete(&chat).await?;
                req.calls.push(LlmCall {
                    provider: provider_name.clone(),
                    model: reply.model.clone(),
                    input_tokens: reply.input_tokens,
                    output_tokens: reply.output_tokens,
                    duration_ms: begun.elapsed().as_millis() as u64,
                    replayed: provider.replays(),
                });
                match roles::parse_reply(role, &reply.text) {
                    Ok(output) => return Ok(output),
                    Err(e) => {
                        problem = if reply.truncated {
                            format!(
                                "{e} (the reply stopped at max_tokens = {})",
                                chat.max_tokens
                            )
                        } else {
                            e
                        };
                        if turn == 0 {
                            // Providers refuse an empty assistant turn.
                            let said = if reply.text.trim().is_empty() {
                                "(no reply)".to_string()
                            } else {
                                reply.text
                            };
                            chat.messages.push(Message::assistant(said));
                            chat.messages.push(Message::user(format!(
                                "Your reply could not be used: {problem}. Reply again with only \
                                 the JSON object, in the shape the system prompt gives."
                            )));
                        }
                    }
                }
            }
            Err(TaskError::fatal(
                ErrorCode::InvalidOutput,
                format!(
                    "the {} reply was not usable twice (the second time after being told why): \
                     {problem}",
                    chat.role
                ),
            ))
        })
    }
}

/// The user turn: the task's rendered prompt; with none, the task's input as JSON.
fn user_message(req: &TaskRequest) -> String {
    match &req.prompt {
        Some(p) if !p.trim().is_empty() => p.trim().to_string(),
        _ => format!(
            "Task `{}`. Its input:\n{}",
            req.task,
            serde_json::to_string_pretty(&req.input).unwrap_or_default()
        ),
    }
}
