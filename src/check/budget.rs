//! `budget = { tokens = N, usd = X, llm_calls = N, wall = 30m }` and `on_budget` at workflow,
//! phase, agent and task level, and the warnings for budgets that can limit nothing.

use std::collections::HashSet;

use super::ir::*;
use super::Checker;
use crate::diag::{Annotate, Diagnostic};
use crate::syntax::ast::{self, ValueKind};

const QUANTITIES: &[&str] = &["tokens", "usd", "llm_calls", "wall"];

/// The largest dollar amount a budget may name: a typo of a few orders of magnitude is an
/// error, not a budget nobody meant.
const MAX_USD: f64 = 1_000_000.0;

impl Checker<'_> {
    /// Reads `budget` or `on_budget` of `owner`; false for any other setting.
    pub(super) fn budget_setting(&mut self, owner: Owner, s: &ast::Setting) -> bool {
        match s.name.name.as_str() {
            "budget" => {
                let budget = self.budget(&s.value);
                self.scoped(owner).budget = budget;
                true
            }
            "on_budget" => {
                let on = self.reader().choice("on_budget", &s.value, &OnBudget::ALL);
                self.scoped(owner).on_budget = on;
                true
            }
            _ => false,
        }
    }

    fn scoped(&mut self, owner: Owner) -> &mut Scoped {
        let b = &mut self.budgets;
        match owner {
            Owner::Workflow => &mut b.workflow,
            Owner::Phase(p) => b.phases.entry(p).or_default(),
            Owner::Agent(a) => b.agents.entry(a).or_default(),
            Owner::Task(t) => b.tasks.entry(t).or_default(),
        }
    }

    fn budget(&mut self, v: &ast::Value) -> Option<Budget> {
        let ValueKind::Map(entries) = &v.kind else {
            let found = super::values::describe(v);
            self.error(v.span, format!("`budget` expects a map, found {found}"))
                .with_label("expected a map")
                .help = Some("write e.g. `budget = { usd = 2.50, llm_calls = 40 }`".into());
            return None;
        };
        let mut budget = Budget {
            tokens: None,
            usd: None,
            llm_calls: None,
            wall: None,
            span: v.span,
        };
        let mut seen = HashSet::new();
        for e in entries {
            let key = e.key.name();
            if !seen.insert(key.to_string()) {
                self.error(e.key.span(), format!("`{key}` is set twice in this budget"))
                    .with_label("set again here");
                continue;
            }
            let what = format!("budget.{key}");
            let mut r = self.reader();
            match key {
                "tokens" => budget.tokens = r.int(&what, &e.value, 0, i64::MAX).map(|n| n as u64),
                "llm_calls" => {
                    budget.llm_calls = r.int(&what, &e.value, 0, i64::MAX).map(|n| n as u64)
                }
                "usd" => budget.usd = r.float(&what, &e.value, 0.0, MAX_USD),
                "wall" => budget.wall = r.duration(&what, &e.value, true),
                _ => {
                    let d =
                        Diagnostic::error(e.key.span(), format!("unknown budget quantity `{key}`"))
                            .with_label("not a quantity")
                            .with_suggestion(key, QUANTITIES.iter().copied());
                    let d = if d.help.is_none() {
                        d.with_help("a budget limits `tokens`, `usd`, `llm_calls` and `wall`")
                    } else {
                        d
                    };
                    self.diags.push(d);
                }
            }
        }
        if entries.is_empty() {
            self.error(v.span, "this budget limits nothing")
                .with_label("empty")
                .help = Some("name at least one of `tokens`, `usd`, `llm_calls`, `wall`".into());
            return None;
        }
        Some(budget)
    }

    /// Budgets count model calls: one set where no llm agent can run limits nothing.
    pub(super) fn warn_idle_budgets(&mut self, agents: &[Agent], tasks: &[Task]) {
        let llm = |a: AgentId| {
            agents
                .iter()
                .find(|x| x.id == a)
                .is_some_and(|x| matches!(x.kind, AgentKind::Llm(_)))
        };
        let mut idle: Vec<(Budget, String)> = Vec::new();
        for (id, s) in &self.budgets.agents {
            if let (Some(b), false) = (&s.budget, llm(*id)) {
                let name = agents.iter().find(|a| a.id == *id).map(|a| a.name.clone());
                idle.push((b.clone(), format!("agent `{}`", name.unwrap_or_default())));
            }
        }
        for (id, s) in &self.budgets.tasks {
            let task = tasks.iter().find(|t| t.id == *id);
            if let (Some(b), Some(t)) = (&s.budget, task) {
                if !llm(t.agent) {
                    idle.push((b.clone(), format!("task `{}`", t.name)));
                }
            }
        }
        for (id, s) in &self.budgets.phases {
            let any_llm = tasks.iter().any(|t| t.phase == *id && llm(t.agent));
            if let (Some(b), false) = (&s.budget, any_llm) {
                let name = self.names.phases.get_index(id.index()).map(|(n, _)| n);
                idle.push((
                    b.clone(),
                    format!("phase `{}`", name.cloned().unwrap_or_default()),
                ));
            }
        }
        for (b, owner) in idle {
            self.diags.push(
                Diagnostic::warning(
                    b.span,
                    format!("this budget limits nothing: {owner} makes no model calls"),
                )
                .with_label("no llm agent here")
                .with_help("budgets count the calls of llm agents; put it where llm tasks run"),
            );
        }
    }
}
