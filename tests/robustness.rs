//! Hostile input never panics or hangs the parser or checker: it ends in a model or in
//! diagnostics.

use std::path::Path;

use conductor::{check_source, SourceMap};
use proptest::prelude::*;

fn check(text: &str) -> bool {
    let mut map = SourceMap::new();
    let checked = check_source(&mut map, "fuzz.cond", Path::new("fuzz.cond"), text);
    // Either a model, or at least one error: never nothing.
    checked.workflow.is_some() || checked.has_errors()
}

fn examples() -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("examples").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cond") {
            out.push(std::fs::read_to_string(path).unwrap());
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_end_in_a_model_or_diagnostics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        prop_assert!(check(&text));
    }

    #[test]
    fn mutated_examples_end_in_a_model_or_diagnostics(
        which in 0usize..5,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..40, "[ -~\n{}\\[\\]\"]{0,8}"), 1..6),
    ) {
        let examples = examples();
        let mut text = examples[which % examples.len()].clone();
        for (at, cut, insert) in edits {
            let mut start = at.index(text.len().max(1)).min(text.len());
            while !text.is_char_boundary(start) { start -= 1; }
            let mut end = (start + cut).min(text.len());
            while !text.is_char_boundary(end) { end -= 1; }
            text.replace_range(start..end, &insert);
        }
        prop_assert!(check(&text));
    }
}

#[test]
fn deeply_nested_brackets_get_a_diagnostic() {
    for open in ["[", "{", "("] {
        let text = format!("workflow w {{ x = {} }}", open.repeat(50_000));
        assert!(check(&text));
    }
    let rule = format!(
        "workflow w {{ phase p {{ gate {{ {} }} }} }}",
        "(".repeat(5_000)
    );
    assert!(check(&rule));
}

#[test]
fn unclosed_things_get_a_diagnostic() {
    for text in [
        "workflow w { description = \"open",
        "workflow w { description = \"\"\"open",
        "workflow w { phase p { gate { if true { ",
        "workflow w { /* never closed",
        "workflow",
        "",
        "\u{FEFF}",
    ] {
        assert!(check(text), "{text:?}");
    }
}

#[test]
fn large_files_are_checked_without_trouble() {
    // 10 MB of garbage and a large valid workflow.
    let garbage: String = (0..10_000_000u32)
        .map(|i| char::from(b"{}[]\"x =/*\n"[(i % 11) as usize]))
        .collect();
    assert!(check(&garbage));
    let mut valid = String::from("workflow big {\n agent a { kind = \"mock\" }\n phase p {\n");
    for i in 0..20_000 {
        valid.push_str(&format!("  task t{i} on a\n"));
    }
    valid.push_str(" }\n}\n");
    let mut map = SourceMap::new();
    let checked = check_source(&mut map, "big.cond", Path::new("big.cond"), &valid);
    assert_eq!(checked.workflow.expect("valid").tasks.len(), 20_000);
}

#[test]
fn a_rule_that_would_loop_forever_still_compiles_quickly() {
    // Compiling never runs the rule; evaluation limits are the policy engine's tests.
    assert!(check(
        "workflow w { agent a { kind = \"mock\" } phase p { task t on a gate { loop { } } } }"
    ));
}
