//! The network providers: OpenAI-compatible chat completions and Anthropic messages.
//!
//! Statuses map onto typed errors as for `http` agents (429 RATE_LIMITED with the server's
//! `Retry-After`, 408/425/5xx/529 retryable, other 4xx fatal). The API key travels only in a
//! request header; any text that comes back has it replaced by `[redacted]`, in
//! any escaped or encoded form (`crate::secrets`).

use std::time::Duration;

use serde_json::{json, Value};

use super::{ChatFuture, ChatReply, ChatRequest, Provider, ProviderError};
use crate::agents::http::{exchange, status_error};
use crate::config::{ProviderConfig, ResponseFormat};
use crate::model::{ErrorCode, TaskError};

fn client(name: &str, timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    crate::agents::http::client(Some(timeout))
        .map_err(|e| ProviderError::Setup(format!("provider `{name}`: {e}")))
}

/// Removes the key from text that may have come back from the server.
fn redact(text: String, key: Option<&str>) -> String {
    match key {
        Some(k) => crate::secrets::replace_value(text, k, "[redacted]"),
        None => text,
    }
}

fn redact_error(mut e: TaskError, key: Option<&str>) -> TaskError {
    e.message = redact(e.message, key);
    e
}

/// A 2xx body that is not what the API promises: the provider's fault, maybe passing.
fn malformed(name: &str, url: &str, why: &str, body: &str) -> TaskError {
    let excerpt: String = body.trim().chars().take(200).collect();
    TaskError::retryable(
        ErrorCode::InvalidOutput,
        format!("provider `{name}` ({url}) answered with {why}: {excerpt}"),
    )
}

/// Sends a provider request and reads its JSON body (with the raw text, for messages). The key
/// is removed from everything that comes back; a non-2xx status is a typed error.
async fn post(
    request: reqwest::RequestBuilder,
    name: &str,
    url: &str,
    key: Option<&str>,
) -> Result<(Value, String), TaskError> {
    let (status, retry_after, text) = exchange(request, url)
        .await
        .map_err(|e| redact_error(e, key))?;
    let text = redact(text, key);
    if !(200..300).contains(&status) {
        return Err(status_error(
            status,
            retry_after,
            format!("provider `{name}` (POST {url})"),
            &text,
        ));
    }
    let body = serde_json::from_str(&text)
        .map_err(|_| malformed(name, url, "a body that is not JSON", &text))?;
    Ok((body, text))
}

fn tokens(v: &Value, field: &str) -> u64 {
    v.get(field).and_then(Value::as_u64).unwrap_or(0)
}

/// OpenAI-compatible `POST {base_url}/chat/completions`.
pub struct OpenAiProvider {
    name: String,
    url: String,
    key: Option<String>,
    format: ResponseFormat,
    max_tokens_field: String,
    client: reqwest::Client,
}

impl OpenAiProvider {
    pub fn new(
        name: &str,
        config: &ProviderConfig,
        key: Option<String>,
    ) -> Result<OpenAiProvider, ProviderError> {
        Ok(OpenAiProvider {
            name: name.to_string(),
            url: format!("{}/chat/completions", config.base_url),
            key,
            format: config.response_format,
            max_tokens_field: config.max_tokens_field.clone(),
            client: client(name, config.timeout)?,
        })
    }

    /// The request body (public for tests of its shape).
    pub fn body(&self, req: &ChatRequest) -> Value {
        let mut messages = vec![json!({ "role": "system", "content": req.system })];
        messages.extend(
            req.messages
                .iter()
                .map(|m| json!({ "role": m.role, "content": m.content })),
        );
        let mut body = json!({
            "model": req.model,
            "messages": messages,
        });
        body[self.max_tokens_field.as_str()] = json!(req.max_tokens);
        if let Some(t) = req.temperature {
            body["temperature"] = json!(t);
        }
        match self.format {
            ResponseFormat::JsonObject => {
                body["response_format"] = json!({ "type": "json_object" })
            }
            ResponseFormat::JsonSchema => {
                body["response_format"] = json!({
                    "type": "json_schema",
                    "json_schema": { "name": format!("{}_reply", req.role), "schema": req.schema },
                })
            }
            ResponseFormat::None => {}
        }
        body
    }
}

impl Provider for OpenAiProvider {
    fn complete<'a>(&'a self, req: &'a ChatRequest) -> ChatFuture<'a> {
        Box::pin(async move {
            let mut request = self.client.post(&self.url).json(&self.body(req));
            if let Some(k) = &self.key {
                request = request.bearer_auth(k);
            }
            let (body, text) = post(request, &self.name, &self.url, self.key.as_deref()).await?;
            let choice = body.pointer("/choices/0").ok_or_else(|| {
                malformed(&self.name, &self.url, "no `choices` in its JSON", &text)
            })?;
            let content = match choice.pointer("/message/content") {
                Some(Value::String(s)) => s.clone(),
                _ => {
                    let refusal = choice
                        .pointer("/message/refusal")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if refusal.is_empty() {
                        return Err(malformed(
                            &self.name,
                            &self.url,
                            "a choice without `message.content`",
                            &text,
                        ));
                    }
                    // A refusal is an answer: validation sends it back once, then fails.
                    refusal.to_string()
                }
            };
            let usage = body.get("usage").cloned().unwrap_or(Value::Null);
            Ok(ChatReply {
                model: body
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or(&req.model)
                    .to_string(),
                text: content,
                input_tokens: tokens(&usage, "prompt_tokens"),
                output_tokens: tokens(&usage, "completion_tokens"),
                // Included in `prompt_tokens`.
                cached_input_tokens: usage
                    .get("prompt_tokens_details")
                    .map_or(0, |d| tokens(d, "cached_tokens")),
                truncated: choice.get("finish_reason").and_then(Value::as_str) == Some("length"),
            })
        })
    }
}

/// Anthropic `POST {base_url}/v1/messages`.
pub struct AnthropicProvider {
    name: String,
    url: String,
    key: Option<String>,
    client: reqwest::Client,
}

/// The API version this client speaks.
pub(super) const ANTHROPIC_VERSION: &str = "2023-06-01";

impl AnthropicProvider {
    pub fn new(
        name: &str,
        config: &ProviderConfig,
        key: Option<String>,
    ) -> Result<AnthropicProvider, ProviderError> {
        Ok(AnthropicProvider {
            name: name.to_string(),
            url: format!("{}/v1/messages", config.base_url),
            key,
            client: client(name, config.timeout)?,
        })
    }

    pub fn body(&self, req: &ChatRequest) -> Value {
        let mut body = json!({
            "model": req.model,
            "system": req.system,
            "messages": req.messages
                .iter()
                .map(|m| json!({ "role": m.role, "content": m.content }))
                .collect::<Vec<_>>(),
            "max_tokens": req.max_tokens,
        });
        if let Some(t) = req.temperature {
            // Anthropic's range is 0–1; OpenAI's 0–2.
            body["temperature"] = json!(t.min(1.0));
        }
        body
    }
}

impl Provider for AnthropicProvider {
    fn complete<'a>(&'a self, req: &'a ChatRequest) -> ChatFuture<'a> {
        Box::pin(async move {
            let mut request = self
                .client
                .post(&self.url)
                .header("anthropic-version", ANTHROPIC_VERSION)
                .json(&self.body(req));
            if let Some(k) = &self.key {
                // Marked sensitive: kept out of debug output.
                let mut value = reqwest::header::HeaderValue::from_str(k).map_err(|_| {
                    TaskError::fatal(
                        ErrorCode::InvalidInput,
                        format!(
                            "provider `{}`: the API key holds characters a header cannot carry",
                            self.name
                        ),
                    )
                })?;
                value.set_sensitive(true);
                request = request.header("x-api-key", value);
            }
            let (body, text) = post(request, &self.name, &self.url, self.key.as_deref()).await?;
            let Some(Value::Array(content)) = body.get("content") else {
                return Err(malformed(
                    &self.name,
                    &self.url,
                    "no `content` list in its JSON",
                    &text,
                ));
            };
            let text_out: String = content
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            let usage = body.get("usage").cloned().unwrap_or(Value::Null);
            Ok(ChatReply {
                model: body
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or(&req.model)
                    .to_string(),
                text: text_out,
                // Anthropic counts the prompt in three parts: `input_tokens` leaves out what was
                // read from or written to its prompt cache.
                input_tokens: tokens(&usage, "input_tokens")
                    + tokens(&usage, "cache_read_input_tokens")
                    + tokens(&usage, "cache_creation_input_tokens"),
                output_tokens: tokens(&usage, "output_tokens"),
                cached_input_tokens: tokens(&usage, "cache_read_input_tokens"),
                truncated: body.get("stop_reason").and_then(Value::as_str) == Some("max_tokens"),
            })
        })
    }
}
