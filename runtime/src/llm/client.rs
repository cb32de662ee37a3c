//! The chat-completions client: one HTTP request per `LlmRequest`, under this process's rate
//! limits, its outcome classified as an `LlmResponse` or a `Failure`.
//!
//! Owns the transport (hyper's pooled client over any connector: plain TCP in production,
//! turmoil's simulated TCP in full-stack tests), the per-request timeout and the local rate
//! limiter. It never retries: a failure goes back to the engine, which records it and
//! schedules the next attempt durably, honouring `Retry-After`.

use super::config::{self, Config};
use super::wire;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tempest_engine::ratelimit::Limiter;
use tempest_engine::services::{LlmRequest, LlmResponse, ServiceFuture};
use tempest_engine::{Failure, Time};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Larger answers are refused as invalid output rather than buffered without bound.
pub const BODY_LEN_MAX: usize = 16 * 1024 * 1024;

/// An OpenAI-compatible chat-completions client over the connector `C`.
pub struct LlmClient<C = HttpConnector> {
    http: Client<C, Full<Bytes>>,
    config: Arc<Config>,
    limiter: Arc<SharedLimiter>,
}

impl<C: Clone> Clone for LlmClient<C> {
    fn clone(&self) -> Self {
        LlmClient { http: self.http.clone(), config: self.config.clone(), limiter: self.limiter.clone() }
    }
}

impl LlmClient<HttpConnector> {
    /// A client over plain TCP. An `https` base URL is refused: this build has no TLS
    /// connector; `with_connector` takes one (e.g. hyper-rustls) from the embedding binary.
    pub fn new(config: Config) -> Result<LlmClient<HttpConnector>, config::Error> {
        if config.base_url.scheme_str() == Some("https") {
            return Err(config::Error::Invalid {
                var: config::VAR_BASE_URL,
                value: config.base_url.to_string(),
                reason: "https needs a TLS connector, which this build does not include; use an http endpoint \
                         (a local gateway) or pass a TLS connector to LlmClient::with_connector"
                    .to_owned(),
            });
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        Ok(LlmClient::with_connector(config, connector))
    }
}

impl<C> crate::services::LlmBackend for LlmClient<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    fn chat(&self, request: LlmRequest) -> ServiceFuture<LlmResponse> {
        self.llm(request)
    }
}

impl<C> LlmClient<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// A client whose connections come from `connector` (any `tower::Service<Uri>` whose
    /// streams hyper can drive).
    pub fn with_connector(config: Config, connector: C) -> LlmClient<C> {
        LlmClient::with_connector_and_executor(config, connector, TokioExecutor::new())
    }

    /// A client whose connection tasks run on `executor` (the full-stack mode keeps them on
    /// the host's `LocalSet`, so a simulated crash drops them in a fixed order).
    pub fn with_connector_and_executor<E>(config: Config, connector: C, executor: E) -> LlmClient<C>
    where
        E: hyper::rt::Executor<Pin<Box<dyn Future<Output = ()> + Send>>> + Send + Sync + Clone + 'static,
    {
        let http = Client::builder(executor).pool_timer(TokioTimer::new()).build(connector);
        let key = config.limiter_key();
        let limiter = Limiter::new(BTreeMap::from([(key.clone(), config.limit.clone())]));
        let limiter = Arc::new(SharedLimiter {
            limiter: Mutex::new(limiter),
            key,
            origin: Instant::now(),
            released: Notify::new(),
        });
        LlmClient { http, config: Arc::new(config), limiter }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The LLM half of `tempest_engine::services::Services`: a host's `Services::llm` calls
    /// this.
    pub fn llm(&self, request: LlmRequest) -> ServiceFuture<LlmResponse> {
        let client = self.clone();
        Box::pin(async move { client.complete(&request).await })
    }

    /// Sends one request once, after the rate limiter lets it go.
    pub async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, Failure> {
        let _permit = self.limiter.acquire(request.token_count, &self.config).await?;
        let body = serde_json::to_vec(&wire::request_body(request, &self.config.model)).expect("JSON values serialize");
        let mut builder = hyper::Request::post(self.config.endpoint()).header(CONTENT_TYPE, "application/json");
        if let Some(key) = &self.config.api_key {
            builder = builder.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let http_request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Refused { message: format!("cannot build the LLM request: {e}") })?;

        let exchange = async {
            let response = self.http.request(http_request).await.map_err(|e| {
                let kind = if e.is_connect() { "llm_unreachable" } else { "llm_transport" };
                Failure::Application { kind: kind.to_owned(), message: error_chain(&e) }
            })?;
            let (parts, body) = response.into_parts();
            let bytes = Limited::new(body, BODY_LEN_MAX).collect().await.map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    Failure::InvalidOutput { message: format!("answer is larger than {BODY_LEN_MAX} bytes") }
                } else {
                    Failure::Application { kind: "llm_transport".to_owned(), message: error_chain(e.as_ref()) }
                }
            })?;
            Ok::<_, Failure>((parts, bytes.to_bytes()))
        };
        let (parts, bytes) = tokio::time::timeout(self.config.timeout, exchange).await.map_err(|_| {
            tracing::warn!(timeout_ms = self.config.timeout.as_millis() as u64, "LLM request timed out");
            Failure::TimedOut
        })??;

        if parts.status.is_success() {
            return wire::parse_success(&bytes, request);
        }
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let retry_after = wire::retry_after(header("retry-after-ms"), header("retry-after"), SystemTime::now());
        let failure = wire::failure_for_status(parts.status.as_u16(), retry_after, &bytes);
        tracing::warn!(status = parts.status.as_u16(), %failure, "LLM request failed");
        Err(failure)
    }
}

/// An error and its sources, since hyper's own message alone ("client error (Connect)")
/// does not say what went wrong.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The engine's limiter on tokio time, shared by every clone of a client.
struct SharedLimiter {
    limiter: Mutex<Limiter>,
    key: String,
    /// The limiter's clock starts here; tokio time, so that turmoil's clock drives it too.
    origin: Instant,
    released: Notify,
}

/// A dispatched request; dropping it (answered, failed or canceled) frees its concurrency slot.
struct Permit {
    shared: Arc<SharedLimiter>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.limiter.lock().expect("limiter lock").finish(&self.shared.key);
        self.shared.released.notify_waiters();
    }
}

impl SharedLimiter {
    fn now(&self) -> Time {
        Time::ZERO.plus(self.origin.elapsed())
    }

    /// Waits for room under the limits, at most `config.limiter_wait_max`; past that the
    /// request fails as rate limited, with the delay after which it would fit.
    async fn acquire(self: &Arc<Self>, token_count: u64, config: &Config) -> Result<Permit, Failure> {
        if let Some(tpm) = config.limit.tokens_per_minute.filter(|tpm| token_count > *tpm) {
            return Err(Failure::Refused {
                message: format!("request needs {token_count} tokens, over the limit of {tpm} per minute"),
            });
        }
        if config.limit.requests_per_minute == Some(0) {
            return Err(Failure::Refused { message: "the LLM client's requests_per_minute limit is 0".to_owned() });
        }
        let deadline = Instant::now() + config.limiter_wait_max;
        loop {
            // Registered before looking, so a release between the look and the wait is not missed.
            let mut released = std::pin::pin!(self.released.notified());
            released.as_mut().enable();
            let wait = {
                let mut limiter = self.limiter.lock().expect("limiter lock");
                let now = self.now();
                match limiter.next_allowed(now, &self.key, token_count) {
                    Some(at) if at <= now => {
                        limiter.dispatch(now, &self.key, token_count);
                        return Ok(Permit { shared: self.clone() });
                    }
                    Some(at) => Some(at.since(now)),
                    None => None,
                }
            };
            match wait {
                Some(delay) if Instant::now() + delay > deadline => {
                    let retry_after_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    return Err(Failure::RateLimited { retry_after_ms: Some(retry_after_ms) });
                }
                Some(delay) => tokio::time::sleep(delay.max(Duration::from_millis(1))).await,
                None => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return Err(Failure::RateLimited { retry_after_ms: None });
                    }
                }
            }
        }
    }
}
