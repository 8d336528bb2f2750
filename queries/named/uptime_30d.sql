-- @description Uptime per server over the last 30 days (or `window`), from probes: the share of probe results, every region together, that completed the protocol exchange.
-- @param server text = '' : only this server ('' for every server)
-- @param window interval = 30d : how far back from now
SELECT
  server,
  count(*) AS probes,
  sum(CASE WHEN ok THEN 1 ELSE 0 END) AS ok_probes,
  count(*) - sum(CASE WHEN ok THEN 1 ELSE 0 END) AS failed_probes,
  100.0 * sum(CASE WHEN ok THEN 1 ELSE 0 END) / count(*) AS uptime_pct,
  count(DISTINCT region) AS regions,
  min(time) AS first_probe,
  max(time) AS last_probe
FROM probes
WHERE time >= now() - $window
  AND ($server = '' OR server = $server)
GROUP BY server
ORDER BY uptime_pct, server
