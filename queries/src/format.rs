//! Rendering query results: an aligned table for people, CSV and JSON for programs.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use serde::Deserialize;

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
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Self::Table),
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            "ndjson" => Ok(Self::Ndjson),
            other => Err(format!(
                "unknown format {other:?}: use table, csv, json or ndjson"
            )),
        }
    }
}

impl OutputFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Table => "text/plain; charset=utf-8",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
        }
    }

    /// Renders `batches` (which all share `schema`).
    pub fn render(
        self,
        schema: &datafusion::arrow::datatypes::SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<Vec<u8>, ArrowError> {
        match self {
            Self::Table => {
                let text = if batches.is_empty() {
                    datafusion::arrow::util::pretty::pretty_format_batches(&[
                        RecordBatch::new_empty(schema.clone()),
                    ])?
                } else {
                    datafusion::arrow::util::pretty::pretty_format_batches(batches)?
                };
                Ok(format!("{text}\n").into_bytes())
            }
            Self::Csv => {
                let mut out = Vec::new();
                {
                    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(&mut out);
                    if batches.is_empty() {
                        writer.write(&RecordBatch::new_empty(schema.clone()))?;
                    }
                    for batch in batches {
                        writer.write(batch)?;
                    }
                }
                Ok(out)
            }
            Self::Json => {
                let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
                let mut out = writer.into_inner();
                if out.is_empty() {
                    out.extend_from_slice(b"[]");
                }
                out.push(b'\n');
                Ok(out)
            }
            Self::Ndjson => {
                let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
                Ok(writer.into_inner())
            }
        }
    }
}
