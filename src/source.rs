//! Source files and spans.
//!
//! Every diagnostic a user sees points into a [`SourceFile`] through a [`Span`]: a file id and a
//! byte range. Line and column are computed only when a diagnostic is rendered.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Identifies a file inside a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span {
            file,
            start: clamp_u32(start),
            end: clamp_u32(end.max(start)),
        }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// A span of `len` bytes starting `offset` bytes into this one.
    pub fn sub(self, offset: usize, len: usize) -> Span {
        let start = (self.start as usize).saturating_add(offset);
        Span::new(self.file, start, start.saturating_add(len))
    }

    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One loaded file: its display name, its text and the byte offset of each line start.
#[derive(Debug)]
pub struct SourceFile {
    pub name: String,
    pub path: PathBuf,
    pub text: Arc<str>,
    /// Built when a diagnostic first asks (a file that checks cleanly never needs it).
    line_starts: OnceLock<Arc<[usize]>>,
}

impl SourceFile {
    fn new(name: String, path: PathBuf, text: Arc<str>) -> SourceFile {
        SourceFile {
            name,
            path,
            text,
            line_starts: OnceLock::new(),
        }
    }

    /// The byte offset of each line's start, shared (cheap to clone).
    pub fn line_starts(&self) -> Arc<[usize]> {
        self.starts().clone()
    }

    fn starts(&self) -> &Arc<[usize]> {
        self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let starts = self.starts();
        let line = match starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = starts[line];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    /// Byte offset of a 1-based line and 1-based character column, clamped to the file.
    pub fn offset_of(&self, line: usize, col: usize) -> usize {
        let Some(&start) = self.starts().get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let rest = &self.text[start..];
        let line_text = rest.split('\n').next().unwrap_or("");
        let byte = line_text
            .char_indices()
            .nth(col.saturating_sub(1))
            .map_or(line_text.len(), |(i, _)| i);
        start + byte
    }
}

/// All files a compilation has read: the workflow file and every `use`d module.
#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    /// Adds a file under a display name; `path` is where relative `use` paths resolve from.
    pub fn add(&mut self, name: impl Into<String>, path: impl AsRef<Path>, text: &str) -> FileId {
        let id = FileId(self.files.len() as u32);
        self.files.push(SourceFile::new(
            name.into(),
            path.as_ref().to_path_buf(),
            Arc::from(text),
        ));
        id
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        // INVARIANT: FileIds are only minted by `add` on this map.
        &self.files[id.0 as usize]
    }

    pub fn text(&self, span: Span) -> &str {
        let file = self.get(span.file);
        file.text.get(span.range()).unwrap_or("")
    }
}
