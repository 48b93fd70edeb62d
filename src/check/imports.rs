//! `import "lib/x.cond" as q`: reading the other `.cond` files a workflow imports (paths
//! relative to the importing file, regular files only, the workflow size limit), parsing each
//! once however many paths reach it, refusing cycles, and recording each file's SHA-256 for
//! the run. What a file offers (its agents, phases and `rule`s, and which it exports) is a
//! [`Scope`]; `expand` turns the importing workflow into an ordinary one from them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use indexmap::IndexMap;
use sha2::{Digest, Sha256};

use crate::diag::Diagnostic;
use crate::source::{FileId, SourceMap};
use crate::syntax::{self, ast};

/// Imports nested deeper than this are refused (a cycle through links could otherwise pass
/// as distinct paths).
const MAX_DEPTH: usize = 16;

/// One imported file as the run records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedFile {
    /// The path relative to the workflow file's folder, `/`-separated (`lib/quality.cond`).
    pub file: String,
    /// SHA-256 of its text, hex.
    pub sha256: String,
    /// Its text, stored with the run so a resume can compare against it.
    pub text: String,
}

/// Texts to use instead of the files on disk, by [`ImportedFile::file`]: a resume re-checks
/// the workflow a run started with against the imports it started with.
pub type ImportTexts = BTreeMap<String, String>;

/// What one file offers: its own agents, phases (templates included) and rules, whether each
/// is exported, and the files it imports by alias.
pub(super) struct Scope {
    pub record: String,
    pub display: String,
    /// Prefix of the names its agents get in the expanded workflow: "" for the workflow
    /// itself, `q.` for a file imported as `q`, `q.a.` for one that file imports as `a`.
    pub prefix: String,
    pub agents: IndexMap<String, (ast::Agent, bool)>,
    pub phases: IndexMap<String, (ast::Phase, bool)>,
    pub rules: IndexMap<String, (ast::RuleDef, bool)>,
    /// `None`: the import failed (already reported), so names through it are not.
    pub imports: IndexMap<String, Option<Rc<Scope>>>,
    /// The file's `use` paths, rewritten relative to the workflow's folder.
    pub uses: Vec<ast::Use>,
}

/// Reads and parses imported files.
pub(super) struct Loader<'a> {
    pub map: &'a mut SourceMap,
    pub texts: Option<&'a ImportTexts>,
    /// The folder of the workflow file (on disk) and of its display name.
    pub root_dir: PathBuf,
    pub root_name_dir: PathBuf,
    pub diags: Vec<Diagnostic>,
    /// Every file loaded, by record, in the order first reached.
    cache: HashMap<String, Rc<Scope>>,
    pub files: Vec<ImportedFile>,
    /// For each imported file, "imported from app.cond:3:5 as `q`", added to its diagnostics.
    pub notes: HashMap<FileId, String>,
    /// The chain of files being loaded, for cycles.
    stack: Vec<String>,
    /// The workflow file's own name, as an import of it would be recorded.
    root_record: String,
}

impl<'a> Loader<'a> {
    pub(super) fn new(
        map: &'a mut SourceMap,
        texts: Option<&'a ImportTexts>,
        path: &Path,
        name: &str,
    ) -> Loader<'a> {
        let parent = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
        Loader {
            map,
            texts,
            root_dir: parent(path),
            root_name_dir: parent(Path::new(name)),
            diags: Vec::new(),
            cache: HashMap::new(),
            files: Vec::new(),
            notes: HashMap::new(),
            stack: Vec::new(),
            root_record: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// The scope of a parsed file: its items, and its imports loaded.
    pub(super) fn scope(
        &mut self,
        file: FileId,
        record: String,
        prefix: String,
        wf: &ast::Workflow,
    ) -> Scope {
        let display = self.map.get(file).name.clone();
        // The workflow itself is on the chain by its own path, so importing it is a cycle too.
        let on_chain = match record.is_empty() {
            true => self.root_record.clone(),
            false => record.clone(),
        };
        self.stack.push(on_chain);
        let mut scope = Scope {
            record: record.clone(),
            display,
            prefix,
            agents: IndexMap::new(),
            phases: IndexMap::new(),
            rules: IndexMap::new(),
            imports: IndexMap::new(),
            uses: Vec::new(),
        };
        let imported = !record.is_empty();
        for item in &wf.items {
            let (item, exported) = match item {
                ast::Item::Export(inner, _) => (&**inner, true),
                other => (other, false),
            };
            match item {
                ast::Item::Agent(a) => {
                    let offered = Offered::new(&a.name, a, exported, "agent", imported);
                    self.offer(&mut scope.agents, offered);
                }
                ast::Item::Phase(p) => {
                    let template = p.params.is_some()
                        || scope
                            .phases
                            .get(&p.name.name)
                            .is_some_and(|(f, _)| f.params.is_some());
                    let offered = Offered::new(&p.name, p, exported, "phase", imported || template);
                    self.offer(&mut scope.phases, offered);
                }
                ast::Item::RuleDef(r) => {
                    let offered = Offered::new(&r.name, r, exported, "rule", true);
                    self.offer(&mut scope.rules, offered);
                }
                ast::Item::Use(u) => scope.uses.push(rebase_use(u, &record)),
                ast::Item::Import(i) => {
                    if scope.imports.contains_key(&i.alias.name) {
                        self.diags.push(
                            Diagnostic::error(
                                i.alias.span,
                                format!("`{}` names two imports", i.alias.name),
                            )
                            .with_label("second import with this name")
                            .with_help("give each import its own name after `as`"),
                        );
                        continue;
                    }
                    let prefix = format!("{}{}.", scope.prefix, i.alias.name);
                    let lib = self.import(&record, file, i, prefix);
                    scope.imports.insert(i.alias.name.clone(), lib);
                }
                _ => {}
            }
        }
        self.stack.pop();
        scope
    }

    /// Records an item a file offers. A duplicate the checker will not see is reported here:
    /// every duplicate in an imported file (only what is used reaches the checker), and in the
    /// workflow itself a duplicate rule or one involving a phase template.
    fn offer<T: Clone>(&mut self, into: &mut IndexMap<String, (T, bool)>, offered: Offered<'_, T>) {
        let Offered {
            name,
            item,
            exported,
            what,
            unseen,
        } = offered;
        if into.contains_key(&name.name) {
            if unseen {
                self.diags.push(
                    Diagnostic::error(name.span, format!("duplicate {what} name `{}`", name.name))
                        .with_label(format!("second {what} named `{}`", name.name))
                        .with_help(format!("{what} names must be unique within a file")),
                );
            }
            return;
        }
        into.insert(name.name.clone(), (item.clone(), exported));
    }

    /// Loads the file an `import` names (once, however many paths reach it).
    fn import(
        &mut self,
        from_record: &str,
        from_file: FileId,
        item: &ast::Import,
        prefix: String,
    ) -> Option<Rc<Scope>> {
        let written = &item.path.value;
        let record = normalize(&parent_of(from_record).join(written));
        if let Some(at) = self.stack.iter().position(|r| *r == record) {
            let mut chain: Vec<String> = self.stack[at..].iter().map(|r| self.shown(r)).collect();
            chain.push(self.shown(&record));
            self.diags.push(
                Diagnostic::error(
                    item.path.span,
                    format!("import cycle: {}", chain.join(" → ")),
                )
                .with_label("imports a file that imports this one")
                .with_help("a file cannot import itself, directly or through other files"),
            );
            return None;
        }
        if let Some(scope) = self.cache.get(&record) {
            return Some(scope.clone());
        }
        if self.stack.len() > MAX_DEPTH {
            self.diags.push(
                Diagnostic::error(
                    item.path.span,
                    format!("imports are nested more than {MAX_DEPTH} files deep"),
                )
                .with_label("one import too many"),
            );
            return None;
        }
        let text = self.read(&record, item)?;
        let display = self.shown(&record);
        let file = self.map.add(display, self.root_dir.join(&record), &text);
        self.notes.insert(file, self.note(from_file, item));
        self.files.push(ImportedFile {
            file: record.clone(),
            sha256: format!("{:x}", Sha256::digest(text.as_bytes())),
            text: text.clone(),
        });
        let parsed = match syntax::parse(file, &text) {
            Ok((ast, diags)) => {
                self.diags.extend(diags);
                ast
            }
            Err(diags) => {
                self.diags.extend(diags);
                return None;
            }
        };
        let scope = Rc::new(self.scope(file, record.clone(), prefix, &parsed.workflow));
        self.cache.insert(record, scope.clone());
        Some(scope)
    }

    /// "imported from app.cond:3:5 as `q`", followed by where that file was imported from.
    fn note(&self, from_file: FileId, item: &ast::Import) -> String {
        let from = self.map.get(from_file);
        let (line, col) = from.line_col(item.span.start as usize);
        let mut note = format!(
            "imported from {}:{line}:{col} as `{}`",
            from.name, item.alias.name
        );
        if let Some(outer) = self.notes.get(&from_file) {
            note.push_str(&format!(", {outer}"));
        }
        note
    }

    fn shown(&self, record: &str) -> String {
        if record.is_empty() {
            return self.map.get(FileId(0)).name.clone();
        }
        let p = Path::new(record);
        if p.is_absolute() {
            return record.to_string();
        }
        self.root_name_dir.join(p).display().to_string()
    }

    /// The text of an imported file: the recorded one on a resume's re-check, else the file.
    fn read(&mut self, record: &str, item: &ast::Import) -> Option<String> {
        if let Some(texts) = self.texts {
            if let Some(text) = texts.get(record) {
                return Some(text.clone());
            }
        }
        let path = self.root_dir.join(record);
        let written = &item.path.value;
        let problem = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => match super::read_text(&path) {
                Ok(text) => return Some(text),
                Err(d) => d.message,
            },
            Ok(_) => format!("`{written}` is not a regular file"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                format!("cannot import `{written}`: no such file")
            }
            Err(e) => format!("cannot import `{written}`: {e}"),
        };
        self.diags.push(
            Diagnostic::error(item.path.span, problem)
                .with_label("cannot import this")
                .with_help(format!(
                    "import paths are relative to the importing file; this one resolves to `{}`",
                    path.display()
                )),
        );
        None
    }
}

/// An item a file offers, for [`Loader::offer`].
struct Offered<'a, T> {
    name: &'a ast::Ident,
    item: &'a T,
    exported: bool,
    what: &'static str,
    /// Whether the checker will not see a duplicate of it, so it is reported here.
    unseen: bool,
}

impl<'a, T> Offered<'a, T> {
    fn new(
        name: &'a ast::Ident,
        item: &'a T,
        exported: bool,
        what: &'static str,
        unseen: bool,
    ) -> Offered<'a, T> {
        Offered {
            name,
            item,
            exported,
            what,
            unseen,
        }
    }
}

/// A `use` of an imported file, its path made relative to the workflow's folder.
fn rebase_use(u: &ast::Use, record: &str) -> ast::Use {
    let mut u = u.clone();
    if !u.path.value.starts_with("std:") && !record.is_empty() {
        let rebased = normalize(&parent_of(record).join(&u.path.value));
        u.path.template = rebased.clone();
        u.path.value = rebased;
    }
    u
}

fn parent_of(record: &str) -> PathBuf {
    Path::new(record)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `lib/../common/x.cond` → `common/x.cond`, `/`-separated; leading `..` kept.
pub(super) fn normalize(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut absolute = false;
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => absolute = true,
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.last().is_some_and(|p| p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..".into());
                }
            }
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
        }
    }
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Adds "imported from …" to every diagnostic that points into an imported file.
pub(super) fn annotate(diags: &mut [Diagnostic], notes: &HashMap<FileId, String>) {
    for d in diags {
        let Some(note) = d.span.and_then(|s| notes.get(&s.file)) else {
            continue;
        };
        d.help = Some(match d.help.take() {
            Some(h) => format!("{h}\n{note}"),
            None => note.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;
    use std::path::Path;

    #[test]
    fn paths_are_recorded_relative_and_without_dots() {
        assert_eq!(
            normalize(Path::new("lib/../common/x.cond")),
            "common/x.cond"
        );
        assert_eq!(normalize(Path::new("./lib/x.cond")), "lib/x.cond");
        assert_eq!(normalize(Path::new("../shared/x.cond")), "../shared/x.cond");
        assert_eq!(normalize(Path::new("lib/../../x.cond")), "../x.cond");
        assert_eq!(normalize(Path::new("/srv/x/../y.cond")), "/srv/y.cond");
    }
}
