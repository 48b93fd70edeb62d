//! `conductor.toml`: the project configuration — which LLM providers exist and how to reach
//! them — with `CONDUCTOR_PROVIDERS_<NAME>_<FIELD>` environment overrides.
//!
//! Secrets are never part of the configuration: a provider names the environment variable that
//! holds its API key (`api_key_env`), and the key is read from the environment when a run
//! builds its agents. It is never stored, logged or printed.
//!
//! ```toml
//! [providers.default]
//! kind = "replay"                 # "openai" | "anthropic" | "replay"
//! cassette = "cassettes/sdlc.json"
//!
//! [providers.openai]
//! kind = "openai"                 # any OpenAI-compatible chat completions server
//! base_url = "https://api.openai.com/v1"
//! model = "gpt-4o-mini"
//! api_key_env = "OPENAI_API_KEY"
//!
//! [providers.openai.prices]         # US dollars per million tokens, by model
//! "gpt-4o-mini" = { input = 0.15, output = 0.60, cached_input = 0.075 }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The file name looked for beside a workflow.
pub const FILE_NAME: &str = "conductor.toml";

/// Where environment overrides start.
pub const ENV_PREFIX: &str = "CONDUCTOR_PROVIDERS_";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI-compatible chat completions: OpenAI, Ollama, vLLM, llama.cpp's server.
    Openai,
    /// Anthropic's messages API.
    Anthropic,
    /// Answers from a recorded cassette; no network.
    Replay,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Replay => "replay",
        }
    }

    fn parse(s: &str) -> Option<ProviderKind> {
        match s {
            "openai" => Some(ProviderKind::Openai),
            "anthropic" => Some(ProviderKind::Anthropic),
            "replay" => Some(ProviderKind::Replay),
            _ => None,
        }
    }
}

/// How an OpenAI-compatible provider is asked for JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// `{"type": "json_object"}`: understood by OpenAI, Ollama, vLLM and llama.cpp.
    #[default]
    JsonObject,
    /// `{"type": "json_schema", ...}` with the role's schema, for servers that enforce it.
    JsonSchema,
    /// No `response_format` at all; the system prompt still asks for JSON.
    None,
}

impl ResponseFormat {
    fn parse(s: &str) -> Option<ResponseFormat> {
        match s {
            "json_object" => Some(ResponseFormat::JsonObject),
            "json_schema" => Some(ResponseFormat::JsonSchema),
            "none" => Some(ResponseFormat::None),
            _ => None,
        }
    }
}

/// One provider, as configured (no secrets: `api_key_env` names a variable).
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    pub base_url: String,
    /// The model when the agent names none.
    pub model: Option<String>,
    /// The environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// `replay`: the cassette file (relative paths resolve from the config file's folder).
    pub cassette: Option<PathBuf>,
    /// One request's limit (the task's `timeout` bounds the whole attempt).
    pub timeout: Duration,
    /// Defaults when the agent sets none.
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub response_format: ResponseFormat,
    /// The body field that carries the reply's token limit (OpenAI-compatible):
    /// `max_completion_tokens` for api.openai.com (its newer models refuse `max_tokens`),
    /// `max_tokens` elsewhere (Ollama, vLLM, llama.cpp).
    pub max_tokens_field: String,
}

/// What a model's tokens cost, in US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Input tokens the provider served from its prompt cache (the input price when not set).
    pub cached_input: f64,
}

/// The project configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    /// The file it was read from, if any.
    pub path: Option<PathBuf>,
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Prices by provider, then by model (`"*"`: any other model of the provider). Kept apart
    /// from [`ProviderConfig`]: a price changes what a call costs, not what it answers, so it
    /// stays out of the response cache's key.
    pub prices: BTreeMap<String, BTreeMap<String, Price>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {message}")]
    Read { path: PathBuf, message: String },
    #[error("`{path}`: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("environment variable `{var}`: {message}")]
    Env { var: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    #[serde(default)]
    providers: BTreeMap<String, ProviderRepr>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderRepr {
    kind: Option<String>,
    base_url: Option<String>,
    model: Option<String>,
    api_key_env: Option<String>,
    /// Present only to refuse it with a clear message.
    api_key: Option<toml::Value>,
    cassette: Option<String>,
    timeout: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    response_format: Option<String>,
    max_tokens_field: Option<String>,
    prices: Option<BTreeMap<String, PriceRepr>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceRepr {
    input: f64,
    output: f64,
    cached_input: Option<f64>,
}

/// The environment override fields, longest first so `API_KEY_ENV` wins over a name ending
/// in `_ENV`.
const ENV_FIELDS: [&str; 10] = [
    "MAX_TOKENS_FIELD",
    "RESPONSE_FORMAT",
    "API_KEY_ENV",
    "TEMPERATURE",
    "MAX_TOKENS",
    "BASE_URL",
    "CASSETTE",
    "TIMEOUT",
    "MODEL",
    "KIND",
];

impl Config {
    /// Finds the configuration of a workflow: `explicit` (`--config`, `CONDUCTOR_CONFIG`),
    /// else `conductor.toml` in the workflow's folder, else none; then applies the
    /// environment overrides from `env`.
    pub fn discover(
        explicit: Option<&Path>,
        workflow: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Config::discover_with(explicit, workflow, env.into_iter().map(Ok))
    }

    /// [`Config::discover`] with the process environment, where a variable that is not
    /// Unicode is an error only when it is one of Conductor's.
    pub fn from_process_env(
        explicit: Option<&Path>,
        workflow: &Path,
    ) -> Result<Config, ConfigError> {
        let vars = std::env::vars_os().filter_map(|(k, v)| {
            let name = k.to_string_lossy();
            if !name.starts_with(ENV_PREFIX) {
                return None;
            }
            Some(match (k.to_str(), v.to_str()) {
                (Some(k), Some(v)) => Ok((k.to_string(), v.to_string())),
                _ => Err(ConfigError::Env {
                    var: name.into_owned(),
                    message: "its name or value is not valid Unicode".into(),
                }),
            })
        });
        Config::discover_with(explicit, workflow, vars)
    }

    fn discover_with(
        explicit: Option<&Path>,
        workflow: &Path,
        env: impl IntoIterator<Item = Result<(String, String), ConfigError>>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect::<Result<_, _>>()?;
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => {
                let beside = workflow
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .join(FILE_NAME);
                beside.is_file().then_some(beside)
            }
        };
        let mut reprs = BTreeMap::new();
        if let Some(p) = &path {
            let read =
                crate::files::read_limited(p, crate::limits::MAX_CONFIG_SIZE).and_then(|b| {
                    String::from_utf8(b).map_err(|_| std::io::Error::other("it is not UTF-8 text"))
                });
            let text = read.map_err(|e| ConfigError::Read {
                path: p.clone(),
                message: e.to_string(),
            })?;
            // The message and the place only: toml's own rendering quotes the offending line,
            // which could be a key someone pasted into the file.
            let file: FileRepr = toml::from_str(&text).map_err(|e| {
                let place = e.span().map_or(String::new(), |span| {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}: ")
                });
                ConfigError::Invalid {
                    path: p.clone(),
                    message: format!("{place}{}", hide_strings(e.message().trim_end())),
                }
            })?;
            reprs = file.providers;
        }
        apply_env(&mut reprs, env)?;
        let base = path
            .as_deref()
            .and_then(Path::parent)
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let origin = path.clone().unwrap_or_else(|| PathBuf::from("environment"));
        let mut providers = BTreeMap::new();
        let mut prices = BTreeMap::new();
        for (name, mut r) in reprs {
            if let Some(table) = r.prices.take() {
                prices.insert(name.clone(), resolve_prices(&name, table, &origin)?);
            }
            providers.insert(name.clone(), resolve(&name, r, &base, &origin)?);
        }
        Ok(Config {
            path,
            providers,
            prices,
        })
    }

    /// The price of `model` at `provider`: its own entry, else the provider's `"*"`.
    pub fn price(&self, provider: &str, model: &str) -> Option<Price> {
        let table = self.prices.get(provider)?;
        table.get(model).or_else(|| table.get("*")).copied()
    }

    /// Where this configuration was looked for, for messages.
    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("`{}`", p.display()),
            None => format!("no {FILE_NAME} (none beside the workflow, no --config)"),
        }
    }
}

/// The environment variable that would create provider `name` with a `kind`, if the
/// environment can name it: overrides create only lowercase names with underscores.
pub fn env_kind_var(name: &str) -> Option<String> {
    name.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        .then(|| format!("{ENV_PREFIX}{}_KIND", name.to_ascii_uppercase()))
}

fn apply_env(
    reprs: &mut BTreeMap<String, ProviderRepr>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (var, value) in vars {
        let rest = &var[ENV_PREFIX.len()..];
        let Some(field) = ENV_FIELDS
            .iter()
            .find(|f| rest.len() > f.len() + 1 && rest.ends_with(&format!("_{f}")))
        else {
            return Err(ConfigError::Env {
                var,
                message: format!(
                    "expected {ENV_PREFIX}<NAME>_<FIELD> with FIELD one of {}",
                    ENV_FIELDS.join(", ")
                ),
            });
        };
        let upper = &rest[..rest.len() - field.len() - 1];
        // `CONDUCTOR_PROVIDERS_MY_LLM_MODEL` names the provider `my-llm` or `my_llm`, whichever
        // the file defines; a new one is `my_llm`.
        let name = reprs
            .keys()
            .find(|k| k.to_ascii_uppercase().replace('-', "_") == upper)
            .cloned()
            .unwrap_or_else(|| upper.to_ascii_lowercase());
        let r = reprs.entry(name).or_default();
        let number = |what: &str| ConfigError::Env {
            var: var.clone(),
            message: format!("{} is not {what}", shown(&value)),
        };
        match *field {
            "KIND" => r.kind = Some(value.clone()),
            "BASE_URL" => r.base_url = Some(value.clone()),
            "MODEL" => r.model = Some(value.clone()),
            "API_KEY_ENV" => r.api_key_env = Some(value.clone()),
            "CASSETTE" => r.cassette = Some(value.clone()),
            "TIMEOUT" => r.timeout = Some(value.clone()),
            "RESPONSE_FORMAT" => r.response_format = Some(value.clone()),
            "MAX_TOKENS_FIELD" => r.max_tokens_field = Some(value.clone()),
            "MAX_TOKENS" => {
                r.max_tokens = Some(value.parse().map_err(|_| number("a whole number"))?)
            }
            "TEMPERATURE" => r.temperature = Some(value.parse().map_err(|_| number("a number"))?),
            _ => unreachable!("every field of ENV_FIELDS is handled"),
        }
    }
    Ok(())
}

const OFFICIAL_OPENAI: &str = "https://api.openai.com/v1";

fn resolve(
    name: &str,
    r: ProviderRepr,
    base: &Path,
    origin: &Path,
) -> Result<ProviderConfig, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: origin.to_path_buf(),
        message: format!("provider `{name}`: {message}"),
    };
    if r.api_key.is_some() {
        return Err(invalid(
            "`api_key` is not read from files: put the key in an environment variable and name \
             it with `api_key_env = \"...\"`"
                .into(),
        ));
    }
    // A key pasted where its variable's name belongs must not be echoed by the error.
    if let Some(var) = &r.api_key_env {
        let valid = !var.is_empty()
            && !var.starts_with(|c: char| c.is_ascii_digit())
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(invalid(format!(
                "`api_key_env` must be the name of an environment variable (letters, digits, \
                 `_`), not the key itself; it holds {}",
                shown(var)
            )));
        }
    }
    let kind = parse_kind(r.kind.as_deref(), &invalid)?;
    let response_format = parse_response_format(r.response_format.as_deref(), &invalid)?;
    let timeout = match &r.timeout {
        None => Duration::from_secs(300),
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| invalid(format!("timeout {}: {e}", shown(t))))?,
    };
    if let Some(t) = r.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(invalid(format!("temperature {t} is outside 0.0–2.0")));
        }
    }
    let base_url = parse_base_url(kind, r.base_url, &invalid)?;
    // The official endpoints need a key; a local server (Ollama, llama.cpp) usually does not.
    let api_key_env = r.api_key_env.or_else(|| match kind {
        ProviderKind::Openai if base_url == OFFICIAL_OPENAI => Some("OPENAI_API_KEY".into()),
        ProviderKind::Anthropic => Some("ANTHROPIC_API_KEY".into()),
        _ => None,
    });
    let cassette = r.cassette.map(|c| base.join(c));
    if kind == ProviderKind::Replay && cassette.is_none() {
        return Err(invalid(
            "a `replay` provider needs `cassette = \"FILE\"` (a file `--record` wrote)".into(),
        ));
    }
    let max_tokens_field =
        parse_max_tokens_field(r.max_tokens_field.as_deref(), &base_url, &invalid)?;
    Ok(ProviderConfig {
        kind,
        base_url,
        model: r.model,
        api_key_env,
        cassette,
        timeout,
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        response_format,
        max_tokens_field,
    })
}

/// The most a price may be: a typo of a few orders of magnitude is refused, not charged.
const MAX_PRICE: f64 = 1_000_000.0;

fn resolve_prices(
    name: &str,
    table: BTreeMap<String, PriceRepr>,
    origin: &Path,
) -> Result<BTreeMap<String, Price>, ConfigError> {
    let mut prices = BTreeMap::new();
    for (model, p) in table {
        let check = |what: &str, v: f64| {
            if v.is_finite() && (0.0..=MAX_PRICE).contains(&v) {
                Ok(v)
            } else {
                Err(ConfigError::Invalid {
                    path: origin.to_path_buf(),
                    message: format!(
                        "provider `{name}`: the {what} price of `{model}` is {v}; prices are \
                         US dollars per million tokens, from 0 to {MAX_PRICE}"
                    ),
                })
            }
        };
        let input = check("input", p.input)?;
        let price = Price {
            input,
            output: check("output", p.output)?,
            cached_input: check("cached_input", p.cached_input.unwrap_or(input))?,
        };
        prices.insert(model, price);
    }
    Ok(prices)
}

fn parse_kind(
    text: Option<&str>,
    invalid: &impl Fn(String) -> ConfigError,
) -> Result<ProviderKind, ConfigError> {
    let text = text.ok_or_else(|| {
        invalid("`kind` is missing (\"openai\", \"anthropic\" or \"replay\")".into())
    })?;
    ProviderKind::parse(text).ok_or_else(|| {
        invalid(format!(
            "unknown kind {}; expected \"openai\", \"anthropic\" or \"replay\"",
            shown(text)
        ))
    })
}

fn parse_response_format(
    text: Option<&str>,
    invalid: &impl Fn(String) -> ConfigError,
) -> Result<ResponseFormat, ConfigError> {
    match text {
        None => Ok(ResponseFormat::default()),
        Some(s) => ResponseFormat::parse(s).ok_or_else(|| {
            invalid(format!(
                "unknown response_format {}; expected \"json_object\", \"json_schema\" or \"none\"",
                shown(s)
            ))
        }),
    }
}

/// The base URL, without a trailing slash; checked unless the provider replays.
/// A value from the configuration as an error shows it: short ones quoted, long ones only
/// counted — a key pasted into the wrong field must not end up on the screen or in a log.
fn shown(value: &str) -> String {
    let n = value.chars().count();
    if n <= 20 && !value.starts_with("sk-") {
        format!("`{value}`")
    } else {
        format!("a value of {n} characters (not shown: it could be a key)")
    }
}

/// toml's message with every quoted string (`invalid type: string "sk-…"`) shown by [`shown`].
fn hide_strings(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(start) = rest.find('"') {
        let Some(len) = rest[start + 1..].find('"') else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&shown(&rest[start + 1..start + 1 + len]));
        rest = &rest[start + 2 + len..];
    }
    out.push_str(rest);
    out
}

fn parse_base_url(
    kind: ProviderKind,
    written: Option<String>,
    invalid: &impl Fn(String) -> ConfigError,
) -> Result<String, ConfigError> {
    let base_url = match (kind, written) {
        (_, Some(u)) => u.trim_end_matches('/').to_string(),
        (ProviderKind::Openai, None) => OFFICIAL_OPENAI.to_string(),
        (ProviderKind::Anthropic, None) => "https://api.anthropic.com".to_string(),
        (ProviderKind::Replay, None) => String::new(),
    };
    if kind == ProviderKind::Replay {
        return Ok(base_url);
    }
    let url = reqwest::Url::parse(&base_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    let Some(url) = url else {
        return Err(invalid(format!(
            "base_url `{base_url}` must be an http:// or https:// URL"
        )));
    };
    // Error messages name the URL: it must not carry a secret.
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(invalid(
            "base_url must not carry credentials or a query; put the key in an \
             environment variable and name it with `api_key_env`"
                .into(),
        ));
    }
    // Paths are appended to base_url: after a `#` they would silently become the fragment.
    if url.fragment().is_some() {
        return Err(invalid(
            "base_url must not have a `#fragment`: request paths are added after it".into(),
        ));
    }
    Ok(base_url)
}

fn parse_max_tokens_field(
    written: Option<&str>,
    base_url: &str,
    invalid: &impl Fn(String) -> ConfigError,
) -> Result<String, ConfigError> {
    match written {
        None if base_url == OFFICIAL_OPENAI => Ok("max_completion_tokens".to_string()),
        None => Ok("max_tokens".to_string()),
        Some(f @ ("max_tokens" | "max_completion_tokens")) => Ok(f.to_string()),
        Some(other) => Err(invalid(format!(
            "unknown max_tokens_field `{other}`; expected \"max_tokens\" or \"max_completion_tokens\""
        ))),
    }
}

#[cfg(test)]
mod tests;
