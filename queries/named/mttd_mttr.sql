-- @description Mean time to detect and to resolve per server, from the incident transitions in `alerts` (storms and blips aside): detection is from the first failing minute (`opened_at`) to the trigger, resolution from `opened_at` to `resolved_at` (`duration_s` of the resolve).
-- @param server text = '' : only this server ('' for every server)
-- @param window interval = 30d : incidents opened this far back from now
SELECT
  server,
  count(DISTINCT incident_id) AS incidents,
  count(DISTINCT CASE WHEN action = 'resolve' THEN incident_id END) AS resolved,
  avg(CASE WHEN action = 'trigger'
      THEN (CAST(CAST(time AS BIGINT) AS DOUBLE) - CAST(CAST(opened_at AS BIGINT) AS DOUBLE)) / 1e9 END) AS mttd_s,
  avg(CASE WHEN action = 'resolve' THEN CAST(duration_s AS DOUBLE) END) AS mttr_s,
  max(CASE WHEN action = 'resolve' THEN duration_s END) AS longest_s
FROM alerts
WHERE class <> 'storm'
  AND action IN ('trigger', 'resolve')
  AND opened_at >= now() - $window
  AND time >= now() - $window
  AND ($server = '' OR server = $server)
GROUP BY server
ORDER BY mttr_s DESC NULLS LAST, server
