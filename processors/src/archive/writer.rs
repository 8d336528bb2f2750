//! Writing one Parquet object: rows sorted by (server, time), zstd, ~128k-row row groups,
//! delta-encoded timestamps, sorting columns and min/max time declared in the footer.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use bytes::Bytes;
use mcpulse_schemas::Table;
use mcpulse_schemas::tables::{META_MAX_TIME, META_MIN_TIME, META_TENANT};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::config::ArchiveConfig;
use super::layout::rfc3339_ns;
use super::manifest::retryable;
use crate::operator::OperatorError;

/// Columns never worth a dictionary (unique per row).
const HIGH_CARDINALITY: [&str; 4] = ["trace_id", "span_id", "parent_span_id", "probe_id"];

/// Where objects go: a store, the root path inside it, and (for `file://`) the local
/// directory of that root so written files can be fsynced.
#[derive(Clone)]
pub struct ArchiveTarget {
    pub store: Arc<dyn ObjectStore>,
    pub root: Path,
    pub local_root: Option<PathBuf>,
}

/// Encodes batches of one table as Parquet.
pub struct ParquetEncoder {
    table: Table,
    config: ArchiveConfig,
}

impl ParquetEncoder {
    pub fn new(table: Table, config: ArchiveConfig) -> Self {
        Self { table, config }
    }

    /// Sorts `batch` by (server, time) and encodes it as one Parquet file whose footer
    /// names the tenant and the min/max event time.
    pub fn encode(&self, batch: &RecordBatch, tenant: &str) -> Result<Bytes, OperatorError> {
        let sorted = self.sort(batch)?;
        let time_idx = sorted
            .schema()
            .index_of(self.table.time_column())
            .map_err(fatal)?;
        let times = sorted
            .column(time_idx)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .ok_or_else(|| {
                OperatorError::Fatal("time column is not a nanosecond timestamp".into())
            })?;
        let (min, max) = (arrow::compute::min(times), arrow::compute::max(times));
        let mut metadata = vec![KeyValue::new(META_TENANT.to_string(), tenant.to_string())];
        if let (Some(min), Some(max)) = (min, max) {
            metadata.push(KeyValue::new(META_MIN_TIME.to_string(), rfc3339_ns(min)));
            metadata.push(KeyValue::new(META_MAX_TIME.to_string(), rfc3339_ns(max)));
        }
        let props = self.writer_properties(&sorted.schema(), metadata, sorted.num_rows())?;
        let mut buf = Vec::with_capacity(sorted.get_array_memory_size() / 4);
        let mut writer =
            ArrowWriter::try_new(&mut buf, sorted.schema(), Some(props)).map_err(fatal)?;
        writer.write(&sorted).map_err(fatal)?;
        writer.close().map_err(fatal)?;
        Ok(Bytes::from(buf))
    }

    fn sort(&self, batch: &RecordBatch) -> Result<RecordBatch, OperatorError> {
        let schema = batch.schema();
        let column = |name: &str| -> Result<SortColumn, OperatorError> {
            let idx = schema.index_of(name).map_err(fatal)?;
            Ok(SortColumn {
                values: batch.column(idx).clone(),
                options: None,
            })
        };
        let keys = [
            column(self.table.server_column())?,
            column(self.table.time_column())?,
        ];
        let indices = lexsort_to_indices(&keys, None).map_err(fatal)?;
        take_record_batch(batch, &indices).map_err(fatal)
    }

    /// The writer settings of every archive object of this table (also what compaction
    /// writes with): zstd (none for an object of fewer than `compress_min_rows` rows,
    /// `rows` being what it will hold, about), row groups of `row_group_rows`, (server,
    /// time) declared as the sort order, `metadata` in the footer, no dictionary for
    /// timestamps and unique ids.
    pub fn writer_properties(
        &self,
        schema: &arrow::datatypes::SchemaRef,
        metadata: Vec<KeyValue>,
        rows: usize,
    ) -> Result<WriterProperties, OperatorError> {
        let idx = |name: &str| schema.index_of(name).map(|i| i as i32).map_err(fatal);
        let level = ZstdLevel::try_new(self.config.zstd_level).map_err(fatal)?;
        let compression = if rows < self.config.compress_min_rows {
            Compression::UNCOMPRESSED
        } else {
            Compression::ZSTD(level)
        };
        let mut builder = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(self.config.row_group_rows))
            .set_sorting_columns(Some(vec![
                SortingColumn {
                    column_idx: idx(self.table.server_column())?,
                    descending: false,
                    nulls_first: false,
                },
                SortingColumn {
                    column_idx: idx(self.table.time_column())?,
                    descending: false,
                    nulls_first: false,
                },
            ]))
            .set_key_value_metadata(Some(metadata));
        for field in schema.fields() {
            let name = field.name().as_str();
            let path = ColumnPath::from(name);
            if matches!(field.data_type(), arrow::datatypes::DataType::Timestamp(..)) {
                builder = builder
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
            } else if HIGH_CARDINALITY.contains(&name) {
                builder = builder.set_column_dictionary_enabled(path, false);
            }
        }
        Ok(builder.build())
    }
}

impl ArchiveTarget {
    /// Writes `bytes` to `path` and, for a local archive, fsyncs the file and its folder so
    /// the object survives a crash before its offsets are committed.
    pub async fn put_durable(&self, path: &Path, bytes: Bytes) -> Result<(), OperatorError> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map_err(retryable)?;
        if let Some(file) = self.local_path(path) {
            tokio::task::spawn_blocking(move || fsync_file_and_dir(&file))
                .await
                .map_err(retryable)?
                .map_err(retryable)?;
        }
        Ok(())
    }
}

impl ArchiveTarget {
    /// The file behind `path` when the archive is local (`None` for object stores).
    pub fn local_path(&self, path: &Path) -> Option<std::path::PathBuf> {
        let local_root = self.local_root.as_ref()?;
        let relative = path
            .as_ref()
            .strip_prefix(self.root.as_ref())
            .unwrap_or(path.as_ref());
        Some(local_root.join(relative.trim_start_matches('/')))
    }

    /// Makes an object written through the store durable (fsyncs it and its folder for a
    /// local archive; object stores are durable once a write returns).
    pub async fn sync(&self, path: &Path) -> Result<(), OperatorError> {
        if let Some(file) = self.local_path(path) {
            tokio::task::spawn_blocking(move || fsync_file_and_dir(&file))
                .await
                .map_err(retryable)?
                .map_err(retryable)?;
        }
        Ok(())
    }
}

fn fsync_file_and_dir(file: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn fatal(e: impl std::fmt::Display) -> OperatorError {
    OperatorError::Fatal(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_objects_are_written_uncompressed() {
        let encoder = ParquetEncoder::new(Table::Alerts, ArchiveConfig::default());
        let schema = Table::Alerts.schema();
        let column = ColumnPath::from(Table::Alerts.server_column());
        let small = encoder.writer_properties(&schema, Vec::new(), 30).unwrap();
        assert_eq!(small.compression(&column), Compression::UNCOMPRESSED);
        let large = encoder
            .writer_properties(&schema, Vec::new(), 100_000)
            .unwrap();
        assert!(matches!(large.compression(&column), Compression::ZSTD(_)));
        // A small tenant's hour of probes (20 servers, 3 regions, every minute).
        let hour = encoder
            .writer_properties(&schema, Vec::new(), 3600)
            .unwrap();
        assert!(matches!(hour.compression(&column), Compression::ZSTD(_)));
        let always = ParquetEncoder::new(
            Table::Alerts,
            ArchiveConfig {
                compress_min_rows: 0,
                ..ArchiveConfig::default()
            },
        );
        let one = always.writer_properties(&schema, Vec::new(), 1).unwrap();
        assert!(matches!(one.compression(&column), Compression::ZSTD(_)));
    }
}
