//! Unwrapped data keys kept in memory for a bounded time, so reading a field does not
//! cost a KMS call each time.
//!
//! `folio bench --key-cache-fields N` measures sealing and opening with the cache warm
//! and cold.
//!
//! An entry leaves the cache after `ttl`, when the cache is full (the oldest entry goes),
//! or when its key is destroyed. The counters feed the `folio_kms_data_key_cache_*`
//! metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::envelope::DataKey;
use uuid::Uuid;

/// Counters of the cache.
#[derive(Debug, Default)]
pub struct CacheMetrics {
    /// Lookups served from memory.
    pub hits: AtomicU64,
    /// Lookups that needed the KMS.
    pub misses: AtomicU64,
    /// Entries dropped for age or room.
    pub evictions: AtomicU64,
}

/// A bounded, time-limited map from data-key id to the unwrapped key.
pub struct DataKeyCache {
    entries: Mutex<HashMap<Uuid, (Arc<DataKey>, Instant)>>,
    ttl: Duration,
    max_entries: usize,
    /// Counters, shared with `/metrics`.
    pub metrics: Arc<CacheMetrics>,
}

impl DataKeyCache {
    /// Creates an empty cache. `max_entries` must be above 0.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        assert!(max_entries > 0, "a cache needs room for one key");
        DataKeyCache {
            entries: Mutex::new(HashMap::new()),
            ttl,
            max_entries,
            metrics: Arc::default(),
        }
    }

    /// Returns the key with id `id` if it is cached and younger than the TTL at `now`.
    pub fn get(&self, id: Uuid, now: Instant) -> Option<Arc<DataKey>> {
        let mut entries = self.lock();
        let found = match entries.get(&id) {
            Some((key, at)) if now.saturating_duration_since(*at) < self.ttl => Some(key.clone()),
            Some(_) => {
                entries.remove(&id);
                self.metrics.evictions.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => None,
        };
        let counter = if found.is_some() {
            &self.metrics.hits
        } else {
            &self.metrics.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches `key` at `now`, first dropping expired entries and, if still full, the
    /// oldest one.
    pub fn insert(&self, key: Arc<DataKey>, now: Instant) {
        let mut entries = self.lock();
        if entries.len() >= self.max_entries {
            let before = entries.len();
            entries.retain(|_, (_, at)| now.saturating_duration_since(*at) < self.ttl);
            if entries.len() >= self.max_entries {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(id, _)| *id);
                if let Some(id) = oldest {
                    entries.remove(&id);
                }
            }
            let dropped = (before - entries.len()) as u64;
            self.metrics.evictions.fetch_add(dropped, Ordering::Relaxed);
        }
        entries.insert(key.id(), (key, now));
        assert!(entries.len() <= self.max_entries);
    }

    /// Drops the key with id `id` (it was destroyed or rewrapped).
    pub fn remove(&self, id: Uuid) {
        self.lock().remove(&id);
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Returns whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (Arc<DataKey>, Instant)>> {
        // The map stays consistent even if a holder panicked.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn key(byte: u8) -> Arc<DataKey> {
        Arc::new(DataKey::new(
            Uuid::from_bytes([byte; 16]),
            Zeroizing::new([byte; 32]),
        ))
    }

    #[test]
    fn entries_expire_and_the_oldest_makes_room() {
        let cache = DataKeyCache::new(Duration::from_secs(10), 2);
        let start = Instant::now();
        cache.insert(key(1), start);
        cache.insert(key(2), start + Duration::from_secs(1));
        assert!(cache
            .get(key(1).id(), start + Duration::from_secs(5))
            .is_some());
        assert!(cache
            .get(key(1).id(), start + Duration::from_secs(10))
            .is_none());
        cache.insert(key(1), start + Duration::from_secs(2));
        cache.insert(key(3), start + Duration::from_secs(3));
        assert_eq!(cache.len(), 2);
        assert!(cache
            .get(key(2).id(), start + Duration::from_secs(3))
            .is_none());
        assert_eq!(cache.metrics.hits.load(Ordering::Relaxed), 1);
        assert_eq!(cache.metrics.misses.load(Ordering::Relaxed), 2);
        assert_eq!(cache.metrics.evictions.load(Ordering::Relaxed), 2);
    }
}
