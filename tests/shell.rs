//! shell agents on real child processes: template values arrive as whole literal arguments
//! (never re-parsed by a shell), `workdir` and `env`, the run's workspace as the default
//! working folder, JSON stdout merged into the output, exit codes, bounded output.

use std::path::Path;
use std::sync::Arc;

use conductor::exec::{run, RunOptions};
use conductor::model::{ErrorCode, RunState, TaskStatus};
use conductor::store::MemoryStore;
use conductor::{check_source, SourceMap};

async fn run_in(text: &str, workflow_dir: &Path, workspace: Option<&Path>) -> RunState {
    let mut map = SourceMap::new();
    let checked = check_source(&mut map, "t.cond", &workflow_dir.join("t.cond"), text);
    let wf = checked
        .workflow
        .unwrap_or_else(|| panic!("{}", conductor::diag::render(&map, &checked.diags, false)));
    let plan = conductor::plan::plan(&wf).unwrap();
    let mut options = RunOptions::new(Arc::new(MemoryStore::new()));
    options.workspace = workspace.map(Path::to_path_buf);
    run(Arc::new(wf), Arc::new(plan), options).await.unwrap()
}

#[tokio::test]
async fn hostile_template_values_arrive_as_one_literal_argument_each() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"workflow w {
        param evil = "; rm -rf / #"
        param sneaky = "$(touch pwned) `touch pwned2` * \"quoted\" 'single'"
        agent echo {
            kind = "shell"
            command = ["sh", "-c", "for a in \"$@\"; do printf '[%s]\\n' \"$a\"; done", "argv0",
                       "{{ params.evil }}", "{{ params.sneaky }}", "plain {{ params.evil }}"]
        }
        phase p { task show on echo }
    }"#;
    let state = run_in(text, dir.path(), Some(dir.path())).await;
    let t = state.task("show").unwrap();
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    assert_eq!(
        t.output["stdout"],
        "[; rm -rf / #]\n[$(touch pwned) `touch pwned2` * \"quoted\" 'single']\n[plain ; rm -rf / #]\n"
    );
    assert!(!dir.path().join("pwned").exists());
    assert!(!dir.path().join("pwned2").exists());
}

#[tokio::test]
async fn a_command_element_that_is_one_expression_expands_a_list_into_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"workflow w {
        agent lister {
            kind = "shell"
            command = ["sh", "-c", "printf '{\"files\": [\"a b.py\", \"-rf; rm *\", \"c.py\"], \"none\": [], \"one\": \"x y\"}'"]
        }
        agent many {
            kind = "shell"
            command = ["sh", "-c", "for a in \"$@\"; do printf '[%s]' \"$a\"; done", "argv0", "{{ tasks.list.output.files | option }}", "end"]
        }
        agent empty {
            kind = "shell"
            command = ["sh", "-c", "for a in \"$@\"; do printf '[%s]' \"$a\"; done", "argv0", "{{ tasks.list.output.none }}", "end"]
        }
        agent single {
            kind = "shell"
            command = ["sh", "-c", "for a in \"$@\"; do printf '[%s]' \"$a\"; done", "argv0", "{{ tasks.list.output.one }}", "end"]
        }
        agent mixed {
            kind = "shell"
            command = ["sh", "-c", "printf '[%s]' \"$@\"", "argv0", "files={{ tasks.list.output.files }}"]
        }
        phase p {
            task list on lister
            task many on many after list
            task empty on empty after list
            task single on single after list
            task text on mixed after list
        }
    }"#;
    let state = run_in(text, dir.path(), Some(dir.path())).await;
    let stdout = |t: &str| {
        let r = state.task(t).unwrap();
        assert_eq!(r.status, TaskStatus::Completed, "{t}: {:?}", r.error);
        r.output["stdout"].as_str().unwrap().to_string()
    };
    // `{{ … }}` alone in a command element gives one argument per item of a list — literal,
    // never through a shell. (`| option`: `sh -c` reads them as operands, so an item starting
    // with `-` is meant.)
    assert_eq!(stdout("many"), "[a b.py][-rf; rm *][c.py][end]");
    assert_eq!(
        stdout("empty"),
        "[end]",
        "an empty list is no argument at all"
    );
    assert_eq!(
        stdout("single"),
        "[x y][end]",
        "a string stays one argument"
    );
    // Text around the expression: one argument, the list printed.
    assert!(stdout("text").starts_with("[files=["), "{}", stdout("text"));
}

#[tokio::test]
async fn workdir_env_workspace_and_json_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let wf_dir = dir.path().join("flows");
    let sub = wf_dir.join("sub");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let text = r#"workflow w {
        param who = "tester"
        agent here { kind = "shell", command = ["pwd"] }
        agent there { kind = "shell", command = ["pwd"], workdir = "sub" }
        agent json {
            kind = "shell"
            command = ["sh", "-c", "printf '{\"greeting\": \"hi %s\", \"n\": 3}' \"$WHO\""]
            env = { WHO = "{{ params.who }}" }
        }
        agent who {
            kind = "shell"
            command = ["sh", "-c", "echo $CONDUCTOR_RUN $CONDUCTOR_TASK $CONDUCTOR_ATTEMPT $CONDUCTOR_IDEMPOTENCY_KEY"]
        }
        phase p { task a on here  task b on there  task c on json  task d on who }
    }"#;
    let state = run_in(text, &wf_dir, Some(&work)).await;
    let run = &state.workflow_id;
    assert_eq!(
        state.task("d").unwrap().output["stdout"]
            .as_str()
            .unwrap()
            .trim(),
        format!("{run} d 1 {run}/d/1"),
        "the program is told who its attempt is"
    );
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap();
    let pwd = |task: &str| {
        let out = state.task(task).unwrap().output["stdout"]
            .as_str()
            .unwrap()
            .trim()
            .to_string();
        canon(Path::new(&out))
    };
    assert_eq!(
        pwd("a"),
        canon(&work),
        "the workspace is the default folder"
    );
    assert_eq!(
        pwd("b"),
        canon(&sub),
        "a relative workdir is the workflow's folder"
    );
    let c = &state.task("c").unwrap().output;
    assert_eq!(c["greeting"], "hi tester");
    assert_eq!(c["n"], 3);
    assert_eq!(c["exit_code"], 0);
}

#[tokio::test]
async fn a_nonzero_exit_fails_with_its_last_stderr_line_and_output_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"workflow w {
        on_escalation = "skip"
        agent bad { kind = "shell", command = ["sh", "-c", "echo starting; echo 'assertion failed: 2 != 3' >&2; exit 7"], retry = 0 }
        agent loud { kind = "shell", command = ["sh", "-c", "yes 0123456789 | head -c 3000000; echo THE-END"] }
        agent missing { kind = "shell", command = ["no-such-program-xyz"] }
        phase p { task fails on bad  task noisy on loud  task absent on missing  gate { true } }
    }"#;
    let state = run_in(text, dir.path(), None).await;
    let e = state.task("fails").unwrap().error.clone().unwrap();
    assert_eq!(e.code, ErrorCode::ExitCode);
    assert!(
        e.message.contains("status 7") && e.message.contains("assertion failed: 2 != 3"),
        "{}",
        e.message
    );
    let noisy = state.task("noisy").unwrap().output["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(noisy.len() <= (1 << 20) + 64, "kept {} bytes", noisy.len());
    assert!(noisy.starts_with("[… ") && noisy.trim_end().ends_with("THE-END"));
    let absent = state.task("absent").unwrap().error.clone().unwrap();
    assert!(
        absent.message.contains("no-such-program-xyz"),
        "{}",
        absent.message
    );
}
