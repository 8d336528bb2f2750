-- @description Error budget per server against an availability objective (`slo`, in percent) over `window`: errors over calls from the golden signals (source `spans`: tool calls; `probes`: probe results), the share of the budget used, and the burn rate over the last hour (1.0 spends the budget exactly over the window).
-- @param slo float = 99.9 : the objective, in percent of successful calls
-- @param window interval = 30d : the budget period, back from now
-- @param source text = spans : spans (tool calls) or probes (probe results)
-- @param server text = '' : only this server ('' for every server)
SELECT
  server,
  sum(calls) AS calls,
  sum(errors) AS errors,
  CAST(sum(errors) AS DOUBLE) / nullif(sum(calls), 0) AS error_rate,
  100.0 * (CAST(sum(errors) AS DOUBLE) / nullif(sum(calls), 0)) / (1.0 - $slo / 100.0) AS budget_used_pct,
  100.0 - 100.0 * (CAST(sum(errors) AS DOUBLE) / nullif(sum(calls), 0)) / (1.0 - $slo / 100.0) AS budget_left_pct,
  (CAST(sum(CASE WHEN time >= now() - INTERVAL '1 hour' THEN errors ELSE 0 END) AS DOUBLE)
    / nullif(sum(CASE WHEN time >= now() - INTERVAL '1 hour' THEN calls ELSE 0 END), 0))
    / (1.0 - $slo / 100.0) AS burn_rate_1h
FROM signals
WHERE source = $source
  AND time >= now() - $window
  AND ($server = '' OR server = $server)
GROUP BY server
ORDER BY budget_used_pct DESC NULLS LAST, server
