//! Identifiers of runs.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A run's id: `r`, 11 hex digits of the creation time in milliseconds, then 8 random hex
/// digits, so ids sort by creation time and processes that start in the same millisecond (in
/// containers, with the same pid) do not collide.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub Arc<str>);

impl RunId {
    pub fn new() -> RunId {
        let millis = super::Timestamp::now().0;
        RunId(Arc::from(format!(
            "r{:011x}{:08x}",
            millis & 0xfff_ffff_ffff,
            random_u64() & 0xffff_ffff
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// 64 bits from the operating system's randomness (through the standard library's hash keys,
/// which are seeded from it per process), mixed with a counter and the clock so two calls in
/// one process differ too.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.write_u32(std::process::id());
    h.finish()
}

impl Default for RunId {
    fn default() -> RunId {
        RunId::new()
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for RunId {
    fn from(s: &str) -> RunId {
        RunId(Arc::from(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_ordered_by_time() {
        let ids: Vec<RunId> = (0..1000).map(|_| RunId::new()).collect();
        let unique: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|i| i.0.len() == 20 && i.0.starts_with('r')));
    }
}
