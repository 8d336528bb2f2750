//! Running SQL over the archive for a tenant or an operator.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext, col, lit};
use futures::StreamExt;
use mcpulse_schemas::Table;

use crate::time_pruning::TimePrunedTable;
use crate::{ArchiveCatalog, QueryConfig};

/// Whose rows a query may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only this tenant's rows, whatever the SQL.
    Tenant(String),
    /// Every tenant's rows (operators, and the local CLI reading the archive directly).
    All,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL is invalid or refers to something that does not exist.
    #[error("{0}")]
    Sql(String),
    /// The statement is not a query (DDL, DML and `SET` are refused).
    #[error("{0}")]
    NotAllowed(String),
    #[error("query timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// Reading the archive failed (I/O); retrying may help.
    #[error("reading the archive failed: {0}")]
    Archive(String),
}

impl QueryError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, QueryError::Archive(_) | QueryError::Timeout(_))
    }

    fn from_datafusion(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => {
                QueryError::Archive(e.to_string())
            }
            DataFusionError::Plan(_)
                if e.to_string().contains("not supported") || e.to_string().contains("Only") =>
            {
                QueryError::NotAllowed(e.to_string())
            }
            _ => QueryError::Sql(e.strip_backtrace()),
        }
    }
}

/// The rows of a query.
#[derive(Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Whether rows beyond `max_rows` were cut off.
    pub truncated: bool,
}

impl QueryResult {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Runs SQL over the archive.
#[derive(Clone)]
pub struct QueryEngine {
    catalog: ArchiveCatalog,
    config: QueryConfig,
}

impl QueryEngine {
    pub fn new(catalog: ArchiveCatalog, config: QueryConfig) -> Self {
        Self { catalog, config }
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// A session whose tables show only what `scope` may see. For a tenant, each table is
    /// a view filtering the partition column `tenant`, so no statement can reach another
    /// tenant's folders; the unfiltered tables are never registered.
    pub fn context(&self, scope: &Scope) -> Result<SessionContext, QueryError> {
        let config = SessionConfig::new()
            .with_target_partitions(self.config.target_partitions.max(1))
            .with_information_schema(true);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        crate::hdr::register(&ctx);
        self.catalog.register_store(&ctx);
        for table in Table::ALL {
            let listing = self
                .catalog
                .listing_table(table)
                .map_err(QueryError::from_datafusion)?;
            let listing = Arc::new(TimePrunedTable::new(listing, table.time_column()));
            let provider = match scope {
                Scope::All => listing as Arc<dyn datafusion::catalog::TableProvider>,
                Scope::Tenant(tenant) => ctx
                    .read_table(listing)
                    .and_then(|df| df.filter(col("tenant").eq(lit(tenant.as_str()))))
                    .map_err(QueryError::from_datafusion)?
                    .into_view(),
            };
            ctx.register_table(table.name(), provider)
                .map_err(QueryError::from_datafusion)?;
        }
        Ok(ctx)
    }

    /// Runs one read-only statement, returning at most `max_rows` rows within the timeout.
    pub async fn execute(&self, scope: &Scope, sql: &str) -> Result<QueryResult, QueryError> {
        let ctx = self.context(scope)?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let max_rows = self.config.max_rows;
        let run = async {
            let df = ctx
                .sql_with_options(sql, options)
                .await
                .map_err(QueryError::from_datafusion)?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let mut stream = df
                .execute_stream()
                .await
                .map_err(QueryError::from_datafusion)?;
            let mut batches = Vec::new();
            let mut rows = 0;
            let mut truncated = false;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(QueryError::from_datafusion)?;
                if rows + batch.num_rows() > max_rows {
                    batches.push(batch.slice(0, max_rows - rows));
                    truncated = true;
                    break;
                }
                rows += batch.num_rows();
                batches.push(batch);
            }
            Ok(QueryResult {
                schema,
                batches,
                truncated,
            })
        };
        tokio::time::timeout(self.config.timeout, run)
            .await
            .map_err(|_| QueryError::Timeout(self.config.timeout))?
    }
}
