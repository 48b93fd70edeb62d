//! The delay before a retry: fixed, or doubling from `initial` up to `max`, with ±25% jitter.

use std::time::Duration;

use crate::check::ir::Backoff;

/// The delay before attempt `attempt + 1`. The jitter is drawn from the task and the attempt,
/// so a run's delays are reproducible.
pub(super) fn delay(backoff: Backoff, attempt: u32, task: &str) -> Duration {
    match backoff {
        Backoff::Fixed(d) => d,
        Backoff::Exponential { initial, max } => {
            let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
            let base = exp.min(max);
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in task.bytes().chain(attempt.to_le_bytes()) {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
            let jitter = (h % 501) as f64 / 1000.0 + 0.75; // 0.75 ..= 1.25
            base.mul_f64(jitter).min(max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_is_fixed() {
        let d = Duration::from_millis(20);
        assert_eq!(delay(Backoff::Fixed(d), 1, "t"), d);
        assert_eq!(delay(Backoff::Fixed(d), 9, "t"), d);
    }

    #[test]
    fn exponential_doubles_within_jitter_and_stays_under_max() {
        let b = Backoff::Exponential {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        for attempt in 1..=10u32 {
            let base = Duration::from_secs(1u64 << (attempt - 1)).min(Duration::from_secs(60));
            let d = delay(b, attempt, "task");
            assert!(d >= base.mul_f64(0.75), "{attempt}: {d:?}");
            assert!(
                d <= base.mul_f64(1.25).min(Duration::from_secs(60)),
                "{attempt}: {d:?}"
            );
        }
        assert_eq!(delay(b, 3, "task"), delay(b, 3, "task"));
        assert_eq!(delay(b, 40, "x"), delay(b, 40, "x"), "no overflow far out");
    }
}
