//! Small mistakes in real workflows, made on purpose. Each example gets a score of one-character
//! edits (a stray quote, backslash, slash, star, brace, byte-order mark, tab, `#`, `=`, a comment
//! opener, or a character taken out) at seeded places, and where its first error is reported and
//! what it says is snapshotted. A grammar change made for speed must leave these as they are: a
//! check of this kind, run by hand, found a lookahead that moved where a stray `/` was reported
//! ("expected a setting, found `env`" instead of "expected `=` after `env`"), which no
//! hand-written fixture had. Editing an example changes its lines too: review them as any
//! snapshot (`cargo insta review`).

use std::fmt::Write as _;
use std::path::Path;

use conductor::diag::{sort, to_json};
use conductor::{check_source, SourceMap};

/// What is inserted; one more choice takes a character out.
const EDITS: [&str; 12] = [
    "\"", "\\", "/", "*", "{", "}", "\u{feff}", "\t", "#", "=", "/*", "//",
];

const PER_FILE: usize = 20;

/// xorshift64*: the same places on every machine, without a dependency.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// 1-based line and column (in characters) of byte `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, col)
}

#[test]
fn one_character_mistakes_in_the_examples_are_reported_where_they_are() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cond"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "only {} examples", files.len());
    let mut rng = Seeded(7);
    let (mut out, mut rejected, mut total) = (String::new(), 0, 0);
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let name = format!("examples/{}", path.file_name().unwrap().to_string_lossy());
        for k in 0..PER_FILE {
            let mut at = rng.below(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let choice = rng.below(EDITS.len() + 1);
            let mut edited = text.clone();
            let what = match EDITS.get(choice) {
                Some(s) => {
                    edited.insert_str(at, s);
                    format!("insert {s:?}")
                }
                None => match text[at..].chars().next() {
                    Some(c) => {
                        edited.remove(at);
                        format!("remove {c:?}")
                    }
                    None => "nothing".to_string(),
                },
            };
            let mut map = SourceMap::new();
            let mut diags = check_source(&mut map, &name, path, &edited).diags;
            sort(&mut diags);
            let (line, col) = line_col(&text, at);
            let result = match diags.iter().find(|d| d.is_error()) {
                Some(d) => {
                    rejected += 1;
                    let j = to_json(&map, d);
                    let message = j.message.replace(&*root.to_string_lossy(), "<root>");
                    format!(
                        "{}:{} {message:?}",
                        j.line.unwrap_or(0),
                        j.column.unwrap_or(0)
                    )
                }
                None => "accepted".to_string(),
            };
            total += 1;
            let _ = writeln!(out, "{name} {k:02} {what} at {line}:{col} -> {result}");
        }
    }
    // Many edits land in a comment or a string, or insert a tab, and change nothing; a test
    // where few broke the file would test little (102 of 220 do).
    assert!(
        rejected * 3 > total,
        "only {rejected} of {total} edits rejected"
    );
    insta::assert_snapshot!(out);
}
