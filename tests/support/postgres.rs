//! The PostgreSQL the tests use: the cluster `.ci/run` starts (`source .ci/postgres.sh`),
//! named by `CONDUCTOR_TEST_POSTGRES`. Each test gets a database of its own. Without the
//! variable a Postgres test says it is skipped and how to enable it; with `CI=true` a skip
//! fails the test instead, so CI cannot pass without running them.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub const VAR: &str = "CONDUCTOR_TEST_POSTGRES";

/// A fresh, empty database for one test (its URL), or `None` when Postgres tests are not
/// enabled here (outside CI).
pub fn database(test: &str) -> Option<String> {
    let Some(admin) = std::env::var(VAR).ok().filter(|v| !v.is_empty()) else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "{test}: {VAR} is not set, and CI=true does not allow skipping the PostgreSQL tests \
             (`source .ci/postgres.sh` starts a cluster and sets it)"
        );
        eprintln!(
            "SKIPPED {test}: PostgreSQL tests need {VAR}=postgres://… (run `source .ci/postgres.sh` \
             to start a private cluster and set it)"
        );
        return None;
    };
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t_{}_{}_{}",
        test.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(30)
            .collect::<String>(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
    .to_lowercase();
    psql(&admin, &format!("CREATE DATABASE {name}"));
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

/// Runs SQL with `psql` and returns its unaligned output.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs (the PostgreSQL client is installed with the server)");
    assert!(
        out.status.success(),
        "psql `{sql}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
