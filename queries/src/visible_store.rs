//! The archive's object store as queries see it: listings show only the objects of each
//! hour folder that are visible under the compaction rule of
//! [`mcpulse_schemas::folder_manifest`], so a query running while a folder is compacted
//! (or rewritten by a delete) reads each row exactly once.
//!
//! Everything but listing is passed through. A listing is taken whole, grouped by folder;
//! for each folder whose listing shows a manifest, the latest one is read and applied,
//! and live objects the listing missed are looked up. DataFusion lists a table once per
//! query (and caches it for that query), so each query sees one consistent state.
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
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

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
}

impl VisibleStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self::with_cache(inner, Arc::default())
    }

    /// A store reading manifests through `manifests` (shared by the catalog's queries).
    pub fn with_cache(inner: Arc<dyn ObjectStore>, manifests: Arc<ManifestCache>) -> Self {
        Self { inner, manifests }
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

/// The visible objects of one folder, given what a listing showed of it.
pub async fn visible_in_folder(
    store: &dyn ObjectStore,
    cache: &ManifestCache,
    folder: &Path,
    mut listed: Vec<ObjectMeta>,
) -> Result<Vec<ObjectMeta>> {
    // Two attempts: a manifest listed may have been replaced and deleted since.
    for _ in 0..2 {
        let names = || {
            listed
                .iter()
                .map(|m| folder_manifest::file_name(m.location.as_ref()))
        };
        let Some(generation) = folder_manifest::latest_generation(names()) else {
            // No manifest: every object but compaction leftovers.
            let visibility = folder_manifest::visible(names(), None);
            return Ok(keep(listed, &visibility.visible));
        };
        let Some(manifest) = read_manifest(store, cache, folder, generation).await? else {
            listed = store.list_with_delimiter(Some(folder)).await?.objects;
            continue;
        };
        let visibility = folder_manifest::visible(names(), Some(manifest.as_ref()));
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

/// Applies the rule to a whole listing (any number of folders).
async fn filter_listing(
    store: Arc<dyn ObjectStore>,
    cache: Arc<ManifestCache>,
    listed: Vec<ObjectMeta>,
) -> Result<Vec<ObjectMeta>> {
    let mut folders: BTreeMap<Path, Vec<ObjectMeta>> = BTreeMap::new();
    for meta in listed {
        folders
            .entry(parent(&meta.location))
            .or_default()
            .push(meta);
    }
    let results: Vec<Vec<ObjectMeta>> = futures::stream::iter(folders)
        .map(|(folder, listed)| {
            let store = store.clone();
            let cache = cache.clone();
            async move { visible_in_folder(store.as_ref(), &cache, &folder, listed).await }
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
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let store = self.inner.clone();
        let cache = self.manifests.clone();
        let listing = self.inner.list(prefix);
        futures::stream::once(async move {
            let listed: Vec<ObjectMeta> = listing.try_collect().await?;
            filter_listing(store, cache, listed).await
        })
        .map_ok(|metas| futures::stream::iter(metas.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut result = self.inner.list_with_delimiter(prefix).await?;
        let objects = std::mem::take(&mut result.objects);
        result.objects =
            filter_listing(self.inner.clone(), self.manifests.clone(), objects).await?;
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
        let visible = visible_in_folder(inner.as_ref(), &ManifestCache::default(), &dir, listed)
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
}
