//! The `conductor` binary: arguments → library → rendered output → exit code.

fn main() -> std::process::ExitCode {
    conductor::cli::main()
}
