//! Running SQL over the archive for a tenant or an operator.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::config::TableParquetOptions;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext, col, lit};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::{Stream, StreamExt};
use mcpulse_schemas::Table;
use tokio::time::Instant;

use crate::named::{self, NamedQueryError};
use crate::tenant_table::TenantTable;
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
    /// The statement is not a query (DDL, DML and `SET` are refused; `EXPLAIN` is for
    /// operators).
    #[error("{0}")]
    NotAllowed(String),
    /// A named query was asked for wrongly (unknown name or parameter, bad value).
    #[error("{0}")]
    Named(#[from] NamedQueryError),
    #[error("query timed out after {0:?}")]
    Timeout(Duration),
    /// Reading the archive failed (I/O); retrying may help.
    #[error("reading the archive failed: {0}")]
    Archive(String),
}

impl QueryError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, QueryError::Archive(_) | QueryError::Timeout(_))
    }

    pub(crate) fn from_datafusion(e: DataFusionError) -> Self {
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

/// The batches of a running query, as a stream.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch, QueryError>> + Send>>;

/// A running query: its schema, and its batches as they come, cut at the row limit and
/// failing with [`QueryError::Timeout`] past the deadline.
pub struct RowStream {
    pub schema: SchemaRef,
    /// The row limit in force.
    pub max_rows: usize,
    batches: BatchStream,
    truncated: Arc<AtomicBool>,
}

impl RowStream {
    /// The next batch (`None` at the end or at the row limit).
    pub async fn next(&mut self) -> Option<Result<RecordBatch, QueryError>> {
        self.batches.next().await
    }

    /// Whether the row limit cut rows off (known once the stream ended).
    pub fn truncated(&self) -> bool {
        self.truncated.load(Ordering::Relaxed)
    }

    /// Every row (up to the limit).
    pub async fn collect(mut self) -> Result<QueryResult, QueryError> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next().await {
            batches.push(batch?);
        }
        Ok(QueryResult {
            truncated: self.truncated(),
            schema: self.schema,
            batches,
        })
    }

    /// The stream of batches alone (for bodies that own it).
    pub fn into_stream(self) -> (SchemaRef, Arc<AtomicBool>, BatchStream) {
        (self.schema, self.truncated, self.batches)
    }
}

/// What to run: SQL with optional parameter values, or a named query.
#[derive(Clone, Debug)]
pub enum Request {
    Sql {
        sql: String,
        params: Option<ParamValues>,
    },
    Named {
        name: String,
        params: std::collections::BTreeMap<String, String>,
    },
}

impl Request {
    pub fn sql(sql: impl Into<String>) -> Self {
        Request::Sql {
            sql: sql.into(),
            params: None,
        }
    }
}

/// Whether scans of `table` prune inside its objects (row groups, pages and whole objects
/// by their statistics). Not for the small tables (`drift`, `alerts`, `notifications`):
/// their objects hold tens of rows each (a tenant's day), so building and evaluating a
/// pruning predicate per object costs more than reading the rows, and a month-wide query
/// opens thousands. Their folders are still pruned by tenant and time; the filters run on
/// the rows.
fn prunes_objects(table: Table) -> bool {
    matches!(table, Table::Spans | Table::Probes | Table::Signals)
}

/// Adds to every session of an engine (e.g. the PostgreSQL compatibility functions and
/// `pg_catalog` of the pgwire endpoint).
pub type SessionExtension =
    Arc<dyn Fn(&SessionContext, &Scope) -> Result<(), DataFusionError> + Send + Sync>;

/// Runs SQL over the archive.
#[derive(Clone)]
pub struct QueryEngine {
    catalog: ArchiveCatalog,
    config: QueryConfig,
    extension: Option<SessionExtension>,
}

impl QueryEngine {
    pub fn new(catalog: ArchiveCatalog, config: QueryConfig) -> Self {
        Self {
            catalog,
            config,
            extension: None,
        }
    }

    /// The same engine, whose sessions also get `extension`.
    pub fn with_extension(mut self, extension: SessionExtension) -> Self {
        self.extension = Some(extension);
        self
    }

    /// A query's runtime: its own object store registry (each query lists the archive
    /// through its own [`crate::visible_store::VisibleStore`]) and no listing cache (a
    /// listing must be the archive's now), with the footer caches the catalog's queries
    /// share.
    fn runtime_env(&self) -> Result<Arc<RuntimeEnv>, QueryError> {
        let limit = self.config.footer_cache_mib.saturating_mul(1 << 20);
        let mut caches = CacheManagerConfig {
            list_files_cache_limit: 0,
            ..CacheManagerConfig::default()
        };
        if limit > 0 {
            let shared = self.catalog.footer_caches(limit);
            caches.file_metadata_cache = Some(shared.metadata);
            caches.metadata_cache_limit = limit;
            caches.file_statistics_cache = Some(shared.statistics);
            caches.file_statistics_cache_limit = limit / 4;
        } else {
            caches.metadata_cache_limit = 0;
            caches.file_statistics_cache_limit = 0;
        }
        RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .build_arc()
            .map_err(QueryError::from_datafusion)
    }

    /// How `table`'s Parquet objects are read: filter pushdown as configured, no bloom
    /// filters (the archive writes none, and looking for them per row group costs more
    /// than the rest of a small object's pruning), and no page index for the small tables
    /// (an object of tens of rows has one page per column).
    fn parquet_options(&self, table: Table) -> TableParquetOptions {
        let mut options = TableParquetOptions::default();
        let parquet = &mut options.global;
        parquet.pushdown_filters = self.config.pushdown_filters;
        parquet.reorder_filters = self.config.pushdown_filters;
        parquet.bloom_filter_on_read = false;
        parquet.enable_page_index = prunes_objects(table);
        options
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// A session whose tables show only what `scope` may see. For a tenant, each table is
    /// a view filtering the partition column `tenant`, so no statement can reach another
    /// tenant's folders; the unfiltered tables are never registered. Either way the
    /// tables present themselves as base tables with no definition, so catalog queries
    /// (`information_schema.tables`, what Grafana lists) show the same six tables to
    /// everyone and nothing of how they are built.
    pub fn context(&self, scope: &Scope) -> Result<SessionContext, QueryError> {
        let config = SessionConfig::new()
            .with_target_partitions(self.config.target_partitions.max(1))
            .with_information_schema(true);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime_env()?)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        crate::hdr::register(&ctx);
        crate::named_table::register(&ctx);
        self.catalog.register_store(
            &ctx,
            self.catalog
                .object_cache(self.config.object_cache_mib.saturating_mul(1 << 20)),
        );
        let statistics = ctx.runtime_env().cache_manager.get_file_statistic_cache();
        for table in Table::ALL {
            let listing = self
                .catalog
                .listing_table(table, self.parquet_options(table), statistics.clone())
                .map_err(QueryError::from_datafusion)?;
            let listing = Arc::new(
                TimePrunedTable::new(listing, table.time_column())
                    .with_object_pruning(prunes_objects(table)),
            );
            let provider = match scope {
                Scope::All => listing as Arc<dyn datafusion::catalog::TableProvider>,
                Scope::Tenant(tenant) => {
                    let view = ctx
                        .read_table(listing)
                        .and_then(|df| df.filter(col("tenant").eq(lit(tenant.as_str()))))
                        .map_err(QueryError::from_datafusion)?
                        .into_view();
                    Arc::new(TenantTable::new(view))
                }
            };
            ctx.register_table(table.name(), provider)
                .map_err(QueryError::from_datafusion)?;
        }
        if let Some(extension) = &self.extension {
            extension(&ctx, scope).map_err(QueryError::from_datafusion)?;
        }
        Ok(ctx)
    }

    /// Plans one read-only statement in `ctx` (without running it). Exactly one
    /// statement; DDL, DML and `SET` are refused, and `EXPLAIN` unless `scope` is an
    /// operator's (a plan names archive paths).
    pub async fn plan(
        &self,
        ctx: &SessionContext,
        scope: &Scope,
        sql: &str,
    ) -> Result<DataFrame, QueryError> {
        let statements = DFParser::parse_sql(sql).map_err(QueryError::from_datafusion)?;
        if statements.len() != 1 {
            return Err(QueryError::NotAllowed(format!(
                "expected exactly one statement, got {}",
                statements.len()
            )));
        }
        let is_explain = match statements.front() {
            Some(DfStatement::Explain(_)) => true,
            Some(DfStatement::Statement(statement)) => matches!(
                **statement,
                SqlStatement::Explain { .. } | SqlStatement::ExplainTable { .. }
            ),
            _ => false,
        };
        if is_explain && matches!(scope, Scope::Tenant(_)) {
            return Err(QueryError::NotAllowed(
                "EXPLAIN is available to operators only".into(),
            ));
        }
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        ctx.sql_with_options(sql, options)
            .await
            .map_err(QueryError::from_datafusion)
    }

    /// Runs one read-only statement, returning at most `max_rows` rows within the timeout.
    pub async fn execute(&self, scope: &Scope, sql: &str) -> Result<QueryResult, QueryError> {
        self.stream(scope, &Request::sql(sql), None)
            .await?
            .collect()
            .await
    }

    /// Starts a query: planned and started within the timeout, its rows then streamed
    /// until `max_rows` (the smaller of `row_limit` and `query.max_rows`) or the deadline.
    pub async fn stream(
        &self,
        scope: &Scope,
        request: &Request,
        row_limit: Option<usize>,
    ) -> Result<RowStream, QueryError> {
        let deadline = Instant::now() + self.config.timeout;
        let timeout = self.config.timeout;
        let (sql, params) = match request {
            Request::Sql { sql, params } => (sql.clone(), params.clone()),
            Request::Named { name, params } => {
                let query = named::get(name)?;
                let values = query.bind(params)?;
                (query.sql.to_string(), Some(values))
            }
        };
        let ctx = self.context(scope)?;
        let start = async {
            let mut df = self.plan(&ctx, scope, &sql).await?;
            if let Some(params) = params {
                df = df
                    .with_param_values(params)
                    .map_err(QueryError::from_datafusion)?;
            }
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let stream = df
                .execute_stream()
                .await
                .map_err(QueryError::from_datafusion)?;
            Ok::<_, QueryError>((schema, stream))
        };
        let (schema, stream) = tokio::time::timeout_at(deadline, start)
            .await
            .map_err(|_| QueryError::Timeout(timeout))??;
        let max_rows = row_limit
            .unwrap_or(usize::MAX)
            .min(self.config.max_rows)
            .max(1);
        let truncated = Arc::new(AtomicBool::new(false));
        let flag = truncated.clone();
        let batches =
            futures::stream::unfold((stream, 0usize, false), move |(mut stream, rows, done)| {
                let flag = flag.clone();
                async move {
                    if done {
                        return None;
                    }
                    match tokio::time::timeout_at(deadline, stream.next()).await {
                        Err(_) => Some((Err(QueryError::Timeout(timeout)), (stream, rows, true))),
                        Ok(None) => None,
                        Ok(Some(Err(e))) => {
                            Some((Err(QueryError::from_datafusion(e)), (stream, rows, true)))
                        }
                        Ok(Some(Ok(batch))) => {
                            if rows + batch.num_rows() > max_rows {
                                flag.store(true, Ordering::Relaxed);
                                let batch = batch.slice(0, max_rows - rows);
                                Some((Ok(batch), (stream, max_rows, true)))
                            } else {
                                let rows = rows + batch.num_rows();
                                Some((Ok(batch), (stream, rows, false)))
                            }
                        }
                    }
                }
            });
        Ok(RowStream {
            schema,
            max_rows,
            batches: Box::pin(batches),
            truncated,
        })
    }
}
