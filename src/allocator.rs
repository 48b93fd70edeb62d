//! The binaries' allocator, and how long it keeps memory that was freed.
//!
//! Not part of the library (which forbids `unsafe`): `src/main.rs` and `conductor-bench`
//! include this file as a module of their own, so both measure what users run.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (`mimalloc.h`; the sys crate names
/// only the options v2 and v3 share). The test below checks the index against its default.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long, in milliseconds, freed pages stay mapped before they go back to the system while
/// a workflow compiles. With mimalloc v3's default (1,000 ms) the pages freed while parsing a
/// large file stayed resident while the plan was built: at 100k tasks the peak was 765 B a
/// task (fan-out), 550–566 B at 10 ms (`conductor-bench --peak fan-out 100000 compile`).
const COMPILING_MS: std::ffi::c_long = 10;

/// The same while a run runs: mimalloc's own default. At 10 ms, pages went back and were
/// faulted in again all through a run: a 100k-task fan-out on SQLite took 16 µs a task
/// instead of 13 (`conductor-bench --time fan-out 100000 sqlite`, alternated).
const RUNNING_MS: std::ffi::c_long = 1_000;

/// Sets the purge delay for compiling, and has the library set it back for running once the
/// workflow is compiled ([`conductor::on_compiled`]), unless `MIMALLOC_PURGE_DELAY` (or its
/// old name, `MIMALLOC_RESET_DELAY`) chose one: mimalloc has read those by the time `main`
/// runs, and they are left alone. Call it first in `main`, before any thread starts.
pub fn tune() {
    if !chosen_by_environment() {
        set_purge_delay(COMPILING_MS);
        conductor::on_compiled(|| set_purge_delay(RUNNING_MS));
    }
}

/// Whether the environment set the purge delay (mimalloc reads both names).
fn chosen_by_environment() -> bool {
    ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
}

#[allow(unsafe_code)]
fn set_purge_delay(ms: std::ffi::c_long) {
    // SAFETY: writes one aligned integer in mimalloc's option table, at an index in range
    // (checked by the test). mimalloc reads it with a plain load whenever it decides whether
    // to purge, and both values are valid settings, so a thread that reads it meanwhile sees
    // one of them; mimalloc's API allows setting options while it runs.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, ms) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_is_short_while_compiling_and_the_default_while_running() {
        // SAFETY: reads one integer of mimalloc's option table.
        let read = || unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        if !chosen_by_environment() {
            // v3's default for this option, and no other option's: the index is right.
            assert_eq!(read(), RUNNING_MS);
            tune();
            assert_eq!(read(), COMPILING_MS);
            conductor::compiled();
            assert_eq!(read(), RUNNING_MS);
        } else {
            let before = read();
            tune();
            conductor::compiled();
            assert_eq!(read(), before, "a purge delay from the environment is kept");
        }
    }
}
