"""psycopg (libpq) against mcpulse's PostgreSQL endpoint, for tests/pgwire.rs.

Usage: pg_client.py HOST PORT; tokens in the environment (ACME_TOKEN, OPERATOR_TOKEN).
Connects as tenant acme, runs what Grafana's PostgreSQL data source runs when it
connects and lists tables and columns, a named query with a parameter (client-side
binding, as Grafana sends SQL), a server-side bound query (extended protocol), and tries
to read tenant globex's rows in every way it can think of. Prints one JSON object of
results; exits 1 with a message when something fails outright.
"""

import json
import os
import sys

import psycopg

host, port = sys.argv[1], int(sys.argv[2])


def connect(token, user="grafana"):
    return psycopg.connect(
        host=host, port=port, user=user, password=token, dbname="mcpulse",
        sslmode="disable", connect_timeout=10, autocommit=True,
    )


def rows(conn, sql, params=None, client_side=False):
    cursor_factory = psycopg.ClientCursor if client_side else psycopg.Cursor
    with cursor_factory(conn) as cur:
        cur.execute(sql, params)
        if cur.description is None:
            return None
        return [list(map(jsonable, r)) for r in cur.fetchall()]


def jsonable(v):
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)


out = {}
acme = connect(os.environ["ACME_TOKEN"])
out["server_version"] = acme.info.server_version
out["version"] = rows(acme, "SELECT version()")[0][0]
out["pg_version"] = rows(acme, "SELECT current_setting('server_version_num')::int/100 as version")[0][0]
out["timescaledb"] = rows(acme, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
out["tables"] = sorted(r[0] for r in rows(acme, """
    SELECT CASE WHEN quote_ident(table_schema) IN (
          SELECT CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)) as i,
            string_to_array(current_setting('search_path'),',') s)
        THEN quote_ident(table_name)
        ELSE quote_ident(table_schema) || '.' || quote_ident(table_name) END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog',
        '_timescaledb_cache', '_timescaledb_catalog', '_timescaledb_internal',
        '_timescaledb_config', 'timescaledb_information', 'timescaledb_experimental')
      AND table_type = 'BASE TABLE'
    ORDER BY 1"""))
out["columns"] = rows(acme, """
    SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE CASE WHEN array_length(parse_ident('public.probes'),1) = 2
        THEN quote_ident(table_schema) = (parse_ident('public.probes'))[1]
         AND quote_ident(table_name) = (parse_ident('public.probes'))[2]
        ELSE quote_ident(table_name) = 'public.probes' END
    ORDER BY 1""")
out["databases"] = rows(acme, "SELECT datname FROM pg_database WHERE datistemplate = false")
out["named"] = rows(acme, "SELECT server, probes, ok_probes, uptime_pct FROM uptime_30d(%s)",
                    ("acme-weather",), client_side=True)
out["bound"] = rows(acme, "SELECT server, count(*) AS n FROM probes WHERE server = %s AND ok = %s GROUP BY server",
                    ("acme-weather", True))
out["typed"] = rows(acme, "SELECT time, ok, http_status, total_ms, labels FROM probes ORDER BY time LIMIT 1")

attempts = [
    "SELECT DISTINCT server FROM probes",
    "SELECT DISTINCT tenant FROM probes",
    "SELECT count(*) FROM probes WHERE tenant = 'globex'",
    "SELECT server FROM probes WHERE tenant <> 'acme' OR 1 = 1",
    "SELECT p.server FROM probes p JOIN probes q ON p.tenant <> q.tenant",
    "SELECT (SELECT max(server) FROM probes WHERE server LIKE 'globex%') AS s",
    "SELECT server FROM probes UNION ALL SELECT server FROM signals",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM information_schema.views",
    "SELECT server FROM uptime_30d()",
]
leaks = {}
for sql in attempts:
    try:
        result = json.dumps(rows(acme, sql))
    except psycopg.Error as e:
        result = "error: " + str(e)
    if "globex" in result:
        leaks[sql] = result
out["leaks"] = leaks
try:
    rows(acme, "SELECT * FROM 'file:///etc/passwd'")
    out["file_read"] = "allowed"
except psycopg.Error as e:
    out["file_read"] = e.sqlstate
try:
    rows(acme, "SELECT nope FROM probes")
except psycopg.Error as e:
    out["sql_error"] = e.sqlstate
out["after_error"] = rows(acme, "SELECT 1 AS one")
acme.close()

operator = connect(os.environ["OPERATOR_TOKEN"])
out["operator_servers"] = sorted(r[0] for r in rows(operator, "SELECT DISTINCT server FROM probes"))
operator.close()

try:
    connect("not-a-token-at-all")
    out["bad_password"] = "accepted"
except psycopg.OperationalError as e:
    out["bad_password"] = str(e)

print(json.dumps(out))
