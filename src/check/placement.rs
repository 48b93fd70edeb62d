//! Where a pool's attempts run: `placement = "local" | "workers"` and, for workers, the
//! `labels` a worker must have to take them (`labels = { gpu = "a100" }`).

use std::collections::BTreeMap;

use super::ir::Placement;
use super::Checker;
use crate::diag::Annotate;
use crate::syntax::ast::{self, ValueKind};

#[derive(Clone, Copy)]
enum Where {
    Local,
    Workers,
}

impl Checker<'_> {
    /// The pool's placement from its `placement` and `labels` settings (either may be absent).
    pub(super) fn placement(&mut self, settings: &[&ast::Setting]) -> Placement {
        let mut place = None;
        let mut labels: Option<(BTreeMap<String, String>, &ast::Setting)> = None;
        for s in settings {
            match s.name.name.as_str() {
                "placement" => {
                    place = self.reader().choice(
                        "placement",
                        &s.value,
                        &[("local", Where::Local), ("workers", Where::Workers)],
                    );
                }
                _ => labels = Some((self.labels(&s.value), s)),
            }
        }
        match (place, labels) {
            (Some(Where::Workers), labels) => Placement::Workers {
                labels: labels.map(|(l, _)| l).unwrap_or_default(),
            },
            (_, Some((_, s))) => {
                self.error(
                    s.name.span,
                    "`labels` choose which workers take a pool's attempts, and this pool runs \
                     them in the scheduler's process",
                )
                .with_label("labels of a local pool")
                .help = Some("add `placement = \"workers\"`, or remove `labels`".into());
                Placement::Local
            }
            _ => Placement::Local,
        }
    }

    /// `{ key = "value", … }`: plain strings a worker's `--label key=value` must match.
    fn labels(&mut self, v: &ast::Value) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let ValueKind::Map(entries) = &v.kind else {
            let found = super::values::describe(v);
            self.error(
                v.span,
                format!("`labels` expects a map of strings, found {found}"),
            )
            .with_label("expected a map like `{ gpu = \"a100\" }`");
            return out;
        };
        for e in entries {
            let key = e.key.name().to_string();
            if out.contains_key(&key) {
                self.error(e.key.span(), format!("duplicate label `{key}`"))
                    .with_label("repeated here");
                continue;
            }
            let Some(lit) = self.reader().string(&key, &e.value) else {
                continue;
            };
            if lit.value.contains("{{") || lit.value.contains("{%") {
                self.error(
                    e.value.span,
                    format!("label `{key}` is a template; labels are plain strings"),
                )
                .with_label("a template");
                continue;
            }
            out.insert(key, lit.value.clone());
        }
        out
    }
}
