//! `hello_llm`: one LLM call, its answer returned; the "hello world" of AI workflows.
//!
//! Owns the smallest workflow that still meets every fault: a single `llm` activity under the
//! model's rate limit, retried with backoff and `Retry-After`. Its business check: a completed
//! run returns exactly the answer its activity recorded.

use crate::common::{self, chat, LLM_KEY_NAME, LLM_TIMEOUT, MODEL};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;
use tempest_engine::history::Kind;
use tempest_engine::services::{Activities, ActivityCtx, LlmRequest, LlmResponse, Message};
use tempest_engine::{Ctx, Failure, Registry, Time, WorkflowResult};
use tempest_sim::rng::Rng;
use tempest_sim::scenario::{Finished, Scenario, Start, ToolOutcome};

const TOKENS: u64 = 300;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HelloInput {
    pub prompt: String,
}

/// Asks the model and returns its answer.
pub async fn hello_llm(ctx: Ctx, input: HelloInput) -> WorkflowResult<String> {
    let answer: String = ctx
        .activity("llm", &input.prompt)
        .retry(common::llm_retry())
        .start_to_close(LLM_TIMEOUT)
        .rate_limit(LLM_KEY_NAME, TOKENS)
        .await?;
    Ok(answer)
}

async fn llm(ctx: ActivityCtx, prompt: String) -> Result<String, Failure> {
    let request = LlmRequest {
        model: MODEL.to_owned(),
        messages: vec![Message::user(prompt)],
        tools: Vec::new(),
        json_output: true,
        token_count: TOKENS,
    };
    let response = chat(&ctx, request).await?;
    let value: serde_json::Value =
        serde_json::from_str(&response.content).map_err(|e| Failure::InvalidOutput { message: e.to_string() })?;
    value["answer"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Failure::InvalidOutput { message: "missing field `answer`".to_owned() })
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register("hello_llm", hello_llm);
}

pub(crate) struct HelloLlm;

impl Scenario for HelloLlm {
    fn name(&self) -> &'static str {
        "hello_llm"
    }

    fn description(&self) -> &'static str {
        "one LLM call, its answer returned"
    }

    fn registry(&self) -> Registry {
        common::registry_with(register)
    }

    fn activities(&self) -> Activities {
        let mut activities = Activities::new();
        activities.register("llm", llm);
        activities
    }

    fn workload(&self, rng: &mut Rng) -> Vec<Start> {
        (0..rng.range_inclusive(5, 10))
            .map(|i| Start {
                at: Time(rng.below(60_000)),
                workflow_id: format!("hello-{i}"),
                workflow_type: "hello_llm".to_owned(),
                input: json!({ "prompt": format!("say hello to {i}") }),
            })
            .collect()
    }

    fn llm_answer(&self, request: &LlmRequest, _rng: &mut Rng) -> LlmResponse {
        let prompt = request.messages.last().map(|m| m.content.clone()).unwrap_or_default();
        LlmResponse {
            content: json!({ "answer": format!("hello! ({prompt})") }).to_string(),
            tool_calls: Vec::new(),
            token_count: request.token_count,
        }
    }

    fn tool_call(&self, _name: &str, _arguments: &serde_json::Value, _rng: &mut Rng) -> ToolOutcome {
        ToolOutcome { result: serde_json::Value::Null, effect: None }
    }

    fn liveness_bound(&self) -> Duration {
        Duration::from_secs(3 * 3600)
    }

    fn check(&self, finished: &Finished<'_>) -> Result<(), String> {
        for history in finished.histories {
            let Some(Kind::WorkflowCompleted { output }) = history.events.last().map(|e| &e.kind) else {
                continue;
            };
            let recorded = history.events.iter().find_map(|e| match &e.kind {
                Kind::ActivityCompleted { output, .. } => Some(output.clone()),
                _ => None,
            });
            if recorded.as_ref() != Some(output) {
                return Err(format!(
                    "run {}: returned {output} but its llm activity recorded {recorded:?}",
                    history.run_id
                ));
            }
        }
        Ok(())
    }
}
