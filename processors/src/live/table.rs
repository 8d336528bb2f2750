//! A table of live series with a cap: label sets (`N` values, the tenant first) interned
//! by hash, each with its value; past `max_series` label sets, values fold into the one
//! overflow series (every label `__other__`), and the distinct label sets folded are
//! counted. Series idle for `retire_after` are dropped, freeing their place.
//!
//! Lookups of an existing series do not allocate: label values are sanitized (borrowed
//! when clean), hashed, and compared in place. Label values are untrusted, so the hash
//! is SipHash with per-process random keys (no crafted names colliding into one long
//! chain), not the fast FxHash the windows use.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Arc;

use super::labels::{FoldedKeys, OTHER, sanitize};
use crate::signals::windows::FxHasher;

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// How often (in seconds) a full table may be swept for idle series on insert.
const SWEEP_EVERY_S: u64 = 1;

struct Entry<const N: usize, V> {
    labels: [Arc<str>; N],
    value: V,
    /// Seconds (on the owner's clock) of the last value.
    last_seen: u64,
}

/// The series of one kind (tool calls, probes) and their cap.
pub struct SeriesTable<const N: usize, V> {
    /// Keyed by the (already random) SipHash of the labels.
    by_hash: FxMap<u64, Vec<Entry<N, V>>>,
    keys: RandomState,
    len: usize,
    overflow: Option<(V, u64)>,
    folded: FoldedKeys,
    max_series: usize,
    max_label_length: usize,
    retire_after_s: u64,
    last_sweep: u64,
    /// Where the last series looked up is (hash, index), until a retire moves entries.
    last: Option<(u64, usize)>,
}

/// The hash of a label set (each value followed by a byte no UTF-8 string contains).
pub(super) fn hash_labels(keys: &RandomState, labels: &[&str]) -> u64 {
    let mut h = keys.build_hasher();
    for l in labels {
        h.write(l.as_bytes());
        h.write_u8(0xff);
    }
    h.finish()
}

impl<const N: usize, V: Default> SeriesTable<N, V> {
    pub fn new(max_series: usize, max_label_length: usize, retire_after_s: u64) -> Self {
        Self {
            by_hash: FxMap::default(),
            keys: RandomState::new(),
            len: 0,
            overflow: None,
            folded: FoldedKeys::default(),
            max_series,
            max_label_length,
            retire_after_s,
            last_sweep: 0,
            last: None,
        }
    }

    /// The value of the series `labels` (sanitized first), created if there is room,
    /// else the overflow series'. `now` is seconds on the owner's clock.
    pub fn get(&mut self, labels: [&str; N], now: u64) -> &mut V {
        let max = self.max_label_length;
        let clean = labels.map(|l| sanitize(l, max));
        let refs: [&str; N] = std::array::from_fn(|i| clean[i].as_ref());
        let same = |e: &Entry<N, V>| e.labels.iter().map(|l| &**l).eq(refs.iter().copied());
        // Calls of one request are often of one tool: the last series, without hashing.
        let cached = self.last.filter(|(hash, i)| {
            self.by_hash
                .get(hash)
                .and_then(|entries| entries.get(*i))
                .is_some_and(same)
        });
        let (hash, position) = match cached {
            Some((hash, i)) => (hash, Some(i)),
            None => {
                let hash = hash_labels(&self.keys, &refs);
                let position = self
                    .by_hash
                    .get(&hash)
                    .and_then(|entries| entries.iter().position(same));
                (hash, position)
            }
        };
        if position.is_none()
            && self.len >= self.max_series
            && now >= self.last_sweep + SWEEP_EVERY_S
        {
            self.last_sweep = now;
            self.retire(now);
        }
        match position {
            Some(i) => {
                self.last = Some((hash, i));
                let entry = &mut self.by_hash.get_mut(&hash).expect("found above")[i];
                entry.last_seen = now;
                &mut entry.value
            }
            None if self.len < self.max_series => {
                self.len += 1;
                let entries = self.by_hash.entry(hash).or_default();
                self.last = Some((hash, entries.len()));
                entries.push(Entry {
                    labels: refs.map(Arc::from),
                    value: V::default(),
                    last_seen: now,
                });
                &mut entries.last_mut().expect("pushed").value
            }
            None => {
                self.folded.note(hash);
                let (value, last_seen) = self.overflow.get_or_insert_with(|| (V::default(), now));
                *last_seen = now;
                value
            }
        }
    }

    /// Drops series (the overflow one included) without values since `now - retire_after`.
    pub fn retire(&mut self, now: u64) {
        let Some(cutoff) = now.checked_sub(self.retire_after_s) else {
            return;
        };
        self.last = None;
        let mut dropped = 0;
        self.by_hash.retain(|_, entries| {
            let before = entries.len();
            entries.retain(|e| e.last_seen >= cutoff);
            dropped += before - entries.len();
            !entries.is_empty()
        });
        self.len -= dropped;
        if self
            .overflow
            .as_ref()
            .is_some_and(|(_, seen)| *seen < cutoff)
        {
            self.overflow = None;
        }
    }

    /// Label sets held, the overflow series included.
    pub fn len(&self) -> usize {
        self.len + usize::from(self.overflow.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distinct label sets folded into the overflow series so far.
    pub fn folded(&self) -> u64 {
        self.folded.count()
    }

    /// A copy of every series whose tenant (the first label) `visible` accepts and,
    /// with `overflow`, of the overflow series (it mixes tenants: for operators only).
    /// Cheap (labels are shared), so the owner's lock is held only while it is taken,
    /// not while the text is formatted.
    pub fn snapshot(&self, visible: impl Fn(&str) -> bool, overflow: bool) -> Snapshot<N, V>
    where
        V: Clone,
    {
        Snapshot {
            series: self
                .by_hash
                .values()
                .flatten()
                .filter(|e| visible(&e.labels[0]))
                .map(|e| (e.labels.clone(), e.value.clone()))
                .collect(),
            overflow: self
                .overflow
                .as_ref()
                .filter(|_| overflow)
                .map(|(v, _)| v.clone()),
        }
    }
}

/// Series copied out of a [`SeriesTable`].
pub struct Snapshot<const N: usize, V> {
    series: Vec<([Arc<str>; N], V)>,
    overflow: Option<V>,
}

impl<const N: usize, V> Snapshot<N, V> {
    /// The series sorted by labels, then the overflow series (every label `__other__`).
    pub fn sorted(self) -> Vec<([Arc<str>; N], V)> {
        let mut out = self.series;
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(value) = self.overflow {
            out.push((std::array::from_fn(|_| Arc::from(OTHER)), value));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize) -> SeriesTable<2, u64> {
        SeriesTable::new(max, 16, 60)
    }

    #[test]
    fn past_the_cap_values_fold_into_one_overflow_series() {
        let mut t = table(2);
        *t.get(["acme", "a"], 0) += 1;
        *t.get(["acme", "b"], 0) += 1;
        *t.get(["acme", "a"], 0) += 1;
        for name in ["c", "d", "c", "e"] {
            *t.get(["acme", name], 0) += 1;
        }
        assert_eq!(t.len(), 3, "two series and the overflow one");
        assert_eq!(t.folded(), 3, "c, d and e folded, c counted once");
        let series = t.snapshot(|_| true, true).sorted();
        let got: Vec<([&str; 2], u64)> =
            series.iter().map(|(l, v)| ([&*l[0], &*l[1]], *v)).collect();
        assert_eq!(
            got,
            [
                (["acme", "a"], 2),
                (["acme", "b"], 1),
                (["__other__", "__other__"], 4)
            ]
        );
        // Operators only: the overflow series has no tenant.
        assert_eq!(
            t.snapshot(|tenant| tenant == "acme", false).sorted().len(),
            2
        );
    }

    #[test]
    fn label_values_are_sanitized_before_they_key_a_series() {
        let mut t = table(10);
        let long_a = format!("{}a", "x".repeat(20));
        let long_b = format!("{}b", "x".repeat(20));
        *t.get(["acme", &long_a], 0) += 1;
        *t.get(["acme", &long_b], 0) += 1;
        *t.get(["acme", "bad\nname"], 0) += 1;
        let series = t.snapshot(|_| true, true).sorted();
        assert_eq!(series.len(), 2, "both long names cut to the same 16 bytes");
        assert_eq!(
            [&*series[0].0[0], &*series[0].0[1]],
            ["acme", "bad\u{FFFD}name"]
        );
        assert_eq!(&*series[1].0[1], "x".repeat(16));
        assert_eq!(series[1].1, 2);
    }

    #[test]
    fn idle_series_retire_and_free_their_place() {
        let mut t = table(1);
        *t.get(["acme", "old"], 0) += 1;
        *t.get(["acme", "folded"], 10) += 1;
        assert_eq!(t.folded(), 1);
        // 70 s later "old" is idle past retire_after (60 s): the next new series fits.
        *t.get(["acme", "new"], 70) += 1;
        let series = t.snapshot(|_| true, true).sorted();
        let names: Vec<&str> = series.iter().map(|(l, _)| &*l[1]).collect();
        assert_eq!(names, ["new", "__other__"]);
        t.retire(200);
        assert!(t.is_empty());
    }
}
