//! Hour folders of the archive: listing them, reading their manifest, seeing what a
//! reader sees, committing a new manifest.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use futures::TryStreamExt;
use mcpulse_schemas::Table;
use mcpulse_schemas::folder_manifest::{self, FolderManifest};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::MaintenanceError;
use crate::archive::ArchiveTarget;

/// One `{table}/tenant=…/date=…/hour=…` folder and the objects a listing showed in it.
#[derive(Clone, Debug)]
pub struct Folder {
    pub table: Table,
    pub tenant: String,
    /// Start of the folder's hour (UTC).
    pub hour: DateTime<Utc>,
    pub path: Path,
    pub objects: Vec<ObjectMeta>,
}

impl Folder {
    pub fn hour_end(&self) -> DateTime<Utc> {
        self.hour + TimeDelta::hours(1)
    }

    /// `table/tenant=…/date=…/hour=…` (for reports).
    pub fn describe(&self) -> String {
        format!(
            "{}/tenant={}/{}",
            self.table.name(),
            self.tenant,
            self.hour.format("date=%Y-%m-%d/hour=%H")
        )
    }

    pub fn object(&self, name: &str) -> Path {
        self.path.clone().join(name)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.objects
            .iter()
            .map(|m| folder_manifest::file_name(m.location.as_ref()))
    }

    /// The latest manifest generation the listing shows.
    pub fn generation(&self) -> Option<u64> {
        folder_manifest::latest_generation(self.names())
    }

    /// Lists the folder again.
    pub async fn relist(&mut self, target: &ArchiveTarget) -> Result<(), MaintenanceError> {
        self.objects = target
            .store
            .list_with_delimiter(Some(&self.path))
            .await
            .map_err(|e| MaintenanceError::store(&self.path, e))?
            .objects;
        Ok(())
    }

    /// The folder's latest manifest (re-listing once if it was replaced and deleted since
    /// the listing) and the Parquet objects a reader sees.
    pub async fn state(&mut self, target: &ArchiveTarget) -> Result<FolderState, MaintenanceError> {
        for _ in 0..2 {
            let manifest = match self.generation() {
                None => None,
                Some(generation) => match read_manifest(target, &self.path, generation).await? {
                    Some(m) => Some(m),
                    None => {
                        self.relist(target).await?;
                        continue;
                    }
                },
            };
            let visibility = folder_manifest::visible(self.names(), manifest.as_ref());
            let mut visible: Vec<ObjectMeta> = self
                .objects
                .iter()
                .filter(|m| {
                    let name = folder_manifest::file_name(m.location.as_ref());
                    visibility.visible.iter().any(|v| v == name)
                })
                .cloned()
                .collect();
            for name in &visibility.unlisted_live {
                let path = self.object(name);
                let meta = target
                    .store
                    .head(&path)
                    .await
                    .map_err(|e| MaintenanceError::store(&path, e))?;
                visible.push(meta);
            }
            visible.sort_by(|a, b| a.location.cmp(&b.location));
            return Ok(FolderState { manifest, visible });
        }
        Err(MaintenanceError::Other(format!(
            "{}: its manifests keep changing",
            self.path
        )))
    }
}

/// What a folder holds under its latest manifest.
#[derive(Clone, Debug)]
pub struct FolderState {
    pub manifest: Option<FolderManifest>,
    /// The visible Parquet objects, by name.
    pub visible: Vec<ObjectMeta>,
}

impl FolderState {
    pub fn next_generation(&self) -> u64 {
        self.manifest.as_ref().map_or(1, |m| m.generation + 1)
    }
}

/// `{root}/{table}`.
pub fn table_path(target: &ArchiveTarget, table: Table) -> Path {
    target.root.clone().join(table.name())
}

/// Every hour folder of `table` (only `tenant`'s when given), with its objects.
pub async fn list_folders(
    target: &ArchiveTarget,
    table: Table,
    tenant: Option<&str>,
) -> Result<Vec<Folder>, MaintenanceError> {
    let mut prefix = table_path(target, table);
    if let Some(tenant) = tenant {
        prefix = prefix.join(format!("tenant={tenant}").as_str());
    }
    let depth = target.root.parts().count();
    let listed: Vec<ObjectMeta> = match target.store.list(Some(&prefix)).try_collect().await {
        Ok(listed) => listed,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(MaintenanceError::store(&prefix, e)),
    };
    let mut folders: BTreeMap<(String, DateTime<Utc>), Folder> = BTreeMap::new();
    for meta in listed {
        let parts: Vec<String> = meta
            .location
            .parts()
            .skip(depth)
            .map(|p| p.as_ref().to_string())
            .collect();
        // table / tenant= / date= / hour= / name
        let [_, tenant, date, hour, _name] = parts.as_slice() else {
            continue;
        };
        let (Some(tenant), Some(date), Some(hour)) = (
            tenant.strip_prefix("tenant="),
            date.strip_prefix("date="),
            hour.strip_prefix("hour="),
        ) else {
            continue;
        };
        let Some(start) = hour_start(date, hour) else {
            continue;
        };
        let folder = folders
            .entry((tenant.to_string(), start))
            .or_insert_with(|| Folder {
                table,
                tenant: tenant.to_string(),
                hour: start,
                path: table_path(target, table)
                    .join(format!("tenant={tenant}").as_str())
                    .join(format!("date={date}").as_str())
                    .join(format!("hour={hour}").as_str()),
                objects: Vec::new(),
            });
        folder.objects.push(meta);
    }
    Ok(folders.into_values().collect())
}

fn hour_start(date: &str, hour: &str) -> Option<DateTime<Utc>> {
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let hour: u32 = hour.parse().ok().filter(|h| *h < 24)?;
    Some(day.and_hms_opt(hour, 0, 0)?.and_utc())
}

/// The manifest of `generation` in `folder` (`None` when it is gone).
pub async fn read_manifest(
    target: &ArchiveTarget,
    folder: &Path,
    generation: u64,
) -> Result<Option<FolderManifest>, MaintenanceError> {
    let path = folder
        .clone()
        .join(folder_manifest::manifest_name(generation).as_str());
    match target.store.get(&path).await {
        Ok(got) => {
            let bytes = got
                .bytes()
                .await
                .map_err(|e| MaintenanceError::store(&path, e))?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| MaintenanceError::Other(format!("corrupt manifest {path}: {e}")))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(MaintenanceError::store(&path, e)),
    }
}

/// Creates the manifest of `manifest.generation` in `folder`, durably. `Ok(false)` when
/// that generation exists already (another compactor won).
pub async fn create_manifest(
    target: &ArchiveTarget,
    folder: &Path,
    manifest: &FolderManifest,
) -> Result<bool, MaintenanceError> {
    let path = folder
        .clone()
        .join(folder_manifest::manifest_name(manifest.generation).as_str());
    let body = Bytes::from(serde_json::to_vec_pretty(manifest).expect("manifests serialize"));
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match target
        .store
        .put_opts(&path, PutPayload::from(body.clone()), create)
        .await
    {
        Ok(_) => {}
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => {
            return Ok(false);
        }
        // A store without conditional writes: check, then write (one compactor per
        // archive is then required, as the README says).
        Err(object_store::Error::NotImplemented { .. }) => {
            if target.store.head(&path).await.is_ok() {
                return Ok(false);
            }
            target
                .store
                .put(&path, PutPayload::from(body))
                .await
                .map_err(|e| MaintenanceError::store(&path, e))?;
        }
        Err(e) => return Err(MaintenanceError::store(&path, e)),
    }
    target
        .sync(&path)
        .await
        .map_err(|e| MaintenanceError::Other(format!("{path}: {e}")))?;
    Ok(true)
}

/// Deletes `path`; an object already gone is fine.
pub async fn delete(target: &ArchiveTarget, path: &Path) -> Result<bool, MaintenanceError> {
    match target.store.delete(path).await {
        Ok(()) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(MaintenanceError::store(path, e)),
    }
}

/// On a local archive, removes the folder's directory, then its date's and tenant's, as
/// long as they are empty (object stores have no directories; a local file system keeps
/// them, and their names would still show a deleted tenant).
pub async fn remove_empty_dirs(target: &ArchiveTarget, folder: &Path) {
    let Some(local_root) = &target.local_root else {
        return;
    };
    let relative = folder
        .as_ref()
        .strip_prefix(target.root.as_ref())
        .unwrap_or(folder.as_ref())
        .trim_start_matches('/');
    let hour = local_root.join(relative);
    let _ = tokio::task::spawn_blocking(move || {
        // hour, date, tenant: `remove_dir` stops at the first that is not empty.
        let mut dir = Some(hour.as_path());
        for _ in 0..3 {
            let Some(d) = dir else { break };
            if std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    })
    .await;
}

/// On a local archive, removes every empty directory under `dir` (and `dir` itself if it
/// ends up empty), deepest first.
pub async fn remove_empty_tree(target: &ArchiveTarget, dir: &Path) {
    let Some(local_root) = &target.local_root else {
        return;
    };
    let relative = dir
        .as_ref()
        .strip_prefix(target.root.as_ref())
        .unwrap_or(dir.as_ref())
        .trim_start_matches('/');
    let top = local_root.join(relative);
    let _ = tokio::task::spawn_blocking(move || remove_empty(&top)).await;
}

/// Whether `dir` is gone after removing its empty subdirectories (and itself if empty).
fn remove_empty(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut empty = true;
    for entry in entries.flatten() {
        let path = entry.path();
        if !(path.is_dir() && remove_empty(&path)) {
            empty = false;
        }
    }
    empty && std::fs::remove_dir(dir).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_folders_parse() {
        assert_eq!(
            hour_start("2026-03-01", "07").unwrap().to_rfc3339(),
            "2026-03-01T07:00:00+00:00"
        );
        assert!(hour_start("2026-03-01", "24").is_none());
        assert!(hour_start("2026-3-x", "01").is_none());
    }
}
