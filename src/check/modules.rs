//! `use`d modules: read, compiled into the checker's module set, and their calls checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ir::Module;
use super::{rules, Checker};
use crate::diag::Annotate;
use crate::policy::{CompiledModule, ModuleSet, PolicyHost};
use crate::source::{FileId, Span};
use crate::syntax::ast;

/// Modules built into the binary; `policies/` keeps the readable copies.
const BUILTIN: &[(&str, &str)] = &[("standard", include_str!("../../policies/standard.rhai"))];

/// A module compiled without errors: its file, its text and its compiled form.
type Compiled = (FileId, String, CompiledModule);

impl Checker<'_> {
    /// Compiles every `use`d module into the checker's module set.
    pub(super) fn modules(&mut self, wf: &ast::Workflow) -> Vec<Module> {
        let mut compiled = Vec::new();
        let mut out = Vec::new();
        let mut defined: HashMap<(String, usize), String> = HashMap::new();
        let mut used: HashMap<PathBuf, Span> = HashMap::new();
        for item in &wf.items {
            let ast::Item::Use(u) = item else { continue };
            let written = u.path.value.clone();
            let builtin = written.strip_prefix("std:");
            let path = match builtin {
                Some(_) => PathBuf::from(&written),
                None => self.dir.join(&written),
            };
            if let Some(first) = used.get(&path) {
                let first = *first;
                self.error(u.path.span, format!("module `{written}` is used twice"))
                    .with_label("used again here")
                    .related
                    .push((first, "first used here".into()));
                continue;
            }
            used.insert(path.clone(), u.path.span);
            let text = match builtin {
                Some(name) => self.builtin_module(u, name),
                None => self.read_module(u, &path),
            };
            let Some(text) = text else {
                continue;
            };
            let module_file = self.map.add(written.clone(), &path, &text);
            match PolicyHost::get().compile_module(&text) {
                Ok(module) => {
                    self.define_functions(u, &module, &mut defined);
                    out.push(Module {
                        written: written.clone(),
                        path: path.clone(),
                        source: std::sync::Arc::from(text.as_str()),
                        functions: {
                            let mut names: Vec<String> =
                                module.functions.iter().map(|f| f.name.clone()).collect();
                            names.dedup();
                            names
                        },
                    });
                    compiled.push((module_file, text, module));
                }
                Err(problem) => {
                    let d = rules::problem_diag(module_file, 0, &text, &problem);
                    self.diags.push(d);
                }
            }
        }
        let modules: Vec<_> = compiled.iter().map(|(_, _, m)| m.clone()).collect();
        self.modules = ModuleSet::new(&modules);
        self.check_module_calls(&compiled);
        out
    }

    /// A module built into the binary (`use "std:standard"`), so workflows need no copy of
    /// `policies/` beside them after `cargo install`.
    fn builtin_module(&mut self, u: &ast::Use, name: &str) -> Option<String> {
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((_, text)) => Some((*text).to_string()),
            None => {
                let names: Vec<String> =
                    BUILTIN.iter().map(|(n, _)| format!("`std:{n}`")).collect();
                self.error(u.path.span, format!("no built-in module `std:{name}`"))
                    .with_label("unknown built-in module")
                    .help = Some(format!("the built-in modules are {}", names.join(", ")));
                None
            }
        }
    }

    /// The text of a `use`d module, or an error on its `use` when it cannot be read.
    fn read_module(&mut self, u: &ast::Use, path: &Path) -> Option<String> {
        let written = &u.path.value;
        match crate::files::read_limited(path, super::MAX_FILE_SIZE as u64) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => Some(t),
                Err(_) => {
                    self.error(u.path.span, format!("module `{written}` is not UTF-8 text"))
                        .with_label("cannot read this module");
                    None
                }
            },
            Err(e) => {
                let cause = if e.kind() == std::io::ErrorKind::NotFound {
                    "no such file".to_string()
                } else {
                    e.to_string()
                };
                self.error(
                    u.path.span,
                    format!("cannot read module `{written}`: {cause}"),
                )
                .with_label("not found")
                .help = Some(format!(
                    "`use` paths are relative to the workflow file; this one resolves to `{}`",
                    path.display()
                ));
                None
            }
        }
    }

    /// Records the functions of one module in `defined` (by name and arity), reporting those
    /// an earlier module already defines.
    fn define_functions(
        &mut self,
        u: &ast::Use,
        module: &CompiledModule,
        defined: &mut HashMap<(String, usize), String>,
    ) {
        let written = &u.path.value;
        for f in &module.functions {
            let key = (f.name.clone(), f.params.len());
            if let Some(other) = defined.get(&key) {
                self.error(
                    u.path.span,
                    format!(
                        "`fn {}` with {} parameters is defined in both `{other}` and `{written}`",
                        f.name,
                        f.params.len()
                    ),
                )
                .with_label("second definition comes from here");
            } else {
                defined.insert(key, written.clone());
            }
        }
    }

    /// Calls inside modules are checked against every module, since rules see them all.
    fn check_module_calls(&mut self, compiled: &[Compiled]) {
        for (file, text, module) in compiled {
            for problem in PolicyHost::get().check_calls(&module.ast, &self.modules) {
                let d = rules::problem_diag(*file, 0, text, &problem);
                self.diags.push(d);
            }
        }
    }
}
