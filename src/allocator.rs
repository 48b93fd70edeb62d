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

/// Sets the purge delay for compiling, has the library say how large a text it compiles (huge
/// pages go off for a large one: [`HUGE_PAGES_BELOW`]) and set both back for running once the
/// workflow is compiled ([`conductor::on_compiled`]). What the environment
/// chose is left alone: a purge delay in `MIMALLOC_PURGE_DELAY` (or its old name,
/// `MIMALLOC_RESET_DELAY`), huge pages in `MIMALLOC_ALLOW_THP` or a process that was started
/// with them off. Call it first in `main`, before any thread starts.
pub fn tune() {
    if !chosen_by_environment() {
        set_purge_delay(COMPILING_MS);
    }
    conductor::on_compiling(compiling);
    conductor::on_compiled(running);
}

/// A workflow text this long or longer compiles without huge pages; a shorter one with them.
/// Huge pages make a compile's page faults 512 times fewer — `conductor check` of a 20k-task
/// fan-out (838 kB) took 21.9 → 16.8 ms (minimum of 21, alternated; medians 29.0 → 22.8) with
/// them on from the start (turned on only once the text was read, the regions the process had
/// already touched kept small pages: 2,152 page faults instead of 576, and no gain) — but
/// partly used huge pages add to the peak: a 100k-task fan-out (3.5 MB) compiled with 593–703 B
/// a task instead of 470–500 (`conductor-bench --peak fan-out 100000 compile`, less `text`). A
/// few megabytes more matter little to a small file and are a quarter more for a large one.
const HUGE_PAGES_BELOW: usize = 1 << 20;

/// Before a text of `len` bytes compiles: huge pages as the process started with them for a
/// small text, off for a large one.
fn compiling(len: usize) {
    if len < HUGE_PAGES_BELOW {
        huge_pages::restore();
    } else {
        huge_pages::off();
    }
}

/// The settings for running: the purge delay's default, huge pages as they were.
fn running() {
    if !chosen_by_environment() {
        set_purge_delay(RUNNING_MS);
    }
    huge_pages::restore();
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

/// Transparent huge pages, off while a large workflow compiles (see [`HUGE_PAGES_BELOW`]); on
/// (as the process started) otherwise.
///
/// mimalloc asks the kernel for huge pages (2 MiB) for its arena (`madvise(MADV_HUGEPAGE)`;
/// the system's setting here is `madvise`). A huge page is resident as a whole once touched,
/// and purging part of one splits it; while a large file compiles, memory is allocated and
/// freed fast, and the peak counted partly used huge pages: 100k tasks compiled with 595 B a
/// task (fan-out) with them, 444 B without (`conductor-bench --peak fan-out 100000 compile`,
/// less `text`). Runs were not slower without them, but they stay on while a workflow runs:
/// the flag is inherited by the programs tasks start, which should get the system's setting.
#[cfg(target_os = "linux")]
mod huge_pages {
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Whether [`off`] turned them off (so [`restore`] turns them on again).
    static TURNED_OFF: AtomicBool = AtomicBool::new(false);

    /// Off, unless the environment chose or the process started with them off.
    pub fn off() {
        // mimalloc itself turns them off for the whole process when told to.
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() || disabled() != Some(false) {
            return;
        }
        if set_disabled(true) {
            TURNED_OFF.store(true, Ordering::Relaxed);
        }
    }

    /// As the process started with them.
    pub fn restore() {
        if TURNED_OFF.swap(false, Ordering::Relaxed) {
            set_disabled(false);
        }
    }

    /// Whether the process has them off (`None`: the kernel does not say).
    pub fn disabled() -> Option<bool> {
        // The kernel reads four full words after the option and refuses any that is not zero:
        // they are passed as `unsigned long`, not as C `int`s a variadic call may leave half set.
        const ZERO: libc::c_ulong = 0;
        // SAFETY: PR_GET_THP_DISABLE takes no pointer; it returns 0, 1, or -1 on error.
        #[allow(unsafe_code)]
        let r = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, ZERO, ZERO, ZERO, ZERO) };
        (r >= 0).then_some(r == 1)
    }

    fn set_disabled(off: bool) -> bool {
        const ZERO: libc::c_ulong = 0;
        let flag = libc::c_ulong::from(off);
        // SAFETY: PR_SET_THP_DISABLE takes a flag and three zero words, no pointer.
        #[allow(unsafe_code)]
        let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, flag, ZERO, ZERO, ZERO) };
        r == 0
    }
}

#[cfg(not(target_os = "linux"))]
mod huge_pages {
    pub fn off() {}
    pub fn restore() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn while_compiling_freed_memory_goes_back_soon_and_huge_pages_are_off_for_a_large_file() {
        // SAFETY: reads one integer of mimalloc's option table.
        let read = || unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        // Huge pages are off while a large text compiles and as they were otherwise (when the
        // kernel says).
        #[cfg(target_os = "linux")]
        let pages = huge_pages::disabled();
        let thp_chosen = std::env::var_os("MIMALLOC_ALLOW_THP").is_some();
        if !chosen_by_environment() {
            // v3's default for this option, and no other option's: the index is right.
            assert_eq!(read(), RUNNING_MS);
            tune();
            assert_eq!(read(), COMPILING_MS);
            #[cfg(target_os = "linux")]
            if pages.is_some() && !thp_chosen {
                assert_eq!(
                    huge_pages::disabled(),
                    pages,
                    "as they were, until a text compiles"
                );
                compiling(HUGE_PAGES_BELOW);
                assert_eq!(huge_pages::disabled(), Some(true), "off for a large one");
                compiling(HUGE_PAGES_BELOW - 1);
                assert_eq!(huge_pages::disabled(), pages, "on for a small file");
                compiling(HUGE_PAGES_BELOW);
                assert_eq!(huge_pages::disabled(), Some(true), "off for a large one");
            }
            conductor::compiled();
            assert_eq!(read(), RUNNING_MS);
            #[cfg(target_os = "linux")]
            assert_eq!(huge_pages::disabled(), pages, "as they were, for running");
        } else {
            let before = read();
            tune();
            conductor::compiled();
            assert_eq!(read(), before, "a purge delay from the environment is kept");
        }
    }
}
