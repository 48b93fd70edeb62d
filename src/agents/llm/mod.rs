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

pub use cassette::{Cassette, CassetteError, Exchange, Recorder, ReplayProvider};
pub use providers::{AnthropicProvider, OpenAiProvider};

use super::{AgentEnv, AgentFuture, CallAsk, CallOutcome, Preparing, Renderer, Trace};
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
    /// Of `input_tokens`, those the provider served from its prompt cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
    /// The reply stopped at `max_tokens`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

/// Why a provider cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("provider `{name}` is not configured ({described}){known}; add [providers.{name}] to conductor.toml{hint}")]
    NotConfigured {
        name: String,
        /// Where the configuration came from.
        described: String,
        /// `; configured: a, b`, or empty.
        known: String,
        /// ` or set CONDUCTOR_PROVIDERS_X_KIND`, or empty.
        hint: String,
    },
    #[error("provider `{name}` reads its API key from the environment variable `{var}`, which is not set")]
    MissingKey { name: String, var: String },
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Cassette(#[from] CassetteError),
}

/// Builds the provider named in `conductor.toml`. The API key is read from the environment
/// variable the configuration names, here and nowhere else.
pub fn provider(
    name: &str,
    config: &Config,
    recorder: Option<&Arc<Recorder>>,
) -> Result<Arc<dyn Provider>, ProviderError> {
    let Some(p) = config.providers.get(name) else {
        let known: Vec<&str> = config.providers.keys().map(String::as_str).collect();
        return Err(ProviderError::NotConfigured {
            name: name.to_string(),
            described: config.describe(),
            known: if known.is_empty() {
                String::new()
            } else {
                format!("; configured: {}", known.join(", "))
            },
            hint: crate::config::env_kind_var(name)
                .map(|v| format!(" or set {v}"))
                .unwrap_or_default(),
        });
    };
    let key = match &p.api_key_env {
        Some(var) => match std::env::var(var) {
            Ok(k) if !k.trim().is_empty() => Some(k.trim().to_string()),
            _ => {
                return Err(ProviderError::MissingKey {
                    name: name.to_string(),
                    var: var.clone(),
                })
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

/// The model an llm pool uses: its own, else its provider's default; a replay provider
/// needs none.
pub(crate) fn model_for(llm: &ir::LlmAgent, config: &Config) -> Option<String> {
    let p = config.providers.get(&llm.provider);
    llm.model
        .clone()
        .or_else(|| p.and_then(|p| p.model.clone()))
        .or_else(|| (p.map(|p| p.kind) == Some(ProviderKind::Replay)).then(|| "replay".into()))
}

/// One llm attempt: the provider to ask, the conversation's start, and how to judge replies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCall {
    /// The provider's name in `conductor.toml` (the executing process's own configuration
    /// says how to reach it).
    pub provider: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    pub system: String,
    /// The user turn.
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    pub max_tokens: u32,
}

/// The call for one attempt of an llm pool.
pub(super) fn prepare(
    l: &ir::LlmAgent,
    agent: &ir::Agent,
    p: &Preparing<'_>,
    r: &Renderer<'_>,
) -> Result<ChatCall, TaskError> {
    let config = &p.env.config;
    let provider = config.providers.get(&l.provider);
    let system = match &l.system {
        Some(sys) => r.render(sys, &format!("`system` of agent `{}`", agent.name))?,
        None => match l.role {
            Some(role) => roles::system_prompt(role),
            None => roles::generic_system_prompt(),
        },
    };
    let prompt = r.render_opt(
        p.task.prompt.as_deref(),
        &format!("`prompt` of task `{}`", p.task.name),
    )?;
    let prompt = match prompt {
        Some(text) if !text.trim().is_empty() => text.trim().to_string(),
        _ => format!(
            "Task `{}`. Its input:\n{}",
            p.task.name,
            serde_json::to_string_pretty(p.input).unwrap_or_default()
        ),
    };
    Ok(ChatCall {
        provider: l.provider.clone(),
        model: model_for(l, config).unwrap_or_default(),
        role: l.role,
        system,
        prompt,
        temperature: l
            .temperature
            .or_else(|| provider.and_then(|p| p.temperature)),
        max_tokens: l
            .max_tokens
            .or_else(|| provider.and_then(|p| p.max_tokens))
            .unwrap_or(DEFAULT_MAX_TOKENS),
    })
}

/// Asks the provider, validates the reply against the role's shape, and gives one corrective
/// turn before INVALID_OUTPUT.
pub(super) fn execute(
    call: ChatCall,
    task: Arc<str>,
    env: Arc<AgentEnv>,
    trace: Trace,
) -> AgentFuture {
    Box::pin(async move {
        let provider = env.provider(&call.provider)?;
        let role = call.role;
        let mut chat = first_request(&call, &task);
        let rates = env
            .config
            .price(&call.provider, &call.model)
            .map(crate::model::Rates::from);
        converse(&mut chat, &*provider, &call.provider, rates, role, &trace).await
    })
}

/// The request of an attempt's first call.
fn first_request(call: &ChatCall, task: &str) -> ChatRequest {
    ChatRequest {
        task: task.to_string(),
        role: call.role.map_or("custom", Role::as_str).to_string(),
        model: call.model.clone(),
        system: call.system.clone(),
        messages: vec![Message::user(call.prompt.clone())],
        temperature: call.temperature,
        max_tokens: call.max_tokens,
        schema: roles::schema(call.role),
    }
}

/// What an attempt's first call asks of the budgets (the allowance of an attempt on a
/// worker is held from it before the attempt is sent).
pub(crate) fn first_ask(call: &ChatCall) -> CallAsk {
    CallAsk {
        provider: call.provider.clone(),
        model: call.model.clone(),
        prompt_tokens: prompt_bound(&first_request(call, "")),
        max_tokens: u64::from(call.max_tokens),
    }
}

/// An upper bound on a request's prompt tokens: the bytes of its system prompt, messages and
/// schema (a token is at least one byte) and a few framing tokens per message.
pub(crate) fn prompt_bound(chat: &ChatRequest) -> u64 {
    let bytes = chat.system.len()
        + chat.messages.iter().map(|m| m.content.len()).sum::<usize>()
        + if chat.schema.is_null() {
            0
        } else {
            chat.schema.to_string().len()
        };
    bytes as u64 + 16 * (chat.messages.len() as u64 + 1)
}

/// What a reply cost: nothing when replayed from a cassette, unknown without a price.
fn call_cost(
    rates: Option<crate::model::Rates>,
    reply: &ChatReply,
    replayed: bool,
) -> Option<crate::model::Usd> {
    if replayed {
        return Some(crate::model::Usd::ZERO);
    }
    rates.map(|r| {
        r.cost(
            reply.input_tokens,
            reply.cached_input_tokens,
            reply.output_tokens,
        )
    })
}

async fn converse(
    chat: &mut ChatRequest,
    provider: &dyn Provider,
    provider_name: &str,
    rates: Option<crate::model::Rates>,
    role: Option<Role>,
    trace: &Trace,
) -> Result<Value, TaskError> {
    let mut problem = String::new();
    for turn in 0..2 {
        let begun = Instant::now();
        let replayed = provider.replays();
        // A replayed call spends nothing: it is not put to the budgets.
        let ask = CallAsk {
            provider: provider_name.to_string(),
            model: chat.model.clone(),
            prompt_tokens: prompt_bound(chat),
            max_tokens: u64::from(chat.max_tokens),
        };
        let reserved = if replayed {
            None
        } else {
            trace.reserve(&ask).await
        };
        let reservation = match reserved {
            Some(Ok(r)) => Some(r),
            // An attempt on a worker whose allowance has no room for the corrective turn:
            // the reply stays unusable (a retry gets an allowance of its own).
            Some(Err(_)) if turn > 0 && trace.allowance() => {
                return Err(TaskError::retryable(
                    ErrorCode::InvalidOutput,
                    format!(
                        "the {} reply was not usable, and the attempt's budget allowance on \
                         its worker has no room to say why and ask again: {problem}",
                        chat.role
                    ),
                ));
            }
            Some(Err(e)) => return Err(e),
            None => None,
        };
        let reply = match provider.complete(chat).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(r) = reservation {
                    // A timeout may have been billed; any other error ran no model.
                    r.settle(if e.code == ErrorCode::Timeout {
                        CallOutcome::CutOff
                    } else {
                        CallOutcome::Failed
                    });
                }
                return Err(e);
            }
        };
        let call = LlmCall {
            provider: provider_name.to_string(),
            model: reply.model.clone(),
            input_tokens: reply.input_tokens,
            output_tokens: reply.output_tokens,
            cached_input_tokens: reply.cached_input_tokens,
            duration_ms: begun.elapsed().as_millis() as u64,
            replayed,
            usd: call_cost(rates, &reply, replayed),
        };
        if let Some(r) = reservation {
            r.settle(CallOutcome::Reply(call.clone()));
        }
        trace.push_call(call);
        match roles::parse_reply(role, &reply.text) {
            Ok(output) => return Ok(output),
            Err(e) => {
                problem = if reply.truncated {
                    format!(
                        "{e} (the reply stopped at max_tokens = {})",
                        chat.max_tokens
                    )
                } else {
                    e.0
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
}
