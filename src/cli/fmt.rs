//! `conductor fmt FILE...`: the canonical layout (`-` reads stdin and writes stdout).

use std::path::PathBuf;
use std::process::ExitCode;

use super::output;
use crate::app::AppError;
use crate::diag::Diagnostic;
use crate::source::SourceMap;

/// Rewrite workflow files in the canonical layout (`-` reads stdin, writes stdout).
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Change nothing; exit 1 and name the files that would change.
    #[arg(long)]
    check: bool,
}

pub(super) fn run(args: Args) -> Result<ExitCode, AppError> {
    let mut code = 0u8;
    for path in &args.files {
        code = code.max(one(path, args.check));
    }
    Ok(ExitCode::from(code))
}

/// Formats one file (or stdin); returns its exit code.
fn one(path: &std::path::Path, check_only: bool) -> u8 {
    let stdin = path.as_os_str() == "-";
    let text = if stdin {
        let limit = crate::check::MAX_FILE_SIZE as u64;
        let read = crate::files::read_at_most(std::io::stdin().lock(), limit).and_then(|b| {
            String::from_utf8(b).map_err(|_| std::io::Error::other("it is not UTF-8 text"))
        });
        match read {
            Ok(text) => text,
            Err(e) => {
                output::err_line(format!("error: cannot read standard input: {e}"));
                return 2;
            }
        }
    } else {
        match crate::check::read_text(path) {
            Ok(text) => text,
            Err(diag) => {
                output::diagnostics(&SourceMap::new(), &[diag]);
                return 2;
            }
        }
    };
    let name = if stdin {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    };
    let formatted = match crate::syntax::format_source(&name, &text) {
        Ok(f) => f,
        Err((map, diags)) => {
            output::diagnostics(&map, &diags);
            return 1;
        }
    };
    if stdin {
        if !output::text(&formatted) {
            output::err_line("error: cannot write standard output");
            return 2;
        }
        return 0;
    }
    if formatted == text {
        output::line(format!("already formatted: {}", path.display()));
        return 0;
    }
    if check_only {
        output::line(format!("would reformat {}", path.display()));
        return 1;
    }
    // Never truncated in place: on a full disk the original stays whole.
    if let Err(e) = crate::files::replace_file(path, formatted.as_bytes()) {
        let d = Diagnostic::general(format!("cannot write `{}`: {e}", path.display()));
        output::diagnostics(&SourceMap::new(), &[d]);
        return 2;
    }
    output::line(format!("formatted {}", path.display()));
    0
}
