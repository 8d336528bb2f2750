-- @description Uptime per server over the last 30 days (or `window`), from probes: the share of probe results, every region together, that completed the protocol exchange. Counted per region first, then added up per server (the regions are the groups with a region).
-- @param server text = '' : only this server ('' for every server)
-- @param window interval = 30d : how far back from now
WITH per_region AS (
  SELECT
    server,
    region,
    count(*) AS probes,
    sum(CASE WHEN ok THEN 1 ELSE 0 END) AS ok_probes,
    min(time) AS first_probe,
    max(time) AS last_probe
  FROM probes
  WHERE time >= now() - $window
    AND ($server = '' OR server = $server)
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
