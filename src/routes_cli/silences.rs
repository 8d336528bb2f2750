//! Silences on disk: `{data_dir}/silences.json`, a [`SilenceSet`] as JSON, shared by the
//! `mcpulse silence` commands, the HTTP API and the notify stage (which reads it).
//!
//! Every change is a read-modify-write under an exclusive lock on
//! `{data_dir}/silences.json.lock`, and the new file replaces the old one atomically
//! (written to a temporary file in the same folder, fsynced, renamed, folder fsynced):
//! a reader sees the old set or the new one, never half of one. Silences that ended more
//! than [`KEEP_EXPIRED`] ago are dropped at the next change.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mcpulse_schemas::topics::{TENANT_ID_RULE, valid_tenant_id};
use mcpulse_sinks::routes::{Matchers, Silence, SilenceError, SilenceSet, SilenceState};
use serde::{Deserialize, Serialize};

/// How long an expired silence stays listed.
pub const KEEP_EXPIRED: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// The file's name under the data folder.
pub const FILE_NAME: &str = "silences.json";

/// Reading or writing the silences file failed, or the change is not allowed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid silences file: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(transparent)]
    Silence(#[from] SilenceError),
}

/// `{data_dir}/silences.json`.
#[derive(Clone, Debug)]
pub struct SilenceStore {
    path: PathBuf,
}

impl SilenceStore {
    /// The store of a data folder.
    pub fn in_data_dir(data_dir: &Path) -> SilenceStore {
        SilenceStore {
            path: data_dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The silences (empty when the file does not exist yet).
    pub fn load(&self) -> Result<SilenceSet, StoreError> {
        read(&self.path)
    }

    /// Applies `change` to the current set under the lock and saves the result; returns
    /// what `change` returned. Nothing is written when `change` fails.
    pub fn update<T>(
        &self,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut SilenceSet) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let _lock = Lock::acquire(&self.path.with_extension("json.lock"))?;
        let mut set = self.load()?;
        let out = change(&mut set)?;
        set.forget_expired_before(now - KEEP_EXPIRED);
        self.save(&set)?;
        Ok(out)
    }

    fn save(&self, set: &SilenceSet) -> Result<(), StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut json = serde_json::to_vec_pretty(set).expect("a silence set serializes");
        json.push(b'\n');
        let mut tmp = tempfile::Builder::new()
            .prefix(".silences-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| self.io(e))?;
        tmp.write_all(&json).map_err(|e| self.io(e))?;
        tmp.as_file().sync_all().map_err(|e| self.io(e))?;
        tmp.persist(&self.path).map_err(|e| self.io(e.error))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e))
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

fn read(path: &Path) -> Result<SilenceSet, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SilenceSet::new()),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// An exclusive `flock` on a lock file, released on drop.
struct Lock(File);

impl Lock {
    fn acquire(path: &Path) -> Result<Lock, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io)?;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        Ok(Lock(file))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: unlocks the descriptor locked in `acquire`.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// A silence to create, as the HTTP API takes it (and the CLI builds it).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// All must hold (`"server = weather"`, `{"severity": ["P1", "P2"]}`).
    pub matchers: Matchers,
    /// Only this tenant's events (forced to the caller's tenant for tenant tokens).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Default: now.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// The end; or `duration` from the start.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// `2h`, `30m`, … (instead of `ends_at`).
    #[serde(default, with = "humantime_serde")]
    pub duration: Option<Duration>,
    pub created_by: String,
    pub comment: String,
}

/// A field of a new silence that is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

fn field_error(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

impl NewSilence {
    /// The silence, with id `id`, checked field by field.
    pub fn into_silence(self, id: String, now: DateTime<Utc>) -> Result<Silence, FieldError> {
        if self.matchers.is_empty() {
            return Err(field_error("matchers", "at least one matcher is needed"));
        }
        if self.matchers.iter().all(|m| m.matches_empty()) {
            return Err(field_error(
                "matchers",
                "at least one matcher must not match the empty string (a silence cannot \
                 match everything)",
            ));
        }
        if let Some(tenant) = &self.tenant
            && !valid_tenant_id(tenant)
        {
            return Err(field_error(
                "tenant",
                format!("{tenant:?} is not a valid tenant id ({TENANT_ID_RULE})"),
            ));
        }
        if self.created_by.trim().is_empty() {
            return Err(field_error("created_by", "must not be empty"));
        }
        if self.comment.trim().is_empty() {
            return Err(field_error("comment", "must not be empty: say why"));
        }
        let starts_at = self.starts_at.unwrap_or(now);
        let ends_at = match (self.ends_at, self.duration) {
            (Some(_), Some(_)) => {
                return Err(field_error(
                    "duration",
                    "give ends_at or duration, not both",
                ));
            }
            (None, None) => return Err(field_error("ends_at", "give ends_at or duration")),
            (Some(end), None) => end,
            (None, Some(d)) => {
                let d = chrono::TimeDelta::from_std(d)
                    .map_err(|_| field_error("duration", "too long"))?;
                starts_at + d
            }
        };
        if ends_at <= starts_at {
            let field = match self.duration {
                Some(_) => "duration",
                None => "ends_at",
            };
            return Err(field_error(field, "the silence must end after it starts"));
        }
        if ends_at <= now {
            return Err(field_error("ends_at", "is in the past"));
        }
        Ok(Silence {
            id,
            tenant: self.tenant,
            matchers: self.matchers,
            starts_at,
            ends_at,
            created_by: self.created_by,
            comment: self.comment,
        })
    }
}

/// A new random silence id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A silence as listed: its fields and its state now.
#[derive(Clone, Debug, Serialize)]
pub struct SilenceView<'a> {
    #[serde(flatten)]
    pub silence: &'a Silence,
    pub state: &'static str,
}

impl<'a> SilenceView<'a> {
    pub fn new(silence: &'a Silence, now: DateTime<Utc>) -> SilenceView<'a> {
        SilenceView {
            silence,
            state: state_name(silence.state_at(now)),
        }
    }
}

pub fn state_name(state: SilenceState) -> &'static str {
    match state {
        SilenceState::Pending => "pending",
        SilenceState::Active => "active",
        SilenceState::Expired => "expired",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn new(json: serde_json::Value) -> Result<Silence, FieldError> {
        serde_json::from_value::<NewSilence>(json)
            .unwrap()
            .into_silence("s1".into(), at("2026-01-14T10:00:00Z"))
    }

    #[test]
    fn builds_with_a_duration_or_an_end_and_names_bad_fields() {
        let s = new(
            serde_json::json!({"matchers": ["server = weather"], "duration": "2h",
            "created_by": "ana", "comment": "deploy"}),
        )
        .unwrap();
        assert_eq!(s.ends_at, at("2026-01-14T12:00:00Z"));
        let field = |json| new(json).unwrap_err().field;
        assert_eq!(
            field(
                serde_json::json!({"matchers": ["server =~ \".*\""], "duration": "2h", "created_by": "a", "comment": "c"})
            ),
            "matchers"
        );
        assert_eq!(
            field(
                serde_json::json!({"matchers": ["server = w"], "created_by": "a", "comment": "c"})
            ),
            "ends_at"
        );
        assert_eq!(
            field(
                serde_json::json!({"matchers": ["server = w"], "duration": "1h", "tenant": "no such/tenant", "created_by": "a", "comment": "c"})
            ),
            "tenant"
        );
        assert_eq!(
            field(
                serde_json::json!({"matchers": ["server = w"], "ends_at": "2026-01-14T09:00:00Z", "created_by": "a", "comment": "c"})
            ),
            "ends_at"
        );
        assert_eq!(
            field(
                serde_json::json!({"matchers": ["server = w"], "duration": "1h", "created_by": " ", "comment": "c"})
            ),
            "created_by"
        );
    }

    #[test]
    fn updates_atomically_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let store = SilenceStore::in_data_dir(dir.path());
        assert!(store.load().unwrap().list().is_empty());
        let now = at("2026-01-14T10:00:00Z");
        let silence = new(
            serde_json::json!({"matchers": ["server = weather"], "duration": "2h",
            "created_by": "ana", "comment": "deploy"}),
        )
        .unwrap();
        store
            .update(now, |set| Ok(set.add(silence.clone())?))
            .unwrap();
        assert_eq!(store.load().unwrap().list(), [silence]);
        let duplicate = store.update(now, |set| {
            Ok(set.add(store.load().unwrap().list()[0].clone())?)
        });
        assert!(matches!(
            duplicate,
            Err(StoreError::Silence(SilenceError::DuplicateId(_)))
        ));
        store.update(now, |set| Ok(set.expire("s1", now)?)).unwrap();
        assert_eq!(store.load().unwrap().list()[0].ends_at, now);
        // Forgotten a month later, at the next change.
        store
            .update(now + KEEP_EXPIRED + chrono::TimeDelta::hours(1), |_| Ok(()))
            .unwrap();
        assert!(store.load().unwrap().list().is_empty());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
        let store = SilenceStore::in_data_dir(dir.path());
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
    }
}
