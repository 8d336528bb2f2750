//! Small archive objects kept whole in memory between queries.
//!
//! The small tables (`alerts`, `drift`, `notifications`) hold tens of rows per tenant and
//! day, so a month-wide query opens thousands of objects of a few kilobytes each and
//! spends its time on opening and reading files rather than on rows. An archive object
//! never changes under one name (compaction and deletes write new names), so one read
//! whole stays valid; an entry is used only while the object's size and modification time
//! are what the query's listing showed, and an object no listing shows (deleted, or hidden
//! by a compaction) is never asked for. DuckDB keeps what it read in its buffer pool the
//! same way (its external file cache).
//!
//! Entries are evicted oldest first once the cache holds `limit` bytes; only objects of at
//! most [`ObjectCache::max_object`] bytes are kept, so the large `probes` and `signals`
//! objects of a month-wide scan never push the small tables out.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::ObjectMeta;
use object_store::path::Path;

/// Largest object kept, as a share of the cache (and never more than 256 KiB).
const MAX_OBJECT_SHARE: usize = 64;
const MAX_OBJECT_BYTES: usize = 256 * 1024;

/// Whole objects by path, bounded in bytes.
#[derive(Debug)]
pub struct ObjectCache {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Path, Entry>,
    /// Paths in insertion order (eviction order).
    order: VecDeque<Path>,
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    last_modified: DateTime<Utc>,
    bytes: Bytes,
}

impl ObjectCache {
    /// A cache of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            state: Mutex::default(),
        }
    }

    /// The largest object this cache keeps.
    pub fn max_object(&self) -> usize {
        (self.limit / MAX_OBJECT_SHARE).min(MAX_OBJECT_BYTES)
    }

    /// Whether an object as listed is small enough to be kept.
    pub fn admits(&self, meta: &ObjectMeta) -> bool {
        meta.size > 0 && meta.size <= self.max_object() as u64
    }

    /// The bytes of the object `meta` describes, if kept and unchanged.
    pub fn get(&self, meta: &ObjectMeta) -> Option<Bytes> {
        let state = self.state.lock().expect("not poisoned");
        let entry = state.entries.get(&meta.location)?;
        (entry.size == meta.size && entry.last_modified == meta.last_modified)
            .then(|| entry.bytes.clone())
    }

    /// Keeps `bytes` as the whole of the object `meta` describes (ignored unless they are
    /// the whole object and it is small enough), evicting the oldest entries past the
    /// limit.
    pub fn put(&self, meta: &ObjectMeta, bytes: Bytes) {
        if !self.admits(meta) || bytes.len() as u64 != meta.size {
            return;
        }
        let mut state = self.state.lock().expect("not poisoned");
        let entry = Entry {
            size: meta.size,
            last_modified: meta.last_modified,
            bytes,
        };
        let added = entry.bytes.len();
        match state.entries.insert(meta.location.clone(), entry) {
            Some(old) => state.bytes -= old.bytes.len(),
            None => state.order.push_back(meta.location.clone()),
        }
        state.bytes += added;
        while state.bytes > self.limit {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            if let Some(old) = state.entries.remove(&oldest) {
                state.bytes -= old.bytes.len();
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.state.lock().expect("not poisoned").bytes
    }
}

/// The parts of `whole` that `ranges` name (`None` if one reaches past its end).
pub fn slice_ranges(whole: &Bytes, ranges: &[std::ops::Range<u64>]) -> Option<Vec<Bytes>> {
    ranges
        .iter()
        .map(|r| {
            let (start, end) = (usize::try_from(r.start).ok()?, usize::try_from(r.end).ok()?);
            (start <= end && end <= whole.len()).then(|| whole.slice(start..end))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &str, size: u64, modified_secs: i64) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(path),
            last_modified: DateTime::from_timestamp(modified_secs, 0).unwrap(),
            size,
            e_tag: None,
            version: None,
        }
    }

    #[test]
    fn an_entry_serves_only_the_object_as_listed() {
        let cache = ObjectCache::new(1 << 20);
        let m = meta("a/x.parquet", 4, 10);
        cache.put(&m, Bytes::from_static(b"abcd"));
        assert_eq!(cache.get(&m).unwrap(), Bytes::from_static(b"abcd"));
        // Another size or modification time: the object is not the one kept.
        assert!(cache.get(&meta("a/x.parquet", 5, 10)).is_none());
        assert!(cache.get(&meta("a/x.parquet", 4, 11)).is_none());
        assert!(cache.get(&meta("a/y.parquet", 4, 10)).is_none());
    }

    #[test]
    fn partial_or_large_objects_are_not_kept() {
        let cache = ObjectCache::new(64 * 1024);
        assert_eq!(cache.max_object(), 1024);
        let partial = meta("a/x.parquet", 8, 0);
        cache.put(&partial, Bytes::from_static(b"abcd"));
        assert!(cache.get(&partial).is_none());
        let large = meta("a/big.parquet", 2048, 0);
        cache.put(&large, Bytes::from(vec![0u8; 2048]));
        assert!(cache.get(&large).is_none());
        assert_eq!(cache.bytes(), 0);
        let empty = meta("a/empty.parquet", 0, 0);
        assert!(!cache.admits(&empty));
    }

    #[test]
    fn the_oldest_entries_go_first_past_the_limit() {
        let cache = ObjectCache::new(64 * 1024);
        let metas: Vec<_> = (0..80)
            .map(|i| meta(&format!("a/{i}.parquet"), 1000, 0))
            .collect();
        for m in &metas {
            cache.put(m, Bytes::from(vec![1u8; 1000]));
        }
        assert!(cache.bytes() <= 64 * 1024);
        assert!(cache.get(&metas[0]).is_none(), "the first in is evicted");
        assert!(cache.get(&metas[79]).is_some(), "the last in is kept");
        // Replacing an entry does not count its bytes twice.
        cache.put(&metas[79], Bytes::from(vec![2u8; 1000]));
        assert_eq!(cache.bytes() % 1000, 0);
        assert_eq!(cache.get(&metas[79]).unwrap()[0], 2);
    }

    #[test]
    fn ranges_are_cut_from_the_whole_object() {
        let whole = Bytes::from_static(b"0123456789");
        let parts = slice_ranges(&whole, &[0..2, 5..10, 3..3]).unwrap();
        assert_eq!(parts, [&b"01"[..], &b"56789"[..], &b""[..]]);
        assert!(slice_ranges(&whole, &[0..1, 8..11]).is_none());
    }
}
