//! Secret params through the binary: the value reaches the task, and never the store, the
//! events, the logs or anything printed; a program cannot read it from its environment; a
//! resume needs it again.

use std::path::Path;
use std::process::{Command, Stdio};

const TOKEN: &str = "tok-Zq81-very-secret";

const WORKFLOW: &str = r#"workflow deploy {
    param token { secret = true, env = "DEPLOY_TOKEN_FOR_TEST" }
    param region = "eu"
    agent sh {
        kind = "shell"
        command = ["sh", "-c", "echo \"using $1\"; echo \"auth failed for $1\" >&2; printenv DEPLOY_TOKEN_FOR_TEST || echo not-in-env; [ \"$1\" = \"$(cat expected.txt)\" ] && echo MATCH", "argv0", "{{ params.token }}"]
        workdir = "."
    }
    agent gatekeeper { kind = "approval" }
    phase p {
        task use_it on sh
        task gate on gatekeeper after use_it { prompt = "deploy with {{ params.token }}?" }
    }
}"#;

fn conductor(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_conductor"));
    c.current_dir(dir)
        .env("CONDUCTOR_STORE", dir.join("store.db"))
        .env_remove("DEPLOY_TOKEN_FOR_TEST")
        .stdin(Stdio::null());
    c
}

/// Every file under `dir` (the store, its journal, workspaces), as bytes.
fn all_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p.display().to_string(), bytes));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_secret_reaches_the_task_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deploy.cond"), WORKFLOW).unwrap();
    // What the program compares its argument with, outside the store.
    std::fs::write(dir.path().join("expected.txt"), TOKEN).unwrap();
    let out = conductor(dir.path())
        .env("DEPLOY_TOKEN_FOR_TEST", TOKEN)
        .args(["run", "deploy.cond"])
        .output()
        .unwrap();
    let view = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(3), "waits for the approval: {view}");
    let run = view.split_whitespace().nth(1).unwrap().to_string();
    assert!(!view.contains(TOKEN), "{view}");
    assert!(view.contains("[secret param token]"), "{view}");

    let json = conductor(dir.path())
        .args(["show", &run, "--json"])
        .output()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let used = &state["task_results"]["use_it"]["output"]["stdout"];
    // The program got the real value (it compared it), and did not find it in its environment.
    assert!(used.as_str().unwrap().contains("MATCH"), "{used}");
    assert!(used.as_str().unwrap().contains("not-in-env"), "{used}");
    assert_eq!(state["params"]["token"], "********");
    assert_eq!(state["params"]["region"], "eu");

    for args in [
        vec!["events", run.as_str()],
        vec!["show", run.as_str()],
        vec!["logs", run.as_str(), "use_it"],
        vec!["why", run.as_str(), "gate"],
    ] {
        let o = conductor(dir.path()).args(&args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for stream in [&o.stdout, &o.stderr] {
            assert!(!contains(stream, TOKEN), "{args:?} printed the secret");
        }
    }
    for (path, bytes) in all_bytes(dir.path()) {
        if path.ends_with("expected.txt") || path.ends_with("token.txt") {
            continue;
        }
        assert!(!contains(&bytes, TOKEN), "the secret is in {path}");
    }

    // A resume needs the value again: it is nowhere to be read back.
    let missing = conductor(dir.path())
        .args(["resume", &run, "--decide", "gate=approve"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("DEPLOY_TOKEN_FOR_TEST"), "{err}");
    let secret_file = dir.path().join("token.txt");
    std::fs::write(&secret_file, format!("{TOKEN}\n")).unwrap();
    let resumed = conductor(dir.path())
        .args(["resume", &run, "--decide", "gate=approve"])
        .arg("--param-file")
        .arg(format!("token={}", secret_file.display()))
        .output()
        .unwrap();
    let view = String::from_utf8_lossy(&resumed.stdout);
    assert_eq!(resumed.status.code(), Some(0), "{view}");
    assert!(!view.contains(TOKEN), "{view}");
    // Only secret params are given again.
    let again = conductor(dir.path())
        .args(["resume", &run, "-p", "region=us"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already completed")
            || String::from_utf8_lossy(&again.stderr).contains("only secret params"),
    );
    std::fs::remove_file(&secret_file).unwrap();
    for (path, bytes) in all_bytes(dir.path()) {
        if path.ends_with("expected.txt") || path.ends_with("token.txt") {
            continue;
        }
        assert!(!contains(&bytes, TOKEN), "the secret is in {path}");
    }
}

#[test]
fn a_secret_param_with_a_default_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.cond"),
        r#"workflow w { param key { secret = true, default = "abc" } agent m { kind = "mock" } phase p { task t on m } }"#,
    )
    .unwrap();
    let out = conductor(dir.path())
        .args(["check", "bad.cond"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("secret param `key` has a default"), "{err}");
}
