//! Model calls and their token usage; the files an attempt produced.

use serde::{Deserialize, Serialize};

use super::Usd;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One call to an LLM provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// The provider's name in `conductor.toml`.
    pub provider: String,
    pub model: String,
    /// Every input token, the cached ones included.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens the provider served from its prompt cache (priced lower).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
    pub duration_ms: u64,
    /// Answered from a cassette rather than by a model: it cost nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// What it cost at the configured prices; absent when `conductor.toml` has no price for
    /// its provider and model. A replayed call costs nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<Usd>,
}

impl Usage {
    /// What budgets count of it: replayed calls spend nothing.
    pub fn spend(&self) -> super::Spend {
        super::Spend {
            llm_calls: self.calls.saturating_sub(self.replayed),
            tokens: (self.input_tokens + self.output_tokens).saturating_sub(self.replayed_tokens),
            usd: self.usd,
        }
        .plus(self.cut_off)
    }
}

impl LlmCall {
    /// What budgets count of it: a replayed call spends nothing; an unpriced one no dollars.
    pub fn spend(&self) -> super::Spend {
        if self.replayed {
            return super::Spend::default();
        }
        super::Spend {
            llm_calls: 1,
            tokens: self.tokens(),
            usd: self.usd.unwrap_or_default(),
        }
    }

    /// Its tokens, input and output.
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// Token usage and its cost, summed over calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Task outputs served from the response cache: no call, no cost.
    #[serde(default)]
    pub cached: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
    /// Calls answered from a cassette, and their tokens: no cost, no budget spent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replayed: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replayed_tokens: u64,
    /// The cost of the priced calls.
    #[serde(default)]
    pub usd: Usd,
    /// Calls with no price in `conductor.toml`: not in `usd`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unpriced: u64,
    /// Calls with no reply although a model may have run (a timeout, a stopped attempt, a
    /// process killed during the call): budgets count them at their worst case.
    #[serde(default, skip_serializing_if = "super::Spend::is_zero")]
    pub cut_off: super::Spend,
}

impl Usage {
    /// Nothing spent (`Default`, usable in a `static`).
    pub const ZERO: Usage = Usage {
        calls: 0,
        input_tokens: 0,
        output_tokens: 0,
        cached: 0,
        cached_input_tokens: 0,
        replayed: 0,
        replayed_tokens: 0,
        usd: super::Usd::ZERO,
        unpriced: 0,
        cut_off: super::Spend {
            llm_calls: 0,
            tokens: 0,
            usd: super::Usd::ZERO,
        },
    };

    pub fn add(&mut self, call: &LlmCall) {
        self.calls += 1;
        self.input_tokens += call.input_tokens;
        self.output_tokens += call.output_tokens;
        self.cached_input_tokens += call.cached_input_tokens;
        self.replayed += u64::from(call.replayed);
        if call.replayed {
            self.replayed_tokens += call.tokens();
        }
        match call.usd {
            Some(usd) => self.usd = self.usd.plus(usd),
            None => self.unpriced += 1,
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }

    /// Both summed.
    pub fn plus(&self, o: &Usage) -> Usage {
        Usage {
            calls: self.calls + o.calls,
            input_tokens: self.input_tokens + o.input_tokens,
            output_tokens: self.output_tokens + o.output_tokens,
            cached: self.cached + o.cached,
            cached_input_tokens: self.cached_input_tokens + o.cached_input_tokens,
            replayed: self.replayed + o.replayed,
            replayed_tokens: self.replayed_tokens + o.replayed_tokens,
            usd: self.usd.plus(o.usd),
            unpriced: self.unpriced + o.unpriced,
            cut_off: self.cut_off.plus(o.cut_off),
        }
    }

    /// `$0.0123`, `$0.0123 + 2 unpriced calls`, `no cost (replayed)`, or `-` with no calls;
    /// calls that got no reply follow (`+ 1 call cut off, up to $0.004`).
    pub fn cost_text(&self) -> String {
        let replied = self.replied_cost_text();
        let n = self.cut_off.llm_calls;
        if n == 0 {
            return replied;
        }
        let cut = format!(
            "{n} call{} cut off, up to {}",
            crate::text::plural(n),
            self.cut_off.usd
        );
        if self.calls == 0 {
            cut
        } else {
            format!("{replied} + {cut}")
        }
    }

    fn replied_cost_text(&self) -> String {
        if self.calls == 0 {
            return "-".into();
        }
        if self.replayed == self.calls {
            return "no cost (replayed)".into();
        }
        match (self.unpriced, self.usd) {
            (0, usd) => usd.to_string(),
            (n, _) if n == self.calls => format!("{n} unpriced call{}", crate::text::plural(n)),
            (n, usd) => format!("{usd} + {n} unpriced call{}", crate::text::plural(n)),
        }
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
    /// Shared (not copied) with the run state's list of artifacts and its index of paths.
    pub path: std::sync::Arc<str>,
    /// SHA-256 of the content, in hex; shared like `path`.
    pub sha256: std::sync::Arc<str>,
    pub size: u64,
}
