//! Named queries as table functions: `SELECT * FROM uptime_30d('weather', '7d')` runs
//! the named query with its parameters in declared order (trailing ones, and NULLs,
//! take their defaults), in SQL over HTTP, the CLI and the PostgreSQL endpoint alike.
//! The result is a view planned in the caller's session, so it sees exactly the rows
//! the caller may see.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_datafusion_err, plan_err};
use datafusion::datasource::ViewTable;
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;

use crate::named::{self, NamedQuery};

#[derive(Debug)]
struct NamedTable {
    query: NamedQuery,
}

impl TableFunctionImpl for NamedTable {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let q = &self.query;
        if args.exprs().len() > q.params.len() {
            return plan_err!(
                "{}: takes at most {} argument(s) ({}), got {}",
                q.name,
                q.params.len(),
                q.params
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                args.exprs().len()
            );
        }
        let mut given = BTreeMap::new();
        for (param, expr) in q.params.iter().zip(args.exprs()) {
            let value = match expr {
                Expr::Literal(value, _) => value,
                other => {
                    return plan_err!(
                        "{}: argument {} ({}) must be a constant, got {other}",
                        q.name,
                        param.name,
                        param.ty.name()
                    );
                }
            };
            let text = match value {
                v if v.is_null() => continue,
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)) => s.clone(),
                other => other.to_string(),
            };
            given.insert(param.name.clone(), text);
        }
        let values = q.bind(&given).map_err(|e| plan_datafusion_err!("{e}"))?;
        let state = args
            .session()
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| plan_datafusion_err!("{}: no SQL session", q.name))?;
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(q.sql, &dialect)?;
        // Planning resolves the archive tables, which are registered in memory: the
        // future completes without waiting on anything.
        let plan = futures::executor::block_on(state.statement_to_plan(statement))?;
        let plan = plan.with_param_values(values)?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

/// Registers every named query as a table function of `ctx`.
pub fn register(ctx: &SessionContext) {
    for query in named::all() {
        let name = query.name;
        ctx.register_udtf(name, Arc::new(NamedTable { query }));
    }
}
