//! The store's address: a libpq-style URL, plus Conductor's own settings as query parameters
//! (`lease`, `patience`, `pool`), which are taken out before the driver reads the rest.

use std::str::FromStr;
use std::time::Duration;

use crate::store::StoreError;

/// Whether a `--store` value names a PostgreSQL database.
pub fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

pub(super) struct Parsed {
    pub config: tokio_postgres::Config,
    /// How long a run lease lasts without renewal (`lease=15s`).
    pub lease: Duration,
    /// How long an outage is waited out before a call fails (`patience=60s`).
    pub patience: Duration,
    /// Connections per process (`pool=8`).
    pub pool_size: usize,
    /// The URL without a password, for headers and messages.
    pub describe: String,
}

pub(super) fn parse(url: &str) -> Result<Parsed, StoreError> {
    let bad = |cause: String| StoreError::Postgres {
        cause: format!("`{}` is not a usable PostgreSQL URL: {cause}", redact(url)),
    };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut lease = Duration::from_secs(15);
    let mut patience = Duration::from_secs(60);
    let mut pool_size = 8;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let duration = || {
            humantime::parse_duration(value)
                .map_err(|e| bad(format!("`{key}={value}`: {e} (e.g. `15s`)")))
        };
        match key {
            "lease" => lease = duration()?.max(Duration::from_millis(300)),
            "patience" => patience = duration()?,
            "pool" => {
                pool_size = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(format!("`pool={value}` needs a positive number")))?
            }
            _ => rest.push(pair),
        }
    }
    let driver_url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config =
        tokio_postgres::Config::from_str(&driver_url).map_err(|e| bad(e.to_string()))?;
    if config.get_application_name().is_none() {
        config.application_name("conductor");
    }
    config.connect_timeout(Duration::from_secs(5));
    // A process paused or cut off in the middle of a transaction (SIGSTOP, a frozen VM) would
    // hold its row locks until its connection died, and block the scheduler that expires its
    // claims: the server ends such a transaction instead. Conductor's transactions never wait
    // on their client that long.
    if config.get_options().is_none() {
        config.options("-c idle_in_transaction_session_timeout=5000");
    }
    Ok(Parsed {
        config,
        lease,
        patience,
        pool_size,
        describe: redact(base),
    })
}

/// The URL with its password, if any, replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.split_once('@') {
        Some((auth, host)) => (Some(auth), host),
        None => (None, rest),
    };
    let host = host.split_once('?').map_or(host, |(h, _)| h);
    match auth.map(|a| a.split_once(':')) {
        Some(Some((user, _))) => format!("{scheme}://{user}:***@{host}"),
        Some(None) => format!("{scheme}://{}@{host}", auth.unwrap_or_default()),
        None => format!("{scheme}://{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conductor_settings_are_taken_out_and_the_password_hidden() {
        let p = parse("postgres://me:secret@127.0.0.1:5432/db?lease=2s&pool=3&sslmode=disable")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.lease, Duration::from_secs(2));
        assert_eq!(p.pool_size, 3);
        assert_eq!(p.describe, "postgres://me:***@127.0.0.1:5432/db");
        assert!(!p.describe.contains("secret"));
        assert_eq!(p.config.get_dbname(), Some("db"));
    }

    #[test]
    fn a_bad_setting_is_named() {
        let err = parse("postgres://h/db?lease=soon")
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("`lease=soon`"), "{err}");
    }
}
