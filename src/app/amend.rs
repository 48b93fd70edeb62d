//! The workflow's source in the store, and `resume` with a changed file ("fix and retry"): the
//! source a run started with is stored (content-addressed, like artifacts), and so is every
//! `.cond` file it imports, so a resume can compare the files as they are now with them — the
//! same shape is accepted and recorded with what changed; a changed shape is refused with the
//! list of differences. A changed import is a changed file like the workflow's own.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{AppError, Loaded};
use crate::check::ImportTexts;
use crate::exec::Amendment;
use crate::model::RunState;
use crate::source::SourceMap;
use crate::store::Store;

/// Stores a workflow's source and returns its SHA-256.
pub(crate) fn store_source(store: &dyn Store, source: &str) -> Result<String, AppError> {
    let hash = format!("{:x}", Sha256::digest(source.as_bytes()));
    store.put_artifact(&hash, source.as_bytes())?;
    Ok(hash)
}

/// Stores every file the workflow imports; their paths and SHA-256 for the run's record.
pub(crate) fn store_imports(
    store: &dyn Store,
    loaded: &Loaded,
) -> Result<BTreeMap<String, String>, AppError> {
    let mut out = BTreeMap::new();
    for file in &loaded.workflow.imports {
        out.insert(file.file.clone(), store_source(store, &file.text)?);
    }
    Ok(out)
}

/// Compares the files a resume loaded with the ones the run follows: `None` when unchanged
/// (or when the run predates stored sources: the executor then compares task names and
/// phases).
pub(crate) fn amendment(
    store: &dyn Store,
    state: &RunState,
    loaded: &Loaded,
) -> Result<Option<Amendment>, AppError> {
    let Some(old_hash) = &state.source else {
        return Ok(None);
    };
    let new_hash = format!("{:x}", Sha256::digest(loaded.source.as_bytes()));
    let new_imports: BTreeMap<String, String> = loaded
        .workflow
        .imports
        .iter()
        .map(|f| (f.file.clone(), f.sha256.clone()))
        .collect();
    if *old_hash == new_hash && state.imports == new_imports {
        return Ok(None);
    }
    let old_wf = old_workflow(store, state, old_hash)?;
    let mut changes = match &old_wf {
        Some(old_wf) => {
            let differences = crate::check::compare::shape_differences(old_wf, &loaded.workflow);
            if !differences.is_empty() {
                return Err(AppError::ChangedShape {
                    file: state.file.clone(),
                    run: state.workflow_id.to_string(),
                    differences,
                });
            }
            crate::check::compare::changes(old_wf, &loaded.workflow)
        }
        None => vec![
            "the file the run started with is not in the store: only its task names \
                      and phases were compared"
                .to_string(),
        ],
    };
    changes.extend(import_changes(&state.imports, &new_imports));
    let to = store_source(store, &loaded.source)?;
    let imports = store_imports(store, loaded)?;
    Ok(Some(Amendment {
        from: Some(old_hash.clone()),
        to,
        changes,
        imports,
    }))
}

/// The workflow the run follows, checked with the imports it follows; `None` when a text is
/// missing from the store.
fn old_workflow(
    store: &dyn Store,
    state: &RunState,
    hash: &str,
) -> Result<Option<crate::check::ir::Workflow>, AppError> {
    let text = |hash: &str| -> Result<Option<String>, AppError> {
        Ok(store
            .artifact(hash)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    };
    let Some(source) = text(hash)? else {
        return Ok(None);
    };
    let mut imports = ImportTexts::new();
    for (file, hash) in &state.imports {
        let Some(t) = text(hash)? else {
            return Ok(None);
        };
        imports.insert(file.clone(), t);
    }
    let mut map = SourceMap::new();
    let path = std::path::Path::new(&state.file);
    Ok(
        crate::check::check_source_with(&mut map, &state.file, path, &source, Some(&imports))
            .workflow,
    )
}

/// "import `lib/q.cond` changed", added or no longer imported, in path order.
fn import_changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (file, hash) in new {
        match old.get(file) {
            None => out.push(format!("import `{file}` added")),
            Some(h) if h != hash => out.push(format!("import `{file}` changed")),
            Some(_) => {}
        }
    }
    for file in old.keys().filter(|f| !new.contains_key(*f)) {
        out.push(format!("import `{file}` no longer imported"));
    }
    out
}
