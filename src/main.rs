//! The `conductor` binary: arguments → library → rendered output → exit code.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    conductor::run_cli()
}
