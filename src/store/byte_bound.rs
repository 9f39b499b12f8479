//! In-memory caches bounded in bytes (an estimate each entry gives of
//! itself) as well as in entries, so that no caller can make one grow past
//! its configured size, whatever the keys it asks for.

use std::sync::Arc;

/// What an entry says it takes in memory.
pub trait Weighed {
    fn bytes(&self) -> u64;
}

/// An entry weighs its bytes, and at least `floor` = bytes bound ÷
/// entries bound (rounded up): the byte bound then also keeps the count
/// within the entries bound.
#[derive(Clone)]
pub struct ByBytes {
    floor: u64,
}

impl<K, V: Weighed> quick_cache::Weighter<K, Arc<V>> for ByBytes {
    fn weight(&self, _key: &K, value: &Arc<V>) -> u64 {
        value.bytes().max(self.floor)
    }
}

/// A cache of key → shared entry.
pub type Bounded<K, V> = quick_cache::sync::Cache<K, Arc<V>, ByBytes>;

/// A cache of at most `max_entries` entries and about `max_bytes` (either
/// 0: none).
pub fn bounded<K, V>(max_entries: usize, max_bytes: u64) -> Option<Bounded<K, V>>
where
    K: Eq + std::hash::Hash + Clone,
    V: Weighed,
{
    (max_entries > 0 && max_bytes > 0).then(|| {
        let floor = max_bytes.div_ceil(max_entries as u64).max(1);
        quick_cache::sync::Cache::with_weighter(max_entries, max_bytes, ByBytes { floor })
    })
}
