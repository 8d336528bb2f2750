//! `mcpulse routes check|test` and `mcpulse silence add|list|expire`, run as a user
//! would: errors name the line and field, payloads are printed exactly, and no secret
//! given as a `${ENV}` reference ever reaches stdout or stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const PD_KEY: &str = "pd-SECRET-routing-key-0123456789";
const DISCORD_TOKEN: &str = "dc-SECRET-webhook-token-abcdef";
const HOOK_SECRET: &str = "hook-SECRET-hmac-key-0123456789";

/// A routes file using every secret, a tenant section and an always-active mute.
const ROUTES: &str = r#"receivers:
  - name: pages
    pagerduty:
      routing_key: "${PD_KEY}"
  - name: acme-chat
    tenant: acme
    discord:
      webhook_url: "https://discord.com/api/webhooks/123456/${DISCORD_TOKEN}"
  - name: noc
    webhook:
      url: "https://hooks.example.com/in/${DISCORD_TOKEN}"
      secret: "${HOOK_SECRET}"
route:
  id: root
  receiver: noc
  routes:
    - id: acme
      tenant: acme
      receiver: acme-chat
      routes:
        - id: acme-pages
          matchers: ['severity =~ "P1|P2"']
          receiver: pages
          continue: true
        - id: acme-chat
    - id: globex
      tenant: globex
      mute_time_intervals: [always]
operator_routes:
  id: operator
  receiver: noc
time_intervals:
  - name: always
    intervals: [{weekdays: ["monday:sunday"]}]
"#;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A configuration whose data folder is in this directory.
    fn config(&self) -> PathBuf {
        let data = self.0.path().join("data");
        self.write(
            "mcpulse.yaml",
            &format!(
                "data_dir: {}\nauth:\n  anonymous_tenant: default\n",
                data.display()
            ),
        )
    }
}

/// Runs `mcpulse ARGS` with the secrets in its environment.
fn mcpulse<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_mcpulse"))
        .args(args)
        .env("PD_KEY", PD_KEY)
        .env("DISCORD_TOKEN", DISCORD_TOKEN)
        .env("HOOK_SECRET", HOOK_SECRET)
        .env_remove("MCPULSE_CONFIG")
        .output()
        .expect("run mcpulse")
}

/// stdout and stderr, after checking that no secret is in either.
fn texts(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    for secret in [PD_KEY, DISCORD_TOKEN, HOOK_SECRET] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a secret leaked:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    }
    (stdout, stderr)
}

fn check(path: &Path) -> (i32, String, String) {
    let out = mcpulse([Path::new("routes"), Path::new("check"), path]);
    let (stdout, stderr) = texts(&out);
    (out.status.code().unwrap(), stdout, stderr)
}

#[test]
fn check_accepts_a_valid_file_and_prints_its_summary() {
    let dir = Dir::new();
    let (code, stdout, stderr) = check(&dir.write("routes.yaml", ROUTES));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("routes.yaml: ok — 5 routes, 1 operator routes, 3 receivers (3 integrations), 1 time intervals; tenant sections: acme, globex"),
        "{stdout}"
    );
}

#[test]
fn check_errors_name_the_line_and_field_and_exit_2() {
    let dir = Dir::new();
    let cases = [
        (
            "unknown receiver",
            ROUTES.replace(
                "      receiver: acme-chat\n      routes:",
                "      receiver: acme-chatt\n      routes:",
            ),
            ":19: route.routes[0].receiver: unknown receiver \"acme-chatt\"",
        ),
        (
            "bad matcher",
            ROUTES.replace("'severity =~ \"P1|P2\"'", "'severity =! P1'"),
            ":22: route.routes[0].routes[0].matchers[0]: ",
        ),
        (
            "unknown integration field",
            ROUTES.replace(
                "      routing_key: \"${PD_KEY}\"\n",
                "      routing_key: \"${PD_KEY}\"\n      sevrity: \"${PD_KEY}\"\n",
            ),
            ":5: receivers[0].pagerduty.sevrity: unknown field `sevrity`",
        ),
        (
            "a secret in a field of the wrong type",
            ROUTES.replace(
                "      routing_key: \"${PD_KEY}\"\n",
                "      routing_key: \"${PD_KEY}\"\n      timeout: \"${PD_KEY}\"\n",
            ),
            ":5: receivers[0].pagerduty.timeout: ",
        ),
        (
            "an integration that cannot be built",
            ROUTES.replace(
                "      secret: \"${HOOK_SECRET}\"\n",
                "      secret: short\n",
            ),
            ":12: receivers[2].webhook.secret: ",
        ),
        (
            "an unset environment variable",
            ROUTES.replace("${HOOK_SECRET}", "${NO_SUCH_VARIABLE_SET}"),
            ":12: ",
        ),
    ];
    for (what, text, expected) in cases {
        let (code, stdout, stderr) = check(&dir.write("routes.yaml", &text));
        assert_eq!(code, 2, "{what}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!(
                "mcpulse: {}{expected}",
                dir.0.path().join("routes.yaml").display()
            )),
            "{what}: expected {expected:?} in:\n{stderr}"
        );
        assert!(stdout.is_empty(), "{what}: {stdout}");
    }
}

#[test]
fn config_check_checks_the_routes_file_it_names() {
    let dir = Dir::new();
    let routes = dir.write("routes.yaml", ROUTES);
    let config = dir.write(
        "mcpulse.yaml",
        &format!(
            "data_dir: {}\nauth:\n  anonymous_tenant: default\nnotify:\n  routes: {}\n",
            dir.0.path().join("data").display(),
            routes.display()
        ),
    );
    let out = mcpulse([Path::new("config"), Path::new("check"), &config]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("routes.yaml: ok — 5 routes"), "{stdout}");

    dir.write(
        "routes.yaml",
        &ROUTES.replace(
            "      receiver: acme-chat\n      routes:",
            "      receiver: acme-chatt\n      routes:",
        ),
    );
    let out = mcpulse([Path::new("config"), Path::new("check"), &config]);
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("notify.routes: ")
            && stderr.contains(":19: route.routes[0].receiver: unknown receiver \"acme-chatt\""),
        "{stderr}"
    );
}

#[test]
fn test_prints_receivers_and_the_exact_payloads_redacted() {
    let dir = Dir::new();
    let routes = dir.write("routes.yaml", ROUTES);
    let out = mcpulse([
        "routes",
        "test",
        routes.to_str().unwrap(),
        "--tenant",
        "acme",
        "--server",
        "weather",
        "--severity",
        "P1",
        "--at",
        "2026-01-14T10:00:00Z",
        "--silences",
        dir.write("none.json", "{\"silences\": []}")
            .to_str()
            .unwrap(),
    ]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    for expected in [
        "event: tenant=acme server=weather class=unreachable severity=P1",
        "→ pages [pagerduty] by route acme-pages (root > acme > acme-pages)",
        "→ acme-chat [discord] by route acme-chat (root > acme > acme-chat)",
        "  pagerduty (receivers[0].pagerduty):\n    POST https://events.pagerduty.com/v2/enqueue\n",
        "\"routing_key\": \"<redacted>\"",
        "\"event_action\": \"trigger\"",
        "\"dedup_key\": \"mcpulse/acme/weather/unreachable\"",
        "POST https://discord.com/api/webhooks/123456/<redacted>?wait=true",
        "\"title\": \"[P1] acme/weather unreachable — OPEN\"",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }

    // A follow-up from a JSON file: PagerDuty resolves, Discord edits its message.
    let incident = dir.write(
        "resolve.json",
        r#"{"tenant": "acme", "server": "weather", "action": "resolve", "time": "2026-01-14T10:30:00Z"}"#,
    );
    let out = mcpulse([
        "routes",
        "test",
        routes.to_str().unwrap(),
        "--incident",
        incident.to_str().unwrap(),
        "--silences",
        dir.0.path().join("none.json").to_str().unwrap(),
    ]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("\"event_action\": \"resolve\""), "{stdout}");
    assert!(
        stdout.contains(
            "PATCH https://discord.com/api/webhooks/123456/<redacted>/messages/MESSAGE_ID"
        ),
        "{stdout}"
    );

    // Storms go to the operator tree; the webhook's URL path and signature key stay hidden.
    let out = mcpulse([
        "routes",
        "test",
        routes.to_str().unwrap(),
        "--incident",
        r#"{"tenant": "_operator"}"#,
        "--silences",
        dir.0.path().join("none.json").to_str().unwrap(),
    ]);
    let (stdout, _) = texts(&out);
    assert!(
        stdout.contains("→ noc [webhook] by route operator"),
        "{stdout}"
    );
    assert!(
        stdout.contains("POST https://hooks.example.com/<redacted>"),
        "{stdout}"
    );
    assert!(stdout.contains("X-Mcpulse-Signature: sha256="), "{stdout}");

    // Muted by a time interval: routed, nothing sent.
    let out = mcpulse([
        "routes",
        "test",
        routes.to_str().unwrap(),
        "--tenant",
        "globex",
        "--silences",
        dir.0.path().join("none.json").to_str().unwrap(),
    ]);
    let (stdout, _) = texts(&out);
    assert!(
        stdout.contains("→ noc [webhook] by route globex"),
        "{stdout}"
    );
    assert!(
        stdout.contains("muted: time interval always is active: not sent now"),
        "{stdout}"
    );
    assert!(
        stdout.contains("payloads: none (nothing would be sent)"),
        "{stdout}"
    );
}

#[test]
fn test_refuses_a_bad_event_naming_the_flag() {
    let dir = Dir::new();
    let routes = dir.write("routes.yaml", ROUTES);
    let out = mcpulse([
        "routes",
        "test",
        routes.to_str().unwrap(),
        "--tenant",
        "acme",
        "--severity",
        "P9",
    ]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("mcpulse: --severity: unknown variant `P9`"),
        "{stderr}"
    );
    let out = mcpulse([
        "routes",
        "test",
        routes.to_str().unwrap(),
        "--incident",
        r#"{"tenant": "acme", "sevrity": "P1"}"#,
    ]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--incident: ") && stderr.contains("unknown field `sevrity`"),
        "{stderr}"
    );
}

#[test]
fn silences_from_the_cli_are_listed_applied_by_routes_test_and_expired() {
    let dir = Dir::new();
    let config = dir.config();
    let config = config.to_str().unwrap();
    let routes = dir.write("routes.yaml", ROUTES);
    let out = mcpulse([
        "silence",
        "add",
        "-c",
        config,
        "--matcher",
        "server = weather",
        "--matcher",
        "severity =~ \"P1|P2\"",
        "--duration",
        "2h",
        "--comment",
        "database migration",
        "--tenant",
        "acme",
        "--created-by",
        "ana",
    ]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let id = stdout.trim().to_string();
    assert_eq!(id.len(), 36, "a UUID: {stdout}");

    let list = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec!["silence", "list", "-c", config, "--format", "json"];
        args.extend(extra);
        let out = mcpulse(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let listed = list(&[]);
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["tenant"], "acme");
    assert_eq!(listed[0]["state"], "active");
    assert_eq!(listed[0]["matchers"][1], "severity =~ \"P1|P2\"");
    let table = mcpulse(["silence", "list", "-c", config]);
    let (table, _) = texts(&table);
    assert!(
        table.starts_with("ID") && table.contains("database migration"),
        "{table}"
    );

    // routes test applies the data folder's silences.
    let out = mcpulse([
        "routes",
        "test",
        routes.to_str().unwrap(),
        "-c",
        config,
        "--tenant",
        "acme",
        "--server",
        "weather",
    ]);
    let (stdout, _) = texts(&out);
    assert!(
        stdout.contains(&format!("silenced by {id} until")),
        "{stdout}"
    );
    assert!(stdout.contains("payloads: none"), "{stdout}");

    let out = mcpulse(["silence", "expire", "-c", config, &id]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, format!("silence {id} expired\n"));
    assert!(list(&[]).is_empty());
    assert_eq!(list(&["--all"])[0]["state"], "expired");
    let again = mcpulse(["silence", "expire", "-c", config, &id]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("has already expired"));
    let missing = mcpulse(["silence", "expire", "-c", config, "no-such-id"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no silence with id \"no-such-id\""));

    // Bad input names the flag and changes nothing.
    for (args, expected) in [
        (
            vec!["--matcher", "severity = P9", "--duration", "1h"],
            "--matcher \"severity = P9\": ",
        ),
        (
            vec!["--matcher", "server =~ \".*\"", "--duration", "1h"],
            "--matcher: at least one matcher",
        ),
        (
            vec!["--matcher", "server = w", "--until", "2020-01-01T00:00:00Z"],
            "--until: ",
        ),
        (
            vec![
                "--matcher",
                "server = w",
                "--duration",
                "1h",
                "--tenant",
                "a/b",
            ],
            "--tenant: ",
        ),
    ] {
        let mut all = vec![
            "silence",
            "add",
            "-c",
            config,
            "--comment",
            "c",
            "--created-by",
            "ana",
        ];
        all.extend(args);
        let out = mcpulse(all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }
    assert_eq!(list(&["--all"]).len(), 1);
}
