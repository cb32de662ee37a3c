//! The runtime's own workflow type, `steps`: sequential string activities, optionally flaky,
//! with an optional durable sleep and an optional signal to wait for.
//!
//! Owns the workload of `tempest bench runtime` (3 steps, nothing else) and of the crash
//! test (steps that fail and retry, timers, signals). It does no I/O of its own.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tempest_engine::services::{Activities, ActivityCtx};
use tempest_engine::{Ctx, Failure, Registry, RetryPolicy, WorkflowResult};

pub const WORKFLOW_TYPE: &str = "steps";
pub const ACTIVITY_TYPE: &str = "step";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepsInput {
    /// How many sequential activities.
    #[serde(default = "default_step_count")]
    pub step_count: u32,
    /// Each activity fails this many attempts before it succeeds.
    #[serde(default)]
    pub fail_attempt_count: u32,
    /// A durable sleep after the activities.
    #[serde(default)]
    pub sleep_ms: u64,
    /// Wait for this signal before finishing; its payload joins the result.
    #[serde(default)]
    pub signal: Option<String>,
}

fn default_step_count() -> u32 {
    3
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StepInput {
    index: u32,
    fail_attempt_count: u32,
}

/// Runs the steps and returns their results joined with `,`.
pub async fn steps(ctx: Ctx, input: StepsInput) -> WorkflowResult<String> {
    let mut results = Vec::new();
    for index in 0..input.step_count {
        let result: String = ctx
            .activity(ACTIVITY_TYPE, &StepInput { index, fail_attempt_count: input.fail_attempt_count })
            .retry(RetryPolicy::attempts(input.fail_attempt_count + 5).initial_interval(Duration::from_millis(20)))
            .start_to_close(Duration::from_secs(30))
            .await?;
        results.push(result);
    }
    if input.sleep_ms > 0 {
        ctx.sleep(Duration::from_millis(input.sleep_ms)).await?;
        results.push("slept".to_owned());
    }
    if let Some(name) = &input.signal {
        let payload: serde_json::Value = ctx.signal(name).await?;
        results.push(format!("signal:{payload}"));
    }
    Ok(results.join(","))
}

async fn step(ctx: ActivityCtx, input: StepInput) -> Result<String, Failure> {
    if ctx.attempt() <= input.fail_attempt_count {
        return Err(Failure::Application {
            kind: "flaky".to_owned(),
            message: format!("step {} fails attempt {} on purpose", input.index, ctx.attempt()),
        });
    }
    Ok(format!("step{}", input.index))
}

pub fn register(registry: &mut Registry, activities: &mut Activities) {
    registry.register(WORKFLOW_TYPE, steps);
    activities.register(ACTIVITY_TYPE, step);
}
