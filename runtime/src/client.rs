//! The HTTP client of the API, on hyper-util's client with a pluggable connector, so the same
//! code runs over TCP here and over a simulated network (turmoil) in full-stack tests.
//!
//! Owns request building, the bearer token, and turning answers into `Answer`s (status and
//! JSON). It never retries on its own: whether a retry is safe is the caller's decision (starts
//! and signals are idempotent by id, so callers retry those).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad server URL {url:?}: {detail}")]
    Url { url: String, detail: String },
    #[error("cannot reach {url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("{url} answered with a body that is not JSON: {detail}")]
    Body { url: String, detail: String },
}

/// A server's answer: its status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The server's `error` message, or the whole body.
    pub fn error_message(&self) -> String {
        self.body["error"].as_str().map_or_else(|| self.body.to_string(), str::to_owned)
    }
}

/// A client of one server.
#[derive(Clone)]
pub struct ApiClient<C = HttpConnector> {
    base: String,
    token: Option<String>,
    http: HyperClient<C, Full<Bytes>>,
}

impl ApiClient<HttpConnector> {
    /// A client over plain TCP; `base` is like `http://127.0.0.1:8080`.
    pub fn new(base: &str, token: Option<String>) -> Result<ApiClient<HttpConnector>, Error> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        ApiClient::with_connector(base, token, connector)
    }
}

impl<C> ApiClient<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// A client over any connector (e.g. one that dials turmoil's simulated TCP).
    pub fn with_connector(base: &str, token: Option<String>, connector: C) -> Result<ApiClient<C>, Error> {
        let base = base.trim_end_matches('/').to_owned();
        let uri = base.parse::<Uri>().map_err(|e| Error::Url { url: base.clone(), detail: e.to_string() })?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(Error::Url { url: base, detail: "expected http://HOST:PORT".to_owned() });
        }
        let http = HyperClient::builder(TokioExecutor::new()).build(connector);
        Ok(ApiClient { base, token, http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request; `body` is sent as JSON.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Answer, Error> {
        let url = format!("{}{path}", self.base);
        let mut builder = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = match body {
            Some(body) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(body).expect("JSON values serialize"))
            }
            None => Bytes::new(),
        };
        let request =
            builder.body(Full::new(payload)).map_err(|e| Error::Url { url: url.clone(), detail: e.to_string() })?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| Error::Transport { url: url.clone(), detail: e.to_string() })?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Transport { url: url.clone(), detail: e.to_string() })?
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| Error::Body { url, detail: e.to_string() })?
        };
        Ok(Answer { status, body })
    }

    pub async fn start(&self, workflow_type: &str, workflow_id: &str, input: &Value) -> Result<Answer, Error> {
        let body = serde_json::json!({ "workflow_type": workflow_type, "workflow_id": workflow_id, "input": input });
        self.request(Method::POST, "/api/runs", Some(&body)).await
    }

    pub async fn signal(
        &self,
        workflow_id: &str,
        name: &str,
        signal_id: &str,
        payload: &Value,
    ) -> Result<Answer, Error> {
        let body = serde_json::json!({ "signal_id": signal_id, "payload": payload });
        let path = format!("/api/runs/{}/signals/{}", encode(workflow_id), encode(name));
        self.request(Method::POST, &path, Some(&body)).await
    }

    pub async fn show(&self, workflow_id: &str) -> Result<Answer, Error> {
        self.request(Method::GET, &format!("/api/runs/{}", encode(workflow_id)), None).await
    }

    /// The run once it closed, or as it stands after `wait_ms`.
    pub async fn wait(&self, workflow_id: &str, wait_ms: u64) -> Result<Answer, Error> {
        self.request(Method::GET, &format!("/api/runs/{}?wait_ms={wait_ms}", encode(workflow_id)), None).await
    }

    pub async fn history(&self, workflow_id: &str) -> Result<Answer, Error> {
        self.request(Method::GET, &format!("/api/runs/{}/history", encode(workflow_id)), None).await
    }

    pub async fn list(&self, status: Option<&str>) -> Result<Answer, Error> {
        let path = match status {
            Some(status) => format!("/api/runs?status={}", encode(status)),
            None => "/api/runs".to_owned(),
        };
        self.request(Method::GET, &path, None).await
    }
}

/// Percent-encodes a path segment.
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
