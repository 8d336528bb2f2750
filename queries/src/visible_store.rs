//! The archive's object store as queries see it: listings show only the objects of each
//! hour folder that are visible under the compaction rule of
//! [`mcpulse_schemas::folder_manifest`], so a query running while a folder is compacted
//! (or rewritten by a delete) reads each row exactly once.
//!
//! Everything but listing is passed through. A listing is taken whole, grouped by folder;
//! for each folder whose listing shows a manifest, the latest one is read and applied,
//! and live objects the listing missed are looked up. A store serves one query and keeps
//! each recursive listing it took, so every scan of the query (two CTEs over one table, a
//! self-join) sees one consistent state, listed once.
//!
//! A manifest object is created once and never rewritten, so the manifests read are kept
//! (in a [`ManifestCache`] the catalog shares between queries): a query over a month of
//! compacted hours lists the folders but reads no manifest it has read before.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use mcpulse_schemas::folder_manifest::{self, FolderManifest};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, Result,
};

use crate::object_cache::{ObjectCache, slice_ranges};

/// Folders whose manifests are read at the same time.
const CONCURRENCY: usize = 16;
/// Manifests kept; past this the cache starts over.
const CACHED_MANIFESTS: usize = 8192;

/// Folder manifests already read, by object path.
#[derive(Debug, Default)]
pub struct ManifestCache {
    entries: Mutex<HashMap<Path, Arc<FolderManifest>>>,
}

impl ManifestCache {
    fn get(&self, path: &Path) -> Option<Arc<FolderManifest>> {
        self.entries
            .lock()
            .expect("not poisoned")
            .get(path)
            .cloned()
    }

    fn put(&self, path: Path, manifest: Arc<FolderManifest>) {
        let mut entries = self.entries.lock().expect("not poisoned");
        if entries.len() >= CACHED_MANIFESTS {
            entries.clear();
        }
        entries.insert(path, manifest);
    }
}

/// Wraps a store so that listings honour folder manifests.
#[derive(Debug)]
pub struct VisibleStore {
    inner: Arc<dyn ObjectStore>,
    manifests: Arc<ManifestCache>,
    /// Day folder listings taken by this store (a store serves one query).
    days: Arc<DayListings>,
    /// Small objects kept whole between queries, if on.
    objects: Option<Arc<ObjectCache>>,
    /// The objects this store's listings showed that `objects` may keep, as listed.
    cacheable: Arc<Mutex<HashMap<Path, ObjectMeta>>>,
    /// Recursive listings taken by this store, by prefix: every scan of one query (a
    /// self-join, two CTEs over one table) sees the same objects, listed once.
    listings: Arc<Mutex<HashMap<Option<Path>, Listing>>>,
}

/// A recursive listing, taken once.
type Listing = Arc<tokio::sync::OnceCell<Arc<Vec<ObjectMeta>>>>;

impl VisibleStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self::with_cache(inner, Arc::default())
    }

    /// A store reading manifests through `manifests` (shared by the catalog's queries).
    pub fn with_cache(inner: Arc<dyn ObjectStore>, manifests: Arc<ManifestCache>) -> Self {
        Self {
            inner,
            manifests,
            days: Arc::default(),
            objects: None,
            cacheable: Arc::default(),
            listings: Arc::default(),
        }
    }

    /// The same store, reading the small objects its listings show through `objects`.
    pub fn with_object_cache(mut self, objects: Option<Arc<ObjectCache>>) -> Self {
        self.objects = objects;
        self
    }

    /// The whole of `location` (and the object as listed) from the object cache, read and
    /// kept on a miss, when a listing of this store showed it and it is small; `None` to
    /// read it from the store.
    async fn cached_whole(&self, location: &Path) -> Result<Option<(ObjectMeta, Bytes)>> {
        let Some(objects) = &self.objects else {
            return Ok(None);
        };
        let Some(meta) = self
            .cacheable
            .lock()
            .expect("not poisoned")
            .get(location)
            .cloned()
        else {
            return Ok(None);
        };
        if let Some(bytes) = objects.get(&meta) {
            return Ok(Some((meta, bytes)));
        }
        let got = self.inner.get(location).await?;
        if got.meta.size != meta.size || got.meta.last_modified != meta.last_modified {
            // Not the object the listing showed (never expected: objects are immutable).
            return Ok(None);
        }
        let bytes = got.bytes().await?;
        objects.put(&meta, bytes.clone());
        Ok((bytes.len() as u64 == meta.size).then_some((meta, bytes)))
    }
}

/// Notes the objects of a listing that `objects` may keep.
fn note_cacheable(
    objects: Option<&ObjectCache>,
    cacheable: &Mutex<HashMap<Path, ObjectMeta>>,
    listed: &[ObjectMeta],
) {
    let Some(objects) = objects else {
        return;
    };
    let mut cacheable = cacheable.lock().expect("not poisoned");
    for meta in listed {
        if objects.admits(meta) && meta.location.as_ref().ends_with(".parquet") {
            cacheable.insert(meta.location.clone(), meta.clone());
        }
    }
}

impl fmt::Display for VisibleStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VisibleStore({})", self.inner)
    }
}

/// The folder of an object path (everything before the last segment).
fn parent(location: &Path) -> Path {
    let parts: Vec<_> = location.parts().collect();
    Path::from_iter(parts[..parts.len().saturating_sub(1)].iter().cloned())
}

/// Reads the manifest of generation `generation` in `folder` (`None` if it is gone: an
/// older generation deleted since the listing).
async fn read_manifest(
    store: &dyn ObjectStore,
    cache: &ManifestCache,
    folder: &Path,
    generation: u64,
) -> Result<Option<Arc<FolderManifest>>> {
    let path = folder
        .clone()
        .join(folder_manifest::manifest_name(generation).as_str());
    if let Some(manifest) = cache.get(&path) {
        return Ok(Some(manifest));
    }
    match store.get(&path).await {
        Ok(got) => {
            let bytes = got.bytes().await?;
            let manifest: FolderManifest =
                serde_json::from_slice(&bytes).map_err(|e| object_store::Error::Generic {
                    store: "archive",
                    source: format!("corrupt folder manifest {path}: {e}").into(),
                })?;
            let manifest = Arc::new(manifest);
            cache.put(path, manifest.clone());
            Ok(Some(manifest))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a folder is, from its last path segment.
enum FolderKind {
    /// `hour=HH`: judged against its own manifest and its date's day folder's.
    Hour { hour: String, day_folder: Path },
    /// `hour=day`: a closed day's objects.
    Day,
    /// Anything else (not an archive table folder): its own manifest only.
    Other,
}

fn folder_kind(folder: &Path) -> FolderKind {
    let parts: Vec<_> = folder.parts().collect();
    let Some(hour) = parts
        .last()
        .and_then(|p| p.as_ref().strip_prefix("hour=").map(str::to_string))
    else {
        return FolderKind::Other;
    };
    if hour == folder_manifest::DAY_HOUR {
        return FolderKind::Day;
    }
    let day_folder = Path::from_iter(parts[..parts.len() - 1].iter().cloned())
        .join(format!("hour={}", folder_manifest::DAY_HOUR).as_str());
    FolderKind::Hour { hour, day_folder }
}

/// The listings of day folders one store (one query) has taken: the day folder and every
/// hour folder of its date are judged against the same listing, so a day compaction that
/// commits while the query lists never shows a row twice (day objects from a later
/// listing, hour objects hidden only by a manifest an earlier listing missed).
#[derive(Debug, Default)]
pub struct DayListings {
    entries: Mutex<HashMap<Path, Arc<tokio::sync::OnceCell<Vec<ObjectMeta>>>>>,
}

impl DayListings {
    /// The listing of `day_folder`: the one taken before, else `listed` (what the caller
    /// just listed of it), else a new listing.
    async fn get(
        &self,
        store: &dyn ObjectStore,
        day_folder: &Path,
        listed: Option<Vec<ObjectMeta>>,
    ) -> Result<Vec<ObjectMeta>> {
        let cell = self
            .entries
            .lock()
            .expect("not poisoned")
            .entry(day_folder.clone())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async move {
            match listed {
                Some(listed) => Ok(listed),
                None => match store.list_with_delimiter(Some(day_folder)).await {
                    Ok(result) => Ok(result.objects),
                    Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
                    Err(e) => Err(e),
                },
            }
        })
        .await
        .cloned()
    }
}

/// The latest manifest a folder listing shows (`Ok(None)` when it shows none); an error if
/// it was deleted since (a query running longer than the delete delay).
async fn latest_manifest(
    store: &dyn ObjectStore,
    cache: &ManifestCache,
    folder: &Path,
    listed: &[ObjectMeta],
) -> Result<Option<Arc<FolderManifest>>> {
    let names = listed
        .iter()
        .map(|m| folder_manifest::file_name(m.location.as_ref()));
    let Some(generation) = folder_manifest::latest_generation(names) else {
        return Ok(None);
    };
    match read_manifest(store, cache, folder, generation).await? {
        Some(manifest) => Ok(Some(manifest)),
        None => Err(object_store::Error::Generic {
            store: "archive",
            source: format!(
                "the manifest of {folder} changed while the query listed it (a query \
                 outlived archive.maintenance.delete_delay)"
            )
            .into(),
        }),
    }
}

/// The visible objects of one folder, given what a listing showed of it. `day` is the
/// latest manifest of the date's day folder when `folder` is hour folder `hour=HH`.
pub async fn visible_in_folder(
    store: &dyn ObjectStore,
    cache: &ManifestCache,
    folder: &Path,
    mut listed: Vec<ObjectMeta>,
    day: Option<(&str, Option<&FolderManifest>)>,
) -> Result<Vec<ObjectMeta>> {
    let (hour, day) = match day {
        Some((hour, day)) => (hour, day),
        None => ("", None),
    };
    // Two attempts: a manifest listed may have been replaced and deleted since.
    for _ in 0..2 {
        let names = || {
            listed
                .iter()
                .map(|m| folder_manifest::file_name(m.location.as_ref()))
        };
        let Some(generation) = folder_manifest::latest_generation(names()) else {
            // No manifest: every object but compaction leftovers.
            let visibility = folder_manifest::visible_in_hour(names(), None, hour, day);
            return Ok(keep(listed, &visibility.visible));
        };
        let Some(manifest) = read_manifest(store, cache, folder, generation).await? else {
            listed = store.list_with_delimiter(Some(folder)).await?.objects;
            continue;
        };
        let visibility =
            folder_manifest::visible_in_hour(names(), Some(manifest.as_ref()), hour, day);
        let mut out = keep(listed, &visibility.visible);
        for name in &visibility.unlisted_live {
            out.push(store.head(&folder.clone().join(name.as_str())).await?);
        }
        return Ok(out);
    }
    Err(object_store::Error::Generic {
        store: "archive",
        source: format!("the manifests of {folder} keep changing while listing it").into(),
    })
}

/// The visible objects of one folder of a listing, day folders taken into account.
async fn visible_objects(
    store: &dyn ObjectStore,
    cache: &ManifestCache,
    days: &DayListings,
    folder: &Path,
    listed: Vec<ObjectMeta>,
) -> Result<Vec<ObjectMeta>> {
    match folder_kind(folder) {
        FolderKind::Other => visible_in_folder(store, cache, folder, listed, None).await,
        FolderKind::Day => {
            let listed = days.get(store, folder, Some(listed)).await?;
            visible_in_folder(store, cache, folder, listed, None).await
        }
        FolderKind::Hour { hour, day_folder } => {
            let day_listed = days.get(store, &day_folder, None).await?;
            let day = latest_manifest(store, cache, &day_folder, &day_listed).await?;
            visible_in_folder(
                store,
                cache,
                folder,
                listed,
                Some((hour.as_str(), day.as_deref())),
            )
            .await
        }
    }
}

/// The objects of `listed` that are visible, plus everything that is not Parquet.
fn keep(listed: Vec<ObjectMeta>, visible: &[String]) -> Vec<ObjectMeta> {
    listed
        .into_iter()
        .filter(|m| {
            let name = folder_manifest::file_name(m.location.as_ref());
            !name.ends_with(".parquet") || visible.iter().any(|v| v == name)
        })
        .collect()
}

/// Applies the rule to a whole listing (any number of folders). `recursive` is the
/// prefix of a recursive listing: every folder under it is in `listed` as it was when
/// listed, so a day folder under it that `listed` does not show was absent (or empty)
/// then, and the hour folders of its date are judged as of then too. Listing it now
/// instead could find a day manifest committed since, hiding hour objects whose day
/// objects this listing never saw.
async fn filter_listing(
    store: Arc<dyn ObjectStore>,
    cache: Arc<ManifestCache>,
    days: Arc<DayListings>,
    listed: Vec<ObjectMeta>,
    recursive: Option<Path>,
) -> Result<Vec<ObjectMeta>> {
    let mut folders: BTreeMap<Path, Vec<ObjectMeta>> = BTreeMap::new();
    for meta in listed {
        folders
            .entry(parent(&meta.location))
            .or_default()
            .push(meta);
    }
    if let Some(prefix) = &recursive {
        for folder in folders.keys() {
            if let FolderKind::Hour { day_folder, .. } = folder_kind(folder)
                && day_folder.prefix_matches(prefix)
            {
                let listed = folders.get(&day_folder).cloned().unwrap_or_default();
                days.get(store.as_ref(), &day_folder, Some(listed)).await?;
            }
        }
    }
    let results: Vec<Vec<ObjectMeta>> = futures::stream::iter(folders)
        .map(|(folder, listed)| {
            let store = store.clone();
            let cache = cache.clone();
            let days = days.clone();
            async move { visible_objects(store.as_ref(), &cache, &days, &folder, listed).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(results.into_iter().flatten().collect())
}

#[async_trait]
impl ObjectStore for VisibleStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let plain = options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none()
            && !options.head;
        if plain && let Some((meta, whole)) = self.cached_whole(location).await? {
            let len = whole.len() as u64;
            let range = match &options.range {
                Some(range) => range.as_range(len).ok(),
                None => Some(0..len),
            };
            if let Some(range) = range
                && let Some(mut parts) = slice_ranges(&whole, std::slice::from_ref(&range))
            {
                let part = parts.pop().expect("one range");
                return Ok(GetResult {
                    payload: GetResultPayload::Stream(
                        futures::stream::once(async move { Ok(part) }).boxed(),
                    ),
                    meta,
                    range,
                    attributes: Attributes::default(),
                });
            }
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if let Some((_, whole)) = self.cached_whole(location).await?
            && let Some(parts) = slice_ranges(&whole, ranges)
        {
            return Ok(parts);
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let listing = self
            .listings
            .lock()
            .expect("not poisoned")
            .entry(prefix.cloned())
            .or_default()
            .clone();
        let store = self.inner.clone();
        let cache = self.manifests.clone();
        let days = self.days.clone();
        let objects = self.objects.clone();
        let cacheable = self.cacheable.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            let visible = listing
                .get_or_try_init(|| async move {
                    let listed: Vec<ObjectMeta> = store.list(prefix.as_ref()).try_collect().await?;
                    let recursive = prefix.unwrap_or_default();
                    let visible =
                        filter_listing(store, cache, days, listed, Some(recursive)).await?;
                    note_cacheable(objects.as_deref(), &cacheable, &visible);
                    Ok::<_, object_store::Error>(Arc::new(visible))
                })
                .await?
                .clone();
            Ok::<_, object_store::Error>(futures::stream::iter(
                (0..visible.len()).map(move |i| Ok(visible[i].clone())),
            ))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut result = self.inner.list_with_delimiter(prefix).await?;
        let objects = std::mem::take(&mut result.objects);
        result.objects = filter_listing(
            self.inner.clone(),
            self.manifests.clone(),
            self.days.clone(),
            objects,
            None,
        )
        .await?;
        note_cacheable(self.objects.as_deref(), &self.cacheable, &result.objects);
        Ok(result)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use object_store::memory::InMemory;

    async fn put(store: &InMemory, path: &str) {
        store
            .put(&Path::from(path), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }

    async fn names(store: &VisibleStore, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = store
            .list(Some(&Path::from(prefix)))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        names.sort();
        names
    }

    #[tokio::test]
    async fn listings_follow_the_latest_manifest() {
        let inner = Arc::new(InMemory::new());
        let dir = "t/probes/tenant=a/date=2026-01-01/hour=00";
        put(&inner, &format!("{dir}/p-0-1.parquet")).await;
        put(&inner, &format!("{dir}/p-2-3.parquet")).await;
        put(
            &inner,
            &format!("{dir}/compacted-0000000001-ab-000.parquet"),
        )
        .await;
        put(
            &inner,
            "t/probes/tenant=a/date=2026-01-01/hour=01/p-4-5.parquet",
        )
        .await;
        let store = VisibleStore::new(inner.clone());
        // Before the manifest: the originals, not the compacted object.
        assert_eq!(
            names(&store, "t/probes").await,
            [
                format!("{dir}/p-0-1.parquet"),
                format!("{dir}/p-2-3.parquet"),
                "t/probes/tenant=a/date=2026-01-01/hour=01/p-4-5.parquet".to_string()
            ]
        );
        let manifest = FolderManifest {
            generation: 1,
            written_at: Utc::now(),
            live: ["compacted-0000000001-ab-000.parquet".to_string()].into(),
            covered: [
                ("p-0-1.parquet".to_string(), Utc::now()),
                ("p-2-3.parquet".to_string(), Utc::now()),
            ]
            .into(),
        };
        inner
            .put(
                &Path::from(format!("{dir}/{}", folder_manifest::manifest_name(1))),
                PutPayload::from(serde_json::to_vec(&manifest).unwrap()),
            )
            .await
            .unwrap();
        // A later query (a store of its own) follows the manifest.
        let store = VisibleStore::new(inner.clone());
        let listed = names(&store, "t/probes").await;
        assert_eq!(
            listed,
            [
                format!("{dir}/_compaction-0000000001.json"),
                format!("{dir}/compacted-0000000001-ab-000.parquet"),
                "t/probes/tenant=a/date=2026-01-01/hour=01/p-4-5.parquet".to_string()
            ]
        );
        let with_delimiter = store
            .list_with_delimiter(Some(&Path::from(dir)))
            .await
            .unwrap();
        assert_eq!(with_delimiter.objects.len(), 2);
    }

    #[tokio::test]
    async fn live_objects_missing_from_a_listing_are_looked_up() {
        let inner = Arc::new(InMemory::new());
        let dir = Path::from("t/x/tenant=a/date=2026-01-01/hour=00");
        put(
            &inner,
            &format!("{dir}/compacted-0000000001-ab-000.parquet"),
        )
        .await;
        let manifest = FolderManifest {
            generation: 1,
            written_at: Utc::now(),
            live: ["compacted-0000000001-ab-000.parquet".to_string()].into(),
            covered: [("old.parquet".to_string(), Utc::now())].into(),
        };
        put(&inner, &format!("{dir}/old.parquet")).await;
        let manifest_path = dir.clone().join(folder_manifest::manifest_name(1).as_str());
        inner
            .put(
                &manifest_path,
                PutPayload::from(serde_json::to_vec(&manifest).unwrap()),
            )
            .await
            .unwrap();
        // A listing taken before the compacted object was written, manifest read after.
        let listed = vec![
            inner.head(&dir.clone().join("old.parquet")).await.unwrap(),
            inner.head(&manifest_path).await.unwrap(),
        ];
        let visible = visible_in_folder(
            inner.as_ref(),
            &ManifestCache::default(),
            &dir,
            listed,
            None,
        )
        .await
        .unwrap();
        let names: Vec<&str> = visible
            .iter()
            .map(|m| folder_manifest::file_name(m.location.as_ref()))
            .collect();
        assert_eq!(
            names,
            [
                "_compaction-0000000001.json",
                "compacted-0000000001-ab-000.parquet"
            ]
        );
    }

    async fn put_manifest(store: &InMemory, folder: &str, manifest: &FolderManifest) {
        store
            .put(
                &Path::from(format!(
                    "{folder}/{}",
                    folder_manifest::manifest_name(manifest.generation)
                )),
                PutPayload::from(serde_json::to_vec(manifest).unwrap()),
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_day_folder_replaces_the_hour_objects_it_covers() {
        let inner = Arc::new(InMemory::new());
        let date = "t/probes/tenant=a/date=2026-01-01";
        put(&inner, &format!("{date}/hour=00/p-0-1.parquet")).await;
        put(&inner, &format!("{date}/hour=05/p-2-3.parquet")).await;
        put(
            &inner,
            &format!("{date}/hour=day/compacted-0000000001-d-000.parquet"),
        )
        .await;
        // Before the day manifest: the hour objects only.
        let before = VisibleStore::new(inner.clone());
        assert_eq!(
            names(&before, "t/probes").await,
            [
                format!("{date}/hour=00/p-0-1.parquet"),
                format!("{date}/hour=05/p-2-3.parquet"),
            ]
        );
        // The day manifest commits while `before` is still in its query: its listing of
        // the day folder was taken, so it keeps seeing the hour objects (never both).
        let day = FolderManifest {
            generation: 1,
            written_at: Utc::now(),
            live: ["compacted-0000000001-d-000.parquet".to_string()].into(),
            covered: [
                (
                    folder_manifest::day_covered_key("00", "p-0-1.parquet"),
                    Utc::now(),
                ),
                (
                    folder_manifest::day_covered_key("05", "p-2-3.parquet"),
                    Utc::now(),
                ),
            ]
            .into(),
        };
        put_manifest(&inner, &format!("{date}/hour=day"), &day).await;
        // A late object, written after the day was compacted.
        put(&inner, &format!("{date}/hour=05/p-4-5.parquet")).await;
        let parquet = |names: Vec<String>| -> Vec<String> {
            names
                .into_iter()
                .filter(|n| n.ends_with(".parquet"))
                .collect()
        };
        // Its listings are one snapshot: the same objects again, not the day objects and
        // not the object written since.
        assert_eq!(
            parquet(names(&before, "t/probes").await),
            [
                format!("{date}/hour=00/p-0-1.parquet"),
                format!("{date}/hour=05/p-2-3.parquet"),
            ]
        );
        // A listing of a narrower prefix is taken afresh, still against the day folder's
        // listing `before` took: the hour objects (with the late one), never the day's.
        assert_eq!(
            parquet(names(&before, &format!("{date}/hour=05")).await),
            [
                format!("{date}/hour=05/p-2-3.parquet"),
                format!("{date}/hour=05/p-4-5.parquet"),
            ]
        );
        // A new query: the day object and the late object.
        let after = VisibleStore::new(inner.clone());
        assert_eq!(
            parquet(names(&after, "t/probes").await),
            [
                format!("{date}/hour=05/p-4-5.parquet"),
                format!("{date}/hour=day/compacted-0000000001-d-000.parquet"),
            ]
        );
        // A recursive listing taken before the day folder existed: the day manifest
        // committed after it must not hide the hour objects it showed.
        let inner2 = Arc::new(InMemory::new());
        put(&inner2, &format!("{date}/hour=00/p-0-1.parquet")).await;
        let early = VisibleStore::new(inner2.clone());
        let listed: Vec<ObjectMeta> = inner2
            .list(Some(&Path::from("t/probes")))
            .try_collect()
            .await
            .unwrap();
        put(
            &inner2,
            &format!("{date}/hour=day/compacted-0000000001-d-000.parquet"),
        )
        .await;
        put_manifest(&inner2, &format!("{date}/hour=day"), &day).await;
        let seen = filter_listing(
            inner2.clone(),
            early.manifests.clone(),
            early.days.clone(),
            listed,
            Some(Path::from("t/probes")),
        )
        .await
        .unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        // Listing one hour folder at a time (as a pruned scan does) agrees.
        let pruned = VisibleStore::new(inner.clone());
        let hour05 = pruned
            .list_with_delimiter(Some(&Path::from(format!("{date}/hour=05"))))
            .await
            .unwrap();
        assert_eq!(hour05.objects.len(), 1);
        let hour00 = pruned
            .list_with_delimiter(Some(&Path::from(format!("{date}/hour=00"))))
            .await
            .unwrap();
        assert!(hour00.objects.is_empty());
    }
}
