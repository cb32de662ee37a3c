//! The HTTP API: JSON in and out over axum, on top of a `RunStore`.
//!
//! Owns the routes under `/api` (start, read, list, signal, query, cancel, history), the
//! bearer-token check, the bind policy (loopback unless a token is set) and the mapping of
//! every bad request to a 4xx JSON error. The web page is nested at `/` by whoever builds the
//! app (`app(state, Some(page))`). It never decides anything about a run, and it never
//! answers before the store made the state behind the answer durable.

use crate::host::now;
use crate::store::{Error as StoreError, RunStore};
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tempest_engine::store::SignalStatus;
use tempest_engine::{Machine, Registry};

/// The statuses `GET /api/runs?status=` accepts.
pub const STATUSES: [&str; 5] = ["running", "completed", "failed", "canceled", "continued"];

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn RunStore>,
    /// The workflow types this runtime runs (for validating starts and answering queries).
    pub registry: Registry,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// Refuses to serve a non-loopback address without a token: the API starts and signals
/// runs, so it must not be open to a network by accident.
pub fn check_bind(addr: SocketAddr, token: Option<&str>) -> Result<(), String> {
    if addr.ip().is_loopback() || token.is_some_and(|t| !t.is_empty()) {
        Ok(())
    } else {
        Err(format!("refusing to listen on {addr}: not a loopback address and TEMPEST_TOKEN is not set"))
    }
}

/// The whole app: the API, and `page` (the web page's router) at `/`.
pub fn app(state: ApiState, page: Option<Router>) -> Router {
    // axum clones the state for every request: share it, so a request does not copy the
    // registry's map.
    let state = Arc::new(state);
    let api = Router::new()
        .route("/api/runs", post(start_run).get(list_runs))
        .route("/api/runs/{workflow_id}", get(show_run))
        .route("/api/runs/{workflow_id}/signals/{name}", post(signal_run))
        .route("/api/runs/{workflow_id}/queries/{name}", get(query_run))
        .route("/api/runs/{workflow_id}/cancel", post(cancel_run))
        .route("/api/runs/{workflow_id}/history", get(history_of_run))
        .fallback(not_found)
        .with_state(state.clone());
    // The page itself holds no data and asks for the token when the API answers 401, so it is
    // served without one; every API route needs it.
    let api = api.layer(middleware::from_fn_with_state(state, authorize));
    match page {
        Some(page) => api.merge(page),
        None => api.route("/", get(index)),
    }
}

async fn authorize(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let expected = format!("Bearer {token}");
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn store_error(failure: StoreError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, failure.to_string())
}

fn unknown_run(workflow_id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no run with workflow id {workflow_id:?}"))
}

/// Decodes a JSON body, naming what is wrong with it.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(bytes).map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("request body: {e}"))))
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route; the API is under /api/runs")
}

async fn index() -> Response {
    Json(json!({ "name": "tempest", "api": "/api/runs" })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    workflow_type: String,
    workflow_id: String,
    #[serde(default)]
    input: Value,
}

async fn start_run(State(state): State<Arc<ApiState>>, bytes: Bytes) -> Response {
    let request: StartRequest = match body(&bytes) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    if request.workflow_id.is_empty() {
        return error(StatusCode::BAD_REQUEST, "field `workflow_id` is empty");
    }
    if !state.registry.contains(&request.workflow_type) {
        let known: Vec<&str> = state.registry.workflow_types().collect();
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown workflow type {:?}; known: {}", request.workflow_type, known.join(", ")),
        );
    }
    match state.store.run(&request.workflow_id).await {
        Ok(Some(existing)) if existing.workflow_type != request.workflow_type => {
            return error(
                StatusCode::CONFLICT,
                format!("workflow id {:?} is a {} run already", request.workflow_id, existing.workflow_type),
            );
        }
        Ok(_) => {}
        Err(e) => return store_error(e),
    }
    match state.store.start(now(), &request.workflow_id, &request.workflow_type, request.input).await {
        Ok(run_id) => Json(json!({ "workflow_id": request.workflow_id, "run_id": run_id })).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct ShowQuery {
    /// Wait up to this long for the run to close before answering (long poll).
    wait_ms: Option<u64>,
}

/// The longest long poll a client may ask for.
const WAIT_MS_MAX: u64 = 300_000;

async fn show_run(
    State(state): State<Arc<ApiState>>,
    Path(workflow_id): Path<String>,
    Query(query): Query<ShowQuery>,
) -> Response {
    if let Some(wait_ms) = query.wait_ms {
        let wait = std::time::Duration::from_millis(wait_ms.min(WAIT_MS_MAX));
        match tokio::time::timeout(wait, state.store.wait_closed(&workflow_id)).await {
            Ok(Ok(Some(view))) => return Json(view).into_response(),
            Ok(Ok(None)) => return unknown_run(&workflow_id),
            Ok(Err(e)) => return store_error(e),
            Err(_) => {}
        }
    }
    match state.store.run(&workflow_id).await {
        Ok(Some(view)) => Json(view).into_response(),
        Ok(None) => unknown_run(&workflow_id),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_runs(State(state): State<Arc<ApiState>>, Query(query): Query<ListQuery>) -> Response {
    if let Some(status) = &query.status {
        if !STATUSES.contains(&status.as_str()) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown status {status:?}; one of: {}", STATUSES.join(", ")),
            );
        }
    }
    match state.store.runs(query.status.as_deref()).await {
        Ok(runs) => Json(json!({ "runs": runs })).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalRequest {
    signal_id: String,
    #[serde(default)]
    payload: Value,
}

async fn signal_run(
    State(state): State<Arc<ApiState>>,
    Path((workflow_id, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let request: SignalRequest = match body(&bytes) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    if request.signal_id.is_empty() {
        return error(StatusCode::BAD_REQUEST, "field `signal_id` is empty");
    }
    match state.store.signal(now(), &workflow_id, &request.signal_id, &name, request.payload).await {
        // Pending is durable in the run's inbox: it will be in the history exactly once.
        Ok(SignalStatus::Recorded) => {
            Json(json!({ "signal_id": request.signal_id, "status": "recorded" })).into_response()
        }
        Ok(SignalStatus::Pending) => {
            Json(json!({ "signal_id": request.signal_id, "status": "pending" })).into_response()
        }
        Ok(SignalStatus::RunClosed) => {
            error(StatusCode::CONFLICT, format!("run {workflow_id:?} closed before reading the signal"))
        }
        Ok(SignalStatus::UnknownWorkflow) => unknown_run(&workflow_id),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct QueryArgs {
    args: Option<String>,
}

async fn query_run(
    State(state): State<Arc<ApiState>>,
    Path((workflow_id, name)): Path<(String, String)>,
    Query(query): Query<QueryArgs>,
) -> Response {
    let args: Value = match query.args.as_deref().map(serde_json::from_str).transpose() {
        Ok(args) => args.unwrap_or(Value::Null),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("query parameter `args` is not JSON: {e}")),
    };
    let history = match state.store.history(&workflow_id).await {
        Ok(Some(history)) => history,
        Ok(None) => return unknown_run(&workflow_id),
        Err(e) => return store_error(e),
    };
    match answer_query(&state.registry, &history.events, &name, &args) {
        Ok(result) => Json(json!({ "result": result })).into_response(),
        Err(message) => error(StatusCode::NOT_FOUND, message),
    }
}

/// Replays the history and asks the workflow's query handler (the machine is not `Send`, so
/// it lives only inside this function).
fn answer_query(
    registry: &Registry,
    events: &[tempest_engine::Event],
    name: &str,
    args: &Value,
) -> Result<Value, String> {
    let (machine, _) = Machine::replay(registry, events).map_err(|e| format!("cannot replay the run: {e}"))?;
    machine.query(name, args).map_err(|e| format!("query {name:?}: {e}"))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    #[serde(default)]
    reason: Option<String>,
}

async fn cancel_run(State(state): State<Arc<ApiState>>, Path(workflow_id): Path<String>, bytes: Bytes) -> Response {
    let request: CancelRequest = if bytes.is_empty() {
        CancelRequest::default()
    } else {
        match body(&bytes) {
            Ok(request) => request,
            Err(response) => return *response,
        }
    };
    let reason = request.reason.unwrap_or_else(|| "canceled through the API".to_owned());
    match state.store.cancel(now(), &workflow_id, &reason).await {
        Ok(true) => Json(json!({ "workflow_id": workflow_id, "cancel_requested": true })).into_response(),
        Ok(false) => match state.store.run(&workflow_id).await {
            Ok(Some(view)) => {
                error(StatusCode::CONFLICT, format!("run {workflow_id:?} is {}, nothing to cancel", view.status))
            }
            Ok(None) => unknown_run(&workflow_id),
            Err(e) => store_error(e),
        },
        Err(e) => store_error(e),
    }
}

async fn history_of_run(State(state): State<Arc<ApiState>>, Path(workflow_id): Path<String>) -> Response {
    match state.store.history(&workflow_id).await {
        Ok(Some(history)) => ([(header::CONTENT_TYPE, "application/json")], history.to_json()).into_response(),
        Ok(None) => unknown_run(&workflow_id),
        Err(e) => store_error(e),
    }
}
