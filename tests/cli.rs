//! The `conductor` binary as a user runs it: exit codes, output streams, files on disk.

use std::process::Command;

fn conductor() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_conductor"));
    // Runs in these tests need no inspection afterwards.
    c.env("CONDUCTOR_STORE", "memory");
    c
}

#[test]
fn check_accepts_a_valid_file_with_exit_0() {
    let out = conductor()
        .args(["check", "examples/sdlc.cond"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok: examples/sdlc.cond"), "{stdout}");
}

#[test]
fn check_rejects_an_invalid_file_with_exit_1_and_a_caret_snippet() {
    let out = conductor()
        .args(["check", "tests/fixtures/invalid/17_unknown_agent.cond"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown agent `workr`"), "{stderr}");
    assert!(stderr.contains("17_unknown_agent.cond:"), "{stderr}");
    assert!(stderr.contains("did you mean `worker`?"), "{stderr}");
    assert!(
        !stderr.contains("\u{1b}["),
        "escape codes in a pipe: {stderr}"
    );
}

#[test]
fn check_of_a_missing_file_is_a_usage_error_with_exit_2() {
    let out = conductor()
        .args(["check", "no/such/file.cond"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read `no/such/file.cond`: no such file"),
        "{stderr}"
    );
}

#[test]
fn check_with_no_arguments_is_a_usage_error() {
    let out = conductor().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_json_gives_file_line_column_and_severity() {
    let out = conductor()
        .args([
            "check",
            "--format",
            "json",
            "tests/fixtures/invalid/45_cycle_three.cond",
            "examples/sdlc.cond",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let diags = json.as_array().unwrap();
    assert_eq!(diags.len(), 1);
    let d = &diags[0];
    assert_eq!(d["file"], "tests/fixtures/invalid/45_cycle_three.cond");
    assert_eq!(d["severity"], "error");
    assert!(d["line"].as_u64().unwrap() > 1);
    assert!(d["column"].as_u64().unwrap() > 1);
    assert!(d["end_column"].as_u64().is_some());
    assert!(d["message"].as_str().unwrap().contains(" → "), "{d}");
}

#[test]
fn binary_garbage_is_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.cond");
    std::fs::write(&path, [0xff, 0xfe, 0x00, 0x9f, b'w']).unwrap();
    let out = conductor().arg("check").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not UTF-8 text"), "{stderr}");
}

#[test]
fn fmt_check_names_files_that_would_change_and_fmt_rewrites_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messy.cond");
    std::fs::write(
        &path,
        "workflow w{agent a{kind=\"mock\"}\nphase p{task t on a}}",
    )
    .unwrap();
    let out = conductor()
        .args(["fmt", "--check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("would reformat"));

    let out = conductor().arg("fmt").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        "workflow w {\n    agent a { kind = \"mock\" }\n    phase p {\n        task t on a\n    }\n}\n"
    );
    let out = conductor()
        .args(["fmt", "--check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn policy_test_runs_the_standard_suite_green() {
    let out = conductor()
        .args(["policy", "test", "policies"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(
        "ok    policies/standard_test.rhai  test_phase_gate_passes_exactly_at_the_threshold"
    ));
    let last = stdout.lines().last().unwrap();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
    let passed: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 20, "{last}");
}

#[test]
fn policy_test_reports_failures_with_their_cause_and_exits_1() {
    let out = conductor()
        .args(["policy", "test", "tests/fixtures/policy"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok    tests/fixtures/policy/limits_test.rhai  test_passes"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "test_wrong_expectation: assert_pass: expected pass, got fail(\"only 1\") (line 6"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("test_endless_loop_fails_instead_of_hanging: the test ran more than"),
        "{stdout}"
    );
    assert!(
        stdout.contains("test_unequal: assert_eq: left is 2, right is 3"),
        "{stdout}"
    );
    assert!(!stdout.contains("helper_is_not_a_test"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("1 passed, 3 failed"));
}

#[test]
fn policy_test_with_nothing_to_run_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = conductor()
        .args(["policy", "test"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no `*_test.rhai` files"));
}

/// `examples/sdlc_mock.cond` with its mock latencies divided by 50 (the same shape, in a
/// fiftieth of the time), beside a copy of the policies it uses.
fn fast_sdlc_mock(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string("examples/sdlc_mock.cond").unwrap();
    let scaled: Vec<String> = text
        .lines()
        .map(|line| match line.split_once("latency = ") {
            Some((head, rest)) => {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let unit = &rest[digits.len()..];
                let ms: u64 =
                    digits.parse::<u64>().unwrap() * if unit.starts_with("ms") { 1 } else { 1000 };
                let tail = unit.trim_start_matches(|c: char| c.is_ascii_alphabetic());
                format!("{head}latency = {}ms{tail}", (ms / 50).max(1))
            }
            None => line.to_string(),
        })
        .collect();
    std::fs::create_dir_all(dir.join("examples")).unwrap();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::copy("policies/standard.rhai", dir.join("policies/standard.rhai")).unwrap();
    let path = dir.join("examples/sdlc_mock.cond");
    std::fs::write(&path, scaled.join("\n")).unwrap();
    path
}

#[test]
fn run_completes_the_offline_sdlc_example_with_one_feedback_loop() {
    let dir = tempfile::tempdir().unwrap();
    let file = fast_sdlc_mock(dir.path());
    let out = conductor()
        .arg("--store")
        .arg(dir.path().join("s.db"))
        .arg("run")
        .arg(&file)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let last = lines.last().unwrap();
    for field in [
        "workflow_id",
        "status",
        "current_phase",
        "pending_tasks",
        "completed_tasks",
        "failed_tasks",
        "skipped_tasks",
        "task_results",
        "agent_states",
        "feedback_loop_count",
        "started_at",
        "completed_at",
        "warnings",
        "error",
    ] {
        assert!(last.get(field).is_some(), "final state lacks `{field}`");
    }
    assert_eq!(last["status"], "completed");
    assert_eq!(last["feedback_loop_count"], 1);
    assert_eq!(last["agent_states"]["coding-01"]["status"], "IDLE");
    let kinds: Vec<&str> = lines[..lines.len() - 1]
        .iter()
        .map(|l| l["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    assert!(kinds.contains(&"retry_scheduled") && kinds.contains(&"loop_started"));
    // review and test_data overlap: both dispatched before either finishes.
    let pos = |kind: &str, task: &str| {
        lines
            .iter()
            .position(|l| l["event"] == kind && l["task"] == task)
            .unwrap()
    };
    assert!(pos("task_dispatched", "test_data") < pos("task_finished", "review"));
}

#[test]
fn run_exit_codes_follow_the_outcome() {
    let out = conductor()
        .args(["run", "tests/fixtures/invalid/17_unknown_agent.cond"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "check errors are usage errors for run"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fails.cond");
    std::fs::write(
        &path,
        r#"workflow f { agent m { kind = "mock", fail_first = 5, retry = 1, backoff = fixed(10ms) } phase p { task a on m } }"#,
    )
    .unwrap();
    let out = conductor().arg("run").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAILED"), "{stdout}");
    assert!(
        !stdout.contains("\u{1b}["),
        "no escape codes when not a terminal"
    );
    let out = conductor()
        .args(["run", "examples/sdlc_mock.cond", "--param", "nope=1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown param `nope`"));
}

#[test]
fn check_warns_when_an_llm_agents_provider_is_not_configured() {
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("wf.cond");
    std::fs::write(
        &wf,
        r#"workflow w {
            agent coding { kind = "llm", role = "coder" }
            agent review { kind = "llm", role = "reviewer", provider = "claude" }
            phase p { task a on coding { prompt = "x" }  task b on review { prompt = "y" } }
        }"#,
    )
    .unwrap();
    let check = || {
        let out = conductor()
            .env_remove("CONDUCTOR_CONFIG")
            .arg("check")
            .arg(&wf)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = check();
    assert_eq!(code, Some(0), "warnings only: {stderr}");
    assert!(
        stderr.contains("provider `default` (used by `coding`) is not configured")
            && stderr.contains("provider `claude` (used by `review`)"),
        "{stderr}"
    );
    std::fs::write(
        dir.path().join("conductor.toml"),
        "[providers.default]\nkind = \"replay\"\ncassette = \"c.json\"\n",
    )
    .unwrap();
    let (_, stderr) = check();
    assert!(!stderr.contains("provider `default`"), "{stderr}");
    // (miette wraps long lines: compare without the wrapping)
    let flat: String = stderr
        .lines()
        .map(|l| l.trim_start_matches([' ', '│', '×', '⚠']).trim_end())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        flat.contains("provider `claude` (used by `review`) is not configured")
            && flat.contains("conductor.toml` does not define it"),
        "{stderr}"
    );
}

#[test]
fn a_run_that_cannot_start_leaves_no_workspace_behind() {
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("wf.cond");
    std::fs::write(
        &wf,
        r#"workflow w {
            agent coding { kind = "llm", role = "coder" }
            phase p { task a on coding { prompt = "x" } }
        }"#,
    )
    .unwrap();
    let store = dir.path().join("store/c.db");
    let out = Command::new(env!("CARGO_BIN_EXE_conductor"))
        .env_remove("CONDUCTOR_CONFIG")
        .arg("--store")
        .arg(&store)
        .arg("run")
        .arg(&wf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("provider `default` is not configured"),
        "{stderr}"
    );
    let runs = dir.path().join("store/runs");
    let left: Vec<_> = std::fs::read_dir(&runs)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
