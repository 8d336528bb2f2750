//! `mcpulse routes check|test|backtest` and `mcpulse silence add|list|expire`: the
//! command-line side of alert routing (`routes.yaml`) and silences. The silences file
//! ([`silences::SilenceStore`]) is shared with the HTTP API ([`crate::api::silences_router`])
//! and read by the notify stage.
//!
//! Exit codes: 0 done; 2 the input is wrong (the routes file, a flag, the event, a
//! silence), with the problem on stderr naming the line and field or the flag; 1
//! anything else (reading the archive or the silences file). Secrets from `${ENV}`
//! references never reach stdout or stderr.

pub mod backtest;
pub mod check;
pub mod history;
pub mod incident;
pub mod integrations;
pub mod payloads;
mod silence_cmd;
pub mod silences;
mod table;
mod test_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use mcpulse_sinks::routes::{RoutesError, RoutesFile, SilenceSet};

use crate::Config;
use incident::{IncidentArgs, IncidentError};
use integrations::{IntegrationError, Integrations};
use silences::{SilenceStore, StoreError};

/// `mcpulse routes …`.
#[derive(Subcommand, Debug)]
pub enum RoutesCommand {
    /// Validate a routes file: syntax, routes, matchers, time intervals, and every
    /// receiver integration (as delivery would build it). Errors name the line and field
    /// (exit 2); warnings (routes that never match, unused receivers…) are printed with
    /// the summary.
    Check {
        /// The routes file.
        file: PathBuf,
    },
    /// Show which routes and receivers an incident event reaches (muted and silenced
    /// noted) and the exact requests each integration would make, secrets redacted.
    Test {
        /// The routes file.
        file: PathBuf,
        #[command(flatten)]
        incident: IncidentArgs,
        /// Route at this time (RFC 3339; default: the event's time, else now): time
        /// intervals and silences are evaluated then.
        #[arg(long, value_parser = parse_rfc3339)]
        at: Option<DateTime<Utc>>,
        /// Silences to apply (default: {data_dir}/silences.json of the configuration).
        #[arg(long, value_name = "FILE")]
        silences: Option<PathBuf>,
    },
    /// Replay the archived incident history (`alerts`, every tenant) through a candidate
    /// routes file, each event at its own time, and compare per receiver what it would
    /// have sent with what was sent (`notifications`).
    Backtest {
        /// The candidate routes file.
        file: PathBuf,
        /// Start of the window: a duration back from now (`7d`, `36h`) or RFC 3339.
        #[arg(long, default_value = "7d", value_parser = parse_when)]
        since: When,
        /// End of the window (default: now): a duration back from now or RFC 3339.
        #[arg(long, value_parser = parse_when)]
        until: Option<When>,
        /// Silences to apply (default: {data_dir}/silences.json, which keeps expired
        /// silences for 30 days).
        #[arg(long, value_name = "FILE")]
        silences: Option<PathBuf>,
        /// Output: table or json.
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
}

/// `mcpulse silence …`.
#[derive(Subcommand, Debug)]
pub enum SilenceCommand {
    /// Silence matching incident events for a while; prints the new silence's id.
    Add {
        /// A matcher (`server = weather`, `severity =~ "P1|P2"`, `class != tls`);
        /// repeatable, all must hold.
        #[arg(long = "matcher", short = 'm', value_name = "MATCHER", required = true)]
        matchers: Vec<String>,
        /// How long, from the start (`2h`, `30m`).
        #[arg(long, value_parser = humantime::parse_duration, required_unless_present = "until", conflicts_with = "until")]
        duration: Option<std::time::Duration>,
        /// The end (RFC 3339), instead of --duration.
        #[arg(long, value_parser = parse_rfc3339)]
        until: Option<DateTime<Utc>>,
        /// The start (RFC 3339; default now).
        #[arg(long, value_parser = parse_rfc3339)]
        starts_at: Option<DateTime<Utc>>,
        /// Why.
        #[arg(long)]
        comment: String,
        /// Only this tenant's events (default: every tenant's).
        #[arg(long)]
        tenant: Option<String>,
        /// Who is silencing.
        #[arg(long)]
        created_by: String,
    },
    /// List silences (pending and active; with --all, expired ones too).
    List {
        /// Include expired silences (kept 30 days).
        #[arg(long)]
        all: bool,
        /// Only this tenant's silences.
        #[arg(long)]
        tenant: Option<String>,
        /// Output: table or json.
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// End a silence now.
    Expire {
        /// The silence's id.
        id: String,
    },
}

/// Output of listing commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// A point in time given on the command line.
#[derive(Clone, Copy, Debug)]
pub enum When {
    Ago(std::time::Duration),
    At(DateTime<Utc>),
}

impl When {
    pub fn resolve(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            When::At(t) => t,
            When::Ago(d) => now - chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX),
        }
    }
}

fn parse_rfc3339(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-01-14T10:00:00Z: {e}"))
}

fn parse_when(text: &str) -> Result<When, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(When::At(t.to_utc()));
    }
    humantime::parse_duration(text).map(When::Ago).map_err(|e| {
        format!("expected a duration back from now (7d, 36h) or an RFC 3339 time: {e}")
    })
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The routes file is wrong (located, secrets scrubbed).
    #[error(transparent)]
    Routes(#[from] RoutesError),
    /// Receiver integrations that cannot work (located, secrets scrubbed), one per line.
    #[error("{}", display_all(.0))]
    Integrations(Vec<IntegrationError>),
    /// The event of `routes test` cannot be built.
    #[error(transparent)]
    Incident(#[from] IncidentError),
    /// A flag is wrong.
    #[error("{0}")]
    Usage(String),
    /// The silences file cannot be read or written, or the change is refused.
    #[error(transparent)]
    Silences(#[from] StoreError),
    /// The archive cannot be read.
    #[error(transparent)]
    History(#[from] history::HistoryError),
    /// The configuration cannot be loaded, or the runtime cannot start.
    #[error("{0:#}")]
    Setup(anyhow::Error),
}

fn display_all(errors: &[IntegrationError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

impl CliError {
    /// 2 for wrong input, 1 for failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Routes(_)
            | CliError::Integrations(_)
            | CliError::Incident(_)
            | CliError::Usage(_) => 2,
            CliError::Silences(StoreError::Silence(_)) => 2,
            CliError::Silences(_) | CliError::History(_) | CliError::Setup(_) => 1,
        }
    }

    /// Prints the error, one `mcpulse: …` line per problem, and gives its exit code.
    fn report(&self) -> ExitCode {
        for line in self.to_string().lines() {
            eprintln!("mcpulse: {line}");
        }
        ExitCode::from(self.exit_code())
    }
}

/// Runs `mcpulse routes …`; `config` loads the configuration when a command needs it.
pub fn routes(command: RoutesCommand, config: impl FnOnce() -> anyhow::Result<Config>) -> ExitCode {
    let result = match command {
        RoutesCommand::Check { file } => check::run(&file),
        RoutesCommand::Test {
            file,
            incident,
            at,
            silences,
        } => routes_test(&file, &incident, at, silences.as_deref(), config),
        RoutesCommand::Backtest {
            file,
            since,
            until,
            silences,
            format,
        } => routes_backtest(&file, since, until, silences.as_deref(), format, config),
    };
    finish(result)
}

/// Runs `mcpulse silence …` on `{data_dir}/silences.json`.
pub fn silence(
    command: SilenceCommand,
    config: impl FnOnce() -> anyhow::Result<Config>,
) -> ExitCode {
    let result = config().map_err(CliError::Setup).and_then(|config| {
        let store = SilenceStore::in_data_dir(&config.data_dir);
        match command {
            SilenceCommand::Add {
                matchers,
                duration,
                until,
                starts_at,
                comment,
                tenant,
                created_by,
            } => silence_cmd::add(
                &store,
                silence_cmd::AddArgs {
                    matchers,
                    duration,
                    starts_at,
                    until,
                    comment,
                    tenant,
                    created_by,
                },
            ),
            SilenceCommand::List {
                all,
                tenant,
                format,
            } => silence_cmd::list(&store, all, tenant.as_deref(), format),
            SilenceCommand::Expire { id } => silence_cmd::expire(&store, &id),
        }
    });
    finish(result)
}

fn finish(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

fn routes_test(
    file: &Path,
    incident: &IncidentArgs,
    at: Option<DateTime<Utc>>,
    silences: Option<&Path>,
    config: impl FnOnce() -> anyhow::Result<Config>,
) -> Result<(), CliError> {
    let silences = match silences {
        Some(path) => Some(load_silences(path)?),
        // Without --silences, the configured data folder's, when there is one.
        None => match config() {
            Ok(config) => Some(SilenceStore::in_data_dir(&config.data_dir).load()?),
            Err(e) => {
                eprintln!("mcpulse: silences not applied (the configuration does not load: {e:#})");
                None
            }
        },
    };
    test_cmd::run(file, incident, at, silences.as_ref())
}

fn routes_backtest(
    path: &Path,
    since: When,
    until: Option<When>,
    silences: Option<&Path>,
    format: OutputFormat,
    config: impl FnOnce() -> anyhow::Result<Config>,
) -> Result<(), CliError> {
    let file = RoutesFile::load(path)?;
    let integrations = Integrations::build(&file).map_err(CliError::Integrations)?;
    let config = config().map_err(CliError::Setup)?;
    let now = Utc::now();
    let (since, until) = (since.resolve(now), until.map_or(now, |u| u.resolve(now)));
    if since >= until {
        return Err(CliError::Usage(format!(
            "--since: {} is not before the end of the window, {}",
            since.to_rfc3339(),
            until.to_rfc3339()
        )));
    }
    let silences = match silences {
        Some(path) => load_silences(path)?,
        None => SilenceStore::in_data_dir(&config.data_dir).load()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Setup(e.into()))?;
    let (events, sent) = runtime.block_on(async {
        let history = history::History::open(&config)?;
        eprintln!(
            "mcpulse: reading alerts from {} to {}…",
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let events = history.alerts(since, until).await?;
        let sent = history.sent(since, until).await?;
        Ok::<_, CliError>((events, sent))
    })?;
    let report = backtest::run(
        &file,
        &integrations,
        &backtest::Inputs {
            since,
            until,
            events: &events,
            silences: Some(&silences),
            sent: sent.as_deref(),
        },
    );
    let text = match format {
        OutputFormat::Table => report.to_string(),
        OutputFormat::Json => {
            let mut json = serde_json::to_string_pretty(&report).expect("a report serializes");
            json.push('\n');
            json
        }
    };
    print!("{}", file.redact(&text));
    Ok(())
}

fn load_silences(path: &Path) -> Result<SilenceSet, CliError> {
    let text = std::fs::read(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| {
        CliError::Usage(format!(
            "--silences: {} is not a silences file: {e}",
            path.display()
        ))
    })
}
