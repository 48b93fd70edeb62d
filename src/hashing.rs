//! The hasher of the maps Conductor looks names up in on every task: the checker's names, a
//! run state's task and artifact indexes. std's default (SipHash) defends a map against keys
//! chosen to collide; these keys are task, agent and phase names from the workflow file and
//! paths in the run's workspace. Hashing was 7–10 % of the samples of checking a 20k-task
//! file (perf); with foldhash, hashbrown's default (seeded at random per process), `conductor
//! check` of that file took 49.1 → 47.0 ms (minimum of 25, alternated) and folding a log of
//! 100k artifacts 0.42–0.52 → 0.35–0.43 µs an artifact.

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
pub type FastIndexMap<K, V> = indexmap::IndexMap<K, V, foldhash::fast::RandomState>;
