//! Finds the comments of a file for `fmt`: `//` and `/* */` outside strings and rhai blocks
//! (comments inside rhai code are part of the code and stay where they are).

use super::ast::Comment;
use crate::source::{FileId, Span};

pub(super) fn scan(file: FileId, text: &str, rhai: &[(usize, usize)]) -> Vec<Comment> {
    let bytes = text.as_bytes();
    let mut comments = Vec::new();
    let mut rhai = rhai.iter().peekable();
    let mut i = 0;
    while i < bytes.len() {
        while rhai.peek().is_some_and(|r| r.1 <= i) {
            rhai.next();
        }
        if let Some(&&(start, end)) = rhai.peek() {
            if start <= i {
                i = end;
                continue;
            }
        }
        let rest = &bytes[i..];
        if rest.starts_with(b"\"\"\"") {
            i += 3;
            while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 3;
        } else if rest.starts_with(b"\"") {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if rest.starts_with(b"//") {
            let end = text[i..].find('\n').map_or(text.len(), |n| i + n);
            comments.push(comment(file, text, i, end));
            i = end;
        } else if rest.starts_with(b"/*") {
            let end = text[i + 2..]
                .find("*/")
                .map_or(text.len(), |n| i + 2 + n + 2);
            comments.push(comment(file, text, i, end));
            i = end;
        } else {
            // Nothing starts here: on to the next quote or slash, or the next rhai range.
            let limit = rhai
                .peek()
                .map_or(bytes.len(), |r| r.0.clamp(i + 1, bytes.len()));
            i = memchr::memchr2(b'"', b'/', &bytes[i + 1..limit]).map_or(limit, |n| i + 1 + n);
        }
    }
    comments
}

fn comment(file: FileId, text: &str, start: usize, end: usize) -> Comment {
    let end = end.min(text.len());
    Comment {
        text: text[start..end].trim_end().to_string(),
        span: Span::new(file, start, end),
    }
}
