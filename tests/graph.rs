//! `conductor graph`: every format of every example is snapshotted; JSON validates against the
//! committed schema; DOT is accepted by Graphviz when it is installed (CI installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use conductor::plan::{plan, to_dot, to_json, to_mermaid, to_text};
use conductor::{check_file, SourceMap};

fn relative(path: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root).unwrap_or(path).to_path_buf()
}

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string("docs/plan.schema.json").unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).expect("a valid schema")
}

#[test]
fn every_example_in_every_format() {
    let validator = schema();
    insta::glob!("../examples", "*.cond", |path| {
        let path = relative(path);
        let mut map = SourceMap::new();
        let wf = check_file(&mut map, &path)
            .workflow
            .expect("example checks");
        let plan = plan(&wf).unwrap();
        insta::assert_snapshot!("text", to_text(&wf, &plan));
        insta::assert_snapshot!("dot", to_dot(&wf, &plan));
        insta::assert_snapshot!("mermaid", to_mermaid(&wf, &plan));
        let json = serde_json::to_value(to_json(&wf, &plan, &map)).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        insta::assert_snapshot!("json", serde_json::to_string_pretty(&json).unwrap());
    });
}

#[test]
fn the_schema_rejects_a_plan_with_a_missing_field() {
    let validator = schema();
    let bad = serde_json::json!({ "workflow": "w", "nodes": [], "edges": [] });
    assert!(!validator.is_valid(&bad));
}

fn have_dot() -> bool {
    Command::new("dot").arg("-V").output().is_ok()
}

#[test]
fn graphviz_parses_the_dot_of_every_example() {
    if !have_dot() {
        assert!(std::env::var_os("CI").is_none(), "CI must install graphviz");
        eprintln!("skipped: Graphviz `dot` is not installed");
        return;
    }
    for entry in std::fs::read_dir("examples").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "cond") {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_conductor"))
            .args(["graph", "--format", "svg"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let svg = String::from_utf8_lossy(&out.stdout);
        assert!(
            svg.contains("<svg") && svg.contains("cluster_"),
            "{}",
            path.display()
        );
    }
}

#[test]
fn graph_writes_to_a_file_with_o() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("sdlc.mmd");
    let out = Command::new(env!("CARGO_BIN_EXE_conductor"))
        .args(["graph", "examples/sdlc.cond", "--format", "mermaid", "-o"])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(out_path).unwrap();
    assert!(text.starts_with("flowchart TD\n"));
    assert!(text.contains("subgraph p_development"));
}

#[test]
fn a_cyclic_workflow_is_rejected_with_the_cycle_spelled_out() {
    let out = Command::new(env!("CARGO_BIN_EXE_conductor"))
        .args(["graph", "tests/fixtures/invalid/45_cycle_three.cond"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dependency cycle: compile → test → lint → compile"),
        "{stderr}"
    );
}

#[test]
fn check_explain_prints_the_analysis() {
    let out = Command::new(env!("CARGO_BIN_EXE_conductor"))
        .args(["check", "--explain", "examples/mock_pipeline.cond"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("critical path setup → shard_1 → merge (3), width 8"),
        "{stdout}"
    );
    assert!(stdout.contains("pool `worker`"), "{stdout}");
}
