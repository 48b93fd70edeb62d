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

/// The end of what an attempt's program printed (the last few KiB of each stream), kept in
/// its event for templates (`tasks.x.stdout`), `show`, `why` and the run view.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTail {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
}

impl OutputTail {
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty()
    }
}

/// Which stream a piece of an attempt's log is from; a marker says what was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    Marker,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Marker => "marker",
        }
    }

    pub fn parse(s: &str) -> Option<LogStream> {
        [LogStream::Stdout, LogStream::Stderr, LogStream::Marker]
            .into_iter()
            .find(|l| l.as_str() == s)
    }
}

/// A piece of an attempt's output, stored beside its events (not in them), in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// Order within the attempt, over both streams.
    pub seq: u32,
    pub stream: LogStream,
    pub data: Vec<u8>,
}

/// A file an agent produced: where it went in the workspace and its content address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub path: String,
    /// SHA-256 of the content, in hex.
    pub sha256: String,
    pub size: u64,
}
