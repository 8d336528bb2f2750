//! Reproducible cut points.
//!
//! A flush triggered by age cuts a partition's batch at an offset the wall clock chose.
//! If the process dies after writing some objects of that cut but before committing,
//! the replay from the committed offset must end at the same offset, or it would write
//! `0–150` beside an existing `0–99` and double rows. So before writing the objects of a
//! cut, the archiver records the cut `{first, last}` here; after a restart (or a
//! rebalance) the first batch of a partition that starts at a recorded `first` is cut
//! exactly at its `last`.

use std::sync::Arc;

use bytes::Bytes;
use mcpulse_bus::{Offset, TopicPartition};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
use serde::{Deserialize, Serialize};

use super::layout::manifest_path;
use crate::operator::OperatorError;

/// The cut being written for one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    pub first: Offset,
    pub last: Offset,
}

/// Reads and writes cut manifests next to the archive.
#[derive(Clone)]
pub struct Manifests {
    store: Arc<dyn ObjectStore>,
    root: Path,
}

impl Manifests {
    pub fn new(store: Arc<dyn ObjectStore>, root: Path) -> Self {
        Self { store, root }
    }

    /// The last cut recorded for `tp`, if any.
    pub async fn load(&self, tp: &TopicPartition) -> Result<Option<Cut>, OperatorError> {
        match self.store.get(&manifest_path(&self.root, tp)).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(retryable)?;
                serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                    OperatorError::Fatal(format!("corrupt archive manifest for {tp}: {e}"))
                })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(retryable(e)),
        }
    }

    /// Records the cut about to be written for `tp`.
    pub async fn record(&self, tp: &TopicPartition, cut: Cut) -> Result<(), OperatorError> {
        let body = Bytes::from(serde_json::to_vec(&cut).expect("cut serializes"));
        self.store
            .put(&manifest_path(&self.root, tp), PutPayload::from(body))
            .await
            .map_err(retryable)?;
        Ok(())
    }
}

pub(crate) fn retryable(e: impl std::fmt::Display) -> OperatorError {
    OperatorError::Retryable(e.to_string())
}
