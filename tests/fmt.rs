//! `fmt` is idempotent and never changes meaning: the checked model of a file and of its
//! formatted text are equal, for every example and every fixture that parses.

use std::path::{Path, PathBuf};

use conductor::check::text::to_text;
use conductor::syntax::format_source;
use conductor::{check_source, SourceMap};

fn files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [
        "examples",
        "examples/lib",
        "tests/fixtures/invalid",
        "tests/fixtures/invalid/imported",
        "tests/fixtures/warnings",
    ] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "cond") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The meaning of a file: its model, or the messages of its diagnostics.
fn meaning(path: &Path, text: &str) -> String {
    let mut map = SourceMap::new();
    let checked = check_source(&mut map, &path.display().to_string(), path, text);
    match checked.workflow {
        Some(wf) => to_text(&wf),
        None => checked
            .diags
            .iter()
            .map(|d| format!("{:?}: {}\n", d.severity, d.message))
            .collect(),
    }
}

#[test]
fn fmt_is_idempotent_and_keeps_meaning() {
    let mut formatted_any = 0;
    for path in files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // not UTF-8: nothing to format
        };
        let Ok(once) = format_source(&path.display().to_string(), &text) else {
            continue; // a syntax error: fmt reports it instead
        };
        formatted_any += 1;
        let twice = format_source("again", &once).expect("formatted text parses");
        assert_eq!(once, twice, "fmt is not idempotent on {}", path.display());
        assert_eq!(
            meaning(&path, &text),
            meaning(&path, &once),
            "fmt changed the meaning of {}",
            path.display()
        );
    }
    assert!(formatted_any >= 40, "only {formatted_any} files formatted");
}

#[test]
fn fmt_keeps_every_comment() {
    for path in files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(once) = format_source("x", &text) else {
            continue;
        };
        for line in text.lines() {
            if let Some(at) = line.find("// ") {
                let comment = line[at..].trim_end();
                // Comments inside rhai blocks and strings are kept as part of them.
                assert!(
                    once.contains(comment),
                    "{} lost the comment {comment:?}:\n{once}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn fmt_lays_out_a_messy_file_canonically() {
    let messy = "// head\nworkflow   w{agent a{kind=\"mock\",count=2}\n\n\n  phase p{task t on a after s{retry=1,when{loop_count==0}}\ntask s on a\ngate{\n      success_rate>=0.5\n   }}}";
    let out = format_source("m.cond", messy).unwrap();
    insta::assert_snapshot!(out, @r###"
    // head
    workflow w {
        agent a { kind = "mock", count = 2 }

        phase p {
            task t on a after s { retry = 1, when { loop_count==0 } }
            task s on a
            gate { success_rate>=0.5 }
        }
    }
    "###);
}
