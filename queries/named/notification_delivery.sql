-- @description Notification delivery per receiver and integration: transitions delivered (`sent`) or given up (`failed`, dead-lettered), retries, muted/silenced/skipped decisions, the success rate of deliveries and their p95 latency.
-- @param receiver text = '' : only this receiver ('' for every receiver)
-- @param window interval = 30d : how far back from now
SELECT
  receiver,
  integration,
  count(DISTINCT CASE WHEN status = 'sent' THEN event_id || '/' || destination END) AS delivered,
  count(DISTINCT CASE WHEN status = 'failed' THEN event_id || '/' || destination END) AS failed,
  sum(CASE WHEN status = 'retry' THEN 1 ELSE 0 END) AS retries,
  sum(CASE WHEN status IN ('muted', 'silenced', 'skipped') THEN 1 ELSE 0 END) AS not_sent,
  100.0 * count(DISTINCT CASE WHEN status = 'sent' THEN event_id || '/' || destination END)
    / nullif(count(DISTINCT CASE WHEN status IN ('sent', 'failed') THEN event_id || '/' || destination END), 0) AS success_pct,
  approx_percentile_cont(latency_ms, 0.95) FILTER (WHERE status = 'sent') AS p95_latency_ms
FROM notifications
WHERE time >= now() - $window
  AND ($receiver = '' OR receiver = $receiver)
GROUP BY receiver, integration
ORDER BY receiver, integration
