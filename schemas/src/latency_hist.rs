//! The latency histograms of the `signals` table: one [HdrHistogram] per row in the
//! `latency_hist` Binary column, so percentiles over any range of rows are computed by
//! merging histograms (lossless) rather than by averaging percentiles (wrong).
//!
//! This module is the one codec every writer (the signals operator) and reader (the SQL
//! functions `hdr_merge`, `hdr_quantile`, …) shares:
//!
//! * values are **microseconds**, tracked from [`LOWEST`] to [`HIGHEST`] (one hour) with
//!   [`SIGFIG`] significant digits (a relative error of at most 1/128 < 1%);
//! * the bytes are the HdrHistogram **V2** serialization format, uncompressed (see
//!   [`encode`]);
//! * decoding never panics and refuses oversized or inconsistent input (see [`decode`]).
//!
//! [HdrHistogram]: https://hdrhistogram.github.io/HdrHistogram/

use hdrhistogram::serialization::{
    DeserializeError, Deserializer, Serializer, V2SerializeError, V2Serializer,
};
use hdrhistogram::{AdditionError, Histogram};

/// Lowest discernible value, in microseconds.
pub const LOWEST: u64 = 1;
/// The range a histogram is expected to cover, in microseconds (one hour). Histograms
/// from [`new_histogram`] start much smaller and auto-resize up to what they record, so
/// a window of fast calls stays a few kilobytes.
pub const HIGHEST: u64 = 3_600_000_000;
/// Highest value a fresh histogram tracks before its first resize (10 ms).
pub const INITIAL_HIGHEST: u64 = 10_000;
/// Significant decimal digits kept for every value: two, a relative error of at most
/// 1/128 < 1%. (Three would cost 8× the memory per open window — about 90 KiB for
/// latencies up to a second — for precision no latency alert needs.)
pub const SIGFIG: u8 = 2;

/// Longest encoding [`decode`] accepts, in bytes (1 MiB). A minute of latencies
/// typically encodes in well under a kilobyte; even one with every bucket of
/// [`LOWEST`]..=[`HIGHEST`] filled takes at most about 210 KiB.
pub const MAX_ENCODED_LEN: usize = 1 << 20;

/// Largest total count a histogram may hold: the V2 format stores counts as zig-zag
/// encoded `i64`, and keeping totals below `u64::MAX` keeps quantile arithmetic exact.
pub const MAX_TOTAL_COUNT: u64 = i64::MAX as u64;

/// First 4 bytes of an uncompressed V2 encoding.
const V2_COOKIE: u32 = 0x1c84_9313;
/// First 4 bytes of a DEFLATE-compressed V2 encoding (refused, see [`decode`]).
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
/// Cookie, payload length, normalizing offset, significant digits, lowest, highest and
/// the integer-to-double ratio.
const V2_HEADER_LEN: usize = 40;

/// Why a latency histogram could not be decoded, merged or encoded.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    /// The input is longer than [`MAX_ENCODED_LEN`].
    #[error("{len} bytes is more than the {max} bytes a latency histogram may take")]
    TooLarge { len: usize, max: usize },
    /// The input is shorter than the V2 header.
    #[error("{0} bytes is too short for an HdrHistogram V2 encoding (the header alone is 40)")]
    Truncated(usize),
    /// The input does not start with the V2 cookie.
    #[error("not an HdrHistogram V2 encoding (cookie {0:#010x})")]
    BadCookie(u32),
    /// The input is a compressed V2 encoding, which is not accepted.
    #[error("compressed HdrHistogram V2 encodings are not accepted; store uncompressed V2")]
    Compressed,
    /// The payload length in the header disagrees with the input length.
    #[error("the header declares {declared} payload bytes but {actual} follow it")]
    LengthMismatch { declared: u64, actual: usize },
    /// The histogram keeps more significant digits than [`SIGFIG`] (refused because such
    /// histograms can take tens of megabytes of memory once decoded).
    #[error("{0} significant digits is more than the {max} latency histograms use", max = SIGFIG)]
    TooPrecise(u32),
    /// The counts are inconsistent (an impossible run of zeros, a truncated number, or a
    /// total count above [`MAX_TOTAL_COUNT`]).
    #[error("corrupt counts: {0}")]
    CorruptCounts(&'static str),
    /// The HdrHistogram deserializer refused the input.
    #[error("{0}")]
    Deserialize(#[from] DeserializeError),
    /// Adding two histograms failed.
    #[error("cannot merge histograms: {0}")]
    Merge(#[from] AdditionError),
    /// Serializing failed (only possible for counts above `i64::MAX`).
    #[error("cannot encode histogram: {0}")]
    Encode(#[from] V2SerializeError),
}

/// An empty latency histogram: microseconds from [`LOWEST`], [`SIGFIG`] significant
/// digits, sized for [`INITIAL_HIGHEST`] and growing as larger values arrive.
///
/// Auto-resize is enabled, so recording a value above [`HIGHEST`] grows the histogram
/// (and its encoding) instead of failing; such outliers are rare and worth keeping.
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(LOWEST, INITIAL_HIGHEST, SIGFIG)
        .expect("LOWEST, HIGHEST and SIGFIG are valid histogram bounds");
    h.auto(true);
    h
}

/// Records a latency given in milliseconds, rounded to the nearest microsecond.
///
/// Never fails or panics: NaN, negative and sub-microsecond values are recorded as
/// [`LOWEST`], and values too large even for a resized histogram (beyond ~146 years) are
/// clamped to the histogram's current highest trackable value.
pub fn record_ms(h: &mut Histogram<u64>, ms: f64) {
    let us = (ms * 1000.0).round();
    // `as` saturates at u64::MAX for large values; NaN fails the comparison.
    let us = if us >= LOWEST as f64 {
        us as u64
    } else {
        LOWEST
    };
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

/// Encodes `h` in the HdrHistogram V2 format, uncompressed.
///
/// Uncompressed because the column lives in zstd-compressed Parquet: compressing each
/// value again would cost CPU on every write and read and save little. The V2 format
/// already run-length encodes empty buckets, so a typical minute takes tens to hundreds
/// of bytes.
///
/// # Panics
///
/// If a single count exceeds `i64::MAX`, which takes 2^63 recorded values; histograms
/// from [`decode`] and [`merge_into`] never reach it. Use [`try_encode`] to get an error
/// instead.
pub fn encode(h: &Histogram<u64>) -> Vec<u8> {
    try_encode(h).expect("histogram counts fit the V2 format")
}

/// Like [`encode`], returning an error instead of panicking.
pub fn try_encode(h: &Histogram<u64>) -> Result<Vec<u8>, HistogramError> {
    let mut out = Vec::new();
    V2Serializer::new().serialize(h, &mut out)?;
    Ok(out)
}

/// Decodes an uncompressed HdrHistogram V2 encoding (as written by [`encode`]).
///
/// Never panics. Refuses input longer than [`MAX_ENCODED_LEN`], a payload length that
/// disagrees with the input (truncated input or trailing bytes), compressed V2 (which
/// could inflate without bound), more than [`SIGFIG`] significant digits and counts
/// totalling more than [`MAX_TOTAL_COUNT`]. The result auto-resizes, like
/// [`new_histogram`], so merging larger values into it works.
pub fn decode(bytes: &[u8]) -> Result<Histogram<u64>, HistogramError> {
    if bytes.len() > MAX_ENCODED_LEN {
        return Err(HistogramError::TooLarge {
            len: bytes.len(),
            max: MAX_ENCODED_LEN,
        });
    }
    if bytes.len() < V2_HEADER_LEN {
        return Err(HistogramError::Truncated(bytes.len()));
    }
    let be_u32 =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    match be_u32(0) {
        V2_COOKIE => {}
        V2_COMPRESSED_COOKIE => return Err(HistogramError::Compressed),
        other => return Err(HistogramError::BadCookie(other)),
    }
    let payload = &bytes[V2_HEADER_LEN..];
    let declared = be_u32(4);
    if declared as usize != payload.len() {
        return Err(HistogramError::LengthMismatch {
            declared: declared.into(),
            actual: payload.len(),
        });
    }
    let sigfig = be_u32(12);
    if sigfig > u32::from(SIGFIG) {
        return Err(HistogramError::TooPrecise(sigfig));
    }
    check_counts(payload)?;
    let mut h: Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..])?;
    h.auto(true);
    Ok(h)
}

/// Adds the values of an encoding to `into`, accepting and refusing exactly what
/// [`decode`] does, without building a histogram of it: the counts are read straight
/// from the payload and only the non-empty buckets are recorded. This is what merging
/// many stored histograms (`hdr_merge` over a month of windows) costs per row: a few
/// dozen numbers read, instead of a counts array allocated, zeroed and scanned.
///
/// Encodings of other bounds than this module's (which no writer of the archive makes)
/// go through [`decode`] and [`merge_into`]. On an error `into` may hold part of the
/// values: callers discard it.
pub fn merge_encoded(into: &mut Histogram<u64>, bytes: &[u8]) -> Result<(), HistogramError> {
    if bytes.len() > MAX_ENCODED_LEN {
        return Err(HistogramError::TooLarge {
            len: bytes.len(),
            max: MAX_ENCODED_LEN,
        });
    }
    if bytes.len() < V2_HEADER_LEN {
        return Err(HistogramError::Truncated(bytes.len()));
    }
    let be_u32 =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let be_u64 = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(b)
    };
    match be_u32(0) {
        V2_COOKIE => {}
        V2_COMPRESSED_COOKIE => return Err(HistogramError::Compressed),
        other => return Err(HistogramError::BadCookie(other)),
    }
    let payload = &bytes[V2_HEADER_LEN..];
    let declared = be_u32(4);
    if declared as usize != payload.len() {
        return Err(HistogramError::LengthMismatch {
            declared: declared.into(),
            actual: payload.len(),
        });
    }
    let sigfig = be_u32(12);
    if sigfig > u32::from(SIGFIG) {
        return Err(HistogramError::TooPrecise(sigfig));
    }
    let ours = be_u32(8) == 0
        && sigfig == u32::from(SIGFIG)
        && be_u64(16) == LOWEST
        && f64::from_bits(be_u64(32)) == 1.0;
    if !ours {
        return merge_into(into, &decode(bytes)?);
    }
    // This module's layout: 256 sub-buckets (half: 2^7), unit magnitude 0.
    const HALF_MAGNITUDE: u32 = 7;
    const HALF: u64 = 1 << HALF_MAGNITUDE;
    let value_of = |index: u64| -> u64 {
        let bucket = (index >> HALF_MAGNITUDE) as i64 - 1;
        let sub = (index & (HALF - 1)) + HALF;
        if bucket < 0 {
            sub - HALF
        } else {
            sub << bucket
        }
    };
    walk_counts(payload, |index, count| {
        // Buckets past 64 doublings cannot be recorded by any histogram.
        if index >= (64 - u64::from(HALF_MAGNITUDE)) << HALF_MAGNITUDE {
            return Err(HistogramError::CorruptCounts("bucket out of range"));
        }
        into.record_n(value_of(index), count)
            .map_err(|_| HistogramError::CorruptCounts("value out of range"))
    })?;
    if into.len() > MAX_TOTAL_COUNT {
        return Err(HistogramError::CorruptCounts("total count too large"));
    }
    Ok(())
}

/// Checks the V2 counts payload for what the deserializer would otherwise trust (see
/// [`walk_counts`]).
fn check_counts(payload: &[u8]) -> Result<(), HistogramError> {
    walk_counts(payload, |_, _| Ok(()))
}

/// Walks the V2 counts payload (zig-zag LEB128 numbers of at most 9 bytes: counts, or
/// negated runs of empty buckets), calling `on_count(bucket index, count)` for each
/// non-zero count, and checking what the deserializer would otherwise trust: no run of
/// `i64::MIN` zeros (its negation overflows) and a total that fits [`MAX_TOTAL_COUNT`]
/// (so sums over the counts cannot overflow later).
fn walk_counts(
    mut payload: &[u8],
    mut on_count: impl FnMut(u64, u64) -> Result<(), HistogramError>,
) -> Result<(), HistogramError> {
    let mut index: u64 = 0;
    let mut total: u64 = 0;
    while !payload.is_empty() {
        let mut value: u64 = 0;
        let mut used = 0;
        loop {
            let Some(&b) = payload.get(used) else {
                return Err(HistogramError::CorruptCounts("truncated number"));
            };
            if used == 8 {
                // The ninth byte contributes all 8 bits.
                value |= u64::from(b) << 56;
                used += 1;
                break;
            }
            value |= u64::from(b & 0x7f) << (7 * used);
            used += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        payload = &payload[used..];
        let n = ((value >> 1) as i64) ^ -((value & 1) as i64);
        if n == i64::MIN {
            return Err(HistogramError::CorruptCounts(
                "impossible run of empty buckets",
            ));
        }
        if n < 0 {
            index = index.saturating_add(n.unsigned_abs());
            continue;
        }
        if n > 0 {
            total = total
                .checked_add(n as u64)
                .filter(|t| *t <= MAX_TOTAL_COUNT)
                .ok_or(HistogramError::CorruptCounts("total count too large"))?;
            on_count(index, n as u64)?;
        }
        index += 1;
    }
    Ok(())
}

/// Adds every value of `from` to `into` (lossless when both come from this module).
///
/// Fails, leaving `into` with a total above [`MAX_TOTAL_COUNT`], only if the merged total
/// would exceed it; callers should then discard `into`.
pub fn merge_into(into: &mut Histogram<u64>, from: &Histogram<u64>) -> Result<(), HistogramError> {
    into.add(from)?;
    if into.len() > MAX_TOTAL_COUNT {
        return Err(HistogramError::CorruptCounts("total count too large"));
    }
    Ok(())
}

/// The value at quantile `q` (clamped to `0.0..=1.0`) in milliseconds, or `None` for an
/// empty histogram, a NaN `q` or a total count above [`MAX_TOTAL_COUNT`] (which neither
/// [`decode`] nor [`merge_into`] produce).
///
/// The value is the highest value equivalent to the recorded one at that rank, i.e. at
/// most 1/128 above it.
pub fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    if h.is_empty() || q.is_nan() || h.len() > MAX_TOTAL_COUNT {
        return None;
    }
    Some(h.value_at_quantile(q.clamp(0.0, 1.0)) as f64 / 1000.0)
}

/// The largest recorded value in milliseconds (as [`quantile_ms`] at 1.0), or `None` for
/// an empty histogram.
pub fn max_ms(h: &Histogram<u64>) -> Option<f64> {
    if h.is_empty() {
        return None;
    }
    Some(h.max() as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Histogram<u64> {
        let mut h = new_histogram();
        for i in 1..=1000 {
            record_ms(&mut h, f64::from(i) * 0.25);
        }
        h
    }

    #[test]
    fn round_trip_keeps_every_count() {
        let h = sample();
        let bytes = encode(&h);
        let back = decode(&bytes).expect("decodes");
        assert_eq!(back, h);
        assert_eq!(back.len(), 1000);
        assert!(back.is_auto_resize());
        assert_eq!(quantile_ms(&back, 0.5), quantile_ms(&h, 0.5));
        assert_eq!(encode(&back), bytes);
    }

    #[test]
    fn values_above_highest_resize_and_round_trip() {
        let mut h = new_histogram();
        record_ms(&mut h, 2.0 * 3_600_000.0);
        let back = decode(&encode(&h)).expect("decodes");
        let max = max_ms(&back).expect("not empty");
        assert!((max / 7_200_000.0 - 1.0).abs() < 0.01, "{max}");
    }

    #[test]
    fn empty_histogram_round_trips_and_has_no_quantile() {
        let h = new_histogram();
        let back = decode(&encode(&h)).expect("decodes");
        assert!(back.is_empty());
        assert_eq!(quantile_ms(&back, 0.99), None);
        assert_eq!(max_ms(&back), None);
    }

    #[test]
    fn merging_encodings_equals_merging_histograms() {
        let a = sample();
        let mut b = new_histogram();
        for ms in [0.001, 0.5, 3.0, 250.0, 7_200_000.0] {
            record_ms(&mut b, ms);
        }
        b.record_n(1234, 7).unwrap();
        let mut expected = new_histogram();
        merge_into(&mut expected, &a).unwrap();
        merge_into(&mut expected, &b).unwrap();
        let mut merged = new_histogram();
        merge_encoded(&mut merged, &encode(&a)).unwrap();
        merge_encoded(&mut merged, &encode(&b)).unwrap();
        merge_encoded(&mut merged, &encode(&new_histogram())).unwrap();
        // The same counts (the highest trackable value in the header may differ: the
        // two grow in different steps).
        let recorded = |h: &Histogram<u64>| -> Vec<(u64, u64)> {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        };
        assert_eq!(recorded(&merged), recorded(&expected));
        assert_eq!(merged.len(), a.len() + b.len());
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(quantile_ms(&merged, q), quantile_ms(&expected, q));
        }
        // Other bounds (one significant digit) go through a full decode, still lossless.
        let mut coarse = Histogram::<u64>::new_with_bounds(1, 10_000, 1).unwrap();
        coarse.auto(true);
        coarse.record_n(4_321, 3).unwrap();
        merge_encoded(&mut merged, &encode(&coarse)).unwrap();
        merge_into(&mut expected, &coarse).unwrap();
        assert_eq!(recorded(&merged), recorded(&expected));
    }

    #[test]
    fn merging_refuses_what_decode_refuses() {
        let good = encode(&sample());
        let mut bad_cookie = good.clone();
        bad_cookie[3] ^= 0xff;
        let mut truncated = good.clone();
        truncated.pop();
        let mut too_precise = good.clone();
        too_precise[15] = 3;
        for bytes in [
            &bad_cookie[..],
            &truncated[..],
            &too_precise[..],
            &good[..10],
        ] {
            assert!(decode(bytes).is_err());
            assert!(merge_encoded(&mut new_histogram(), bytes).is_err());
        }
        // A run of i64::MIN empty buckets (zig-zag 2^64 - 1: nine bytes).
        let mut run = good[..V2_HEADER_LEN].to_vec();
        let payload = [0xffu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        run[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        run.extend_from_slice(&payload);
        assert!(decode(&run).is_err());
        assert!(merge_encoded(&mut new_histogram(), &run).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let valid = encode(&sample());
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![],
            b"not a histogram".to_vec(),
            vec![0xff; 100],
            valid[..valid.len() - 1].to_vec(),
            [valid.as_slice(), &[0]].concat(),
            vec![0; MAX_ENCODED_LEN + 1],
        ];
        // Compressed cookie.
        let mut compressed = valid.clone();
        compressed[3] = 0x14;
        inputs.push(compressed);
        // Too many significant digits.
        let mut precise = valid.clone();
        precise[15] = 5;
        inputs.push(precise);
        // A declared payload far beyond the input.
        let mut long = valid.clone();
        long[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        inputs.push(long);
        // A run of i64::MIN empty buckets, and counts summing past i64::MAX.
        let header = &valid[..V2_HEADER_LEN];
        let max_count = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        for payload in [vec![0xff; 9], [max_count.as_slice(), &[0x02]].concat()] {
            let mut bytes = header.to_vec();
            bytes[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&payload);
            inputs.push(bytes);
        }
        // Every single-byte corruption and every truncation of a valid encoding.
        for i in 0..valid.len() {
            let mut flipped = valid.clone();
            flipped[i] ^= 0xa5;
            inputs.push(flipped);
            inputs.push(valid[..i].to_vec());
        }
        for input in &inputs {
            if let Ok(h) = decode(input) {
                // Some flips still form a valid histogram; it must be usable.
                let _ = quantile_ms(&h, 0.99);
                let _ = encode(&h);
            }
        }
        for input in &inputs[..11] {
            let err = decode(input).expect_err("refused");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn huge_counts_are_refused() {
        let valid = encode(&sample());
        // Two counts of i64::MAX each (zig-zag: u64::MAX - 1).
        let count = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let payload = [count.as_slice(), &count].concat();
        let mut bytes = valid[..V2_HEADER_LEN].to_vec();
        bytes[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&payload);
        let err = decode(&bytes).expect_err("refused");
        assert!(err.to_string().contains("total count"), "{err}");
    }

    #[test]
    fn record_ms_clamps_and_rounds() {
        let mut h = new_histogram();
        record_ms(&mut h, -5.0);
        record_ms(&mut h, f64::NAN);
        record_ms(&mut h, f64::NEG_INFINITY);
        record_ms(&mut h, 0.0001);
        assert_eq!(h.len(), 4);
        assert_eq!(h.min(), LOWEST);
        assert_eq!(h.max(), LOWEST);

        let mut h = new_histogram();
        record_ms(&mut h, 1.2344);
        // 1234 µs, reported as the highest value equivalent to it at two digits.
        assert!(h.equivalent(h.max(), 1234), "{}", h.max());
        record_ms(&mut h, f64::INFINITY);
        record_ms(&mut h, 1e300);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn merging_is_lossless() {
        let (mut all, mut a, mut b) = (new_histogram(), new_histogram(), new_histogram());
        for i in 0..10_000 {
            let ms = f64::from(i % 977) * 1.7;
            record_ms(&mut all, ms);
            record_ms(if i % 2 == 0 { &mut a } else { &mut b }, ms);
        }
        let mut merged = decode(&encode(&a)).expect("decodes");
        merge_into(&mut merged, &decode(&encode(&b)).expect("decodes")).expect("merges");
        assert_eq!(merged, all);
    }
}
