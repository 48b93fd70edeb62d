//! `conductor serve`: the web dashboard over a store (see `docs/dashboard.md`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::{output, Globals};
use crate::app::AppError;
use crate::serve::{ServeError, ServeOptions};

/// Serve a live web dashboard of the store's runs, with actions and `/metrics`.
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// The address to listen on; port 0 picks a free one. An address other machines can
    /// reach needs `--token`.
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    listen: SocketAddr,
    /// A token every request must carry (`x-conductor-token` header); the page asks for it.
    #[arg(
        long,
        env = "CONDUCTOR_TOKEN",
        conflicts_with = "token_file",
        hide_env_values = true
    )]
    token: Option<String>,
    /// A file whose first line is the token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Who decisions made in the dashboard are recorded as: `dashboard:NAME`.
    #[arg(long, env = "USER", default_value = "operator", value_name = "NAME")]
    user: String,
}

pub(super) fn run(args: Args, globals: &Globals) -> Result<ExitCode, AppError> {
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(file)) => Some(read_token(file)?),
        (None, None) => None,
    };
    if token.as_ref().is_some_and(|t| t.is_empty()) {
        return Err(AppError::Usage("the token is empty".into()));
    }
    let opts = ServeOptions {
        store: globals.store.clone(),
        config: globals.config.clone(),
        listen: args.listen,
        token,
        user: args.user,
    };
    let cancel = CancellationToken::new();
    output::drive(cancel.clone(), async move {
        crate::serve::serve(opts, cancel, |addr| {
            output::line(format!("conductor serve: listening on http://{addr}/"));
        })
        .await
        .map_err(|e| match e {
            ServeError::App(e) => e,
            other => AppError::Usage(other.to_string()),
        })
    })?;
    Ok(ExitCode::SUCCESS)
}

fn read_token(file: &PathBuf) -> Result<String, AppError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        AppError::Usage(format!(
            "cannot read the token file `{}`: {e}",
            file.display()
        ))
    })?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}
