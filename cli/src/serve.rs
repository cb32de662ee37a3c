//! `tempest serve` and the API clients `tempest start`, `signal` and `show`.
//!
//! Owns the production wiring: the built-in workflows (every scenario's and the runtime's
//! `steps`) and their activities, the LLM backend chosen by `--llm`, the SQLite file, the bind
//! policy and logging. The clients print the server's JSON answer on stdout and its error on
//! stderr. It never decides anything about a run; the runtime and engine do.

use crate::Outcome;
use anyhow::Context as _;
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use tempest_engine::services::Activities;
use tempest_engine::Registry;
use tempest_runtime::client::{Answer, ApiClient};
use tempest_runtime::http::{self, ApiState};
use tempest_runtime::llm::{Config, LlmClient};
use tempest_runtime::services::{LlmBackend, LlmFactory, MockLlm};
use tempest_runtime::{builtin, host, sqlite, Host, Http, RunStore};

/// Where `tempest serve` listens and the clients connect by default.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
/// Bearer token of the API, for the server and its clients.
const TOKEN_VAR: &str = "TEMPEST_TOKEN";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LlmChoice {
    /// A deterministic in-process model: no key, no network
    Mock,
    /// An OpenAI-compatible provider (OPENAI_BASE_URL, OPENAI_API_KEY, TEMPEST_LLM_MODEL)
    Openai,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

pub(crate) struct ServeRequest<'a> {
    pub(crate) db: &'a Path,
    pub(crate) listen: SocketAddr,
    pub(crate) llm: LlmChoice,
    pub(crate) log_format: LogFormat,
    /// Share of mock LLM requests that fail once (to exercise retries).
    pub(crate) mock_failure_percent: u64,
}

/// Every workflow type `tempest serve` runs, and their activities.
pub(crate) fn workflows() -> (Registry, Vec<Activities>) {
    let mut registry = tempest_scenarios::registry();
    let mut steps = Activities::new();
    builtin::register(&mut registry, &mut steps);
    let mut activities = vec![steps];
    activities.extend(tempest_scenarios::all().iter().map(|s| s.activities()));
    (registry, activities)
}

fn token() -> Option<String> {
    std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

pub(crate) fn serve(request: ServeRequest<'_>, out: &mut impl Write) -> anyhow::Result<Outcome> {
    let llm: LlmFactory = match request.llm {
        LlmChoice::Mock => {
            let failure_percent = request.mock_failure_percent;
            Box::new(move || Rc::new(MockLlm::new(failure_percent)) as Rc<dyn LlmBackend>)
        }
        LlmChoice::Openai => {
            let client = match Config::from_env().and_then(LlmClient::new) {
                Ok(client) => client,
                Err(error) => {
                    eprintln!("tempest serve: --llm openai: {error}");
                    return Ok(Outcome::BadInput);
                }
            };
            Box::new(move || Rc::new(client) as Rc<dyn LlmBackend>)
        }
    };
    let token = token();
    if let Err(message) = http::check_bind(request.listen, token.as_deref()) {
        eprintln!("tempest serve: {message}");
        return Ok(Outcome::BadInput);
    }
    init_logging(request.log_format);
    let listener = std::net::TcpListener::bind(request.listen)
        .with_context(|| format!("cannot listen on {} (--listen)", request.listen))?;
    let address = listener.local_addr()?;
    let io = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (store, _journal) = io
        .block_on(sqlite::open_store(request.db, Default::default()))
        .with_context(|| format!("cannot open the store (--db {})", request.db.display()))?;
    let store: Arc<dyn RunStore> = Arc::new(store);
    let (registry, activities) = workflows();
    let state = ApiState { store: store.clone(), registry: registry.clone(), token };
    let router = http::app(state, Some(tempest_runtime::web::router()));
    let host = Host::start(store, host::Config::new(registry, activities, llm), Some(Http { listener, router }))?;
    writeln!(out, "tempest serve: listening on http://{address} (store {})", request.db.display())?;
    out.flush()?;
    tracing::info!(%address, db = %request.db.display(), "serving");
    if host.join() {
        Ok(Outcome::Ok)
    } else {
        // The host thread panicked (a broken invariant): stop serving rather than hang.
        anyhow::bail!("the runtime's worker thread stopped on a bug; restart to recover from the store")
    }
}

/// What the client commands ask.
pub(crate) enum ClientCommand<'a> {
    Start { workflow_type: &'a str, workflow_id: &'a str, input: &'a str },
    Signal { workflow_id: &'a str, name: &'a str, payload: &'a str, signal_id: Option<&'a str> },
    Show { workflow_id: &'a str, history: bool },
}

fn parse_json(flag: &str, text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("{flag} is not JSON: {e}"))
}

pub(crate) fn client(server: &str, command: ClientCommand<'_>, out: &mut impl Write) -> anyhow::Result<Outcome> {
    let client = match ApiClient::new(server, token()) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("tempest: --server: {error}");
            return Ok(Outcome::BadInput);
        }
    };
    let io = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answer = io.block_on(async {
        match command {
            ClientCommand::Start { workflow_type, workflow_id, input } => {
                let input = parse_json("--input", input)?;
                client.start(workflow_type, workflow_id, &input).await.map_err(|e| e.to_string())
            }
            ClientCommand::Signal { workflow_id, name, payload, signal_id } => {
                let payload = parse_json("--payload", payload)?;
                // A fresh id per invocation; pass --signal-id to make a retry the same signal.
                let generated = format!("cli-{}-{}", std::process::id(), host::now().0);
                let signal_id = signal_id.unwrap_or(&generated);
                client.signal(workflow_id, name, signal_id, &payload).await.map_err(|e| e.to_string())
            }
            ClientCommand::Show { workflow_id, history: false } => {
                client.show(workflow_id).await.map_err(|e| e.to_string())
            }
            ClientCommand::Show { workflow_id, history: true } => {
                client.history(workflow_id).await.map_err(|e| e.to_string())
            }
        }
    });
    match answer {
        Ok(answer) => print_answer(&answer, out),
        Err(message) => {
            eprintln!("tempest: {message}");
            Ok(Outcome::BadInput)
        }
    }
}

fn print_answer(answer: &Answer, out: &mut impl Write) -> anyhow::Result<Outcome> {
    if answer.is_success() {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer.body)?)?;
        return Ok(Outcome::Ok);
    }
    eprintln!("tempest: server answered {}: {}", answer.status, answer.error_message());
    Ok(if answer.status < 500 { Outcome::BadInput } else { Outcome::Failed })
}
