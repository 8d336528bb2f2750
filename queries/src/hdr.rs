//! SQL functions over the serialized latency histograms of the `signals` table (see
//! [`mcpulse_schemas::latency_hist`]):
//!
//! | function | returns |
//! |---|---|
//! | `hdr_merge(hist)` (aggregate) | the merge of every non-NULL histogram; NULL when there is none |
//! | `hdr_quantile(hist, q)` | the value at quantile `q` in `[0, 1]`, in milliseconds |
//! | `hdr_count(hist)` | how many values the histogram holds (UInt64) |
//! | `hdr_max(hist)` | the largest value, in milliseconds |
//!
//! ```sql
//! -- p99 per server over every selected minute: merged, never averaged.
//! SELECT server, hdr_quantile(hdr_merge(latency_hist), 0.99) AS p99_ms
//! FROM signals GROUP BY server
//! ```
//!
//! Histograms may be `Binary`, `LargeBinary` or `BinaryView`. The scalar functions return
//! NULL for a NULL or empty histogram. Bytes that are not a valid histogram are an
//! execution error naming the function, e.g. `hdr_merge: invalid histogram: …`.

use std::iter;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_datafusion_err, exec_err, plan_err};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use hdrhistogram::Histogram;
use mcpulse_schemas::latency_hist;

/// Registers `hdr_merge`, `hdr_quantile`, `hdr_count` and `hdr_max` with `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udaf(hdr_merge());
    ctx.register_udf(hdr_quantile());
    ctx.register_udf(hdr_count());
    ctx.register_udf(hdr_max());
}

/// The `hdr_merge(hist) -> Binary` aggregate.
pub fn hdr_merge() -> AggregateUDF {
    AggregateUDF::from(HdrMerge::new())
}

/// The `hdr_quantile(hist, q) -> Float64` scalar function.
pub fn hdr_quantile() -> ScalarUDF {
    ScalarUDF::from(HdrScalar::new(HdrScalarKind::Quantile))
}

/// The `hdr_count(hist) -> UInt64` scalar function.
pub fn hdr_count() -> ScalarUDF {
    ScalarUDF::from(HdrScalar::new(HdrScalarKind::Count))
}

/// The `hdr_max(hist) -> Float64` scalar function.
pub fn hdr_max() -> ScalarUDF {
    ScalarUDF::from(HdrScalar::new(HdrScalarKind::Max))
}

/// Coerces a histogram argument: the binary types stay as they are, NULL becomes Binary.
fn coerce_histogram(func: &str, t: &DataType) -> Result<DataType> {
    match t {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Ok(t.clone()),
        DataType::Null => Ok(DataType::Binary),
        other => plan_err!("{func} expects a binary latency histogram, got {other}"),
    }
}

/// The values of a histogram argument, whichever binary type it has.
fn binary_values<'a>(
    func: &str,
    array: &'a ArrayRef,
) -> Result<Box<dyn Iterator<Item = Option<&'a [u8]>> + 'a>> {
    Ok(match array.data_type() {
        DataType::Binary => Box::new(array.as_binary::<i32>().iter()),
        DataType::LargeBinary => Box::new(array.as_binary::<i64>().iter()),
        DataType::BinaryView => Box::new(array.as_binary_view().iter()),
        DataType::Null => Box::new(iter::repeat_n(None, array.len())),
        other => return exec_err!("{func}: expected a binary histogram, got {other}"),
    })
}

fn decode(func: &str, bytes: &[u8]) -> Result<Histogram<u64>> {
    latency_hist::decode(bytes).map_err(|e| exec_datafusion_err!("{func}: invalid histogram: {e}"))
}

// ---------------------------------------------------------------------------------------
// hdr_merge
// ---------------------------------------------------------------------------------------

/// Merges serialized histograms. The partial-aggregation state is the serialized merge
/// (Binary), so multi-partition plans merge partial results like any other input.
#[derive(Debug, PartialEq, Eq, Hash)]
struct HdrMerge {
    signature: Signature,
}

impl HdrMerge {
    const NAME: &'static str = "hdr_merge";

    fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for HdrMerge {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [t] => Ok(vec![coerce_histogram(Self::NAME, t)?]),
            _ => plan_err!(
                "{} takes one argument (a histogram), got {}",
                Self::NAME,
                arg_types.len()
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::<HdrMergeAccumulator>::default())
    }
}

/// The merge so far; `None` until a non-NULL histogram arrives.
#[derive(Debug, Default)]
struct HdrMergeAccumulator {
    merged: Option<Histogram<u64>>,
}

impl HdrMergeAccumulator {
    fn merge_array(&mut self, array: &ArrayRef) -> Result<()> {
        // Each histogram is added straight from its bytes (no histogram built per row).
        for bytes in binary_values(HdrMerge::NAME, array)?.flatten() {
            let merged = self.merged.get_or_insert_with(latency_hist::new_histogram);
            latency_hist::merge_encoded(merged, bytes)
                .map_err(|e| exec_datafusion_err!("{}: invalid histogram: {e}", HdrMerge::NAME))?;
        }
        Ok(())
    }
}

impl Accumulator for HdrMergeAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match values {
            [array] => self.merge_array(array),
            _ => exec_err!("{}: expected one argument", HdrMerge::NAME),
        }
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        match states {
            [array] => self.merge_array(array),
            _ => exec_err!("{}: expected one state column", HdrMerge::NAME),
        }
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let bytes = self
            .merged
            .as_ref()
            .map(latency_hist::try_encode)
            .transpose()
            .map_err(|e| exec_datafusion_err!("{}: {e}", HdrMerge::NAME))?;
        Ok(ScalarValue::Binary(bytes))
    }

    fn size(&self) -> usize {
        size_of_val(self)
            + self.merged.as_ref().map_or(0, |h| {
                size_of::<Histogram<u64>>() + h.distinct_values() * size_of::<u64>()
            })
    }
}

// ---------------------------------------------------------------------------------------
// hdr_quantile, hdr_count, hdr_max
// ---------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum HdrScalarKind {
    Quantile,
    Count,
    Max,
}

/// The scalar functions reading one histogram per row.
#[derive(Debug, PartialEq, Eq, Hash)]
struct HdrScalar {
    kind: HdrScalarKind,
    signature: Signature,
}

impl HdrScalar {
    fn new(kind: HdrScalarKind) -> Self {
        Self {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for HdrScalar {
    fn name(&self) -> &str {
        match self.kind {
            HdrScalarKind::Quantile => "hdr_quantile",
            HdrScalarKind::Count => "hdr_count",
            HdrScalarKind::Max => "hdr_max",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        match (self.kind, arg_types) {
            (HdrScalarKind::Quantile, [h, q]) => {
                if !(q.is_numeric() || q.is_null()) {
                    return plan_err!("{name} expects a numeric quantile, got {q}");
                }
                Ok(vec![coerce_histogram(name, h)?, DataType::Float64])
            }
            (HdrScalarKind::Quantile, _) => plan_err!(
                "{name} takes two arguments (a histogram and a quantile), got {}",
                arg_types.len()
            ),
            (_, [h]) => Ok(vec![coerce_histogram(name, h)?]),
            (_, _) => plan_err!(
                "{name} takes one argument (a histogram), got {}",
                arg_types.len()
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            HdrScalarKind::Count => DataType::UInt64,
            HdrScalarKind::Quantile | HdrScalarKind::Max => DataType::Float64,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.name();
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(hists) = arrays.first() else {
            return exec_err!("{name}: missing histogram argument");
        };
        let qs = match (self.kind, arrays.get(1)) {
            (HdrScalarKind::Quantile, Some(q)) => match q.data_type() {
                DataType::Float64 => Some(q.as_primitive::<Float64Type>()),
                other => return exec_err!("{name}: expected a Float64 quantile, got {other}"),
            },
            (HdrScalarKind::Quantile, None) => {
                return exec_err!("{name}: missing quantile argument");
            }
            _ => None,
        };

        // One of the two is filled, depending on the return type.
        let mut floats: Vec<Option<f64>> = Vec::new();
        let mut counts: Vec<Option<u64>> = Vec::new();
        for (row, bytes) in binary_values(name, hists)?.enumerate() {
            let q = match qs {
                Some(qs) if qs.is_null(row) => {
                    floats.push(None);
                    continue;
                }
                Some(qs) => {
                    let q = qs.value(row);
                    if !(0.0..=1.0).contains(&q) {
                        return exec_err!("{name}: quantile must be between 0 and 1, got {q}");
                    }
                    q
                }
                None => 0.0,
            };
            let h = bytes.map(|bytes| decode(name, bytes)).transpose()?;
            match self.kind {
                HdrScalarKind::Quantile => {
                    floats.push(h.and_then(|h| latency_hist::quantile_ms(&h, q)))
                }
                HdrScalarKind::Max => floats.push(h.and_then(|h| latency_hist::max_ms(&h))),
                HdrScalarKind::Count => counts.push(h.map(|h| h.len())),
            }
        }
        let result: ArrayRef = match self.kind {
            HdrScalarKind::Count => Arc::new(UInt64Array::from(counts)),
            HdrScalarKind::Quantile | HdrScalarKind::Max => Arc::new(Float64Array::from(floats)),
        };
        if all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &result, 0,
            )?))
        } else {
            Ok(ColumnarValue::Array(result))
        }
    }
}
