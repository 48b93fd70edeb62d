//! The `conductor` binary: arguments → library → rendered output → exit code.

mod allocator;

fn main() -> std::process::ExitCode {
    allocator::tune();
    conductor::run_cli()
}
