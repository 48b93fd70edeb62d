//! Running the `conductor` binary in a test's folder, with the store in that folder.

use std::path::Path;
use std::process::{Command, Stdio};

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
