//! Resolving `archive.url` to an object store.

use std::path::PathBuf;
use std::sync::Arc;

use mcpulse_processors::archive::ArchiveTarget;
use mcpulse_queries::ArchiveCatalog;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use url::Url;

use crate::Config;
use crate::config::ConfigError;

/// An opened archive location, for writing (processors) and reading (queries).
#[derive(Clone)]
pub struct ArchiveLocation {
    pub url: Url,
    pub target: ArchiveTarget,
}

impl ArchiveLocation {
    /// Opens the archive of `config`, creating a local folder if needed.
    pub fn open(config: &Config) -> Result<Self, ConfigError> {
        let dir: PathBuf = match config.archive.url.as_deref() {
            None => config.data_dir.join("archive"),
            Some(url) if url.starts_with("file://") => Url::parse(url)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or_else(|| {
                    ConfigError(format!("archive.url: {url:?} is not a valid file:// URL"))
                })?,
            Some(path) => PathBuf::from(path),
        };
        std::fs::create_dir_all(&dir).map_err(|e| {
            ConfigError(format!("archive.url: cannot create {}: {e}", dir.display()))
        })?;
        let dir = dir.canonicalize().map_err(|e| {
            ConfigError(format!(
                "archive.url: cannot resolve {}: {e}",
                dir.display()
            ))
        })?;
        let url = Url::from_directory_path(&dir).map_err(|_| {
            ConfigError(format!(
                "archive.url: {} is not an absolute path",
                dir.display()
            ))
        })?;
        let root = Path::from(dir.to_string_lossy().trim_start_matches('/'));
        let target = ArchiveTarget {
            store: Arc::new(LocalFileSystem::new()),
            root,
            local_root: Some(dir),
        };
        Ok(Self { url, target })
    }

    pub fn catalog(&self) -> ArchiveCatalog {
        ArchiveCatalog::new(self.url.clone(), self.target.store.clone())
    }
}
