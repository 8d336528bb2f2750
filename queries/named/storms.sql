-- @description Storms and their members: each storm (shared upstream cause: provider, region, failure class) with when it opened and cleared and its tenant and member counts, and the member incidents suppressed into it (tenant/server). A tenant sees only its own members; operators see the storms themselves too.
-- @param window interval = 30d : storms seen this far back from now
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
  WHERE class = 'storm' AND time >= now() - $window
  GROUP BY incident_id
),
member AS (
  SELECT
    storm_id,
    min(time) AS first_suppressed,
    count(DISTINCT tenant || '/' || server) AS members_seen,
    array_to_string(array_sort(array_agg(DISTINCT tenant || '/' || server)), ', ') AS member_servers
  FROM alerts
  WHERE storm_id IS NOT NULL AND action = 'suppress' AND time >= now() - $window
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
