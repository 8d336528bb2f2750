//! One partition's log: its segments, reading, the durable end offset, retention.
//!
//! Appending is done by the partition's writer thread (`writer.rs`); this is the state
//! it shares with readers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::watch;

use super::fsutil::{create_dir_durable, io_error};
use super::record::{self, FRAME_HEADER_LEN, FrameHeader};
use super::segment::Segment;
use crate::{BusError, Offset, Partition, Record};

/// Smallest read issued when fetching.
const MIN_READ: u64 = 64 << 10;

/// Limits of one fetch across partitions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub records: usize,
    pub bytes: u64,
}

impl Budget {
    pub fn exhausted(&self) -> bool {
        self.records == 0 || self.bytes == 0
    }
}

/// Where a reader stopped: lets the next read continue without an index lookup.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor {
    offset: Offset,
    base: Offset,
    position: u64,
}

/// The shared state of one partition.
pub(crate) struct PartitionLog {
    pub topic: Arc<str>,
    pub partition: Partition,
    pub dir: PathBuf,
    /// Segments in offset order; the last is the active one. Never empty.
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Offset after the last durable record (the high watermark).
    end: watch::Sender<Offset>,
}

impl PartitionLog {
    /// Opens (recovering) or creates the partition in `dir`.
    pub fn open(
        topic: Arc<str>,
        partition: Partition,
        dir: PathBuf,
    ) -> Result<Arc<PartitionLog>, BusError> {
        create_dir_durable(&dir)?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io_error("listing", &dir, e))? {
            let entry = entry.map_err(|e| io_error("listing", &dir, e))?;
            if let Some(base) = entry.file_name().to_str().and_then(Segment::parse_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let segment = Segment::open(Segment::log_path(&dir, base), base, i + 1 == bases.len())?;
            if let Some(prev) = segments.last()
                && prev.next_offset() != base
            {
                return Err(BusError::Corrupt(format!(
                    "{}: segment {} ends at offset {} but the next one starts at {base}",
                    dir.display(),
                    prev.path.display(),
                    prev.next_offset()
                )));
            }
            segments.push(Arc::new(segment));
        }
        if segments.is_empty() {
            segments.push(Arc::new(Segment::create(&dir, 0)?));
        }
        let end = segments.last().map_or(0, |s| s.next_offset());
        Ok(Arc::new(PartitionLog {
            topic,
            partition,
            dir,
            segments: RwLock::new(segments),
            end: watch::Sender::new(end),
        }))
    }

    /// Offset after the last durable record.
    pub fn end_offset(&self) -> Offset {
        *self.end.borrow()
    }

    /// First offset still in the log.
    pub fn start_offset(&self) -> Offset {
        self.segments.read().first().map_or(0, |s| s.base)
    }

    /// A receiver woken when the end offset moves.
    pub fn subscribe(&self) -> watch::Receiver<Offset> {
        self.end.subscribe()
    }

    /// The segment being appended to.
    pub fn active(&self) -> Option<Arc<Segment>> {
        self.segments.read().last().cloned()
    }

    /// Directory of the partition's segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a freshly created active segment (the writer, on roll).
    pub fn push_segment(&self, segment: Arc<Segment>) {
        self.segments.write().push(segment);
    }

    /// Announces a new end offset (the writer, after publishing to the segment).
    pub fn set_end(&self, end: Offset) {
        self.end.send_replace(end);
    }

    /// Number of segments (for tests and metrics).
    pub fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

    /// Deletes sealed segments whose last append is before `cutoff_ms`, oldest first.
    /// Returns how many were deleted.
    pub fn delete_older_than(&self, cutoff_ms: i64) -> Result<usize, BusError> {
        let removed: Vec<Arc<Segment>> = {
            let mut segments = self.segments.write();
            let expired = segments
                .iter()
                .take(segments.len().saturating_sub(1))
                .take_while(|s| s.last_append_ms() < cutoff_ms)
                .count();
            segments.drain(..expired).collect()
        };
        for segment in &removed {
            tracing::info!(segment = %segment.path.display(), "retention: deleting segment");
            segment.remove_files()?;
        }
        Ok(removed.len())
    }

    /// Reads durable records from `*next` on into `out`, within `budget`, across segments.
    /// A position before the start of the log moves to the start. Updates `*next` and
    /// `*cursor` to continue from.
    pub fn read(
        &self,
        next: &mut Offset,
        cursor: &mut Option<Cursor>,
        budget: &mut Budget,
        out: &mut Vec<Record>,
    ) -> Result<(), BusError> {
        while !budget.exhausted() {
            let (segment, mut position) = {
                let segments = self.segments.read();
                let Some(first) = segments.first() else {
                    return Ok(());
                };
                if *next < first.base {
                    *next = first.base;
                    *cursor = None;
                }
                let i = segments.partition_point(|s| s.base <= *next) - 1;
                let segment = Arc::clone(&segments[i]);
                let position = match *cursor {
                    Some(c) if c.offset == *next && c.base == segment.base => c.position,
                    _ => segment.position_for(*next),
                };
                (segment, position)
            };
            let limit = segment.durable_len();
            if position >= limit {
                return Ok(());
            }
            let before = *next;
            position = self.read_chunk(&segment, position, limit, next, budget, out)?;
            *cursor = Some(Cursor {
                offset: *next,
                base: segment.base,
                position,
            });
            if *next == before && position >= limit {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Reads one chunk of `segment` starting at frame boundary `position` and decodes its
    /// complete frames. Returns the position after the last frame consumed.
    fn read_chunk(
        &self,
        segment: &Segment,
        mut position: u64,
        limit: u64,
        next: &mut Offset,
        budget: &mut Budget,
        out: &mut Vec<Record>,
    ) -> Result<u64, BusError> {
        // Size the read from the segment's average frame, so small records do not make
        // every poll read megabytes it will not use.
        let records = segment.next_offset().saturating_sub(segment.base).max(1);
        let average = limit / records + 1;
        let wanted =
            average.saturating_mul(budget.records as u64 + 1) + super::segment::INDEX_INTERVAL;
        let mut len = wanted
            .clamp(MIN_READ, budget.bytes.max(MIN_READ))
            .min(limit - position);
        let mut chunk = vec![0u8; len as usize];
        segment.read_at(&mut chunk, position)?;
        let header = FrameHeader::parse(&chunk)
            .ok_or_else(|| self.corrupt(segment, position, "bad frame header"))?;
        if header.frame_len() as u64 > len {
            // One record bigger than the chunk: read exactly that record.
            len = header.frame_len() as u64;
            if position + len > limit {
                return Err(self.corrupt(segment, position, "frame runs past the durable end"));
            }
            chunk.resize(len as usize, 0);
            segment.read_at(&mut chunk, position)?;
        }
        let chunk = Bytes::from(chunk);
        let mut at = 0usize;
        while at + FRAME_HEADER_LEN <= chunk.len() && !budget.exhausted() {
            let header = FrameHeader::parse(&chunk[at..])
                .ok_or_else(|| self.corrupt(segment, position + at as u64, "bad frame header"))?;
            let end = at + header.frame_len();
            if end > chunk.len() {
                break;
            }
            let body = chunk.slice(at + FRAME_HEADER_LEN..end);
            if !header.check(&body) {
                return Err(self.corrupt(segment, position + at as u64, "checksum mismatch"));
            }
            let offset = record::body_offset(&body);
            if offset >= *next {
                let rec = record::decode(&body, &self.topic, self.partition)
                    .map_err(|e| self.corrupt(segment, position + at as u64, &e))?;
                out.push(rec);
                *next = offset + 1;
                budget.records -= 1;
                budget.bytes = budget.bytes.saturating_sub(header.frame_len() as u64);
            }
            at = end;
        }
        position += at as u64;
        Ok(position)
    }

    fn corrupt(&self, segment: &Segment, position: u64, what: &str) -> BusError {
        BusError::Corrupt(format!(
            "{} at byte {position}: {what}",
            segment.path.display()
        ))
    }
}
