//! The per-partition writer thread: group commit.
//!
//! Every send for a partition becomes an [`AppendRequest`] on the partition's channel.
//! The writer takes everything queued, encodes it into one buffer, writes it with one
//! positioned write, fsyncs once (fdatasync) and only then acknowledges every waiting
//! sender and makes the records visible to readers. So a send returns only once its
//! records are durable, and concurrent senders share the cost of the fsync.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::fsutil::now_ms;
use super::partition::PartitionLog;
use super::record;
use super::segment::{INDEX_INTERVAL, IndexEntry, Segment};
use crate::{BusError, Message, Offset};

/// Messages for one partition from one send.
pub(crate) struct AppendRequest {
    pub messages: Vec<Message>,
    /// Timestamp of messages that carry none.
    pub timestamp_ms: i64,
    /// Encoded size, counted in the bus's pending bytes until acknowledged.
    pub bytes: u64,
    /// Receives the offset of the first message; the others follow contiguously.
    pub reply: Reply,
}

/// The reply channel of a send.
type Reply = oneshot::Sender<Result<Offset, BusError>>;

/// A sender whose frames are in the buffer: its reply, first offset and bytes.
struct Waiting {
    reply: Reply,
    first: Offset,
    bytes: u64,
}

enum WriterMsg {
    Append(AppendRequest),
    Stop,
}

/// Handle to a partition's writer thread.
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<WriterMsg>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    /// Starts the writer of `log`, appending to its active segment.
    pub fn spawn(
        log: Arc<PartitionLog>,
        segment_bytes: u64,
        pending: Arc<AtomicU64>,
    ) -> Result<WriterHandle, BusError> {
        let active = log
            .active()
            .ok_or_else(|| BusError::Corrupt("partition without segments".into()))?;
        let (tx, rx) = mpsc::channel();
        let name = format!("log-{}-{}", log.topic, log.partition);
        let writer = Writer {
            next: active.next_offset(),
            len: active.durable_len(),
            last_indexed: None,
            log,
            active,
            segment_bytes,
            pending,
            buf: Vec::new(),
            entries: Vec::new(),
            waiting: Vec::new(),
            failed: None,
        };
        let thread = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || writer.run(rx))
            .map_err(|e| BusError::Unavailable(format!("cannot start log writer thread: {e}")))?;
        Ok(WriterHandle {
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `request`; `Err(Closed)` when the writer has stopped.
    pub fn append(&self, request: AppendRequest) -> Result<(), BusError> {
        self.tx
            .send(WriterMsg::Append(request))
            .map_err(|_| BusError::Closed)
    }

    /// Asks the writer to finish what is queued and stop, and waits for it.
    pub fn stop(&self) {
        let _ = self.tx.send(WriterMsg::Stop);
        if let Some(thread) = self.thread.lock().take()
            && thread.join().is_err()
        {
            tracing::error!("a log writer thread panicked");
        }
    }
}

struct Writer {
    log: Arc<PartitionLog>,
    active: Arc<Segment>,
    /// Offset the next record gets.
    next: Offset,
    /// Durable length of the active segment.
    len: u64,
    /// Position of the last index entry in the active segment.
    last_indexed: Option<u64>,
    segment_bytes: u64,
    pending: Arc<AtomicU64>,
    /// Encoded frames not yet written.
    buf: Vec<u8>,
    /// Index entries for the frames in `buf`.
    entries: Vec<IndexEntry>,
    /// Senders of the frames in `buf`.
    waiting: Vec<Waiting>,
    /// Set when the log can no longer be appended to safely.
    failed: Option<String>,
}

/// Largest buffer kept between batches; a bigger one is freed after use.
const KEEP_BUFFER: usize = 16 << 20;

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<WriterMsg>) {
        let mut batch = Vec::new();
        loop {
            let mut stop = false;
            match rx.recv() {
                Ok(WriterMsg::Append(request)) => batch.push(request),
                Ok(WriterMsg::Stop) | Err(_) => stop = true,
            }
            while !stop {
                match rx.try_recv() {
                    Ok(WriterMsg::Append(request)) => batch.push(request),
                    Ok(WriterMsg::Stop) => stop = true,
                    Err(_) => break,
                }
            }
            self.process(&mut batch);
            if stop {
                // Requests queued after the stop are dropped with the channel: their
                // senders see `Closed`.
                return;
            }
        }
    }

    fn process(&mut self, batch: &mut Vec<AppendRequest>) {
        for request in batch.drain(..) {
            if let Some(reason) = &self.failed {
                self.pending.fetch_sub(request.bytes, Ordering::AcqRel);
                let _ = request
                    .reply
                    .send(Err(BusError::Unavailable(reason.clone())));
                continue;
            }
            if self.len + self.buf.len() as u64 >= self.segment_bytes
                && self.next > self.active.base
            {
                self.flush();
                self.roll();
            }
            let first = self.next;
            for msg in &request.messages {
                let position = self.len + self.buf.len() as u64;
                if self
                    .last_indexed
                    .is_none_or(|p| position - p >= INDEX_INTERVAL)
                {
                    self.entries.push(IndexEntry {
                        offset: self.next,
                        position,
                    });
                    self.last_indexed = Some(position);
                }
                record::encode(
                    &mut self.buf,
                    self.next,
                    msg.timestamp_ms.unwrap_or(request.timestamp_ms),
                    msg,
                );
                self.next += 1;
            }
            self.waiting.push(Waiting {
                reply: request.reply,
                first,
                bytes: request.bytes,
            });
        }
        self.flush();
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
    }

    /// Writes and fsyncs the buffer, then acknowledges its senders.
    fn flush(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let result = self
            .active
            .write_at(&self.buf, self.len)
            .and_then(|()| self.active.sync());
        let outcome = match result {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                self.active
                    .publish(self.len, self.next, &self.entries, now_ms());
                self.log.set_end(self.next);
                Ok(())
            }
            Err(error) => {
                tracing::error!(segment = %self.active.path.display(), %error, "log append failed");
                // Undo the partial append so the file only holds acknowledged frames.
                self.next = self.active.next_offset();
                self.last_indexed = self.active_last_indexed();
                if let Err(e) = self.active.truncate(self.len) {
                    self.failed = Some(format!(
                        "{}: append failed ({error}) and the partial write could not be undone ({e})",
                        self.active.path.display()
                    ));
                }
                Err(error)
            }
        };
        self.buf.clear();
        self.entries.clear();
        for w in self.waiting.drain(..) {
            self.pending.fetch_sub(w.bytes, Ordering::AcqRel);
            let result = match &outcome {
                Ok(()) => Ok(w.first),
                Err(e) => Err(BusError::Io(std::io::Error::new(e.kind(), e.to_string()))),
            };
            let _ = w.reply.send(result);
        }
    }

    /// Position of the last durable index entry of the active segment.
    fn active_last_indexed(&self) -> Option<u64> {
        (self.active.durable_len() > 0).then(|| self.active.position_for(u64::MAX))
    }

    /// Seals the active segment and starts a new one at the next offset. On failure the
    /// current segment simply keeps growing.
    fn roll(&mut self) {
        if self.failed.is_some() || self.next == self.active.base {
            return;
        }
        match Segment::create(self.log.dir(), self.next) {
            Ok(segment) => {
                self.active.write_index_file();
                let segment = Arc::new(segment);
                self.log.push_segment(Arc::clone(&segment));
                self.active = segment;
                self.len = 0;
                self.last_indexed = None;
            }
            Err(error) => {
                tracing::warn!(dir = %self.log.dir().display(), %error, "could not roll the log segment");
            }
        }
    }
}
