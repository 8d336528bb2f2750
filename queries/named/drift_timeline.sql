-- @description Schema drift timeline: every confirmed tool-list change (and inconsistent fleet) with its class and counts of breaking, additive and cosmetic changes, newest first.
-- @param server text = '' : only this server ('' for every server)
-- @param window interval = 30d : how far back from now
SELECT
  time,
  server,
  kind,
  worst,
  breaking,
  additive,
  cosmetic,
  old_tool_count,
  new_tool_count,
  old_hash,
  new_hash,
  changes,
  detail
FROM drift
WHERE time >= now() - $window
  AND ($server = '' OR server = $server)
ORDER BY time DESC, server
