//! `mcpulse`: observability and alerting for MCP servers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcpulse::Config;
use mcpulse::archive_store::ArchiveLocation;
use mcpulse::roles;
use mcpulse::roles::status::StatusFormat;
use mcpulse_queries::{OutputFormat, QueryEngine, Scope};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mcpulse",
    version,
    about = "Observability and alerting pipeline for MCP servers"
)]
struct Cli {
    /// Configuration file. Without it, ./mcpulse.yaml is used if present, else the
    /// embedded defaults (loopback ports, ./data, no token needed).
    #[arg(long, short, global = true, env = "MCPULSE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process: OTLP ingest, probe API, archivers and SQL endpoint
    /// (on the embedded log, or on Kafka).
    Run,
    /// Run the ingest role (Kafka only): OTLP/gRPC, OTLP/HTTP, the probe API, health and
    /// metrics.
    Ingest,
    /// Run the processors (Kafka only): the span and probe archivers, as members of their
    /// consumer groups; health and metrics on the API port.
    Process,
    /// Run the SQL API (Kafka deployments): `POST /api/v1/query`, health and metrics.
    Serve,
    /// The log.
    Bus {
        #[command(subcommand)]
        command: BusCommand,
    },
    /// Probe an MCP endpoint now and print a readable report: the protocol era and
    /// version, each phase's timing, the tool count and hash, the failure_reason if any,
    /// and the certificate's days to expiry. Exits 1 when the probe failed.
    Probe {
        /// The MCP endpoint to probe (http or https).
        #[arg(long, value_name = "URL")]
        once: String,
        /// Region label of the result.
        #[arg(long, default_value = "local")]
        region: String,
        /// auto (modern, then Streamable HTTP, then HTTP+SSE), modern, streamable_http or sse.
        #[arg(long, default_value = "auto")]
        transport: String,
        /// Deadline of the whole probe, e.g. 10s.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Name of an environment variable holding a bearer token to send.
        #[arg(long, value_name = "ENV_VAR")]
        bearer_env: Option<String>,
        /// Allow loopback addresses (refused by default, like every untrusted target).
        #[arg(long)]
        allow_loopback: bool,
        /// Allow private addresses (RFC 1918, unique-local; cloud metadata stays refused).
        #[arg(long)]
        allow_private: bool,
        /// Print the ProbeResult as JSON instead of the report.
        #[arg(long)]
        json: bool,
    },
    /// Run SQL over the archive and print the result.
    Query {
        /// The SQL statement (read-only).
        sql: String,
        /// Output: table, csv, json or ndjson.
        #[arg(long, short, default_value = "table")]
        format: OutputFormat,
        /// Only this tenant's rows (default: every tenant, as an operator).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration file; errors name the field at fault.
    Check {
        /// The file to check (defaults to --config or ./mcpulse.yaml).
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BusCommand {
    /// End offset, committed offset and lag per partition of consumer groups (default:
    /// the two archiver groups), with a total per group.
    Status {
        /// A consumer group to report (repeatable).
        #[arg(long = "group", short = 'g', value_name = "GROUP")]
        groups: Vec<String>,
        /// Topics to report the groups on (repeatable; default: the archiver group's
        /// topic, or every mcpulse topic for other groups).
        #[arg(long = "topic", value_name = "TOPIC")]
        topics: Vec<String>,
        /// Output: table or json.
        #[arg(long, short, value_enum, default_value_t = StatusFormat::Table)]
        format: StatusFormat,
    },
}

fn main() -> ExitCode {
    mcpulse::alloc::tune();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => check(file.or(cli.config)),
        Command::Run => load(cli.config.as_deref())
            .and_then(|config| runtime()?.block_on(role(config, Role::Run))),
        Command::Ingest => load(cli.config.as_deref())
            .and_then(|config| runtime()?.block_on(role(config, Role::Ingest))),
        Command::Process => load(cli.config.as_deref())
            .and_then(|config| runtime()?.block_on(role(config, Role::Process))),
        Command::Serve => load(cli.config.as_deref())
            .and_then(|config| runtime()?.block_on(role(config, Role::Serve))),
        Command::Bus {
            command:
                BusCommand::Status {
                    groups,
                    topics,
                    format,
                },
        } => load(cli.config.as_deref())
            .and_then(|config| runtime()?.block_on(bus_status(config, &groups, &topics, format))),
        Command::Probe {
            once,
            region,
            transport,
            timeout,
            bearer_env,
            allow_loopback,
            allow_private,
            json,
        } => {
            mcpulse::telemetry::init(&mcpulse::config::LogConfig {
                level: "warn".into(),
                ..Default::default()
            });
            let args = || -> anyhow::Result<mcpulse::probe_once::OnceArgs> {
                let transport = serde_json::from_value(serde_json::Value::String(transport.clone()))
                    .map_err(|_| anyhow::anyhow!("--transport: expected auto, modern, streamable_http or sse, got {transport:?}"))?;
                let bearer = match &bearer_env {
                    Some(var) => Some(std::env::var(var).map_err(|_| {
                        anyhow::anyhow!("--bearer-env: environment variable {var} is not set")
                    })?),
                    None => None,
                };
                Ok(mcpulse::probe_once::OnceArgs {
                    url: once.clone(),
                    region: region.clone(),
                    transport,
                    timeout,
                    bearer,
                    allow_loopback,
                    allow_private,
                    json,
                })
            };
            match args().and_then(|a| runtime()?.block_on(mcpulse::probe_once::run(a))) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            }
        }
        Command::Query {
            sql,
            format,
            tenant,
        } => load(cli.config.as_deref())
            .and_then(|config| runtime()?.block_on(query(config, &sql, format, tenant))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcpulse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The configuration to use: `--config`, else ./mcpulse.yaml, else the embedded default.
fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    let default = Path::new("mcpulse.yaml");
    match path {
        Some(p) => Ok(Config::load(p)?),
        None if default.exists() => Ok(Config::load(default)?),
        None => Ok(Config::embedded_default()),
    }
}

fn check(path: Option<PathBuf>) -> anyhow::Result<()> {
    let path = path.unwrap_or_else(|| PathBuf::from("mcpulse.yaml"));
    let config = Config::load(&path)?;
    println!(
        "{}: ok ({} tenant(s), {} operator(s), {}, data_dir {}, OTLP gRPC {}, OTLP HTTP {}, API {})",
        path.display(),
        config.auth.tenants.len(),
        config.auth.operators.len(),
        roles::describe_bus(&config),
        config.data_dir.display(),
        config.listen.otlp_grpc,
        config.listen.otlp_http,
        config.listen.api
    );
    Ok(())
}

enum Role {
    Run,
    Ingest,
    Process,
    Serve,
}

async fn role(config: Config, role: Role) -> anyhow::Result<()> {
    let name = match role {
        Role::Run => "run",
        Role::Ingest => "ingest",
        Role::Process => "process",
        Role::Serve => "serve",
    };
    if !matches!(role, Role::Run) {
        // Before anything is opened or logged.
        roles::require_shared_log(&config, name)?;
    }
    mcpulse::telemetry::init(&config.log);
    let shutdown = roles::shutdown_signal();
    match role {
        Role::Run => roles::all::run(config, shutdown).await,
        Role::Ingest => roles::ingest::run(config, shutdown).await,
        Role::Process => roles::process::run(config, shutdown).await,
        Role::Serve => roles::serve::run(config, shutdown).await,
    }
}

async fn bus_status(
    config: Config,
    groups: &[String],
    topics: &[String],
    format: StatusFormat,
) -> anyhow::Result<()> {
    let statuses = roles::status::read(&config, groups, topics).await?;
    use std::io::Write;
    std::io::stdout().write_all(roles::status::render(&statuses, format).as_bytes())?;
    Ok(())
}

async fn query(
    config: Config,
    sql: &str,
    format: OutputFormat,
    tenant: Option<String>,
) -> anyhow::Result<()> {
    let archive = ArchiveLocation::open(&config)?;
    let engine = QueryEngine::new(archive.catalog(), config.query.clone());
    let scope = tenant.map(Scope::Tenant).unwrap_or(Scope::All);
    let result = engine.execute(&scope, sql).await?;
    let rendered = format.render(&result.schema, &result.batches)?;
    use std::io::Write;
    std::io::stdout().write_all(&rendered)?;
    if result.truncated {
        eprintln!(
            "mcpulse: output cut at {} rows (query.max_rows)",
            config.query.max_rows
        );
    }
    Ok(())
}
