//! Files agents produce: which paths they may name, and writing them into a run's workspace
//! (or an export folder) without following links out of it.

use std::path::{Path, PathBuf};

/// Why a path may not be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UnsafePath(pub String);

/// A file path an agent may write: relative, inside the workspace, made of ordinary names.
pub(crate) fn check_path(path: &str) -> Result<(), UnsafePath> {
    use std::path::Component;
    if path.trim().is_empty() {
        return Err(UnsafePath("the path is empty".into()));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err(UnsafePath(format!(
            "`{path}` contains a NUL or a backslash"
        )));
    }
    if path.ends_with('/') {
        return Err(UnsafePath(format!("`{path}` names a folder, not a file")));
    }
    let p = std::path::Path::new(path);
    if !p
        .components()
        .any(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return Err(UnsafePath(format!("`{path}` names no file")));
    }
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnsafePath(format!("`{path}` leaves the workspace (`..`)")));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnsafePath(format!(
                    "`{path}` is absolute; paths are relative to the workspace"
                )));
            }
        }
    }
    Ok(())
}

/// `./a//b.txt` → `a/b.txt`: one spelling per file, so later versions replace earlier ones.
pub(crate) fn normalize(path: &str) -> String {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A file is written only through real folders of `root`: a symbolic link left there by an
/// earlier task (`ln -s /etc x`) must not carry a write outside it.
pub(crate) fn refuse_links(root: &Path, path: &str) -> Result<(), UnsafePath> {
    let mut at = root.to_path_buf();
    for part in Path::new(path).components() {
        at.push(part);
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(UnsafePath(format!(
                "`{path}` would be written through the symbolic link `{}`; files are written \
                 only inside the workspace",
                at.display()
            )));
        }
    }
    Ok(())
}

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error(transparent)]
    Unsafe(#[from] UnsafePath),
    #[error("cannot write `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes `content` to `root/path`, creating folders, refusing paths that leave `root`.
pub(crate) fn write_under(root: &Path, path: &str, content: &[u8]) -> Result<(), WriteError> {
    check_path(path)?;
    refuse_links(root, path)?;
    let target = root.join(path);
    let io = |source| WriteError::Io {
        path: target.clone(),
        source,
    };
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(&target, content).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_and_stay_inside() {
        assert!(check_path("a/b.txt").is_ok());
        assert!(check_path("./a.txt").is_ok());
        for bad in ["", "/etc/x", "../x", "a/../../x", "a/", ".", "a\\b"] {
            assert!(check_path(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(normalize("./a//b.txt"), "a/b.txt");
    }
}
