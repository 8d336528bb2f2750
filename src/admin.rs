//! `mcpulse admin`: operations on the archive — compaction, retention, deleting a
//! tenant's or a server's rows and derived state — and the periodic maintenance that
//! `mcpulse run` and `mcpulse process` run in the background.

use std::path::Path as FsPath;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Subcommand;
use futures::TryStreamExt;
use mcpulse_processors::archive::ArchiveTarget;
use mcpulse_processors::archive::maintenance::{
    self, DeletionRequest, Maintenance, Removal, Report, ledger,
};
use mcpulse_processors::forget::Forget;
use mcpulse_processors::stateful::forget_in_checkpoint;
use mcpulse_schemas::Table;
use mcpulse_schemas::topics::{TENANT_ID_RULE, valid_tenant_id};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use serde_json::Value;

use crate::Config;
use crate::archive_store::ArchiveLocation;
use crate::roles::Supervisor;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Merge the small Parquet objects of closed hours into large ones now (what `run`
    /// and `process` do every archive.maintenance.interval), then delete the objects
    /// compaction replaced more than --delay ago. Queries running meanwhile see every
    /// row once.
    Compact {
        /// Only this table (repeatable; default: every table).
        #[arg(long = "table", value_name = "TABLE")]
        tables: Vec<String>,
        /// Only this tenant's folders.
        #[arg(long)]
        tenant: Option<String>,
        /// Compact hours that ended at least this long ago (default:
        /// archive.maintenance.compact_after). `0s` includes the current hour: only when
        /// nothing writes to it any more.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        after: Option<Duration>,
        /// Compact whole days (into their `hour=day` folders) that ended at least this
        /// long ago (default: archive.maintenance.day_compact_after).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        day_after: Option<Duration>,
        /// Delete replaced objects once they were replaced this long ago (default:
        /// archive.maintenance.delete_delay; queries that listed them may need them until
        /// then).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        delay: Option<Duration>,
    },
    /// Delete the hour folders older than their table's (and tenant's) retention in
    /// archive.retention.
    Retention {
        /// Only report what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a tenant's rows from every table and its derived state (operator
    /// checkpoints, notification log, silences), or only one server's.
    Delete {
        /// The tenant whose rows and state go.
        #[arg(long, value_name = "TENANT")]
        tenant: String,
        /// Only this server's rows and state (rewrites the objects that hold them).
        #[arg(long, value_name = "SERVER")]
        server: Option<String>,
        /// Keep the objects the rewrite replaced this long, for queries already reading
        /// them (default 0s: gone when the command returns; such a query then fails and
        /// can be retried).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "0s")]
        delay: Duration,
    },
}

/// Runs an admin command.
pub fn run(command: AdminCommand, config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let archive = ArchiveLocation::connect(&config).await?;
        let maintenance = Maintenance::new(archive.target.clone(), config.archive.clone());
        match command {
            AdminCommand::Compact {
                tables,
                tenant,
                after,
                day_after,
                delay,
            } => {
                compact(
                    &maintenance,
                    &config,
                    &tables,
                    tenant,
                    after,
                    day_after,
                    delay,
                )
                .await
            }
            AdminCommand::Retention { dry_run } => retention(&maintenance, &config, dry_run).await,
            AdminCommand::Delete {
                tenant,
                server,
                delay,
            } => delete(&maintenance, &config, &tenant, server.as_deref(), delay).await,
        }
    })
}

fn parse_tables(names: &[String]) -> anyhow::Result<Vec<Table>> {
    if names.is_empty() {
        return Ok(Table::ALL.to_vec());
    }
    names
        .iter()
        .map(|name| {
            Table::ALL
                .into_iter()
                .find(|t| t.name() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
                    anyhow::anyhow!(
                        "--table: unknown table {name:?} (one of {})",
                        known.join(", ")
                    )
                })
        })
        .collect()
}

fn check_tenant(tenant: &str) -> anyhow::Result<()> {
    if !valid_tenant_id(tenant) {
        bail!("--tenant: {tenant:?} {TENANT_ID_RULE}");
    }
    Ok(())
}

async fn compact(
    maintenance: &Maintenance,
    config: &Config,
    tables: &[String],
    tenant: Option<String>,
    after: Option<Duration>,
    day_after: Option<Duration>,
    delay: Option<Duration>,
) -> anyhow::Result<()> {
    let tables = parse_tables(tables)?;
    if let Some(tenant) = &tenant {
        check_tenant(tenant)?;
    }
    let settings = &config.archive.maintenance;
    let after = after.unwrap_or(settings.compact_after);
    let day_after = day_after.unwrap_or(settings.day_compact_after);
    let delay = delay.unwrap_or(settings.delete_delay);
    let now = Utc::now();
    let mut total = Report::default();
    for table in tables {
        eprintln!("{}: compacting…", table.name());
        let mut report = maintenance
            .compact(table, tenant.as_deref(), after, day_after, now)
            .await
            .with_context(|| format!("compacting {}", table.name()))?;
        report.add(
            &maintenance
                .purge(table, tenant.as_deref(), delay, now)
                .await
                .with_context(|| format!("deleting replaced objects of {}", table.name()))?,
        );
        eprintln!("{}: {report}", table.name());
        total.add(&report);
    }
    println!("{total}");
    Ok(())
}

async fn retention(
    maintenance: &Maintenance,
    config: &Config,
    dry_run: bool,
) -> anyhow::Result<()> {
    if !config.archive.retention.is_active() {
        println!("archive.retention keeps every table forever: nothing to do");
        return Ok(());
    }
    let now = Utc::now();
    let mut total = Report::default();
    for table in Table::ALL {
        let report = maintenance
            .apply_retention(table, now, dry_run)
            .await
            .with_context(|| format!("retention of {}", table.name()))?;
        if report.folders_expired > 0 {
            let verb = if dry_run { "would delete" } else { "deleted" };
            eprintln!(
                "{}: {verb} {} folder(s) ({} objects)",
                table.name(),
                report.folders_expired,
                report.objects_expired
            );
        }
        total.add(&report);
    }
    if dry_run {
        println!(
            "dry run: {} folder(s) ({} objects) are past their retention",
            total.folders_expired, total.objects_expired
        );
    } else {
        println!("{total}");
    }
    Ok(())
}

async fn delete(
    maintenance: &Maintenance,
    config: &Config,
    tenant: &str,
    server: Option<&str>,
    delay: Duration,
) -> anyhow::Result<()> {
    check_tenant(tenant)?;
    if let Some(server) = server
        && (server.trim().is_empty() || server.chars().any(char::is_control))
    {
        bail!("--server: {server:?} must be a non-empty server name");
    }
    let target = maintenance.target();
    let now = Utc::now();
    let request = DeletionRequest::new(tenant, server, now);
    // First, so running operators start dropping the state they hold, and maintenance
    // sweeps rows still in flight.
    ledger::record(target, &request)
        .await
        .context("recording the deletion request")?;
    let what = match server {
        Some(s) => format!("server {s:?} of tenant {tenant:?}"),
        None => format!("tenant {tenant:?}"),
    };
    let removal = Removal {
        server: server.map(str::to_string),
        until: None,
    };
    let mut total = Report::default();
    for table in Table::ALL {
        let report = maintenance
            .delete_rows(table, tenant, &removal, delay, now)
            .await
            .with_context(|| format!("deleting rows of {}", table.name()))?;
        if !report.is_empty() {
            eprintln!("{}: {report}", table.name());
        }
        total.add(&report);
    }
    let state = forget_state(target, &request)
        .await
        .context("deleting derived state")?;
    let silences = if server.is_none() {
        forget_silences(&config.data_dir, tenant)?
    } else {
        0
    };
    println!("deleted {what}: {total}");
    println!(
        "state: {} object(s) rewritten, {} deleted (of {} under _state/){}",
        state.changed,
        state.deleted,
        state.scanned,
        if silences > 0 {
            format!("; {silences} silence(s) removed")
        } else {
            String::new()
        }
    );
    for leftover in &state.leftovers {
        eprintln!("warning: still names {tenant:?}: {leftover}");
    }
    let settings = &config.archive.maintenance;
    println!(
        "running analytic operators drop what they hold in memory within {}; rows stages had in flight are swept for {} (deletion request {})",
        humantime::format_duration(settings.deletion_poll),
        humantime::format_duration(settings.deletion_sweep),
        request.id
    );
    Ok(())
}

/// What [`forget_state`] did.
#[derive(Debug, Default)]
pub struct StateReport {
    pub scanned: u64,
    pub changed: u64,
    pub deleted: u64,
    /// Objects (and JSON pointers) that still name the tenant after the scrub.
    pub leftovers: Vec<String>,
}

enum Change {
    Keep,
    Rewrite(Vec<u8>),
    Delete,
}

/// Removes the tenant (or server) of `request` from every state object under
/// `{archive}/_state/`: the analytic operators' checkpoints (checked to load as their
/// state type afterwards), the notification stage's checkpoints, notification-log
/// segments, journal and spooled rows.
pub async fn forget_state(
    target: &ArchiveTarget,
    request: &DeletionRequest,
) -> anyhow::Result<StateReport> {
    let root = target.root.clone().join("_state");
    let depth = target.root.parts().count();
    let listed: Vec<ObjectMeta> = match target.store.list(Some(&root)).try_collect().await {
        Ok(listed) => listed,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(e).context("listing _state/"),
    };
    let forget = request.forget();
    let mut report = StateReport::default();
    for meta in listed {
        let parts: Vec<String> = meta
            .location
            .parts()
            .skip(depth)
            .map(|p| p.as_ref().to_string())
            .collect();
        let name = parts.last().cloned().unwrap_or_default();
        let operator = parts.get(1).cloned().unwrap_or_default();
        let folder = if parts.len() >= 2 {
            parts[parts.len() - 2].as_str()
        } else {
            ""
        };
        if !(name.ends_with(".json") || name.ends_with(".ndjson"))
            || name.ends_with(".pending.json")
        {
            continue;
        }
        report.scanned += 1;
        let bytes = match target.store.get(&meta.location).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", meta.location)),
        };
        let change = if folder.ends_with(".journal") {
            lines::<mcpulse_sinks::notify::store::JournalEntry>(&bytes, &forget)
        } else if folder.ends_with(".spool") {
            lines::<mcpulse_sinks::notify::rows::NotificationRow>(&bytes, &forget)
        } else if folder.ends_with(".nflog") {
            document(&bytes, &forget, |v| {
                serde_json::from_value::<mcpulse_sinks::notify::nflog::Segment>(v.clone())
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        } else if name.ends_with(".checkpoint.json") {
            checkpoint(&operator, &bytes, &forget, &request.id)
        } else {
            document(&bytes, &forget, |_| Ok(()))
        }
        .map_err(|e| anyhow::anyhow!("{}: {e}", meta.location))?;
        let kept = match change {
            Change::Keep => Some(bytes.to_vec()),
            Change::Rewrite(new) => {
                target
                    .put_durable(&meta.location, new.clone().into())
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {e}", meta.location))?;
                report.changed += 1;
                Some(new)
            }
            Change::Delete => {
                delete_object(target, &meta.location).await?;
                report.deleted += 1;
                None
            }
        };
        if forget.server.is_none()
            && let Some(kept) = kept
        {
            for line in kept.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                if let Ok(value) = serde_json::from_slice::<Value>(line) {
                    for pointer in forget.mentions(&value) {
                        report
                            .leftovers
                            .push(format!("{}#{pointer}", meta.location));
                    }
                }
            }
        }
    }
    Ok(report)
}

async fn delete_object(target: &ArchiveTarget, path: &Path) -> anyhow::Result<()> {
    match target.store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {path}")),
    }
}

/// A checkpoint of one of the analytic operators (by its folder under `_state/`), or of
/// the notification stage.
fn checkpoint(operator: &str, bytes: &[u8], forget: &Forget, id: &str) -> Result<Change, String> {
    use mcpulse_processors::drift::DriftState;
    use mcpulse_processors::incidents::stage::IncidentStageState;
    use mcpulse_processors::incidents::verdict_stage::VerdictStageState;
    use mcpulse_processors::signals::SignalsState;
    let changed = match operator {
        "signals" => forget_in_checkpoint::<SignalsState>(bytes, forget, id)?,
        "drift" => forget_in_checkpoint::<DriftState>(bytes, forget, id)?,
        "verdict" => forget_in_checkpoint::<VerdictStageState>(bytes, forget, id)?,
        "incidents" => forget_in_checkpoint::<IncidentStageState>(bytes, forget, id)?,
        "notify" => {
            return document(bytes, forget, |v| {
                serde_json::from_value::<mcpulse_sinks::notify::store::Checkpoint>(v.clone())
                    .map(drop)
                    .map_err(|e| e.to_string())
            });
        }
        _ => return document(bytes, forget, |_| Ok(())),
    };
    Ok(changed.map_or(Change::Keep, Change::Rewrite))
}

/// A JSON document scrubbed whole (deleted if it belongs to the target as a whole),
/// `check`ed before it is written back.
fn document(
    bytes: &[u8],
    forget: &Forget,
    check: impl Fn(&Value) -> Result<(), String>,
) -> Result<Change, String> {
    let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
        return Ok(Change::Keep);
    };
    if forget.owns(&value) {
        return Ok(Change::Delete);
    }
    if !forget.scrub(&mut value) {
        return Ok(Change::Keep);
    }
    check(&value).map_err(|e| format!("the state without {forget:?} does not load: {e}"))?;
    serde_json::to_vec(&value)
        .map(Change::Rewrite)
        .map_err(|e| e.to_string())
}

/// An object of the notification stage with one `T` per line (journal entries, spooled
/// rows); lines of the target go, the object too when none is left.
fn lines<T: serde::de::DeserializeOwned>(bytes: &[u8], forget: &Forget) -> Result<Change, String> {
    let mut kept = Vec::new();
    let mut changed = false;
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let mut entry: Value =
            serde_json::from_slice(line).map_err(|e| format!("not a JSON line: {e}"))?;
        if forget.owns(&entry) {
            changed = true;
            continue;
        }
        if forget.scrub(&mut entry) {
            changed = true;
            serde_json::from_value::<T>(entry.clone())
                .map_err(|e| format!("a line without {forget:?} does not load: {e}"))?;
        }
        kept.push(entry);
    }
    if !changed {
        return Ok(Change::Keep);
    }
    if kept.is_empty() {
        return Ok(Change::Delete);
    }
    let mut out = Vec::new();
    for entry in kept {
        serde_json::to_writer(&mut out, &entry).map_err(|e| e.to_string())?;
        out.push(b'\n');
    }
    Ok(Change::Rewrite(out))
}

/// Removes the tenant's silences from `{data_dir}/silences.json`.
fn forget_silences(data_dir: &FsPath, tenant: &str) -> anyhow::Result<usize> {
    let store = crate::routes_cli::silences::SilenceStore::in_data_dir(data_dir);
    if !store.path().exists() {
        return Ok(0);
    }
    store
        .update(Utc::now(), |set| Ok(set.forget_tenant(tenant)))
        .map_err(|e| anyhow::anyhow!("{}: {e}", store.path().display()))
}

/// Starts the periodic archive maintenance of `run` and `process` (unless
/// archive.maintenance.enabled is off). It is aborted on shutdown, which it is built to
/// survive (every step is crash-safe).
pub fn spawn_maintenance(config: &Config, archive: &ArchiveLocation, roles: &mut Supervisor) {
    if !config.archive.maintenance.enabled {
        return;
    }
    let maintenance = Maintenance::new(archive.target.clone(), config.archive.clone());
    roles.spawn_background(maintenance::run_periodically(maintenance));
}
