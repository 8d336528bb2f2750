//! Small file-system helpers: durable writes, directory syncs, safe names.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::BusError;

/// Name of the directory holding consumer-group offsets; not a valid topic name.
pub(crate) const GROUPS_DIR: &str = "_groups";

/// An I/O error with the operation and path it concerns.
pub(crate) fn io_error(what: &str, path: &Path, error: io::Error) -> BusError {
    BusError::Io(io::Error::new(
        error.kind(),
        format!("{what} {}: {error}", path.display()),
    ))
}

/// Makes the entries of `dir` (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), BusError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing directory", dir, e))
}

/// Creates `dir` (and its parents) and makes its entry durable in its parent.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), BusError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| io_error("creating directory", dir, e))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Replaces `path` with `data` atomically and durably: write a temporary file, fsync it,
/// rename it over `path`, fsync the directory.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), BusError> {
    let tmp = tmp_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| io_error("creating", &tmp, e))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("writing", &tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| io_error("renaming into place", path, e))?;
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// `path` with `.tmp` appended.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

/// Checks that `name` can be a topic: Kafka's rules (1–249 characters of `[A-Za-z0-9._-]`),
/// plus it may not start with `.` nor be the groups directory, since it names a directory.
pub(crate) fn validate_topic_name(name: &str) -> Result<(), BusError> {
    let legal = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > 249 || !legal || name.starts_with('.') || name == GROUPS_DIR
    {
        return Err(BusError::Config(format!(
            "invalid topic name {name:?}: use 1-249 characters of [A-Za-z0-9._-], not starting with '.'"
        )));
    }
    Ok(())
}

/// A file name for an arbitrary string: `[A-Za-z0-9_-]` and non-leading `.` are kept,
/// every other byte becomes `%XX`, so distinct names never collide.
pub(crate) fn escape_file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Wall-clock time in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_names_without_collisions() {
        assert_eq!(escape_file_name("sink.archive-1"), "sink.archive-1");
        assert_eq!(escape_file_name("a/b"), "a%2Fb");
        assert_eq!(escape_file_name(".hidden"), "%2Ehidden");
        assert_ne!(escape_file_name("a%2Fb"), escape_file_name("a/b"));
    }

    #[test]
    fn validates_topic_names() {
        assert!(validate_topic_name("mcpulse.spans.v1").is_ok());
        for bad in ["", ".x", "a/b", "_groups", "a b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
