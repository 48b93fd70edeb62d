//! Running the `conductor` binary in a test's folder, with the store in that folder.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `conductor` in `dir`, its store `dir/store.db`, no stdin (so nothing asks a terminal).
pub fn conductor(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_conductor"));
    c.current_dir(dir)
        .env("CONDUCTOR_STORE", dir.join("store.db"))
        .stdin(Stdio::null());
    c
}

/// What a finished command said.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(dir: &Path, args: &[&str]) -> Ran {
    let out = conductor(dir).args(args).output().unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The run id a run view's first line names.
pub fn run_id(view: &str) -> String {
    view.split_whitespace().nth(1).unwrap().to_string()
}

/// `conductor show RUN --json`.
pub fn state(dir: &Path, run_id: &str) -> serde_json::Value {
    let r = run(dir, &["show", run_id, "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

pub fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// Waits for a child at most `limit`, reading its output as it comes; a child still running
/// then is killed and the test fails.
pub fn wait_at_most(mut child: Child, limit: Duration, what: &str) -> Output {
    let pipe = |p: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = pipe(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = pipe(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} still ran after {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&stdout.join().unwrap()),
                String::from_utf8_lossy(&stderr.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}
