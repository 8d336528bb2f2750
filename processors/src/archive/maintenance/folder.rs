//! Hour and day folders of the archive: listing them, reading their manifest, seeing what
//! a reader sees, committing a new manifest.

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

/// What a folder holds: one hour, or a whole closed day (`hour=day`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Span {
    Hour,
    Day,
}

/// One `{table}/tenant=…/date=…/hour=…` folder and the objects a listing showed in it.
#[derive(Clone, Debug)]
pub struct Folder {
    pub table: Table,
    pub tenant: String,
    /// Start of the folder's hour (UTC); of its date for a day folder.
    pub hour: DateTime<Utc>,
    pub span: Span,
    pub path: Path,
    pub objects: Vec<ObjectMeta>,
    /// For an hour folder: what the listing showed of its date's day folder, whose
    /// manifest also hides objects of this folder.
    pub day: Vec<ObjectMeta>,
}

impl Folder {
    /// The empty day folder of `tenant`'s `date` (start of the day) in `table`.
    pub fn empty_day(
        target: &ArchiveTarget,
        table: Table,
        tenant: &str,
        date: DateTime<Utc>,
    ) -> Self {
        Self {
            table,
            tenant: tenant.to_string(),
            hour: date,
            span: Span::Day,
            path: date_path(target, table, tenant, &date.format("%Y-%m-%d").to_string())
                .join(format!("hour={}", folder_manifest::DAY_HOUR).as_str()),
            objects: Vec::new(),
            day: Vec::new(),
        }
    }

    /// When the rows the folder may hold end: its hour's end, or its day's.
    pub fn hour_end(&self) -> DateTime<Utc> {
        match self.span {
            Span::Hour => self.hour + TimeDelta::hours(1),
            Span::Day => self.hour + TimeDelta::days(1),
        }
    }

    /// Start of the folder's date.
    pub fn date(&self) -> DateTime<Utc> {
        self.hour
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
    }

    /// The `HH` of an hour folder (`day` for a day folder).
    pub fn hour_name(&self) -> String {
        match self.span {
            Span::Hour => self.hour.format("%H").to_string(),
            Span::Day => folder_manifest::DAY_HOUR.to_string(),
        }
    }

    /// `table/tenant=…/date=…/hour=…` (for reports).
    pub fn describe(&self) -> String {
        format!(
            "{}/tenant={}/date={}/hour={}",
            self.table.name(),
            self.tenant,
            self.hour.format("%Y-%m-%d"),
            self.hour_name()
        )
    }

    /// The day folder path of this folder's date.
    pub fn day_path(&self) -> Path {
        match self.span {
            Span::Day => self.path.clone(),
            Span::Hour => {
                let parts: Vec<_> = self.path.parts().collect();
                Path::from_iter(parts[..parts.len().saturating_sub(1)].iter().cloned())
                    .join(format!("hour={}", folder_manifest::DAY_HOUR).as_str())
            }
        }
    }

    /// The latest manifest of the date's day folder, for an hour folder (re-listing the
    /// day folder once if it was replaced since the listing).
    pub async fn day_manifest(
        &mut self,
        target: &ArchiveTarget,
    ) -> Result<Option<FolderManifest>, MaintenanceError> {
        if self.span == Span::Day {
            return Ok(None);
        }
        for _ in 0..2 {
            let names = self
                .day
                .iter()
                .map(|m| folder_manifest::file_name(m.location.as_ref()));
            let Some(generation) = folder_manifest::latest_generation(names) else {
                return Ok(None);
            };
            let day_path = self.day_path();
            match read_manifest(target, &day_path, generation).await? {
                Some(m) => return Ok(Some(m)),
                None => self.day = list_folder(target, &day_path).await?,
            }
        }
        Err(MaintenanceError::Other(format!(
            "{}: its manifests keep changing",
            self.day_path()
        )))
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

    /// Lists the folder (and, for an hour folder, its day folder) again.
    pub async fn relist(&mut self, target: &ArchiveTarget) -> Result<(), MaintenanceError> {
        self.objects = list_folder(target, &self.path).await?;
        if self.span == Span::Hour {
            self.day = list_folder(target, &self.day_path()).await?;
        }
        Ok(())
    }

    /// The folder's latest manifest (re-listing once if it was replaced and deleted since
    /// the listing) and the Parquet objects a reader sees: for an hour folder, those its
    /// date's day folder does not cover.
    pub async fn state(&mut self, target: &ArchiveTarget) -> Result<FolderState, MaintenanceError> {
        let day = self.day_manifest(target).await?;
        let hour = self.hour_name();
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
            let visibility = folder_manifest::visible_in_hour(
                self.names(),
                manifest.as_ref(),
                &hour,
                day.as_ref(),
            );
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
            return Ok(FolderState {
                manifest,
                visible,
                day,
            });
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
    /// For an hour folder, the latest manifest of its date's day folder.
    pub day: Option<FolderManifest>,
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

/// `{root}/{table}/tenant={tenant}/date={date}`.
fn date_path(target: &ArchiveTarget, table: Table, tenant: &str, date: &str) -> Path {
    table_path(target, table)
        .join(format!("tenant={tenant}").as_str())
        .join(format!("date={date}").as_str())
}

/// The objects directly in `folder` (none when it does not exist).
async fn list_folder(
    target: &ArchiveTarget,
    folder: &Path,
) -> Result<Vec<ObjectMeta>, MaintenanceError> {
    match target.store.list_with_delimiter(Some(folder)).await {
        Ok(listed) => Ok(listed.objects),
        Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(MaintenanceError::store(folder, e)),
    }
}

/// Every hour and day folder of `table` (only `tenant`'s when given), with its objects,
/// by tenant and date, a date's day folder after its hours.
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
    let mut folders: BTreeMap<(String, DateTime<Utc>, Span), Folder> = BTreeMap::new();
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
        let (start, span) = if hour == folder_manifest::DAY_HOUR {
            (hour_start(date, "00"), Span::Day)
        } else {
            (hour_start(date, hour), Span::Hour)
        };
        let Some(start) = start else {
            continue;
        };
        let folder = folders
            .entry((tenant.to_string(), start, span))
            .or_insert_with(|| Folder {
                table,
                tenant: tenant.to_string(),
                hour: start,
                span,
                path: date_path(target, table, tenant, date).join(format!("hour={hour}").as_str()),
                objects: Vec::new(),
                day: Vec::new(),
            });
        folder.objects.push(meta);
    }
    // Hour folders see their day folder's listing; a day folder sorts after its hours
    // (hours start at or after midnight, and `Day` > `Hour` for the midnight hour).
    let days: BTreeMap<(String, DateTime<Utc>), Vec<ObjectMeta>> = folders
        .values()
        .filter(|f| f.span == Span::Day)
        .map(|f| ((f.tenant.clone(), f.hour), f.objects.clone()))
        .collect();
    let mut out: Vec<Folder> = folders.into_values().collect();
    for folder in &mut out {
        if folder.span == Span::Hour
            && let Some(day) = days.get(&(folder.tenant.clone(), folder.date()))
        {
            folder.day = day.clone();
        }
    }
    out.sort_by(|a, b| {
        (&a.tenant, a.date(), a.span, a.hour).cmp(&(&b.tenant, b.date(), b.span, b.hour))
    });
    Ok(out)
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
