//! Deletion requests: what `mcpulse admin delete` asked for, one object each under
//! `{root}/_admin/deletions/{id}.json` (created once, deleted once the request is older
//! than `archive.maintenance.deletion_sweep`; never rewritten, so concurrent writers
//! cannot lose one).
//!
//! They tell the running parts what the command alone cannot reach: the analytic
//! operators drop the tenant's (or server's) state they hold in memory (they look every
//! `deletion_poll`), and each maintenance pass deletes again the rows with event time
//! before the request that stages still had in flight when it was made.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::MaintenanceError;
use super::merge::names_hash;
use crate::archive::ArchiveTarget;
use crate::forget::Forget;

/// One `mcpulse admin delete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletionRequest {
    pub id: String,
    pub tenant: String,
    /// Only this server's rows and state (`None`: the whole tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    pub requested_at: DateTime<Utc>,
}

impl DeletionRequest {
    pub fn new(tenant: &str, server: Option<&str>, now: DateTime<Utc>) -> Self {
        let what = match server {
            Some(s) => format!("{tenant}/{s}"),
            None => tenant.to_string(),
        };
        Self {
            id: format!(
                "{}-{}",
                now.format("%Y%m%dT%H%M%S%9fZ"),
                &names_hash("deletion", [what.as_str()])[..8]
            ),
            tenant: tenant.to_string(),
            server: server.map(str::to_string),
            requested_at: now,
        }
    }

    /// What to remove from state.
    pub fn forget(&self) -> Forget {
        Forget {
            tenant: self.tenant.clone(),
            server: self.server.clone(),
        }
    }

    /// Whether maintenance still sweeps for it.
    pub fn active(&self, now: DateTime<Utc>, sweep: Duration) -> bool {
        self.requested_at + TimeDelta::from_std(sweep).unwrap_or(TimeDelta::MAX) > now
    }
}

fn folder(target: &ArchiveTarget) -> Path {
    target.root.clone().join("_admin").join("deletions")
}

fn object(target: &ArchiveTarget, id: &str) -> Path {
    folder(target).join(format!("{id}.json").as_str())
}

fn id_of(meta: &ObjectMeta) -> Option<String> {
    mcpulse_schemas::folder_manifest::file_name(meta.location.as_ref())
        .strip_suffix(".json")
        .map(str::to_string)
}

/// The ids of the stored requests.
async fn list_ids(target: &ArchiveTarget) -> Result<Vec<String>, MaintenanceError> {
    let path = folder(target);
    let listed: Vec<ObjectMeta> = match target.store.list(Some(&path)).try_collect().await {
        Ok(listed) => listed,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(MaintenanceError::store(&path, e)),
    };
    Ok(listed.iter().filter_map(id_of).collect())
}

async fn read(
    target: &ArchiveTarget,
    id: &str,
) -> Result<Option<DeletionRequest>, MaintenanceError> {
    let path = object(target, id);
    match target.store.get(&path).await {
        Ok(got) => {
            let bytes = got
                .bytes()
                .await
                .map_err(|e| MaintenanceError::store(&path, e))?;
            serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                MaintenanceError::Other(format!("corrupt deletion request {path}: {e}"))
            })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(MaintenanceError::store(&path, e)),
    }
}

/// Every stored request, oldest first.
pub async fn requests(target: &ArchiveTarget) -> Result<Vec<DeletionRequest>, MaintenanceError> {
    let mut out = Vec::new();
    for id in list_ids(target).await? {
        if let Some(request) = read(target, &id).await? {
            out.push(request);
        }
    }
    out.sort_by(|a, b| a.requested_at.cmp(&b.requested_at).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Stores `request` durably.
pub async fn record(
    target: &ArchiveTarget,
    request: &DeletionRequest,
) -> Result<(), MaintenanceError> {
    let path = object(target, &request.id);
    let body = Bytes::from(serde_json::to_vec_pretty(request).expect("requests serialize"));
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match target
        .store
        .put_opts(&path, PutPayload::from(body.clone()), create)
        .await
    {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
        Err(object_store::Error::NotImplemented { .. }) => {
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
        .map_err(|e| MaintenanceError::Other(format!("{path}: {e}")))
}

/// Deletes the requests no longer swept for; returns how many.
pub async fn prune(
    target: &ArchiveTarget,
    now: DateTime<Utc>,
    sweep: Duration,
) -> Result<usize, MaintenanceError> {
    let mut pruned = 0;
    for request in requests(target).await? {
        if !request.active(now, sweep) {
            super::folder::delete(target, &object(target, &request.id)).await?;
            pruned += 1;
        }
    }
    Ok(pruned)
}

/// What a running operator knows of the stored requests, refreshed at most every `poll`.
pub struct DeletionWatch {
    target: ArchiveTarget,
    poll: Duration,
    next_check: Option<Instant>,
    known: BTreeMap<String, DeletionRequest>,
}

impl DeletionWatch {
    pub fn new(target: ArchiveTarget, poll: Duration) -> Self {
        Self {
            target,
            poll,
            next_check: None,
            known: BTreeMap::new(),
        }
    }

    /// Whether the next [`DeletionWatch::refresh`] would look at the store.
    pub fn due(&self) -> bool {
        self.next_check.is_none_or(|t| Instant::now() >= t)
    }

    /// Looks at the store if due; returns the requests not seen before.
    pub async fn refresh(&mut self) -> Result<Vec<DeletionRequest>, MaintenanceError> {
        if !self.due() {
            return Ok(Vec::new());
        }
        self.next_check = Some(Instant::now() + self.poll);
        let ids = list_ids(&self.target).await?;
        self.known.retain(|id, _| ids.contains(id));
        let mut new = Vec::new();
        for id in ids {
            if self.known.contains_key(&id) {
                continue;
            }
            if let Some(request) = read(&self.target, &id).await? {
                self.known.insert(id, request.clone());
                new.push(request);
            }
        }
        new.sort_by_key(|r| r.requested_at);
        Ok(new)
    }

    /// Every known request.
    pub fn known(&self) -> impl Iterator<Item = &DeletionRequest> {
        self.known.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use std::sync::Arc;

    #[tokio::test]
    async fn requests_are_recorded_watched_and_pruned() {
        let target = ArchiveTarget {
            store: Arc::new(InMemory::new()),
            root: Path::from("archive"),
            local_root: None,
        };
        let mut watch = DeletionWatch::new(target.clone(), Duration::ZERO);
        assert!(watch.refresh().await.unwrap().is_empty());
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let a = DeletionRequest::new("acme", None, t0);
        let b = DeletionRequest::new("acme", Some("weather"), t0 + TimeDelta::hours(2));
        assert_ne!(a.id, b.id);
        record(&target, &a).await.unwrap();
        record(&target, &a).await.unwrap();
        assert_eq!(watch.refresh().await.unwrap(), vec![a.clone()]);
        record(&target, &b).await.unwrap();
        assert_eq!(watch.refresh().await.unwrap(), vec![b.clone()]);
        assert!(watch.refresh().await.unwrap().is_empty());
        assert_eq!(requests(&target).await.unwrap(), vec![a.clone(), b.clone()]);
        let now = t0 + TimeDelta::minutes(150);
        assert_eq!(
            prune(&target, now, Duration::from_secs(3600))
                .await
                .unwrap(),
            1
        );
        assert_eq!(requests(&target).await.unwrap(), vec![b.clone()]);
        watch.refresh().await.unwrap();
        assert_eq!(watch.known().cloned().collect::<Vec<_>>(), vec![b]);
    }
}
