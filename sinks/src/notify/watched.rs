//! Files the stage re-reads when they change (routes, silences): checked at most once
//! per `reload_interval` by modification time and size; a changed file that does not
//! load is reported and the previous version kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::routes::SilenceSet;

use super::error::NotifyError;

/// What identifies a version of a file.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// A value loaded from a file, reloaded when the file changes.
pub struct Watched<T> {
    path: PathBuf,
    stamp: Stamp,
    checked: Instant,
    value: Arc<T>,
}

impl<T> Watched<T> {
    /// Loads `path` now.
    pub fn load(
        path: PathBuf,
        load: impl FnOnce(&Path) -> Result<T, NotifyError>,
    ) -> Result<Self, NotifyError> {
        let stamp = stamp(&path);
        let value = Arc::new(load(&path)?);
        Ok(Watched {
            path,
            stamp,
            checked: Instant::now(),
            value,
        })
    }

    pub fn get(&self) -> &Arc<T> {
        &self.value
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reloads the file if `interval` (non-zero) passed since the last check and it
    /// changed. `None`: nothing to do; `Some(Err)`: it changed but did not load (the
    /// previous value stays, and the same version is not tried again).
    pub fn refresh(
        &mut self,
        interval: Duration,
        load: impl FnOnce(&Path) -> Result<T, NotifyError>,
    ) -> Option<Result<(), NotifyError>> {
        if interval.is_zero() || self.checked.elapsed() < interval {
            return None;
        }
        self.checked = Instant::now();
        let now = stamp(&self.path);
        if now == self.stamp {
            return None;
        }
        self.stamp = now;
        Some(load(&self.path).map(|value| self.value = Arc::new(value)))
    }
}

/// Reads a silences file (`{"silences": [...]}`, as `mcpulse silence` writes it); a
/// missing file means no silences.
pub fn load_silences(path: &Path) -> Result<SilenceSet, NotifyError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| NotifyError::Config(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SilenceSet::new()),
        Err(e) => Err(NotifyError::Config(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_a_changed_file_and_keeps_the_old_value_when_it_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.txt");
        std::fs::write(&path, "1").unwrap();
        let parse = |p: &Path| {
            std::fs::read_to_string(p)
                .unwrap()
                .trim()
                .parse::<u32>()
                .map_err(|e| NotifyError::Config(e.to_string()))
        };
        let mut w = Watched::load(path.clone(), parse).unwrap();
        assert_eq!(**w.get(), 1);
        assert!(w.refresh(Duration::ZERO, parse).is_none(), "0s: never");
        assert!(
            w.refresh(Duration::from_nanos(1), parse).is_none(),
            "unchanged"
        );
        std::fs::write(&path, "22").unwrap();
        assert!(matches!(
            w.refresh(Duration::from_nanos(1), parse),
            Some(Ok(()))
        ));
        assert_eq!(**w.get(), 22);
        std::fs::write(&path, "x").unwrap();
        assert!(matches!(
            w.refresh(Duration::from_nanos(1), parse),
            Some(Err(_))
        ));
        assert_eq!(**w.get(), 22);
        assert!(
            w.refresh(Duration::from_nanos(1), parse).is_none(),
            "same broken version"
        );
    }

    #[test]
    fn a_missing_silences_file_is_no_silences() {
        let dir = tempfile::tempdir().unwrap();
        let set = load_silences(&dir.path().join("silences.json")).unwrap();
        assert!(set.list().is_empty());
        std::fs::write(dir.path().join("bad.json"), "{").unwrap();
        assert!(load_silences(&dir.path().join("bad.json")).is_err());
    }
}
