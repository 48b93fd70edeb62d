//! The hasher of the maps Conductor looks names up in on every task: the checker's names, a
//! run state's task and artifact indexes. std's default (SipHash) defends a map against keys
//! chosen to collide; these keys are task, agent and phase names from the workflow file and
//! paths in the run's workspace, and SipHash cost 7–10 % of checking a 20k-task file and of
//! folding a log with 100k artifacts (perf). foldhash is hashbrown's default, seeded at
//! random per process.

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
pub type FastIndexMap<K, V> = indexmap::IndexMap<K, V, foldhash::fast::RandomState>;
