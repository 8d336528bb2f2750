"""DuckDB's side of bench-queries: mcpulse's named queries (queries/named/*.sql),
translated to DuckDB SQL, over the same Parquet files with hive partitioning on.

Reads its job as JSON on stdin:
  {"root": archive dir, "tenant": tenant of the tenant-scoped runs, "runs": N,
   "threads": DuckDB threads, "queries": [names], "params": {name: {param: value}},
   "sql": {name: the named query's SQL as mcpulse runs it}}
and prints one JSON object on stdout: {name: {scope: {"first": s, "best": s,
"times": [s...], "rows": n}}}. Timings are wall-clock seconds of executing the query
and fetching every row as Arrow.

A query whose SQL no longer hashes to what its translation was written from
(TRANSLATED_FROM) is refused: exit status 2, naming it.

Translation notes (the SQL is otherwise the same text):
- A table is a view over read_parquet('{root}/{table}/*/*/*/*.parquet',
  hive_partitioning = true); a tenant's runs filter the hive column `tenant` in the
  view, as mcpulse's tenant scope does.
- Parameters are substituted as literals of the same values mcpulse binds.
- hdr_merge / hdr_quantile (mcpulse's functions over the HdrHistogram V2 `latency_hist`
  column) are Python UDFs vectorized with numpy over Arrow: hdr_merge(list(h)) sums the
  decoded counts of each group's histograms, hdr_quantile gives the value at a quantile
  exactly as the Rust hdrhistogram crate does (highest equivalent value, in ms).
- CAST(CAST(t AS BIGINT) AS DOUBLE) (nanoseconds) is epoch_ns(t);
  approx_percentile_cont is approx_quantile; array_sort(array_agg(DISTINCT x)) is
  list_sort(list(DISTINCT x)).
"""

import hashlib
import json
import sys
import time

import duckdb
import numpy as np
import pyarrow as pa

TABLES = ["spans", "probes", "signals", "drift", "alerts", "notifications"]

# HdrHistogram layout of mcpulse's latency histograms (schemas/src/latency_hist.rs):
# lowest 1 us, 2 significant digits -> 256 sub-buckets, half 128, unit magnitude 0.
HALF_MAG = 7
HALF = 1 << HALF_MAG
HEADER = 40


def _binary_parts(arr):
    """Offsets (int64) and data (uint8) of a binary Arrow array."""
    arr = arr.cast(pa.large_binary())
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def _ranges(starts, lengths):
    """Concatenated [start, start + length) index ranges."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    shift = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(total, dtype=np.int64) + shift


def _decode(offsets, data, valid):
    """(blob index, counts index, count) of every non-zero count of V2 encodings."""
    starts = offsets[:-1] + HEADER
    ends = offsets[1:]
    lengths = np.where(valid & (ends >= starts), ends - starts, 0)
    idx = _ranges(starts, lengths)
    if idx.size == 0:
        return (np.zeros(0, np.int64),) * 3
    payload = data[idx]
    blob_of_byte = np.repeat(np.arange(len(lengths)), lengths)
    last = (payload & 0x80) == 0
    ends_at = np.nonzero(last)[0]
    begins = np.concatenate(([0], ends_at[:-1] + 1))
    varint_of_byte = np.repeat(np.arange(len(begins)), ends_at - begins + 1)
    pos = np.arange(payload.size) - begins[varint_of_byte]
    parts = (payload & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64)
    raw = np.add.reduceat(parts, begins)
    value = (raw >> np.uint64(1)).astype(np.int64) ^ -(raw & np.uint64(1)).astype(np.int64)
    blob = blob_of_byte[begins]
    # Positive: a count at the current index; negative: a run of empty buckets.
    step = np.where(value < 0, -value, 1)
    run = np.cumsum(step)
    first_of_blob = np.concatenate(([True], blob[1:] != blob[:-1]))
    base = np.maximum.accumulate(np.where(first_of_blob, run - step, 0))
    index = run - step - base
    keep = value > 0
    return blob[keep], index[keep], value[keep]


def hdr_merge(lists):
    """hdr_merge over a list of histograms per row: the merged counts, encoded as
    little-endian int64 pairs (index..., count...)."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    n = len(lists)
    list_offsets = lists.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    values = lists.values
    offsets, data = _binary_parts(values)
    valid = ~np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    blob, index, count = _decode(offsets, data, valid)
    group = np.repeat(np.arange(n), np.diff(list_offsets))[blob] if blob.size else blob
    order = np.lexsort((index, group))
    group, index, count = group[order], index[order], count[order]
    if group.size:
        new = np.concatenate(([True], (group[1:] != group[:-1]) | (index[1:] != index[:-1])))
        at = np.nonzero(new)[0]
        group, index, count = group[at], index[at], np.add.reduceat(count, at)
    bounds = np.searchsorted(group, np.arange(n + 1))
    out = []
    for g in range(n):
        a, b = bounds[g], bounds[g + 1]
        out.append(None if a == b else np.concatenate((index[a:b], count[a:b])).astype("<i8").tobytes())
    return pa.array(out, type=pa.binary())


def hdr_quantile(merged, q):
    """The value at quantile q of merged counts, in ms (Rust hdrhistogram semantics)."""
    if isinstance(merged, pa.ChunkedArray):
        merged = merged.combine_chunks()
    if isinstance(q, pa.ChunkedArray):
        q = q.combine_chunks()
    qs = np.asarray(q.to_numpy(zero_copy_only=False), dtype=np.float64)
    out = []
    for i, blob in enumerate(merged.to_pylist()):
        if blob is None:
            out.append(None)
            continue
        pairs = np.frombuffer(blob, dtype="<i8")
        half = pairs.size // 2
        index, count = pairs[:half], pairs[half:]
        total = int(count.sum())
        quantile = min(float(qs[i]), 1.0)
        target = max(int(np.ceil(quantile * total)), 1)
        at = int(index[np.searchsorted(np.cumsum(count), target)])
        bucket = (at >> HALF_MAG) - 1
        sub = (at & (HALF - 1)) + HALF
        if bucket < 0:
            sub -= HALF
            bucket = 0
        value = sub << bucket
        if quantile != 0.0:
            value += (1 << bucket) - 1
        out.append(value / 1000.0)
    return pa.array(out, type=pa.float64())


def interval(text):
    """'30d' / '24h' -> a DuckDB interval literal."""
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    number, unit = text[:-1], text[-1]
    return f"INTERVAL '{int(number)} {units[unit]}'"


def lit(value):
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


# The SHA-256 of each queries/named/*.sql file its translation below was written from.
# The job carries the SQL mcpulse runs; a query whose file has changed since its
# translation is refused, so the two sides never time different queries.
TRANSLATED_FROM = {
    "drift_timeline": "f95d488b53f02ce8f4ee2be0667bd67e09b4f670b7993320a69bcad41d429873",
    "error_budget_burn": "aae05cc62413dc72bcda59d57800e3d6ca4645e0f83b77d190f2533a4347b567",
    "mttd_mttr": "989294b5321bfb63fda0b7767526a41ca51f0ec13c595284f8de2dd549c50981",
    "notification_delivery": "ffea7b33aa9d5e5d02d246381a54dbb642bd78e4c891b6ebe34c83a956caac8a",
    "storms": "776d8d631dde76456ff12e8f55a650404583eff72af394b9c9d15a74c944fc80",
    "tool_latency_hourly": "ca28888cbe9b1dbee86ea071b2e2e2b702efe939f60f0c126b50ba31ccf7436b",
    "uptime_30d": "8a85937d2911eced96db7097cd36d0c468971fd2dd5c7f9eb543da3eb1676d5b",
}


def stale_translations(sources):
    """The names in `sources` (name -> the SQL mcpulse runs) without an up-to-date translation."""
    return sorted(
        name
        for name, text in sources.items()
        if name not in SQL or hashlib.sha256(text.encode()).hexdigest() != TRANSLATED_FROM.get(name)
    )


SQL = {
    "uptime_30d": """
WITH per_region AS (
  SELECT
    server,
    region,
    count(*) AS probes,
    sum(CASE WHEN ok THEN 1 ELSE 0 END) AS ok_probes,
    min(time) AS first_probe,
    max(time) AS last_probe
  FROM probes
  WHERE time >= now() - {window}
    AND ({server} = '' OR server = {server})
  GROUP BY server, region
)
SELECT
  server,
  sum(probes) AS probes,
  sum(ok_probes) AS ok_probes,
  sum(probes) - sum(ok_probes) AS failed_probes,
  100.0 * sum(ok_probes) / sum(probes) AS uptime_pct,
  count(region) AS regions,
  min(first_probe) AS first_probe,
  max(last_probe) AS last_probe
FROM per_region
GROUP BY server
ORDER BY uptime_pct, server
""",
    "tool_latency_hourly": """
WITH merged AS (
  SELECT
    date_trunc('hour', time) AS hour_start,
    server,
    tool,
    sum(calls) AS calls,
    sum(errors) AS errors,
    hdr_merge(list(latency_hist)) AS hist
  FROM signals
  WHERE source = 'spans'
    AND time >= now() - {window}
    AND ({server} = '' OR server = {server})
    AND ({tool} = '' OR tool = {tool})
  GROUP BY date_trunc('hour', time), server, tool
)
SELECT
  hour_start, server, tool, calls, errors,
  hdr_quantile(hist, 0.5) AS p50_ms,
  hdr_quantile(hist, 0.95) AS p95_ms,
  hdr_quantile(hist, 0.99) AS p99_ms
FROM merged
ORDER BY hour_start, server, tool
""",
    "error_budget_burn": """
SELECT
  server,
  sum(calls) AS calls,
  sum(errors) AS errors,
  CAST(sum(errors) AS DOUBLE) / nullif(sum(calls), 0) AS error_rate,
  100.0 * (CAST(sum(errors) AS DOUBLE) / nullif(sum(calls), 0)) / (1.0 - {slo} / 100.0) AS budget_used_pct,
  100.0 - 100.0 * (CAST(sum(errors) AS DOUBLE) / nullif(sum(calls), 0)) / (1.0 - {slo} / 100.0) AS budget_left_pct,
  (CAST(sum(CASE WHEN time >= now() - INTERVAL '1 hour' THEN errors ELSE 0 END) AS DOUBLE)
    / nullif(sum(CASE WHEN time >= now() - INTERVAL '1 hour' THEN calls ELSE 0 END), 0))
    / (1.0 - {slo} / 100.0) AS burn_rate_1h
FROM signals
WHERE source = {source}
  AND time >= now() - {window}
  AND ({server} = '' OR server = {server})
GROUP BY server
ORDER BY budget_used_pct DESC NULLS LAST, server
""",
    "mttd_mttr": """
SELECT
  server,
  count(DISTINCT incident_id) AS incidents,
  count(DISTINCT CASE WHEN action = 'resolve' THEN incident_id END) AS resolved,
  avg(CASE WHEN action = 'trigger'
      THEN (CAST(epoch_ns(time) AS DOUBLE) - CAST(epoch_ns(opened_at) AS DOUBLE)) / 1e9 END) AS mttd_s,
  avg(CASE WHEN action = 'resolve' THEN CAST(duration_s AS DOUBLE) END) AS mttr_s,
  max(CASE WHEN action = 'resolve' THEN duration_s END) AS longest_s
FROM alerts
WHERE class <> 'storm'
  AND action IN ('trigger', 'resolve')
  AND opened_at >= now() - {window}
  AND time >= now() - {window}
  AND ({server} = '' OR server = {server})
GROUP BY server
ORDER BY mttr_s DESC NULLS LAST, server
""",
    "drift_timeline": """
SELECT
  time, server, kind, worst, breaking, additive, cosmetic,
  old_tool_count, new_tool_count, old_hash, new_hash, changes, detail
FROM drift
WHERE time >= now() - {window}
  AND ({server} = '' OR server = {server})
ORDER BY time DESC, server
""",
    "storms": """
WITH storm AS (
  SELECT
    incident_id AS storm_id,
    min(opened_at) AS opened_at,
    max(resolved_at) AS cleared_at,
    max(storm_provider) AS provider,
    max(storm_region) AS region,
    max(reason) AS class,
    max(storm_tenants) AS tenants,
    max(storm_members) AS members
  FROM alerts
  WHERE class = 'storm' AND time >= now() - {window}
  GROUP BY incident_id
),
member AS (
  SELECT
    storm_id,
    min(time) AS first_suppressed,
    count(DISTINCT tenant || '/' || server) AS members_seen,
    array_to_string(list_sort(list(DISTINCT tenant || '/' || server)), ', ') AS member_servers
  FROM alerts
  WHERE storm_id IS NOT NULL AND action = 'suppress' AND time >= now() - {window}
  GROUP BY storm_id
)
SELECT
  coalesce(storm.storm_id, member.storm_id) AS storm_id,
  coalesce(storm.opened_at, member.first_suppressed) AS opened_at,
  storm.cleared_at,
  storm.provider,
  storm.region,
  storm.class,
  storm.tenants,
  storm.members,
  coalesce(member.members_seen, 0) AS members_seen,
  member.member_servers
FROM storm
FULL OUTER JOIN member ON storm.storm_id = member.storm_id
ORDER BY opened_at DESC, storm_id
""",
    "notification_delivery": """
SELECT
  receiver,
  integration,
  count(DISTINCT CASE WHEN status = 'sent' THEN event_id || '/' || destination END) AS delivered,
  count(DISTINCT CASE WHEN status = 'failed' THEN event_id || '/' || destination END) AS failed,
  sum(CASE WHEN status = 'retry' THEN 1 ELSE 0 END) AS retries,
  sum(CASE WHEN status IN ('muted', 'silenced', 'skipped') THEN 1 ELSE 0 END) AS not_sent,
  100.0 * count(DISTINCT CASE WHEN status = 'sent' THEN event_id || '/' || destination END)
    / nullif(count(DISTINCT CASE WHEN status IN ('sent', 'failed') THEN event_id || '/' || destination END), 0) AS success_pct,
  approx_quantile(latency_ms, 0.95) FILTER (WHERE status = 'sent') AS p95_latency_ms
FROM notifications
WHERE time >= now() - {window}
  AND ({receiver} = '' OR receiver = {receiver})
GROUP BY receiver, integration
ORDER BY receiver, integration
""",
}


def connect(root, tenant, threads):
    con = duckdb.connect(config={"threads": threads})
    # Footers read once and kept, as mcpulse's engine keeps them between queries.
    con.execute("SET parquet_metadata_cache = true")
    con.create_function(
        "hdr_merge",
        hdr_merge,
        [duckdb.list_type(duckdb.sqltype("BLOB"))],
        duckdb.sqltype("BLOB"),
        type="arrow",
    )
    con.create_function(
        "hdr_quantile",
        hdr_quantile,
        [duckdb.sqltype("BLOB"), duckdb.sqltype("DOUBLE")],
        duckdb.sqltype("DOUBLE"),
        type="arrow",
    )
    for table in TABLES:
        glob = f"{root}/{table}/*/*/*/*.parquet"
        where = "" if tenant is None else f" WHERE tenant = {lit(tenant)}"
        try:
            con.execute(
                f"CREATE VIEW {table} AS SELECT * FROM read_parquet({lit(glob)}, hive_partitioning = true){where}"
            )
        except duckdb.IOException:
            pass  # no file of this table (spans are not generated)
    return con


def run(con, sql):
    started = time.perf_counter()
    rows = con.execute(sql).fetch_arrow_table().num_rows
    return time.perf_counter() - started, rows


def main():
    job = json.load(sys.stdin)
    stale = stale_translations(job["sql"])
    if stale:
        print(
            f"duckdb_side.py has no translation of the current queries/named/*.sql for: {', '.join(stale)};"
            " translate the changed SQL into SQL below and record the file's SHA-256 in TRANSLATED_FROM",
            file=sys.stderr,
        )
        sys.exit(2)
    out = {}
    for scope, tenant in (("operator", None), ("tenant", job["tenant"])):
        con = connect(job["root"], tenant, job["threads"])
        for name in job["queries"]:
            params = {k: (interval(v) if k == "window" else lit(v)) for k, v in job["params"][name].items()}
            if "slo" in params:
                params["slo"] = str(float(job["params"][name]["slo"]))
            sql = SQL[name].format(**params)
            first, rows = run(con, sql)
            times = [run(con, sql)[0] for _ in range(job["runs"])]
            out.setdefault(name, {})[scope] = {
                "first": first,
                "best": min(times),
                "times": times,
                "rows": rows,
            }
            print(f"  duckdb {name} ({scope}): best {min(times) * 1000:.0f} ms", file=sys.stderr, flush=True)
        con.close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
