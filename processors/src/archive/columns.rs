//! Column builders shared by the table encoders.

use std::sync::Arc;

use arrow::array::{ArrayRef, MapBuilder, MapFieldNames, StringBuilder};

/// Builds a `Map<Utf8, Utf8>` column with the field names of
/// [`mcpulse_schemas::tables::string_map_type`].
pub struct StringMapBuilder {
    inner: MapBuilder<StringBuilder, StringBuilder>,
}

impl Default for StringMapBuilder {
    fn default() -> Self {
        let names = MapFieldNames {
            entry: "entries".into(),
            key: "keys".into(),
            value: "values".into(),
        };
        Self {
            inner: MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new()),
        }
    }
}

impl StringMapBuilder {
    /// Appends one entry to the map of the current row.
    pub fn insert(&mut self, key: &str, value: &str) {
        self.inner.keys().append_value(key);
        self.inner.values().append_value(value);
    }

    /// Ends the current row's map.
    pub fn end_row(&mut self) {
        self.inner
            .append(true)
            .expect("keys and values have equal length");
    }

    pub fn finish(&mut self) -> ArrayRef {
        Arc::new(self.inner.finish())
    }
}

/// Columns of one table being built, partitioned later by the archiver.
pub trait BatchBuilder: Send + Sync + Default {
    /// Rows appended so far.
    fn rows(&self) -> usize;
    /// Approximate bytes held.
    fn bytes(&self) -> usize;
    /// Builds the batch (schema of the table) and resets the builder.
    fn finish(&mut self) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError>;
}
