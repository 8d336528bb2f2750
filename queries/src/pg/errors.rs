//! SQLSTATE codes for the errors of the pgwire endpoint: a failed statement is an
//! `ErrorResponse` the client can act on, never a dropped connection.

use pgwire::error::{ErrorInfo, PgWireError};

use crate::QueryError;

/// The SQLSTATE of a query error.
pub fn sqlstate(e: &QueryError) -> &'static str {
    match e {
        QueryError::Named(_) => "22023",   // invalid_parameter_value
        QueryError::Timeout(_) => "57014", // query_canceled
        QueryError::Archive(_) => "58030", // io_error
        QueryError::NotAllowed(m) if m.contains("EXPLAIN") => "42501", // insufficient_privilege
        QueryError::NotAllowed(m) if m.contains("exactly one statement") => "42601",
        QueryError::NotAllowed(_) => "25006", // read_only_sql_transaction
        QueryError::Sql(m) => sql_error_state(m),
    }
}

fn sql_error_state(message: &str) -> &'static str {
    let lower = message.to_ascii_lowercase();
    if lower.starts_with("sql error") || lower.contains("parsererror") {
        "42601" // syntax_error
    } else if lower.contains("table") && lower.contains("not found") {
        "42P01" // undefined_table
    } else if lower.contains("no field named")
        || lower.contains("column") && lower.contains("not found")
    {
        "42703" // undefined_column
    } else if lower.contains("invalid function")
        || lower.contains("function") && lower.contains("not found")
    {
        "42883" // undefined_function
    } else if lower.contains("divide by zero") || lower.contains("division by zero") {
        "22012" // division_by_zero
    } else if lower.contains("unrecognized configuration parameter") {
        "42704" // undefined_object
    } else if lower.contains("cast")
        || lower.contains("cannot parse")
        || lower.contains("invalid") && lower.contains("value")
    {
        "22P02" // invalid_text_representation
    } else if lower.starts_with("error during planning") || lower.starts_with("schema error") {
        "42000" // syntax_error_or_access_rule_violation
    } else {
        "XX000" // internal_error
    }
}

/// The `ErrorResponse` of a query error.
pub fn to_pg(e: &QueryError) -> PgWireError {
    PgWireError::UserError(Box::new(info(e)))
}

pub fn info(e: &QueryError) -> ErrorInfo {
    ErrorInfo::new("ERROR".into(), sqlstate(e).into(), e.to_string())
}

/// An error of our own making with a given SQLSTATE.
pub fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message.into(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_sqlstates() {
        let sql = |m: &str| sqlstate(&QueryError::Sql(m.into()));
        assert_eq!(
            sql("SQL error: ParserError(\"Expected: end of statement\")"),
            "42601"
        );
        assert_eq!(
            sql("Error during planning: table 'datafusion.public.nope' not found"),
            "42P01"
        );
        assert_eq!(
            sql("Schema error: No field named nope. Valid fields are probes.time"),
            "42703"
        );
        assert_eq!(
            sql("Error during planning: Invalid function 'nope'"),
            "42883"
        );
        assert_eq!(
            sqlstate(&QueryError::NotAllowed("DDL not supported".into())),
            "25006"
        );
        assert_eq!(
            sqlstate(&QueryError::Timeout(std::time::Duration::from_secs(1))),
            "57014"
        );
    }
}
