//! Diagnostics: the values every stage returns for problems a user can fix, and their rendering.
//!
//! A stage collects every diagnostic it finds and keeps going; the caller stops between stages
//! when any error was reported. Rendering uses miette's graphical handler (caret snippets),
//! colour-free for snapshots and pipes; `--format json` uses [`to_json`].

use std::fmt;

use std::sync::Arc;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    SourceCode, SourceSpan, SpanContents,
};
use serde::Serialize;

use crate::source::{SourceMap, Span};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Warning,
    Error,
}

/// One problem found in a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Level,
    /// One line, lowercase first word, no final period, user input in backticks.
    pub message: String,
    /// Where the problem is; `None` for problems with no place (an unreadable file).
    pub span: Option<Span>,
    /// Text under the caret.
    pub label: Option<String>,
    /// Further places, e.g. the first definition of a duplicate.
    pub related: Vec<(Span, String)>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Level::Error, Some(span), message)
    }

    pub fn warning(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Level::Warning, Some(span), message)
    }

    /// An error with no place in a file, e.g. a file that cannot be read.
    pub fn general(message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Level::Error, None, message)
    }

    fn new(severity: Level, span: Option<Span>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity,
            message: message.into(),
            span,
            label: None,
            related: Vec::new(),
            help: None,
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    pub fn with_related(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.related.push((span, label.into()));
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Adds "did you mean `x`?" when a candidate is close to `name`.
    pub fn with_suggestion<'a>(
        self,
        name: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Diagnostic {
        match suggest(name, candidates) {
            Some(near) => self.with_help(format!("did you mean `{near}`?")),
            None => self,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Level::Error
    }
}

/// The closest candidate to `name`, if one is close enough to be a likely typo.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for candidate in candidates {
        if candidate == name {
            continue;
        }
        let score = strsim::jaro_winkler(name, candidate);
        let close = score >= 0.85 || strsim::levenshtein(name, candidate) <= 2.min(name.len() / 3);
        if close && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// Diagnostics in the order a reader expects: by file, then position, errors before warnings
/// at the same place.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|d| {
        (
            d.span.map(|s| (s.file, s.start)),
            std::cmp::Reverse(d.severity),
        )
    });
}

/// Renders diagnostics as text with caret snippets; `color` adds ANSI styles for terminals.
pub fn render(map: &SourceMap, diags: &[Diagnostic], color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    for diag in diags {
        let report = Report::new(map, diag);
        if handler.render_report(&mut out, &report).is_err() {
            // Rendering into a String cannot fail; keep the message if miette ever does.
            out.push_str(&diag.message);
        }
        out.push('\n');
    }
    out
}

/// A diagnostic in the shape editors and CI read (`conductor check --format json`).
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub end_line: Option<usize>,
    pub end_column: Option<usize>,
    pub severity: Level,
    pub message: String,
    pub label: Option<String>,
    pub help: Option<String>,
}

pub fn to_json(map: &SourceMap, diag: &Diagnostic) -> JsonDiagnostic {
    let (file, start, end) = match diag.span {
        Some(span) => {
            let f = map.get(span.file);
            (
                Some(f.name.clone()),
                Some(f.line_col(span.start as usize)),
                Some(f.line_col(span.end as usize)),
            )
        }
        None => (None, None, None),
    };
    JsonDiagnostic {
        file,
        line: start.map(|p| p.0),
        column: start.map(|p| p.1),
        end_line: end.map(|p| p.0),
        end_column: end.map(|p| p.1),
        severity: diag.severity,
        message: diag.message.clone(),
        label: diag.label.clone(),
        help: diag.help.clone(),
    }
}

/// Adapts one [`Diagnostic`] to miette. Related spans in other files are listed as text,
/// since a miette report shows one source.
struct Report {
    message: String,
    severity: Level,
    help: Option<String>,
    source: Option<Window>,
    labels: Vec<LabeledSpan>,
}

impl Report {
    fn new(map: &SourceMap, diag: &Diagnostic) -> Report {
        let mut labels = Vec::new();
        let mut help = diag.help.clone();
        let source = diag.span.map(|span| {
            let file = map.get(span.file);
            labels.push(LabeledSpan::new_primary_with_span(
                diag.label.clone(),
                to_source_span(span, &file.text),
            ));
            for (rel, text) in &diag.related {
                if rel.file == span.file {
                    labels.push(LabeledSpan::new_with_span(
                        Some(text.clone()),
                        to_source_span(*rel, &file.text),
                    ));
                } else {
                    let other = map.get(rel.file);
                    let (line, col) = other.line_col(rel.start as usize);
                    let note = format!("{text} ({}:{line}:{col})", other.name);
                    help = Some(match help.take() {
                        Some(h) => format!("{h}\n{note}"),
                        None => note,
                    });
                }
            }
            Window {
                name: file.name.clone(),
                text: file.text.clone(),
                line_starts: file.line_starts(),
            }
        });
        Report {
            message: diag.message.clone(),
            severity: diag.severity,
            help,
            source,
            labels,
        }
    }
}

/// A file as miette reads it, through its line index: a snippet costs the lines it shows, not
/// the length of the file before it (100,000 diagnostics of one file render in linear time).
struct Window {
    name: String,
    text: Arc<str>,
    line_starts: Arc<[usize]>,
}

impl Window {
    fn line_of(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        }
    }
}

impl SourceCode for Window {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let bytes = self.text.as_bytes();
        // The lines around the span, with one spare on each side for miette's own scan.
        let first = self.line_of(span.offset()).saturating_sub(before + 1);
        let last = self.line_of(span.offset() + span.len()) + after + 2;
        let start = self
            .line_starts
            .get(first)
            .copied()
            .unwrap_or(0)
            .min(bytes.len());
        let end = self
            .line_starts
            .get(last)
            .copied()
            .unwrap_or(bytes.len())
            .clamp(start, bytes.len());
        let window = &bytes[start..end];
        let shifted = SourceSpan::new(span.offset().saturating_sub(start).into(), span.len());
        let c = <[u8] as SourceCode>::read_span(window, &shifted, before, after)?;
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            c.data(),
            SourceSpan::new((c.span().offset() + start).into(), c.span().len()),
            c.line() + first,
            c.column(),
            c.line_count() + first,
        )))
    }
}

fn to_source_span(span: Span, text: &str) -> SourceSpan {
    let start = (span.start as usize).min(text.len());
    let end = (span.end as usize).clamp(start, text.len());
    SourceSpan::new(start.into(), end - start)
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Report {}

impl miette::Diagnostic for Report {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Level::Error => miette::Severity::Error,
            Level::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }
}

/// The builder methods of [`Diagnostic`] for a diagnostic already pushed into a list, so a
/// checker can write `self.error(span, msg).with_label("…")` on the pushed `&mut Diagnostic`.
pub(crate) trait Annotate {
    fn with_label(self, label: impl Into<String>) -> Self;
}

impl Annotate for &mut Diagnostic {
    fn with_label(self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}
