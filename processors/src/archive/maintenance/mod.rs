//! Operations on the archive: compaction, retention, and deleting a tenant's (or a
//! server's) rows.
//!
//! **Compaction** merges the small objects of an hour folder into objects of up to
//! `target_rows` rows, sorted by (server, time) with the archive's writer settings, so
//! folder pruning and the footer's time bounds work as before. Only folders whose hour
//! ended `compact_after` ago are touched, so writers appending to the current hour are
//! left alone. The swap is the rule of [`mcpulse_schemas::folder_manifest`]: the new
//! objects (`compacted-{generation}-{inputs hash}-{n}.parquet`) are written first and are
//! invisible until a new manifest names them live and the inputs covered; the inputs are
//! deleted `delete_delay` later. A crash anywhere leaves either the old state (new
//! objects not yet named: ignored, overwritten by the rerun, which derives the same names
//! from the same inputs) or the new one (inputs hidden, deleted by a later pass): no row
//! is ever read twice or missed, and running it again changes nothing.
//!
//! **Day compaction** does the same for a whole day once it ended `day_compact_after`
//! ago: the small objects of its hour folders (and of its day folder) are merged into
//! objects of the day folder, `date=…/hour=day`, whose manifest covers them (hour-folder
//! objects as `hour=HH/{name}`, with the names the hour manifests covered, so replays
//! stay hidden once the hour folders are gone). An operator query over a month then opens
//! one object per table, tenant and day instead of one per hour. A date is compacted
//! either hour by hour (while it is recent) or as a day, never both at once.
//!
//! **Retention** deletes hour folders whose hour ended longer ago than the retention of
//! their table and tenant.
//!
//! **Deleting rows** removes a tenant's folders outright, or rewrites the objects that
//! may hold a server's rows without them (the same swap as compaction).

pub mod config;
mod folder;
pub mod ledger;
mod merge;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use mcpulse_schemas::Table;
use mcpulse_schemas::folder_manifest::{self, COMPACTED_PREFIX, FolderManifest};
use object_store::path::Path;
use serde::Serialize;
use tracing::{debug, info, warn};

pub use config::{Keep, MaintenanceConfig, RetentionConfig, TableRetention};
pub use folder::{Folder, Span, list_folders};
pub use ledger::{DeletionRequest, DeletionWatch};
pub use merge::Removal;

use folder::FolderState;
use merge::Input;

use super::{ArchiveConfig, ArchiveTarget, ParquetEncoder};

/// Compacted objects no manifest names (left by a crash, or by the loser of two
/// concurrent compactions) are deleted once they are at least this old (and older than
/// the delete delay), so a compaction still in progress never loses its output.
pub const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// A maintenance step failed.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("{path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl MaintenanceError {
    pub(crate) fn store(path: &Path, source: object_store::Error) -> Self {
        Self::Store {
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn parquet(path: &Path, e: impl fmt::Display) -> Self {
        Self::Other(format!("{path}: {e}"))
    }
}

/// What maintenance did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Folders whose small objects were merged.
    pub folders_compacted: u64,
    /// Objects merged away, objects written, rows in them.
    pub objects_merged: u64,
    pub objects_written: u64,
    pub rows_compacted: u64,
    /// Folders deleted by retention, and their objects.
    pub folders_expired: u64,
    pub objects_expired: u64,
    /// Folders deleted whole by a tenant delete.
    pub folders_deleted: u64,
    /// Folders whose objects were rewritten without the deleted rows.
    pub folders_rewritten: u64,
    pub rows_deleted: u64,
    /// Replaced objects deleted after the delay.
    pub objects_purged: u64,
    /// Leftovers of crashed or concurrent compactions deleted.
    pub orphans_deleted: u64,
    /// Older manifest generations deleted.
    pub manifests_deleted: u64,
    /// Compactions another compactor committed first (their output was dropped).
    pub lost_races: u64,
    /// Folders a periodic pass could not maintain (logged; tried again next pass).
    pub failures: u64,
}

impl Report {
    pub fn add(&mut self, o: &Report) {
        self.folders_compacted += o.folders_compacted;
        self.objects_merged += o.objects_merged;
        self.objects_written += o.objects_written;
        self.rows_compacted += o.rows_compacted;
        self.folders_expired += o.folders_expired;
        self.objects_expired += o.objects_expired;
        self.folders_deleted += o.folders_deleted;
        self.folders_rewritten += o.folders_rewritten;
        self.rows_deleted += o.rows_deleted;
        self.objects_purged += o.objects_purged;
        self.orphans_deleted += o.orphans_deleted;
        self.manifests_deleted += o.manifests_deleted;
        self.lost_races += o.lost_races;
        self.failures += o.failures;
    }

    pub fn is_empty(&self) -> bool {
        *self == Report::default()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.folders_compacted > 0 {
            parts.push(format!(
                "compacted {} folder(s): {} object(s) into {} ({} rows)",
                self.folders_compacted,
                self.objects_merged,
                self.objects_written,
                self.rows_compacted
            ));
        }
        if self.folders_expired > 0 {
            parts.push(format!(
                "expired {} folder(s) ({} objects)",
                self.folders_expired, self.objects_expired
            ));
        }
        if self.folders_deleted > 0 {
            parts.push(format!("deleted {} folder(s)", self.folders_deleted));
        }
        if self.folders_rewritten > 0 || self.rows_deleted > 0 {
            parts.push(format!(
                "rewrote {} folder(s) without {} row(s)",
                self.folders_rewritten, self.rows_deleted
            ));
        }
        if self.objects_purged > 0 {
            parts.push(format!(
                "deleted {} replaced object(s)",
                self.objects_purged
            ));
        }
        if self.orphans_deleted > 0 {
            parts.push(format!(
                "deleted {} leftover(s) of interrupted compactions",
                self.orphans_deleted
            ));
        }
        if self.manifests_deleted > 0 {
            parts.push(format!(
                "deleted {} old manifest(s)",
                self.manifests_deleted
            ));
        }
        if self.lost_races > 0 {
            parts.push(format!(
                "{} folder(s) left to a concurrent compactor",
                self.lost_races
            ));
        }
        if self.failures > 0 {
            parts.push(format!("{} folder(s) failed (see the log)", self.failures));
        }
        if parts.is_empty() {
            f.write_str("nothing to do")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// Runs maintenance operations on one archive.
#[derive(Clone)]
pub struct Maintenance {
    target: ArchiveTarget,
    archive: ArchiveConfig,
}

impl Maintenance {
    /// Maintenance of the archive at `target`, with the writer settings, maintenance
    /// settings and retention of `archive`.
    pub fn new(target: ArchiveTarget, archive: ArchiveConfig) -> Self {
        Self { target, archive }
    }

    pub fn config(&self) -> &MaintenanceConfig {
        &self.archive.maintenance
    }

    pub fn target(&self) -> &ArchiveTarget {
        &self.target
    }

    fn encoder(&self, table: Table) -> ParquetEncoder {
        ParquetEncoder::new(table, self.archive.clone())
    }

    /// Compacts the folders of `table` (only `tenant`'s when given): the days that ended
    /// at least `day_compact_after` before `now` into their day folders, the hours of the
    /// other days that ended at least `compact_after` before `now` one by one.
    pub async fn compact(
        &self,
        table: Table,
        tenant: Option<&str>,
        compact_after: Duration,
        day_compact_after: Duration,
        now: DateTime<Utc>,
    ) -> Result<Report, MaintenanceError> {
        let mut report = Report::default();
        for mut date in dates(list_folders(&self.target, table, tenant).await?) {
            if day_closed(&date, day_compact_after, now) {
                self.compact_day(&mut date, now, &mut report).await?;
                continue;
            }
            for folder in &mut date {
                if folder.hour_end() + delta(compact_after) > now {
                    continue;
                }
                self.compact_folder(folder, now, &mut report).await?;
            }
        }
        Ok(report)
    }

    /// Merges the small visible objects of one date's folders (`date`: its hour folders
    /// and day folder, as [`dates`] groups them) into objects of its day folder.
    pub async fn compact_day(
        &self,
        date: &mut [Folder],
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<(), MaintenanceError> {
        let Some(first) = date.first() else {
            return Ok(());
        };
        let mut day = match date.iter().find(|f| f.span == Span::Day) {
            Some(day) => day.clone(),
            None => Folder::empty_day(&self.target, first.table, &first.tenant, first.date()),
        };
        let config = self.config();
        let day_state = day.state(&self.target).await?;
        // Each input with the key the day manifest covers it under.
        let mut inputs: Vec<(String, Input)> = Vec::new();
        // Names the hour manifests hide (replays of them must stay hidden).
        let mut hidden: Vec<String> = Vec::new();
        for folder in date.iter_mut() {
            let state = folder.state(&self.target).await?;
            let hour = folder.hour_name();
            let key = |name: &str| match folder.span {
                Span::Day => name.to_string(),
                Span::Hour => folder_manifest::day_covered_key(&hour, name),
            };
            if let (Span::Hour, Some(m)) = (folder.span, &state.manifest) {
                hidden.extend(m.covered.keys().map(|n| key(n)));
            }
            for meta in &state.visible {
                let input = Input::open(&self.target, meta.clone()).await?;
                if input.rows().saturating_mul(2) < config.target_rows {
                    inputs.push((key(input.name()), input));
                }
            }
        }
        if inputs.len() < config.min_files {
            return Ok(());
        }
        let keys: std::collections::HashMap<String, String> = inputs
            .iter()
            .map(|(key, input)| (input.meta.location.to_string(), key.clone()))
            .collect();
        let groups: Vec<Vec<Input>> = merge::group(
            inputs.into_iter().map(|(_, input)| input).collect(),
            config.target_rows,
            config.max_merge_files,
        )
        .into_iter()
        .filter(|g| g.len() >= 2)
        .collect();
        if groups.is_empty() {
            return Ok(());
        }
        let generation = day_state.next_generation();
        let (live, mut covered, rows) = self
            .merge_groups(&day, &groups, generation, "day", |i| {
                keys[i.meta.location.as_ref()].clone()
            })
            .await?;
        crate::failpoint::hit("compact_day.after_output");
        let merged = covered.len();
        covered.extend(hidden);
        let manifest = next_manifest(&day_state, generation, now, &live, &covered);
        if !self.commit(&day, &manifest, &live).await? {
            report.lost_races += 1;
            return Ok(());
        }
        crate::failpoint::hit("compact_day.after_manifest");
        info!(folder = %day.describe(), merged, written = live.len(), rows, generation, "compacted the day");
        report.folders_compacted += 1;
        report.objects_merged += merged as u64;
        report.objects_written += live.len() as u64;
        report.rows_compacted += rows;
        for folder in date.iter_mut() {
            folder.relist(&self.target).await?;
        }
        Ok(())
    }

    /// Merges the small visible objects of one folder.
    pub async fn compact_folder(
        &self,
        folder: &mut Folder,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<(), MaintenanceError> {
        let config = self.config();
        let state = folder.state(&self.target).await?;
        if state.visible.len() < config.min_files {
            return Ok(());
        }
        let mut small = Vec::new();
        for meta in &state.visible {
            let input = Input::open(&self.target, meta.clone()).await?;
            if input.rows().saturating_mul(2) < config.target_rows {
                small.push(input);
            }
        }
        if small.len() < config.min_files {
            return Ok(());
        }
        let groups: Vec<Vec<Input>> =
            merge::group(small, config.target_rows, config.max_merge_files)
                .into_iter()
                .filter(|g| g.len() >= 2)
                .collect();
        if groups.is_empty() {
            return Ok(());
        }
        let generation = state.next_generation();
        let (live, covered, rows) = self
            .merge_groups(folder, &groups, generation, "compact", |i| {
                i.name().to_string()
            })
            .await?;
        crate::failpoint::hit("compact.after_output");
        let manifest = next_manifest(&state, generation, now, &live, &covered);
        if !self.commit(folder, &manifest, &live).await? {
            report.lost_races += 1;
            return Ok(());
        }
        crate::failpoint::hit("compact.after_manifest");
        info!(folder = %folder.describe(), merged = covered.len(), written = live.len(), rows, generation, "compacted");
        report.folders_compacted += 1;
        report.objects_merged += covered.len() as u64;
        report.objects_written += live.len() as u64;
        report.rows_compacted += rows;
        Ok(())
    }

    /// Merges each group into new objects of `out` (of `generation`): their names, the
    /// key (`key`) of every input merged, and the rows written.
    async fn merge_groups(
        &self,
        out: &Folder,
        groups: &[Vec<Input>],
        generation: u64,
        tag: &str,
        key: impl Fn(&Input) -> String,
    ) -> Result<(Vec<String>, Vec<String>, u64), MaintenanceError> {
        let encoder = self.encoder(out.table);
        let mut live = Vec::new();
        let mut covered = Vec::new();
        let mut rows = 0;
        for group in groups {
            let keys: Vec<String> = group.iter().map(&key).collect();
            let hash = merge::names_hash(tag, keys.iter().map(String::as_str));
            let written = merge::merge(
                &self.target,
                &encoder,
                out.table,
                &out.tenant,
                &out.path,
                group,
                None,
                self.config().target_rows,
                |k| compacted_name(generation, &hash, k),
            )
            .await?;
            rows += written.objects.iter().map(|(_, n)| n).sum::<u64>();
            live.extend(written.objects.into_iter().map(|(name, _)| name));
            covered.extend(keys);
        }
        Ok((live, covered, rows))
    }

    /// Creates `manifest` in `folder`; if another compactor created that generation
    /// first, deletes what this one wrote (unless the winner's manifest names it: same
    /// inputs, same names) and returns false.
    async fn commit(
        &self,
        folder: &Folder,
        manifest: &FolderManifest,
        written: &[String],
    ) -> Result<bool, MaintenanceError> {
        if folder::create_manifest(&self.target, &folder.path, manifest).await? {
            return Ok(true);
        }
        warn!(folder = %folder.describe(), generation = manifest.generation, "another compactor committed this generation first; dropping this one's output");
        let winner = folder::read_manifest(&self.target, &folder.path, manifest.generation)
            .await?
            .unwrap_or_default();
        for name in written {
            if !winner.live.contains(name) {
                folder::delete(&self.target, &folder.object(name)).await?;
            }
        }
        Ok(false)
    }

    /// Deletes what manifests replaced more than `delay` ago in the folders of `table`:
    /// covered objects, compaction leftovers, older manifests.
    pub async fn purge(
        &self,
        table: Table,
        tenant: Option<&str>,
        delay: Duration,
        now: DateTime<Utc>,
    ) -> Result<Report, MaintenanceError> {
        let mut report = Report::default();
        for folder in list_folders(&self.target, table, tenant).await? {
            self.purge_folder(&folder, delay, now, &mut report).await?;
        }
        Ok(report)
    }

    /// [`Maintenance::purge`] of one folder, from its listing.
    pub async fn purge_folder(
        &self,
        folder: &Folder,
        delay: Duration,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<(), MaintenanceError> {
        let manifest = match folder.generation() {
            None => None,
            Some(generation) => {
                match folder::read_manifest(&self.target, &folder.path, generation).await? {
                    Some(m) => Some(m),
                    // Replaced since the listing: the next pass sees the new one.
                    None => return Ok(()),
                }
            }
        };
        let day = folder.clone().day_manifest(&self.target).await?;
        let hour = folder.hour_name();
        // When the day folder replaced an object of this hour folder (`None`: it did not).
        let day_covered = |name: &str| {
            day.as_ref()
                .and_then(|d| {
                    d.covered
                        .get(&folder_manifest::day_covered_key(&hour, name))
                })
                .copied()
        };
        // An hour manifest whose every name the day manifest covers is no longer needed.
        let manifest_replaced_at = manifest.as_ref().and_then(|m| {
            m.live
                .iter()
                .chain(m.covered.keys())
                .map(|n| day_covered(n))
                .collect::<Option<Vec<_>>>()
                .map(|ats| ats.into_iter().max().unwrap_or(m.written_at))
        });
        let orphan_age = delta(delay.max(ORPHAN_AGE));
        let mut deleted = 0;
        for meta in &folder.objects {
            let name = folder_manifest::file_name(meta.location.as_ref());
            let compacted = folder_manifest::is_compacted(name);
            if let Some(at) = day_covered(name) {
                if at + delta(delay) <= now && folder::delete(&self.target, &meta.location).await? {
                    debug!(object = %meta.location, "purged (replaced by its day)");
                    report.objects_purged += 1;
                    deleted += 1;
                }
                continue;
            }
            if let (Some(m), Some(at)) = (&manifest, manifest_replaced_at)
                && folder_manifest::manifest_generation(name) == Some(m.generation)
                && at + delta(delay) <= now
                && folder::delete(&self.target, &meta.location).await?
            {
                debug!(object = %meta.location, "purged (its day manifest covers it all)");
                report.manifests_deleted += 1;
                deleted += 1;
                continue;
            }
            let purge = match &manifest {
                Some(m) => {
                    if let Some(at) = m.covered.get(name) {
                        (*at + delta(delay) <= now).then_some(Purged::Replaced)
                    } else if compacted && !m.live.contains(name) {
                        (meta.last_modified + orphan_age <= now).then_some(Purged::Orphan)
                    } else if folder_manifest::manifest_generation(name)
                        .is_some_and(|g| g < m.generation)
                    {
                        (m.written_at + delta(delay) <= now).then_some(Purged::Manifest)
                    } else {
                        None
                    }
                }
                None => {
                    (compacted && meta.last_modified + orphan_age <= now).then_some(Purged::Orphan)
                }
            };
            let Some(kind) = purge else { continue };
            if folder::delete(&self.target, &meta.location).await? {
                deleted += 1;
                debug!(object = %meta.location, ?kind, "purged");
                match kind {
                    Purged::Replaced => report.objects_purged += 1,
                    Purged::Orphan => report.orphans_deleted += 1,
                    Purged::Manifest => report.manifests_deleted += 1,
                }
            }
        }
        if deleted > 0 && deleted == folder.objects.len() {
            // An hour folder its day replaced: its directory would still be listed.
            folder::remove_empty_dirs(&self.target, &folder.path).await;
        }
        Ok(())
    }

    /// Deletes the folders of `table` older than their retention (`dry_run`: only counts
    /// them).
    pub async fn apply_retention(
        &self,
        table: Table,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Report, MaintenanceError> {
        let mut report = Report::default();
        let retention = &self.archive.retention;
        if !retention.is_active() {
            return Ok(report);
        }
        for folder in list_folders(&self.target, table, None).await? {
            if !self.expired(&folder, now) {
                continue;
            }
            report.folders_expired += 1;
            report.objects_expired += folder.objects.len() as u64;
            if !dry_run {
                info!(folder = %folder.describe(), "expired");
                self.delete_folder(&folder).await?;
            }
        }
        Ok(report)
    }

    /// Deletes every object of a folder: Parquet first, manifests last (a reader that
    /// sees a manifest without the objects it names sees no row of the folder, never a
    /// row twice).
    async fn delete_folder(&self, folder: &Folder) -> Result<(), MaintenanceError> {
        let (manifests, objects): (Vec<_>, Vec<_>) = folder.objects.iter().partition(|m| {
            folder_manifest::manifest_generation(folder_manifest::file_name(m.location.as_ref()))
                .is_some()
        });
        for meta in objects.into_iter().chain(manifests) {
            folder::delete(&self.target, &meta.location).await?;
        }
        folder::remove_empty_dirs(&self.target, &folder.path).await;
        Ok(())
    }

    /// Removes the rows of `tenant`'s folders of `table` that `removal` matches: whole
    /// folders when the whole tenant goes (and, with `until`, the folder's hour ended by
    /// then), otherwise by rewriting the objects that may hold such rows. Replaced objects
    /// are deleted once `delay` has passed (at once with a zero delay).
    pub async fn delete_rows(
        &self,
        table: Table,
        tenant: &str,
        removal: &Removal,
        delay: Duration,
        now: DateTime<Utc>,
    ) -> Result<Report, MaintenanceError> {
        let mut report = Report::default();
        for mut folder in list_folders(&self.target, table, Some(tenant)).await? {
            self.delete_in_folder(&mut folder, removal, delay, now, &mut report)
                .await?;
        }
        if removal.server.is_none() {
            // Directories a concurrent writer left empty would still name the tenant.
            let dir =
                folder::table_path(&self.target, table).join(format!("tenant={tenant}").as_str());
            folder::remove_empty_tree(&self.target, &dir).await;
        }
        Ok(report)
    }

    async fn delete_in_folder(
        &self,
        folder: &mut Folder,
        removal: &Removal,
        delay: Duration,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<(), MaintenanceError> {
        if removal.server.is_none() && removal.until.is_none_or(|u| folder.hour_end() <= u) {
            self.delete_folder(folder).await?;
            report.folders_deleted += 1;
            return Ok(());
        }
        if removal.until.is_some_and(|u| folder.hour > u) {
            return Ok(());
        }
        // A concurrent compaction may win the generation: try again on the new state.
        for _ in 0..5 {
            let state = folder.state(&self.target).await?;
            if self.rewrite(folder, &state, removal, now, report).await? {
                break;
            }
            folder.relist(&self.target).await?;
        }
        folder.relist(&self.target).await?;
        self.purge_folder(folder, delay, now, report).await
    }

    /// One attempt at rewriting a folder without the rows `removal` matches; false when
    /// another compactor committed the generation first.
    async fn rewrite(
        &self,
        folder: &Folder,
        state: &FolderState,
        removal: &Removal,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<bool, MaintenanceError> {
        let config = self.config();
        let mut candidates = Vec::new();
        for meta in &state.visible {
            let input = Input::open(&self.target, meta.clone()).await?;
            let server_ok = removal
                .server
                .as_deref()
                .is_none_or(|s| input.may_hold_server(folder.table, s));
            let time_ok = removal
                .until
                .is_none_or(|u| input.min_time().is_none_or(|t| t <= u));
            if server_ok && time_ok {
                candidates.push(input);
            }
        }
        if candidates.is_empty() {
            return Ok(true);
        }
        let generation = state.next_generation();
        let encoder = self.encoder(folder.table);
        let mut live = Vec::new();
        let mut covered = Vec::new();
        let mut removed = 0;
        for group in merge::group(candidates, config.target_rows, config.max_merge_files) {
            let hash = merge::names_hash("delete", group.iter().map(Input::name));
            let written = merge::merge(
                &self.target,
                &encoder,
                folder.table,
                &folder.tenant,
                &folder.path,
                &group,
                Some(removal),
                config.target_rows,
                |k| compacted_name(generation, &hash, k),
            )
            .await?;
            removed += written.removed;
            live.extend(written.objects.into_iter().map(|(name, _)| name));
            covered.extend(group.iter().map(|i| i.name().to_string()));
        }
        if removed == 0 {
            // The statistics allowed it, but no row matched: keep the objects as they are.
            for name in &live {
                folder::delete(&self.target, &folder.object(name)).await?;
            }
            return Ok(true);
        }
        let manifest = next_manifest(state, generation, now, &live, &covered);
        if !self.commit(folder, &manifest, &live).await? {
            return Ok(false);
        }
        info!(folder = %folder.describe(), rows = removed, "rows deleted");
        report.folders_rewritten += 1;
        report.rows_deleted += removed;
        Ok(true)
    }

    /// One periodic pass: the sweeps of recent deletion requests, retention, compaction
    /// of closed hours, deletion of what was replaced long enough ago.
    pub async fn pass(&self, now: DateTime<Utc>) -> Result<Report, MaintenanceError> {
        let config = self.config().clone();
        let mut report = Report::default();
        for request in ledger::requests(&self.target).await? {
            if !request.active(now, config.deletion_sweep) {
                continue;
            }
            let removal = Removal {
                server: request.server.clone(),
                until: Some(request.requested_at),
            };
            for table in Table::ALL {
                match self
                    .delete_rows(table, &request.tenant, &removal, config.delete_delay, now)
                    .await
                {
                    Ok(r) => report.add(&r),
                    Err(e) => {
                        warn!(request = %request.id, table = table.name(), error = %e, "sweep after a delete failed; trying again next pass");
                        report.failures += 1;
                    }
                }
            }
        }
        ledger::prune(&self.target, now, config.deletion_sweep).await?;
        // One listing per table serves retention, compaction and purge.
        for table in Table::ALL {
            for mut date in dates(list_folders(&self.target, table, None).await?) {
                let closed = day_closed(&date, config.day_compact_after, now);
                let expired = date.iter().all(|f| self.expired(f, now));
                if closed
                    && !expired
                    && let Err(e) = self.compact_day(&mut date, now, &mut report).await
                {
                    warn!(folder = %date[0].describe(), error = %e, "compacting a day failed");
                    report.failures += 1;
                }
                for folder in &mut date {
                    if let Err(e) = self
                        .maintain_folder(folder, !closed, now, &mut report)
                        .await
                    {
                        // One bad folder must not stop the others; the next pass tries again.
                        warn!(folder = %folder.describe(), error = %e, "archive maintenance of a folder failed");
                        report.failures += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Retention, compaction (of an hour folder, when `compact_hour`) and purge of one
    /// folder (a periodic pass).
    async fn maintain_folder(
        &self,
        folder: &mut Folder,
        compact_hour: bool,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<(), MaintenanceError> {
        let config = self.config();
        if self.expired(folder, now) {
            report.folders_expired += 1;
            report.objects_expired += folder.objects.len() as u64;
            info!(folder = %folder.describe(), "expired");
            return self.delete_folder(folder).await;
        }
        if compact_hour
            && folder.span == Span::Hour
            && folder.hour_end() + delta(config.compact_after) <= now
        {
            let before = (report.folders_compacted, report.lost_races);
            self.compact_folder(folder, now, report).await?;
            if (report.folders_compacted, report.lost_races) != before {
                folder.relist(&self.target).await?;
            }
        }
        self.purge_folder(folder, config.delete_delay, now, report)
            .await
    }

    /// Whether a folder is past the retention of its table and tenant.
    fn expired(&self, folder: &Folder, now: DateTime<Utc>) -> bool {
        match self.archive.retention.keep(folder.table, &folder.tenant) {
            Keep::For(keep) => folder.hour_end() + delta(keep) <= now,
            Keep::Forever => false,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Purged {
    Replaced,
    Orphan,
    Manifest,
}

/// Splits folders (as [`list_folders`] orders them) into the folders of each tenant's
/// date.
pub fn dates(folders: Vec<Folder>) -> Vec<Vec<Folder>> {
    let mut out: Vec<Vec<Folder>> = Vec::new();
    for folder in folders {
        match out.last_mut() {
            Some(last) if last[0].tenant == folder.tenant && last[0].date() == folder.date() => {
                last.push(folder)
            }
            _ => out.push(vec![folder]),
        }
    }
    out
}

/// Whether a date's day ended at least `after` before `now`.
fn day_closed(date: &[Folder], after: Duration, now: DateTime<Utc>) -> bool {
    date.first().is_some_and(|f| {
        (f.date() + TimeDelta::days(1))
            .checked_add_signed(delta(after))
            .is_some_and(|closed| closed <= now)
    })
}

/// `compacted-{generation}-{hash}-{k}.parquet`.
fn compacted_name(generation: u64, hash: &str, k: usize) -> String {
    format!("{COMPACTED_PREFIX}{generation:010}-{hash}-{k:03}.parquet")
}

/// The manifest after `state`'s: `live` added, `covered` (replaced now) hidden.
fn next_manifest(
    state: &FolderState,
    generation: u64,
    now: DateTime<Utc>,
    live: &[String],
    covered: &[String],
) -> FolderManifest {
    let mut manifest = state.manifest.clone().unwrap_or_default();
    manifest.generation = generation;
    manifest.written_at = now;
    for name in covered {
        manifest.live.remove(name);
        manifest.covered.entry(name.clone()).or_insert(now);
    }
    manifest.live.extend(live.iter().cloned());
    manifest
}

/// Runs [`Maintenance::pass`] every `archive.maintenance.interval` until dropped (a role's
/// background task). Failures are logged and retried at the next pass.
pub async fn run_periodically(maintenance: Maintenance) {
    let interval = maintenance.config().interval;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let started = std::time::Instant::now();
        match maintenance.pass(Utc::now()).await {
            Ok(report) if report.is_empty() => {
                debug!(took = ?started.elapsed(), "archive maintenance: nothing to do")
            }
            Ok(report) => info!(took = ?started.elapsed(), "archive maintenance: {report}"),
            Err(e) => warn!(error = %e, "archive maintenance failed; retrying at the next pass"),
        }
    }
}

#[cfg(test)]
mod tests;
