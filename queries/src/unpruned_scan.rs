//! A scan that keeps the query's filters above it.
//!
//! DataFusion pushes every filter into a Parquet scan as a pruning predicate, and the scan
//! builds and evaluates it for each object it opens (against the object's statistics, its
//! row groups and pages). For the small tables, whose objects hold tens of rows each (a
//! tenant's day of alerts), that costs more than reading the rows: a month-wide query
//! opens thousands of objects. Wrapped in [`UnprunedScan`], such a scan receives no
//! filters; they run on the rows in the `FilterExec` above. Folder pruning (tenant, date,
//! hour) happens before, at listing, and is unaffected.

use std::fmt;
use std::sync::Arc;

use datafusion::common::Statistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

/// Passes its input through; filters pushed down stop here (see the module docs).
#[derive(Debug)]
pub struct UnprunedScan {
    input: Arc<dyn ExecutionPlan>,
}

impl UnprunedScan {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        Self { input }
    }
}

impl DisplayAs for UnprunedScan {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "UnprunedScan")
    }
}

impl ExecutionPlan for UnprunedScan {
    fn name(&self) -> &str {
        "UnprunedScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(input) if children.is_empty() => Ok(Arc::new(Self::new(input))),
            _ => Err(datafusion::error::DataFusionError::Internal(
                "UnprunedScan has exactly one child".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    /// The input's statistics, unchanged (the rows pass through).
    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(input_stats[0].clone())
    }
}
