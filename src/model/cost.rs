//! Money and what model calls spend: exact dollar amounts, a call's cost from its provider's
//! prices, the quantities budgets count, and the limits and scopes of budgets as the log keeps
//! them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::check::ir;
use crate::config::Price;

/// Pico-dollars in a dollar.
const PICO: f64 = 1e12;

/// US dollars, exact: counted in pico-dollars (10⁻¹² $), so that a price per million tokens
/// with up to six decimals costs a whole number per token, and sums never drift. Written as a
/// number of dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(pub u64);

impl Usd {
    pub const ZERO: Usd = Usd(0);

    /// The nearest amount to `dollars`; negative or not-a-number amounts are zero.
    pub fn from_dollars(dollars: f64) -> Usd {
        if dollars.is_nan() || dollars <= 0.0 {
            return Usd::ZERO;
        }
        Usd((dollars * PICO).round().min(u64::MAX as f64) as u64)
    }

    pub fn dollars(self) -> f64 {
        self.0 as f64 / PICO
    }

    pub fn plus(self, other: Usd) -> Usd {
        Usd(self.0.saturating_add(other.0))
    }

    pub fn minus(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0))
    }
}

/// `$2.50`, `$0.00045`, `$0.00`: up to eight decimals, at least two.
impl std::fmt::Display for Usd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let whole = self.0 / 1_000_000_000_000;
        // Eight decimals: 10⁻⁸ $ is 10⁴ pico-dollars.
        let frac = (self.0 % 1_000_000_000_000 + 5_000) / 10_000;
        let (whole, frac) = if frac == 100_000_000 {
            (whole + 1, 0)
        } else {
            (whole, frac)
        };
        let mut digits = format!("{frac:08}");
        while digits.len() > 2 && digits.ends_with('0') {
            digits.pop();
        }
        write!(f, "${whole}.{digits}")
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.dollars())
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Usd, D::Error> {
        // INVARIANT: amounts in the log are below 2^53 pico-dollars (about $9000) per call or
        // reservation, so the round trip through a float is exact.
        Ok(Usd::from_dollars(f64::deserialize(d)?))
    }
}

/// A price as whole pico-dollars per token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
}

impl From<Price> for Rates {
    fn from(p: Price) -> Rates {
        // Dollars per million tokens × 10¹² / 10⁶ = pico-dollars per token.
        let per_token = |per_million: f64| (per_million * 1e6).round().max(0.0) as u64;
        Rates {
            input: per_token(p.input),
            output: per_token(p.output),
            cached_input: per_token(p.cached_input),
        }
    }
}

impl Rates {
    /// What a call costs: `input_tokens` includes the `cached_input_tokens`.
    pub fn cost(&self, input_tokens: u64, cached_input_tokens: u64, output_tokens: u64) -> Usd {
        let cached = cached_input_tokens.min(input_tokens);
        let pico = (input_tokens - cached)
            .saturating_mul(self.input)
            .saturating_add(cached.saturating_mul(self.cached_input))
            .saturating_add(output_tokens.saturating_mul(self.output));
        Usd(pico)
    }
}

/// What model calls spend, as budgets count it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    pub llm_calls: u64,
    /// Input and output tokens.
    pub tokens: u64,
    pub usd: Usd,
}

impl Spend {
    pub fn plus(self, other: Spend) -> Spend {
        Spend {
            llm_calls: self.llm_calls.saturating_add(other.llm_calls),
            tokens: self.tokens.saturating_add(other.tokens),
            usd: self.usd.plus(other.usd),
        }
    }

    /// `self` less `other`, never below zero.
    pub fn minus(self, other: Spend) -> Spend {
        Spend {
            llm_calls: self.llm_calls.saturating_sub(other.llm_calls),
            tokens: self.tokens.saturating_sub(other.tokens),
            usd: self.usd.minus(other.usd),
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Spend::default()
    }
}

/// The limits of one budget; `None`: that quantity is not limited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<Usd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_calls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_ms: Option<u64>,
}

impl Limits {
    pub fn from_budget(b: &ir::Budget) -> Limits {
        Limits {
            tokens: b.tokens,
            usd: b.usd.map(Usd::from_dollars),
            llm_calls: b.llm_calls,
            wall_ms: b
                .wall
                .map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// These limits with `other`'s set quantities in their place.
    pub fn with(self, other: Limits) -> Limits {
        Limits {
            tokens: other.tokens.or(self.tokens),
            usd: other.usd.or(self.usd),
            llm_calls: other.llm_calls.or(self.llm_calls),
            wall_ms: other.wall_ms.or(self.wall_ms),
        }
    }

    /// `usd $2.50, 40 llm_calls`: the quantities set.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(u) = self.usd {
            parts.push(format!("usd {u}"));
        }
        if let Some(t) = self.tokens {
            parts.push(format!("{t} tokens"));
        }
        if let Some(c) = self.llm_calls {
            parts.push(format!("{c} llm_calls"));
        }
        if let Some(w) = self.wall_ms {
            parts.push(format!(
                "wall {}",
                crate::text::duration(std::time::Duration::from_millis(w))
            ));
        }
        parts.join(", ")
    }
}

/// Where a budget is set: the workflow, a phase, an agent pool or a task.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "level", content = "name", rename_all = "snake_case")]
pub enum BudgetScope {
    Workflow,
    Phase(String),
    Agent(String),
    Task(String),
}

impl BudgetScope {
    /// `workflow`, `phase.NAME`, `agent.NAME`, `task.NAME`: how `--budget` names it.
    pub fn key(&self) -> String {
        match self {
            BudgetScope::Workflow => "workflow".into(),
            BudgetScope::Phase(n) => format!("phase.{n}"),
            BudgetScope::Agent(n) => format!("agent.{n}"),
            BudgetScope::Task(n) => format!("task.{n}"),
        }
    }
}

impl std::fmt::Display for BudgetScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetScope::Workflow => write!(f, "the workflow's budget"),
            BudgetScope::Phase(n) => write!(f, "the budget of phase `{n}`"),
            BudgetScope::Agent(n) => write!(f, "the budget of agent `{n}`"),
            BudgetScope::Task(n) => write!(f, "the budget of task `{n}`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_print_with_two_to_eight_decimals() {
        assert_eq!(Usd::from_dollars(2.5).to_string(), "$2.50");
        assert_eq!(Usd::from_dollars(0.00045).to_string(), "$0.00045");
        assert_eq!(Usd::ZERO.to_string(), "$0.00");
        assert_eq!(Usd::from_dollars(1234.0).to_string(), "$1234.00");
        assert_eq!(Usd(1).to_string(), "$0.00", "below 10⁻⁸ $ rounds away");
        assert_eq!(Usd(999_999_999_999).to_string(), "$1.00");
    }

    #[test]
    fn costs_are_exact_and_round_trip_through_the_log() {
        let rates = Rates::from(Price {
            input: 0.15,
            output: 0.6,
            cached_input: 0.075,
        });
        assert_eq!(rates.input, 150_000);
        // 1000 input tokens of which 400 cached, 300 output tokens.
        let cost = rates.cost(1000, 400, 300);
        assert_eq!(cost, Usd(600 * 150_000 + 400 * 75_000 + 300 * 600_000));
        let json = serde_json::to_string(&cost).unwrap();
        assert_eq!(json, "0.0003");
        let back: Usd = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cost);
        let many: Usd = (0..10_000).fold(Usd::ZERO, |a, _| a.plus(Usd::from_dollars(0.1)));
        assert_eq!(many, Usd::from_dollars(1000.0), "no drift in sums");
    }

    #[test]
    fn scopes_and_limits_as_the_log_writes_them() {
        let s = serde_json::to_value(BudgetScope::Task("review".into())).unwrap();
        assert_eq!(s, serde_json::json!({ "level": "task", "name": "review" }));
        let w = serde_json::to_value(BudgetScope::Workflow).unwrap();
        assert_eq!(w, serde_json::json!({ "level": "workflow" }));
        let l = Limits {
            usd: Some(Usd::from_dollars(2.5)),
            llm_calls: Some(40),
            ..Limits::default()
        };
        assert_eq!(
            serde_json::to_value(l).unwrap(),
            serde_json::json!({ "usd": 2.5, "llm_calls": 40 })
        );
        let raised = l.with(Limits {
            usd: Some(Usd::from_dollars(5.0)),
            ..Limits::default()
        });
        assert_eq!(raised.describe(), "usd $5.00, 40 llm_calls");
    }
}
