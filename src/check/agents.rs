//! Agent pools: the common settings, and the settings of each kind.

use std::time::Duration;

use indexmap::IndexMap;

use super::ir::*;
use super::{AgentDefaults, Checker, SeenSettings};
use crate::diag::{self, Annotate, Diagnostic};
use crate::syntax::ast::{self, ValueKind};

const KINDS: &[&str] = &["llm", "shell", "http", "script", "approval", "mock"];
const COMMON: &[&str] = &[
    "kind",
    "count",
    "retry",
    "backoff",
    "timeout",
    "circuit_breaker",
    "budget",
    "on_budget",
    "placement",
    "labels",
];

fn kind_settings(kind: &str) -> &'static [&'static str] {
    match kind {
        "llm" => &[
            "provider",
            "model",
            "role",
            "system",
            "temperature",
            "max_tokens",
        ],
        "shell" => &["command", "workdir", "env", "retry_on_exit"],
        "http" => &["url", "method", "headers", "body", "fail_on_status"],
        "script" => &["function"],
        "mock" => &[
            "latency",
            "fail_first",
            "fail_rate",
            "seed",
            "error",
            "output",
            "log",
        ],
        _ => &[],
    }
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

impl Checker<'_> {
    pub(super) fn agent(&mut self, a: &ast::Agent) -> Option<Agent> {
        let &(id, span) = self.names.agents.get(&a.name.name)?;
        if span != a.name.span {
            return None; // a duplicate, already reported
        }
        let mut seen = SeenSettings::default();
        let settings: Vec<&ast::Setting> = a
            .settings
            .iter()
            .filter(|s| self.first_setting(&mut seen, s))
            .collect();
        let kind = self.agent_kind(a, &settings);
        let mut pool = Agent {
            id,
            name: a.name.name.clone(),
            kind: AgentKind::Mock(empty_mock()),
            count: 1,
            retry: None,
            backoff: None,
            timeout: None,
            breaker: Breaker::default(),
            placement: Placement::Local,
            span: a.span,
        };
        let mut specific: Vec<&ast::Setting> = Vec::new();
        let mut placement: Vec<&ast::Setting> = Vec::new();
        for s in &settings {
            let name = s.name.name.as_str();
            let v = &s.value;
            match name {
                "kind" => {}
                "count" => pool.count = self.reader().int(name, v, 1, 10_000).unwrap_or(1) as u32,
                "retry" => pool.retry = self.reader().int(name, v, 0, 100).map(|n| n as u32),
                "backoff" => pool.backoff = self.reader().backoff(v),
                "timeout" => pool.timeout = self.reader().duration(name, v, true),
                "circuit_breaker" => {
                    pool.breaker = self.reader().breaker(v).unwrap_or_default();
                }
                "budget" | "on_budget" => {
                    self.budget_setting(Owner::Agent(id), s);
                }
                "placement" | "labels" => placement.push(s),
                _ if kind.is_some_and(|k| kind_settings(k).contains(&name)) => specific.push(s),
                _ => self.foreign_setting(s, kind),
            }
        }
        pool.placement = self.placement(&placement);
        if kind == Some("approval") && matches!(pool.placement, Placement::Workers { .. }) {
            self.approval_on_workers(&placement);
            pool.placement = Placement::Local;
        }
        let kind = kind?;
        // An agent serves many tasks: its templates may read `item` of a fan-out instance.
        self.item = super::fanout::ItemShape::Any;
        pool.kind = match kind {
            "llm" => AgentKind::Llm(self.llm(&specific)),
            "shell" => AgentKind::Shell(self.shell(a, &specific)?),
            "http" => AgentKind::Http(self.http(a, &specific)?),
            "script" => AgentKind::Script(self.script(a, &specific)?),
            "approval" => AgentKind::Approval,
            _ => AgentKind::Mock(self.mock(&specific)),
        };
        self.item = super::fanout::ItemShape::Absent;
        if self.agent_defaults.len() <= id.index() {
            self.agent_defaults.resize(id.index() + 1, None);
        }
        self.agent_defaults[id.index()] = Some(AgentDefaults {
            kind,
            retry: pool.retry,
            retry_on_exit: match &pool.kind {
                AgentKind::Shell(s) => Some(s.retry_on_exit.clone()),
                _ => None,
            },
            backoff: pool.backoff,
            timeout: pool.timeout,
        });
        Some(pool)
    }

    /// The agent's `kind`, or `None` after reporting it missing or wrong.
    fn agent_kind(&mut self, a: &ast::Agent, settings: &[&ast::Setting]) -> Option<&'static str> {
        let Some(s) = settings.iter().find(|s| s.name.name == "kind") else {
            self.error(
                a.name.span,
                format!("agent `{}` has no `kind`", a.name.name),
            )
            .with_label("missing `kind`")
            .help = Some(format!(
                "add `kind = \"mock\"`; the kinds are {}",
                quoted(KINDS)
            ));
            return None;
        };
        match &s.value.kind {
            ValueKind::Str(k) => match KINDS.iter().find(|n| **n == k.value) {
                Some(k) => Some(*k),
                None => {
                    let d = Diagnostic::error(
                        s.value.span,
                        format!("unknown agent kind `{}`", k.value),
                    )
                    .with_label(format!("expected one of {}", quoted(KINDS)))
                    .with_suggestion(&k.value, KINDS.iter().copied());
                    self.diags.push(d);
                    None
                }
            },
            _ => {
                let choices: Vec<(&str, ())> = KINDS.iter().map(|k| (*k, ())).collect();
                self.reader().choice("kind", &s.value, &choices);
                None
            }
        }
    }

    /// Reports a setting that is neither common nor of the agent's kind.
    fn foreign_setting(&mut self, s: &ast::Setting, kind: Option<&str>) {
        let name = s.name.name.as_str();
        let Some(k) = kind else {
            // The kind is missing or wrong (already reported): only flag names no kind knows,
            // so one mistake gives one error.
            let known = KINDS.iter().any(|k| kind_settings(k).contains(&name));
            if !known {
                let mut all: Vec<&str> = COMMON.to_vec();
                for k in KINDS {
                    all.extend(kind_settings(k));
                }
                let d = Diagnostic::error(
                    s.name.span,
                    format!("unknown setting `{name}` for an agent"),
                )
                .with_label("unknown setting")
                .with_suggestion(name, all.iter().copied());
                self.diags.push(d);
            }
            return;
        };
        let owner = KINDS
            .iter()
            .find(|other| kind_settings(other).contains(&name));
        let mut valid: Vec<&str> = COMMON.to_vec();
        valid.extend(kind_settings(k));
        let d = match owner {
            Some(owner) => Diagnostic::error(
                s.name.span,
                format!("`{name}` is not a setting of `{k}` agents"),
            )
            .with_label(format!("only `{owner}` agents have it"))
            .with_help(format!("`{k}` agents take {}", backticks(&valid))),
            None => Diagnostic::error(
                s.name.span,
                format!("unknown setting `{name}` for a `{k}` agent"),
            )
            .with_label("unknown setting")
            .with_suggestion(name, valid.iter().copied()),
        };
        self.diags.push(d);
    }

    fn llm(&mut self, settings: &[&ast::Setting]) -> LlmAgent {
        let mut llm = LlmAgent {
            provider: "default".into(),
            model: None,
            role: None,
            system: None,
            temperature: None,
            max_tokens: None,
        };
        for s in settings {
            let name = s.name.name.as_str();
            let v = &s.value;
            match name {
                "provider" => {
                    if let Some(p) = self.reader().string(name, v) {
                        llm.provider = p.value.clone();
                    }
                }
                "model" => llm.model = self.reader().string(name, v).map(|m| m.value.clone()),
                "role" => llm.role = self.reader().choice(name, v, &Role::ALL),
                "system" => {
                    if let Some(lit) = self.reader().string(name, v) {
                        llm.system = self.template(lit, "system");
                    }
                }
                "temperature" => llm.temperature = self.reader().float(name, v, 0.0, 2.0),
                "max_tokens" => {
                    llm.max_tokens = self
                        .reader()
                        .int(name, v, 1, u32::MAX as i64)
                        .map(|n| n as u32)
                }
                _ => {}
            }
        }
        llm
    }

    fn shell(&mut self, a: &ast::Agent, settings: &[&ast::Setting]) -> Option<ShellAgent> {
        let mut command = None;
        let mut workdir = None;
        let mut env = IndexMap::new();
        let mut retry_on_exit = Vec::new();
        for s in settings {
            let v = &s.value;
            match s.name.name.as_str() {
                "command" => command = self.command(v),
                "retry_on_exit" => retry_on_exit = self.exit_codes(v),
                "workdir" => {
                    if let Some(lit) = self.reader().string("workdir", v) {
                        workdir = self.template(lit, "workdir");
                    }
                }
                "env" => env = self.string_map("env", v),
                _ => {}
            }
        }
        if command.is_none() && !settings.iter().any(|s| s.name.name == "command") {
            self.missing(a, "shell", "command", "command = [\"cargo\", \"test\"]");
        }
        Some(ShellAgent {
            command: command?,
            workdir,
            env,
            retry_on_exit,
        })
    }

    /// `retry_on_exit = [75, 137]`: the exit codes a failed command is retried for.
    pub(super) fn exit_codes(&mut self, v: &ast::Value) -> Vec<i32> {
        self.reader()
            .ints("retry_on_exit", v, 1, 255)
            .map_or_else(Vec::new, |l| l.into_iter().map(|n| n as i32).collect())
    }

    fn http(&mut self, a: &ast::Agent, settings: &[&ast::Setting]) -> Option<HttpAgent> {
        let mut url = None;
        let mut method = "GET".to_string();
        let mut headers = IndexMap::new();
        let mut body = None;
        let mut fail_on_status = Vec::new();
        for s in settings {
            let v = &s.value;
            match s.name.name.as_str() {
                "fail_on_status" => {
                    fail_on_status = (self.reader().ints("fail_on_status", v, 100, 599))
                        .map_or_else(Vec::new, |l| l.into_iter().map(|n| n as u16).collect());
                }
                "url" => {
                    if let Some(lit) = self.reader().string("url", v) {
                        url = self.template(lit, "url");
                    }
                }
                "method" => {
                    if let Some(lit) = self.reader().string("method", v) {
                        let upper = lit.value.to_ascii_uppercase();
                        if METHODS.contains(&upper.as_str()) {
                            method = upper;
                        } else {
                            let d = Diagnostic::error(
                                v.span,
                                format!("unknown HTTP method `{}`", lit.value),
                            )
                            .with_label(format!("expected one of {}", quoted(METHODS)))
                            .with_suggestion(&upper, METHODS.iter().copied());
                            self.diags.push(d);
                        }
                    }
                }
                "headers" => headers = self.string_map("headers", v),
                "body" => {
                    if let Some(lit) = self.reader().string("body", v) {
                        body = self.template(lit, "body");
                    }
                }
                _ => {}
            }
        }
        if !settings.iter().any(|s| s.name.name == "url") {
            self.missing(a, "http", "url", "url = \"http://127.0.0.1:8080/health\"");
        }
        Some(HttpAgent {
            url: url?,
            method,
            headers,
            body,
            fail_on_status,
        })
    }

    fn script(&mut self, a: &ast::Agent, settings: &[&ast::Setting]) -> Option<ScriptAgent> {
        let Some(s) = settings.iter().find(|s| s.name.name == "function") else {
            self.missing(a, "script", "function", "function = \"score\"");
            return None;
        };
        let name = self.reader().string("function", &s.value)?.value.clone();
        let takes_ctx = self
            .modules
            .functions
            .iter()
            .any(|f| f.name == name && f.params.len() == 1);
        if !takes_ctx {
            let names: Vec<String> = self
                .modules
                .functions
                .iter()
                .filter(|f| f.params.len() == 1)
                .map(|f| f.name.clone())
                .collect();
            let defined = self.modules.defines(&name);
            let message = if defined {
                format!("script function `{name}` must take exactly one parameter (`ctx`)")
            } else {
                format!("unknown script function `{name}`")
            };
            let mut d = Diagnostic::error(s.value.span, message).with_label(if defined {
                "wrong number of parameters"
            } else {
                "not defined by any `use`d module"
            });
            d = match diag::suggest(&name, names.iter().map(String::as_str)) {
                Some(near) if !defined => d.with_help(format!("did you mean `{near}`?")),
                _ if self.modules.functions.is_empty() => d.with_help(
                    "script agents call `fn NAME(ctx)` of a module the workflow `use`s; this workflow `use`s none",
                ),
                _ => d.with_help(format!("define `fn {name}(ctx) {{ … }}` in a `use`d module")),
            };
            self.diags.push(d);
            return None;
        }
        Some(ScriptAgent { function: name })
    }

    fn mock(&mut self, settings: &[&ast::Setting]) -> MockAgent {
        let mut mock = empty_mock();
        for s in settings {
            let name = s.name.name.as_str();
            let v = &s.value;
            let mut r = self.reader();
            match name {
                "latency" => mock.latency = r.duration(name, v, false).unwrap_or_default(),
                "fail_first" => {
                    mock.fail_first = r.int(name, v, 0, u32::MAX as i64).unwrap_or(0) as u32
                }
                "fail_rate" => mock.fail_rate = r.float(name, v, 0.0, 1.0).unwrap_or(0.0),
                "seed" => mock.seed = r.int(name, v, 0, i64::MAX).unwrap_or(0) as u64,
                "error" => {
                    mock.error = r
                        .choice(
                            name,
                            v,
                            &[
                                ("retryable", ErrorClass::Retryable),
                                ("fatal", ErrorClass::Fatal),
                            ],
                        )
                        .unwrap_or(ErrorClass::Retryable)
                }
                "log" => mock.log = r.string(name, v).map(|l| l.value.clone().into()),
                "output" => match &v.kind {
                    ValueKind::Map(entries) => {
                        if let Some(m) = r.template_map(entries) {
                            mock.output = Value::Map(m);
                        }
                        // Strings of a mock's output are templates, rendered per attempt.
                        mock.output_tree = self.tree(v, "output");
                    }
                    _ => {
                        let found = super::values::describe(v);
                        self.error(v.span, format!("`output` expects a map, found {found}"))
                            .with_label("expected a map");
                    }
                },
                _ => {}
            }
        }
        mock
    }

    /// A map of string templates (`env`, `headers`).
    fn string_map(&mut self, what: &str, v: &ast::Value) -> IndexMap<String, Template> {
        let mut out = IndexMap::new();
        let ValueKind::Map(entries) = &v.kind else {
            let found = super::values::describe(v);
            self.error(
                v.span,
                format!("`{what}` expects a map of strings, found {found}"),
            )
            .with_label("expected a map");
            return out;
        };
        for e in entries {
            let key = e.key.name().to_string();
            if out.contains_key(&key) {
                self.error(e.key.span(), format!("duplicate key `{key}`"))
                    .with_label("repeated here");
                continue;
            }
            // `A=B` would set `A` to `B=…`; an empty name or a NUL cannot be set at all.
            if what == "env" && (key.is_empty() || key.contains(['=', '\0'])) {
                self.error(
                    e.key.span(),
                    format!("`{key}` is not an environment variable name"),
                )
                .with_label("not empty, without `=` or NUL");
                continue;
            }
            if let Some(lit) = self.reader().string(&key, &e.value) {
                if let Some(t) = self.template(lit, what) {
                    out.insert(key, t);
                }
            }
        }
        out
    }

    fn missing(&mut self, a: &ast::Agent, kind: &str, setting: &str, example: &str) {
        self.error(
            a.name.span,
            format!("{kind} agent `{}` has no `{setting}`", a.name.name),
        )
        .with_label(format!("missing `{setting}`"))
        .help = Some(format!("add e.g. `{example}`"));
    }
}

/// A mock agent with every setting at its default.
fn empty_mock() -> MockAgent {
    MockAgent {
        latency: Duration::ZERO,
        fail_first: 0,
        fail_rate: 0.0,
        seed: 0,
        error: ErrorClass::Retryable,
        log: None,
        output: Value::Map(IndexMap::new()),
        output_tree: crate::template::Tree::Plain(serde_json::json!({})),
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`\"{n}\"`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn backticks(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
