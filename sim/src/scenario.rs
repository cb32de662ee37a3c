//! What a scenario gives the world: its workflows and activities, its workload, the scripted
//! behaviour of the LLM, tools and humans it talks to, and its own business checks.
//!
//! Owns the `Scenario` interface only. Scenarios are written against the engine's public
//! API, exactly as users write workflows; this trait is how the world learns what to run and
//! what "correct" means for it. It never reaches into the world's internals.

use crate::rng::Rng;
use serde_json::Value;
use std::time::Duration;
use tempest_engine::history::History;
use tempest_engine::services::{Activities, LlmRequest, LlmResponse};
use tempest_engine::{Registry, Time};

/// One workflow the scenario's client starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Start {
    pub at: Time,
    pub workflow_id: String,
    pub workflow_type: String,
    pub input: Value,
}

/// A human's answer to a notification, sent as a signal.
#[derive(Clone, Debug, PartialEq)]
pub struct HumanAnswer {
    pub workflow_id: String,
    pub signal_name: String,
    pub payload: Value,
}

/// What the world shows a scenario's business checks at the end.
pub struct Finished<'a> {
    /// Histories of every run, in run id order.
    pub histories: &'a [History],
    /// Side effects the tools applied, by business effect id.
    pub tool_effects: &'a [String],
}

pub trait Scenario: Send + Sync {
    fn name(&self) -> &'static str;
    /// One line for `tempest scenarios`.
    fn description(&self) -> &'static str;
    fn registry(&self) -> Registry;
    fn activities(&self) -> Activities;
    /// The workflows to start; drawn from `rng` so each seed has its own mix.
    fn workload(&self, rng: &mut Rng) -> Vec<Start>;
    /// The scripted model: its answer to a request that the provider admitted.
    fn llm_answer(&self, request: &LlmRequest, rng: &mut Rng) -> LlmResponse;
    /// The answer of a tool call, and the business effect it applies (None: read-only).
    fn tool_call(&self, name: &str, arguments: &Value, rng: &mut Rng) -> ToolOutcome;
    /// A human's answer to a `notify_human` tool call.
    fn human_answer(&self, _arguments: &Value, _rng: &mut Rng) -> Option<HumanAnswer> {
        None
    }
    /// How long after the heal every accepted run must have finished.
    fn liveness_bound(&self) -> Duration;
    /// Business checks on the finished world.
    fn check(&self, _finished: &Finished<'_>) -> Result<(), String> {
        Ok(())
    }
    /// "Sometimes" facts about the business outcome that only the scenario can see (e.g.
    /// `compensation_ran`), each counted once per occurrence in the sweep summary.
    fn sometimes(&self, _finished: &Finished<'_>) -> Vec<&'static str> {
        Vec::new()
    }
}

/// What a tool call does.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutcome {
    pub result: Value,
    /// The side effect's business identity (e.g. `book:flight:trip-3`); applying the same
    /// one twice is a bug the world reports.
    pub effect: Option<String>,
}

/// The tool the world routes to its humans.
pub const NOTIFY_HUMAN: &str = "notify_human";
