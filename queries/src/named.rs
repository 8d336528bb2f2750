//! Named queries: the `.sql` files of `queries/named/`, compiled into the binary and run
//! by name (`mcpulse query --named uptime_30d --param server=weather`, or
//! `{"named": "uptime_30d", "params": {"server": "weather"}}` over HTTP).
//!
//! Each file starts with a header of `--` comments:
//!
//! ```sql
//! -- @description What it answers (one or more lines).
//! -- @param server text = '' : only this server ('' for every server)
//! -- @param window interval = 30d : how far back from now
//! ```
//!
//! A parameter without `= default` is required. Types: `text`, `int`, `float`, `bool`,
//! `timestamp` (RFC 3339) and `interval` (`30d`, `1h 30m`). In the SQL a parameter is a
//! DataFusion placeholder (`$server`): values are bound as typed literals by DataFusion,
//! never pasted into the SQL text, so no value can change the statement.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::datatypes::IntervalMonthDayNano;
use datafusion::common::ParamValues;
use datafusion::common::ScalarValue;

/// The files of `queries/named/`, name and text.
const FILES: [(&str, &str); 7] = [
    ("uptime_30d", include_str!("../named/uptime_30d.sql")),
    (
        "tool_latency_hourly",
        include_str!("../named/tool_latency_hourly.sql"),
    ),
    (
        "error_budget_burn",
        include_str!("../named/error_budget_burn.sql"),
    ),
    ("mttd_mttr", include_str!("../named/mttd_mttr.sql")),
    (
        "drift_timeline",
        include_str!("../named/drift_timeline.sql"),
    ),
    ("storms", include_str!("../named/storms.sql")),
    (
        "notification_delivery",
        include_str!("../named/notification_delivery.sql"),
    ),
];

/// The type of a parameter, which decides how its value is parsed and bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    Text,
    Int,
    Float,
    Bool,
    Timestamp,
    Interval,
}

impl ParamType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "text" => Self::Text,
            "int" => Self::Int,
            "float" => Self::Float,
            "bool" => Self::Bool,
            "timestamp" => Self::Timestamp,
            "interval" => Self::Interval,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Int => "int",
            Self::Float => "float",
            Self::Bool => "bool",
            Self::Timestamp => "timestamp",
            Self::Interval => "interval",
        }
    }

    /// The typed value of `raw`, or why it is not one.
    pub fn value(self, raw: &str) -> Result<ScalarValue, String> {
        let raw_trim = raw.trim();
        match self {
            Self::Text => Ok(ScalarValue::Utf8(Some(raw.to_string()))),
            Self::Int => raw_trim
                .parse::<i64>()
                .map(|v| ScalarValue::Int64(Some(v)))
                .map_err(|_| "expected an integer".into()),
            Self::Float => raw_trim
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(|v| ScalarValue::Float64(Some(v)))
                .ok_or_else(|| "expected a number".into()),
            Self::Bool => match raw_trim {
                "true" | "t" | "yes" | "1" => Ok(ScalarValue::Boolean(Some(true))),
                "false" | "f" | "no" | "0" => Ok(ScalarValue::Boolean(Some(false))),
                _ => Err("expected true or false".into()),
            },
            Self::Timestamp => {
                let t = DateTime::parse_from_rfc3339(raw_trim)
                    .map(|t| t.to_utc())
                    .or_else(|_| {
                        NaiveDate::parse_from_str(raw_trim, "%Y-%m-%d")
                            .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
                    })
                    .map_err(|_| {
                        "expected an RFC 3339 time (2026-05-01T12:00:00Z) or a date".to_string()
                    })?;
                Ok(timestamp(t))
            }
            Self::Interval => {
                let d = humantime::parse_duration(raw_trim)
                    .map_err(|e| format!("expected a duration like 30d or 1h ({e})"))?;
                let nanos = i64::try_from(d.as_nanos()).map_err(|_| "too long".to_string())?;
                Ok(ScalarValue::IntervalMonthDayNano(Some(
                    IntervalMonthDayNano::new(0, 0, nanos),
                )))
            }
        }
    }
}

fn timestamp(t: DateTime<Utc>) -> ScalarValue {
    ScalarValue::TimestampNanosecond(t.timestamp_nanos_opt(), Some("UTC".into()))
}

/// One parameter of a named query.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
    /// The value used when the caller gives none; `None`: required.
    pub default: Option<String>,
    pub description: String,
}

/// A named query: its SQL and what it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedQuery {
    pub name: &'static str,
    pub description: String,
    pub params: Vec<Param>,
    pub sql: &'static str,
}

/// Why a named query cannot run as asked (never retryable: the request must change).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NamedQueryError {
    #[error("unknown named query {0:?} (known: {1})")]
    UnknownQuery(String, String),
    #[error("{query}: unknown parameter {param:?} (it takes: {known})")]
    UnknownParam {
        query: String,
        param: String,
        known: String,
    },
    #[error("{query}: missing required parameter {param:?}")]
    MissingParam { query: String, param: String },
    #[error("{query}: parameter {param:?} ({ty}): {reason}, got {value:?}")]
    BadValue {
        query: String,
        param: String,
        ty: &'static str,
        value: String,
        reason: String,
    },
}

impl NamedQuery {
    /// Parses a file's header. Panics on a malformed header: the files are part of the
    /// binary and a test parses every one.
    fn parse(name: &'static str, sql: &'static str) -> Self {
        let mut description = Vec::new();
        let mut params = Vec::new();
        for line in sql.lines() {
            let Some(comment) = line.strip_prefix("--") else {
                break;
            };
            let comment = comment.trim();
            if let Some(text) = comment.strip_prefix("@description") {
                description.push(text.trim().to_string());
            } else if let Some(spec) = comment.strip_prefix("@param") {
                params.push(parse_param(name, spec.trim()));
            } else if !comment.is_empty() && !description.is_empty() && params.is_empty() {
                description.push(comment.to_string());
            }
        }
        Self {
            name,
            description: description.join(" "),
            params,
            sql,
        }
    }

    /// The values to bind: the caller's, parsed by type, and the defaults.
    pub fn bind(&self, given: &BTreeMap<String, String>) -> Result<ParamValues, NamedQueryError> {
        for key in given.keys() {
            if !self.params.iter().any(|p| &p.name == key) {
                return Err(NamedQueryError::UnknownParam {
                    query: self.name.into(),
                    param: key.clone(),
                    known: self.param_names(),
                });
            }
        }
        let mut values = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let raw = match (given.get(&p.name), &p.default) {
                (Some(v), _) => v.as_str(),
                (None, Some(default)) => default.as_str(),
                (None, None) => {
                    return Err(NamedQueryError::MissingParam {
                        query: self.name.into(),
                        param: p.name.clone(),
                    });
                }
            };
            let value =
                p.ty.value(raw)
                    .map_err(|reason| NamedQueryError::BadValue {
                        query: self.name.into(),
                        param: p.name.clone(),
                        ty: p.ty.name(),
                        value: raw.to_string(),
                        reason,
                    })?;
            values.push((p.name.clone(), value));
        }
        Ok(ParamValues::from(values))
    }

    fn param_names(&self) -> String {
        if self.params.is_empty() {
            return "no parameters".into();
        }
        self.params
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn parse_param(query: &str, spec: &str) -> Param {
    fn malformed<T>(query: &str, spec: &str) -> T {
        panic!("queries/named/{query}.sql: malformed @param {spec:?}")
    }
    let (name, rest) = spec
        .split_once(char::is_whitespace)
        .unwrap_or_else(|| malformed(query, spec));
    let rest = rest.trim_start();
    let (ty, mut rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let ty = ParamType::parse(ty).unwrap_or_else(|| malformed(query, spec));
    rest = rest.trim_start();
    let mut default = None;
    if let Some(after) = rest.strip_prefix('=') {
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('\'') {
            let end = quoted.find('\'').unwrap_or_else(|| malformed(query, spec));
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(char::is_whitespace).unwrap_or((after, ""))
        };
        default = Some(value.to_string());
        rest = tail.trim_start();
    }
    let description = rest.strip_prefix(':').unwrap_or(rest).trim().to_string();
    Param {
        name: name.to_string(),
        ty,
        default,
        description,
    }
}

/// Every named query, in a stable order.
pub fn all() -> Vec<NamedQuery> {
    FILES
        .iter()
        .map(|(name, sql)| NamedQuery::parse(name, sql))
        .collect()
}

/// The named query called `name`.
pub fn get(name: &str) -> Result<NamedQuery, NamedQueryError> {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, sql)| NamedQuery::parse(n, sql))
        .ok_or_else(|| {
            NamedQueryError::UnknownQuery(
                name.to_string(),
                FILES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            )
        })
}

/// `mcpulse query --list-named`: each query, its description and parameters.
pub struct Listing;

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for q in all() {
            writeln!(f, "{}", q.name)?;
            writeln!(f, "    {}", q.description)?;
            for p in &q.params {
                let default = match &p.default {
                    Some(d) => format!(" (default {d:?})"),
                    None => " (required)".into(),
                };
                writeln!(
                    f,
                    "    --param {}=<{}>{default}  {}",
                    p.name,
                    p.ty.name(),
                    p.description
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_a_description_and_typed_params_it_uses() {
        let all = all();
        assert_eq!(all.len(), FILES.len());
        for q in &all {
            assert!(!q.description.is_empty(), "{}", q.name);
            for p in &q.params {
                assert!(
                    q.sql.contains(&format!("${}", p.name)),
                    "{}: ${} unused",
                    q.name,
                    p.name
                );
                assert!(!p.description.is_empty(), "{}.{}", q.name, p.name);
                if let Some(d) = &p.default {
                    p.ty.value(d)
                        .unwrap_or_else(|e| panic!("{}.{}: {e}", q.name, p.name));
                }
            }
            // Every placeholder is a declared parameter.
            for (i, _) in q.sql.match_indices('$') {
                let name: String = q.sql[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    q.params.iter().any(|p| p.name == name),
                    "{}: ${name} undeclared",
                    q.name
                );
            }
        }
        let uptime = get("uptime_30d").unwrap();
        assert_eq!(
            uptime.params[0],
            Param {
                name: "server".into(),
                ty: ParamType::Text,
                default: Some(String::new()),
                description: "only this server ('' for every server)".into(),
            }
        );
        assert_eq!(uptime.params[1].default.as_deref(), Some("30d"));
    }

    #[test]
    fn binding_names_the_parameter_at_fault() {
        let q = get("uptime_30d").unwrap();
        let given = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let err = q.bind(&given(&[("sever", "x")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "uptime_30d: unknown parameter \"sever\" (it takes: server, window)"
        );
        let err = q.bind(&given(&[("window", "soon")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("uptime_30d: parameter \"window\" (interval): expected a duration"),
            "{err}"
        );
        let values = q.bind(&given(&[("server", "it's")])).unwrap();
        let ParamValues::Map(map) = values else {
            panic!("named values")
        };
        assert_eq!(map["server"].value, ScalarValue::Utf8(Some("it's".into())));
        assert_eq!(
            map["window"].value,
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(
                0,
                0,
                30 * 86_400 * 1_000_000_000
            )))
        );
        let required = NamedQuery::parse(
            "t",
            "-- @description x\n-- @param since timestamp : from\nSELECT $since",
        );
        assert_eq!(
            required.bind(&BTreeMap::new()).unwrap_err().to_string(),
            "t: missing required parameter \"since\""
        );
        assert!(matches!(
            get("nope"),
            Err(NamedQueryError::UnknownQuery(..))
        ));
    }

    #[test]
    fn listing_shows_every_query_and_param() {
        let text = Listing.to_string();
        for q in all() {
            assert!(text.contains(q.name));
        }
        assert!(
            text.contains("--param server=<text> (default \"\")"),
            "{text}"
        );
    }
}
