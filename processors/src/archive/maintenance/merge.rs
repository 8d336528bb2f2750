//! Merging archive objects: a k-way merge of objects that are each sorted by (server,
//! time) into new objects sorted the same way, streamed (one batch per input in memory),
//! written with the archive's writer settings (row groups, zstd, declared sort order,
//! tenant and min/max time in the footer), optionally leaving out the rows a delete
//! removes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampNanosecondArray,
    new_null_array,
};
use arrow::compute::{cast, filter_record_batch, interleave_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use mcpulse_schemas::Table;
use mcpulse_schemas::tables::{META_MAX_TIME, META_MIN_TIME, META_TENANT};
use object_store::ObjectMeta;
use object_store::buffered::BufWriter;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::file::metadata::{KeyValue, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;

use super::MaintenanceError;
use crate::archive::layout::rfc3339_ns;
use crate::archive::{ArchiveTarget, ParquetEncoder};

/// Rows read from an input at a time (what the merge holds per input).
const READ_BATCH: usize = 1024;
/// Rows per batch handed to the writer.
const WRITE_BATCH: usize = 8192;

/// Reads one archive object through the store (ranges; the footer from the known size).
struct ObjectReader {
    store: std::sync::Arc<dyn ObjectStore>,
    meta: ObjectMeta,
}

impl ObjectReader {
    fn new(target: &ArchiveTarget, meta: &ObjectMeta) -> Self {
        Self {
            store: target.store.clone(),
            meta: meta.clone(),
        }
    }
}

fn parquet_error(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.meta.location, range)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.meta.location, &ranges)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<std::sync::Arc<ParquetMetaData>>> {
        async move {
            let size = self.meta.size;
            let metadata = ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                .load_and_finish(self, size)
                .await?;
            Ok(std::sync::Arc::new(metadata))
        }
        .boxed()
    }
}

/// One object to merge, with its footer.
#[derive(Clone, Debug)]
pub struct Input {
    pub meta: ObjectMeta,
    pub metadata: ArrowReaderMetadata,
}

impl Input {
    /// Reads the footer of `meta`.
    pub async fn open(target: &ArchiveTarget, meta: ObjectMeta) -> Result<Self, MaintenanceError> {
        let mut reader = ObjectReader::new(target, &meta);
        let metadata = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
            .await
            .map_err(|e| MaintenanceError::parquet(&meta.location, e))?;
        Ok(Self { meta, metadata })
    }

    pub fn rows(&self) -> u64 {
        self.metadata.metadata().file_metadata().num_rows().max(0) as u64
    }

    pub fn name(&self) -> &str {
        mcpulse_schemas::folder_manifest::file_name(self.meta.location.as_ref())
    }

    fn footer(&self, key: &str) -> Option<&str> {
        self.metadata
            .metadata()
            .file_metadata()
            .key_value_metadata()?
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_deref()
    }

    /// The earliest event time the footer records (`None`: unknown).
    pub fn min_time(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(self.footer(META_MIN_TIME)?)
            .ok()
            .map(|t| t.to_utc())
    }

    /// Whether the object may hold rows of `server` (from the column statistics of each
    /// row group; `true` when they are missing).
    pub fn may_hold_server(&self, table: Table, server: &str) -> bool {
        let metadata = self.metadata.metadata();
        let schema = metadata.file_metadata().schema_descr();
        let Some(column) = (0..schema.num_columns())
            .find(|i| schema.column(*i).path().string() == table.server_column())
        else {
            return true;
        };
        let wanted = server.as_bytes();
        metadata
            .row_groups()
            .iter()
            .any(|group| match group.column(column).statistics() {
                Some(stats @ Statistics::ByteArray(_)) => {
                    let min_ok = stats.min_bytes_opt().is_none_or(|min| min <= wanted);
                    let max_ok = stats.max_bytes_opt().is_none_or(|max| max >= wanted);
                    min_ok && max_ok
                }
                _ => true,
            })
    }
}

/// Rows a rewrite leaves out: those of `server` (every server when `None`) with event
/// time at or before `until` (any time when `None`). The tenant is the folder's.
#[derive(Clone, Debug, Default)]
pub struct Removal {
    pub server: Option<String>,
    pub until: Option<DateTime<Utc>>,
}

impl Removal {
    /// The rows of `batch` to keep.
    fn keep(&self, table: Table, batch: &RecordBatch) -> Result<BooleanArray, MaintenanceError> {
        let n = batch.num_rows();
        let server_match: Vec<bool> = match &self.server {
            None => vec![true; n],
            Some(server) => {
                let column = batch
                    .column_by_name(table.server_column())
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                    .ok_or_else(|| {
                        MaintenanceError::Other(format!(
                            "{}: column {} is not a string",
                            table.name(),
                            table.server_column()
                        ))
                    })?;
                (0..n)
                    .map(|i| column.is_valid(i) && column.value(i) == server)
                    .collect()
            }
        };
        let time_match: Vec<bool> = match self.until {
            None => vec![true; n],
            Some(until) => {
                let until = until.timestamp_nanos_opt().unwrap_or(i64::MAX);
                let times = time_column(table, batch)?;
                (0..n)
                    .map(|i| times.is_valid(i) && times.value(i) <= until)
                    .collect()
            }
        };
        Ok(server_match
            .iter()
            .zip(&time_match)
            .map(|(s, t)| Some(!(s & t)))
            .collect())
    }
}

fn time_column(
    table: Table,
    batch: &RecordBatch,
) -> Result<&TimestampNanosecondArray, MaintenanceError> {
    batch
        .column_by_name(table.time_column())
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| {
            MaintenanceError::Other(format!(
                "{}: column {} is not a nanosecond timestamp",
                table.name(),
                table.time_column()
            ))
        })
}

/// Brings a batch read from an older object to the table's current schema: columns by
/// name, cast where the type changed, nulls for nullable columns it lacks.
fn adapt(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, MaintenanceError> {
    if batch.schema().fields() == schema.fields() {
        return RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
            .map_err(|e| MaintenanceError::Other(e.to_string()));
    }
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => cast(column, field.data_type())
                .map_err(|e| MaintenanceError::Other(format!("column {}: {e}", field.name()))),
            None if field.is_nullable() => Ok(new_null_array(field.data_type(), batch.num_rows())),
            None => Err(MaintenanceError::Other(format!(
                "an object lacks the required column {}",
                field.name()
            ))),
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| MaintenanceError::Other(e.to_string()))
}

/// One input being merged: its stream and current batch.
struct Cursor {
    stream: ParquetRecordBatchStream<ObjectReader>,
    batch: RecordBatch,
    keys: Rows,
    pos: usize,
    /// Index of `batch` in the merge's batch list.
    slot: usize,
}

/// What one merge wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Object names (in the folder), with their rows.
    pub objects: Vec<(String, u64)>,
    /// Rows the removal left out.
    pub removed: u64,
}

/// Merges `inputs` (each sorted by (server, time)) into objects of at most `target_rows`
/// rows named by `name(k)` in `folder`, leaving out the rows `removal` matches. Each
/// object is durable when this returns. Writes nothing when no row is left.
#[allow(clippy::too_many_arguments)]
pub async fn merge(
    target: &ArchiveTarget,
    encoder: &ParquetEncoder,
    table: Table,
    tenant: &str,
    folder: &object_store::path::Path,
    inputs: &[Input],
    removal: Option<&Removal>,
    target_rows: u64,
    name: impl Fn(usize) -> String,
) -> Result<Written, MaintenanceError> {
    let schema = table.schema();
    let converter = RowConverter::new(vec![
        SortField::new(
            schema
                .field_with_name(table.server_column())
                .map_err(other)?
                .data_type()
                .clone(),
        ),
        SortField::new(
            schema
                .field_with_name(table.time_column())
                .map_err(other)?
                .data_type()
                .clone(),
        ),
    ])
    .map_err(other)?;
    let mut written = Written::default();
    // What the output will hold, about (before a removal): it decides the compression.
    let expected_rows: u64 = inputs.iter().map(Input::rows).sum();
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut cursors: Vec<Option<Cursor>> = Vec::with_capacity(inputs.len());
    let mut heap: BinaryHeap<Reverse<(OwnedRow, usize)>> = BinaryHeap::new();
    for input in inputs {
        let reader = ObjectReader::new(target, &input.meta);
        let stream =
            ParquetRecordBatchStreamBuilder::new_with_metadata(reader, input.metadata.clone())
                .with_batch_size(READ_BATCH)
                .build()
                .map_err(|e| MaintenanceError::parquet(&input.meta.location, e))?;
        let index = cursors.len();
        let cursor = next_batch(
            stream,
            &converter,
            table,
            &schema,
            removal,
            &mut written,
            &input.meta.location,
        )
        .await?;
        if let Some(mut cursor) = cursor {
            cursor.slot = batches.len();
            batches.push(cursor.batch.clone());
            heap.push(Reverse((cursor.keys.row(0).owned(), index)));
            cursors.push(Some(cursor));
        } else {
            cursors.push(None);
        }
    }

    let mut out: Option<OutputObject> = None;
    let mut indices: Vec<(usize, usize)> = Vec::with_capacity(WRITE_BATCH);
    while let Some(Reverse((_, index))) = heap.pop() {
        let cursor = cursors[index]
            .as_mut()
            .expect("a cursor in the heap is open");
        indices.push((cursor.slot, cursor.pos));
        cursor.pos += 1;
        if cursor.pos < cursor.batch.num_rows() {
            heap.push(Reverse((cursor.keys.row(cursor.pos).owned(), index)));
        } else {
            let cursor = cursors[index].take().expect("present");
            let location = inputs[index].meta.location.clone();
            if let Some(mut next) = next_batch(
                cursor.stream,
                &converter,
                table,
                &schema,
                removal,
                &mut written,
                &location,
            )
            .await?
            {
                next.slot = batches.len();
                batches.push(next.batch.clone());
                heap.push(Reverse((next.keys.row(0).owned(), index)));
                cursors[index] = Some(next);
            }
        }
        let out_rows = out.as_ref().map_or(0, |o| o.rows);
        let full = out_rows + indices.len() as u64 >= target_rows;
        if indices.len() >= WRITE_BATCH || full || heap.is_empty() {
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            let batch = interleave_record_batch(&refs, &indices).map_err(other)?;
            indices.clear();
            if out.is_none() {
                let k = written.objects.len();
                out = Some(OutputObject::start(
                    target,
                    encoder,
                    &schema,
                    tenant,
                    folder,
                    name(k),
                    expected_rows.min(target_rows) as usize,
                )?);
            }
            let object = out.as_mut().expect("started above");
            object.write(table, &batch).await?;
            if object.rows >= target_rows || heap.is_empty() {
                let object = out.take().expect("present");
                written.objects.push(object.finish(target).await?);
            }
            // Keep only the batches the open cursors still read from.
            batches.clear();
            for cursor in cursors.iter_mut().flatten() {
                cursor.slot = batches.len();
                batches.push(cursor.batch.clone());
            }
        }
    }
    Ok(written)
}

/// The next non-empty batch of `stream` (adapted, with the removed rows left out).
async fn next_batch(
    mut stream: ParquetRecordBatchStream<ObjectReader>,
    converter: &RowConverter,
    table: Table,
    schema: &SchemaRef,
    removal: Option<&Removal>,
    written: &mut Written,
    location: &object_store::path::Path,
) -> Result<Option<Cursor>, MaintenanceError> {
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| MaintenanceError::parquet(location, e))?;
        let mut batch = adapt(batch, schema)?;
        if let Some(removal) = removal {
            let keep = removal.keep(table, &batch)?;
            let before = batch.num_rows();
            batch = filter_record_batch(&batch, &keep).map_err(other)?;
            written.removed += (before - batch.num_rows()) as u64;
        }
        if batch.num_rows() == 0 {
            continue;
        }
        let keys = converter
            .convert_columns(&[
                batch
                    .column_by_name(table.server_column())
                    .expect("adapted")
                    .clone(),
                batch
                    .column_by_name(table.time_column())
                    .expect("adapted")
                    .clone(),
            ])
            .map_err(other)?;
        return Ok(Some(Cursor {
            stream,
            batch,
            keys,
            pos: 0,
            slot: 0,
        }));
    }
    Ok(None)
}

/// One compacted object being written.
struct OutputObject {
    name: String,
    path: object_store::path::Path,
    writer: AsyncArrowWriter<BufWriter>,
    rows: u64,
    min: Option<i64>,
    max: Option<i64>,
}

impl OutputObject {
    fn start(
        target: &ArchiveTarget,
        encoder: &ParquetEncoder,
        schema: &SchemaRef,
        tenant: &str,
        folder: &object_store::path::Path,
        name: String,
        rows: usize,
    ) -> Result<Self, MaintenanceError> {
        let path = folder.clone().join(name.as_str());
        let props = encoder
            .writer_properties(
                schema,
                vec![KeyValue::new(META_TENANT.to_string(), tenant.to_string())],
                rows,
            )
            .map_err(|e| MaintenanceError::Other(e.to_string()))?;
        let writer = AsyncArrowWriter::try_new(
            BufWriter::new(target.store.clone(), path.clone()),
            schema.clone(),
            Some(props),
        )
        .map_err(|e| MaintenanceError::parquet(&path, e))?;
        Ok(Self {
            name,
            path,
            writer,
            rows: 0,
            min: None,
            max: None,
        })
    }

    async fn write(&mut self, table: Table, batch: &RecordBatch) -> Result<(), MaintenanceError> {
        let times = time_column(table, batch)?;
        if let Some(min) = arrow::compute::min(times) {
            self.min = Some(self.min.map_or(min, |m| m.min(min)));
        }
        if let Some(max) = arrow::compute::max(times) {
            self.max = Some(self.max.map_or(max, |m| m.max(max)));
        }
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .await
            .map_err(|e| MaintenanceError::parquet(&self.path, e))
    }

    async fn finish(mut self, target: &ArchiveTarget) -> Result<(String, u64), MaintenanceError> {
        if let (Some(min), Some(max)) = (self.min, self.max) {
            self.writer.append_key_value_metadata(KeyValue::new(
                META_MIN_TIME.to_string(),
                rfc3339_ns(min),
            ));
            self.writer.append_key_value_metadata(KeyValue::new(
                META_MAX_TIME.to_string(),
                rfc3339_ns(max),
            ));
        }
        self.writer
            .close()
            .await
            .map_err(|e| MaintenanceError::parquet(&self.path, e))?;
        target
            .sync(&self.path)
            .await
            .map_err(|e| MaintenanceError::Other(format!("{}: {e}", self.path)))?;
        Ok((self.name, self.rows))
    }
}

fn other(e: impl std::fmt::Display) -> MaintenanceError {
    MaintenanceError::Other(e.to_string())
}

/// Splits `inputs` (in order) into groups to merge: at most `max_files` objects and
/// `target_rows` rows each (an object larger than that is a group of its own).
pub fn group(inputs: Vec<Input>, target_rows: u64, max_files: usize) -> Vec<Vec<Input>> {
    let mut groups: Vec<Vec<Input>> = Vec::new();
    let mut current: Vec<Input> = Vec::new();
    let mut rows = 0;
    for input in inputs {
        if !current.is_empty() && (rows + input.rows() > target_rows || current.len() >= max_files)
        {
            groups.push(std::mem::take(&mut current));
            rows = 0;
        }
        rows += input.rows();
        current.push(input);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// A short stable hash (FNV-1a) of the names of a group, for object names that differ
/// between different merges of the same generation.
pub fn names_hash<'a>(tag: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(tag.as_bytes());
    for name in names {
        eat(b"\n");
        eat(name.as_bytes());
    }
    format!("{h:016x}")
}
