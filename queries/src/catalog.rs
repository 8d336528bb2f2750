//! The archive tables as DataFusion listing tables over
//! `{root}/{table}/tenant=…/date=…/hour=…/*.parquet`.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::DataType;
use datafusion::config::TableParquetOptions;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result;
use datafusion::execution::cache::TableScopedPath;
use datafusion::execution::cache::cache_manager::{
    CachedFileMetadata, CachedFileMetadataEntry, FileMetadataCache, FileStatisticsCache,
};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::prelude::SessionContext;
use mcpulse_schemas::Table;
use mcpulse_schemas::tables::PARTITION_COLUMNS;
use object_store::ObjectStore;
use object_store::path::Path;
use url::Url;

use crate::object_cache::ObjectCache;
use crate::view_types::as_views;
use crate::visible_store::{ManifestCache, VisibleStore};

/// Where the archive is and how to reach it.
#[derive(Clone)]
pub struct ArchiveCatalog {
    /// Root URL of the archive, ending in `/` (e.g. `file:///var/lib/mcpulse/archive/`).
    pub root: Url,
    /// The store serving `root`'s scheme and host.
    pub store: Arc<dyn ObjectStore>,
    /// Folder manifests read by earlier queries (they never change).
    manifests: Arc<ManifestCache>,
    /// Parquet footers and file statistics read by earlier queries (an entry is used only
    /// while the object's size and modification time are unchanged).
    footers: Arc<OnceLock<FooterCaches>>,
    /// Small objects read whole by earlier queries (created by the first query).
    objects: Arc<OnceLock<Arc<ObjectCache>>>,
}

/// The caches of Parquet footers and file statistics shared by a catalog's queries.
#[derive(Clone)]
pub struct FooterCaches {
    pub metadata: Arc<FileMetadataCache>,
    pub statistics: Arc<FileStatisticsCache>,
}

impl ArchiveCatalog {
    pub fn new(mut root: Url, store: Arc<dyn ObjectStore>) -> Self {
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        Self {
            root,
            store,
            manifests: Arc::default(),
            footers: Arc::default(),
            objects: Arc::default(),
        }
    }

    /// The footer caches of this catalog's queries, `limit` bytes for footers and a
    /// quarter of that for statistics (created by the first query).
    pub fn footer_caches(&self, limit: usize) -> FooterCaches {
        self.footers
            .get_or_init(|| FooterCaches {
                metadata: Arc::new(
                    DefaultCache::<Path, CachedFileMetadataEntry>::new(limit)
                        .with_name("mcpulse footers"),
                ),
                statistics: Arc::new(
                    DefaultCache::<TableScopedPath, CachedFileMetadata>::new(limit / 4)
                        .with_name("mcpulse file statistics"),
                ),
            })
            .clone()
    }

    /// The cache of small objects of this catalog's queries, `limit` bytes (created by
    /// the first query; `None` when `limit` is 0).
    pub fn object_cache(&self, limit: usize) -> Option<Arc<ObjectCache>> {
        (limit > 0).then(|| {
            self.objects
                .get_or_init(|| Arc::new(ObjectCache::new(limit)))
                .clone()
        })
    }

    /// Registers the store with `ctx` so listing tables can reach it. Listings go through
    /// [`VisibleStore`]: objects replaced by compaction (or a delete) are never listed
    /// together with what replaced them. Small objects are read whole through `objects`.
    pub fn register_store(&self, ctx: &SessionContext, objects: Option<Arc<ObjectCache>>) {
        let base = Url::parse(&format!(
            "{}://{}",
            self.root.scheme(),
            self.root.authority()
        ))
        .expect("valid base URL");
        ctx.register_object_store(
            &base,
            Arc::new(
                VisibleStore::with_cache(self.store.clone(), self.manifests.clone())
                    .with_object_cache(objects),
            ),
        );
    }

    /// A listing table over every tenant's files of `table`, with `tenant`, `date` and
    /// `hour` as partition columns (so filters on them prune folders).
    pub fn listing_table(
        &self,
        table: Table,
        parquet: TableParquetOptions,
        statistics: Option<Arc<FileStatisticsCache>>,
    ) -> Result<Arc<ListingTable>> {
        let url = ListingTableUrl::parse(
            self.root
                .join(&format!("{}/", table.name()))
                .expect("valid table URL"),
        )?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default().with_options(parquet)))
            .with_file_extension(".parquet")
            .with_table_partition_cols(
                PARTITION_COLUMNS
                    .iter()
                    .map(|c| (c.to_string(), DataType::Utf8))
                    .collect(),
            );
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(as_views(&table.schema()));
        Ok(Arc::new(
            ListingTable::try_new(config)?.with_cache(statistics),
        ))
    }
}
