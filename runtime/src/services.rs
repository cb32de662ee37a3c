//! What activity code reaches in production: an LLM backend chosen at startup and the
//! built-in tools, behind the engine's `Services` interface.
//!
//! Owns the `LlmBackend` seam (the OpenAI-compatible client implements it; `MockLlm` is the
//! deterministic in-process mock behind `tempest serve --llm mock`) and `MockTools`, the
//! tools the built-in scenarios call. It never decides retries: a failed call is a classified
//! `Failure` that the engine's retry policy handles.

use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use tempest_engine::hash::hash_parts;
use tempest_engine::services::{LlmRequest, LlmResponse, ServiceFuture, Services, ToolCall};
use tempest_engine::Failure;

/// A chat-completions provider. Lives on the runtime's worker thread (activity futures are
/// not `Send`), so implementations may use `Rc`.
pub trait LlmBackend {
    fn chat(&self, request: LlmRequest) -> ServiceFuture<LlmResponse>;
}

/// Builds the LLM backend on the worker thread at startup.
pub type LlmFactory = Box<dyn FnOnce() -> Rc<dyn LlmBackend> + Send>;

/// A deterministic model: the same request gets the same answer, in every process.
///
/// It answers as the built-in scenarios expect: with a tool call while tools are offered and
/// no tool result is in the conversation yet, otherwise with a JSON object carrying both
/// `answer` (hello_llm, agent_loop) and `text` (human_approval). With `failure_percent` set,
/// that share of requests fails once per process as overloaded, so retries happen for real.
#[derive(Default)]
pub struct MockLlm {
    pub failure_percent: u64,
    failed_once: RefCell<BTreeMap<u64, ()>>,
}

impl MockLlm {
    pub fn new(failure_percent: u64) -> MockLlm {
        MockLlm { failure_percent, failed_once: RefCell::new(BTreeMap::new()) }
    }

    pub fn answer(request: &LlmRequest) -> LlmResponse {
        let has_tool_result = request.messages.iter().any(|m| m.role == "tool");
        let prompt = request.messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.as_str()).unwrap_or("");
        if let (Some(tool), false) = (request.tools.first(), has_tool_result) {
            return LlmResponse {
                content: "{}".to_owned(),
                tool_calls: vec![ToolCall { name: tool.clone(), arguments: json!({ "query": prompt }) }],
                token_count: request.token_count,
            };
        }
        let text = format!("mock answer to: {prompt}");
        LlmResponse {
            content: json!({ "answer": text, "text": text }).to_string(),
            tool_calls: Vec::new(),
            token_count: request.token_count,
        }
    }
}

impl LlmBackend for MockLlm {
    fn chat(&self, request: LlmRequest) -> ServiceFuture<LlmResponse> {
        let body = serde_json::to_string(&request).unwrap_or_default();
        let hash = hash_parts(&["mock-llm", &body]);
        if self.failure_percent > 0 && hash % 100 < self.failure_percent {
            let first_time = self.failed_once.borrow_mut().insert(hash, ()).is_none();
            if first_time {
                return Box::pin(async { Err(Failure::Overloaded { retry_after_ms: Some(10) }) });
            }
        }
        let response = MockLlm::answer(&request);
        Box::pin(async move { Ok(response) })
    }
}

/// The tools the built-in scenarios call, answering at once. Side effects are recorded by
/// idempotency key, so a retried call returns the first answer.
#[derive(Default)]
pub struct MockTools {
    applied: RefCell<BTreeMap<String, Value>>,
}

impl MockTools {
    fn call(&self, name: &str, arguments: &Value, idempotency_key: Option<String>) -> Result<Value, Failure> {
        if let Some(previous) = idempotency_key.as_ref().and_then(|key| self.applied.borrow().get(key).cloned()) {
            return Ok(previous);
        }
        let result = match name {
            "search" => json!({ "hits": 3, "query": arguments["arguments"]["query"] }),
            "calculator" => json!({ "value": 42 }),
            "write_note" => json!({ "saved": true }),
            "notify_human" => json!({ "notified": true }),
            "escalate" => json!({ "escalated": true }),
            "publish" => json!({ "published": true }),
            other => return Err(Failure::Refused { message: format!("tool {other:?} is not available here") }),
        };
        if let Some(key) = idempotency_key {
            self.applied.borrow_mut().insert(key, result.clone());
        }
        Ok(result)
    }
}

/// `Services` of the runtime: an LLM backend and the built-in tools.
pub struct HostServices {
    pub llm: Rc<dyn LlmBackend>,
    pub tools: Rc<MockTools>,
}

impl Services for HostServices {
    fn llm(&self, request: LlmRequest) -> ServiceFuture<LlmResponse> {
        self.llm.chat(request)
    }

    fn tool(&self, name: &str, arguments: Value, idempotency_key: Option<String>) -> ServiceFuture<Value> {
        let result = self.tools.call(name, &arguments, idempotency_key);
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempest_engine::services::Message;

    fn request(tools: &[&str], messages: Vec<Message>) -> LlmRequest {
        LlmRequest {
            model: "m".to_owned(),
            messages,
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            json_output: true,
            token_count: 10,
        }
    }

    #[test]
    fn mock_llm_calls_a_tool_first_then_answers_json() {
        let first = MockLlm::answer(&request(&["search"], vec![Message::user("q")]));
        assert_eq!(first.tool_calls[0].name, "search");
        let second = MockLlm::answer(&request(&["search"], vec![Message::user("q"), Message::tool("{}")]));
        assert!(second.tool_calls.is_empty());
        let value: Value = serde_json::from_str(&second.content).unwrap();
        assert_eq!(value["answer"], "mock answer to: q");
        assert_eq!(value["text"], "mock answer to: q");
    }

    #[test]
    fn mock_tools_apply_once_per_key() {
        let tools = MockTools::default();
        let a = tools.call("publish", &json!({}), Some("k".to_owned())).unwrap();
        assert_eq!(a, json!({ "published": true }));
        assert_eq!(tools.applied.borrow().len(), 1);
        assert!(tools.call("rm -rf", &json!({}), None).is_err());
    }
}
