//! What PostgreSQL clients expect beyond SQL over the tables: session statements that
//! do nothing here, settings, a few catalog functions and a small `pg_catalog`.
//!
//! Statements are first [`classify`]'d: transaction control, `SET`/`RESET`/`DISCARD`
//! and `SHOW` are answered here; the rest goes to DataFusion after [`rewrite`], which
//! turns the PostgreSQL-only idioms clients send on their own (Grafana's search-path
//! subquery, unqualified `pg_catalog` tables) into SQL DataFusion runs.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::{ScalarValue, exec_err};
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use mcpulse_schemas::Table;

use super::auth::SERVER_VERSION;
use crate::{QueryEngine, Scope};

/// The engine with the compatibility functions and `pg_catalog` in every session.
pub fn engine(engine: QueryEngine) -> QueryEngine {
    engine.with_extension(Arc::new(register))
}

/// Settings `SHOW` and `current_setting` answer (name, value, description).
pub const SETTINGS: [(&str, &str, &str); 17] = [
    (
        "server_version",
        SERVER_VERSION,
        "PostgreSQL version mcpulse speaks",
    ),
    ("server_version_num", "160006", "the same, as a number"),
    ("server_encoding", "UTF8", "server character set"),
    ("client_encoding", "UTF8", "client character set"),
    (
        "search_path",
        "public",
        "where unqualified tables are found",
    ),
    ("TimeZone", "UTC", "timestamps are UTC"),
    ("DateStyle", "ISO, YMD", "date output style"),
    ("IntervalStyle", "postgres", "interval output style"),
    (
        "standard_conforming_strings",
        "on",
        "backslashes are literal in '...'",
    ),
    ("integer_datetimes", "on", "timestamps are integers"),
    ("transaction_isolation", "read committed", "isolation level"),
    ("transaction_read_only", "on", "the archive is read-only"),
    (
        "default_transaction_read_only",
        "on",
        "the archive is read-only",
    ),
    ("is_superuser", "off", "no one is"),
    ("max_identifier_length", "63", "longest identifier"),
    ("lc_collate", "C", "collation"),
    ("application_name", "", "set by the client"),
];

/// The value of a setting (names are case-insensitive).
pub fn setting(name: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v, _)| *v)
}

/// What a statement is, for the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classified {
    /// Only whitespace and comments.
    Empty,
    /// `BEGIN` / `START TRANSACTION` (true) or `COMMIT` / `ROLLBACK` / `END` (false):
    /// accepted, nothing to do.
    Transaction { tag: &'static str, begins: bool },
    /// `SET`, `RESET`, `DISCARD`, `DEALLOCATE`, `CLOSE`, `UNLISTEN`: accepted, ignored.
    Command(&'static str),
    /// `SHOW name` (or `SHOW ALL`).
    Show(String),
    /// SQL for DataFusion (rewritten).
    Sql(String),
}

/// Splits a simple-query string into statements at top-level semicolons (not inside
/// quotes, identifiers or comments).
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                current.push(c);
                while let Some(d) = chars.next() {
                    current.push(d);
                    if d == c {
                        if chars.peek() == Some(&c) {
                            current.push(chars.next().expect("peeked"));
                        } else {
                            break;
                        }
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                current.push(c);
                for d in chars.by_ref() {
                    current.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                current.push(c);
                let mut prev = ' ';
                for d in chars.by_ref() {
                    current.push(d);
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            ';' => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out.into_iter()
        .filter(|s| !strip_comments(s).trim().is_empty())
        .collect()
}

/// `sql` without `--` and `/* */` comments (outside quotes).
fn strip_comments(sql: &str) -> String {
    let mut out = String::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Classifies one statement.
pub fn classify(statement: &str) -> Classified {
    let bare = strip_comments(statement);
    let words: Vec<String> = bare
        .split_whitespace()
        .take(3)
        .map(|w| w.trim_end_matches(';').to_ascii_uppercase())
        .collect();
    let first = words.first().map(String::as_str).unwrap_or("");
    match first {
        "" => Classified::Empty,
        "BEGIN" => Classified::Transaction {
            tag: "BEGIN",
            begins: true,
        },
        "START" if words.get(1).is_some_and(|w| w == "TRANSACTION") => Classified::Transaction {
            tag: "START TRANSACTION",
            begins: true,
        },
        "COMMIT" | "END" => Classified::Transaction {
            tag: "COMMIT",
            begins: false,
        },
        "ROLLBACK" | "ABORT" => Classified::Transaction {
            tag: "ROLLBACK",
            begins: false,
        },
        "SET" => Classified::Command("SET"),
        "RESET" => Classified::Command("RESET"),
        "DISCARD" => Classified::Command("DISCARD ALL"),
        "DEALLOCATE" => Classified::Command("DEALLOCATE"),
        "CLOSE" => Classified::Command("CLOSE CURSOR"),
        "UNLISTEN" => Classified::Command("UNLISTEN"),
        "SHOW" => {
            let rest = bare.trim().trim_end_matches(';')[4..].trim().to_string();
            let name = rest.trim_matches('"').to_string();
            let normalized = name
                .to_ascii_lowercase()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            match normalized.as_str() {
                "transaction isolation level" => Classified::Show("transaction_isolation".into()),
                "time zone" => Classified::Show("TimeZone".into()),
                _ => Classified::Show(name),
            }
        }
        _ => Classified::Sql(rewrite(statement)),
    }
}

/// The rows of `SHOW name`: (column name, rows), or `None` for an unknown setting.
pub fn show(name: &str) -> Option<(Vec<&'static str>, Vec<Vec<String>>)> {
    if name.eq_ignore_ascii_case("all") {
        return Some((
            vec!["name", "setting", "description"],
            SETTINGS
                .iter()
                .map(|(n, v, d)| vec![n.to_string(), v.to_string(), d.to_string()])
                .collect(),
        ));
    }
    let (n, v, _) = SETTINGS
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))?;
    Some((vec![n], vec![vec![v.to_string()]]))
}

/// Tables of our `pg_catalog`.
const CATALOG_TABLES: [&str; 6] = [
    "pg_namespace",
    "pg_class",
    "pg_type",
    "pg_database",
    "pg_extension",
    "pg_settings",
];

/// Rewrites PostgreSQL-only idioms into SQL DataFusion runs:
///
/// - a subquery over `current_setting('search_path')` (Grafana's "schemas on the search
///   path" constraint) becomes `('public')`, the only schema on it;
/// - unqualified `pg_namespace`, `pg_class`, ... after `FROM` or `JOIN` get
///   `pg_catalog.` (PostgreSQL searches `pg_catalog` first).
pub fn rewrite(sql: &str) -> String {
    let mut sql = sql.to_string();
    while let Some(at) = sql.find("current_setting('search_path')") {
        let Some(group) = enclosing_select(&sql, at) else {
            break;
        };
        sql.replace_range(group, "('public')");
    }
    let lower = sql.to_ascii_lowercase();
    let mut out = String::with_capacity(sql.len() + 16);
    let mut last = 0;
    let bytes = lower.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &lower[i..];
        let keyword = ["from ", "join "]
            .iter()
            .find(|k| rest.starts_with(*k) && (i == 0 || !is_ident(bytes[i - 1])));
        if let Some(k) = keyword {
            let mut j = i + k.len();
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            let end = (j..bytes.len())
                .find(|&e| !is_ident(bytes[e]))
                .unwrap_or(bytes.len());
            if CATALOG_TABLES.contains(&&lower[j..end]) {
                out.push_str(&sql[last..j]);
                out.push_str("pg_catalog.");
                last = j;
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out.push_str(&sql[last..]);
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'"'
}

/// The byte range of the innermost parenthesized `SELECT ...` around `at`.
fn enclosing_select(sql: &str, at: usize) -> Option<std::ops::Range<usize>> {
    let bytes = sql.as_bytes();
    let mut depth = 0i32;
    let mut start = at;
    loop {
        if start == 0 {
            return None;
        }
        start -= 1;
        match bytes[start] {
            b')' => depth += 1,
            b'(' if depth > 0 => depth -= 1,
            b'(' if sql[start + 1..]
                .trim_start()
                .to_ascii_uppercase()
                .starts_with("SELECT") =>
            {
                break;
            }
            _ => {}
        }
    }
    let mut depth = 0i32;
    for (offset, b) in bytes[start..].iter().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(start..start + offset + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// `quote_ident`: the identifier as PostgreSQL would quote it.
fn quote_ident(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// `parse_ident`: `schema.table` (quotes honoured) into its parts.
fn parse_ident(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut current)),
            c if quoted => current.push(c),
            c => current.push(c.to_ascii_lowercase()),
        }
    }
    parts.push(current);
    parts
}

fn string_fn(
    name: &str,
    f: impl Fn(&str) -> Result<String> + Send + Sync + 'static,
) -> datafusion::logical_expr::ScalarUDF {
    let name_owned = name.to_string();
    create_udf(
        name,
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| match &args[0] {
            ColumnarValue::Scalar(s) => match s {
                ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => Ok(
                    ColumnarValue::Scalar(ScalarValue::Utf8(v.as_deref().map(&f).transpose()?)),
                ),
                other => exec_err!("{name_owned}: expected text, got {other}"),
            },
            ColumnarValue::Array(a) => {
                let a = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
                let a = a
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("cast to Utf8");
                let out = a
                    .iter()
                    .map(|v| v.map(&f).transpose())
                    .collect::<Result<StringArray>>()?;
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
        }),
    )
}

fn constant_fn(name: &str, value: String) -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        name,
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                value.clone(),
            ))))
        }),
    )
}

/// Registers the functions and `pg_catalog` in a session of `scope`.
pub fn register(ctx: &SessionContext, scope: &Scope) -> Result<()> {
    let user = match scope {
        Scope::Tenant(t) => t.clone(),
        Scope::All => "operator".to_string(),
    };
    ctx.register_udf(string_fn("current_setting", |name| {
        setting(name).map(str::to_string).ok_or_else(|| {
            datafusion::error::DataFusionError::Execution(format!(
                "unrecognized configuration parameter \"{name}\""
            ))
        })
    }));
    ctx.register_udf(string_fn("quote_ident", |s| Ok(quote_ident(s))));
    ctx.register_udf(constant_fn(
        "version",
        format!(
            "PostgreSQL {SERVER_VERSION} (mcpulse {}, Apache DataFusion)",
            env!("CARGO_PKG_VERSION")
        ),
    ));
    ctx.register_udf(constant_fn("current_database", "mcpulse".into()));
    ctx.register_udf(constant_fn("current_schema", "public".into()));
    ctx.register_udf(constant_fn("current_user", user.clone()));
    ctx.register_udf(constant_fn("session_user", user));
    ctx.register_udf(create_udf(
        "parse_ident",
        vec![DataType::Utf8],
        DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let a = datafusion::arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
            let a = a
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to Utf8");
            let mut builder = ListBuilder::new(StringBuilder::new());
            for v in a.iter() {
                match v {
                    Some(v) => {
                        for part in parse_ident(v) {
                            builder.values().append_value(part);
                        }
                        builder.append(true);
                    }
                    None => builder.append(false),
                }
            }
            let out: ArrayRef = Arc::new(builder.finish());
            if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
            } else {
                Ok(ColumnarValue::Array(out))
            }
        }),
    ));
    register_catalog(ctx)
}

fn table(ctx: &SessionContext, name: &str, columns: Vec<(&str, ArrayRef)>) -> Result<()> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )?;
    let table = MemTable::try_new(schema, vec![vec![batch]])?;
    ctx.register_table(format!("pg_catalog.{name}"), Arc::new(table))?;
    Ok(())
}

fn strings(values: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn ints(values: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

/// A small `pg_catalog`: namespaces, the six tables as relations, the types results
/// use, one database, no extensions, the settings.
fn register_catalog(ctx: &SessionContext) -> Result<()> {
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| datafusion::error::DataFusionError::Internal("no default catalog".into()))?;
    catalog.register_schema("pg_catalog", Arc::new(MemorySchemaProvider::new()))?;
    table(
        ctx,
        "pg_namespace",
        vec![
            ("oid", ints(&[11, 2200, 13000])),
            (
                "nspname",
                strings(&["pg_catalog", "public", "information_schema"]),
            ),
        ],
    )?;
    let names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
    let oids: Vec<i64> = (0..names.len() as i64).map(|i| 16384 + i).collect();
    table(
        ctx,
        "pg_class",
        vec![
            ("oid", ints(&oids)),
            ("relname", strings(&names)),
            ("relnamespace", ints(&vec![2200; names.len()])),
            ("relkind", strings(&vec!["r"; names.len()])),
        ],
    )?;
    let types = [
        (16, "bool"),
        (17, "bytea"),
        (20, "int8"),
        (21, "int2"),
        (23, "int4"),
        (25, "text"),
        (700, "float4"),
        (701, "float8"),
        (1082, "date"),
        (1083, "time"),
        (1114, "timestamp"),
        (1184, "timestamptz"),
    ];
    table(
        ctx,
        "pg_type",
        vec![
            ("oid", ints(&types.iter().map(|t| t.0).collect::<Vec<_>>())),
            (
                "typname",
                strings(&types.iter().map(|t| t.1).collect::<Vec<_>>()),
            ),
            ("typnamespace", ints(&vec![11; types.len()])),
        ],
    )?;
    table(
        ctx,
        "pg_database",
        vec![
            ("oid", ints(&[16383])),
            ("datname", strings(&["mcpulse"])),
            ("datistemplate", Arc::new(BooleanArray::from(vec![false]))),
        ],
    )?;
    table(
        ctx,
        "pg_extension",
        vec![
            ("oid", ints(&[])),
            ("extname", strings(&[])),
            ("extversion", strings(&[])),
        ],
    )?;
    table(
        ctx,
        "pg_settings",
        vec![
            (
                "name",
                strings(&SETTINGS.iter().map(|s| s.0).collect::<Vec<_>>()),
            ),
            (
                "setting",
                strings(&SETTINGS.iter().map(|s| s.1).collect::<Vec<_>>()),
            ),
            (
                "short_desc",
                strings(&SETTINGS.iter().map(|s| s.2).collect::<Vec<_>>()),
            ),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_top_level_semicolons_only() {
        assert_eq!(
            split_statements("SET a = 'x;y'; SELECT \"a;b\" -- c;d\n; ;"),
            vec!["SET a = 'x;y'", " SELECT \"a;b\" -- c;d\n"]
        );
        assert!(split_statements("-- ping").is_empty());
        assert!(split_statements(" ; ").is_empty());
    }

    #[test]
    fn classifies_session_statements() {
        assert_eq!(
            classify("begin"),
            Classified::Transaction {
                tag: "BEGIN",
                begins: true
            }
        );
        assert_eq!(
            classify("SET extra_float_digits = 3"),
            Classified::Command("SET")
        );
        assert_eq!(
            classify("SHOW TRANSACTION ISOLATION LEVEL"),
            Classified::Show("transaction_isolation".into())
        );
        assert_eq!(
            classify("show server_version;"),
            Classified::Show("server_version".into())
        );
        assert_eq!(
            classify("/* x */ SELECT 1"),
            Classified::Sql("/* x */ SELECT 1".into())
        );
        assert_eq!(
            show("SERVER_VERSION").unwrap().1,
            vec![vec![SERVER_VERSION.to_string()]]
        );
        assert!(show("nope").is_none());
    }

    #[test]
    fn rewrites_grafana_idioms() {
        let grafana = "select quote_ident(table_name) from information_schema.tables where quote_ident(table_schema) IN (\n SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END FROM generate_series(array_lower(string_to_array(current_setting('search_path'),','),1), array_upper(string_to_array(current_setting('search_path'),','),1)) as i, string_to_array(current_setting('search_path'),',') s\n )";
        assert_eq!(
            rewrite(grafana),
            "select quote_ident(table_name) from information_schema.tables where quote_ident(table_schema) IN ('public')"
        );
        assert_eq!(
            rewrite("SELECT extversion FROM pg_extension WHERE extname = 'x'"),
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'x'"
        );
        assert_eq!(
            rewrite("SELECT * FROM pg_catalog.pg_class"),
            "SELECT * FROM pg_catalog.pg_class"
        );
        assert_eq!(rewrite("SELECT * FROM probes"), "SELECT * FROM probes");
        assert_eq!(quote_ident("probes"), "probes");
        assert_eq!(quote_ident("Mixed\"Case"), "\"Mixed\"\"Case\"");
        assert_eq!(
            parse_ident("public.\"My.Table\""),
            vec!["public", "My.Table"]
        );
    }
}
