//! Files agents produce: which paths they may name, and writing them into a run's workspace
//! (or an export folder) without following links out of it.

use std::path::{Path, PathBuf};

use nix::errno::Errno;

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
    // A newline, an escape sequence or a bidi override in a name would spoof the rows of
    // `conductor artifacts` and the run view.
    if let std::borrow::Cow::Owned(shown) = crate::text::printable(path) {
        return Err(UnsafePath(format!(
            "`{shown}` contains a control or bidirectional character; file names are printed"
        )));
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

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error(transparent)]
    Unsafe(#[from] UnsafePath),
    /// The same write would fail again (a name too long, a file where a folder must be).
    #[error("cannot write `{path}`: {cause}")]
    Invalid { path: String, cause: String },
    /// The disk or the system may recover (full disk, I/O error): worth retrying.
    #[error("cannot write `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes `content` to `root/path`, creating folders, never leaving `root`.
///
/// Each folder is opened relative to the one before it, refusing symbolic links, so a link
/// swapped in by a task running beside this write cannot carry it outside (no check-then-use
/// race). The content goes to a new file that then replaces `path`: whatever an earlier task
/// left at `path` — a hard link to a file outside, a FIFO that would block the write, a
/// symbolic link — is replaced, never written through.
pub(crate) fn write_under(root: &Path, path: &str, content: &[u8]) -> Result<(), WriteError> {
    check_path(path)?;
    let path = normalize(path);
    let (folders, name) = match path.rsplit_once('/') {
        Some((folders, name)) => (Some(folders), name),
        None => (None, path.as_str()),
    };
    let errno = |at: &str, e: Errno| classify(root, &path, at, e);
    std::fs::create_dir_all(root).map_err(|source| WriteError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let mut dir = open_dir(nix::fcntl::AT_FDCWD, root, false).map_err(|e| errno("", e))?;
    let mut walked = String::new();
    for part in folders.into_iter().flat_map(|f| f.split('/')) {
        walked = if walked.is_empty() {
            part.to_string()
        } else {
            format!("{walked}/{part}")
        };
        match nix::sys::stat::mkdirat(&dir, part, nix::sys::stat::Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(errno(&walked, e)),
        }
        dir = open_dir(&dir, part, true).map_err(|e| errno(&walked, e))?;
    }
    replace_in(&dir, name, content, None).map_err(|e| errno(&path, e))
}

/// Opens a folder; with `no_follow`, a symbolic link in its place is refused.
fn open_dir<Fd: std::os::fd::AsFd, P: ?Sized + nix::NixPath>(
    at: Fd,
    path: &P,
    no_follow: bool,
) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    let mut flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    if no_follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    nix::fcntl::openat(at, path, flags, nix::sys::stat::Mode::empty())
}

/// Replaces a file's content all at once: the new text is written beside it and renamed over
/// it, so a full disk or a killed process leaves the old file whole, never a truncated one.
/// The file keeps its permissions; a symbolic link is followed to the file it names.
pub(crate) fn replace_file(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let target = std::fs::canonicalize(path)?;
    let permissions = std::fs::metadata(&target)?.permissions();
    let (Some(folder), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(std::io::Error::from_raw_os_error(Errno::EISDIR as i32));
    };
    let dir = open_dir(nix::fcntl::AT_FDCWD, folder, false)?;
    replace_in(&dir, &name.to_string_lossy(), content, Some(permissions))?;
    Ok(())
}

/// Writes a fresh file beside `name` in `dir` and renames it over `name`.
fn replace_in(
    dir: &std::os::fd::OwnedFd,
    name: &str,
    content: &[u8],
    permissions: Option<std::fs::Permissions>,
) -> nix::Result<()> {
    use nix::fcntl::OFlag;
    use std::io::Write;
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
    let mut attempt = 0u32;
    let (temp, fd) = loop {
        let temp = temp_name(name, attempt);
        match nix::fcntl::openat(dir, temp.as_str(), flags, mode) {
            Ok(fd) => break (temp, fd),
            Err(Errno::EEXIST) if attempt < 16 => attempt += 1,
            Err(e) => return Err(e),
        }
    };
    let mut file = std::fs::File::from(fd);
    let io = |e: std::io::Error| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw);
    // A user's own file (`permissions` given) is on disk before it replaces the old one;
    // artifacts are also in the store, and syncing each would slow large runs.
    let user_file = permissions.is_some();
    let written = permissions
        .map_or(Ok(()), |p| file.set_permissions(p))
        .and_then(|()| file.write_all(content))
        .and_then(|()| if user_file { file.sync_all() } else { Ok(()) })
        .map_err(io)
        .and_then(|()| nix::fcntl::renameat(dir, temp.as_str(), dir, name));
    if written.is_err() {
        let _ = nix::unistd::unlinkat(dir, temp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    written
}

/// A hidden name beside `name`, unique to this process and write.
fn temp_name(name: &str, attempt: u32) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let short: String = name.chars().take(32).collect();
    format!(".{short}.{}-{n}-{attempt}.tmp", std::process::id())
}

/// Names why a write failed: a link or a file in the way is refused, an error that would
/// recur is invalid, the rest (a full disk) may pass.
fn classify(root: &Path, path: &str, at: &str, e: Errno) -> WriteError {
    let full = root.join(at);
    let link = std::fs::symlink_metadata(&full).is_ok_and(|m| m.file_type().is_symlink());
    match e {
        Errno::ELOOP | Errno::ENOTDIR if link => WriteError::Unsafe(UnsafePath(format!(
            "`{path}` would be written through the symbolic link `{}`; files are written only \
             inside the workspace",
            full.display()
        ))),
        Errno::ENOTDIR | Errno::EISDIR | Errno::ENAMETOOLONG | Errno::ELOOP | Errno::EINVAL => {
            WriteError::Invalid {
                path: path.to_string(),
                cause: match e {
                    Errno::ENOTDIR => format!("`{at}` is a file, not a folder"),
                    Errno::EISDIR => format!("`{at}` is a folder, not a file"),
                    Errno::ENAMETOOLONG => "the name is too long".to_string(),
                    other => other.desc().to_string(),
                },
            }
        }
        other => WriteError::Io {
            path: full,
            source: std::io::Error::from_raw_os_error(other as i32),
        },
    }
}

/// Reads a whole file of at most `limit` bytes. Only a regular file is read: a FIFO (which
/// would block until a writer comes), a device such as `/dev/zero` (endless) or a socket is
/// refused, and so is a file larger than `limit`, before it fills memory.
pub(crate) fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, so that opening a FIFO returns at once instead of waiting for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "it is a directory",
        ));
    }
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is not a regular file (a FIFO, a device or a socket)",
        ));
    }
    // Sized once from the file's length (read to the end all the same, in case it grows): a
    // buffer grown by doubling touched twice the file's size in fresh pages.
    let size = usize::try_from(meta.len().min(limit)).unwrap_or(0);
    read_into(file, limit, Vec::with_capacity(size.saturating_add(1)))
}

/// Reads a stream to its end, refusing one longer than `limit` bytes.
pub(crate) fn read_at_most(from: impl std::io::Read, limit: u64) -> std::io::Result<Vec<u8>> {
    read_into(from, limit, Vec::new())
}

/// [`read_at_most`] into `bytes` (empty, with the capacity the caller expects to need).
fn read_into(from: impl std::io::Read, limit: u64, mut bytes: Vec<u8>) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    from.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("it is larger than {}", size_text(limit)),
        ));
    }
    Ok(bytes)
}

/// `64 MiB`, or a number of bytes when it is not a whole number of MiB.
pub(crate) fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
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

    /// A thread swaps a folder of the workspace for a symbolic link to a folder outside and
    /// back, as fast as it can, while files are written into that folder: whichever way each
    /// write meets the race, nothing lands outside.
    #[test]
    fn a_folder_swapped_for_a_link_mid_write_never_carries_a_write_outside() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let (work, outside) = (dir.path().join("work"), dir.path().join("outside"));
        std::fs::create_dir_all(work.join("d/e")).unwrap();
        std::fs::create_dir_all(outside.join("e")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let swapper = {
            let (work, outside, stop, swaps) =
                (work.clone(), outside.clone(), stop.clone(), swaps.clone());
            std::thread::spawn(move || {
                let (d, real) = (work.join("d"), work.join("d.real"));
                while !stop.load(Ordering::Relaxed) {
                    // A write may recreate `d` while it is away: the swap then waits a turn.
                    if std::fs::rename(&d, &real).is_ok()
                        && std::os::unix::fs::symlink(&outside, &d).is_ok()
                    {
                        swaps.fetch_add(1, Ordering::Relaxed);
                        std::thread::yield_now();
                        let _ = std::fs::remove_file(&d);
                    }
                    if real.exists() && std::fs::rename(&real, &d).is_err() {
                        let _ = std::fs::remove_dir_all(&d);
                        let _ = std::fs::rename(&real, &d);
                    }
                    // The real folder stays a moment, so that writes meet both states.
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
            })
        };
        let (mut written, mut refused) = (0u64, 0u64);
        let start = std::time::Instant::now();
        let enough = |written: u64| written >= 2000 && swaps.load(Ordering::Relaxed) >= 500;
        while !enough(written) && start.elapsed() < std::time::Duration::from_secs(10) {
            let n = written + refused;
            let path = if n % 2 == 0 {
                format!("d/f{n}.txt")
            } else {
                format!("d/e/f{n}.txt")
            };
            match write_under(&work, &path, b"x") {
                Ok(()) => written += 1,
                // The folder was missing (between the swapper's renames) or a link: refused.
                Err(_) => refused += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        let mut leaked = Vec::new();
        for folder in [outside.clone(), outside.join("e")] {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_file() {
                    leaked.push(entry.path());
                }
            }
        }
        assert!(
            leaked.is_empty(),
            "written outside the workspace: {leaked:?}"
        );
        // The race was run, both ways.
        assert!(swaps.load(Ordering::Relaxed) > 100, "{swaps:?}");
        assert!(
            written > 100 && refused > 0,
            "{written} written, {refused} refused"
        );
    }
}
