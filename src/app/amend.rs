//! The workflow's source in the store, and `resume` with a changed file ("fix and retry"): the
//! source a run started with is stored (content-addressed, like artifacts), so a resume can
//! compare the file as it is now with it — the same shape is accepted and recorded with what
//! changed; a changed shape is refused with the list of differences.

use sha2::{Digest, Sha256};

use super::{AppError, Loaded};
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

/// Compares the file a resume loaded with the one the run follows: `None` when unchanged (or
/// when the run predates stored sources: the executor then compares task names and phases).
pub(crate) fn amendment(
    store: &dyn Store,
    state: &RunState,
    loaded: &Loaded,
) -> Result<Option<Amendment>, AppError> {
    let Some(old_hash) = &state.source else {
        return Ok(None);
    };
    let new_hash = format!("{:x}", Sha256::digest(loaded.source.as_bytes()));
    if *old_hash == new_hash {
        return Ok(None);
    }
    let old = store
        .artifact(old_hash)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    let old_wf = old.and_then(|text| {
        let mut map = SourceMap::new();
        let path = std::path::Path::new(&state.file);
        crate::check::check_source(&mut map, &state.file, path, &text).workflow
    });
    let changes = match &old_wf {
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
    let to = store_source(store, &loaded.source)?;
    Ok(Some(Amendment {
        from: Some(old_hash.clone()),
        to,
        changes,
    }))
}
