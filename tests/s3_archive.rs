//! `archive.url: s3://…` end to end, against moto's S3 server (`python -m moto.server`,
//! from the test virtualenv of scripts/test-deps.sh) on a loopback port with
//! authentication on: the real `mcpulse run` archives probe results and spans, writes
//! signals, alerts, notifications and every operator's state under `_state/` to the
//! bucket; `mcpulse query` reads them back (credentials from the configuration, and from
//! the AWS_* environment); `mcpulse admin compact` and `admin delete` work on the bucket;
//! a wrong credential, a missing bucket and bad settings give errors that say what to
//! check and never show a secret.

mod common;
mod stand_ins;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::archive::{
    mcpulse, post_probes, post_spans, probe, probe_at, stderr, stdout, wait_until,
};
use common::{ACME_TOKEN, GLOBEX_TOKEN, Mcpulse, http};
use futures::TryStreamExt;
use mcpulse::Config;
use mcpulse::archive_store::ArchiveLocation;
use mcpulse_processors::forget::Forget;
use mcpulse_schemas::Table;
use object_store::ObjectStoreExt;
use serde_json::{Value, json};

const BUCKET: &str = "mcpulse-archive";
const PREFIX: &str = "prod/eu";

/// moto's S3 server on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

impl Moto {
    fn start() -> Moto {
        let python = moto_python();
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
            let mut child = Command::new(&python)
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start moto's server");
            let endpoint = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break; // the port was taken meanwhile: another one
                }
                if http()
                    .get(format!("{endpoint}/moto-api/data.json"))
                    .send()
                    .is_ok_and(|r| r.status().is_success())
                {
                    return Moto {
                        child,
                        endpoint,
                        dir,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "moto's server did not answer within 60s:\n{}",
                    std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!(
            "moto's server did not start:\n{}",
            std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default()
        );
    }

    /// Creates `buckets` and an IAM user's access key allowed every S3 action, then
    /// turns authentication on (tests/python/moto_s3.py). Returns (key id, secret).
    fn prepare(&self, buckets: &[&str]) -> (String, String) {
        let out = Command::new(moto_python())
            .arg(common::repo_path("tests/python/moto_s3.py"))
            .arg(&self.endpoint)
            .args(buckets)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "moto_s3.py failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["access_key_id"].as_str().unwrap().to_string(),
            v["secret_access_key"].as_str().unwrap().to_string(),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test virtualenv's Python, which must have moto's server mode.
fn moto_python() -> PathBuf {
    let python = common::python();
    let ok = Command::new(&python)
        .args(["-c", "import moto.server, boto3"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        ok.success(),
        "moto[server] is not installed in the test virtualenv ({}): run `bash scripts/test-deps.sh`",
        python.display()
    );
    python
}

/// The `archive:` section for the bucket at `endpoint`; `credentials` is put into
/// `archive.s3` as is.
fn archive_yaml(endpoint: &str, url: &str, credentials: &str) -> String {
    format!(
        "archive:\n  url: {url}\n  flush_interval: 300ms\n  maintenance:\n    interval: 1h\n    deletion_poll: 200ms\n    delete_delay: 0s\n  s3:\n    endpoint: {endpoint}\n    allow_http: true\n    region: us-east-1\n    max_retries: 2\n    retry_timeout: 10s\n{credentials}"
    )
}

const CONFIG_CREDENTIALS: &str =
    "    access_key_id: ${S3_KEY_ID}\n    secret_access_key: \"${S3_SECRET}\"\n";

/// Rows of `sql` through `mcpulse query`.
fn query(config: &Path, env: &[(&str, &str)], sql: &str) -> Vec<Value> {
    let out = mcpulse(config, &["query", "--format", "json", sql], env);
    assert!(out.status.success(), "{sql}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn count(config: &Path, env: &[(&str, &str)], sql: &str) -> i64 {
    query(config, env, sql)[0]["n"].as_i64().unwrap()
}

/// Rows per table of a tenant (and server).
fn rows(
    config: &Path,
    env: &[(&str, &str)],
    tenant: &str,
    server: Option<&str>,
) -> BTreeMap<&'static str, i64> {
    Table::ALL
        .iter()
        .map(|table| {
            let mut sql = format!(
                "SELECT count(*) AS n FROM {} WHERE tenant = '{tenant}'",
                table.name()
            );
            if let Some(server) = server {
                sql += &format!(" AND {} = '{server}'", table.server_column());
            }
            (table.name(), count(config, env, &sql))
        })
        .collect()
}

/// The bucket as the test sees it: the archive location of `config`, opened by the
/// same code as mcpulse's.
struct Bucket {
    location: ArchiveLocation,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    fn open(config: &Path, env: &[(&str, &str)]) -> Bucket {
        let text = std::fs::read_to_string(config).unwrap();
        let parsed = Config::parse(&text, |name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .or_else(|| (name == "ACME_TOKEN").then(|| ACME_TOKEN.to_string()))
        })
        .unwrap();
        Bucket {
            location: ArchiveLocation::open(&parsed).unwrap(),
            runtime: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    /// Every object key under `prefix` of the whole bucket (not only the archive).
    fn keys(&self, prefix: Option<&str>) -> Vec<String> {
        let store = self.location.target.store.clone();
        let prefix = prefix.map(object_store::path::Path::from);
        self.runtime.block_on(async move {
            let mut keys: Vec<String> = store
                .list(prefix.as_ref())
                .map_ok(|m| m.location.to_string())
                .try_collect()
                .await
                .unwrap();
            keys.sort();
            keys
        })
    }

    fn get(&self, key: &str) -> Vec<u8> {
        let store = self.location.target.store.clone();
        let path = object_store::path::Path::from(key);
        self.runtime.block_on(async move {
            store
                .get(&path)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec()
        })
    }

    /// `PUT` with `If-None-Match: *` (what compaction manifests and deletion requests
    /// rely on to be created once).
    fn create(&self, key: &str) -> object_store::Result<()> {
        let store = self.location.target.store.clone();
        let path = object_store::path::Path::from(key);
        self.runtime.block_on(async move {
            let opts = object_store::PutOptions {
                mode: object_store::PutMode::Create,
                ..Default::default()
            };
            store
                .put_opts(&path, object_store::PutPayload::from_static(b"{}"), opts)
                .await
                .map(|_| ())
        })
    }

    fn delete(&self, key: &str) {
        let store = self.location.target.store.clone();
        let path = object_store::path::Path::from(key);
        self.runtime
            .block_on(async move { store.delete(&path).await })
            .unwrap();
    }

    /// State objects (JSON or NDJSON under `_state/`) that still hold something of
    /// `forget`.
    fn state_holding(&self, forget: &Forget) -> Vec<String> {
        let mut out = Vec::new();
        for key in self.keys(Some(&format!("{PREFIX}/_state"))) {
            let text = String::from_utf8_lossy(&self.get(&key)).into_owned();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let Ok(mut value) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                let mentions = if forget.server.is_none() {
                    forget.mentions(&value)
                } else {
                    Vec::new()
                };
                if forget.scrub(&mut value) || !mentions.is_empty() {
                    out.push(format!("{key} {mentions:?}"));
                }
            }
        }
        out
    }
}

#[test]
fn mcpulse_runs_queries_compacts_and_deletes_on_an_s3_archive() {
    let moto = Moto::start();
    let (key_id, secret) = moto.prepare(&[BUCKET]);
    let env = [
        ("S3_KEY_ID", key_id.as_str()),
        ("S3_SECRET", secret.as_str()),
    ];
    let url = format!("s3://{BUCKET}/{PREFIX}");
    let pd = stand_ins::StandIn::pagerduty();
    let work = tempfile::tempdir().unwrap();
    let routes = work.path().join("routes.yaml");
    std::fs::write(
        &routes,
        format!(
            "receivers:\n  - name: oncall\n    pagerduty: {{ routing_key: \"s3-pd-r0uting-key-0123456789abcd\", url: \"{}\" }}\nroute:\n  id: root\n  receiver: oncall\n",
            pd.url
        ),
    )
    .unwrap();
    let stages = format!(
        "signals:\n  allowed_lateness: 2s\n  idle_timeout: 2s\n  flush_interval: 300ms\n\
         incidents:\n  flush_interval: 200ms\n  storm: {{ hold: 0s }}\n\
         drift:\n  flush_interval: 300ms\n\
         notify:\n  routes: {}\n  flush_interval: 300ms\n  table_interval: 1s\n",
        routes.display()
    );
    let mut m = Mcpulse::prepare(&format!(
        "{}{stages}",
        archive_yaml(&moto.endpoint, &url, CONFIG_CREDENTIALS)
    ));
    m.spawn_with_env(&env);
    let config = m.config.clone();
    // The same archive with credentials from the AWS_* environment instead.
    let chain_config = work.path().join("aws-chain.yaml");
    std::fs::write(
        &chain_config,
        common::config_yaml(
            &m.data_dir(),
            &format!("{}{stages}", archive_yaml(&moto.endpoint, &url, "")),
        ),
    )
    .unwrap();
    let chain_env = [
        ("AWS_ACCESS_KEY_ID", key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];

    // acme: weather fails for 6 minutes in both regions (an incident that opens and
    // resolves, delivered to PagerDuty), search is healthy; both send spans. globex:
    // weather, healthy. Then three small batches of acme/maps probes in an hour that
    // closed two hours ago, each its own object (flushes 300 ms apart).
    let mut acme = Vec::new();
    let mut globex = Vec::new();
    for ago in (1..=12).rev() {
        for region in ["eu-west", "us-east"] {
            acme.push(probe("weather", region, ago, (7..=12).contains(&ago)));
            acme.push(probe("search", region, ago, false));
            globex.push(probe("weather", region, ago, false));
        }
    }
    post_probes(&m, ACME_TOKEN, acme);
    post_probes(&m, GLOBEX_TOKEN, globex);
    for ago in [5, 4, 3] {
        post_spans(&m, ACME_TOKEN, "weather", ago, 7);
        post_spans(&m, ACME_TOKEN, "search", ago, 7);
        post_spans(&m, GLOBEX_TOKEN, "weather", ago, 7);
    }
    let old_hour = {
        let now = Utc::now().timestamp();
        DateTime::from_timestamp((now / 3600 - 2) * 3600, 0).unwrap()
    };
    for batch in 0..3i64 {
        let probes = (0..4i64)
            .map(|i| {
                probe_at(
                    "maps",
                    "eu-west",
                    old_hour + TimeDelta::minutes(batch * 10 + i),
                    false,
                )
            })
            .collect();
        post_probes(&m, ACME_TOKEN, probes);
        std::thread::sleep(Duration::from_millis(1200));
    }

    wait_until(
        "acme's rows in every table",
        &m,
        Duration::from_secs(90),
        || {
            let r = rows(&config, &env, "acme", None);
            r["probes"] == 60
                && r["spans"] == 18
                && r["signals"] > 0
                && r["alerts"] >= 2
                && r["notifications"] >= 2
        },
    );
    pd.wait_for(2, Duration::from_secs(60));
    wait_until("globex's signals", &m, Duration::from_secs(90), || {
        rows(&config, &env, "globex", None)["signals"] > 0
    });

    // Everything is in the bucket, under the prefix; nothing in a local archive.
    let bucket = Bucket::open(&config, &env);
    let keys = bucket.keys(None);
    assert!(
        keys.iter().all(|k| k.starts_with(&format!("{PREFIX}/"))),
        "objects outside the archive's prefix: {keys:?}"
    );
    for table in ["probes", "spans", "signals", "alerts", "notifications"] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("{PREFIX}/{table}/tenant=acme/"))
                    && k.ends_with(".parquet")),
            "no {table} object of acme in {keys:?}"
        );
    }
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("{PREFIX}/_state/"))),
        "no operator state in the bucket: {keys:?}"
    );
    assert!(
        !m.data_dir().join("archive").exists(),
        "a local archive was written"
    );

    // The store creates an object only once when asked to (conditional PUT).
    let probe_key = format!("{PREFIX}/_conditional-put-check.json");
    bucket.create(&probe_key).unwrap();
    let again = bucket.create(&probe_key).unwrap_err();
    assert!(
        matches!(again, object_store::Error::AlreadyExists { .. }),
        "a second create must be refused: {again}"
    );
    bucket.delete(&probe_key);

    // Queries: credentials from the environment (the AWS chain) read the same rows.
    let per_server = query(
        &chain_config,
        &chain_env,
        "SELECT server, count(*) AS n FROM probes WHERE tenant = 'acme' GROUP BY server ORDER BY server",
    );
    assert_eq!(
        per_server,
        vec![
            json!({"server": "maps", "n": 12}),
            json!({"server": "search", "n": 24}),
            json!({"server": "weather", "n": 24}),
        ]
    );
    let out = mcpulse(
        &chain_config,
        &[
            "query",
            "--format",
            "json",
            "--tenant",
            "globex",
            "SELECT count(*) AS n, min(tenant) AS t FROM probes",
        ],
        &chain_env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, vec![json!({"n": 24, "t": "globex"})]);
    // The HTTP SQL endpoint of the running process reads the bucket too.
    let resp = http()
        .post(m.url("/api/v1/query"))
        .bearer_auth(ACME_TOKEN)
        .header("accept", "text/csv")
        .json(&json!({"sql": "SELECT count(*) AS n FROM spans"}))
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text());
    assert_eq!(resp.text().unwrap(), "n\n18\n");

    // `routes backtest` replays the incidents archived in the bucket through the routes
    // and compares with the deliveries recorded there.
    let out = mcpulse(
        &config,
        &[
            "routes",
            "backtest",
            routes.to_str().unwrap(),
            "--since",
            "1h",
            "--format",
            "json",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let oncall = report["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["receiver"] == "oncall")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(oncall["would_send"]["total"], 2, "{report:#}");
    assert_eq!(oncall["was_sent"]["total"], 2, "{report:#}");

    // Compaction of the closed hour: three objects become one, every row kept.
    let folder = format!(
        "{PREFIX}/probes/tenant=acme/date={}/hour={}/",
        old_hour.format("%Y-%m-%d"),
        old_hour.format("%H")
    );
    let parquet_in = |keys: Vec<String>| -> Vec<String> {
        keys.into_iter()
            .filter(|k| k.starts_with(&folder) && k.ends_with(".parquet"))
            .collect()
    };
    let before = parquet_in(bucket.keys(Some(&folder)));
    assert!(
        before.len() >= 3,
        "small objects of the old hour: {before:?}"
    );
    let out = mcpulse(
        &config,
        &[
            "admin", "compact", "--table", "probes", "--tenant", "acme", "--after", "10m",
            "--delay", "0s",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("compacted"), "{}", stdout(&out));
    let after = parquet_in(bucket.keys(Some(&folder)));
    assert_eq!(after.len(), 1, "one compacted object: {after:?}");
    assert!(!before.contains(&after[0]), "{before:?} -> {after:?}");
    assert_eq!(
        count(
            &chain_config,
            &chain_env,
            "SELECT count(*) AS n FROM probes WHERE tenant = 'acme' AND server = 'maps'"
        ),
        12
    );
    assert_eq!(
        count(
            &config,
            &env,
            "SELECT count(*) AS n FROM probes WHERE tenant = 'acme'"
        ),
        60
    );

    // Deleting one server of acme, then the whole of globex.
    std::thread::sleep(Duration::from_secs(2));
    let acme_weather = rows(&config, &env, "acme", Some("weather"));
    let out = mcpulse(
        &config,
        &["admin", "delete", "--tenant", "acme", "--server", "search"],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("deleted server \"search\" of tenant \"acme\""),
        "{}",
        stdout(&out)
    );
    let gone = rows(&config, &env, "acme", Some("search"));
    assert!(
        gone.values().all(|n| *n == 0),
        "rows of acme/search left: {gone:?}"
    );
    let weather = rows(&config, &env, "acme", Some("weather"));
    assert_eq!(weather["probes"], acme_weather["probes"]);
    assert_eq!(weather["spans"], acme_weather["spans"]);
    wait_until(
        "no state of acme/search in the bucket",
        &m,
        Duration::from_secs(90),
        || {
            bucket
                .state_holding(&Forget::server("acme", "search"))
                .is_empty()
        },
    );

    let out = mcpulse(&config, &["admin", "delete", "--tenant", "globex"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("deleted tenant \"globex\""),
        "{}",
        stdout(&out)
    );
    let gone = rows(&config, &env, "globex", None);
    assert!(
        gone.values().all(|n| *n == 0),
        "rows of globex left: {gone:?}"
    );
    wait_until(
        "no state of globex in the bucket",
        &m,
        Duration::from_secs(90),
        || bucket.state_holding(&Forget::tenant("globex")).is_empty(),
    );
    let left: Vec<String> = bucket
        .keys(None)
        .into_iter()
        .filter(|k| k.contains("tenant=globex"))
        .collect();
    assert!(left.is_empty(), "objects of globex left: {left:?}");
    assert_eq!(
        count(
            &config,
            &env,
            "SELECT count(*) AS n FROM probes WHERE tenant = 'acme' AND server = 'weather'"
        ),
        24
    );

    // The process never logged the secret, and stops cleanly.
    let status = m.terminate();
    assert!(status.success(), "{status}\n{}", m.log());
    assert!(!m.log().contains(&secret), "the secret was logged");
}

#[test]
fn wrong_credentials_missing_buckets_and_bad_settings_are_reported_clearly() {
    let moto = Moto::start();
    let (key_id, secret) = moto.prepare(&[BUCKET]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, archive: &str| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            common::config_yaml(&dir.path().join("data"), archive),
        )
        .unwrap();
        path
    };
    let url = format!("s3://{BUCKET}/{PREFIX}");
    let config = write(
        "mcpulse.yaml",
        &archive_yaml(
            &moto.endpoint,
            &url,
            &format!("{CONFIG_CREDENTIALS}    session_token: \"${{S3_TOKEN}}\"\n"),
        ),
    );
    let wrong_secret = format!("Wr0ng{}", &secret[5..]);
    let token = "FwoGZXIvYXdzEXAMPLEsessionTOKENvalue0123456789";
    let sql = "SELECT count(*) AS n FROM probes";

    // `config check` describes the archive, not the secrets.
    let env = [
        ("S3_KEY_ID", key_id.as_str()),
        ("S3_SECRET", secret.as_str()),
        ("S3_TOKEN", token),
    ];
    let out = mcpulse(&config, &["config", "check"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "archive: s3://{BUCKET}/{PREFIX} at {}",
            moto.endpoint
        )) && text.contains(&format!(
            "access key {key_id} from archive.s3 with a session token"
        )),
        "{text}"
    );
    assert!(!text.contains(&secret) && !text.contains(token), "{text}");

    let refused = |what: &str, env: &[(&str, &str)], secrets: &[&str]| {
        for args in [
            vec!["query", sql],
            vec!["admin", "compact", "--after", "0s"],
            vec!["admin", "delete", "--tenant", "acme"],
        ] {
            let out = mcpulse(&config, &args, env);
            let err = stderr(&out);
            assert!(!out.status.success(), "{what}: {args:?} succeeded");
            assert!(
                err.contains(&format!("archive s3://{BUCKET}/{PREFIX}/"))
                    && err.contains("access denied")
                    && err.contains("archive.s3.access_key_id"),
                "{what}: {args:?}: {err}"
            );
            for s in secrets {
                assert!(!err.contains(s), "{what}: a secret in {err}");
            }
        }
        // `mcpulse run` stops at start with the same error.
        let started = Instant::now();
        let out = mcpulse(&config, &["run"], env);
        let err = stderr(&out);
        assert!(!out.status.success(), "{what}: run started");
        assert!(
            err.contains("access denied") && err.contains("archive.s3.access_key_id"),
            "{what}: run: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: run took {:?} to fail",
            started.elapsed()
        );
        for s in secrets {
            assert!(!err.contains(s), "{what}: a secret in {err}");
        }
    };
    // A wrong secret (with a session token, which S3 echoes back when a signature does
    // not match), and an access key id the store does not know.
    refused(
        "wrong secret",
        &[
            ("S3_KEY_ID", key_id.as_str()),
            ("S3_SECRET", wrong_secret.as_str()),
            ("S3_TOKEN", token),
        ],
        &[&wrong_secret, token],
    );
    refused(
        "unknown key",
        &[
            ("S3_KEY_ID", "AKIAUNKNOWNKEY000000"),
            ("S3_SECRET", secret.as_str()),
            ("S3_TOKEN", token),
        ],
        &[&secret, token],
    );

    // A bucket that does not exist.
    let missing = write(
        "missing.yaml",
        &archive_yaml(&moto.endpoint, "s3://no-such-bucket/x", CONFIG_CREDENTIALS),
    );
    let env = [
        ("S3_KEY_ID", key_id.as_str()),
        ("S3_SECRET", secret.as_str()),
    ];
    let out = mcpulse(&missing, &["query", sql], &env);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("archive s3://no-such-bucket/x/")
            && stderr(&out).contains("does not exist"),
        "{}",
        stderr(&out)
    );

    // Settings refused before any request, naming the field.
    for (archive, says) in [
        (
            archive_yaml(&moto.endpoint, "s3:///x", CONFIG_CREDENTIALS),
            "archive.url: \"s3:///x\" names no bucket",
        ),
        (
            archive_yaml(&moto.endpoint, "gs://bucket/x", CONFIG_CREDENTIALS),
            "unsupported scheme \"gs\"",
        ),
        (
            archive_yaml(&moto.endpoint, "s3://bucket:9000/x", CONFIG_CREDENTIALS),
            "archive.s3.endpoint",
        ),
        (
            archive_yaml(&moto.endpoint, &url, "    access_key_id: ${S3_KEY_ID}\n"),
            "archive.s3.secret_access_key: missing",
        ),
        (
            archive_yaml(&moto.endpoint, &url, "    secret: x\n"),
            "unknown field `secret`",
        ),
        (
            format!(
                "archive:\n  url: {url}\n  s3:\n    endpoint: {}\n",
                moto.endpoint
            ),
            "archive.s3.endpoint",
        ),
        (
            "archive:\n  url: /tmp/x\n  s3:\n    region: eu-west-1\n".to_string(),
            "archive.s3: only used with an s3:// archive.url",
        ),
    ] {
        let bad = write("bad.yaml", &archive);
        let out = mcpulse(&bad, &["config", "check"], &env);
        assert!(!out.status.success(), "{archive}");
        assert!(stderr(&out).contains(says), "{archive}: {}", stderr(&out));
        assert!(!stderr(&out).contains(&secret), "{}", stderr(&out));
    }
}
