//! Hostile input, output, files and signals, each as a user meets it through the `conductor`
//! binary: every reproduction of issue 15 ends in a clear error or a correct run within its
//! timeouts — never a panic (exit 101), an abort (134), a hang, or an unreadable store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::cli::wait_at_most;

/// The binary under test. `CONDUCTOR_TEST_BIN` points these tests at another build, to show
/// that each fails on a build without its fix.
fn binary() -> PathBuf {
    std::env::var_os("CONDUCTOR_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_conductor")))
}

fn conductor(dir: &Path) -> Command {
    let mut c = Command::new(binary());
    c.current_dir(dir)
        .env("CONDUCTOR_STORE", dir.join("store.db"))
        .env_remove("CONDUCTOR_CONFIG")
        .stdin(Stdio::null());
    c
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `conductor run FILE` in `dir`, interrupted (SIGINT) after `after`: it must exit 1 within
/// 8 s, CANCELLED.
fn interrupted_run(dir: &Path, file: &Path, after: Duration) {
    let child = conductor(dir)
        .arg("run")
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = wait_at_most(child, Duration::from_secs(8), "the interrupted run");
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(text(&out.stdout).contains("CANCELLED"), "{}", both(&out));
}

/// Runs a command to its end within `limit`.
fn finish(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_at_most(child, limit, "the command")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Neither a panic (101) nor an abort or a signal: an exit code Conductor chose.
fn assert_clean_exit(out: &Output) {
    let code = out.status.code();
    assert!(
        matches!(code, Some(0..=3)),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn both(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

fn mock_output(template: &str, task: &str) -> String {
    format!(
        "workflow w {{\n    agent m {{ kind = \"mock\", output = {{ x = \"{template}\" }} }}\n    \
         phase p {{ task t on m {task} }}\n}}\n"
    )
}

#[test]
fn templates_that_loop_or_grow_without_bound_fail_their_task_with_the_limit_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "instructions",
        ),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
            "memory",
        ),
        (
            "{% macro m(n) %}{{ m(n+1) }}{% endmacro %}{{ m(0) }}",
            "recursion limit",
        ),
        (
            "{% for i in range(100000) %}{{ 'x' * 1000000 }}{% endfor %}",
            "larger than 8 MiB",
        ),
    ];
    for (template, expected) in cases {
        let file = write(dir.path(), "t.cond", &mock_output(template, ""));
        let mut cmd = conductor(dir.path());
        cmd.arg("run").arg(&file).args(["--store", "memory"]);
        let out = finish(cmd, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(1), "{template}: {}", both(&out));
        assert!(both(&out).contains(expected), "{template}: {}", both(&out));
    }
}

#[test]
fn a_slow_template_is_stopped_by_its_tasks_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "t.cond",
        &mock_output(
            "{% for i in range(100000) %}{{ ('x' * 50000000)|length }}{% endfor %}",
            "{ timeout = 1s }",
        ),
    );
    let mut cmd = conductor(dir.path());
    cmd.arg("run").arg(&file).args(["--store", "memory"]);
    let out = finish(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        both(&out).contains("rendering took longer than 1s"),
        "{}",
        both(&out)
    );
}

#[test]
fn ctrl_c_stops_a_template_while_it_renders() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "t.cond",
        &mock_output(
            "{% for i in range(100000) %}{{ ('x' * 50000000)|length }}{% endfor %}",
            "{ timeout = 60s }",
        ),
    );
    interrupted_run(dir.path(), &file, Duration::from_millis(1500));
}

#[test]
fn deep_template_expressions_are_refused_by_check_graph_and_run_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    for chain in [
        format!("{{{{ {}1 }}}}", "-".repeat(5_000)),
        format!("{{{{ {}1 }}}}", "not ".repeat(50_000)),
        format!("{{{{ params.p{} }}}}", "|lower".repeat(50_000)),
        format!("{{{{ params.p{} }}}}", ".a".repeat(50_000)),
        format!("{{{{ 1{} }}}}", "+1".repeat(50_000)),
    ] {
        let source = format!(
            "workflow w {{\n    param p = \"a\"\n    agent m {{ kind = \"mock\", output = {{ x = \"{chain}\" }} }}\n    phase p {{ task t on m }}\n}}\n"
        );
        let file = write(dir.path(), "deep.cond", &source);
        for command in ["check", "graph", "run"] {
            let mut cmd = conductor(dir.path());
            cmd.arg(command).arg(&file).args(["--store", "memory"]);
            let out = finish(cmd, Duration::from_secs(60));
            assert_clean_exit(&out);
            let code = out.status.code();
            assert!(matches!(code, Some(1 | 2)), "{command}: {}", both(&out));
            assert!(
                text(&out.stderr).contains("nested more than 64 levels deep"),
                "{command}: {}",
                both(&out)
            );
            assert!(text(&out.stderr).contains("deep.cond:3:"), "{}", both(&out));
        }
    }
}

#[test]
fn a_template_value_starting_with_a_dash_does_not_become_an_option_of_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let workflow = |command: &str| {
        format!(
            "workflow w {{\n    agent gen {{ kind = \"mock\", output = {{ script = \"-cimport sys; open(sys.argv[-1] if len(sys.argv) > 1 else 'pwned', 'w')\" }} }}\n    \
             agent py {{ kind = \"shell\", command = {command} }}\n    \
             phase p {{\n        task gen on gen\n        task use on py after gen\n    }}\n}}\n"
        )
    };
    // Refused: the value would be read as `python3 -c CODE`.
    let file = write(
        dir.path(),
        "opt.cond",
        &workflow(r#"["python3", "{{ tasks.gen.output.script }}"]"#),
    );
    let mut cmd = conductor(dir.path());
    cmd.arg("run").arg(&file);
    let out = finish(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        both(&out).contains("which the program would read as an option"),
        "{}",
        both(&out)
    );
    let pwned = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .any(|run| run.unwrap().path().join("work/pwned").exists());
    assert!(!pwned, "the value ran as code");

    // After a `--` the author wrote, or marked `| option`, it is the author's intent.
    for command in [
        r#"["python3", "-c", "import sys; print(sys.argv[1])", "--", "{{ tasks.gen.output.script }}"]"#,
        r#"["python3", "{{ tasks.gen.output.script | option }}", "ok"]"#,
        r#"["python3", "-c", "import sys; print(sys.argv[1])", "--code={{ tasks.gen.output.script }}"]"#,
    ] {
        let file = write(dir.path(), "ok.cond", &workflow(command));
        let mut cmd = conductor(dir.path());
        cmd.arg("run").arg(&file).args(["--store", "memory"]);
        let out = finish(cmd, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(0), "{command}: {}", both(&out));
    }
}

/// `[[[…1…]]]` nested `depth` levels.
fn deep_json(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// Serves one HTTP response with `body` on 127.0.0.1, for one request; returns the URL.
fn serve_once(body: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        if let Ok((mut sock, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf);
            let _ = write!(
                sock,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn values_nested_too_deep_are_refused_before_they_are_stored_and_the_store_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "deep.rhai",
        "fn deep(ctx) { let a = []; for i in 0..6000 { a = [a]; } #{ x: a } }",
    );
    let url = serve_once(deep_json(100));
    let file = write(
        dir.path(),
        "deep.cond",
        &format!(
            r#"workflow w {{
    use "deep.rhai"
    agent sh {{ kind = "shell", command = ["python3", "-c", "print('{}')"] }}
    agent web {{ kind = "http", url = "{url}" }}
    agent script {{ kind = "script", function = "deep" }}
    agent ok {{ kind = "mock" }}
    on_escalation = "skip"
    phase p {{
        task stdout on sh
        task body on web
        task script on script
        task fine on ok
    }}
}}
"#,
            deep_json(126)
        ),
    );
    let mut cmd = conductor(dir.path());
    cmd.arg("run").arg(&file);
    let out = finish(cmd, Duration::from_secs(60));
    assert_clean_exit(&out);
    let all = both(&out);
    for source in [
        "the JSON its program printed",
        "the JSON body the service answered",
        "script function `deep` returned a value nested deeper than 64 levels",
    ] {
        assert!(all.contains(source), "{source}: {all}");
    }
    // Every reader works on the store afterwards.
    let mut runs = conductor(dir.path());
    runs.args(["runs", "--json"]);
    let out = finish(runs, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let row: serde_json::Value =
        serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    let id = row["id"].as_str().unwrap().to_string();
    for args in [
        vec!["show", &id],
        vec!["events", &id],
        vec!["why", &id, "stdout"],
    ] {
        let mut cmd = conductor(dir.path());
        cmd.args(&args);
        let out = finish(cmd, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", both(&out));
    }

    // A `--param` and a literal of the workflow are refused before the run starts.
    let simple = write(
        dir.path(),
        "simple.cond",
        "workflow s {\n    param v = 1\n    agent m { kind = \"mock\" }\n    phase p { task t on m }\n}\n",
    );
    let mut cmd = conductor(dir.path());
    cmd.arg("run")
        .arg(&simple)
        .arg("--param")
        .arg(format!("v={}", deep_json(100)));
    let out = finish(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        text(&out.stderr).contains("nests deeper than 64 levels"),
        "{}",
        both(&out)
    );
    let literal = write(
        dir.path(),
        "literal.cond",
        &format!(
            "workflow s {{\n    agent m {{ kind = \"mock\", output = {{ x = {} }} }}\n    phase p {{ task t on m }}\n}}\n",
            deep_json(100)
        ),
    );
    let mut cmd = conductor(dir.path());
    cmd.arg("check").arg(&literal);
    let out = finish(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        text(&out.stderr).contains("nests more than 64 levels deep"),
        "{}",
        both(&out)
    );
}

/// The id of the only run in `dir`'s store.
fn only_run(dir: &Path) -> String {
    let mut runs = conductor(dir);
    runs.args(["runs", "--json"]);
    let out = finish(runs, Duration::from_secs(30));
    let line = text(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let row: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("{}", both(&out)));
    row["id"].as_str().unwrap().to_string()
}

/// A workflow whose first task runs `prepare` in the workspace, and whose second writes
/// `files` (a `.cond` list of `{ path, content }`).
fn plant_then_write(prepare: &str, files: &str) -> String {
    format!(
        r#"workflow w {{
    agent sh {{ kind = "shell", command = {prepare} }}
    agent writer {{ kind = "mock", output = {{ files = {files} }} }}
    phase plant {{ task plant on sh }}
    phase write {{ task write on writer }}
}}
"#
    )
}

#[test]
fn a_fifo_left_in_the_workspace_is_replaced_not_written_into() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "fifo.cond",
        &plant_then_write(
            r#"["mkfifo", "app.py"]"#,
            r#"[{ path = "app.py", content = "print(1)" }]"#,
        ),
    );
    let mut cmd = conductor(dir.path());
    cmd.arg("run").arg(&file);
    let out = finish(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let id = only_run(dir.path());
    let written = dir
        .path()
        .join("runs")
        .join(&id)
        .join("work")
        .join("app.py");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "print(1)");

    // Exporting into a folder that holds a FIFO of the same name does not block either.
    let export = dir.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let made = Command::new("mkfifo")
        .arg(export.join("app.py"))
        .status()
        .unwrap();
    assert!(made.success());
    let mut cmd = conductor(dir.path());
    cmd.args(["artifacts", &id, "--out"]).arg(&export);
    let out = finish(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert_eq!(
        std::fs::read_to_string(export.join("app.py")).unwrap(),
        "print(1)"
    );
}

#[test]
fn a_hard_link_left_in_the_workspace_does_not_carry_a_write_outside() {
    let dir = tempfile::tempdir().unwrap();
    let outside = write(dir.path(), "outside.txt", "precious");
    let file = write(
        dir.path(),
        "link.cond",
        &plant_then_write(
            &format!(r#"["ln", "{}", "victim.txt"]"#, outside.display()),
            r#"[{ path = "victim.txt", content = "overwritten" }]"#,
        ),
    );
    let mut cmd = conductor(dir.path());
    cmd.arg("run").arg(&file);
    let out = finish(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    let id = only_run(dir.path());
    let work = dir.path().join("runs").join(&id).join("work");
    assert_eq!(
        std::fs::read_to_string(work.join("victim.txt")).unwrap(),
        "overwritten"
    );

    // `artifacts --out` into a folder where the file is a hard link to another file.
    let export = dir.path().join("export");
    std::fs::create_dir(&export).unwrap();
    std::fs::hard_link(&outside, export.join("victim.txt")).unwrap();
    let mut cmd = conductor(dir.path());
    cmd.args(["artifacts", &id, "--out"]).arg(&export);
    let out = finish(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    assert_eq!(
        std::fs::read_to_string(export.join("victim.txt")).unwrap(),
        "overwritten"
    );
}

#[test]
fn an_artifact_path_that_cannot_be_written_fails_at_once_without_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let long = "n".repeat(300);
    for (files, cause) in [
        (
            r#"[{ path = "a", content = "1" }, { path = "a/b", content = "2" }]"#.to_string(),
            "`a` is a file, not a folder",
        ),
        (
            format!(r#"[{{ path = "{long}", content = "1" }}]"#),
            "the name is too long",
        ),
    ] {
        let file = write(
            dir.path(),
            "bad.cond",
            &format!(
                "workflow w {{\n    agent m {{ kind = \"mock\", retry = 3, backoff = fixed(0s), \
                 output = {{ files = {files} }} }}\n    on_escalation = \"abort\"\n    \
                 phase p {{ task t on m }}\n}}\n"
            ),
        );
        let mut cmd = conductor(dir.path());
        cmd.arg("run").arg(&file).args(["--store", "memory"]);
        let out = finish(cmd, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(1), "{}", both(&out));
        let all = both(&out);
        assert!(all.contains(cause), "{cause}: {all}");
        assert!(all.contains("INVALID_OUTPUT"), "{all}");
        assert!(!all.contains("TRANSIENT"), "retried as transient: {all}");
    }
}

#[test]
fn fmt_that_cannot_write_the_whole_file_leaves_the_original_whole() {
    let dir = tempfile::tempdir().unwrap();
    // Badly laid out, so that its formatted text differs and is larger than the limit below.
    let mut original = String::from("workflow w {\n");
    for i in 0..400 {
        original.push_str(&format!("agent a{i} {{ kind=\"mock\" }}\n"));
    }
    original.push_str("phase p { task t on a0 }\n}\n");
    let file = write(dir.path(), "big.cond", &original);
    // A file size limit of 8 KiB stands for a full disk: writes past it fail with EFBIG (the
    // signal it would raise is ignored, as a disk-full write raises none).
    let out = Command::new("bash")
        .current_dir(dir.path())
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 8; exec \"$0\" fmt big.cond")
        .arg(binary())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(text(&out.stderr).contains("cannot write"), "{}", both(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "a temporary file was left: {left:?}");

    // Without the limit it is formatted, and keeps its permissions.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = conductor(dir.path());
    cmd.args(["fmt", "big.cond"]);
    let out = finish(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_ne!(std::fs::read_to_string(&file).unwrap(), original);
}

/// `conductor` as a user without privileges: root reads every process's environment, so a
/// test run as root drops to `nobody` (with `setpriv`) to see what an ordinary user would.
fn conductor_unprivileged(dir: &Path) -> Command {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let mut c = if root {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(binary());
        c
    } else {
        Command::new(binary())
    };
    c.current_dir(dir)
        .env("CONDUCTOR_STORE", dir.join("store.db"))
        .env_remove("CONDUCTOR_CONFIG")
        .stdin(Stdio::null());
    c
}

#[test]
fn a_program_cannot_read_a_providers_key_from_conductors_environment() {
    const KEY: &str = "sk-test-hardening-6f1c2a9e";
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "conductor.toml",
        "[providers.openai]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         model = \"m\"\napi_key_env = \"HARDENING_KEY\"\n",
    );
    let file = write(
        dir.path(),
        "peek.cond",
        r#"workflow w {
    agent peek { kind = "shell", command = ["sh", "-c", "{ tr '\\000' '\\n' < /proc/$PPID/environ; } > seen.txt 2>&1; cat seen.txt; echo done"] }
    agent says { kind = "shell", command = ["sh", "-c", "k=sk-test-hard; echo the key is ${k}ening-6f1c2a9e"] }
    phase p { task peek on peek  task says on says }
}
"#,
    );
    let mut cmd = conductor_unprivileged(dir.path());
    cmd.arg("run").arg(&file).env("HARDENING_KEY", KEY);
    let out = finish(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert!(!both(&out).contains(KEY), "{}", both(&out));
    let id = only_run(dir.path());
    let seen = dir
        .path()
        .join("runs")
        .join(&id)
        .join("work")
        .join("seen.txt");
    let seen = std::fs::read_to_string(seen).unwrap();
    assert!(!seen.contains(KEY), "the program read the key: {seen}");
    // What a program prints, the key included, is stored redacted.
    let store = std::fs::read(dir.path().join("store.db")).unwrap();
    let store = String::from_utf8_lossy(&store);
    assert!(!store.contains(KEY), "the key is in the store");
    let mut show = conductor(dir.path());
    show.args(["logs", &id, "says"]);
    let out = finish(show, Duration::from_secs(30));
    assert!(
        text(&out.stdout).contains("[key in HARDENING_KEY]"),
        "{}",
        both(&out)
    );
}

/// Whether a process is gone (or a zombie nobody reaped yet).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn sigterm_and_sighup_stop_a_run_like_ctrl_c_and_kill_its_programs() {
    use nix::sys::signal::Signal;
    for signal in [Signal::SIGTERM, Signal::SIGHUP] {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "slow.cond",
            r#"workflow w {
    agent slow { kind = "shell", command = ["sh", "-c", "echo $$ > pid.txt; exec sleep 60"] }
    phase p { task wait on slow }
}
"#,
        );
        let child = conductor(dir.path())
            .arg("run")
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Until the program runs.
        let start = Instant::now();
        let pid_file = loop {
            let found = std::fs::read_dir(dir.path().join("runs"))
                .ok()
                .and_then(|mut d| d.next())
                .and_then(Result::ok)
                .map(|e| e.path().join("work").join("pid.txt"))
                .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.ends_with('\n')));
            if let Some(p) = found {
                break p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the program never started"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let program: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let out = wait_at_most(child, Duration::from_secs(10), "the signalled run");
        assert_eq!(out.status.code(), Some(1), "{signal}: {}", both(&out));
        assert!(
            text(&out.stdout).contains("CANCELLED"),
            "{signal}: {}",
            both(&out)
        );
        let start = Instant::now();
        while !gone(program) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{signal}: the program survived"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut runs = conductor(dir.path());
        runs.args(["runs", "--json"]);
        let listed = text(&finish(runs, Duration::from_secs(30)).stdout);
        assert!(listed.contains("\"cancelled\""), "{signal}: {listed}");
    }
}

#[test]
fn gc_refuses_a_bare_number_and_runs_refuses_an_unknown_status() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "w.cond",
        "workflow w {\n    agent m { kind = \"mock\" }\n    phase p { task t on m }\n}\n",
    );
    let mut run = conductor(dir.path());
    run.arg("run").arg(&file);
    assert_eq!(finish(run, Duration::from_secs(30)).status.code(), Some(0));
    let id = only_run(dir.path());
    for bare in ["0", "1", " 0"] {
        let mut gc = conductor(dir.path());
        gc.args(["gc", "--older-than", bare]);
        let out = finish(gc, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{bare:?}: {}", both(&out));
        assert!(
            text(&out.stderr).contains("time unit needed"),
            "{}",
            both(&out)
        );
    }
    assert_eq!(only_run(dir.path()), id, "gc deleted the run");
    let mut runs = conductor(dir.path());
    runs.args(["runs", "--status", "bogus"]);
    let out = finish(runs, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(text(&out.stderr).contains("use one of"), "{}", both(&out));
}

#[test]
fn a_full_stdout_or_stderr_is_an_exit_code_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "w.cond",
        "workflow w {\n    agent m { kind = \"mock\" }\n    phase p { task t on m }\n}\n",
    );
    let mut run = conductor(dir.path());
    run.arg("run").arg(&file);
    assert_eq!(finish(run, Duration::from_secs(30)).status.code(), Some(0));
    let id = only_run(dir.path());
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let cases: [(&[&str], Option<i32>); 6] = [
        (&["fmt", "-"], Some(2)),
        (&["check", "--explain", "w.cond"], None),
        (&["show", &id], None),
        (&["logs", &id, "t"], None),
        (&["logs", &id, "nosuch"], None),
        (&["run", "w.cond", "--store", "memory"], None),
    ];
    for (args, expected) in cases {
        let out = conductor(dir.path())
            .args(args)
            .stdin(std::fs::File::open(&file).unwrap())
            .stdout(full())
            .stderr(full())
            .status()
            .unwrap();
        assert!(matches!(out.code(), Some(0..=3)), "{args:?}: {out:?}");
        if let Some(code) = expected {
            assert_eq!(out.code(), Some(code), "{args:?}");
        }
    }
}

#[test]
fn endless_files_and_fifos_are_refused_not_read_forever() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let fifo = fifo.display().to_string();
    let ok = write(
        dir.path(),
        "ok.cond",
        "workflow w {\n    agent m { kind = \"mock\" }\n    phase p { task t on m }\n}\n",
    );
    let ok = ok.display().to_string();
    for special in ["/dev/zero", fifo.as_str()] {
        let uses = write(
            dir.path(),
            "uses.cond",
            &format!(
                "workflow w {{\n    use \"{special}\"\n    agent m {{ kind = \"mock\" }}\n    \
                 phase p {{ task t on m }}\n}}\n"
            ),
        );
        let uses = uses.display().to_string();
        let param_file = format!("p={special}");
        let cases: [Vec<&str>; 4] = [
            vec!["check", special],
            vec!["check", &uses],
            vec!["--config", special, "run", &ok, "--store", "memory"],
            vec!["run", &ok, "--store", "memory", "--param-file", &param_file],
        ];
        for args in cases {
            let mut cmd = conductor(dir.path());
            cmd.args(&args);
            let out = finish(cmd, Duration::from_secs(20));
            assert_clean_exit(&out);
            assert_ne!(out.status.code(), Some(0), "{args:?}: {}", both(&out));
            assert!(
                text(&out.stderr).contains("not a regular file"),
                "{args:?}: {}",
                both(&out)
            );
        }
    }
    // An endless standard input.
    let mut cmd = conductor(dir.path());
    cmd.args(["fmt", "-"])
        .stdin(std::fs::File::open("/dev/zero").unwrap());
    let out = finish(cmd, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        text(&out.stderr).contains("larger than 64 MiB"),
        "{}",
        both(&out)
    );
}

#[test]
fn running_out_of_file_descriptors_is_back_pressure_not_a_failed_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut tasks = String::new();
    for i in 0..40 {
        tasks.push_str(&format!("        task t{i} on sh\n"));
    }
    write(
        dir.path(),
        "many.cond",
        &format!(
            "workflow w {{\n    agent sh {{ kind = \"shell\", count = 40, command = [\"sleep\", \
             \"0.3\"], retry = 100, backoff = fixed(50ms) }}\n    on_escalation = \"abort\"\n    \
             phase p {{\n{tasks}    }}\n}}\n"
        ),
    );
    // Few descriptors: 40 programs at once, three pipes each, cannot all start.
    let out = Command::new("bash")
        .current_dir(dir.path())
        .arg("-c")
        .arg("ulimit -n 64; exec \"$0\" run many.cond --store memory")
        .arg(binary())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert!(text(&out.stdout).contains("COMPLETED"), "{}", both(&out));
    // It did run into the limit, and waited it out.
    assert!(
        text(&out.stdout).contains("Too many open files"),
        "{}",
        both(&out)
    );
}

#[test]
fn policy_test_does_not_follow_links_to_folders() {
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("rules");
    std::fs::create_dir(&tests).unwrap();
    write(&tests, "a_test.rhai", "fn test_one() { }\n");
    // Two links back up: a walk that follows them visits 2^depth folders.
    for (i, link) in ["up1", "up2", "up3"].iter().enumerate() {
        let target = if i == 0 {
            "..".to_string()
        } else {
            ".".to_string()
        };
        std::os::unix::fs::symlink(&target, tests.join(link)).unwrap();
    }
    let mut cmd = conductor(dir.path());
    cmd.args(["policy", "test"]).arg(&tests);
    let out = finish(cmd, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert!(both(&out).contains("1 passed"), "{}", both(&out));
}

#[test]
fn env_names_with_equals_or_empty_and_base_urls_with_fragments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for key in ["\"A=B\"", "\"\""] {
        let file = write(
            dir.path(),
            "env.cond",
            &format!(
                "workflow w {{\n    agent sh {{ kind = \"shell\", command = [\"true\"], \
                 env = {{ {key} = \"x\" }} }}\n    phase p {{ task t on sh }}\n}}\n"
            ),
        );
        let mut cmd = conductor(dir.path());
        cmd.arg("check").arg(&file);
        let out = finish(cmd, Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(1), "{key}: {}", both(&out));
        assert!(
            text(&out.stderr).contains("is not an environment variable name"),
            "{key}: {}",
            both(&out)
        );
    }
    let sub = dir.path().join("fragment");
    std::fs::create_dir(&sub).unwrap();
    write(
        &sub,
        "conductor.toml",
        "[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1#x\"\nmodel = \"m\"\n",
    );
    let file = write(
        &sub,
        "w.cond",
        "workflow w {\n    agent m { kind = \"mock\" }\n    phase p { task t on m }\n}\n",
    );
    let mut cmd = conductor(&sub);
    cmd.arg("run").arg(&file).args(["--store", "memory"]);
    let out = finish(cmd, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(text(&out.stderr).contains("#fragment"), "{}", both(&out));
}

#[test]
fn a_key_pasted_into_the_wrong_field_of_the_configuration_is_not_echoed() {
    const KEY: &str = "sk-proj-hardening0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "w.cond",
        "workflow w {\n    agent m { kind = \"mock\" }\n    phase p { task t on m }\n}\n",
    );
    for field in [
        format!("api_key_env = \"{KEY}\""),
        format!("max_tokens = \"{KEY}\""),
        format!("timeout = \"{KEY}\""),
        format!("kind = \"{KEY}\""),
    ] {
        let kind = if field.starts_with("kind") {
            ""
        } else {
            "kind = \"openai\"\n"
        };
        write(
            dir.path(),
            "conductor.toml",
            &format!("[providers.p]\n{kind}base_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n{field}\n"),
        );
        let mut cmd = conductor(dir.path());
        cmd.arg("run").arg(&file).args(["--store", "memory"]);
        let out = finish(cmd, Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(2), "{field}: {}", both(&out));
        assert!(
            !both(&out).contains("hardening0123"),
            "{field}: {}",
            both(&out)
        );
        assert!(both(&out).contains("not shown"), "{field}: {}", both(&out));
    }
    // Through the environment too.
    std::fs::remove_file(dir.path().join("conductor.toml")).unwrap();
    let mut cmd = conductor(dir.path());
    cmd.arg("run")
        .arg(&file)
        .args(["--store", "memory"])
        .env("CONDUCTOR_PROVIDERS_P_KIND", "openai")
        .env("CONDUCTOR_PROVIDERS_P_MAX_TOKENS", KEY);
    let out = finish(cmd, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(!both(&out).contains("hardening0123"), "{}", both(&out));
}

#[test]
fn a_programs_setsid_children_are_killed_on_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "daemon.cond",
        r#"workflow w {
    agent sh { kind = "shell", command = ["sh", "-c", "setsid sleep 120 & echo $! > pid.txt; wait"], timeout = 1s, retry = 0 }
    on_escalation = "abort"
    phase p { task t on sh }
}
"#,
    );
    let mut cmd = conductor(dir.path());
    cmd.arg("run").arg(&file);
    let out = finish(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(both(&out).contains("TIMEOUT"), "{}", both(&out));
    let id = only_run(dir.path());
    let pid_file = dir
        .path()
        .join("runs")
        .join(&id)
        .join("work")
        .join("pid.txt");
    let pid: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let start = Instant::now();
    while !gone(pid) {
        if start.elapsed() > Duration::from_secs(5) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("the program's setsid child {pid} outlived the timeout");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn control_characters_from_outside_do_not_reach_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "spoof.cond",
        &r#"workflow w {
    agent files { kind = "mock", output = { files = [{ path = "a\nfake rowESC[2JBIDI.txt", content = "x" }] } }
    agent noisy { kind = "shell", command = ["sh", "-c", "printf 'bad\\033[2J\\033[H\\rspoof\\n' >&2; exit 3"] }
    on_escalation = "skip"
    phase p { task write on files  task fail on noisy }
}
"#
        .replace("ESC", "\u{1b}")
        .replace("BIDI", "\u{202e}"),
    );
    let mut cmd = conductor(dir.path());
    cmd.arg("run").arg(&file);
    let out = finish(cmd, Duration::from_secs(30));
    assert_clean_exit(&out);
    let all = both(&out);
    assert!(
        all.contains("contains a control or bidirectional character"),
        "{all}"
    );
    for raw in ['\u{1b}', '\r', '\u{202e}'] {
        assert!(!all.contains(raw), "{raw:?} reached the terminal: {all:?}");
    }
    let id = only_run(dir.path());
    for args in [vec!["show", &id], vec!["artifacts", &id]] {
        let mut cmd = conductor(dir.path());
        cmd.args(&args);
        let out = finish(cmd, Duration::from_secs(30));
        assert_clean_exit(&out);
        assert!(!both(&out).contains('\u{1b}'), "{args:?}: {:?}", both(&out));
    }
}

/// A model server on 127.0.0.1 answering every request with the next of `replies` (status,
/// JSON body; the last repeats); returns its base URL.
fn serve_replies(replies: Vec<(u16, String)>) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (n, sock) in listener.incoming().enumerate() {
            let Ok(mut sock) = sock else { return };
            let mut reader = BufReader::new(sock.try_clone().unwrap());
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                line.clear();
            }
            let _ = reader.read_exact(&mut vec![0; length]);
            let (status, body) = &replies[n.min(replies.len() - 1)];
            let _ = write!(
                sock,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// `text` with each of its characters at an even place written as a JSON `\u` escape.
fn escape_some(text: &str) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| match (i % 2, c) {
            (_, '/') => "\\/".to_string(),
            (0, c) => format!("\\u{:04x}", c as u32),
            (_, c) => c.to_string(),
        })
        .collect()
}

#[test]
fn a_key_echoed_escaped_or_encoded_is_redacted_from_errors_outputs_and_files() {
    const KEY: &str = "sk-echo/7f3a9c2e51b04d68";
    let every_char: String = KEY
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    let percent: String = KEY
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect();
    // A 401 that echoes the key escaped, and in a URL.
    let refused = format!(
        r#"{{"error": {{"message": "Incorrect API key provided: {every_char}; see https://p.example/keys?k={percent}"}}}}"#
    );
    // A model reply whose content holds the key escaped once (a JSON string in the body) and
    // twice (a JSON string inside the content).
    let content = format!(
        r#"{{"summary": "the key is {KEY}", "files": [{{"path": "key.txt", "content": "{}"}}]}}"#,
        escape_some(KEY)
    );
    let answered = serde_json::json!({
        "id": "c1", "object": "chat.completion", "model": "m",
        "choices": [{ "index": 0, "finish_reason": "stop",
                      "message": { "role": "assistant", "content": content } }],
        "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2 }
    })
    .to_string()
    .replace(KEY, &escape_some(KEY));
    assert!(!answered.contains(KEY) && !refused.contains(KEY));
    let bad = serve_replies(vec![(401, refused)]);
    let good = serve_replies(vec![(200, answered)]);
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "conductor.toml",
        &format!(
            "[providers.bad]\nkind = \"openai\"\nbase_url = \"{bad}/v1\"\nmodel = \"m\"\n\
             api_key_env = \"ECHOED_KEY\"\n\
             [providers.good]\nkind = \"openai\"\nbase_url = \"{good}/v1\"\nmodel = \"m\"\n\
             api_key_env = \"ECHOED_KEY\"\n"
        ),
    );
    let file = write(
        dir.path(),
        "echo.cond",
        r#"workflow w {
    on_escalation = "skip"
    agent refused { kind = "llm", role = "coder", provider = "bad" }
    agent answered { kind = "llm", role = "coder", provider = "good" }
    phase p {
        task refused on refused { prompt = "go" }
        task answered on answered { prompt = "go" }
    }
}
"#,
    );
    let mut cmd = conductor(dir.path());
    cmd.arg("run").arg(&file).env("ECHOED_KEY", KEY);
    let run = finish(cmd, Duration::from_secs(60));
    assert_clean_exit(&run);
    let id = only_run(dir.path());
    let mut seen = vec![("run".to_string(), both(&run))];
    for args in [
        vec!["show", &id],
        vec!["show", &id, "--json"],
        vec!["events", &id],
        vec!["logs", &id, "refused"],
        vec!["logs", &id, "answered"],
        vec!["why", &id, "refused"],
    ] {
        let mut cmd = conductor(dir.path());
        cmd.args(&args);
        seen.push((args.join(" "), both(&finish(cmd, Duration::from_secs(30)))));
    }
    for f in walkdir(dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        seen.push((f.display().to_string(), text(&bytes)));
    }
    let forms = [
        KEY.to_string(),
        every_char.clone(),
        every_char.replace('\\', "\\\\"),
        escape_some(KEY),
        escape_some(KEY).replace('\\', "\\\\"),
        percent.clone(),
        "7f3a9c2e51b04d68".to_string(),
    ];
    for (place, text) in &seen {
        for form in &forms {
            assert!(!text.contains(form.as_str()), "{form} in {place}: {text}");
        }
    }
    // Both echoes were seen, and replaced.
    let shown = &seen[1].1;
    assert!(
        shown.contains("[redacted]") || shown.contains("[key in ECHOED_KEY]"),
        "{shown}"
    );
    let stored = std::fs::read(
        dir.path()
            .join("runs")
            .join(&id)
            .join("work")
            .join("key.txt"),
    );
    assert_eq!(text(&stored.unwrap()), "[redacted]");
}

/// Every file under `dir`.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn concurrent_runs_on_one_store_wait_for_its_write_lock_and_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "chain.cond",
        &conductor::workloads::workflow(conductor::workloads::Shape::Chain, 3000, 4),
    );
    let mut first = conductor(dir.path());
    first.arg("run").arg(&file);
    assert_eq!(
        finish(first, Duration::from_secs(60)).status.code(),
        Some(0)
    );
    let runs: Vec<Child> = (0..4)
        .map(|_| {
            let mut cmd = conductor(dir.path());
            cmd.arg("run")
                .arg(&file)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    // While they write, another writer holds the store's write lock longer than SQLite's busy
    // handler waits (as `gc` on a large store, or busier writers winning the lock again and
    // again, do).
    std::thread::sleep(Duration::from_millis(300));
    let holder = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    holder.busy_timeout(Duration::from_secs(30)).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::thread::sleep(Duration::from_millis(5500));
    holder.execute_batch("COMMIT").unwrap();
    for (i, run) in runs.into_iter().enumerate() {
        let out = wait_at_most(run, Duration::from_secs(120), "a concurrent run");
        assert_eq!(out.status.code(), Some(0), "run {i}: {}", both(&out));
    }
    let mut list = conductor(dir.path());
    list.args(["runs", "--json"]);
    let out = finish(list, Duration::from_secs(30));
    let completed = text(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"completed\""))
        .count();
    assert_eq!(completed, 5, "{}", both(&out));
}

/// Rhai that stays far under the operation limit but takes minutes: each of 100,000 turns
/// copies a 10,000-item array. Ends with `last`.
fn slow_rhai(last: &str) -> String {
    format!(
        "let a = []; for i in 0..10000 {{ a.push(i); }} let n = 0; \
         for i in 0..100000 {{ let b = a; n += b.len(); }} {last}"
    )
}

#[test]
fn a_slow_rule_is_stopped_at_its_time_limit_with_the_rule_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "rule.cond",
        &format!(
            "workflow w {{\n    agent m {{ kind = \"mock\" }}\n    phase p {{\n        \
             task t on m {{ when {{ {} }} }}\n    }}\n}}\n",
            slow_rhai("n > 0")
        ),
    );
    let mut cmd = conductor(dir.path());
    cmd.arg("run").arg(&file);
    let start = Instant::now();
    let out = finish(cmd, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let all = both(&out);
    assert!(
        all.contains("rule.cond:4:28 failed")
            && all.contains("the rule ran longer than 1s and was stopped"),
        "{all}"
    );
}

#[test]
fn a_script_is_stopped_by_its_tasks_timeout_and_by_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "slow.rhai",
        &format!("fn slow(ctx) {{ {} }}", slow_rhai("#{ n: n }")),
    );
    let workflow = |timeout: &str| {
        format!(
            "workflow w {{\n    use \"slow.rhai\"\n    on_escalation = \"skip\"\n    \
             agent s {{ kind = \"script\", function = \"slow\", timeout = {timeout}, retry = 0 }}\n    \
             agent m {{ kind = \"mock\" }}\n    phase p {{ task slow on s  task next on m after slow  gate {{ true }} }}\n    \
             phase q {{ task after on m }}\n}}\n"
        )
    };
    // The timeout ends the attempt TIMEOUT and the script with it; the run goes on as
    // configured (skip: the dependent task is skipped; the gate lets the next phase run).
    let file = write(dir.path(), "timeout.cond", &workflow("1s"));
    let mut cmd = conductor(dir.path());
    cmd.arg("run").arg(&file);
    let start = Instant::now();
    let out = finish(cmd, Duration::from_secs(30));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the run waited for the script: {:?}",
        start.elapsed()
    );
    assert_clean_exit(&out);
    let all = both(&out);
    assert!(all.contains("TIMEOUT"), "{all}");
    assert!(all.contains("✓ after"), "{all}");
    // Ctrl-C stops a script that has a long timeout, and the process exits.
    let file = write(dir.path(), "cancel.cond", &workflow("10m"));
    interrupted_run(dir.path(), &file, Duration::from_millis(1000));
}

#[test]
fn a_newline_in_a_message_does_not_start_a_line_of_the_run_view_show_or_why() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "throw.rhai",
        r#"fn boom(ctx) { throw "bad\n  ✓ fake_task            m-01           completed  1 attempt  0ms"; }"#,
    );
    let file = write(
        dir.path(),
        "spoof.cond",
        r#"workflow w {
    use "throw.rhai"
    on_escalation = "skip"
    agent s { kind = "script", function = "boom" }
    phase p {
        task t on s
        gate { fail("no\nrun r1 COMPLETED: 9 completed, 0 failed") }
    }
}
"#,
    );
    let mut cmd = conductor(dir.path());
    cmd.arg("run").arg(&file);
    let out = finish(cmd, Duration::from_secs(30));
    assert_clean_exit(&out);
    let view = text(&out.stdout);
    for spoof in ["  ✓ fake_task", "run r1 COMPLETED"] {
        assert!(
            !view.lines().any(|l| l.starts_with(spoof)),
            "a message started a line `{spoof}`:\n{view}"
        );
    }
    assert!(view.contains("bad\\n  ✓ fake_task"), "{view}");
    assert!(view.contains("no\\nrun r1 COMPLETED"), "{view}");
    // Nor of `show` or `why`.
    let id = only_run(dir.path());
    for args in [vec!["show", &id], vec!["why", &id, "t"]] {
        let mut cmd = conductor(dir.path());
        cmd.args(&args);
        let out = finish(cmd, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(0), "{}", both(&out));
        let shown = text(&out.stdout);
        for spoof in ["  ✓ fake_task", "run r1 COMPLETED"] {
            assert!(
                !shown.lines().any(|l| l.starts_with(spoof)),
                "{args:?}: a message started a line `{spoof}`:\n{shown}"
            );
        }
        assert!(shown.contains("bad\\n  ✓ fake_task"), "{shown}");
    }
}

#[test]
fn outputs_too_large_or_with_too_many_or_too_large_files_fail_before_they_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let many: Vec<String> = (0..1001)
        .map(|i| format!("{{ path = \"f{i}.txt\", content = \"x\" }}"))
        .collect();
    let big_file = format!(
        r#"{{"files": [{{"path": "big.txt", "content": "{}"}}], "summary": "s"}}"#,
        "x".repeat(9 << 20)
    );
    let url = serve_once(big_file);
    let huge = "{{ 'x' * 8000000 }}";
    let cases = [
        (
            format!("agent m {{ kind = \"mock\", output = {{ files = [{}] }} }}", many.join(", ")),
            "has 1001 files; an attempt may write at most 1000 (`MAX_ARTIFACTS`)",
        ),
        (
            format!("agent m {{ kind = \"http\", url = \"{url}\" }}"),
            "has the file `big.txt` of 9437184 bytes; a file may have at most 8 MiB (`MAX_ARTIFACT_SIZE`)",
        ),
        (
            format!(
                "agent m {{ kind = \"mock\", output = {{ a = \"{huge}\", b = \"{huge}\", c = \"{huge}\" }} }}"
            ),
            "is larger than 16 MiB as JSON (`MAX_OUTPUT_SIZE`)",
        ),
    ];
    for (i, (agent, expected)) in cases.iter().enumerate() {
        let case = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&case).unwrap();
        let file = write(
            &case,
            "big.cond",
            &format!("workflow w {{\n    {agent}\n    phase p {{ task t on m }}\n}}\n"),
        );
        let mut cmd = conductor(&case);
        cmd.arg("run").arg(&file);
        let out = finish(cmd, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(1), "case {i}: {}", both(&out));
        assert!(both(&out).contains(expected), "case {i}: {}", both(&out));
        assert!(
            both(&out).contains("INVALID_OUTPUT"),
            "case {i}: {}",
            both(&out)
        );
        // Nothing of it was stored or written.
        let store: u64 = ["store.db", "store.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(case.join(f)).ok())
            .map(|m| m.len())
            .sum();
        assert!(store < 4 << 20, "case {i}: the store holds {store} bytes");
        let work = case.join("runs").join(only_run(&case)).join("work");
        assert!(!work.exists() || walkdir(&work).is_empty(), "case {i}");
    }
}
