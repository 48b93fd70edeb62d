//! Imports through the binary: a workflow that runs an imported agent, a phase template
//! instantiated with arguments and an imported rule (through a nested and a diamond import);
//! a cycle refused before anything runs; and `resume` after an imported file changed, which
//! is a changed workflow file: the same shape goes on and is recorded, another is refused.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::support::cli::{run, run_id, state, write};

fn lib(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    write(dir, &format!("lib/{name}"), text);
}

fn sha256(path: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

/// The `run_started` event of a run, and its `workflow_amended` events.
fn events(dir: &Path, id: &str) -> (serde_json::Value, Vec<serde_json::Value>) {
    let r = run(dir, &["events", id]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let all: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let started = all
        .iter()
        .find(|e| e["event"] == "run_started")
        .unwrap()
        .clone();
    let amended = all
        .into_iter()
        .filter(|e| e["event"] == "workflow_amended")
        .collect();
    (started, amended)
}

const COMMON: &str = r#"workflow common {
    export agent failing { kind = "shell", command = ["sh", "-c", "exit 3"] }
}"#;

const QUALITY: &str = r#"workflow quality {
    import "common.cond" as c
    export agent echo { kind = "shell", command = ["echo", "reviewed {{ input.subject }}"] }
    export rule at_least(min) { success_rate >= min }
    export phase review(target, threshold = 1.0) {
        task check on echo { input = { subject = target } }
        task flaky on c.failing after check
        gate at_least(threshold)
    }
}"#;

#[test]
fn a_workflow_runs_an_imported_agent_phase_template_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    lib(dir.path(), "common.cond", COMMON);
    lib(dir.path(), "quality.cond", QUALITY);
    write(
        dir.path(),
        "app.cond",
        r#"workflow app {
            import "lib/quality.cond" as q
            import "lib/common.cond" as c
            agent build { kind = "shell", command = ["echo", "built"] }
            phase build { task compile on build }
            phase review = q.review(target = "compile", threshold = 0.5)
            phase ship {
                task announce on q.echo { input = { subject = "ship" } }
                task tolerated on c.failing { when { false } }
                gate q.at_least(1.0)
            }
        }"#,
    );
    let r = run(dir.path(), &["run", "app.cond"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let id = run_id(&r.stdout);
    let s = state(dir.path(), &id);
    assert_eq!(s["status"], "completed");
    // The template's parameter reached its task's input.
    assert_eq!(
        s["task_results"]["check"]["output"]["stdout"],
        "reviewed compile\n"
    );
    // One of the instance's two tasks failed: the imported rule, given 0.5, let it pass
    // where the default gate (every task) would not.
    assert_eq!(s["task_results"]["flaky"]["status"], "failed");
    assert_eq!(
        s["task_results"]["announce"]["output"]["stdout"],
        "reviewed ship\n"
    );

    let (started, _) = events(dir.path(), &id);
    // `common.cond` reached twice (directly and through `quality.cond`): one pool.
    let agents: Vec<&str> = started["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(agents, ["build-01", "q.echo-01", "q.c.failing-01"]);
    // Each imported file's hash is in the run's record.
    assert_eq!(
        started["imports"],
        serde_json::json!({
            "lib/common.cond": sha256(&dir.path().join("lib/common.cond")),
            "lib/quality.cond": sha256(&dir.path().join("lib/quality.cond")),
        })
    );
}

#[test]
fn an_import_cycle_is_refused_before_the_run_starts_with_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    lib(
        dir.path(),
        "a.cond",
        "workflow a {\n    import \"b.cond\" as b\n    export agent x { kind = \"mock\" }\n}",
    );
    lib(
        dir.path(),
        "b.cond",
        "workflow b {\n    import \"a.cond\" as a\n}",
    );
    write(
        dir.path(),
        "app.cond",
        "workflow app {\n    import \"lib/a.cond\" as a\n    phase p { task t on a.x }\n}",
    );
    let r = run(dir.path(), &["run", "app.cond"]);
    assert_eq!(r.code, Some(2), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("import cycle: lib/a.cond → lib/b.cond → lib/a.cond"),
        "{}",
        r.stderr
    );
    // Pointed at the import that closes the cycle, saying how that file was reached.
    assert!(r.stderr.contains("lib/b.cond:2:12"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("imported from lib/a.cond:2:5 as `b`, imported from app.cond:2:5 as `a`"),
        "{}",
        r.stderr
    );
    let runs = run(dir.path(), &["runs"]);
    assert!(!runs.stdout.contains("app"), "{}", runs.stdout);
}

#[test]
fn resuming_after_an_import_changed_is_an_amendment_and_a_new_shape_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let say = r#"workflow say {
    export agent say { kind = "shell", command = ["echo", "{{ tasks.gen.output.mesage | upper }}"] }
    export phase wrap() {
        task first on say
        task second on say after first
    }
}"#;
    lib(dir.path(), "say.cond", say);
    write(
        dir.path(),
        "app.cond",
        r#"workflow app {
            import "lib/say.cond" as s
            agent gen { kind = "shell", command = ["sh", "-c", "printf '{\"message\": \"hi\"}'"] }
            phase build { task gen on gen  task greet on s.say after gen }
            phase more = s.wrap()
        }"#,
    );
    let r = run(dir.path(), &["run", "app.cond"]);
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    let id = run_id(&r.stdout);
    let before = sha256(&dir.path().join("lib/say.cond"));

    // The imported template gained a task: the run's shape changed, and resume refuses.
    lib(
        dir.path(),
        "say.cond",
        &say.replace(
            "task first on say",
            "task first on say\n        task third on say",
        ),
    );
    let refused = run(dir.path(), &["resume", &id, "--decide", "greet=retry"]);
    assert_eq!(
        refused.code,
        Some(2),
        "{}\n{}",
        refused.stdout,
        refused.stderr
    );
    assert!(refused.stderr.contains("`third`"), "{}", refused.stderr);

    // The typo fixed in the imported file only, the shape as before: the run goes on.
    lib(dir.path(), "say.cond", &say.replace("mesage", "message"));
    let r = run(dir.path(), &["resume", &id, "--decide", "greet=retry"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("import `lib/say.cond` changed"),
        "{}",
        r.stdout
    );
    let s = state(dir.path(), &id);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["task_results"]["greet"]["output"]["stdout"], "HI\n");
    let (started, amended) = events(dir.path(), &id);
    assert_eq!(started["imports"]["lib/say.cond"], before);
    assert_eq!(amended.len(), 1, "{amended:?}");
    let after = sha256(&dir.path().join("lib/say.cond"));
    assert_ne!(after, before);
    assert_eq!(amended[0]["imports"]["lib/say.cond"], after);
    assert!(amended[0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "agent `s.say`: command changed"));
}

/// Checks `app.cond` in `dir`; the messages and the rendered diagnostics.
fn checked(dir: &Path) -> (Vec<String>, String) {
    let mut map = conductor::SourceMap::new();
    let c = conductor::check_file(&mut map, &dir.join("app.cond"));
    let messages = c.diags.iter().map(|d| d.message.clone()).collect();
    (messages, conductor::diag::render(&map, &c.diags, false))
}

#[test]
fn a_rule_error_on_the_first_line_of_a_template_rule_points_at_its_column() {
    let dir = tempfile::tempdir().unwrap();
    // The bound parameters are compiled before the rule's first line: the column must not move.
    lib(
        dir.path(),
        "t.cond",
        "workflow t {\n    export agent a { kind = \"mock\" }\n    export phase p(min) {\n        task x on a\n        gate { succes_rate >= min }\n    }\n}",
    );
    write(
        dir.path(),
        "app.cond",
        "workflow app {\n    import \"lib/t.cond\" as t\n    phase one = t.p(min = 0.5)\n}",
    );
    let (messages, text) = checked(dir.path());
    assert_eq!(
        messages,
        ["unknown variable `succes_rate` in a `gate` rule"],
        "{text}"
    );
    assert!(text.contains("t.cond:5:16]"), "{text}");
    assert!(text.contains("did you mean `success_rate`?"), "{text}");
}

#[test]
fn a_file_can_use_its_own_rules_and_templates_and_two_instances_collide_clearly() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "app.cond",
        r#"workflow app {
    agent a { kind = "mock" }
    rule enough(min) { success_rate >= min }
    phase check(name) {
        task probe on a { input = { what = name } }
        gate enough(0.5)
    }
    phase first = check(name = "one")
    phase second = check(name = "two")
}"#,
    );
    let (messages, text) = checked(dir.path());
    assert_eq!(
        messages,
        ["phase `second` repeats task `probe` of phase `first`"],
        "{text}"
    );
    assert!(
        text.contains("instantiate a template once per workflow"),
        "{text}"
    );
    std::fs::write(
        dir.path().join("app.cond"),
        std::fs::read_to_string(dir.path().join("app.cond"))
            .unwrap()
            .replace("    phase second = check(name = \"two\")\n", ""),
    )
    .unwrap();
    let (messages, text) = checked(dir.path());
    assert!(messages.is_empty(), "{text}");
}

#[test]
fn a_file_that_imports_itself_or_a_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    write(
        dir.path(),
        "app.cond",
        "workflow app {\n    import \"app.cond\" as me\n    import \"lib\" as l\n    agent a { kind = \"mock\" }\n    phase p { task t on a }\n}",
    );
    let (messages, text) = checked(dir.path());
    assert_eq!(messages.len(), 2, "{text}");
    let app = dir.path().join("app.cond").display().to_string();
    assert_eq!(
        messages[0],
        format!("import cycle: {app} → {app}"),
        "{text}"
    );
    assert_eq!(messages[1], "`lib` is not a regular file", "{text}");
}

#[test]
fn duplicates_the_checker_never_sees_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    lib(
        dir.path(),
        "l.cond",
        "workflow l {\n    export agent a { kind = \"mock\" }\n    agent a { kind = \"mock\" }\n}",
    );
    write(
        dir.path(),
        "app.cond",
        r#"workflow app {
    import "lib/l.cond" as l
    rule r(x) { x }
    rule r(y) { y }
    phase t(x) { task one on l.a }
    phase t { task two on l.a }
    phase used = t(x = 1)
}"#,
    );
    let (messages, text) = checked(dir.path());
    assert_eq!(
        messages,
        [
            "duplicate rule name `r`",
            "duplicate phase name `t`",
            "duplicate agent name `a`"
        ],
        "{text}"
    );
    assert!(text.contains("imported from"), "{text}");
}

#[test]
fn a_template_parameter_that_is_a_duration_sets_a_setting_and_leaves_rules_alone() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "app.cond",
        r#"workflow app {
    agent a { kind = "mock" }
    phase slow(limit, rate) {
        task t on a { timeout = limit }
        gate { success_rate >= rate }
    }
    phase one = slow(limit = 90s, rate = 1.0)
}"#,
    );
    let mut map = conductor::SourceMap::new();
    let c = conductor::check_file(&mut map, &dir.path().join("app.cond"));
    let wf = c.workflow.unwrap_or_else(|| {
        panic!("{}", conductor::diag::render(&map, &c.diags, false));
    });
    assert_eq!(wf.tasks[0].timeout, std::time::Duration::from_secs(90));
}
