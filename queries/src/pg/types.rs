//! Arrow types as PostgreSQL types, and record batches as `DataRow`s (text or binary,
//! per column as the client asked).
//!
//! | Arrow | PostgreSQL |
//! |---|---|
//! | Boolean | bool |
//! | Int8, Int16, UInt8 | int2 |
//! | Int32, UInt16 | int4 |
//! | Int64, UInt32, UInt64 | int8 |
//! | Float16, Float32 | float4 |
//! | Float64, Decimal | float8 |
//! | Utf8, LargeUtf8, Utf8View | text |
//! | Binary, LargeBinary, BinaryView, FixedSizeBinary | bytea |
//! | Timestamp with a time zone | timestamptz |
//! | Timestamp without one | timestamp |
//! | Date32, Date64 | date |
//! | Time32, Time64 | time |
//! | List, Map, Struct | text (JSON) |
//! | anything else (intervals, durations, ...) | text (Arrow's display) |

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Schema,
    TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;

/// The PostgreSQL type of an Arrow type.
pub fn pg_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Type::FLOAT8,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Type::BYTEA,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Time32(_) | DataType::Time64(_) => Type::TIME,
        DataType::Dictionary(_, value) => pg_type(value),
        _ => Type::TEXT,
    }
}

/// The Arrow type a parameter of a PostgreSQL type binds as.
pub fn arrow_type(pg: &Type) -> DataType {
    match *pg {
        Type::BOOL => DataType::Boolean,
        Type::INT2 | Type::INT4 | Type::INT8 => DataType::Int64,
        Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => DataType::Float64,
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Nanosecond, None),
        Type::DATE => DataType::Date32,
        _ => DataType::Utf8,
    }
}

/// The row description of `schema`; `format` is the client's choice per column
/// (extended protocol), text otherwise.
pub fn fields(schema: &Schema, format: Option<&Format>) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let ty = pg_type(f.data_type());
            let size = match ty {
                Type::BOOL => 1,
                Type::INT2 => 2,
                Type::INT4 | Type::FLOAT4 | Type::DATE => 4,
                Type::INT8 | Type::FLOAT8 | Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::TIME => 8,
                _ => -1,
            };
            let format = format.map(|f| f.format_for(i)).unwrap_or(FieldFormat::Text);
            FieldInfo::new(f.name().clone(), None, None, ty, format).with_type_size(size)
        })
        .collect()
}

/// One column prepared for encoding: cast to the canonical Arrow type of its PostgreSQL
/// type, or rendered to text.
enum Column {
    Bool(ArrayRef),
    I16(ArrayRef),
    I32(ArrayRef),
    I64(ArrayRef),
    F32(ArrayRef),
    F64(ArrayRef),
    Bytes(ArrayRef),
    TimestampTz(ArrayRef),
    Timestamp(ArrayRef),
    Date(ArrayRef),
    Time(ArrayRef),
    Text(Vec<Option<String>>),
}

fn arrow_err(e: impl std::fmt::Display) -> PgWireError {
    super::errors::user_error("XX000", format!("encoding a result column failed: {e}"))
}

fn prepare(array: &ArrayRef, ty: &Type) -> PgWireResult<Column> {
    let to = |dt: DataType| cast(array, &dt).map_err(arrow_err);
    Ok(match *ty {
        Type::BOOL => Column::Bool(to(DataType::Boolean)?),
        Type::INT2 => Column::I16(to(DataType::Int16)?),
        Type::INT4 => Column::I32(to(DataType::Int32)?),
        Type::INT8 => Column::I64(to(DataType::Int64)?),
        Type::FLOAT4 => Column::F32(to(DataType::Float32)?),
        Type::FLOAT8 => Column::F64(to(DataType::Float64)?),
        Type::BYTEA => Column::Bytes(to(DataType::Binary)?),
        Type::TIMESTAMPTZ => Column::TimestampTz(to(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some("UTC".into()),
        ))?),
        Type::TIMESTAMP => Column::Timestamp(to(DataType::Timestamp(TimeUnit::Microsecond, None))?),
        Type::DATE => Column::Date(to(DataType::Date32)?),
        Type::TIME => Column::Time(to(DataType::Time64(TimeUnit::Microsecond))?),
        _ => Column::Text(text(array)?),
    })
}

/// Text of every value: JSON for nested values, else Arrow's display, strings as they are.
fn text(array: &ArrayRef) -> PgWireResult<Vec<Option<String>>> {
    match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(..) => {
            let utf8 = cast(array, &DataType::Utf8).map_err(arrow_err)?;
            Ok(utf8
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect())
        }
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(..)
        | DataType::ListView(_)
        | DataType::Map(..)
        | DataType::Struct(_) => json(array),
        _ => {
            let options = FormatOptions::default();
            let formatter = ArrayFormatter::try_new(array.as_ref(), &options).map_err(arrow_err)?;
            Ok((0..array.len())
                .map(|i| (!array.is_null(i)).then(|| formatter.value(i).to_string()))
                .collect())
        }
    }
}

/// Nested values as JSON text, one per row.
fn json(array: &ArrayRef) -> PgWireResult<Vec<Option<String>>> {
    let schema = Arc::new(Schema::new(vec![datafusion::arrow::datatypes::Field::new(
        "v",
        array.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema, vec![array.clone()]).map_err(arrow_err)?;
    let mut writer = datafusion::arrow::json::writer::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, datafusion::arrow::json::writer::LineDelimited>(Vec::new());
    writer.write(&batch).map_err(arrow_err)?;
    writer.finish().map_err(arrow_err)?;
    let out = writer.into_inner();
    let mut values = Vec::with_capacity(array.len());
    for (i, line) in out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let row: serde_json::Value = serde_json::from_slice(line).map_err(arrow_err)?;
        values.push(match row.get("v") {
            None | Some(serde_json::Value::Null) if array.is_null(i) => None,
            Some(v) => Some(v.to_string()),
            None => None,
        });
    }
    Ok(values)
}

fn micros_to_utc(v: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v)
}

/// Encodes every row of `batch` for `fields` (from [`fields`] of the same schema).
pub fn encode(batch: &RecordBatch, fields: &Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<DataRow>> {
    let columns = batch
        .columns()
        .iter()
        .zip(fields.iter())
        .map(|(array, field)| prepare(array, field.datatype()))
        .collect::<PgWireResult<Vec<_>>>()?;
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for column in &columns {
            match column {
                Column::Bool(a) => {
                    let a = a.as_boolean();
                    encoder.encode_field(&(!a.is_null(row)).then(|| a.value(row)))?
                }
                Column::I16(a) => {
                    let a = a.as_primitive::<Int16Type>();
                    encoder.encode_field(&(!a.is_null(row)).then(|| a.value(row)))?
                }
                Column::I32(a) => {
                    let a = a.as_primitive::<Int32Type>();
                    encoder.encode_field(&(!a.is_null(row)).then(|| a.value(row)))?
                }
                Column::I64(a) => {
                    let a = a.as_primitive::<Int64Type>();
                    encoder.encode_field(&(!a.is_null(row)).then(|| a.value(row)))?
                }
                Column::F32(a) => {
                    let a = a.as_primitive::<Float32Type>();
                    encoder.encode_field(&(!a.is_null(row)).then(|| a.value(row)))?
                }
                Column::F64(a) => {
                    let a = a.as_primitive::<Float64Type>();
                    encoder.encode_field(&(!a.is_null(row)).then(|| a.value(row)))?
                }
                Column::Bytes(a) => {
                    let a = a.as_binary::<i32>();
                    encoder.encode_field(&(!a.is_null(row)).then(|| a.value(row).to_vec()))?
                }
                Column::TimestampTz(a) => {
                    let a = a.as_primitive::<TimestampMicrosecondType>();
                    let v = (!a.is_null(row))
                        .then(|| a.value(row))
                        .and_then(micros_to_utc);
                    encoder.encode_field(&v)?
                }
                Column::Timestamp(a) => {
                    let a = a.as_primitive::<TimestampMicrosecondType>();
                    let v: Option<NaiveDateTime> = (!a.is_null(row))
                        .then(|| a.value(row))
                        .and_then(micros_to_utc)
                        .map(|t| t.naive_utc());
                    encoder.encode_field(&v)?
                }
                Column::Date(a) => {
                    let a = a.as_primitive::<Date32Type>();
                    let v: Option<NaiveDate> =
                        (!a.is_null(row)).then(|| a.value(row)).and_then(|d| {
                            NaiveDate::from_ymd_opt(1970, 1, 1)?
                                .checked_add_signed(chrono::Duration::days(d as i64))
                        });
                    encoder.encode_field(&v)?
                }
                Column::Time(a) => {
                    let a = a.as_primitive::<datafusion::arrow::datatypes::Time64MicrosecondType>();
                    let v: Option<NaiveTime> =
                        (!a.is_null(row)).then(|| a.value(row)).and_then(|us| {
                            NaiveTime::from_num_seconds_from_midnight_opt(
                                (us / 1_000_000) as u32,
                                ((us % 1_000_000) * 1000) as u32,
                            )
                        });
                    encoder.encode_field(&v)?
                }
                Column::Text(values) => encoder.encode_field(&values[row].as_deref())?,
            }
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BooleanArray, Float64Array, Int64Array, ListArray, StringArray, TimestampNanosecondArray,
    };
    use datafusion::arrow::datatypes::Field;

    #[test]
    fn maps_the_archive_types() {
        for table in mcpulse_schemas::Table::ALL {
            for f in table.schema().fields() {
                let ty = pg_type(f.data_type());
                match f.data_type() {
                    DataType::Timestamp(_, Some(_)) => assert_eq!(ty, Type::TIMESTAMPTZ),
                    DataType::Utf8 => assert_eq!(ty, Type::TEXT),
                    DataType::Int64 => assert_eq!(ty, Type::INT8),
                    DataType::Int32 => assert_eq!(ty, Type::INT4),
                    DataType::Float64 => assert_eq!(ty, Type::FLOAT8),
                    DataType::Boolean => assert_eq!(ty, Type::BOOL),
                    DataType::Binary => assert_eq!(ty, Type::BYTEA),
                    DataType::Map(..) | DataType::List(_) => assert_eq!(ty, Type::TEXT),
                    other => panic!("{}.{}: unexpected {other}", table.name(), f.name()),
                }
            }
        }
    }

    #[test]
    fn encodes_rows_in_text() {
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("b", DataType::Boolean, true),
            Field::new("n", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                true,
            ),
            Field::new("l", list.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(BooleanArray::from(vec![Some(true), None])),
                Arc::new(Int64Array::from(vec![Some(7), None])),
                Arc::new(Float64Array::from(vec![Some(1.5), None])),
                Arc::new(StringArray::from(vec![Some("x"), None])),
                Arc::new(
                    TimestampNanosecondArray::from(vec![Some(1_700_000_000_123_456_000), None])
                        .with_timezone("UTC"),
                ),
                Arc::new(list),
            ],
        )
        .unwrap();
        let fields = Arc::new(fields(&schema, None));
        assert_eq!(fields[4].datatype(), &Type::TIMESTAMPTZ);
        let rows = encode(&batch, &fields).unwrap();
        assert_eq!(rows.len(), 2);
        let first = String::from_utf8_lossy(&rows[0].data).to_string();
        for expected in ["t", "7", "1.5", "x", "2023-11-14 22:13:20.123456", "[1,2]"] {
            assert!(first.contains(expected), "{expected} in {first:?}");
        }
        assert_eq!(rows[1].field_count, 6);
    }
}
