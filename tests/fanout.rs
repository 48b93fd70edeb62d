//! Fan-out through the binary: a matrix and a `for_each` expanded into instances, outputs in
//! index order whatever order they finish in, an empty list skipped by choice, `max_items`,
//! `fail_fast`, `succeed_when`, decisions and dead letters per instance, a feedback loop that
//! expands again on each pass, and kill -9 in the middle of a fan-out then resume.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::cli::{conductor, run, run_id, state, write};

fn stdout_of(state: &serde_json::Value, task: &str) -> String {
    state["task_results"][task]["output"]["stdout"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn outputs_come_in_index_order_whatever_order_the_instances_finish_in() {
    let dir = tempfile::tempdir().unwrap();
    // `a` sleeps longest and `b` not at all: they finish b, c, a.
    write(
        dir.path(),
        "order.cond",
        r#"workflow order {
            agent lister { kind = "mock", output = { items = [{ n = "a", d = "0.4" }, { n = "b", d = "0" }, { n = "c", d = "0.2" }] } }
            agent sh { kind = "shell", count = 3, command = ["sh", "-c", "sleep {{ item.d }}; echo {{ item.n }}"] }
            agent rep { kind = "shell", command = ["echo", "{{ tasks.work.outputs | map(attribute='stdout') | map('trim') | join(',') }} {{ tasks.work.results | map(attribute='key') | join(',') }} {{ tasks.work.items.completed }}/{{ tasks.work.items.total }}"] }
            phase p {
                task list on lister
                task work on sh after list { for_each = "{{ tasks.list.output.items }}", key = "{{ item.n }}" }
                task report on rep after work
            }
        }"#,
    );
    let r = run(dir.path(), &["run", "order.cond"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    // The human view: one line for the group, with its counts; no line per instance.
    assert!(
        r.stdout.contains("work ×3") && r.stdout.contains("3 instances: 3 completed"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("work[b]"), "{}", r.stdout);
    let s = state(dir.path(), &run_id(&r.stdout));
    assert_eq!(stdout_of(&s, "report"), "a,b,c a,b,c 3/3");
    // The instances finished in another order than their index.
    let finished = |t: &str| {
        s["task_results"][t]["finished_at"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(finished("work[b]") < finished("work[a]"));
    // `show` lists a group's instances on request.
    let shown = run(dir.path(), &["show", &run_id(&r.stdout), "work"]);
    assert!(
        shown.stdout.contains("work[a]") && shown.stdout.contains("work[c]"),
        "{}",
        shown.stdout
    );
}

#[test]
fn a_matrix_follows_githubs_exclude_and_include_rules() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "matrix.cond",
        r#"workflow matrix {
            agent sh { kind = "shell", command = ["echo", "{{ item.os }}/{{ item.py }}/{{ item.extra | default('-') }}"] }
            agent rep { kind = "shell", command = ["echo", "{{ tasks.test.outputs | map(attribute='stdout') | map('trim') | join(' ') }}"] }
            phase p {
                task test on sh {
                    matrix = {
                        os = ["linux", "mac"],
                        py = ["3.11", "3.12"],
                        exclude = [{ os = "mac", py = "3.11" }],
                        include = [{ os = "linux", extra = "cov" }, { os = "win", py = "3.12" }]
                    }
                }
                task report on rep after test
            }
        }"#,
    );
    // `check` expands it: the plan shows the group and its count (3 + the added one).
    let g = run(dir.path(), &["graph", "matrix.cond"]);
    assert!(
        g.stdout.contains("task test on sh ×4 (matrix)"),
        "{}",
        g.stdout
    );
    let r = run(dir.path(), &["run", "matrix.cond"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let s = state(dir.path(), &run_id(&r.stdout));
    // Cross product in declaration order; the exclude removed mac/3.11; the first include
    // extended both linux combinations; the second matched none, so it was added.
    assert_eq!(
        stdout_of(&s, "report"),
        "linux/3.11/cov linux/3.12/cov mac/3.12/- win/3.12/-"
    );
    assert_eq!(s["task_results"]["test[mac-3.12]"]["status"], "completed");
}

#[test]
fn check_reports_fan_out_mistakes_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "bad.cond",
        r#"workflow bad {
    agent m { kind = "mock" }
    agent r { kind = "mock", output = { v = "{{ tasks.t.output.v }}" } }
    phase p {
        task t on m { matrix = { os = ["linux", "mac"], py = ["3.12"], exclude = [{ os = "windows" }], include = [{ os = "linx", extra = "x" }] }, input = { v = "{{ item.arch }}" } }
        task u on r after t
    }
}"#,
    );
    let r = run(dir.path(), &["check", "bad.cond"]);
    assert_eq!(r.code, Some(1));
    for expected in [
        "this `exclude` matches no combination of the matrix",
        "bad.cond:5:",
        "the matrix has no key `arch`",
        "it has `outputs`, not `output`",
        "this `include` matches no combination: it adds one",
        "it has no value for `py`",
        "bad.cond:3:",
    ] {
        assert!(r.stderr.contains(expected), "{expected}:\n{}", r.stderr);
    }
}

#[test]
fn an_empty_list_skips_the_task_by_choice_and_a_long_one_fails_it_clearly() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "empty.cond",
        r#"workflow empty {
            agent m { kind = "mock", output = { v = "{{ item }}" } }
            phase p {
                task none on m { for_each = "{{ [] }}" }
                task after_none on m after none { for_each = "{{ [1] }}" }
            }
        }"#,
    );
    let r = run(dir.path(), &["run", "empty.cond"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let s = state(dir.path(), &run_id(&r.stdout));
    assert_eq!(s["task_results"]["none"]["status"], "skipped");
    assert_eq!(s["task_results"]["none"]["skip_reason"], "empty_fan_out");
    assert_eq!(s["task_results"]["after_none"]["status"], "completed");

    write(
        dir.path(),
        "big.cond",
        r#"workflow big {
            agent m { kind = "mock", output = { v = "{{ item }}" } }
            phase p { task t on m { for_each = "{{ range(300) | list }}" } }
        }"#,
    );
    let r = run(dir.path(), &["run", "big.cond"]);
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("`for_each` gave 300 items, more than `max_items` (256)"),
        "{}",
        r.stdout
    );
    let s = state(dir.path(), &run_id(&r.stdout));
    // Nothing was dispatched: no instance exists.
    assert!(s["task_results"].get("t[0]").is_none());
}

#[test]
fn fail_fast_cancels_the_siblings_and_succeed_when_any_passes_with_one() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ff.cond",
        r#"workflow ff {
            agent sh { kind = "shell", count = 4, command = ["sh", "-c", "if [ {{ item }} = 1 ]; then exit 3; fi; sleep 5"] }
            phase p { task t on sh { for_each = "{{ [1, 2, 3, 4, 5, 6] }}", fail_fast = true } }
        }"#,
    );
    let started = std::time::Instant::now();
    let r = run(dir.path(), &["run", "ff.cond"]);
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    // The sleeping siblings were stopped, not waited for.
    assert!(started.elapsed() < Duration::from_secs(5), "{}", r.stdout);
    let s = state(dir.path(), &run_id(&r.stdout));
    assert_eq!(s["task_results"]["t[1]"]["status"], "failed");
    assert_eq!(s["task_results"]["t"]["status"], "failed");
    // The running siblings were cancelled, the queued ones never started.
    for i in 2..=6 {
        let r = &s["task_results"][format!("t[{i}]")];
        let stopped = r["status"] == "cancelled"
            || (r["status"] == "skipped" && r["skip_reason"] == "sibling_failed");
        assert!(stopped, "t[{i}]: {r}");
    }

    write(
        dir.path(),
        "any.cond",
        r#"workflow any {
            agent sh { kind = "shell", command = ["sh", "-c", "[ {{ item }} = 2 ]"] }
            agent rate { kind = "shell", command = ["sh", "-c", "[ {{ item }} -le 3 ]"] }
            phase p {
                task one on sh { for_each = "{{ [1, 2, 3] }}", succeed_when = "any" }
                task most on rate { for_each = "{{ [1, 2, 3, 4] }}", succeed_when = 0.75 }
                task strict on rate { for_each = "{{ [1, 2, 3, 4] }}" }
            }
        }"#,
    );
    let r = run(dir.path(), &["run", "any.cond"]);
    let s = state(dir.path(), &run_id(&r.stdout));
    assert_eq!(s["task_results"]["one"]["status"], "completed");
    assert_eq!(s["task_results"]["most"]["status"], "completed");
    // The default is "all": one failed instance fails the task, and the run.
    assert_eq!(s["task_results"]["strict"]["status"], "failed");
    assert_eq!(r.code, Some(1));
}

#[test]
fn decisions_and_dead_letters_name_one_instance() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "dec.cond",
        r#"workflow dec {
            on_escalation = "ask"
            agent f { kind = "mock", fail_first = 1, retry = 0, error = "fatal", output = { got = "{{ item }}" } }
            phase p { task u on f { for_each = "{{ ['x', 'y'] }}" } }
        }"#,
    );
    let r = run(dir.path(), &["run", "dec.cond"]);
    assert_eq!(r.code, Some(3), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("--decide 'u[x]=retry|skip|abort'"),
        "{}",
        r.stdout
    );
    let id = run_id(&r.stdout);
    let r = run(
        dir.path(),
        &[
            "resume",
            &id,
            "--decide",
            "u[x]=retry",
            "--decide",
            "u[y]=skip",
        ],
    );
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let s = state(dir.path(), &id);
    assert_eq!(s["task_results"]["u[x]"]["status"], "completed");
    assert_eq!(s["task_results"]["u[x]"]["attempts"], 2);
    assert_eq!(s["task_results"]["u[y]"]["status"], "skipped");

    write(
        dir.path(),
        "dlq.cond",
        r#"workflow dlq {
            agent m { kind = "mock", fail_first = 1, retry = 0, output = { got = "{{ item.os }}" } }
            phase p { task t on m { matrix = { os = ["linux", "mac"] } } }
        }"#,
    );
    let r = run(dir.path(), &["run", "dlq.cond"]);
    assert_eq!(r.code, Some(1));
    let id = run_id(&r.stdout);
    let list = run(dir.path(), &["dlq", "list"]);
    assert!(
        list.stdout.contains("t[linux]") && list.stdout.contains("t[mac]"),
        "{}",
        list.stdout
    );
    let entries: Vec<String> = list
        .stdout
        .lines()
        .skip(1)
        .filter(|l| l.starts_with(&id))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(entries.len(), 2);
    let first = run(dir.path(), &["dlq", "retry", &entries[0]]);
    assert_eq!(
        first.code,
        Some(1),
        "one instance still failed: {}",
        first.stdout
    );
    let second = run(dir.path(), &["dlq", "retry", &entries[1]]);
    assert_eq!(second.code, Some(0), "{}\n{}", second.stdout, second.stderr);
    let s = state(dir.path(), &id);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["task_results"]["t[mac]"]["attempts"], 2);
}

#[test]
fn a_feedback_loop_expands_the_fan_out_again_on_each_pass() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "loop.cond",
        r#"workflow loopfan {
            max_feedback_loops = 2
            agent m { kind = "mock", output = { got = "{{ item }}-{{ loop_count }}" } }
            agent rep { kind = "shell", command = ["echo", "{{ tasks.work.outputs | map(attribute='got') | join(',') }}"] }
            phase dev { task work on m { for_each = "{{ ['a', 'b', 'c'][:loop_count + 1] }}" } }
            phase mon { task report on rep }
            feedback to dev { if loop_count < 2 { error("again") } else { ok() } }
        }"#,
    );
    let r = run(dir.path(), &["run", "loop.cond"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    for n in 1..=3 {
        let line = format!("fans out to {n} instance");
        assert!(r.stdout.contains(&line), "{line}: {}", r.stdout);
    }
    let s = state(dir.path(), &run_id(&r.stdout));
    assert_eq!(s["feedback_loop_count"], 2);
    assert_eq!(stdout_of(&s, "report"), "a-2,b-2,c-2");
}

#[test]
fn kill_9_in_the_middle_of_a_fan_out_then_resume_runs_each_instance_to_completion_once() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "crash.cond",
        r#"workflow crashfan {
            agent lister { kind = "mock", output = { items = ["a", "b", "c", "d", "e", "f", "g", "h"] } }
            agent m { kind = "mock", count = 2, latency = 100ms, log = "mock.log", output = { got = "{{ item }}" } }
            agent rep { kind = "shell", command = ["echo", "{{ tasks.work.outputs | map(attribute='got') | join('') }}"] }
            phase p {
                task list on lister
                task work on m after list { for_each = "{{ tasks.list.output.items }}", effect = "idempotent" }
                task report on rep after work
            }
        }"#,
    );
    let mut child = conductor(dir.path())
        .args(["run", "--json", "crash.cond"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut run_id = String::new();
    let mut finished = 0;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Kill once three instances have completed: the expansion is recorded, some instances
    // are done, two are in flight and the rest are queued.
    for line in lines.by_ref().map_while(Result::ok) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if run_id.is_empty() {
            run_id = v["run_id"].as_str().unwrap_or_default().to_string();
        }
        if v["event"] == "task_finished"
            && v["task"].as_str().is_some_and(|t| t.starts_with("work["))
        {
            finished += 1;
            if finished == 3 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(finished, 3, "the run ended before the kill");
    let r = run(dir.path(), &["resume", &run_id]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let s = state(dir.path(), &run_id);
    assert_eq!(stdout_of(&s, "report"), "abcdefgh");
    // The expansion was recorded once, before the kill, and not computed again.
    let events = run(dir.path(), &["events", &run_id]);
    let expansions = events
        .stdout
        .lines()
        .filter(|l| l.contains("\"fan_out_expanded\""))
        .count();
    assert_eq!(expansions, 1, "{}", events.stdout);
    // Each instance completed once: executions after a completion never happen. An instance
    // in flight at the kill ran again (attempt 2); the others ran exactly once.
    let log = std::fs::read_to_string(dir.path().join("mock.log")).unwrap();
    for key in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        let runs: Vec<&str> = log
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(&format!("work[{key}]")))
            .collect();
        assert!(
            (1..=2).contains(&runs.len()),
            "work[{key}] ran {} times:\n{log}",
            runs.len()
        );
        assert_eq!(
            s["task_results"][format!("work[{key}]")]["status"],
            "completed"
        );
    }
    let total = log.lines().count();
    assert!(
        total <= 8 + 2,
        "at most the two in flight ran again:\n{log}"
    );
}

/// Copies a folder's files (not `__pycache__`) recursively.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "__pycache__" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn the_ci_matrix_example_runs_every_shard_and_reports_them_in_the_matrix_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    std::fs::copy(
        root.join("ci_matrix.cond"),
        dir.path().join("ci_matrix.cond"),
    )
    .unwrap();
    copy_tree(&root.join("ci_matrix"), &dir.path().join("ci_matrix"));
    let r = run(dir.path(), &["run", "ci_matrix.cond"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("6 instances: 6 completed"),
        "{}",
        r.stdout
    );
    let s = state(dir.path(), &run_id(&r.stdout));
    let report = &s["task_results"]["write_report"]["output"];
    assert_eq!(report["shards"], 6);
    assert_eq!(report["tests"], 4 + 4 + 2 + 2 + 3 + 4);
    let md = std::fs::read_to_string(report["report"].as_str().unwrap()).unwrap();
    let keys: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| shard"))
        .map(|l| l.split('|').nth(1).unwrap().trim())
        .collect();
    assert_eq!(
        keys,
        ["words-0", "words-1", "unique-0", "unique-1", "slug-0", "words-42"]
    );
}

#[test]
fn max_parallel_bounds_the_instances_running_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("conc.log");
    write(
        dir.path(),
        "par.cond",
        &format!(
            r#"workflow par {{
                agent sh {{ kind = "shell", count = 6, command = ["sh", "-c", "echo start >> {log}; sleep 0.2; echo end >> {log}"] }}
                phase p {{ task t on sh {{ for_each = "{{{{ range(6) | list }}}}", max_parallel = 2 }} }}
            }}"#,
            log = log.display()
        ),
    );
    let r = run(dir.path(), &["run", "par.cond"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let text = std::fs::read_to_string(&log).unwrap();
    let (mut now, mut peak) = (0i32, 0i32);
    for line in text.lines() {
        now += if line == "start" { 1 } else { -1 };
        peak = peak.max(now);
    }
    assert_eq!(text.lines().filter(|l| *l == "start").count(), 6);
    assert_eq!(peak, 2, "{text}");
}
