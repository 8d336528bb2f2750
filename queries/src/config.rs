//! Query limits and the PostgreSQL listener (`query:` in mcpulse.yaml).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Most rows one query returns; the rest is cut off (and the response says so).
    pub max_rows: usize,
    /// Longest a query may run (planning and every row).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// DataFusion partitions (parallelism) per query.
    pub target_partitions: usize,
    /// Parquet footers and per-file statistics kept between queries, in MiB (0: none).
    /// Archive objects never change under one name and size, so a footer read once is
    /// not read again; a month of closed days for 50 tenants is about 8,000 objects.
    pub footer_cache_mib: usize,
    /// Small archive objects (at most 1/64 of this and 256 KiB each: the `alerts`,
    /// `drift` and `notifications` objects of a tenant's day) kept whole in memory between
    /// queries, in MiB (0: none). A month-wide query over the small tables opens thousands
    /// of such objects; kept, they are read without a file open or a read. Oldest out first.
    pub object_cache_mib: usize,
    /// Evaluate filters while decoding Parquet (DataFusion's `pushdown_filters` and
    /// `reorder_filters`): the other columns are decoded only for rows that pass, e.g.
    /// the quarter of `signals` rows a `source = 'spans'` filter keeps. Off by default:
    /// on the month-wide named queries it was slower (bench-queries `--pushdown on`).
    pub pushdown_filters: bool,
    /// Where the PostgreSQL wire protocol endpoint listens (e.g. `127.0.0.1:5433`), in
    /// `mcpulse run` and `mcpulse serve`; off when unset (the default).
    pub pg_listen: Option<SocketAddr>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            timeout: Duration::from_secs(60),
            target_partitions: 2,
            footer_cache_mib: 256,
            object_cache_mib: 256,
            pushdown_filters: false,
            pg_listen: None,
        }
    }
}
