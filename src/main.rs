//! `mcpulse`: observability and alerting for MCP servers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcpulse::Config;
use mcpulse::archive_store::ArchiveLocation;
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
    /// Run every role in one process on the embedded log: OTLP ingest, probe API,
    /// archiver and SQL endpoint.
    Run,
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

fn main() -> ExitCode {
    mcpulse::alloc::tune();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => check(file.or(cli.config)),
        Command::Run => {
            load(cli.config.as_deref()).and_then(|config| runtime()?.block_on(serve(config)))
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
        "{}: ok ({} tenant(s), {} operator(s), data_dir {}, OTLP gRPC {}, OTLP HTTP {}, API {})",
        path.display(),
        config.auth.tenants.len(),
        config.auth.operators.len(),
        config.data_dir.display(),
        config.listen.otlp_grpc,
        config.listen.otlp_http,
        config.listen.api
    );
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    mcpulse::telemetry::init(&config.log);
    mcpulse::run::run(config, shutdown_signal()).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
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
