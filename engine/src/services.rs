//! Activity code's view of the world: the LLM and tool calls it may make, and the registry
//! of activity implementations.
//!
//! Owns the `Services` interface that hosts implement (the simulator with seeded fake
//! providers, the runtime with real HTTP clients), so the same activity code runs in both.
//! It never implements a service itself and performs no I/O.

use crate::activity::Failure;
use crate::engine::ActivityTask;
use crate::history::Payload;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Message {
        Message { role: "system".to_owned(), content: content.into() }
    }

    pub fn user(content: impl Into<String>) -> Message {
        Message { role: "user".to_owned(), content: content.into() }
    }

    pub fn assistant(content: impl Into<String>) -> Message {
        Message { role: "assistant".to_owned(), content: content.into() }
    }

    pub fn tool(content: impl Into<String>) -> Message {
        Message { role: "tool".to_owned(), content: content.into() }
    }
}

/// A chat-completions request, as OpenAI-compatible providers take it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmRequest {
    pub model: String,
    pub messages: Vec<Message>,
    /// Names of the tools the model may call (function calling).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Ask for a JSON object as the answer.
    #[serde(default)]
    pub json_output: bool,
    /// Tokens the request is expected to use (prompt and completion).
    pub token_count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmResponse {
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    pub token_count: u64,
}

pub type ServiceFuture<T> = Pin<Box<dyn Future<Output = Result<T, Failure>>>>;

/// What a host offers activity code.
pub trait Services {
    fn llm(&self, request: LlmRequest) -> ServiceFuture<LlmResponse>;
    /// Calls a tool; an `idempotency_key` makes the tool apply its side effect at most once.
    fn tool(&self, name: &str, arguments: Value, idempotency_key: Option<String>) -> ServiceFuture<Value>;
}

/// An activity's handle: which attempt this is, and the services it may call.
#[derive(Clone)]
pub struct ActivityCtx {
    task: Rc<ActivityTask>,
    services: Rc<dyn Services>,
}

impl ActivityCtx {
    pub fn new(task: ActivityTask, services: Rc<dyn Services>) -> ActivityCtx {
        ActivityCtx { task: Rc::new(task), services }
    }

    pub fn task(&self) -> &ActivityTask {
        &self.task
    }

    /// 1-based.
    pub fn attempt(&self) -> u32 {
        self.task.attempt
    }

    pub fn idempotency_key(&self) -> &str {
        &self.task.idempotency_key
    }

    /// How the previous attempt failed; an invalid-output message belongs in the next prompt.
    pub fn previous_failure(&self) -> Option<&Failure> {
        self.task.previous_failure.as_ref()
    }

    pub fn llm(&self, request: LlmRequest) -> ServiceFuture<LlmResponse> {
        self.services.llm(request)
    }

    /// Calls a tool under this activity's idempotency key, so retries apply it once.
    pub fn tool(&self, name: &str, arguments: Value) -> ServiceFuture<Value> {
        self.services.tool(name, arguments, Some(self.task.idempotency_key.clone()))
    }

    /// Calls a tool under a key of the caller's choosing (`None`: no protection at all).
    pub fn tool_with_key(&self, name: &str, arguments: Value, idempotency_key: Option<String>) -> ServiceFuture<Value> {
        self.services.tool(name, arguments, idempotency_key)
    }
}

pub type ActivityFuture = Pin<Box<dyn Future<Output = Result<Payload, Failure>>>>;
type ActivityFn = Arc<dyn Fn(ActivityCtx, Payload) -> ActivityFuture + Send + Sync>;

/// Activity implementations by activity type.
#[derive(Clone, Default)]
pub struct Activities {
    implementations: BTreeMap<String, ActivityFn>,
}

impl Activities {
    pub fn new() -> Activities {
        Activities::default()
    }

    pub fn register<I, O, F, Fut>(&mut self, activity_type: &str, implementation: F) -> &mut Self
    where
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        F: Fn(ActivityCtx, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, Failure>> + 'static,
    {
        let implementation = Arc::new(implementation);
        let activity_type_owned = activity_type.to_owned();
        let function: ActivityFn = Arc::new(move |ctx: ActivityCtx, input: Payload| {
            let implementation = implementation.clone();
            let activity_type = activity_type_owned.clone();
            Box::pin(async move {
                let input: I = input.decode().map_err(|e| Failure::Refused {
                    message: format!("activity {activity_type}: input does not decode: {e}"),
                })?;
                let output = implementation(ctx, input).await?;
                Payload::encode(&output).map_err(|e| Failure::Refused {
                    message: format!("activity {activity_type}: output does not encode: {e}"),
                })
            })
        });
        self.implementations.insert(activity_type.to_owned(), function);
        self
    }

    /// Starts one attempt; an unknown activity type fails it as not retryable.
    pub fn start(&self, ctx: ActivityCtx, input: Payload) -> ActivityFuture {
        let activity_type = ctx.task.activity_type.clone();
        match self.implementations.get(&activity_type) {
            Some(function) => function(ctx, input),
            None => Box::pin(async move {
                Err(Failure::Refused {
                    message: format!("activity type {activity_type} is not registered on this worker"),
                })
            }),
        }
    }

    pub fn contains(&self, activity_type: &str) -> bool {
        self.implementations.contains_key(activity_type)
    }
}
