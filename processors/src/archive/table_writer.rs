//! Writing one flush's rows of a table: one Parquet object per hive partition (tenant,
//! date, hour), all under the same name, each durable before the call returns. Every
//! stage that archives rows (the archiver, the analytic operators, the notification
//! stage) names the objects after its input, so a replay of the same flush overwrites
//! them instead of adding rows twice.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use arrow::array::RecordBatch;
use mcpulse_schemas::Table;
use tracing::debug;

use super::config::ArchiveConfig;
use super::layout::PartitionKey;
use super::writer::{ArchiveTarget, ParquetEncoder};
use crate::operator::OperatorError;
use crate::stats::RuntimeStats;

/// Writes the rows of one table into the archive.
#[derive(Clone)]
pub struct TableWriter {
    table: Table,
    encoder: Arc<ParquetEncoder>,
    target: ArchiveTarget,
    stats: Arc<RuntimeStats>,
}

impl TableWriter {
    pub fn new(
        table: Table,
        config: ArchiveConfig,
        target: ArchiveTarget,
        stats: Arc<RuntimeStats>,
    ) -> Self {
        Self {
            table,
            encoder: Arc::new(ParquetEncoder::new(table, config)),
            target,
            stats,
        }
    }

    pub fn table(&self) -> Table {
        self.table
    }

    pub fn target(&self) -> &ArchiveTarget {
        &self.target
    }

    /// Writes each `(partition, rows)` as `{partition dir}/{name}`, durably and
    /// concurrently. On an error some objects may be written: the caller retries the
    /// same rows under the same name, which overwrites them.
    pub async fn write(
        &self,
        name: &str,
        files: &[(PartitionKey, RecordBatch)],
    ) -> Result<(), OperatorError> {
        let writes = files.iter().map(|(key, rows)| {
            let path = key.dir(&self.target.root, self.table).join(name);
            async move {
                let bytes = self.encoder.encode(rows, &key.tenant)?;
                let len = bytes.len() as u64;
                self.target.put_durable(&path, bytes).await?;
                self.stats
                    .rows_written
                    .fetch_add(rows.num_rows() as u64, Relaxed);
                self.stats.bytes_written.fetch_add(len, Relaxed);
                self.stats.files_written.fetch_add(1, Relaxed);
                debug!(%path, rows = rows.num_rows(), bytes = len, "archived");
                Ok::<_, OperatorError>(())
            }
        });
        futures::future::try_join_all(writes).await?;
        Ok(())
    }
}
