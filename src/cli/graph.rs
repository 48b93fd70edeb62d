//! `conductor graph FILE`: the execution plan as text, DOT, Mermaid, JSON or SVG.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

use super::output;
use crate::app::AppError;

/// Print a workflow's execution plan as text, Graphviz DOT, Mermaid, JSON or SVG.
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    file: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Dot,
    Mermaid,
    Json,
    Svg,
}

pub(super) fn run(args: Args) -> Result<ExitCode, AppError> {
    let loaded = crate::app::load(&args.file)?;
    output::diagnostics(&loaded.map, &loaded.warnings);
    let (wf, plan) = (&loaded.workflow, &loaded.plan);
    let bytes: Vec<u8> = match args.format {
        Format::Text => crate::plan::to_text(wf, plan).into_bytes(),
        Format::Dot => crate::plan::to_dot(wf, plan).into_bytes(),
        Format::Mermaid => crate::plan::to_mermaid(wf, plan).into_bytes(),
        Format::Json => {
            let json = crate::plan::to_json(wf, plan, &loaded.map);
            let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
            text.push('\n');
            text.into_bytes()
        }
        Format::Svg => render_svg(&crate::plan::to_dot(wf, plan)).map_err(AppError::Usage)?,
    };
    match &args.output {
        Some(out) => std::fs::write(out, &bytes)
            .map_err(|e| AppError::Usage(format!("cannot write `{}`: {e}", out.display())))?,
        None => {
            let _ = std::io::stdout().lock().write_all(&bytes);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Renders DOT to SVG with Graphviz's `dot`.
fn render_svg(dot: &str) -> Result<Vec<u8>, String> {
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "`--format svg` needs Graphviz's `dot`, which is not installed; install it \
                 (`apt-get install graphviz`, `brew install graphviz`) or use `--format dot`"
                    .to_string()
            } else {
                format!("cannot run `dot`: {e}")
            }
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(dot.as_bytes())
            .map_err(|e| format!("cannot send the graph to `dot`: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`dot` failed: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`dot` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}
