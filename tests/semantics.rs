//! The semantics a CI user relies on, through the binary: the seed's monitoring loop as drawn,
//! skips by choice that leave the gate passing, an approval that waits and continues, and
//! fixing a template typo then retrying the failed task.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::cli::{conductor, run, run_id, state, write, Ran};

fn run_in(dir: &Path, args: &[&str]) -> Ran {
    let r = run(dir, args);
    assert!(
        matches!(r.code, Some(0..=3)),
        "{args:?}: {}\n{}",
        r.stdout,
        r.stderr
    );
    r
}

#[test]
fn monitoring_that_finds_the_service_down_goes_back_to_development() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: the probe fails every time.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write(
        dir.path(),
        "loop.cond",
        &format!(
            r#"workflow sdlc {{
                max_feedback_loops = 2
                agent coder {{ kind = "mock", output = {{ files = [] }} }}
                agent probe {{ kind = "http", url = "http://127.0.0.1:{port}/health", retry = 0, timeout = 5s }}
                phase development {{ task code on coder }}
                phase monitoring {{ task observe on probe }}
                feedback to development {{
                    if tasks.observe.status != "completed" {{ critical("service down") }} else {{ ok() }}
                }}
            }}"#
        ),
    );
    let r = run(dir.path(), &["run", "loop.cond"]);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    let id = run_id(&r.stdout);
    let s = state(dir.path(), &id);
    // Looped as drawn — before any gate — until the limit, then the gate failed the run.
    assert_eq!(s["feedback_loop_count"], 2, "{}", r.stdout);
    assert_eq!(s["status"], "failed");
    let events = run_in(dir.path(), &["events", &id]).stdout;
    let loops = events
        .lines()
        .filter(|l| l.contains("\"loop_started\""))
        .count();
    assert_eq!(loops, 2);
    let code_runs = events
        .lines()
        .filter(|l| l.contains("\"task_dispatched\"") && l.contains("\"code\""))
        .count();
    assert_eq!(code_runs, 3, "development ran once per pass");
}

#[test]
fn an_optional_step_skipped_by_when_or_by_the_operator_leaves_the_gate_passing() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "opt.cond",
        r#"workflow opt {
            on_escalation = "ask"
            param publish = false
            agent m { kind = "mock" }
            agent broken { kind = "mock", fail_first = 1, error = "fatal" }
            phase build {
                task compile on m
                task upload on m after compile { when { params.publish } }
                task docs on broken
            }
        }"#,
    );
    // No terminal: the fatal failure of `docs` waits for a decision.
    let r = run(dir.path(), &["run", "opt.cond"]);
    assert_eq!(r.code, Some(3), "{}", r.stdout);
    assert!(
        r.stdout.contains("--decide docs=retry|skip|abort"),
        "{}",
        r.stdout
    );
    let id = run_id(&r.stdout);
    let r = run(dir.path(), &["resume", &id, "--decide", "docs=skip"]);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    let s = state(dir.path(), &id);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["task_results"]["upload"]["status"], "skipped");
    assert_eq!(s["task_results"]["docs"]["status"], "skipped");
    assert!(
        r.stdout.contains("gate build passed"),
        "two skips by choice do not count against the gate: {}",
        r.stdout
    );
}

#[test]
fn an_approval_task_waits_and_continues_on_approve() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "release.cond",
        r#"workflow release {
            agent build { kind = "mock", output = { version = "2.1.0" } }
            agent reviewer { kind = "approval" }
            agent deployer { kind = "shell", command = ["echo", "deploying {{ tasks.build.output.version }} ({{ tasks.sign_off.output.reason }})"] }
            phase ship {
                task build on build
                task sign_off on reviewer after build { prompt = "Release {{ tasks.build.output.version }}?" }
                task deploy on deployer after sign_off
            }
        }"#,
    );
    let r = run(dir.path(), &["run", "release.cond"]);
    assert_eq!(r.code, Some(3), "{}", r.stdout);
    assert!(r.stdout.contains("sign_off"), "{}", r.stdout);
    assert!(r.stdout.contains("Release 2.1.0?"), "{}", r.stdout);
    assert!(
        r.stdout.contains("--decide sign_off=approve|reject"),
        "{}",
        r.stdout
    );
    let id = run_id(&r.stdout);
    let show = run_in(dir.path(), &["show", &id]).stdout;
    assert!(
        show.contains("waiting for approval: Release 2.1.0?"),
        "{show}"
    );
    let runs = run_in(dir.path(), &["runs"]).stdout;
    assert!(runs.contains("waiting"), "{runs}");

    let r = run(
        dir.path(),
        &[
            "resume",
            &id,
            "--decide",
            "sign_off=approve",
            "--reason",
            "changelog reviewed",
        ],
    );
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let s = state(dir.path(), &id);
    let sign_off = &s["task_results"]["sign_off"]["output"];
    assert_eq!(sign_off["decision"], "approve");
    assert_eq!(sign_off["reason"], "changelog reviewed");
    assert!(sign_off["by"]
        .as_str()
        .unwrap()
        .contains("conductor resume"));
    assert_eq!(
        s["task_results"]["deploy"]["output"]["stdout"],
        "deploying 2.1.0 (changelog reviewed)\n"
    );
    let why = run_in(dir.path(), &["why", &id, "sign_off"]).stdout;
    assert!(why.contains("waits for approval (Release 2.1.0?)"), "{why}");
    assert!(why.contains("approve (by"), "{why}");
}

#[test]
fn fixing_a_template_typo_then_retrying_the_failed_task_completes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = r#"workflow fix {
        agent gen { kind = "shell", command = ["sh", "-c", "printf '{\"message\": \"hi\"}'"] }
        agent say { kind = "shell", command = ["echo", "{{ tasks.gen.output.mesage | upper }}"] }
        agent report { kind = "shell", command = ["echo", "report: {{ run.status }}"] }
        phase build { task gen on gen  task greet on say after gen  task after_greet on say after greet }
        phase wrap_up { always = true  task summary on report }
    }"#;
    write(dir.path(), "fix.cond", file);
    let r = run(dir.path(), &["run", "fix.cond"]);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    // The error names the undefined value, not the filter it was piped into.
    assert!(
        r.stdout
            .contains("`tasks.gen.output.mesage` is not defined"),
        "{}",
        r.stdout
    );
    let id = run_id(&r.stdout);

    // A changed shape is refused, with the differences.
    write(
        dir.path(),
        "fix.cond",
        &file.replace("task after_greet on say after greet", ""),
    );
    let refused = run(dir.path(), &["resume", &id, "--decide", "greet=retry"]);
    assert_eq!(refused.code, Some(2));
    assert!(
        refused.stderr.contains("no longer has the tasks")
            && refused.stderr.contains("task `after_greet` was removed"),
        "{}",
        refused.stderr
    );

    // The typo fixed, same shape: the run goes on with the new definition.
    write(dir.path(), "fix.cond", &file.replace("mesage", "message"));
    let r = run(dir.path(), &["resume", &id, "--decide", "greet=retry"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("agent `say`: command changed"),
        "{}",
        r.stdout
    );
    let s = state(dir.path(), &id);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["task_results"]["greet"]["output"]["stdout"], "HI\n");
    assert_eq!(s["task_results"]["after_greet"]["status"], "completed");
    // The always phase ran again at the new end, and saw it.
    assert_eq!(
        s["task_results"]["summary"]["output"]["stdout"],
        "report: completed\n"
    );
    let events = run_in(dir.path(), &["events", &id]).stdout;
    assert!(events.contains("\"workflow_amended\""), "{events}");
}

/// Starts `conductor run FILE` and sends it SIGINT `times` times once the run has begun.
fn interrupted(dir: &Path, file: &str, times: usize) -> Ran {
    let child = conductor(dir)
        .args(["run", file])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    // The long task is running once its workspace holds the marker it writes first.
    let marker = dir.join("started");
    for _ in 0..200 {
        if marker.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for _ in 0..times {
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let out = child.wait_with_output().unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_cancel_runs_the_always_phases_and_a_second_one_skips_them() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    write(
        dir.path(),
        "c.cond",
        &format!(
            r#"workflow c {{
                agent sh {{ kind = "shell", command = ["sh", "-c", "touch {marker}; sleep 30"] }}
                agent rep {{ kind = "shell", command = ["sh", "-c", "sleep 1; echo cleanup {{{{ run.status }}}}"] }}
                phase work {{ task long on sh }}
                phase cleanup {{
                    always = true
                    task report on rep {{ retry = 0 }}
                }}
            }}"#,
            marker = marker.display()
        ),
    );
    let once = interrupted(dir.path(), "c.cond", 1);
    assert_eq!(once.code, Some(1), "{}\n{}", once.stdout, once.stderr);
    assert!(
        once.stdout
            .contains("the `always` phases run now (stop again to skip them)"),
        "{}",
        once.stdout
    );
    let s = state(dir.path(), &run_id(&once.stdout));
    assert_eq!(s["status"], "cancelled");
    assert_eq!(s["task_results"]["long"]["status"], "cancelled");
    assert_eq!(s["task_results"]["report"]["status"], "completed");
    assert_eq!(
        s["task_results"]["report"]["output"]["stdout"],
        "cleanup cancelled\n"
    );

    std::fs::remove_file(&marker).unwrap();
    let twice = interrupted(dir.path(), "c.cond", 2);
    assert_eq!(twice.code, Some(1), "{}\n{}", twice.stdout, twice.stderr);
    let s = state(dir.path(), &run_id(&twice.stdout));
    assert_eq!(s["status"], "cancelled");
    assert_ne!(s["task_results"]["report"]["status"], "completed");
}
