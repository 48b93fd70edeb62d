//! Settings: duplicate and unknown settings in any block, and the workflow's own settings,
//! params and `feedback`.

use super::ir::*;
use super::{Checker, SeenSettings};
use crate::diag::{self, Annotate, Diagnostic};
use crate::policy::RuleKind;
use crate::syntax::ast;

const PARAM_SETTINGS: &[&str] = &["default", "secret", "env", "description"];
const WORKFLOW_SETTINGS: &[&str] = &[
    "description",
    "max_feedback_loops",
    "on_max_loops",
    "min_success_rate",
    "agent_wait",
    "timeout",
    "max_parallel",
    "on_escalation",
    "outputs",
    "budget",
    "on_budget",
];
const ON_MAX_LOOPS: &[(&str, OnMaxLoops)] = &[
    ("complete", OnMaxLoops::Complete),
    ("fail", OnMaxLoops::Fail),
];
const ON_ESCALATION: &[(&str, OnEscalation)] = &[
    ("ask", OnEscalation::Ask),
    ("abort", OnEscalation::Abort),
    ("skip", OnEscalation::Skip),
];

impl Checker<'_> {
    /// Reports a setting named twice; returns whether this is its first occurrence.
    pub(super) fn first_setting(&mut self, seen: &mut SeenSettings, s: &ast::Setting) -> bool {
        if let Some(first) = seen.0.get(&s.name.name) {
            let first = *first;
            self.error(s.name.span, format!("duplicate setting `{}`", s.name.name))
                .with_label("set again here")
                .related
                .push((first, "first set here".into()));
            return false;
        }
        seen.0.insert(s.name.name.clone(), s.name.span);
        true
    }

    pub(super) fn unknown_setting(&mut self, s: &ast::Setting, owner: &str, valid: &[&str]) {
        let diag = Diagnostic::error(
            s.name.span,
            format!("unknown setting `{}` for {owner}", s.name.name),
        )
        .with_label("unknown setting");
        let diag = match diag::suggest(&s.name.name, valid.iter().copied()) {
            Some(near) => diag.with_help(format!("did you mean `{near}`?")),
            None => diag.with_help(format!(
                "the settings of {owner} are {}",
                crate::text::backticked(valid)
            )),
        };
        self.diags.push(diag);
    }

    pub(super) fn workflow_setting(
        &mut self,
        s: &ast::Setting,
        settings: &mut WorkflowSettings,
        description: &mut Option<String>,
    ) {
        let name = s.name.name.as_str();
        let v = &s.value;
        let mut r = self.reader();
        match name {
            "description" => *description = r.string(name, v).map(|s| s.value.clone()),
            "max_feedback_loops" => {
                if let Some(n) = r.int(name, v, 0, 1000) {
                    settings.max_feedback_loops = n as u32;
                }
            }
            "on_max_loops" => {
                if let Some(x) = r.choice(name, v, ON_MAX_LOOPS) {
                    settings.on_max_loops = x;
                }
            }
            "min_success_rate" => {
                if let Some(x) = r.float(name, v, 0.0, 1.0) {
                    settings.min_success_rate = x;
                }
            }
            "agent_wait" => {
                if let Some(d) = r.duration(name, v, false) {
                    settings.agent_wait = d;
                }
            }
            "timeout" => {
                if let Some(d) = r.duration(name, v, true) {
                    settings.timeout = d;
                }
            }
            "max_parallel" => {
                if let Some(n) = r.int(name, v, 1, u32::MAX as i64) {
                    settings.max_parallel = Some(n as u32);
                }
            }
            "on_escalation" => {
                settings.on_escalation = r.choice(name, v, ON_ESCALATION);
            }
            "outputs" => settings.outputs = self.outputs_setting(v),
            _ => {
                if !self.budget_setting(Owner::Workflow, s) {
                    self.unknown_setting(s, "a workflow", WORKFLOW_SETTINGS)
                }
            }
        }
    }

    pub(super) fn param(&mut self, p: &ast::Param) -> Option<Param> {
        let mut param = Param {
            name: p.name.name.clone(),
            default: None,
            secret: false,
            env: None,
            span: p.span,
        };
        if let Some(v) = &p.default {
            param.default = Some(self.reader().literal(v)?);
        }
        let mut seen = SeenSettings::default();
        let mut default_span = None;
        for s in p.settings.iter().flatten() {
            if !self.first_setting(&mut seen, s) {
                continue;
            }
            let v = &s.value;
            match s.name.name.as_str() {
                "default" => {
                    param.default = Some(self.reader().literal(v)?);
                    default_span = Some(s.name.span);
                }
                "secret" => param.secret = self.reader().boolean("secret", v).unwrap_or(false),
                "env" => param.env = self.env_name(v),
                "description" => {
                    self.reader().string("description", v);
                }
                _ => self.unknown_setting(s, "a param", PARAM_SETTINGS),
            }
        }
        if let (true, Some(span)) = (param.secret, default_span) {
            self.error(span, format!("secret param `{}` has a default", param.name))
                .with_label("its value would be in the file")
                .help = Some(format!(
                "give it with `--param {}=…`, or name an environment variable: `env = \"NAME\"`",
                param.name
            ));
        }
        Some(param)
    }

    /// `env = "NAME"`: a name a shell could export.
    fn env_name(&mut self, v: &ast::Value) -> Option<String> {
        let name = self.reader().string("env", v)?.value.clone();
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            self.error(
                v.span,
                format!("`{name}` is not an environment variable name"),
            )
            .with_label("letters, digits and `_`, not starting with a digit");
            return None;
        }
        Some(name)
    }

    pub(super) fn feedback(&mut self, f: &ast::Feedback) -> Option<Feedback> {
        let target = match &f.target {
            Some(t) => match self.names.phases.get(&t.name) {
                Some(&(id, _)) => Some(id),
                None => {
                    let phases: Vec<String> = self.names.phases.keys().cloned().collect();
                    let d = Diagnostic::error(t.span, format!("unknown phase `{}`", t.name))
                        .with_label("no phase of this name")
                        .with_suggestion(&t.name, phases.iter().map(String::as_str));
                    self.diags.push(d);
                    None
                }
            },
            None => {
                if self.names.phases.is_empty() {
                    self.error(
                        f.span.sub(0, "feedback".len()),
                        "`feedback` needs a phase to return to, and this workflow has none",
                    )
                    .with_label("no phase");
                    None
                } else {
                    Some(PhaseId(0))
                }
            }
        };
        let rule = self.rule(RuleKind::Feedback, &f.rule);
        Some(Feedback {
            target: target?,
            rule: rule?,
            span: f.span,
        })
    }

    /// The loop goes back to a normal phase: the first one by default; an `always` phase runs
    /// only at the end and cannot be a target.
    pub(super) fn feedback_target(
        &mut self,
        ast: &ast::Feedback,
        f: &mut Feedback,
        phases: &[Phase],
    ) {
        match &ast.target {
            None => match phases.iter().find(|p| !p.always) {
                Some(first) => f.target = first.id,
                None => {
                    self.error(
                        ast.span.sub(0, "feedback".len()),
                        "`feedback` needs a phase to return to, and every phase of this workflow is `always`",
                    )
                    .with_label("no phase to loop to");
                }
            },
            Some(t) => {
                if phases.iter().any(|p| p.id == f.target && p.always) {
                    self.error(
                        t.span,
                        format!(
                            "`feedback` cannot return to `{}`, an `always` phase",
                            t.name
                        ),
                    )
                    .with_label("runs only once, at the end")
                    .help = Some("return to a phase that runs before the end".into());
                }
            }
        }
    }

    /// Reports a second `feedback` block.
    pub(super) fn second_feedback(&mut self, first: &ast::Feedback, f: &ast::Feedback) {
        self.error(
            f.span.sub(0, "feedback".len()),
            "a workflow has at most one `feedback`",
        )
        .with_label("second `feedback`")
        .related
        .push((
            first.span.sub(0, "feedback".len()),
            "first `feedback` here".into(),
        ));
    }
}

impl Checker<'_> {
    /// `outputs = { name = "{{ tasks.x.output.y }}" }`: what a run gives a parent run, each
    /// value rendered when the run ends.
    fn outputs_setting(&mut self, v: &ast::Value) -> Vec<(String, crate::template::Tree)> {
        let ast::ValueKind::Map(entries) = &v.kind else {
            let found = super::values::describe(v);
            self.error(v.span, format!("`outputs` expects a map, found {found}"))
                .with_label("expected a map")
                .help =
                Some("write `outputs = { url = \"{{ tasks.deploy.output.url }}\" }`".into());
            return Vec::new();
        };
        entries
            .iter()
            .map(|e| (e.key.name().to_string(), self.tree(&e.value, "outputs")))
            .collect()
    }
}
