//! Reading `routes.yaml`: `${ENV}` interpolation, YAML parsing with the field path and
//! line of any error, then [`super::compile`]. Secrets are scrubbed from every error.

use mcpulse_schemas::env::{EnvError, interpolate};

use super::RoutesFile;
use super::compile::compile;
use super::config::FileConfig;
use super::error::{ErrorKind, RoutesError};
use super::locate::line_of;

/// Parses `text` (the contents of `file`), looking `${NAME}` references up with `env`.
pub(crate) fn parse(
    file: &str,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<RoutesFile, RoutesError> {
    let (interpolated, secrets) = interpolate(text, env).map_err(|e| env_error(file, e))?;
    let scrub = |e: RoutesError| e.scrubbed(&secrets);
    let config = deserialize(file, text, &interpolated).map_err(scrub)?;
    let compiled = compile(file, text, config).map_err(scrub)?;
    Ok(RoutesFile {
        file: file.to_string(),
        source: text.to_string(),
        receivers: compiled.receivers,
        route: compiled.route,
        operator_routes: compiled.operator_routes,
        time_intervals: compiled.time_intervals,
        secrets: super::Secrets(secrets),
    })
}

/// `line N: message` from the interpolation becomes a located error.
fn env_error(file: &str, e: EnvError) -> RoutesError {
    let (line, message) =
        e.0.strip_prefix("line ")
            .and_then(|rest| rest.split_once(": "))
            .and_then(|(n, message)| Some((n.parse().ok()?, message.to_string())))
            .map_or((None, e.0.clone()), |(n, m)| (Some(n), m));
    RoutesError {
        file: file.to_string(),
        line,
        path: String::new(),
        kind: ErrorKind::Env(message),
    }
}

/// Deserializes the interpolated text; `source` (the text as written) locates errors
/// the YAML parser gives no position for.
fn deserialize(file: &str, source: &str, text: &str) -> Result<FileConfig, RoutesError> {
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(RoutesError {
            file: file.to_string(),
            line: None,
            path: String::new(),
            kind: ErrorKind::Invalid("the file is empty (it needs at least `route:`)".into()),
        });
    }
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        // `?` stands for a segment serde_path_to_error could not name (a syntax error).
        let full = e.path().to_string();
        let mut path = full.as_str();
        while let Some(parent) = path.strip_suffix(".?") {
            path = parent;
        }
        let path = match path {
            "." | "?" => String::new(),
            p => p.to_string(),
        };
        let inner = e.into_inner();
        let line = inner
            .location()
            .map(|l| l.line())
            .or_else(|| line_of(source, &path));
        RoutesError {
            file: file.to_string(),
            line,
            kind: ErrorKind::Invalid(bare_message(&inner.to_string(), &path)),
            path,
        }
    })
}

/// The YAML error's message without the path (the field's own or an ancestor's) and
/// the position it repeats.
fn bare_message(message: &str, path: &str) -> String {
    let mut message = message;
    if let Some((prefix, rest)) = message.split_once(": ") {
        let is_ancestor = path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|tail| tail.starts_with(['.', '[']));
        if is_ancestor {
            message = rest;
        }
    }
    if let Some(at) = message.rfind(" at line ") {
        let tail = &message[at + " at line ".len()..];
        let is_position = tail
            .split_once(" column ")
            .is_some_and(|(l, c)| [l, c].iter().all(|n| n.bytes().all(|b| b.is_ascii_digit())));
        if is_position {
            message = &message[..at];
        }
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_message_drops_path_and_position() {
        assert_eq!(
            bare_message(
                "route.routes[0]: unknown field `recevier` at line 4 column 7",
                "route.routes[0]"
            ),
            "unknown field `recevier`"
        );
        assert_eq!(
            bare_message("route: unknown field `x`", "route.x"),
            "unknown field `x`"
        );
        assert_eq!(bare_message("invalid type: map", ""), "invalid type: map");
        assert_eq!(
            bare_message("invalid type: map", "invalid"),
            "invalid type: map"
        );
    }

    #[test]
    fn env_errors_keep_their_line() {
        let e = env_error(
            "r.yaml",
            EnvError("line 7: environment variable X is not set".into()),
        );
        assert_eq!(e.line, Some(7));
        assert_eq!(e.to_string(), "r.yaml:7: environment variable X is not set");
    }
}

#[cfg(test)]
mod file_tests {
    use crate::routes::{IntegrationKind, RoutesFile};

    fn env(name: &str) -> Option<String> {
        match name {
            "PD_KEY" => Some("s3cr3t-pd".into()),
            "DISCORD_URL" => Some("https://discord.example/api/webhooks/1/s3cr3t-dc".into()),
            _ => None,
        }
    }

    /// The error of `text`, displayed; checks no secret is in it.
    fn error(text: &str) -> String {
        let err = RoutesFile::parse(text, env).unwrap_err().to_string();
        assert!(!err.contains("s3cr3t"), "a secret in: {err}");
        err
    }

    const GOOD: &str = "# routes
receivers:
  - name: oncall
    pagerduty: { routing_key: \"${PD_KEY}\" }
  - name: chat
    discord:
      - webhook_url: \"${DISCORD_URL}\"
      - webhook_url: \"https://discord.example/other\"
route:
  id: root
  receiver: chat
  group_by: [tenant, server]
  routes:
    - id: acme-pages
      matchers:
        - tenant = acme
        - severity =~ \"P1|P2\"
      receiver: oncall
      continue: true
      mute_time_intervals: [weekends]
      active_time_intervals: [business-hours]
time_intervals:
  - name: business-hours
    time_zone: Europe/Paris
    intervals: [{ weekdays: [\"monday:friday\"], times: [{start_time: \"09:00\", end_time: \"18:00\"}] }]
  - name: weekends
    intervals: [{ weekdays: [\"saturday:sunday\"] }]
";

    #[test]
    fn parses_the_documented_example_and_exposes_its_secrets() {
        let f = RoutesFile::parse(GOOD, env).unwrap();
        assert_eq!(f.receivers().len(), 2);
        let oncall = f.receiver("oncall").unwrap();
        assert_eq!(oncall.integrations[0].kind, IntegrationKind::PagerDuty);
        assert_eq!(oncall.integrations[0].config["routing_key"], "s3cr3t-pd");
        assert_eq!(oncall.integrations[0].path, "receivers[0].pagerduty");
        assert_eq!(oncall.integrations[0].line, Some(4));
        let chat = f.receiver("chat").unwrap();
        assert_eq!(chat.integrations.len(), 2);
        assert_eq!(chat.integrations[1].path, "receivers[1].discord[1]");
        assert_eq!(chat.integrations[1].line, Some(8));
        assert_eq!(f.locate("receivers[1].discord[0].webhook_url"), Some(7));
        assert_eq!(f.routes().len(), 2);
        assert_eq!(f.route_by_id("acme-pages").unwrap().line, Some(14));
        assert_eq!(f.secrets().len(), 2);
        assert_eq!(
            f.redact("key s3cr3t-pd, url https://discord.example/api/webhooks/1/s3cr3t-dc"),
            "key ***, url ***"
        );
        let debug = format!("{f:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    #[test]
    fn unknown_fields_are_refused_everywhere_with_line_and_field() {
        let cases = [
            (
                "route:\n  id: r\n  receiver: x\n  recevier: y\n",
                "routes.yaml:4: route.recevier: unknown field `recevier`",
            ),
            (
                "receivers:\n  - name: x\n    slack: {url: u}\nroute: {id: r, receiver: x}\n",
                "routes.yaml:3: receivers[0].slack: unknown field `slack`, expected one of",
            ),
            (
                "route: {id: r, receiver: x}\ntime_intervals:\n  - name: t\n    location: UTC\n",
                "routes.yaml:4: time_intervals[0].location: unknown field `location`",
            ),
            (
                "route: {id: r, receiver: x}\nglobal: {}\n",
                "routes.yaml:2: global: unknown field `global`",
            ),
            (
                "route:\n  id: r\n  routes:\n    - id: a\n      group_wait: 30s\n",
                "routes.yaml:5: route.routes[0].group_wait: unknown field `group_wait`",
            ),
        ];
        for (text, want) in cases {
            let err = error(text);
            assert!(err.starts_with(want), "want {want}\n got {err}");
        }
    }

    #[test]
    fn bad_values_name_line_and_field() {
        let cases = [
            (
                "route:\n  id: r\n  receiver: x\n  routes:\n    - id: a\n      matchers:\n        - tenant = acme\n        - server =~ \"(\"\n",
                "routes.yaml:8: route.routes[0].matchers[1]: bad regex \"(\": ",
            ),
            (
                "route:\n  id: r\n  routes:\n    - id: a\n      matchers: [severity = P7]\n",
                "routes.yaml:5: route.routes[0].matchers[0]: severity is never \"P7\"",
            ),
            (
                "route:\n  id: r\n  routes:\n    - id: a\n      group_by: [status]\n",
                "routes.yaml:5: route.routes[0].group_by[0]: cannot group by status",
            ),
            (
                "route:\n  id: r\n  repeat_interval: soon\n",
                "routes.yaml:3: route.repeat_interval: ",
            ),
            (
                "route: {id: r, receiver: x}\ntime_intervals:\n  - name: t\n    time_zone: Europe/Pariss\n",
                "routes.yaml:4: time_intervals[0].time_zone: unknown time zone \"Europe/Pariss\"",
            ),
            (
                "route: {id: r, receiver: x}\ntime_intervals:\n  - name: t\n    intervals:\n      - weekdays: [\"monday:fryday\"]\n",
                "routes.yaml:5: time_intervals[0].intervals[0].weekdays[0]: invalid weekday \"fryday\"",
            ),
            (
                "receivers:\n  - name: x\n    webhook: \"http://h\"\nroute: {id: r, receiver: x}\n",
                "routes.yaml:3: receivers[0].webhook: invalid type: string \"http://h\", expected a mapping or a list of mappings",
            ),
            (
                "route:\n  id: r\n  continue: maybe\n",
                "routes.yaml:3: route.continue: invalid type",
            ),
            (
                "route: {id: r, receiver: x}\ntime_intervals:\n  - name: t\n    intervals:\n      - times:\n          - start_time: \"18:00\"\n            end_time: \"09:00\"\n",
                "routes.yaml:6: time_intervals[0].intervals[0].times[0]: start_time 18:00 is not before end_time 09:00",
            ),
            (
                "route:\n  id: r\n  routes:\n    - id: a\n      matchers:\n        - severity: P1\n          sever1ty: P2\n",
                "routes.yaml:6: route.routes[0].matchers[0]: unknown field \"sever1ty\"",
            ),
            ("receivers: []\n", "routes.yaml:1: missing field `route`"),
            ("# nothing\n", "routes.yaml: the file is empty"),
            (
                "route:\n  id: r\n   receiver: x\n",
                "routes.yaml:3: route: mapping values are not allowed in this context",
            ),
        ];
        for (text, want) in cases {
            let err = error(text);
            assert!(err.starts_with(want), "want {want}\n got {err}");
            assert!(!err.contains(" column "), "position repeated: {err}");
        }
    }

    #[test]
    fn env_errors_name_the_line_and_variable() {
        assert_eq!(
            error("receivers:\n  - name: x\n    webhook: {url: \"${MISSING}\"}\n"),
            "routes.yaml:3: environment variable MISSING is not set"
        );
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let cases = [
            // A secret where a receiver name goes.
            "receivers:\n  - name: x\n    webhook: {url: u}\nroute: {id: r, receiver: \"${PD_KEY}\"}\n",
            // As a key.
            "route:\n  id: r\n  receiver: x\n  ${PD_KEY}: 1\n",
            // In a bad matcher, a bad regex, a bad tenant, a bad time zone, a wrong type.
            "route:\n  id: r\n  routes: [{id: a, matchers: [\"${PD_KEY} = 1\"]}]\n",
            "route:\n  id: r\n  routes: [{id: a, matchers: [\"server =~ \\\"(${PD_KEY}\\\"\"]}]\n",
            "route: {id: r, receiver: x, tenant: \"${DISCORD_URL}\"}\n",
            "route: {id: r, receiver: x}\ntime_intervals: [{name: t, time_zone: \"${PD_KEY}\"}]\n",
            "receivers:\n  - name: x\n    pagerduty: \"${PD_KEY}\"\n",
            "route: {id: \"${DISCORD_URL}\", receiver: x}\n",
        ];
        for text in cases {
            let err = error(text);
            assert!(err.contains("***"), "expected the secret scrubbed: {err}");
        }
    }

    #[test]
    fn load_reads_a_file_and_names_it() {
        let dir = std::env::temp_dir().join(format!("mcpulse-routes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("routes.yaml");
        std::fs::write(
            &path,
            "receivers:\n  - {name: x, webhook: {url: u}}\nroute:\n  id: r\n  receiver: y\n",
        )
        .unwrap();
        let err = RoutesFile::load(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}:5: route.receiver: unknown receiver \"y\"",
                path.display()
            )
        );
        std::fs::write(
            &path,
            "receivers:\n  - {name: x, webhook: {url: u}}\nroute: {id: r, receiver: x}\n",
        )
        .unwrap();
        assert_eq!(
            RoutesFile::load(&path).unwrap().file(),
            path.display().to_string()
        );
        let missing = RoutesFile::load(&dir.join("nope.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("nope.yaml: cannot read the file"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
