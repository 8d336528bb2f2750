//! A small MCP server on rmcp (the official Rust MCP SDK) for mcpulse's prober tests,
//! over Streamable HTTP on loopback only.
//!
//!     mcpulse-rmcp-test-server [--port N] [--stateless] [--json-response]
//!
//! `--port 0` (the default) binds a free port. Session mode (rmcp's default: an
//! `Mcp-Session-Id` at initialize, a GET stream, DELETE) unless `--stateless`;
//! `--json-response` (stateless only, as in rmcp) answers with `application/json`
//! instead of an SSE stream. Once listening it prints one line on stdout,
//! `READY http://127.0.0.1:PORT/mcp`, then serves until killed.
//!
//! Three tools: `add` (a, b: integers), `echo` (text), `weather` (city, units).

use std::sync::Arc;

use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct AddRequest {
    /// The left operand.
    a: i64,
    /// The right operand.
    b: i64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct EchoRequest {
    /// Returned unchanged.
    text: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Units {
    Celsius,
    Fahrenheit,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct WeatherRequest {
    /// The city to report on.
    city: String,
    /// Temperature units (default celsius).
    units: Option<Units>,
}

#[derive(Debug, Clone)]
struct TestServer {
    #[expect(dead_code, reason = "read by the code #[tool_handler] generates")]
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl TestServer {
    fn new() -> Self {
        TestServer {
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Adds two integers.")]
    fn add(&self, Parameters(AddRequest { a, b }): Parameters<AddRequest>) -> String {
        (a + b).to_string()
    }

    #[tool(description = "Returns its input unchanged.")]
    fn echo(&self, Parameters(EchoRequest { text }): Parameters<EchoRequest>) -> String {
        text
    }

    #[tool(description = "A made-up weather report for a city.")]
    fn weather(
        &self,
        Parameters(WeatherRequest { city, units }): Parameters<WeatherRequest>,
    ) -> String {
        match units.unwrap_or(Units::Celsius) {
            Units::Celsius => format!("{city}: sunny, 21 degrees celsius"),
            Units::Fahrenheit => format!("{city}: sunny, 70 degrees fahrenheit"),
        }
    }
}

#[tool_handler]
impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_instructions("mcpulse rmcp test server")
    }
}

struct Args {
    port: u16,
    stateless: bool,
    json_response: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        port: 0,
        stateless: false,
        json_response: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--port" => {
                args.port = it
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| usage("--port needs a number"))
            }
            "--stateless" => args.stateless = true,
            "--json-response" => args.json_response = true,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    args
}

fn usage(error: &str) -> ! {
    if !error.is_empty() {
        eprintln!("error: {error}");
    }
    eprintln!("usage: mcpulse-rmcp-test-server [--port N] [--stateless] [--json-response]");
    std::process::exit(if error.is_empty() { 0 } else { 2 })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse_args();
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(!args.stateless)
        .with_json_response(args.json_response)
        .with_sse_keep_alive(None);
    let service = StreamableHttpService::new(
        || Ok(TestServer::new()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .unwrap_or_else(|e| panic!("binding 127.0.0.1:{}: {e}", args.port));
    let addr = listener.local_addr().expect("local address");
    println!("READY http://{addr}/mcp");
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("serve: {e}");
        std::process::exit(1);
    }
}
