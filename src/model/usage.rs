//! Model calls and their token usage; the files an attempt produced.

use serde::{Deserialize, Serialize};

/// One call to an LLM provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// The provider's name in `conductor.toml`.
    pub provider: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub duration_ms: u64,
    /// Answered from a cassette rather than by a model.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

/// Token usage, summed over calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Task outputs served from the response cache.
    #[serde(default)]
    pub cached: u64,
}

impl Usage {
    pub fn add(&mut self, call: &LlmCall) {
        self.calls += 1;
        self.input_tokens += call.input_tokens;
        self.output_tokens += call.output_tokens;
    }
}

/// A file an agent produced: where it went in the workspace and its content address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub path: String,
    /// SHA-256 of the content, in hex.
    pub sha256: String,
    pub size: u64,
}
