//! Fan-out: a task that runs once per item — a static `matrix` (expanded here, by GitHub
//! Actions' rules) or a `for_each` over a list an upstream task produces (expanded when the
//! task's turn comes). Its settings are read before the task's others, so its templates know
//! what `item` holds.

use serde_json::{Map, Value};

use super::ir::{FanOut, FanOutSource, SucceedWhen, Template};
use super::Checker;
use crate::diag::{Annotate, Diagnostic};
use crate::source::Span;
use crate::syntax::ast::{self, ValueKind};

/// The settings that make and shape a fan-out.
pub(super) const SETTINGS: &[&str] = &[
    "matrix",
    "exclude",
    "include",
    "for_each",
    "key",
    "max_items",
    "max_parallel",
    "fail_fast",
    "succeed_when",
];

/// The default and the ceiling of `max_items`.
const MAX_ITEMS: u32 = 256;
const MAX_ITEMS_LIMIT: i64 = 100_000;

/// What `item` holds in the templates being checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) enum ItemShape {
    /// Not a fan-out: `item` is an error.
    #[default]
    Absent,
    /// Anything (a `for_each` list, or an agent's templates, shared by many tasks).
    Any,
    /// A matrix's combinations: `item.x` must be one of these keys.
    Keys(Vec<String>),
}

/// A matrix being expanded: each combination, and whether it came from `include` alone.
struct Combination {
    values: Map<String, Value>,
    added: bool,
}

impl Checker<'_> {
    /// Reads a task's fan-out settings and sets what its templates see as `item`.
    pub(super) fn fan_out(&mut self, t: &ast::Task) -> Option<FanOut> {
        let settings: Vec<&ast::Setting> = t
            .body
            .iter()
            .flatten()
            .filter_map(|i| match i {
                ast::TaskItem::Setting(s) if SETTINGS.contains(&s.name.name.as_str()) => Some(s),
                _ => None,
            })
            .collect();
        self.item = ItemShape::Absent;
        if settings.is_empty() {
            return None;
        }
        let find = |name: &str| settings.iter().find(|s| s.name.name == name).copied();
        let (matrix, for_each) = (find("matrix"), find("for_each"));
        let mut axes: Vec<String> = Vec::new();
        let source = match (matrix, for_each) {
            (Some(m), Some(f)) => {
                self.error(
                    f.name.span,
                    "a task fans out with `matrix` or `for_each`, not both",
                )
                .with_label("second source of items")
                .related
                .push((m.name.span, "`matrix` here".into()));
                return None;
            }
            (Some(m), None) => {
                let (combos, declared) = self.matrix(m, find("exclude"), find("include"))?;
                axes = declared;
                let mut keys = axes.clone();
                for c in &combos {
                    for k in c.as_object().into_iter().flat_map(|o| o.keys()) {
                        if !keys.contains(k) {
                            keys.push(k.clone());
                        }
                    }
                }
                self.item = ItemShape::Keys(keys);
                FanOutSource::Matrix(combos)
            }
            (None, Some(f)) => {
                let source = self.for_each(f)?;
                self.item = ItemShape::Any;
                source
            }
            (None, None) => {
                let s = settings[0];
                self.error(
                    s.name.span,
                    format!("`{}` needs `matrix` or `for_each`", s.name.name),
                )
                .with_label("this task does not fan out")
                .help = Some(
                    "add `matrix = { os = [\"linux\", \"mac\"] }` or `for_each = \"{{ tasks.x.output.items }}\"`"
                        .into(),
                );
                return None;
            }
        };
        for s in [find("exclude"), find("include")].into_iter().flatten() {
            if for_each.is_some() {
                self.error(
                    s.name.span,
                    format!("`{}` applies to a `matrix`", s.name.name),
                )
                .with_label("not with `for_each`");
            }
        }
        let mut fan = FanOut {
            source,
            axes,
            key: None,
            max_items: MAX_ITEMS,
            max_parallel: None,
            fail_fast: false,
            succeed_when: SucceedWhen::All,
            span: matrix.or(for_each).map_or(t.span, |s| s.span),
        };
        self.fan_out_options(&settings, &mut fan);
        if let FanOutSource::Matrix(combos) = &fan.source {
            if fan.key.is_none() {
                self.unique_default_keys(combos, &fan.axes, fan.span);
            }
            if combos.len() > fan.max_items as usize {
                self.error(
                    fan.span,
                    format!(
                        "the matrix has {} combinations, more than `max_items` ({})",
                        combos.len(),
                        fan.max_items
                    ),
                )
                .with_label("too many combinations")
                .help = Some("raise `max_items`, or `exclude` combinations".into());
            }
        }
        Some(fan)
    }

    fn fan_out_options(&mut self, settings: &[&ast::Setting], fan: &mut FanOut) {
        for s in settings {
            let v = &s.value;
            let name = s.name.name.as_str();
            match name {
                "key" => {
                    if let Some(lit) = self.reader().string(name, v).cloned() {
                        fan.key = self.template(&lit, "key");
                    }
                }
                "max_items" => {
                    if let Some(n) = self.reader().int(name, v, 0, MAX_ITEMS_LIMIT) {
                        fan.max_items = n as u32;
                    }
                }
                "max_parallel" => {
                    fan.max_parallel = self.reader().int(name, v, 1, 100_000).map(|n| n as u32);
                }
                "fail_fast" => fan.fail_fast = self.reader().boolean(name, v).unwrap_or(false),
                "succeed_when" => {
                    if let Some(w) = self.succeed_when(v) {
                        fan.succeed_when = w;
                    }
                }
                _ => {}
            }
        }
    }

    /// `succeed_when = "all" | "any" | 0.0–1.0`.
    fn succeed_when(&mut self, v: &ast::Value) -> Option<SucceedWhen> {
        match &v.kind {
            ValueKind::Str(s) if s.value == "all" => Some(SucceedWhen::All),
            ValueKind::Str(s) if s.value == "any" => Some(SucceedWhen::Any),
            ValueKind::Number(_) => self
                .reader()
                .float("succeed_when", v, 0.0, 1.0)
                .map(SucceedWhen::Rate),
            _ => {
                self.error(
                    v.span,
                    "`succeed_when` is \"all\", \"any\" or a rate from 0.0 to 1.0",
                )
                .with_label("expected \"all\", \"any\" or a number");
                None
            }
        }
    }

    /// `for_each = "{{ … }}"`: a template yielding a JSON array, or a literal JSON array.
    fn for_each(&mut self, s: &ast::Setting) -> Option<FanOutSource> {
        let lit = self.reader().string("for_each", &s.value)?.clone();
        let mut template: Template = self.template(&lit, "for_each")?;
        if template.dynamic {
            // One expression: its value as JSON, whatever it holds (strings with quotes…).
            if let Some(expr) = crate::template::whole_expression(&template.source) {
                if let Ok((id, _)) = self.templates.add(&format!("{{{{ {expr} | tojson }}}}")) {
                    template.id = Some(id);
                }
            }
            return Some(FanOutSource::ForEach(template));
        }
        match serde_json::from_str::<Value>(&template.text) {
            Ok(Value::Array(items)) => Some(FanOutSource::Matrix(items)),
            _ => {
                self.error(
                    s.value.span,
                    "`for_each` is a template yielding a list, or a JSON list",
                )
                .with_label("neither a template nor a JSON list")
                .help = Some(
                    "write `for_each = \"{{ tasks.split.output.files }}\"`, or use `matrix`".into(),
                );
                None
            }
        }
    }

    /// A matrix's combinations: the cross product in declaration order, then `exclude` by
    /// partial match, then `include` (extending every combination it does not contradict, or
    /// added as its own).
    fn matrix(
        &mut self,
        m: &ast::Setting,
        exclude: Option<&ast::Setting>,
        include: Option<&ast::Setting>,
    ) -> Option<(Vec<Value>, Vec<String>)> {
        let ValueKind::Map(entries) = &m.value.kind else {
            self.error(m.value.span, "`matrix` is a map of lists")
                .with_label("expected `{ name = [values…] }`");
            return None;
        };
        let mut axes: Vec<(String, Vec<Value>)> = Vec::new();
        let (mut excludes, mut includes) = (Vec::new(), Vec::new());
        for e in entries {
            let name = e.key.name().to_string();
            match name.as_str() {
                "exclude" => excludes.extend(self.entries(&e.value, "exclude")?),
                "include" => includes.extend(self.entries(&e.value, "include")?),
                _ => axes.push((name.clone(), self.axis(&name, &e.value)?)),
            }
        }
        if let Some(s) = exclude {
            excludes.extend(self.entries(&s.value, "exclude")?);
        }
        if let Some(s) = include {
            includes.extend(self.entries(&s.value, "include")?);
        }
        let mut combos = vec![Combination {
            values: Map::new(),
            added: false,
        }];
        if axes.is_empty() {
            combos.clear();
        }
        for (name, values) in &axes {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut values = c.values.clone();
                        values.insert(name.clone(), v.clone());
                        Combination {
                            values,
                            added: false,
                        }
                    })
                })
                .collect();
        }
        for (span, e) in &excludes {
            let before = combos.len();
            combos.retain(|c| !e.iter().all(|(k, v)| c.values.get(k) == Some(v)));
            if combos.len() == before {
                self.error(*span, "this `exclude` matches no combination of the matrix")
                    .with_label("matches nothing")
                    .help = Some(format!(
                    "an exclude removes the combinations whose values it all shares; the matrix's values are {}",
                    describe_axes(&axes)
                ));
            }
        }
        let original: Vec<&str> = axes.iter().map(|(k, _)| k.as_str()).collect();
        for (span, inc) in &includes {
            let mut matched = false;
            for c in combos.iter_mut().filter(|c| !c.added) {
                let fits = inc
                    .iter()
                    .all(|(k, v)| !original.contains(&k.as_str()) || c.values.get(k) == Some(v));
                if fits {
                    matched = true;
                    for (k, v) in inc {
                        c.values.insert(k.clone(), v.clone());
                    }
                }
            }
            // A new combination that names every axis is a deliberate extra case; one that
            // leaves an axis out was most likely meant to extend combinations and missed.
            let missing: Vec<&str> = original
                .iter()
                .copied()
                .filter(|k| !inc.contains_key(*k))
                .collect();
            if !matched && !missing.is_empty() {
                self.diags.push(
                    Diagnostic::warning(*span, "this `include` matches no combination: it adds one")
                        .with_label("a combination of its own")
                        .with_help(format!(
                            "it has no value for {}; to extend combinations, its values must be among the matrix's: {}",
                            missing.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
                            describe_axes(&axes)
                        )),
                );
            }
            if !matched {
                combos.push(Combination {
                    values: inc.clone(),
                    added: true,
                });
            }
        }
        if combos.is_empty() {
            self.diags.push(
                Diagnostic::warning(m.value.span, "the matrix has no combination left")
                    .with_label("the task will be skipped"),
            );
        }
        let names = axes.into_iter().map(|(k, _)| k).collect();
        Some((
            combos
                .into_iter()
                .map(|c| Value::Object(c.values))
                .collect(),
            names,
        ))
    }

    /// One axis of a matrix: a non-empty list of literal values.
    fn axis(&mut self, name: &str, v: &ast::Value) -> Option<Vec<Value>> {
        let value = self.reader().literal(v)?.to_json();
        match value {
            Value::Array(items) if !items.is_empty() => Some(items),
            Value::Array(_) => {
                self.error(v.span, format!("matrix key `{name}` has no values"))
                    .with_label("empty list");
                None
            }
            _ => {
                self.error(
                    v.span,
                    format!("matrix key `{name}` needs a list of values"),
                )
                .with_label(format!("write `{name} = [ … ]`"));
                None
            }
        }
    }

    /// `exclude`/`include`: a list of maps, each with its span.
    fn entries(&mut self, v: &ast::Value, what: &str) -> Option<Vec<(Span, Map<String, Value>)>> {
        let ValueKind::List(items) = &v.kind else {
            self.error(v.span, format!("`{what}` is a list of maps"))
                .with_label("expected `[{ name = value }, …]`");
            return None;
        };
        let mut out = Vec::new();
        for item in items {
            match self.reader().literal(item)?.to_json() {
                Value::Object(map) if !map.is_empty() => out.push((item.span, map)),
                _ => {
                    self.error(item.span, format!("each `{what}` entry is a non-empty map"))
                        .with_label("expected `{ name = value }`");
                    return None;
                }
            }
        }
        Some(out)
    }

    /// Without `key`, instances are named by their values: two equal names are an error.
    fn unique_default_keys(&mut self, combos: &[Value], axes: &[String], span: Span) {
        let mut seen = std::collections::HashSet::new();
        for c in combos {
            let key = default_key(c, 0, axes);
            if !seen.insert(key.clone()) {
                self.error(span, format!("two combinations are both named `{key}`"))
                    .with_label("instances need distinct names")
                    .help =
                    Some("set `key = \"{{ item.os }}-{{ item.version }}\"` to name them".into());
                return;
            }
        }
    }
}

fn describe_axes(axes: &[(String, Vec<Value>)]) -> String {
    axes.iter()
        .map(|(k, vs)| {
            let vs: Vec<String> = vs.iter().map(value_text).collect();
            format!("{k} = [{}]", vs.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A value as part of an instance's name: a string as itself, anything else as JSON.
pub(crate) fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An instance's name without `key`: a map's values joined by `-` (in the order of `axes`,
/// then the rest), a string or number as itself, anything else its index.
pub(crate) fn default_key(item: &Value, index: usize, axes: &[String]) -> String {
    let text = match item {
        // The matrix's own keys name it; a combination `include` added without them, all
        // its values.
        Value::Object(map) if !axes.is_empty() && axes.iter().all(|a| map.contains_key(a)) => axes
            .iter()
            .filter_map(|a| map.get(a))
            .map(value_text)
            .collect::<Vec<_>>()
            .join("-"),
        Value::Object(map) => map.values().map(value_text).collect::<Vec<_>>().join("-"),
        Value::String(_) | Value::Number(_) | Value::Bool(_) => value_text(item),
        _ => index.to_string(),
    };
    clean_key(&text)
}

/// Names stay readable and unambiguous: no brackets, no control characters.
pub(crate) fn clean_key(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| match c {
            '[' | ']' => '_',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    let cleaned = cleaned.trim();
    match cleaned.chars().count() {
        0 => "_".to_string(),
        n if n > 80 => cleaned.chars().take(80).collect(),
        _ => cleaned.to_string(),
    }
}

/// The name of an instance: `task[key]`.
pub(crate) fn instance_name(task: &str, key: &str) -> String {
    format!("{task}[{key}]")
}
