//! Arrow's view types at the edges of the engine: tables are read with their strings and
//! bytes as `Utf8View` / `BinaryView`, and the Arrow IPC output turns them back into
//! `Utf8` / `Binary`.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// The schema a table is read with: its archive schema with top-level strings and bytes
/// as `Utf8View` and `BinaryView`. Parquet's dictionary-encoded string pages then decode
/// into views of the dictionary instead of a copy of each row's bytes, grouping and
/// comparing short strings (server, region, tool: at most 12 bytes inline) compares
/// 16-byte views instead of byte ranges, and `latency_hist` blobs are read in place.
pub(crate) fn as_views(schema: &SchemaRef) -> SchemaRef {
    map_top_level(schema, |t| match t {
        DataType::Utf8 | DataType::LargeUtf8 => Some(DataType::Utf8View),
        DataType::Binary | DataType::LargeBinary => Some(DataType::BinaryView),
        _ => None,
    })
}

/// `schema` with top-level string and binary views as plain `Utf8` and `Binary`, for
/// Arrow IPC readers older than the view types (pyarrow before 16, most JDBC/ODBC
/// bridges).
pub(crate) fn without_views(schema: &SchemaRef) -> SchemaRef {
    map_top_level(schema, |t| match t {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        _ => None,
    })
}

/// `schema` with each top-level field's type replaced by `to(type)` where that is `Some`;
/// `schema` itself when nothing changes.
fn map_top_level(schema: &SchemaRef, to: impl Fn(&DataType) -> Option<DataType>) -> SchemaRef {
    if !schema.fields().iter().any(|f| to(f.data_type()).is_some()) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match to(f.data_type()) {
            Some(t) => f.as_ref().clone().with_data_type(t),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

#[cfg(test)]
mod tests {
    use mcpulse_schemas::Table;

    use super::*;

    #[test]
    fn tables_read_top_level_strings_and_bytes_as_views() {
        for table in Table::ALL {
            let archived = table.schema();
            let read = as_views(&archived);
            assert_eq!(read.fields().len(), archived.fields().len());
            for (a, r) in archived.fields().iter().zip(read.fields()) {
                assert_eq!(a.name(), r.name());
                assert_eq!(a.is_nullable(), r.is_nullable());
                match a.data_type() {
                    DataType::Utf8 => assert_eq!(r.data_type(), &DataType::Utf8View),
                    DataType::Binary => assert_eq!(r.data_type(), &DataType::BinaryView),
                    other => assert_eq!(r.data_type(), other, "{}", a.name()),
                }
            }
            assert_eq!(without_views(&read), archived, "{}", table.name());
        }
        let probes = as_views(&Table::Probes.schema());
        assert_eq!(
            probes.field_with_name("server").unwrap().data_type(),
            &DataType::Utf8View
        );
        assert!(matches!(
            probes.field_with_name("labels").unwrap().data_type(),
            DataType::Map(..)
        ));
    }

    #[test]
    fn a_schema_without_views_is_returned_as_it_is() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        assert!(Arc::ptr_eq(&without_views(&schema), &schema));
    }
}
