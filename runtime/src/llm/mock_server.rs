//! A mock OpenAI-compatible chat-completions server, for tests and local runs of the HTTP
//! client: a script of replies (answers, tool calls, error statuses with headers, garbage,
//! silence) served in order, then a deterministic echo.
//!
//! Owns only the fake provider's side of the protocol and a record of what it received. It
//! never runs in production paths and never sleeps on a clock: a "slow" provider is one that
//! does not answer at all, and the client's own timeout ends the wait.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tempest_engine::services::ToolCall;

/// One scripted reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// A 200 chat completion.
    Answer { content: String, tool_calls: Vec<ToolCall>, token_count: u64 },
    /// Any status with extra headers and a raw body (errors, 429 with `Retry-After`, garbage).
    Status { status: u16, headers: Vec<(String, String)>, body: String },
    /// Accepts the request and never answers.
    Hang,
}

impl Reply {
    pub fn answer(content: impl Into<String>) -> Reply {
        Reply::Answer { content: content.into(), tool_calls: Vec::new(), token_count: 20 }
    }

    pub fn tool_call(name: &str, arguments: Value) -> Reply {
        Reply::Answer {
            content: String::new(),
            tool_calls: vec![ToolCall { name: name.to_owned(), arguments }],
            token_count: 30,
        }
    }

    pub fn status(status: u16, body: impl Into<String>) -> Reply {
        Reply::Status { status, headers: Vec::new(), body: body.into() }
    }

    pub fn with_header(self, name: &str, value: &str) -> Reply {
        match self {
            Reply::Status { status, mut headers, body } => {
                headers.push((name.to_owned(), value.to_owned()));
                Reply::Status { status, headers, body }
            }
            other => other,
        }
    }
}

/// A request as the mock received it.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct State_ {
    script: VecDeque<Reply>,
    received: Vec<Received>,
}

/// The mock provider; clones share one script and one record.
#[derive(Clone, Default)]
pub struct MockServer {
    state: Arc<Mutex<State_>>,
}

impl MockServer {
    pub fn new() -> MockServer {
        MockServer::default()
    }

    /// Queues a reply for the next request that finds the queue non-empty.
    pub fn push(&self, reply: Reply) -> &MockServer {
        self.state.lock().expect("mock lock").script.push_back(reply);
        self
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("mock lock").received.clone()
    }

    /// Routes `POST /v1/chat/completions` (and `/chat/completions`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/chat/completions", post(complete))
            .with_state(self.clone())
    }

    /// Serves on an ephemeral port of 127.0.0.1 from a task of the current tokio runtime.
    pub async fn serve_loopback(&self) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let router = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "mock LLM server stopped");
            }
        });
        Ok(address)
    }
}

async fn complete(State(mock): State<MockServer>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        let error = json!({ "error": { "message": "request body is not JSON", "type": "invalid_request_error" } });
        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
    };
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (reply, index) = {
        let mut state = mock.state.lock().expect("mock lock");
        state.received.push(Received { authorization, body: request.clone() });
        let reply = state.script.pop_front();
        (reply, state.received.len())
    };
    match reply.unwrap_or_else(|| echo(&request)) {
        Reply::Answer { content, tool_calls, token_count } => {
            axum::Json(completion(&request, index, content, &tool_calls, token_count)).into_response()
        }
        Reply::Status { status, headers, body } => {
            let mut response =
                (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body).into_response();
            for (name, value) in headers {
                if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
        Reply::Hang => std::future::pending().await,
    }
}

/// The answer when nothing is scripted: a function of the request alone.
fn echo(request: &Value) -> Reply {
    let last_user = request["messages"]
        .as_array()
        .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    let text = format!("mock answer to: {last_user}");
    let content =
        if request["response_format"]["type"] == "json_object" { json!({ "answer": text }).to_string() } else { text };
    let token_count = 16 + request.to_string().len() as u64 / 4;
    Reply::Answer { content, tool_calls: Vec::new(), token_count }
}

fn completion(request: &Value, index: usize, content: String, tool_calls: &[ToolCall], token_count: u64) -> Value {
    let calls: Vec<Value> = tool_calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            json!({
                "id": format!("call_{index}_{i}"),
                "type": "function",
                "function": { "name": call.name, "arguments": call.arguments.to_string() },
            })
        })
        .collect();
    let mut message = json!({ "role": "assistant", "content": content });
    if !calls.is_empty() {
        message["content"] = Value::Null;
        message["tool_calls"] = Value::Array(calls);
    }
    let prompt_tokens = token_count / 2;
    json!({
        "id": format!("chatcmpl-mock-{index}"),
        "object": "chat.completion",
        "created": 0,
        "model": request["model"],
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": if tool_calls.is_empty() { "stop" } else { "tool_calls" },
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": token_count - prompt_tokens,
            "total_tokens": token_count,
        },
    })
}
