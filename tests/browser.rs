//! The dashboard in a real headless Chromium: `tests/browser/dashboard.test.mjs`, run with
//! node's test runner and playwright-core against Debian's `/usr/bin/chromium`. `.ci/run`
//! installs both; elsewhere the test says what is missing and, unless `CI=true`, skips.
//! Screenshots of every screen and the 10,000-task measurement land in `target/dashboard`.

use std::path::Path;
use std::process::Command;

#[test]
fn the_dashboard_works_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut missing = Vec::new();
    if !node {
        missing.push("node (v20 or later)".to_string());
    }
    if !Path::new(&chromium).exists() {
        missing.push(format!("{chromium} (apt-get install chromium)"));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        missing.push(format!(
            "playwright-core (cd {} && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci)",
            dir.display()
        ));
    }
    if !missing.is_empty() {
        let message = format!("the browser tests need {}", missing.join(", "));
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}: `.ci/run` installs them");
        }
        eprintln!("skipped: {message}");
        return;
    }
    let out = Command::new("node")
        .args(["--test", "dashboard.test.mjs"])
        .current_dir(&dir)
        .env("CONDUCTOR", env!("CARGO_BIN_EXE_conductor"))
        .env("FIXTURES", root.join("tests/fixtures/serve"))
        .env("SCREENSHOTS", root.join("target/dashboard"))
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The measurement, in the test's output for whoever runs it with --nocapture.
    for line in stdout.lines().filter(|l| l.contains("dashboard 10k:")) {
        println!("{line}");
    }
}
