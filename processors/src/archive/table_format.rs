//! How log records of one topic become rows of one table.

use std::collections::BTreeMap;

use mcpulse_schemas::Table;

use super::columns::BatchBuilder;
use super::layout::PartitionKey;
use crate::operator::OperatorError;

/// Decodes the values of one topic into rows of one table.
pub trait TableFormat: Send + Sync + 'static {
    type Builder: BatchBuilder;

    fn table(&self) -> Table;

    /// Decodes `value` completely and only then appends its rows to the builders of their
    /// hive partitions, so a record that fails to decode leaves no rows behind. Returns the
    /// number of rows appended.
    fn decode_into(
        &self,
        tenant: &str,
        value: &[u8],
        out: &mut PartitionedRows<Self::Builder>,
    ) -> Result<usize, OperatorError>;
}

/// Row builders per hive partition (tenant, date, hour).
pub struct PartitionedRows<B> {
    groups: BTreeMap<PartitionKey, B>,
}

impl<B: BatchBuilder> Default for PartitionedRows<B> {
    fn default() -> Self {
        Self {
            groups: BTreeMap::new(),
        }
    }
}

impl<B: BatchBuilder> PartitionedRows<B> {
    /// The builder of partition `key`, created on first use (clones the key only then).
    pub fn get_mut(&mut self, key: &PartitionKey) -> &mut B {
        if !self.groups.contains_key(key) {
            self.groups.insert(key.clone(), B::default());
        }
        self.groups.get_mut(key).expect("inserted above")
    }

    pub fn rows(&self) -> usize {
        self.groups.values().map(B::rows).sum()
    }

    pub fn bytes(&self) -> usize {
        self.groups.values().map(B::bytes).sum()
    }

    /// Finishes every non-empty builder into a batch, in partition order.
    pub fn finish(
        self,
    ) -> Result<Vec<(PartitionKey, arrow::array::RecordBatch)>, arrow::error::ArrowError> {
        self.groups
            .into_iter()
            .filter(|(_, b)| b.rows() > 0)
            .map(|(key, mut b)| b.finish().map(|batch| (key, batch)))
            .collect()
    }
}
