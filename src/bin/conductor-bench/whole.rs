//! Section 5: the whole process against Python's asyncio.

use super::*;

/// What the whole-process comparison runs, in its own temp dir.
pub(crate) struct Procs {
    pub(crate) conductor: PathBuf,
    pub(crate) script: PathBuf,
    pub(crate) dir: TempDir,
}

impl Procs {
    /// `conductor [--store memory] run SHAPE.cond --json`, from a fresh `.conductor`.
    pub(crate) fn conductor(&self, shape: Shape, memory: bool) -> Result<f64, String> {
        let store = self.dir.path().join(".conductor");
        if store.exists() {
            std::fs::remove_dir_all(&store).map_err(|e| format!("removing {store:?}: {e}"))?;
        }
        let mut cmd = Command::new(&self.conductor);
        if memory {
            cmd.args(["--store", "memory"]);
        }
        cmd.args(["run", &format!("{}.cond", shape.name()), "--json"])
            .current_dir(self.dir.path())
            .env_remove("CONDUCTOR_STORE")
            .env_remove("CONDUCTOR_CONFIG");
        time_command(&mut cmd)
    }

    pub(crate) fn python(&self, shape: Shape) -> Result<f64, String> {
        let mut cmd = Command::new("python3");
        cmd.arg(&self.script)
            .args([shape.name(), &WHOLE_N.to_string()])
            .env_remove("PYTHONUNBUFFERED");
        time_command(&mut cmd)
    }
}

/// Runs a command with its output to /dev/null; its wall time in ms.
pub(crate) fn time_command(cmd: &mut Command) -> Result<f64, String> {
    let begun = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let ms = begun.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{:?} {}: {}",
            cmd.get_program(),
            out.status,
            stderr.trim()
        ));
    }
    Ok(ms)
}

/// Why the comparison cannot run here, if it cannot.
pub(crate) fn procs() -> Result<Procs, String> {
    let exe = std::env::current_exe().map_err(|e| format!("no path to this binary: {e}"))?;
    let conductor = exe.with_file_name("conductor");
    if !conductor.is_file() {
        return Err(format!(
            "skipped: no `conductor` binary at {}; build it with `cargo build --release`",
            conductor.display()
        ));
    }
    let python = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !python.is_ok_and(|s| s.success()) {
        return Err("skipped: `python3` is not on PATH".into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/asyncio_walk.py");
    if !script.is_file() {
        return Err(format!("skipped: no {}", script.display()));
    }
    let dir = TempDir::new();
    for shape in [Shape::FanOut, Shape::Chain] {
        let file = dir.path().join(format!("{}.cond", shape.name()));
        std::fs::write(&file, workflow(shape, WHOLE_N, POOL))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    }
    Ok(Procs {
        conductor,
        script,
        dir,
    })
}

/// Medians (ms) of conductor on SQLite, Python, and — when asked — conductor on memory, run
/// in turn so the machine's drift affects them alike.
pub(crate) fn alternate(
    p: &Procs,
    shape: Shape,
    with_memory: bool,
) -> Result<(f64, f64, f64), String> {
    let (mut sqlite, mut python, mut memory) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..WHOLE_RUNS {
        eprintln!("whole process: {} round {}", shape.name(), round + 1);
        sqlite.push(p.conductor(shape, false)?);
        python.push(p.python(shape)?);
        if with_memory {
            memory.push(p.conductor(shape, true)?);
        }
    }
    let memory = if with_memory { median(memory) } else { 0.0 };
    Ok((median(sqlite), median(python), memory))
}

pub(crate) fn whole_process_section() -> Section {
    let title = "5. Whole process, 20k tasks: `conductor run FILE --json` vs Python asyncio";
    let note = format!(
        "`conductor run FILE --json > /dev/null` on the default store `.conductor/conductor.db` \
         (deleted before every run) against `python3 benches/asyncio_walk.py SHAPE {WHOLE_N}` \
         (PYTHONUNBUFFERED removed); run in turn, median of {WHOLE_RUNS} each."
    );
    let p = match procs() {
        Ok(p) => p,
        Err(why) => return Section::new(title, &format!("{note}\n\n{why}"), Vec::new()),
    };
    let head = [
        "workload",
        "conductor (ms)",
        "python (ms)",
        "ratio",
        "target",
        "status",
    ];
    let mut s = Section::new(title, &note, head.iter().map(|h| h.to_string()).collect());
    match whole_process_rows(&p) {
        Ok(rows) => s.rows = rows,
        Err(e) => s.note = format!("{note}\n\nfailed: {e}"),
    }
    s
}

pub(crate) fn whole_process_rows(p: &Procs) -> Result<Vec<Vec<String>>, String> {
    let (fan_c, fan_py, _) = alternate(p, Shape::FanOut, false)?;
    let (chain_c, chain_py, chain_mem) = alternate(p, Shape::Chain, true)?;
    let line = |name: &str, c: f64, py: f64, target: f64| {
        vec![
            name.to_string(),
            format!("{c:.0}"),
            format!("{py:.0}"),
            format!("{:.2}× (python/conductor)", py / c),
            format!("≥ {target}×"),
            verdict(Some(py / c >= target)),
        ]
    };
    let store_ratio = chain_c / chain_mem;
    Ok(vec![
        line("fan-out, SQLite", fan_c, fan_py, 2.5),
        line("chain, SQLite", chain_c, chain_py, 1.5),
        vec![
            "chain, `--store memory`".into(),
            format!("{chain_mem:.0}"),
            format!("{chain_py:.0}"),
            format!("{:.2}× (python/conductor)", chain_py / chain_mem),
            "—".into(),
            verdict(None),
        ],
        vec![
            "chain: SQLite ÷ memory".into(),
            format!("{chain_c:.0} / {chain_mem:.0}"),
            "—".into(),
            format!("{store_ratio:.2}×"),
            "≤ 1.5×".into(),
            verdict(Some(store_ratio <= 1.5)),
        ],
    ])
}
