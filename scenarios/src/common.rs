//! Pieces the scenarios share: the LLM call activity and retry settings.
//!
//! Owns the one LLM activity shape every scenario uses (a chat request under the model's
//! rate-limit key, retried with backoff and `Retry-After`). It never decides a scenario's
//! outcome.

use std::time::Duration;
use tempest_engine::services::{ActivityCtx, LlmRequest, LlmResponse};
use tempest_engine::{Failure, Registry, RetryPolicy};
use tempest_sim::check::LLM_KEY;

pub(crate) const MODEL: &str = "sim-model";

/// Retries for LLM calls: fast at first, capped, jittered, ten attempts.
pub(crate) fn llm_retry() -> RetryPolicy {
    RetryPolicy::attempts(10)
        .initial_interval(Duration::from_secs(1))
        .max_interval(Duration::from_secs(30))
        .with_jitter(0.2)
}

/// Retries for tool calls.
pub(crate) fn tool_retry() -> RetryPolicy {
    RetryPolicy::attempts(8).initial_interval(Duration::from_millis(500)).max_interval(Duration::from_secs(20))
}

pub(crate) const LLM_TIMEOUT: Duration = Duration::from_secs(120);
pub(crate) const LLM_KEY_NAME: &str = LLM_KEY;

/// Sends a request and rejects an answer that is not well-formed JSON when JSON was asked
/// for, so the next attempt can be told what was wrong.
pub(crate) async fn chat(ctx: &ActivityCtx, request: LlmRequest) -> Result<LlmResponse, Failure> {
    let json_output = request.json_output;
    let response = ctx.llm(request).await?;
    if json_output && serde_json::from_str::<serde_json::Value>(&response.content).is_err() {
        return Err(Failure::InvalidOutput { message: format!("answer is not valid JSON: {:?}", response.content) });
    }
    Ok(response)
}

/// A registry holding what `register` registers: each scenario's `Scenario::registry`.
pub(crate) fn registry_with(register: fn(&mut Registry)) -> Registry {
    let mut registry = Registry::new();
    register(&mut registry);
    registry
}

/// The output of a run that completed, decoded; `None` for a run still open or that ended
/// otherwise. An output that does not decode is a business failure of the scenario.
pub(crate) fn completed_output<T: serde::de::DeserializeOwned>(
    history: &tempest_engine::History,
) -> Result<Option<T>, String> {
    let Some(tempest_engine::Kind::WorkflowCompleted { output }) = history.events.last().map(|e| &e.kind) else {
        return Ok(None);
    };
    output.decode().map(Some).map_err(|e| format!("run {}: output {output} does not decode: {e}", history.run_id))
}

/// The inputs of every activity of `activity_type` the run scheduled, with their seqs, in
/// history order.
pub(crate) fn scheduled(history: &tempest_engine::History, activity_type: &str) -> Vec<(u32, serde_json::Value)> {
    history
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            tempest_engine::Kind::ActivityScheduled { seq, activity_type: t, input, .. } if t == activity_type => {
                Some((*seq, input.to_value()))
            }
            _ => None,
        })
        .collect()
}
