//! The archiver: batches records per partition into Arrow, writes Parquet objects with
//! the layout and deterministic names of DESIGN.md, and reports offsets durable only
//! after every object of a cut is written.
//!
//! Per log partition the archiver keeps an *open* batch and a queue of *sealed* ones. A
//! batch is sealed when it reaches `flush_rows`/`flush_bytes` (deterministic in the
//! record sequence), when it reaches a cut point recorded in the manifest by an earlier
//! run, or at flush time when it is older than `flush_interval`. Each sealed batch is
//! written as one object per (tenant, date, hour) named
//! `{topic}-{partition}-{first}-{last}.parquet`, after its cut was recorded in the
//! manifest, so a replay rewrites the same objects.

mod columns;
pub mod config;
mod layout;
pub mod maintenance;
mod manifest;
mod probes;
pub mod s3;
mod spans;
mod table_format;
mod table_writer;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use mcpulse_bus::{Offset, Record, TopicPartition};
use mcpulse_schemas::topics::valid_tenant_id;

pub use config::ArchiveConfig;
pub use layout::{PartitionKey, file_name};
pub use manifest::Cut;
pub use probes::ProbesFormat;
pub use s3::S3Config;
pub use spans::{SpansFormat, any_value_to_string};
pub use table_format::{PartitionedRows, TableFormat};
pub use table_writer::TableWriter;
pub use writer::{ArchiveTarget, ParquetEncoder};

use columns::BatchBuilder;
use manifest::Manifests;

use crate::operator::{Operator, OperatorError};
use crate::stats::RuntimeStats;

/// Archives one topic into one table.
pub struct Archiver<F: TableFormat> {
    format: F,
    writer: TableWriter,
    manifests: Manifests,
    /// Batching, and where a record's tenant comes from: the `tenant_header` header, else
    /// `default_tenant` (records from outside producers, e.g. an OTel Collector), else
    /// the record is dead-lettered.
    config: ArchiveConfig,
    partitions: HashMap<TopicPartition, PartitionState<F::Builder>>,
}

struct PartitionState<B: BatchBuilder> {
    /// The cut an earlier run recorded (checked when a batch opens).
    recorded_cut: Option<Cut>,
    /// The cut the open batch must end at, when replaying a recorded cut.
    forced_last: Option<Offset>,
    /// The offset after the last record handled.
    next_offset: Offset,
    /// The offset last reported durable.
    reported: Option<Offset>,
    open: Option<OpenBatch<B>>,
    sealed: VecDeque<SealedBatch>,
}

struct OpenBatch<B: BatchBuilder> {
    first: Offset,
    last: Offset,
    rows: PartitionedRows<B>,
    opened: Instant,
}

struct SealedBatch {
    cut: Cut,
    files: Vec<(PartitionKey, RecordBatch)>,
}

impl<F: TableFormat> Archiver<F> {
    pub fn new(
        format: F,
        target: ArchiveTarget,
        config: ArchiveConfig,
        stats: Arc<RuntimeStats>,
    ) -> Self {
        let manifests = Manifests::new(target.store.clone(), target.root.clone());
        Self {
            writer: TableWriter::new(format.table(), config.clone(), target, stats),
            format,
            manifests,
            config,
            partitions: HashMap::new(),
        }
    }

    async fn state(
        &mut self,
        tp: &TopicPartition,
    ) -> Result<&mut PartitionState<F::Builder>, OperatorError> {
        if !self.partitions.contains_key(tp) {
            let recorded_cut = self.manifests.load(tp).await?;
            let state = PartitionState {
                recorded_cut,
                forced_last: None,
                next_offset: 0,
                reported: None,
                open: None,
                sealed: VecDeque::new(),
            };
            self.partitions.insert(tp.clone(), state);
        }
        Ok(self.partitions.get_mut(tp).expect("inserted above"))
    }

    fn tenant<'a>(&'a self, record: &'a Record) -> Result<&'a str, OperatorError> {
        let header = self.config.tenant_header.as_str();
        match record.header(header) {
            Some(value) => std::str::from_utf8(value)
                .ok()
                .filter(|t| valid_tenant_id(t))
                .ok_or_else(|| {
                    OperatorError::Decode(format!("{header} header is not a valid tenant id"))
                }),
            None => self.config.default_tenant.as_deref().ok_or_else(|| {
                OperatorError::Decode(format!(
                    "missing {header} header and no archive.default_tenant"
                ))
            }),
        }
    }

    /// Writes one sealed batch: records the cut, then each object durably.
    async fn write(&self, tp: &TopicPartition, batch: &SealedBatch) -> Result<(), OperatorError> {
        self.manifests.record(tp, batch.cut).await?;
        crate::failpoint::hit("archive.after_manifest");
        let name = file_name(tp, batch.cut.first, batch.cut.last);
        self.writer.write(&name, &batch.files).await?;
        crate::failpoint::hit("archive.after_write");
        Ok(())
    }
}

impl<B: BatchBuilder> PartitionState<B> {
    /// Seals the open batch (if any) into the write queue.
    fn seal(&mut self) -> Result<(), OperatorError> {
        if let Some(open) = self.open.take() {
            let files = open
                .rows
                .finish()
                .map_err(|e| OperatorError::Fatal(format!("building Arrow batch: {e}")))?;
            self.sealed.push_back(SealedBatch {
                cut: Cut {
                    first: open.first,
                    last: open.last,
                },
                files,
            });
            self.forced_last = None;
        }
        Ok(())
    }

    /// Opens a batch at `offset`, replaying a recorded cut if one starts here.
    fn open_at(&mut self, offset: Offset) -> &mut OpenBatch<B> {
        if let Some(cut) = self.recorded_cut
            && cut.first == offset
        {
            self.forced_last = Some(cut.last);
        }
        self.open.get_or_insert_with(|| OpenBatch {
            first: offset,
            last: offset,
            rows: PartitionedRows::default(),
            opened: Instant::now(),
        })
    }

    /// Seals the open batch when it is full or reached its recorded cut.
    fn seal_if_full(&mut self, config: &ArchiveConfig) -> Result<(), OperatorError> {
        let Some(open) = &self.open else {
            return Ok(());
        };
        let full = match self.forced_last {
            Some(last) => open.last >= last,
            None => {
                open.rows.rows() >= config.flush_rows || open.rows.bytes() >= config.flush_bytes
            }
        };
        if full { self.seal() } else { Ok(()) }
    }

    /// The next offset all of whose predecessors are durable once the sealed queue is empty.
    fn durable_offset(&self) -> Offset {
        self.sealed
            .front()
            .map(|b| b.cut.first)
            .or(self.open.as_ref().map(|b| b.first))
            .unwrap_or(self.next_offset)
    }
}

#[async_trait]
impl<F: TableFormat> Operator for Archiver<F> {
    fn name(&self) -> &'static str {
        match self.format.table() {
            mcpulse_schemas::Table::Spans => "archive-spans",
            mcpulse_schemas::Table::Probes => "archive-probes",
            mcpulse_schemas::Table::Signals => "archive-signals",
            mcpulse_schemas::Table::Drift => "archive-drift",
            mcpulse_schemas::Table::Alerts => "archive-alerts",
            mcpulse_schemas::Table::Notifications => "archive-notifications",
        }
    }

    async fn process(&mut self, record: &Record) -> Result<(), OperatorError> {
        let tp = record.topic_partition();
        // Load the partition's recorded cut before anything can fail, so a dead-lettered
        // first record does not leave the partition without it.
        self.state(&tp).await?;
        let tenant = self.tenant(record)?.to_string();
        let state = self.partitions.get_mut(&tp).expect("created by state()");
        let open = state.open_at(record.offset);
        match self
            .format
            .decode_into(&tenant, &record.value, &mut open.rows)
        {
            Ok(_) => {
                open.last = record.offset;
                state.next_offset = record.offset + 1;
                state.seal_if_full(&self.config)
            }
            Err(e) => {
                if open.rows.rows() == 0 && open.first == record.offset {
                    state.open = None;
                    state.forced_last = None;
                }
                Err(e)
            }
        }
    }

    fn skip(&mut self, tp: &TopicPartition, offset: Offset) {
        // `process` loaded the partition's state before it could fail.
        if let Some(state) = self.partitions.get_mut(tp) {
            state.next_offset = offset + 1;
            if let Some(open) = &mut state.open {
                open.last = offset;
            }
        }
    }

    fn flush_due(&self) -> bool {
        self.partitions.values().any(|s| {
            !s.sealed.is_empty()
                || (s.forced_last.is_none()
                    && s.open
                        .as_ref()
                        .is_some_and(|o| o.opened.elapsed() >= self.config.flush_interval))
                || (s.open.is_none() && s.reported != Some(s.next_offset) && s.next_offset > 0)
        })
    }

    async fn flush(
        &mut self,
        partitions: Option<&[TopicPartition]>,
        all: bool,
    ) -> Result<Vec<(TopicPartition, Offset)>, OperatorError> {
        let mut tps: Vec<TopicPartition> = match partitions {
            Some(p) => p
                .iter()
                .filter(|tp| self.partitions.contains_key(tp))
                .cloned()
                .collect(),
            None => self.partitions.keys().cloned().collect(),
        };
        tps.sort();
        let mut commits = Vec::new();
        for tp in tps {
            let interval = self.config.flush_interval;
            let state = self.partitions.get_mut(&tp).expect("listed above");
            let aged = state
                .open
                .as_ref()
                .is_some_and(|o| o.opened.elapsed() >= interval);
            // A batch replaying a recorded cut is only ever cut there.
            if state.forced_last.is_none() && (all || aged) {
                state.seal()?;
            }
            while let Some(batch) = self.partitions[&tp].sealed.front() {
                self.write(&tp, batch).await?;
                let state = self.partitions.get_mut(&tp).expect("listed above");
                state.sealed.pop_front();
            }
            let state = self.partitions.get_mut(&tp).expect("listed above");
            let durable = state.durable_offset();
            if state.reported != Some(durable) && durable > 0 {
                state.reported = Some(durable);
                commits.push((tp, durable));
            }
        }
        Ok(commits)
    }

    fn release(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.partitions.remove(tp);
        }
    }
}
