//! Rendering query results: an aligned table for people; CSV, JSON, NDJSON and Arrow IPC
//! for programs. Every format but the table encodes batch by batch ([`Encoder`]), so a
//! large result can be streamed.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::{ArrayWriter, LineDelimitedWriter};
use serde::Deserialize;

use crate::view_types::without_views;

/// Output formats of `mcpulse query` and the HTTP endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// An aligned text table.
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of row objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// The Arrow IPC streaming format (schema, then record batches).
    Arrow,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Self::Table),
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            "ndjson" => Ok(Self::Ndjson),
            "arrow" => Ok(Self::Arrow),
            other => Err(format!(
                "unknown format {other:?}: use table, csv, json, ndjson or arrow"
            )),
        }
    }
}

/// The media type of the Arrow IPC streaming format.
pub const ARROW_STREAM_MEDIA_TYPE: &str = "application/vnd.apache.arrow.stream";

impl OutputFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Table => "text/plain; charset=utf-8",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
            Self::Arrow => ARROW_STREAM_MEDIA_TYPE,
        }
    }

    /// The format an HTTP `Accept` header asks for, if it names one we serve (the first
    /// in the client's order of preference; `*/*` and unknown types give `None`).
    pub fn from_accept(accept: &str) -> Option<Self> {
        let mut ranges: Vec<(f32, usize, Self)> = accept
            .split(',')
            .enumerate()
            .filter_map(|(i, range)| {
                let mut parts = range.split(';');
                let media = parts.next()?.trim().to_ascii_lowercase();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                let format = match media.as_str() {
                    "application/json" => Self::Json,
                    "application/x-ndjson" | "application/jsonl" => Self::Ndjson,
                    "text/csv" => Self::Csv,
                    "text/plain" => Self::Table,
                    ARROW_STREAM_MEDIA_TYPE | "application/vnd.apache.arrow" => Self::Arrow,
                    _ => return None,
                };
                (q > 0.0).then_some((q, i, format))
            })
            .collect();
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranges.first().map(|r| r.2)
    }

    /// Whether the format can be written batch by batch (all but the table, whose
    /// column widths depend on every row).
    pub fn streams(self) -> bool {
        !matches!(self, Self::Table)
    }

    /// Renders `batches` (which all share `schema`).
    pub fn render(
        self,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<Vec<u8>, ArrowError> {
        let mut encoder = Encoder::new(self, schema.clone())?;
        let mut out = Vec::new();
        for batch in batches {
            out.extend(encoder.push(batch)?);
        }
        out.extend(encoder.finish()?);
        Ok(out)
    }
}

/// Encodes a result batch by batch: [`Encoder::push`] returns the bytes ready so far,
/// [`Encoder::finish`] the rest. Concatenated, they are the whole document.
pub struct Encoder {
    schema: SchemaRef,
    state: State,
}

enum State {
    Table(Vec<RecordBatch>),
    Csv {
        header_written: bool,
    },
    Json(ArrayWriter<Vec<u8>>, bool),
    Ndjson,
    /// The writer and the schema it was opened with (views as plain strings and bytes).
    Arrow(StreamWriter<Vec<u8>>, SchemaRef),
}

impl Encoder {
    pub fn new(format: OutputFormat, schema: SchemaRef) -> Result<Self, ArrowError> {
        let state = match format {
            OutputFormat::Table => State::Table(Vec::new()),
            OutputFormat::Csv => State::Csv {
                header_written: false,
            },
            OutputFormat::Json => State::Json(ArrayWriter::new(Vec::new()), false),
            OutputFormat::Ndjson => State::Ndjson,
            OutputFormat::Arrow => {
                let wire = without_views(&schema);
                State::Arrow(StreamWriter::try_new(Vec::new(), &wire)?, wire)
            }
        };
        Ok(Self { schema, state })
    }

    /// Adds one batch; returns the bytes that can be sent now.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
        match &mut self.state {
            State::Table(batches) => {
                batches.push(batch.clone());
                Ok(Vec::new())
            }
            State::Csv { header_written } => {
                let mut out = Vec::new();
                datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(!*header_written)
                    .build(&mut out)
                    .write(batch)?;
                *header_written = true;
                Ok(out)
            }
            State::Json(writer, wrote) => {
                if batch.num_rows() == 0 {
                    return Ok(Vec::new());
                }
                writer.write(batch)?;
                *wrote = true;
                Ok(std::mem::take(writer.get_mut()))
            }
            State::Ndjson => {
                let mut writer = LineDelimitedWriter::new(Vec::new());
                writer.write(batch)?;
                writer.finish()?;
                Ok(writer.into_inner())
            }
            State::Arrow(writer, wire) => {
                if batch.schema_ref() == wire {
                    writer.write(batch)?;
                } else {
                    let columns = batch
                        .columns()
                        .iter()
                        .zip(wire.fields())
                        .map(|(column, field)| cast(column, field.data_type()))
                        .collect::<Result<Vec<_>, _>>()?;
                    writer.write(&RecordBatch::try_new(wire.clone(), columns)?)?;
                }
                Ok(std::mem::take(writer.get_mut()))
            }
        }
    }

    /// Ends the document; returns its last bytes.
    pub fn finish(self) -> Result<Vec<u8>, ArrowError> {
        match self.state {
            State::Table(batches) => {
                let text = if batches.is_empty() {
                    datafusion::arrow::util::pretty::pretty_format_batches(&[
                        RecordBatch::new_empty(self.schema.clone()),
                    ])?
                } else {
                    datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
                };
                Ok(format!("{text}\n").into_bytes())
            }
            State::Csv { header_written } => {
                let mut out = Vec::new();
                if !header_written {
                    datafusion::arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(&mut out)
                        .write(&RecordBatch::new_empty(self.schema.clone()))?;
                }
                Ok(out)
            }
            State::Json(mut writer, wrote) => {
                if !wrote {
                    return Ok(b"[]\n".to_vec());
                }
                writer.finish()?;
                let mut out = writer.into_inner();
                out.push(b'\n');
                Ok(out)
            }
            State::Ndjson => Ok(Vec::new()),
            State::Arrow(mut writer, _) => {
                writer.finish()?;
                Ok(std::mem::take(writer.get_mut()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::ipc::reader::StreamReader;

    use super::*;

    fn batch(from: i64, n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(from..from + n)),
                Arc::new(StringArray::from_iter(
                    (from..from + n).map(|i| (i % 2 == 0).then(|| format!("v,{i}\""))),
                )),
            ],
        )
        .unwrap()
    }

    #[test]
    fn streamed_pieces_make_one_document() {
        let batches = [batch(0, 3), batch(3, 0), batch(3, 2)];
        let schema = batches[0].schema();
        let json = OutputFormat::Json.render(&schema, &batches).unwrap();
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[4]["n"], 4);
        assert_eq!(rows[2]["s"], "v,2\"");
        let csv = String::from_utf8(OutputFormat::Csv.render(&schema, &batches).unwrap()).unwrap();
        assert_eq!(csv.lines().count(), 6, "{csv}");
        assert_eq!(csv.lines().next(), Some("n,s"));
        assert_eq!(csv.matches("n,s").count(), 1);
        let ndjson = OutputFormat::Ndjson.render(&schema, &batches).unwrap();
        assert_eq!(
            ndjson
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count(),
            5
        );
        let arrow = OutputFormat::Arrow.render(&schema, &batches).unwrap();
        let reader = StreamReader::try_new(std::io::Cursor::new(arrow), None).unwrap();
        assert_eq!(reader.schema(), schema);
        let back: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(back, 5);
    }

    #[test]
    fn arrow_output_carries_views_as_plain_strings() {
        use datafusion::arrow::array::{Array, StringViewArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("server", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringViewArray::from(vec![
                    Some("weather"),
                    None,
                    Some("a-server-name-longer-than-twelve-bytes"),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap();
        let arrow = OutputFormat::Arrow.render(&schema, &[batch]).unwrap();
        let mut reader = StreamReader::try_new(std::io::Cursor::new(arrow), None).unwrap();
        assert_eq!(reader.schema().field(0).data_type(), &DataType::Utf8);
        let back = reader.next().unwrap().unwrap();
        let servers = back
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(servers.value(0), "weather");
        assert!(servers.is_null(1));
        assert_eq!(servers.value(2), "a-server-name-longer-than-twelve-bytes");
        assert!(reader.next().is_none());
    }

    #[test]
    fn empty_results_are_valid_documents() {
        let schema = batch(0, 0).schema();
        assert_eq!(OutputFormat::Json.render(&schema, &[]).unwrap(), b"[]\n");
        assert_eq!(OutputFormat::Csv.render(&schema, &[]).unwrap(), b"n,s\n");
        let arrow = OutputFormat::Arrow.render(&schema, &[]).unwrap();
        let reader = StreamReader::try_new(std::io::Cursor::new(arrow), None).unwrap();
        assert_eq!(reader.count(), 0);
    }

    #[test]
    fn accept_header_picks_the_preferred_format() {
        use OutputFormat::*;
        assert_eq!(OutputFormat::from_accept("text/csv"), Some(Csv));
        assert_eq!(
            OutputFormat::from_accept(
                "application/json;q=0.5, application/vnd.apache.arrow.stream"
            ),
            Some(Arrow)
        );
        assert_eq!(OutputFormat::from_accept("*/*"), None);
        assert_eq!(
            OutputFormat::from_accept("text/html, application/x-ndjson"),
            Some(Ndjson)
        );
        assert_eq!(OutputFormat::from_accept("text/csv;q=0"), None);
    }
}
