-- @description Latency per tool and hour from the golden signals of spans: p50, p95 and p99 of the merged per-minute histograms (never averaged percentiles), with calls and errors.
-- @param server text = '' : only this server ('' for every server)
-- @param tool text = '' : only this tool ('' for every tool)
-- @param window interval = 24h : how far back from now
SELECT
  date_trunc('hour', time) AS hour_start,
  server,
  tool,
  sum(calls) AS calls,
  sum(errors) AS errors,
  hdr_quantile(hdr_merge(latency_hist), 0.5) AS p50_ms,
  hdr_quantile(hdr_merge(latency_hist), 0.95) AS p95_ms,
  hdr_quantile(hdr_merge(latency_hist), 0.99) AS p99_ms
FROM signals
WHERE source = 'spans'
  AND time >= now() - $window
  AND ($server = '' OR server = $server)
  AND ($tool = '' OR tool = $tool)
GROUP BY date_trunc('hour', time), server, tool
ORDER BY hour_start, server, tool
