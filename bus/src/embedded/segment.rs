//! Segment files: one file of consecutive record frames per range of offsets, named by
//! the offset of its first record (`{base:020}.log`), with a sparse in-memory index and,
//! once sealed, an index file so reopening does not rescan it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use parking_lot::RwLock;

use super::fsutil::{io_error, sync_dir, write_atomic};
use super::record::{FRAME_HEADER_LEN, FrameHeader, body_offset};
use crate::{BusError, Offset};

/// A record gets an index entry when it starts at least this many bytes after the
/// previous entry (and the first record always does).
pub(crate) const INDEX_INTERVAL: u64 = 4096;

/// Sparse index entry: the record at `offset` starts at byte `position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: Offset,
    pub position: u64,
}

/// One segment file, shared by its partition's writer and readers. Readers only look at
/// the first `durable_len` bytes: complete frames that were fsynced.
pub(crate) struct Segment {
    pub base: Offset,
    pub path: PathBuf,
    file: File,
    durable_len: AtomicU64,
    next_offset: AtomicU64,
    last_append_ms: AtomicI64,
    index: RwLock<Vec<IndexEntry>>,
}

/// What scanning a segment file found.
struct Scan {
    /// Length of the valid prefix (complete, contiguous frames).
    valid_len: u64,
    next_offset: Offset,
    index: Vec<IndexEntry>,
    /// Why the scan stopped before the end of the file, if it did.
    stopped: Option<String>,
}

impl Segment {
    pub fn log_path(dir: &Path, base: Offset) -> PathBuf {
        dir.join(format!("{base:020}.log"))
    }

    fn index_path(&self) -> PathBuf {
        self.path.with_extension("index")
    }

    /// Parses a segment file name into its base offset.
    pub fn parse_name(name: &str) -> Option<Offset> {
        let digits = name.strip_suffix(".log")?;
        (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())?
    }

    /// Creates an empty segment starting at `base` (reusing an empty file left by a crash
    /// during a previous roll) and makes its directory entry durable.
    pub fn create(dir: &Path, base: Offset) -> Result<Segment, BusError> {
        let path = Self::log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error("creating segment", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| io_error("reading metadata of", &path, e))?
            .len();
        if len != 0 {
            return Err(BusError::Corrupt(format!(
                "new segment {} already holds {len} bytes",
                path.display()
            )));
        }
        sync_dir(dir)?;
        Ok(Self::new(
            base,
            path,
            file,
            0,
            base,
            Vec::new(),
            super::fsutil::now_ms(),
        ))
    }

    fn new(
        base: Offset,
        path: PathBuf,
        file: File,
        len: u64,
        next_offset: Offset,
        index: Vec<IndexEntry>,
        last_append_ms: i64,
    ) -> Segment {
        Segment {
            base,
            path,
            file,
            durable_len: AtomicU64::new(len),
            next_offset: AtomicU64::new(next_offset),
            last_append_ms: AtomicI64::new(last_append_ms),
            index: RwLock::new(index),
        }
    }

    /// Opens an existing segment. The last segment of a partition (`is_last`) is fully
    /// checked and a torn or corrupt tail is cut off: it was never acknowledged. A sealed
    /// segment was fsynced before its successor was created, so its frames are trusted
    /// (found through its index file, or by walking the frame headers when that is
    /// missing) and any inconsistency is reported as corruption.
    pub fn open(path: PathBuf, base: Offset, is_last: bool) -> Result<Segment, BusError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error("opening segment", &path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| io_error("reading metadata of", &path, e))?;
        let len = meta.len();
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or_else(super::fsutil::now_ms, |d| d.as_millis() as i64);
        if !is_last
            && let Some((next, index)) = read_index_file(&path.with_extension("index"), base, len)
        {
            return Ok(Self::new(base, path, file, len, next, index, mtime));
        }
        let scan =
            scan(&file, base, len, is_last).map_err(|e| io_error("scanning segment", &path, e))?;
        if let Some(reason) = &scan.stopped {
            if !is_last {
                return Err(BusError::Corrupt(format!(
                    "sealed segment {} is damaged at byte {}: {reason}",
                    path.display(),
                    scan.valid_len
                )));
            }
            tracing::warn!(
                segment = %path.display(),
                valid_bytes = scan.valid_len,
                dropped_bytes = len - scan.valid_len,
                %reason,
                "truncating the unacknowledged tail of the log"
            );
            file.set_len(scan.valid_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error("truncating segment", &path, e))?;
        }
        let segment = Self::new(
            base,
            path,
            file,
            scan.valid_len,
            scan.next_offset,
            scan.index,
            mtime,
        );
        if !is_last {
            segment.write_index_file();
        }
        Ok(segment)
    }

    /// Bytes of complete, fsynced frames.
    pub fn durable_len(&self) -> u64 {
        self.durable_len.load(Ordering::Acquire)
    }

    /// Offset after the last durable record of this segment.
    pub fn next_offset(&self) -> Offset {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Unix milliseconds of the last append (file modification time after a reopen).
    pub fn last_append_ms(&self) -> i64 {
        self.last_append_ms.load(Ordering::Relaxed)
    }

    /// Position of the indexed record at or before `offset` (0 when none).
    pub fn position_for(&self, offset: Offset) -> u64 {
        let index = self.index.read();
        match index.partition_point(|e| e.offset <= offset) {
            0 => 0,
            i => index[i - 1].position,
        }
    }

    /// Writes `data` at `position` (the writer only).
    pub fn write_at(&self, data: &[u8], position: u64) -> io::Result<()> {
        self.file.write_all_at(data, position)
    }

    /// Makes written data durable (fdatasync).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Cuts the file back to `len` after a failed write.
    pub fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_data()
    }

    /// Reads exactly `buf.len()` bytes at `position`.
    pub fn read_at(&self, buf: &mut [u8], position: u64) -> Result<(), BusError> {
        self.file
            .read_exact_at(buf, position)
            .map_err(|e| io_error("reading segment", &self.path, e))
    }

    /// Makes newly fsynced frames visible to readers (the writer only).
    pub fn publish(&self, len: u64, next_offset: Offset, entries: &[IndexEntry], now_ms: i64) {
        if !entries.is_empty() {
            self.index.write().extend_from_slice(entries);
        }
        self.last_append_ms.store(now_ms, Ordering::Relaxed);
        self.next_offset.store(next_offset, Ordering::Release);
        self.durable_len.store(len, Ordering::Release);
    }

    /// Saves the index of a sealed segment. Best effort: a missing or stale index file
    /// only means the segment is scanned when the log is reopened.
    pub fn write_index_file(&self) {
        let index = self.index.read();
        let mut data = Vec::with_capacity(40 + index.len() * 16);
        data.extend_from_slice(INDEX_MAGIC);
        data.extend_from_slice(&self.durable_len().to_le_bytes());
        data.extend_from_slice(&self.next_offset().to_le_bytes());
        data.extend_from_slice(&(index.len() as u64).to_le_bytes());
        for e in index.iter() {
            data.extend_from_slice(&e.offset.to_le_bytes());
            data.extend_from_slice(&e.position.to_le_bytes());
        }
        drop(index);
        let crc = crc32fast::hash(&data);
        data.extend_from_slice(&crc.to_le_bytes());
        if let Err(e) = write_atomic(&self.index_path(), &data) {
            tracing::warn!(segment = %self.path.display(), error = %e, "could not write segment index");
        }
    }

    /// Deletes the segment's files (retention). Readers holding it keep reading the
    /// unlinked file until they drop it.
    pub fn remove_files(&self) -> Result<(), BusError> {
        let index = self.index_path();
        if let Err(e) = std::fs::remove_file(&index)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(io_error("removing", &index, e));
        }
        std::fs::remove_file(&self.path).map_err(|e| io_error("removing", &self.path, e))
    }
}

const INDEX_MAGIC: &[u8; 8] = b"MCPIDX1\0";

/// Loads an index file when it is intact and describes exactly `log_len` bytes.
fn read_index_file(path: &Path, base: Offset, log_len: u64) -> Option<(Offset, Vec<IndexEntry>)> {
    let data = std::fs::read(path).ok()?;
    if data.len() < 36 || &data[..8] != INDEX_MAGIC {
        return None;
    }
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let word =
        |i: usize| u64::from_le_bytes(body[8 + i * 8..16 + i * 8].try_into().unwrap_or_default());
    let (len, next, count) = (word(0), word(1), word(2) as usize);
    if len != log_len || next < base || body.len() != 32 + count * 16 {
        return None;
    }
    let index = (0..count)
        .map(|i| IndexEntry {
            offset: word(3 + 2 * i),
            position: word(4 + 2 * i),
        })
        .collect();
    Some((next, index))
}

/// Walks the frames of a segment of `len` bytes from the start, checking lengths and
/// offset continuity, and the CRC of every body when `verify`.
fn scan(file: &File, base: Offset, len: u64, verify: bool) -> io::Result<Scan> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut out = Scan {
        valid_len: 0,
        next_offset: base,
        index: Vec::new(),
        stopped: None,
    };
    let mut last_indexed: Option<u64> = None;
    let mut head = [0u8; FRAME_HEADER_LEN + 8];
    let mut body = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let stop = |reason: &str| Some(reason.to_string());
        if len - pos < head.len() as u64 {
            out.stopped = stop("incomplete frame header");
            break;
        }
        reader.read_exact(&mut head)?;
        let Some(header) = FrameHeader::parse(&head) else {
            out.stopped = stop("invalid frame length");
            break;
        };
        let frame_len = header.frame_len() as u64;
        if len - pos < frame_len {
            out.stopped = stop("incomplete frame");
            break;
        }
        if verify {
            body.clear();
            body.extend_from_slice(&head[FRAME_HEADER_LEN..]);
            body.resize(header.body_len, 0);
            reader.read_exact(&mut body[8..])?;
            if !header.check(&body) {
                out.stopped = stop("checksum mismatch");
                break;
            }
        } else {
            reader.seek_relative(header.body_len as i64 - 8)?;
        }
        let offset = body_offset(&head[FRAME_HEADER_LEN..]);
        if offset != out.next_offset {
            out.stopped = Some(format!(
                "offset {offset} where {} was expected",
                out.next_offset
            ));
            break;
        }
        if last_indexed.is_none_or(|p| pos - p >= INDEX_INTERVAL) {
            out.index.push(IndexEntry {
                offset,
                position: pos,
            });
            last_indexed = Some(pos);
        }
        pos += frame_len;
        out.valid_len = pos;
        out.next_offset = offset + 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::record::encode;
    use super::*;
    use crate::Message;

    fn frames(base: Offset, count: u64, value_len: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        for i in 0..count {
            encode(
                &mut buf,
                base + i,
                1,
                &Message::new(None, vec![b'x'; value_len]),
            );
        }
        buf
    }

    #[test]
    fn parses_names() {
        assert_eq!(Segment::parse_name("00000000000000000042.log"), Some(42));
        assert_eq!(Segment::parse_name("42.log"), None);
        assert_eq!(Segment::parse_name("00000000000000000042.index"), None);
    }

    #[test]
    fn scan_truncates_torn_tail_of_last_segment() {
        let dir = tempfile::tempdir().unwrap();
        let path = Segment::log_path(dir.path(), 10);
        let mut data = frames(10, 5, 3000);
        let complete = data.len() as u64;
        data.extend_from_slice(&frames(15, 1, 100)[..20]);
        std::fs::write(&path, &data).unwrap();
        let seg = Segment::open(path.clone(), 10, true).unwrap();
        assert_eq!(seg.durable_len(), complete);
        assert_eq!(seg.next_offset(), 15);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), complete);
        // 3 KB records: an index entry every second record.
        assert_eq!(seg.position_for(10), 0);
        assert_eq!(seg.position_for(12), seg.position_for(13));
    }

    #[test]
    fn sealed_segment_uses_index_file_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = Segment::log_path(dir.path(), 0);
        std::fs::write(&path, frames(0, 20, 500)).unwrap();
        let scanned = Segment::open(path.clone(), 0, false).unwrap();
        assert!(path.with_extension("index").exists());
        let indexed = Segment::open(path.clone(), 0, false).unwrap();
        assert_eq!(*indexed.index.read(), *scanned.index.read());
        assert_eq!(indexed.next_offset(), 20);

        let mut data = frames(0, 20, 500);
        data.truncate(data.len() - 7);
        std::fs::write(&path, data).unwrap();
        assert!(matches!(
            Segment::open(path, 0, false),
            Err(BusError::Corrupt(_))
        ));
    }
}
