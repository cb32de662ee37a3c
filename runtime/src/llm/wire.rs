//! The chat-completions wire format: the engine's `LlmRequest` as OpenAI-compatible JSON, and
//! a provider's answer (or error) as an `LlmResponse` or a classified `Failure`.
//!
//! Owns every decision about what a status code, header or body means for a run. Pure
//! functions of bytes and numbers: it never sends anything and never reads a clock (the
//! caller passes "now" for HTTP dates).

use serde::Deserialize;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};
use tempest_engine::services::{LlmRequest, LlmResponse, Message, ToolCall};
use tempest_engine::Failure;

/// The JSON body of a chat-completions request.
///
/// `model` is the configured provider model, not the request's logical one. The engine's
/// messages carry no tool-call ids, which OpenAI requires on `tool` messages, so a tool's
/// result travels as a user message that says it is one. The engine's tools are names only,
/// so each is offered as a function taking any JSON object.
pub fn request_body(request: &LlmRequest, model: &str) -> Value {
    let messages: Vec<Value> = request.messages.iter().map(message_json).collect();
    let mut body = json!({ "model": model, "messages": messages });
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|name| {
                json!({
                    "type": "function",
                    "function": { "name": name, "parameters": { "type": "object", "additionalProperties": true } }
                })
            })
            .collect();
        body["tools"] = Value::Array(tools);
    }
    if request.json_output {
        body["response_format"] = json!({ "type": "json_object" });
    }
    body
}

fn message_json(message: &Message) -> Value {
    match message.role.as_str() {
        "tool" => json!({ "role": "user", "content": format!("tool result: {}", message.content) }),
        role => json!({ "role": role, "content": message.content }),
    }
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: AnswerMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct WireToolCall {
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    /// A JSON document in a string, as OpenAI sends it.
    arguments: String,
}

#[derive(Deserialize)]
struct Usage {
    total_tokens: u64,
}

/// Reads a 200 answer. `json_output` requests must answer with a JSON document (or call a
/// tool); anything else is invalid output, whose message the next attempt can use.
pub fn parse_success(body: &[u8], request: &LlmRequest) -> Result<LlmResponse, Failure> {
    let response: ChatResponse = serde_json::from_slice(body).map_err(|e| Failure::InvalidOutput {
        message: format!("provider answer is not chat-completions JSON ({e}): {}", snippet(body)),
    })?;
    let Some(choice) = response.choices.into_iter().next() else {
        return Err(Failure::InvalidOutput { message: "provider answer has no choices".to_owned() });
    };
    if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
        return Err(Failure::Refused { message: format!("the model refused: {refusal}") });
    }
    if choice.finish_reason.as_deref() == Some("content_filter") {
        return Err(Failure::Refused { message: "the provider's content filter stopped the answer".to_owned() });
    }
    let mut tool_calls = Vec::with_capacity(choice.message.tool_calls.len());
    for call in choice.message.tool_calls {
        let arguments: Value = serde_json::from_str(&call.function.arguments).map_err(|e| Failure::InvalidOutput {
            message: format!(
                "tool call {} has arguments that are not JSON ({e}): {:?}",
                call.function.name, call.function.arguments
            ),
        })?;
        tool_calls.push(ToolCall { name: call.function.name, arguments });
    }
    let content = choice.message.content.unwrap_or_default();
    if request.json_output && tool_calls.is_empty() {
        if let Err(e) = serde_json::from_str::<Value>(&content) {
            return Err(Failure::InvalidOutput { message: format!("answer is not valid JSON ({e}): {content:?}") });
        }
    }
    let token_count = response.usage.map_or(request.token_count, |u| u.total_tokens);
    Ok(LlmResponse { content, tool_calls, token_count })
}

/// Classifies a non-200 answer. `retry_after` is the provider's suggested delay, read from
/// its headers by `retry_after`.
pub fn failure_for_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Failure {
    let retry_after_ms = retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let detail = error_message(body);
    match status {
        // OpenAI answers 429 for an exhausted billing quota too; waiting does not refill it.
        429 if error_code(body).as_deref() == Some("insufficient_quota") => {
            Failure::Refused { message: format!("the LLM provider's quota is exhausted: {detail}") }
        }
        429 => Failure::RateLimited { retry_after_ms },
        408 => Failure::TimedOut,
        500..=599 => Failure::Overloaded { retry_after_ms },
        401 | 403 => Failure::Refused {
            message: format!("HTTP {status} from the LLM provider (check OPENAI_API_KEY): {detail}"),
        },
        _ => Failure::Refused { message: format!("HTTP {status} from the LLM provider: {detail}") },
    }
}

/// The provider's suggested delay: `retry-after-ms` (OpenAI's), else `Retry-After` in seconds
/// or as an HTTP date (a date in the past means "now").
pub fn retry_after(retry_after_ms: Option<&str>, retry_after: Option<&str>, now: SystemTime) -> Option<Duration> {
    if let Some(ms) =
        retry_after_ms.and_then(|v| v.trim().parse::<f64>().ok()).filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_millis(ms.ceil() as u64));
    }
    let value = retry_after?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `error.code` of an OpenAI error body.
fn error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
}

/// `error.message` of an OpenAI error body, else the start of the body.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| snippet(body))
}

fn snippet(body: &[u8]) -> String {
    const LEN_MAX: usize = 200;
    let text = String::from_utf8_lossy(body);
    let mut cut = text.len().min(LEN_MAX);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut < text.len() {
        format!("{:?}…", &text[..cut])
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json_output: bool) -> LlmRequest {
        LlmRequest {
            model: "logical".to_owned(),
            messages: vec![Message::system("be brief"), Message::user("hi"), Message::tool("{\"x\":1}")],
            tools: vec!["search".to_owned()],
            json_output,
            token_count: 42,
        }
    }

    #[test]
    fn request_body_names_configured_model_tools_and_json_mode() {
        let body = request_body(&request(true), "gpt-test");
        assert_eq!(body["model"], "gpt-test");
        assert_eq!(body["messages"][1], json!({"role": "user", "content": "hi"}));
        assert_eq!(body["messages"][2]["role"], "user");
        assert_eq!(body["tools"][0]["function"]["name"], "search");
        assert_eq!(body["response_format"]["type"], "json_object");
        assert!(request_body(&request(false), "m").get("response_format").is_none());
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after(None, Some("7"), now), Some(Duration::from_secs(7)));
        // 2015-10-21 07:28:00 is now; the date below is 120 s later.
        assert_eq!(retry_after(None, Some("Wed, 21 Oct 2015 07:30:00 GMT"), now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(None, Some("Wed, 21 Oct 2015 07:00:00 GMT"), now), Some(Duration::ZERO));
        assert_eq!(retry_after(Some("1500.5"), Some("9"), now), Some(Duration::from_millis(1501)));
        assert_eq!(retry_after(None, Some("tomorrow"), now), None);
        assert_eq!(retry_after(None, None, now), None);
    }

    #[test]
    fn statuses_map_to_failure_kinds() {
        let body = br#"{"error": {"message": "bad key"}}"#;
        assert_eq!(
            failure_for_status(429, Some(Duration::from_secs(2)), b""),
            Failure::RateLimited { retry_after_ms: Some(2000) }
        );
        let quota = br#"{"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}"#;
        assert!(matches!(failure_for_status(429, None, quota), Failure::Refused { .. }));
        assert_eq!(failure_for_status(503, None, b""), Failure::Overloaded { retry_after_ms: None });
        assert_eq!(failure_for_status(408, None, b""), Failure::TimedOut);
        let refused = failure_for_status(401, None, body);
        assert!(!refused.is_retryable());
        assert!(refused.to_string().contains("bad key"), "{refused}");
    }

    #[test]
    fn refusal_and_bad_tool_arguments_are_classified() {
        let refusal = br#"{"choices":[{"message":{"content":null,"refusal":"no"}}]}"#;
        assert!(matches!(parse_success(refusal, &request(false)), Err(Failure::Refused { .. })));
        let bad_args =
            br#"{"choices":[{"message":{"tool_calls":[{"type":"function","function":{"name":"s","arguments":"{oops"}}]}}]}"#;
        assert!(matches!(parse_success(bad_args, &request(false)), Err(Failure::InvalidOutput { .. })));
        let empty = br#"{"choices":[]}"#;
        assert!(matches!(parse_success(empty, &request(false)), Err(Failure::InvalidOutput { .. })));
    }

    #[test]
    fn missing_usage_falls_back_to_the_estimate() {
        let body = br#"{"choices":[{"message":{"content":"{\"a\":1}"}}]}"#;
        assert_eq!(parse_success(body, &request(true)).unwrap().token_count, 42);
    }
}
