//! The delay before a retry: fixed, or doubling from `initial` up to `max`, with ±25% jitter.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::check::ir::Backoff;

/// A seed no other process shares: the standard library seeds each `RandomState` from the
/// operating system's randomness.
pub(super) fn random_seed() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The delay before attempt `attempt + 1`. The jitter is drawn from the run's seed, the task
/// and the attempt: different for every attempt and every run, reproducible with a fixed seed.
pub(super) fn delay(backoff: Backoff, attempt: u32, task: &str, seed: u64) -> Duration {
    match backoff {
        Backoff::Fixed(d) => d,
        Backoff::Exponential { initial, max } => {
            let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
            let base = exp.min(max);
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
            for b in task.bytes().chain(attempt.to_le_bytes()) {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
            // A final mix, so that nearby seeds give unrelated jitters.
            h ^= h >> 33;
            h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
            h ^= h >> 33;
            let jitter = (h % 501) as f64 / 1000.0 + 0.75; // 0.75 ..= 1.25
            base.mul_f64(jitter).min(max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff::Exponential {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    #[test]
    fn fixed_is_fixed() {
        let d = Duration::from_millis(20);
        assert_eq!(delay(Backoff::Fixed(d), 1, "t", 7), d);
        assert_eq!(delay(Backoff::Fixed(d), 9, "t", 8), d);
    }

    #[test]
    fn exponential_doubles_within_jitter_and_stays_under_max() {
        for attempt in 1..=10u32 {
            let base = Duration::from_secs(1u64 << (attempt - 1)).min(Duration::from_secs(60));
            let d = delay(B, attempt, "task", 42);
            assert!(d >= base.mul_f64(0.75), "{attempt}: {d:?}");
            assert!(
                d <= base.mul_f64(1.25).min(Duration::from_secs(60)),
                "{attempt}: {d:?}"
            );
        }
        assert_eq!(
            delay(B, 3, "task", 42),
            delay(B, 3, "task", 42),
            "a seed reproduces"
        );
        assert_eq!(
            delay(B, 40, "x", 1),
            delay(B, 40, "x", 1),
            "no overflow far out"
        );
    }

    #[test]
    fn runs_with_their_own_seeds_do_not_retry_in_step() {
        // The same task's first retry in 200 runs: spread over the jitter's range.
        let delays: std::collections::BTreeSet<Duration> = (0..200)
            .map(|_| delay(B, 1, "task", random_seed()))
            .collect();
        assert!(
            delays.len() > 100,
            "{} distinct delays of 200",
            delays.len()
        );
        let (lo, hi) = (delays.first().unwrap(), delays.last().unwrap());
        assert!(*hi - *lo > Duration::from_millis(250), "{lo:?}..{hi:?}");
    }
}
