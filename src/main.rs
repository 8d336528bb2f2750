//! `mcpulse`: observability and alerting for MCP servers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcpulse::Config;
use mcpulse::archive_store::ArchiveLocation;
use mcpulse::roles;
use mcpulse::roles::status::StatusFormat;
use mcpulse_queries::{OutputFormat, QueryEngine, Request, Scope};

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
    /// Run the notification stage (Kafka only): deliver alerts.v1 to the receivers of
    /// notify.routes, as a member of consumer group mcpulse-notify; health and metrics
    /// on the API port.
    Notify,
    /// The log.
    Bus {
        #[command(subcommand)]
        command: BusCommand,
    },
    /// Run the built-in prober over targets.yaml (on Kafka; with the embedded log the
    /// prober runs inside `mcpulse run`), or, with `--once URL`, probe one MCP endpoint now
    /// and print a readable report: the protocol era and version, each phase's timing,
    /// the tool count and hash, the failure_reason if any, and the certificate's days to
    /// expiry (exits 1 when that probe failed).
    Probe {
        /// Probe this MCP endpoint (http or https) once, print the report and exit.
        #[arg(long, value_name = "URL")]
        once: Option<String>,
        /// The targets file (default: prober.targets of the configuration).
        #[arg(long, value_name = "FILE", conflicts_with = "once")]
        targets: Option<PathBuf>,
        /// Region label of the results (default: prober.region, or `local` with --once).
        #[arg(long)]
        region: Option<String>,
        /// auto (modern, then Streamable HTTP, then HTTP+SSE), modern, streamable_http or
        /// sse (--once only; targets.yaml sets it per target).
        #[arg(long, default_value = "auto", requires = "once")]
        transport: String,
        /// Deadline of the whole probe, e.g. 10s (--once only).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, requires = "once")]
        timeout: std::time::Duration,
        /// Name of an environment variable holding a bearer token to send (--once only).
        #[arg(long, value_name = "ENV_VAR", requires = "once")]
        bearer_env: Option<String>,
        /// Allow loopback addresses (refused by default, like every untrusted target;
        /// --once only: targets.yaml has its own policy).
        #[arg(long, requires = "once")]
        allow_loopback: bool,
        /// Allow private addresses (RFC 1918, unique-local; cloud metadata stays refused;
        /// --once only).
        #[arg(long, requires = "once")]
        allow_private: bool,
        /// Print the ProbeResult as JSON instead of the report (--once only).
        #[arg(long, requires = "once")]
        json: bool,
    },
    /// Run SQL over the archive and print the result: free SQL, or a named query shipped
    /// with mcpulse (`--named uptime_30d --param server=weather`; `--list-named` lists
    /// them).
    Query {
        /// The SQL statement (read-only); not with --named.
        #[arg(required_unless_present_any = ["named", "list_named"], conflicts_with_all = ["named", "list_named"])]
        sql: Option<String>,
        /// Run this named query instead of SQL.
        #[arg(long, value_name = "NAME")]
        named: Option<String>,
        /// A parameter of the named query, NAME=VALUE (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE", requires = "named")]
        params: Vec<String>,
        /// List the named queries, their descriptions and parameters.
        #[arg(long)]
        list_named: bool,
        /// Output: table, csv, json, ndjson or arrow (the Arrow IPC stream format).
        #[arg(long, short, default_value = "table")]
        format: OutputFormat,
        /// Only this tenant's rows (default: every tenant, as an operator).
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many rows (never more than query.max_rows).
        #[arg(long)]
        max_rows: Option<usize>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Alert routes (routes.yaml): check a file, test an incident against it, backtest
    /// it over the archived history.
    Routes {
        #[command(subcommand)]
        command: mcpulse::routes_cli::RoutesCommand,
    },
    /// Silences ({data_dir}/silences.json): add, list, expire.
    Silence {
        #[command(subcommand)]
        command: mcpulse::routes_cli::SilenceCommand,
    },
    /// Operations on the archive: compaction, retention, deleting a tenant or a server.
    Admin {
        #[command(subcommand)]
        command: mcpulse::admin::AdminCommand,
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
        Command::Notify => load(cli.config.as_deref())
            .and_then(|config| runtime()?.block_on(role(config, Role::Notify))),
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
            once: None,
            targets,
            region,
            ..
        } => load(cli.config.as_deref()).and_then(|config| {
            let overrides = roles::prober::ProberOverrides { region, targets };
            runtime()?.block_on(async move {
                if config.is_embedded() {
                    // Before anything is opened or logged.
                    return roles::prober::run(config, overrides, std::future::pending()).await;
                }
                mcpulse::telemetry::init(&config.log);
                roles::prober::run(config, overrides, roles::shutdown_signal()).await
            })
        }),
        Command::Probe {
            once: Some(once),
            region,
            transport,
            timeout,
            bearer_env,
            allow_loopback,
            allow_private,
            json,
            ..
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
                    region: region.clone().unwrap_or_else(|| "local".into()),
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
            list_named: true, ..
        } => {
            print!("{}", mcpulse_queries::named::Listing);
            Ok(())
        }
        Command::Query {
            sql,
            named,
            params,
            format,
            tenant,
            max_rows,
            ..
        } => query_request(sql, named, &params).and_then(|request| {
            load(cli.config.as_deref()).and_then(|config| {
                runtime()?.block_on(query(config, request, format, tenant, max_rows))
            })
        }),
        Command::Routes { command } => {
            return mcpulse::routes_cli::routes(command, || load(cli.config.as_deref()));
        }
        Command::Silence { command } => {
            return mcpulse::routes_cli::silence(command, || load(cli.config.as_deref()));
        }
        Command::Admin { command } => {
            load(cli.config.as_deref()).and_then(|config| mcpulse::admin::run(command, config))
        }
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
    println!(
        "archive: {}",
        mcpulse::archive_store::describe_config(&config)
    );
    if let Some(targets) = &config.prober.targets {
        let file = mcpulse_ingest::prober::targets::load_targets(targets)
            .map_err(|e| anyhow::anyhow!("prober.targets: {e}"))?;
        let tenants: std::collections::BTreeSet<&str> =
            file.targets.iter().map(|t| t.tenant.as_str()).collect();
        println!(
            "{}: ok ({} target(s) of {} tenant(s), region {})",
            targets.display(),
            file.targets.len(),
            tenants.len(),
            config.prober.region
        );
    }
    if let Some(routes) = config
        .notify
        .routes
        .as_ref()
        .filter(|_| config.notify.enabled)
    {
        // The same checks as `mcpulse routes check` (lines and fields named, secrets
        // never printed), so a broken routes file fails here, not at start.
        mcpulse::routes_cli::check::run(routes)
            .map_err(|e| anyhow::anyhow!("notify.routes: {}: {e}", routes.display()))?;
    }
    Ok(())
}

enum Role {
    Run,
    Ingest,
    Process,
    Serve,
    Notify,
}

async fn role(config: Config, role: Role) -> anyhow::Result<()> {
    let name = match role {
        Role::Run => "run",
        Role::Ingest => "ingest",
        Role::Process => "process",
        Role::Serve => "serve",
        Role::Notify => "notify",
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
        Role::Notify => roles::notify::run(config, shutdown).await,
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

/// The request of `mcpulse query`: SQL, or a named query with `--param NAME=VALUE`s.
fn query_request(
    sql: Option<String>,
    named: Option<String>,
    params: &[String],
) -> anyhow::Result<Request> {
    match (sql, named) {
        (Some(sql), None) => Ok(Request::sql(sql)),
        (None, Some(name)) => {
            let mut values = std::collections::BTreeMap::new();
            for param in params {
                let (key, value) = param
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--param {param:?}: expected NAME=VALUE"))?;
                if values.insert(key.to_string(), value.to_string()).is_some() {
                    anyhow::bail!("--param {key}: given twice");
                }
            }
            Ok(Request::Named {
                name,
                params: values,
            })
        }
        _ => anyhow::bail!("give SQL or --named NAME"),
    }
}

async fn query(
    config: Config,
    request: Request,
    format: OutputFormat,
    tenant: Option<String>,
    max_rows: Option<usize>,
) -> anyhow::Result<()> {
    let archive = ArchiveLocation::connect(&config).await?;
    let engine = QueryEngine::new(archive.catalog(), config.query.clone());
    let scope = tenant.map(Scope::Tenant).unwrap_or(Scope::All);
    let mut rows = engine.stream(&scope, &request, max_rows).await?;
    let mut encoder = mcpulse_queries::format::Encoder::new(format, rows.schema.clone())?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    while let Some(batch) = rows.next().await {
        out.write_all(&encoder.push(&batch?)?)?;
    }
    out.write_all(&encoder.finish()?)?;
    out.flush()?;
    if rows.truncated() {
        eprintln!(
            "mcpulse: output cut at {} rows (--max-rows / query.max_rows)",
            rows.max_rows
        );
    }
    Ok(())
}
