//! Every invalid fixture holds one mistake: it is rejected, and its rendered diagnostics are
//! snapshotted so a change in wording or position is seen in review.

use std::path::{Path, PathBuf};

use conductor::diag::render;
use conductor::{check_file, SourceMap};

fn relative(path: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root).unwrap_or(path).to_path_buf()
}

fn rendered(path: &Path) -> (String, usize, usize) {
    let mut map = SourceMap::new();
    let checked = check_file(&mut map, path);
    let errors = checked.diags.iter().filter(|d| d.is_error()).count();
    let warnings = checked.diags.len() - errors;
    (render(&map, &checked.diags, false), errors, warnings)
}

#[test]
fn invalid_fixtures_are_rejected_with_pointed_messages() {
    let mut count = 0;
    insta::glob!("fixtures/invalid", "*.cond", |path| {
        count += 1;
        let path = relative(path);
        let (text, errors, _) = rendered(&path);
        assert!(errors >= 1, "{} was accepted", path.display());
        // One mistake each: the fixture states its mistake on the first line, and must not
        // cascade into unrelated errors.
        assert_eq!(errors, 1, "{}:\n{text}", path.display());
        assert!(
            text.contains(":") && text.contains("╭─["),
            "no caret snippet:\n{text}"
        );
        insta::assert_snapshot!(text);
    });
    assert!(count >= 30, "only {count} invalid fixtures");
}

#[test]
fn warning_fixtures_pass_with_warnings() {
    insta::glob!("fixtures/warnings", "*.cond", |path| {
        let path = relative(path);
        let (text, errors, warnings) = rendered(&path);
        assert_eq!(errors, 0, "{text}");
        assert!(warnings >= 1, "{} gave no warning", path.display());
        insta::assert_snapshot!(text);
    });
}

#[test]
fn all_errors_of_a_file_are_reported_not_just_the_first() {
    let text = r#"workflow w {
    max_feedback_loop = 3
    agent a { kind = "mock", count = 0 }
    phase p {
        task t on b
        task u on a after nope { retries = 2 }
        gate { sucess_rate > 0.5 }
    }
}"#;
    let mut map = SourceMap::new();
    let checked = conductor::check_source(&mut map, "many.cond", Path::new("many.cond"), text);
    let messages: Vec<&str> = checked.diags.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        vec![
            "unknown setting `max_feedback_loop` for a workflow",
            "`count` must be between 1 and 10000, found `0`",
            "unknown agent `b`",
            "unknown task `nope`",
            "unknown setting `retries` for a task",
            "unknown variable `sucess_rate` in a `gate` rule",
        ]
    );
}

fn messages(text: &str) -> Vec<String> {
    let mut map = SourceMap::new();
    let checked = conductor::check_source(&mut map, "t.cond", Path::new("t.cond"), text);
    checked.diags.iter().map(|d| d.message.clone()).collect()
}

#[test]
fn a_call_that_is_a_whole_statement_is_checked_too() {
    let m = messages(
        r#"workflow w { agent a { kind = "mock" } phase p { task t on a { when { open_file("x") } } } }"#,
    );
    assert_eq!(m, vec!["unknown function `open_file`"]);
}

#[test]
fn brackets_in_comments_and_triple_strings_do_not_count_as_nesting() {
    let mut text = String::from("workflow w {\n");
    for _ in 0..200 {
        text.push_str("    // (see below\n");
    }
    text.push_str(&format!(
        "    description = \"\"\"{}\"\"\"\n}}\n",
        "(".repeat(300)
    ));
    assert!(messages(&text).is_empty(), "{:?}", messages(&text));
}

#[test]
fn every_bad_command_argument_is_reported() {
    let m = messages(
        r#"workflow w { agent s { kind = "shell", command = ["a", "{{ x", 3, "{% if %}"] } phase p { task t on s } }"#,
    );
    assert_eq!(m.len(), 3, "{m:?}");
}

#[test]
fn a_module_used_twice_is_one_error() {
    let m = messages(
        r#"workflow w { use "policies/standard.rhai" use "policies/standard.rhai"
           agent a { kind = "mock" } phase p { task t on a } }"#,
    );
    assert_eq!(m, vec!["module `policies/standard.rhai` is used twice"]);
}

#[test]
fn a_kind_of_the_wrong_type_lists_the_kinds() {
    let m = messages(r#"workflow w { agent a { kind = 5 } phase p { task t on a } }"#);
    assert_eq!(m.len(), 1);
    assert!(m[0].contains("\"mock\""), "{m:?}");
}

#[test]
fn a_task_named_twice_in_after_is_reported_in_a_short_list_and_a_long_one() {
    // A short list is searched and a long one (over 16 names) kept in a set: both say so.
    let names: Vec<String> = (0..20).map(|i| format!("d{i}")).collect();
    let declared: String = names.iter().map(|n| format!("task {n} on a\n")).collect();
    for (list, want) in [
        ("d0, d1, d0".to_string(), "d0"),
        (format!("{}, d7", names.join(", ")), "d7"),
    ] {
        let text = format!(
            "workflow w {{ agent a {{ kind = \"mock\" }} phase p {{\n{declared}task t on a after {list}\n}} }}"
        );
        let m = messages(&text);
        assert_eq!(
            m,
            vec![format!("`{want}` is named twice in `after`")],
            "{list}"
        );
    }
}

#[test]
fn a_cycle_points_at_the_after_that_closes_it_among_many_tasks() {
    // Each task's `after` spans are kept in one list for the whole file: the error must still
    // point at the right task's entry.
    let mut text = String::from("workflow w {\n agent a { kind = \"mock\" }\n phase p {\n");
    for i in 0..50 {
        text.push_str(&format!("  task f{i} on a after s\n"));
    }
    text.push_str("  task s on a\n  task x on a after s, y\n  task y on a after x\n }\n}\n");
    let mut map = SourceMap::new();
    let checked = conductor::check_source(&mut map, "t.cond", Path::new("t.cond"), &text);
    let cycle: Vec<_> = checked
        .diags
        .iter()
        .filter(|d| d.message.contains("cycle"))
        .collect();
    assert_eq!(cycle.len(), 1, "{:?}", checked.diags);
    let span = cycle[0].span.expect("a cycle error points into the file");
    let pointed = &text[span.range()];
    let line = text[..span.range().start].lines().last().unwrap_or("");
    assert_eq!(pointed.len(), 1, "points at one name: {pointed:?}");
    assert!(
        matches!(
            (line.trim_start(), pointed),
            ("task x on a after s, ", "y") | ("task y on a after ", "x")
        ),
        "points at {pointed:?} after {line:?}"
    );
}
