//! The LLM client against the mock provider on loopback: every answer and failure the
//! provider can give, and how each reaches the engine as an `LlmResponse` or a `Failure`.

use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};
use tempest_engine::ratelimit::Limit;
use tempest_engine::services::{LlmRequest, Message};
use tempest_engine::Failure;
use tempest_runtime::llm::mock_server::{MockServer, Reply};
use tempest_runtime::llm::{Config, LlmClient};

fn config(address: SocketAddr) -> Config {
    let mut config = Config::new(&format!("http://{address}/v1"), "mock-model").unwrap();
    config.api_key = Some("sk-test".to_owned());
    config.timeout = Duration::from_secs(30);
    config
}

fn request(json_output: bool) -> LlmRequest {
    LlmRequest {
        model: "logical-model".to_owned(),
        messages: vec![Message::system("You answer in JSON."), Message::user("What is 6 x 7?")],
        tools: Vec::new(),
        json_output,
        token_count: 100,
    }
}

async fn start(replies: Vec<Reply>) -> (MockServer, SocketAddr) {
    let mock = MockServer::new();
    for reply in replies {
        mock.push(reply);
    }
    let address = mock.serve_loopback().await.unwrap();
    (mock, address)
}

#[tokio::test]
async fn answer_arrives_with_configured_model_key_and_token_usage() {
    let (mock, address) =
        start(vec![Reply::Answer { content: r#"{"answer": 42}"#.to_owned(), tool_calls: Vec::new(), token_count: 57 }])
            .await;
    let client = LlmClient::new(config(address)).unwrap();
    let response = client.llm(request(true)).await.unwrap();
    assert_eq!(response.content, r#"{"answer": 42}"#);
    assert_eq!(response.token_count, 57);
    assert!(response.tool_calls.is_empty());

    let received = mock.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(received[0].body["model"], "mock-model");
    assert_eq!(received[0].body["messages"][1], json!({"role": "user", "content": "What is 6 x 7?"}));
    assert_eq!(received[0].body["response_format"], json!({"type": "json_object"}));
}

#[tokio::test]
async fn unscripted_mock_echoes_deterministically() {
    let (_mock, address) = start(Vec::new()).await;
    let client = LlmClient::new(config(address)).unwrap();
    let first = client.complete(&request(true)).await.unwrap();
    let second = client.complete(&request(true)).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(first.content, r#"{"answer":"mock answer to: What is 6 x 7?"}"#);
}

#[tokio::test]
async fn tool_calls_are_offered_and_decoded() {
    let (mock, address) = start(vec![Reply::tool_call("search", json!({"query": "tempest"}))]).await;
    let client = LlmClient::new(config(address)).unwrap();
    let mut with_tools = request(true);
    with_tools.tools = vec!["search".to_owned(), "calculator".to_owned()];
    with_tools.messages.push(Message::assistant("call search {}"));
    with_tools.messages.push(Message::tool(r#"{"hits": 3}"#));
    let response = client.complete(&with_tools).await.unwrap();
    assert_eq!(response.tool_calls.len(), 1);
    assert_eq!(response.tool_calls[0].name, "search");
    assert_eq!(response.tool_calls[0].arguments, json!({"query": "tempest"}));

    let body = &mock.received()[0].body;
    assert_eq!(body["tools"][1]["type"], "function");
    assert_eq!(body["tools"][1]["function"]["name"], "calculator");
    // A tool result has no tool-call id in the engine's messages, so it travels as user text.
    assert_eq!(body["messages"][3], json!({"role": "user", "content": "tool result: {\"hits\": 3}"}));
}

#[tokio::test]
async fn rate_limited_with_retry_after_seconds() {
    let busy = r#"{"error": {"message": "Rate limit reached", "type": "requests"}}"#;
    let (_mock, address) = start(vec![Reply::status(429, busy).with_header("retry-after", "7")]).await;
    let failure = LlmClient::new(config(address)).unwrap().complete(&request(false)).await.unwrap_err();
    assert_eq!(failure, Failure::RateLimited { retry_after_ms: Some(7_000) });
    assert!(failure.is_retryable());
}

#[tokio::test]
async fn rate_limited_with_retry_after_http_date() {
    let at = SystemTime::now() + Duration::from_secs(3_600);
    let date = httpdate::fmt_http_date(at);
    let (_mock, address) = start(vec![Reply::status(429, "slow down").with_header("retry-after", &date)]).await;
    let failure = LlmClient::new(config(address)).unwrap().complete(&request(false)).await.unwrap_err();
    let Failure::RateLimited { retry_after_ms: Some(ms) } = failure else {
        panic!("expected rate limited with a delay, got {failure:?}");
    };
    // The date has whole seconds and an hour to go; the exact delay depends on when it is read.
    assert!((3_590_000..=3_600_000).contains(&ms), "retry after {ms} ms");
}

#[tokio::test]
async fn server_errors_are_overloaded_and_keep_their_delay() {
    let (_mock, address) = start(vec![
        Reply::status(500, "internal error"),
        Reply::status(503, "overloaded").with_header("retry-after", "3"),
    ])
    .await;
    let client = LlmClient::new(config(address)).unwrap();
    assert_eq!(client.complete(&request(false)).await.unwrap_err(), Failure::Overloaded { retry_after_ms: None });
    assert_eq!(
        client.complete(&request(false)).await.unwrap_err(),
        Failure::Overloaded { retry_after_ms: Some(3_000) }
    );
}

#[tokio::test]
async fn silent_provider_times_out() {
    let (mock, address) = start(vec![Reply::Hang]).await;
    let mut config = config(address);
    config.timeout = Duration::from_millis(300);
    let failure = LlmClient::new(config).unwrap().complete(&request(false)).await.unwrap_err();
    assert_eq!(failure, Failure::TimedOut);
    assert_eq!(mock.received().len(), 1, "the request reached the provider");
}

#[tokio::test]
async fn garbage_body_is_invalid_output() {
    let (_mock, address) = start(vec![Reply::status(200, "<html>502 Bad Gateway</html>")]).await;
    let failure = LlmClient::new(config(address)).unwrap().complete(&request(false)).await.unwrap_err();
    let Failure::InvalidOutput { message } = &failure else { panic!("expected invalid output, got {failure:?}") };
    assert!(message.contains("not chat-completions JSON"), "{message}");
    assert!(message.contains("502 Bad Gateway"), "{message}");
}

#[tokio::test]
async fn answer_that_is_not_the_json_asked_for_is_invalid_output() {
    let (_mock, address) =
        start(vec![Reply::answer("Sure! The answer is 42."), Reply::answer("plain text is fine")]).await;
    let client = LlmClient::new(config(address)).unwrap();
    let failure = client.complete(&request(true)).await.unwrap_err();
    let Failure::InvalidOutput { message } = &failure else { panic!("expected invalid output, got {failure:?}") };
    assert!(message.contains("not valid JSON") && message.contains("Sure!"), "{message}");
    // Without JSON mode the same kind of answer is fine.
    assert_eq!(client.complete(&request(false)).await.unwrap().content, "plain text is fine");
}

#[tokio::test]
async fn bad_request_is_refused_and_not_retried() {
    let body = r#"{"error": {"message": "model `x` does not exist", "type": "invalid_request_error"}}"#;
    let (_mock, address) = start(vec![Reply::status(404, body)]).await;
    let failure = LlmClient::new(config(address)).unwrap().complete(&request(false)).await.unwrap_err();
    assert!(!failure.is_retryable());
    assert!(failure.to_string().contains("model `x` does not exist"), "{failure}");
}

#[tokio::test]
async fn unreachable_provider_is_a_retryable_failure_naming_the_cause() {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let failure = LlmClient::new(config(address)).unwrap().complete(&request(false)).await.unwrap_err();
    let Failure::Application { kind, message } = &failure else { panic!("expected application, got {failure:?}") };
    assert_eq!(kind, "llm_unreachable");
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(failure.is_retryable());
}

#[tokio::test]
async fn requests_per_minute_are_counted_before_sending() {
    let (mock, address) = start(Vec::new()).await;
    let mut config = config(address);
    config.limit = Limit { requests_per_minute: Some(1), ..Limit::default() };
    config.limiter_wait_max = Duration::ZERO;
    let client = LlmClient::new(config).unwrap();
    client.complete(&request(false)).await.unwrap();
    let failure = client.clone().complete(&request(false)).await.unwrap_err();
    let Failure::RateLimited { retry_after_ms: Some(ms) } = failure else {
        panic!("expected a local rate limit with a delay, got {failure:?}");
    };
    assert!(ms > 0 && ms <= 60_000, "retry after {ms} ms");
    assert_eq!(mock.received().len(), 1, "the limited request never left the process");
}

#[tokio::test]
async fn tokens_per_minute_are_counted_before_sending() {
    let (mock, address) = start(Vec::new()).await;
    let mut config = config(address);
    config.limit = Limit { tokens_per_minute: Some(150), ..Limit::default() };
    config.limiter_wait_max = Duration::ZERO;
    let client = LlmClient::new(config).unwrap();
    client.complete(&request(false)).await.unwrap();
    assert!(matches!(client.complete(&request(false)).await, Err(Failure::RateLimited { retry_after_ms: Some(_) })));
    let mut huge = request(false);
    huge.token_count = 151;
    assert!(matches!(client.complete(&huge).await, Err(Failure::Refused { .. })), "one request over the whole limit");
    assert_eq!(mock.received().len(), 1);
}

#[tokio::test]
async fn concurrency_slot_frees_when_a_request_ends() {
    let (mock, address) = start(vec![Reply::Hang]).await;
    let mut config = config(address);
    config.timeout = Duration::from_millis(300);
    config.limit = Limit { concurrency_max: Some(1), ..Limit::default() };
    config.limiter_wait_max = Duration::from_secs(30);
    let client = LlmClient::new(config).unwrap();
    // The first request holds the only slot until it times out; the second waits for it.
    let (first, second) = tokio::join!(client.llm(request(false)), client.llm(request(false)));
    assert_eq!(first.unwrap_err(), Failure::TimedOut);
    assert!(second.is_ok(), "{second:?}");
    assert_eq!(mock.received().len(), 2);
}

#[tokio::test]
async fn concurrency_full_past_the_wait_is_rate_limited() {
    let (_mock, address) = start(vec![Reply::Hang]).await;
    let mut config = config(address);
    config.timeout = Duration::from_millis(300);
    config.limit = Limit { concurrency_max: Some(1), ..Limit::default() };
    config.limiter_wait_max = Duration::ZERO;
    let client = LlmClient::new(config).unwrap();
    let (first, second) = tokio::join!(client.llm(request(false)), client.llm(request(false)));
    assert_eq!(first.unwrap_err(), Failure::TimedOut);
    assert_eq!(second.unwrap_err(), Failure::RateLimited { retry_after_ms: None });
}

#[test]
fn https_without_a_tls_connector_is_a_clear_error() {
    let config = Config::new("https://api.example.com/v1", "m").unwrap();
    let error = LlmClient::new(config).err().expect("https refused");
    assert!(error.to_string().contains("OPENAI_BASE_URL") && error.to_string().contains("TLS"), "{error}");
}

/// Activity code as the engine runs it: `ActivityCtx::llm` through a host's `Services`
/// (held in an `Rc`, its futures not `Send`) reaches the provider over HTTP.
#[tokio::test]
async fn activity_code_reaches_the_provider_through_services() {
    use std::rc::Rc;
    use tempest_engine::activity::Options;
    use tempest_engine::services::{Activities, ActivityCtx, LlmResponse, ServiceFuture, Services};
    use tempest_engine::{ActivityTask, Time};

    struct HttpServices {
        llm: LlmClient,
    }

    impl Services for HttpServices {
        fn llm(&self, request: LlmRequest) -> ServiceFuture<LlmResponse> {
            self.llm.llm(request)
        }

        fn tool(
            &self,
            name: &str,
            _arguments: serde_json::Value,
            _key: Option<String>,
        ) -> ServiceFuture<serde_json::Value> {
            let message = format!("no tool {name} in this test");
            Box::pin(async move { Err(Failure::Refused { message }) })
        }
    }

    let (mock, address) = start(vec![Reply::status(503, "busy"), Reply::answer(r#"{"answer": "a haiku"}"#)]).await;
    let services: Rc<dyn Services> = Rc::new(HttpServices { llm: LlmClient::new(config(address)).unwrap() });
    let mut activities = Activities::new();
    activities.register("write", |ctx: ActivityCtx, topic: String| async move {
        let mut request = request(true);
        request.messages = vec![Message::user(format!("write about {topic}"))];
        ctx.llm(request).await.map(|response| response.content)
    });
    let task = |attempt| ActivityTask {
        workflow_id: "w".to_owned(),
        run_id: "r1".to_owned(),
        seq: 1,
        attempt,
        activity_type: "write".to_owned(),
        input: json!("rain").into(),
        idempotency_key: "r1:1".to_owned(),
        not_before: Time::ZERO,
        options: Options::default(),
        previous_failure: None,
    };
    let first = activities.start(ActivityCtx::new(task(1), services.clone()), json!("rain").into()).await;
    assert_eq!(first, Err(Failure::Overloaded { retry_after_ms: None }));
    let second = activities.start(ActivityCtx::new(task(2), services), json!("rain").into()).await;
    assert_eq!(second, Ok(json!(r#"{"answer": "a haiku"}"#).into()));
    assert_eq!(mock.received()[1].body["messages"][0]["content"], "write about rain");
}
