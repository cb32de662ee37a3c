//! The runtime embedded as a library: a user's own workflow and activity, a SQLite file, the
//! HTTP API and its client, end to end; and the API's answers to bad requests.

use serde_json::{json, Value};
use std::rc::Rc;
use std::sync::Arc;
use tempest_engine::services::{Activities, ActivityCtx};
use tempest_engine::{Ctx, Failure, Registry, RetryPolicy, WorkflowResult};
use tempest_runtime::client::ApiClient;
use tempest_runtime::http::{self, ApiState};
use tempest_runtime::services::{LlmBackend, MockLlm};
use tempest_runtime::{builtin, host, sqlite, Host, Http, RunStore};

async fn greet(ctx: Ctx, name: String) -> WorkflowResult<String> {
    let loud: String = ctx.activity("shout", &name).retry(RetryPolicy::attempts(3)).await?;
    let approved: bool = ctx.signal("approve").await?;
    Ok(format!("hello, {loud}! approved={approved}"))
}

async fn shout(ctx: ActivityCtx, name: String) -> Result<String, Failure> {
    if ctx.attempt() == 1 {
        return Err(Failure::Overloaded { retry_after_ms: Some(5) });
    }
    Ok(name.to_uppercase())
}

struct Server {
    host: Host,
    client: ApiClient,
    _dir: tempfile::TempDir,
}

async fn server(token: Option<&str>) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _) = sqlite::open_store(&dir.path().join("t.db"), Default::default()).await.expect("open");
    let store: Arc<dyn RunStore> = Arc::new(store);
    let mut registry = Registry::new();
    registry.register("greet", greet);
    let mut activities = Activities::new();
    activities.register("shout", shout);
    builtin::register(&mut registry, &mut activities);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let state = ApiState { store: store.clone(), registry: registry.clone(), token: token.map(str::to_owned) };
    let router = http::app(state, None);
    let llm = Box::new(|| Rc::new(MockLlm::new(0)) as Rc<dyn LlmBackend>);
    let config = host::Config::new(registry, vec![activities], llm);
    let host = Host::start(store, config, Some(Http { listener, router })).expect("host starts");
    let client = ApiClient::new(&base, token.map(str::to_owned)).expect("client");
    Server { host, client, _dir: dir }
}

#[tokio::test]
async fn user_workflow_runs_through_the_http_api() {
    let server = server(None).await;
    let client = &server.client;
    let started = client.start("greet", "g-1", &json!("ada")).await.expect("start");
    assert_eq!(started.status, 200, "{started:?}");
    let again = client.start("greet", "g-1", &json!("ada")).await.expect("start");
    assert_eq!(again.body["run_id"], started.body["run_id"], "a retried start names the same run");
    let signaled = client.signal("g-1", "approve", "sig-1", &json!(true)).await.expect("signal");
    assert!(signaled.is_success(), "{signaled:?}");
    let closed = server.host.store().wait_closed("g-1").await.expect("wait").expect("known run");
    assert_eq!(closed.status, "completed");
    let shown = client.show("g-1").await.expect("show");
    assert_eq!(shown.body["status"], "completed");
    assert_eq!(shown.body["result"], json!("hello, ADA! approved=true"));
    let history = client.history("g-1").await.expect("history");
    assert_eq!(history.body["format"], "tempest-history/1");
    let kinds: Vec<&str> =
        history.body["events"].as_array().expect("events").iter().filter_map(|e| e["type"].as_str()).collect();
    for kind in ["activity_attempt_failed", "activity_completed", "signal_received", "workflow_completed"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let parsed = tempest_engine::History::from_json(&history.body.to_string()).expect("a tempest-history/1 file");
    let mut registry = Registry::new();
    registry.register("greet", greet);
    tempest_engine::Machine::replay(&registry, &parsed.events).expect("the history replays");
    let listed = client.list(Some("completed")).await.expect("list");
    assert_eq!(listed.body["runs"].as_array().map(Vec::len), Some(1));
    server.host.stop();
}

#[tokio::test]
async fn bad_requests_get_4xx_json_errors() {
    let server = server(None).await;
    let client = &server.client;
    let cases: Vec<(hyper::Method, &str, Option<Value>, u16)> = vec![
        (hyper::Method::POST, "/api/runs", Some(json!("not an object")), 400),
        (hyper::Method::POST, "/api/runs", Some(json!({ "workflow_type": "greet" })), 400),
        (hyper::Method::POST, "/api/runs", Some(json!({ "workflow_type": "nope", "workflow_id": "x" })), 400),
        (hyper::Method::GET, "/api/runs/nobody", None, 404),
        (hyper::Method::GET, "/api/runs/nobody/history", None, 404),
        (hyper::Method::GET, "/api/runs/nobody/queries/q", None, 404),
        (hyper::Method::POST, "/api/runs/nobody/cancel", None, 404),
        (hyper::Method::POST, "/api/runs/nobody/signals/s", Some(json!({ "signal_id": "a" })), 404),
        (hyper::Method::POST, "/api/runs/nobody/signals/s", Some(json!({ "payload": 1 })), 400),
        (hyper::Method::GET, "/api/runs?status=sleeping", None, 400),
        (hyper::Method::GET, "/api/nothing", None, 404),
    ];
    for (method, path, body, status) in cases {
        let answer = client.request(method.clone(), path, body.as_ref()).await.expect("answer");
        assert_eq!(answer.status, status, "{method} {path}: {answer:?}");
        assert!(answer.body["error"].is_string(), "{method} {path}: no JSON error: {answer:?}");
    }
    server.host.stop();
}

#[tokio::test]
async fn token_is_required_when_set() {
    let server = server(Some("s3cret")).await;
    let answer = server.client.list(None).await.expect("list");
    assert_eq!(answer.status, 200);
    let anonymous = ApiClient::new(server.client.base(), None).expect("client");
    let answer = anonymous.list(None).await.expect("list");
    assert_eq!(answer.status, 401);
    let wrong = ApiClient::new(server.client.base(), Some("guess".to_owned())).expect("client");
    assert_eq!(wrong.list(None).await.expect("list").status, 401);
    server.host.stop();
}

#[test]
fn non_loopback_bind_needs_a_token() {
    let public: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let local: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
    assert!(http::check_bind(public, None).is_err());
    assert!(http::check_bind(public, Some("")).is_err());
    assert!(http::check_bind(public, Some("t")).is_ok());
    assert!(http::check_bind(local, None).is_ok());
}
