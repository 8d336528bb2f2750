//! A tenant's view of an archive table that presents itself as a base table.
//!
//! The view (a filter on the partition column `tenant`) does the scoping; this wrapper
//! only changes what the catalog says about it: `BASE TABLE` in
//! `information_schema.tables` (Grafana lists base tables only) and no definition, so a
//! tenant learns nothing of how its tables are built.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

#[derive(Debug)]
pub struct TenantTable {
    view: Arc<dyn TableProvider>,
}

impl TenantTable {
    pub fn new(view: Arc<dyn TableProvider>) -> Self {
        Self { view }
    }
}

#[async_trait]
impl TableProvider for TenantTable {
    fn schema(&self) -> SchemaRef {
        self.view.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_table_definition(&self) -> Option<&str> {
        None
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        self.view.get_logical_plan()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.view.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.view.scan(state, projection, filters, limit).await
    }
}
