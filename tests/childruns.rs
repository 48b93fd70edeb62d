//! Child runs (`task t on workflow "deploy.cond"`), with the real binary: the child is a run of
//! its own in the same store, the parent sees its declared outputs, a failing child fails the
//! parent's task, a cancelled parent cancels its child, a parent killed (-9) while its child
//! runs goes on with that same child on resume, and `for_each` starts one child per item.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::cli::{conductor, run, run_id, state, write};

/// A child that "deploys" `env` and reports its URL; `extra` goes before its JSON line.
fn child(extra: &str) -> String {
    format!(
        r#"workflow deploy {{
    outputs = {{ url = "{{{{ tasks.publish.output.url }}}}", env = "{{{{ params.env }}}}" }}
    param env
    param version = "1.0"
    agent sh {{
        kind = "shell"
        command = ["sh", "-c", "{extra}printf '{{\"url\": \"https://%s.test/v%s\"}}' \"$E\" \"$V\""]
        env = {{ E = "{{{{ params.env }}}}", V = "{{{{ params.version }}}}" }}
        retry = 0
    }}
    phase ship {{ task publish on sh }}
}}"#
    )
}

const PARENT: &str = r#"workflow release {
    agent report {
        kind = "shell"
        command = ["sh", "-c", "echo deployed at $URL"]
        env = { URL = "{{ tasks.staging.output.url }}" }
    }
    phase deploy {
        task staging on workflow "deploy.cond" { params = { env = "staging", version = "2.0" } }
        task summary on report after staging
    }
}"#;

fn runs(dir: &Path) -> Vec<Value> {
    let r = run(dir, &["runs", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    match serde_json::from_str::<Value>(&r.stdout) {
        Ok(Value::Array(rows)) => rows,
        _ => r
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    }
}

fn child_runs(s: &Value, task: &str) -> Vec<String> {
    s["task_results"][task]["child_runs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["run"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_parent_task_sees_its_childs_declared_outputs() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "deploy.cond", &child(""));
    write(dir.path(), "release.cond", PARENT);
    let r = run(dir.path(), &["run", "release.cond"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let parent = run_id(&r.stdout);
    let s = state(dir.path(), &parent);
    assert_eq!(s["status"], "completed");
    let children = child_runs(&s, "staging");
    assert!(
        r.stdout.contains(&format!(
            "↳ staging              child run {} of deploy.cond",
            children[0]
        )),
        "{}",
        r.stdout
    );
    assert_eq!(
        s["task_results"]["staging"]["output"],
        serde_json::json!({ "url": "https://staging.test/v2.0", "env": "staging" })
    );
    assert_eq!(
        s["task_results"]["summary"]["output"]["stdout"],
        "deployed at https://staging.test/v2.0\n"
    );
    // The child is a run of its own, linked both ways.
    let children = child_runs(&s, "staging");
    assert_eq!(children.len(), 1, "{s}");
    let c = state(dir.path(), &children[0]);
    assert_eq!(c["status"], "completed");
    assert_eq!(c["workflow"], "deploy");
    assert_eq!(
        c["parent"],
        serde_json::json!({ "run": parent, "task": "staging" })
    );
    assert_eq!(c["outputs"]["url"], "https://staging.test/v2.0");
    let shown = run(dir.path(), &["show", &children[0]]).stdout;
    assert!(
        shown.contains(&format!("child run of run {parent} (its task `staging`")),
        "{shown}"
    );
    assert!(shown.contains("outputs env=\"staging\""), "{shown}");
    let shown = run(dir.path(), &["show", &parent]).stdout;
    assert!(
        shown.contains(&format!("child run {}", children[0])),
        "{shown}"
    );
    let why = run(dir.path(), &["why", &parent, "staging"]).stdout;
    assert!(
        why.contains(&format!(
            "attempt 1 is child run {} of `deploy.cond`",
            children[0]
        )),
        "{why}"
    );
    let listed = run(dir.path(), &["runs"]).stdout;
    assert!(listed.contains("deploy (child)"), "{listed}");
    assert_eq!(runs(dir.path()).len(), 2);
}

#[test]
fn a_failing_child_fails_the_parent_task_with_the_childs_id_and_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "deploy.cond",
        &child("echo no route to $E >&2; exit 3; "),
    );
    write(dir.path(), "release.cond", PARENT);
    let r = run(dir.path(), &["run", "release.cond"]);
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    let s = state(dir.path(), &run_id(&r.stdout));
    assert_eq!(s["status"], "failed");
    let children = child_runs(&s, "staging");
    assert_eq!(children.len(), 1, "{s}");
    let error = s["task_results"]["staging"]["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains(&format!(
            "child run {} of `deploy.cond` failed",
            children[0]
        )),
        "{error}"
    );
    assert_ne!(s["task_results"]["summary"]["status"], "completed");
    assert_eq!(state(dir.path(), &children[0])["status"], "failed");
}

/// `conductor runs` lists stopped runs from the summaries the store kept with their last
/// events; a store without them (written by an older build) lists the same rows from the logs:
/// a completed parent and its child, a dry run (its child task a mock), a failed parent and its
/// failed child.
#[test]
fn runs_lists_the_same_rows_from_kept_summaries_as_from_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "deploy.cond", &child(""));
    write(dir.path(), "release.cond", PARENT);
    assert_eq!(run(dir.path(), &["run", "release.cond"]).code, Some(0));
    assert_eq!(
        run(dir.path(), &["run", "release.cond", "--dry-run"]).code,
        Some(0)
    );
    write(dir.path(), "deploy.cond", &child("exit 3; "));
    assert_eq!(run(dir.path(), &["run", "release.cond"]).code, Some(1));
    let kept = runs(dir.path());
    let db = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    let with: i64 = db
        .query_row("SELECT COUNT(summary) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(with, 5, "every run stopped with a summary: {kept:?}");
    db.execute("UPDATE runs SET summary = NULL", []).unwrap();
    drop(db);
    let folded = runs(dir.path());
    assert_eq!(kept, folded);
    let line = |row: &Value| {
        format!(
            "{} {} {}/{} of {} {}",
            row["workflow"],
            row["status"],
            row["completed"],
            row["failed"],
            row["tasks"],
            row.get("parent").is_some()
        )
    };
    let lines: Vec<String> = kept.iter().map(line).collect();
    assert_eq!(
        lines,
        [
            "\"release\" \"completed\" 2/0 of 2 false",
            "\"deploy\" \"completed\" 1/0 of 1 true",
            "\"release\" \"completed\" 2/0 of 2 false",
            "\"release\" \"failed\" 0/1 of 2 false",
            "\"deploy\" \"failed\" 0/1 of 1 true",
        ]
    );
    assert_eq!(kept[2]["dry_run"], true, "{:?}", kept[2]);
}

/// Starts `conductor run release.cond` and waits for the child's program to write `started`.
fn start_and_wait(dir: &Path) -> std::process::Child {
    let process = conductor(dir)
        .args(["run", "release.cond"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let marker = dir.join("started");
    for _ in 0..400 {
        if marker.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(marker.exists(), "the child's task never started");
    process
}

fn waiting_child(dir: &Path) -> String {
    let marker = dir.join("started");
    let go = dir.join("go");
    let count = dir.join("count");
    child(&format!(
        "echo x >> {count}; touch {marker}; while [ ! -f {go} ]; do sleep 0.05; done; ",
        count = count.display(),
        marker = marker.display(),
        go = go.display()
    ))
}

#[test]
fn cancelling_the_parent_cancels_its_running_child_whose_always_phases_run() {
    let dir = tempfile::tempdir().unwrap();
    let cleaned = dir.path().join("cleaned");
    let cleanup = format!(
        r#"phase ship {{ task publish on sh }}
    agent tidy {{ kind = "shell", command = ["touch", "{}"] }}
    phase cleanup {{
        always = true
        task clean on tidy
    }}"#,
        cleaned.display()
    );
    write(
        dir.path(),
        "deploy.cond",
        &waiting_child(dir.path()).replace("phase ship { task publish on sh }", &cleanup),
    );
    write(dir.path(), "release.cond", PARENT);
    let process = start_and_wait(dir.path());
    let pid = process.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = process.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let s = state(dir.path(), &run_id(&stdout));
    assert_eq!(s["status"], "cancelled");
    let children = child_runs(&s, "staging");
    assert_eq!(children.len(), 1, "{s}");
    let c = state(dir.path(), &children[0]);
    assert_eq!(c["status"], "cancelled", "{c}");
    assert_eq!(c["task_results"]["publish"]["status"], "cancelled");
    assert_eq!(c["task_results"]["clean"]["status"], "completed");
    assert!(cleaned.exists());
}

#[test]
fn a_parent_killed_while_its_child_runs_goes_on_with_that_child_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "deploy.cond", &waiting_child(dir.path()));
    write(dir.path(), "release.cond", PARENT);
    let mut process = start_and_wait(dir.path());
    process.kill().unwrap();
    process.wait().unwrap();
    let before = runs(dir.path());
    assert_eq!(before.len(), 2, "{before:?}");
    let parent = before
        .iter()
        .find(|r| r["workflow"] == "release")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .unwrap();
    let first_child = before
        .iter()
        .find(|r| r["workflow"] == "deploy")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .unwrap();
    std::fs::write(dir.path().join("go"), "").unwrap();
    let r = run(dir.path(), &["resume", &parent]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let s = state(dir.path(), &parent);
    assert_eq!(s["status"], "completed");
    // The same child, resumed — not a second one.
    assert_eq!(child_runs(&s, "staging"), vec![first_child.clone()]);
    assert_eq!(runs(dir.path()).len(), 2);
    let c = state(dir.path(), &first_child);
    assert_eq!(c["status"], "completed");
    let events = run(dir.path(), &["events", &first_child]).stdout;
    assert_eq!(events.matches("\"run_started\"").count(), 1, "{events}");
    assert!(events.contains("\"run_resumed\""), "{events}");
    // Inside the child, its task that was in flight ran again (a `pure` task may): once per
    // process, in the one child run.
    let count = std::fs::read_to_string(dir.path().join("count")).unwrap();
    assert_eq!(count.lines().count(), 2, "{count}");
    assert_eq!(
        s["task_results"]["summary"]["output"]["stdout"],
        "deployed at https://staging.test/v2.0\n"
    );
}

#[test]
fn for_each_starts_one_child_run_per_item() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "deploy.cond", &child(""));
    write(
        dir.path(),
        "regions.cond",
        r#"workflow regions {
    param regions = ["eu", "us", "ap"]
    agent report {
        kind = "shell"
        command = ["sh", "-c", "echo $URLS"]
        env = { URLS = "{{ tasks.deploy.outputs | map(attribute='url') | join(' ') }}" }
    }
    phase ship {
        task deploy on workflow "deploy.cond" {
            for_each = "{{ params.regions }}"
            params = { env = "{{ item }}" }
        }
        task summary on report after deploy
    }
}"#,
    );
    let r = run(dir.path(), &["run", "regions.cond"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let s = state(dir.path(), &run_id(&r.stdout));
    assert_eq!(
        s["task_results"]["summary"]["output"]["stdout"],
        "https://eu.test/v1.0 https://us.test/v1.0 https://ap.test/v1.0\n"
    );
    let mut children = Vec::new();
    for region in ["eu", "us", "ap"] {
        let ids = child_runs(&s, &format!("deploy[{region}]"));
        assert_eq!(ids.len(), 1, "{region}: {s}");
        let c = state(dir.path(), &ids[0]);
        assert_eq!(c["params"]["env"], region);
        children.push(ids[0].clone());
    }
    children.sort();
    children.dedup();
    assert_eq!(children.len(), 3);
    assert_eq!(runs(dir.path()).len(), 4);
}

#[test]
fn a_cycle_through_two_child_workflows_is_a_check_error_in_the_file_that_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.cond",
        "workflow a {\n    phase p { task to_b on workflow \"b.cond\" }\n}\n",
    );
    write(
        dir.path(),
        "b.cond",
        "workflow b {\n    phase p { task to_a on workflow \"a.cond\" }\n}\n",
    );
    let r = run(dir.path(), &["check", "a.cond"]);
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(
        out.contains("child workflows form a cycle: a.cond → b.cond → a.cond"),
        "{out}"
    );
    assert!(out.contains("b.cond:2:37"), "{out}");
    assert!(
        out.contains("in child workflow `b.cond` used by task `to_b` (a.cond:2:37)"),
        "{out}"
    );
}

#[test]
fn a_child_run_tasks_timeout_cancels_the_child_and_fails_the_task() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "deploy.cond", &waiting_child(dir.path()));
    write(
        dir.path(),
        "release.cond",
        &PARENT.replace(
            r#"params = { env = "staging", version = "2.0" } }"#,
            r#"params = { env = "staging", version = "2.0" }, timeout = 1s }"#,
        ),
    );
    let r = run(dir.path(), &["run", "release.cond"]);
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    let s = state(dir.path(), &run_id(&r.stdout));
    assert_eq!(s["task_results"]["staging"]["status"], "failed");
    assert_eq!(s["task_results"]["staging"]["error"]["code"], "TIMEOUT");
    let children = child_runs(&s, "staging");
    assert_eq!(children.len(), 1, "{s}");
    let c = state(dir.path(), &children[0]);
    assert_eq!(c["status"], "cancelled", "{c}");
}

#[test]
fn child_runs_share_a_postgresql_store_with_their_parent() {
    let Some(db) = crate::support::postgres::database("child_runs_postgres") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "deploy.cond", &child(""));
    write(dir.path(), "release.cond", PARENT);
    let r = run(dir.path(), &["run", "release.cond", "--store", &db]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let parent = run_id(&r.stdout);
    let shown = run(dir.path(), &["show", &parent, "--json", "--store", &db]);
    let s: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(s["status"], "completed");
    let children = child_runs(&s, "staging");
    assert_eq!(children.len(), 1, "{s}");
    let shown = run(
        dir.path(),
        &["show", &children[0], "--json", "--store", &db],
    );
    let c: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(c["status"], "completed");
    assert_eq!(c["parent"]["run"], parent.as_str());
    assert_eq!(
        s["task_results"]["summary"]["output"]["stdout"],
        "deployed at https://staging.test/v2.0\n"
    );
}
