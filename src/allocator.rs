//! The binaries' allocator, and how long it keeps memory that was freed.
//!
//! Not part of the library (which forbids `unsafe`): `src/main.rs` and `conductor-bench`
//! include this file as a module of their own, so both measure what users run.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (`mimalloc.h`; the sys crate names
/// only the options v2 and v3 share). The test below checks the index against its default.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long, in milliseconds, freed pages stay mapped before they go back to the system.
/// mimalloc v3's default is 1,000: compiling a large file frees the parse tree's memory and
/// allocates the plan's within that second, so the peak held both. At 10 (v2's default) the
/// peak per task at 100k tasks fell from 765 to 550–560 B (fan-out) and a 20k-task run took
/// the same time (`conductor-bench --peak`, benches/alternate.py).
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Sets the purge delay, unless `MIMALLOC_PURGE_DELAY` (or its old name,
/// `MIMALLOC_RESET_DELAY`) chose one: mimalloc has read those by the time `main` runs.
/// Call it first in `main`, before any thread starts.
#[allow(unsafe_code)]
pub fn tune() {
    let chosen = ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    if !chosen {
        // SAFETY: writes one integer in mimalloc's option table, whose index is in range
        // (checked by the test); no other thread runs yet, so nothing reads it meanwhile.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn purge_delay_is_the_option_tune_sets() {
        // SAFETY: reads one integer of mimalloc's option table.
        let read = || unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
            && std::env::var_os("MIMALLOC_RESET_DELAY").is_none()
        {
            // v3's default for this option, and no other option's: the index is right.
            assert_eq!(read(), 1_000);
            tune();
            assert_eq!(read(), PURGE_DELAY_MS);
        } else {
            let before = read();
            tune();
            assert_eq!(read(), before, "a purge delay from the environment is kept");
        }
    }
}
