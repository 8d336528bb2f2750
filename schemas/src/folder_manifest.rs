//! Which Parquet objects of an archive hour folder a reader sees.
//!
//! Compaction (and the row rewrites of `mcpulse admin delete --server`) replace objects of
//! a folder by new ones while queries may be listing and reading it. The rule that keeps a
//! reader from ever seeing a row twice or missing one:
//!
//! * New objects are written as `compacted-….parquet`. Such an object is visible only
//!   when the folder's latest manifest lists it as `live`; until then (or when a crash
//!   left it behind) it is ignored.
//! * The manifest, `_compaction-{generation}.json`, is created once per generation and
//!   never rewritten (create-if-absent, so of two concurrent compactors one wins). The
//!   reader uses the highest generation it lists. Its `covered` map names every object
//!   the live ones replaced (with when): those are hidden from then on, even if a writer
//!   replaying an old flush writes one of them again under its deterministic name.
//! * Any other object is visible.
//!
//! So the reader sees either the replaced objects (an older manifest, or none) or the
//! objects replacing them (the new manifest), never both. Replaced objects are deleted
//! only after a delay, so a query that listed the folder before the new manifest can
//! still read them. Whatever order the listing and the manifest were read in, the live
//! objects exist: they were written before the manifest that names them, and are deleted
//! only after a later manifest replaced them (and the delay passed).
//!
//! **Day folders.** Once a day is closed, compaction merges the small objects of its hour
//! folders into objects of the date's day folder, `date=…/hour=day` ([`DAY_HOUR`]), so a
//! query over a month opens one object per table, tenant and day instead of one per hour.
//! The day folder has manifests of its own, under the same rule; their `covered` map also
//! names the hour-folder objects a day object replaced, as `hour=HH/{name}`
//! ([`day_covered_key`]). A reader of an hour folder therefore also applies the latest
//! manifest of its date's day folder ([`visible_in_hour`]): the swap is still one manifest
//! created once, so a reader sees either the hour objects or the day objects that replaced
//! them, never both.
//!
//! Everything here is pure: the callers (the query catalog, the compactor) do the I/O.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Prefix of the objects compaction writes.
pub const COMPACTED_PREFIX: &str = "compacted-";
/// Prefix and suffix of a folder manifest's object name.
pub const MANIFEST_PREFIX: &str = "_compaction-";
pub const MANIFEST_SUFFIX: &str = ".json";

/// The `hour` partition value of a date's day folder (`date=…/hour=day`): the folder of
/// objects that hold a whole closed day of one tenant.
pub const DAY_HOUR: &str = "day";

/// The key under which a day folder's manifest covers object `name` of hour folder
/// `hour=HH` of the same date.
pub fn day_covered_key(hour: &str, name: &str) -> String {
    format!("hour={hour}/{name}")
}

/// The manifest of one hour (or day) folder at one generation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderManifest {
    /// 1 for the first manifest of a folder, then +1 for each.
    pub generation: u64,
    /// When this generation was written.
    pub written_at: DateTime<Utc>,
    /// The compacted objects that are visible (object names inside the folder).
    pub live: BTreeSet<String>,
    /// Objects replaced by live ones (or removed by a delete), and since when: hidden
    /// from readers, deleted once the delay has passed. Names stay here after the object
    /// is gone, so a replayed write of the same name stays hidden.
    pub covered: BTreeMap<String, DateTime<Utc>>,
}

/// Object name of the manifest of `generation`.
pub fn manifest_name(generation: u64) -> String {
    format!("{MANIFEST_PREFIX}{generation:010}{MANIFEST_SUFFIX}")
}

/// The generation of a manifest object name (`None` for other names).
pub fn manifest_generation(name: &str) -> Option<u64> {
    name.strip_prefix(MANIFEST_PREFIX)?
        .strip_suffix(MANIFEST_SUFFIX)?
        .parse()
        .ok()
}

/// Whether `name` is an object written by compaction.
pub fn is_compacted(name: &str) -> bool {
    name.starts_with(COMPACTED_PREFIX)
}

/// The last path segment of an object path.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The latest manifest generation among the object names of one folder.
pub fn latest_generation<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<u64> {
    names.into_iter().filter_map(manifest_generation).max()
}

/// What a reader sees of one folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Visibility {
    /// Listed Parquet objects that are visible.
    pub visible: Vec<String>,
    /// Live objects of the manifest that the listing did not show (listed before they
    /// were written): the reader must look them up and include them.
    pub unlisted_live: Vec<String>,
}

/// Applies the rule of the module docs to the object names listed in one folder and the
/// folder's latest manifest (if the listing showed one).
pub fn visible<'a>(
    listed: impl IntoIterator<Item = &'a str>,
    manifest: Option<&FolderManifest>,
) -> Visibility {
    let mut out = Visibility::default();
    let mut seen_live = BTreeSet::new();
    for name in listed {
        if !name.ends_with(".parquet") {
            continue;
        }
        let shown = match manifest {
            Some(m) if is_compacted(name) => {
                let live = m.live.contains(name);
                if live {
                    seen_live.insert(name);
                }
                live
            }
            None if is_compacted(name) => false,
            Some(m) => !m.covered.contains_key(name),
            None => true,
        };
        if shown {
            out.visible.push(name.to_string());
        }
    }
    if let Some(m) = manifest {
        out.unlisted_live = m
            .live
            .iter()
            .filter(|n| !seen_live.contains(n.as_str()))
            .cloned()
            .collect();
    }
    out
}

/// [`visible`] for hour folder `hour` (`HH`) of a date whose day folder's latest manifest
/// is `day`: objects that manifest covers (`hour=HH/{name}`) are hidden too, because a day
/// object holds their rows.
pub fn visible_in_hour<'a>(
    listed: impl IntoIterator<Item = &'a str>,
    manifest: Option<&FolderManifest>,
    hour: &str,
    day: Option<&FolderManifest>,
) -> Visibility {
    let mut out = visible(listed, manifest);
    if let Some(day) = day {
        let shown = |name: &String| !day.covered.contains_key(&day_covered_key(hour, name));
        out.visible.retain(shown);
        out.unlisted_live.retain(shown);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(live: &[&str], covered: &[&str]) -> FolderManifest {
        FolderManifest {
            generation: 1,
            written_at: DateTime::UNIX_EPOCH,
            live: live.iter().map(|s| s.to_string()).collect(),
            covered: covered
                .iter()
                .map(|s| (s.to_string(), DateTime::UNIX_EPOCH))
                .collect(),
        }
    }

    #[test]
    fn names() {
        assert_eq!(manifest_name(3), "_compaction-0000000003.json");
        assert_eq!(manifest_generation("_compaction-0000000003.json"), Some(3));
        assert_eq!(manifest_generation("_compaction-x.json"), None);
        assert_eq!(manifest_generation("a.parquet"), None);
        assert_eq!(
            latest_generation(["_compaction-0000000002.json", "_compaction-0000000010.json"]),
            Some(10)
        );
        assert_eq!(file_name("a/b/c.parquet"), "c.parquet");
        assert_eq!(file_name("c.parquet"), "c.parquet");
    }

    #[test]
    fn before_compaction_everything_but_orphans_is_visible() {
        let v = visible(
            [
                "a.parquet",
                "b.parquet",
                "compacted-1-x-0.parquet",
                "x.json",
            ],
            None,
        );
        assert_eq!(v.visible, ["a.parquet", "b.parquet"]);
        assert!(v.unlisted_live.is_empty());
    }

    #[test]
    fn a_manifest_swaps_the_covered_for_the_live() {
        let m = manifest(&["compacted-1-x-0.parquet"], &["a.parquet", "b.parquet"]);
        // Listed mid-compaction: old files and the new one, plus a late file.
        let v = visible(
            [
                "a.parquet",
                "b.parquet",
                "c.parquet",
                "compacted-1-x-0.parquet",
                "compacted-1-y-0.parquet",
            ],
            Some(&m),
        );
        assert_eq!(v.visible, ["c.parquet", "compacted-1-x-0.parquet"]);
        // Listed before the live object was written: it must be looked up.
        let v = visible(["a.parquet", "b.parquet"], Some(&m));
        assert!(v.visible.is_empty());
        assert_eq!(v.unlisted_live, ["compacted-1-x-0.parquet"]);
        // A covered name written again by a replay stays hidden.
        let v = visible(["a.parquet", "compacted-1-x-0.parquet"], Some(&m));
        assert_eq!(v.visible, ["compacted-1-x-0.parquet"]);
    }

    #[test]
    fn a_day_manifest_hides_what_its_day_objects_replaced() {
        let hour = manifest(&["compacted-1-x-0.parquet"], &["a.parquet"]);
        let day = manifest(
            &["compacted-1-d-0.parquet"],
            &[
                &day_covered_key("05", "compacted-1-x-0.parquet"),
                &day_covered_key("05", "b.parquet"),
                &day_covered_key("06", "c.parquet"),
            ],
        );
        let listed = [
            "a.parquet",
            "b.parquet",
            "c.parquet",
            "late.parquet",
            "compacted-1-x-0.parquet",
        ];
        // Hour 05: its own manifest hides a.parquet, the day's hides the rest but the
        // late object (written after the day was compacted).
        let v = visible_in_hour(listed, Some(&hour), "05", Some(&day));
        assert_eq!(v.visible, ["c.parquet", "late.parquet"]);
        assert!(v.unlisted_live.is_empty());
        // Another hour's names are not covered by hour 05's keys.
        let v = visible_in_hour(["b.parquet", "c.parquet"], None, "06", Some(&day));
        assert_eq!(v.visible, ["b.parquet"]);
        // Without a day manifest, the hour rule alone.
        let v = visible_in_hour(["a.parquet", "b.parquet"], Some(&hour), "05", None);
        assert_eq!(v.visible, ["b.parquet"]);
        assert_eq!(v.unlisted_live, ["compacted-1-x-0.parquet"]);
    }
}
