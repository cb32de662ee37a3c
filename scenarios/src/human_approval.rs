//! `human_approval`: the model drafts, a human approves or rejects with comments (the draft
//! is revised), or stays silent and the run escalates after days.
//!
//! Owns the workflow, its activities (`draft`, `notify_human`, `publish`, `escalate`), the
//! scripted model and human, and the business checks: a run publishes at most once, only
//! after an approval, and escalates only after a wait with no answer.

use crate::common::{self, chat, LLM_KEY_NAME, LLM_TIMEOUT, MODEL};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use tempest_engine::history::Kind;
use tempest_engine::services::{Activities, ActivityCtx, LlmRequest, LlmResponse, Message};
use tempest_engine::{Ctx, Failure, Registry, Time, WorkflowResult};
use tempest_sim::rng::Rng;
use tempest_sim::scenario::{Finished, HumanAnswer, Scenario, Start, ToolOutcome, NOTIFY_HUMAN};

/// How long the workflow waits for the human before escalating.
const APPROVAL_TIMEOUT: Duration = Duration::from_secs(3 * 86_400);
const REVISION_COUNT_MAX: u32 = 3;
const TOKENS_PER_DRAFT: u64 = 1_500;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub topic: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub approved: bool,
    #[serde(default)]
    pub comment: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Decision {
    Published { draft: String, revisions: u32 },
    Escalated { revisions: u32 },
    RejectedTooOften { revisions: u32 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct DraftInput {
    topic: String,
    previous: Option<String>,
    comment: Option<String>,
}

/// The approval flow as a user writes it.
pub async fn human_approval(ctx: Ctx, request: Request) -> WorkflowResult<Decision> {
    let mut previous = None;
    let mut comment = None;
    for revision in 0..=REVISION_COUNT_MAX {
        let draft: String = ctx
            .activity(
                "draft",
                &DraftInput { topic: request.topic.clone(), previous: previous.clone(), comment: comment.clone() },
            )
            .retry(common::llm_retry())
            .start_to_close(LLM_TIMEOUT)
            .rate_limit(LLM_KEY_NAME, TOKENS_PER_DRAFT)
            .await?;
        ctx.set_query_value("draft", &draft);
        let _: Value = ctx
            .activity(NOTIFY_HUMAN, &json!({ "workflow_id": ctx.workflow_id(), "revision": revision, "draft": draft }))
            .retry(common::tool_retry())
            .start_to_close(Duration::from_secs(60))
            .await?;
        let Some(answer) = ctx.signal_timeout::<Approval>("approval", APPROVAL_TIMEOUT).await? else {
            let _: Value = ctx
                .activity("escalate", &json!({ "workflow_id": ctx.workflow_id(), "revision": revision }))
                .retry(common::tool_retry())
                .await?;
            return Ok(Decision::Escalated { revisions: revision });
        };
        if answer.approved {
            let _: Value = ctx
                .activity("publish", &json!({ "workflow_id": ctx.workflow_id(), "draft": draft }))
                .retry(common::tool_retry())
                .await?;
            return Ok(Decision::Published { draft, revisions: revision });
        }
        previous = Some(draft);
        comment = Some(answer.comment);
    }
    Ok(Decision::RejectedTooOften { revisions: REVISION_COUNT_MAX })
}

async fn draft(ctx: ActivityCtx, input: DraftInput) -> Result<String, Failure> {
    let mut messages =
        vec![Message::system("Write a short announcement as JSON {\"text\": ...}."), Message::user(input.topic)];
    if let (Some(previous), Some(comment)) = (input.previous, input.comment) {
        messages.push(Message::assistant(previous));
        messages.push(Message::user(format!("Revise it: {comment}")));
    }
    if let Some(Failure::InvalidOutput { message }) = ctx.previous_failure() {
        // The validation error of the last attempt tells the model what to fix.
        messages.push(Message::user(format!("Your last answer was invalid: {message}")));
    }
    let request = LlmRequest {
        model: MODEL.to_owned(),
        messages,
        tools: Vec::new(),
        json_output: true,
        token_count: TOKENS_PER_DRAFT,
    };
    let response = chat(&ctx, request).await?;
    let value: Value =
        serde_json::from_str(&response.content).map_err(|e| Failure::InvalidOutput { message: e.to_string() })?;
    value["text"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Failure::InvalidOutput { message: "missing field `text`".to_owned() })
}

async fn tool(ctx: ActivityCtx, name: &'static str, arguments: Value) -> Result<Value, Failure> {
    ctx.tool(name, arguments).await
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register("human_approval", human_approval);
}

pub(crate) struct HumanApproval;

impl Scenario for HumanApproval {
    fn name(&self) -> &'static str {
        "human_approval"
    }

    fn description(&self) -> &'static str {
        "an LLM draft waits up to days for a human's approval, is revised on rejection, escalates on silence"
    }

    fn registry(&self) -> Registry {
        common::registry_with(register)
    }

    fn activities(&self) -> Activities {
        let mut activities = Activities::new();
        activities
            .register("draft", draft)
            .register(NOTIFY_HUMAN, |ctx, args: Value| tool(ctx, NOTIFY_HUMAN, args))
            .register("publish", |ctx, args: Value| tool(ctx, "publish", args))
            .register("escalate", |ctx, args: Value| tool(ctx, "escalate", args));
        activities
    }

    fn workload(&self, rng: &mut Rng) -> Vec<Start> {
        let count = rng.range_inclusive(3, 8);
        (0..count)
            .map(|i| Start {
                at: Time(rng.below(600_000)),
                workflow_id: format!("approval-{i}"),
                workflow_type: "human_approval".to_owned(),
                input: json!({ "topic": format!("release note {i}") }),
            })
            .collect()
    }

    fn llm_answer(&self, request: &LlmRequest, rng: &mut Rng) -> LlmResponse {
        let text = format!("draft v{} #{}", request.messages.len(), rng.below(1000));
        LlmResponse {
            content: json!({ "text": text }).to_string(),
            tool_calls: Vec::new(),
            token_count: request.token_count,
        }
    }

    fn tool_call(&self, name: &str, arguments: &Value, _rng: &mut Rng) -> ToolOutcome {
        let workflow_id = arguments["workflow_id"].as_str().unwrap_or("?");
        let revision = arguments["revision"].as_u64().unwrap_or(0);
        let effect = match name {
            NOTIFY_HUMAN => format!("notify:{workflow_id}:{revision}"),
            "publish" => format!("publish:{workflow_id}"),
            _ => format!("escalate:{workflow_id}"),
        };
        ToolOutcome { result: json!({ "ok": true }), effect: Some(effect) }
    }

    fn human_answer(&self, arguments: &Value, rng: &mut Rng) -> Option<HumanAnswer> {
        let workflow_id = arguments["workflow_id"].as_str()?.to_owned();
        let approved = rng.chance(0.6);
        let comment = if approved { String::new() } else { "make it shorter".to_owned() };
        Some(HumanAnswer {
            workflow_id,
            signal_name: "approval".to_owned(),
            payload: json!({ "approved": approved, "comment": comment }),
        })
    }

    fn liveness_bound(&self) -> Duration {
        // Four rounds of drafts, each waiting up to three days, plus slack for retries.
        Duration::from_secs(20 * 86_400)
    }

    fn check(&self, finished: &Finished<'_>) -> Result<(), String> {
        for history in finished.histories {
            let Some(Kind::WorkflowCompleted { output }) = history.events.last().map(|e| &e.kind) else {
                continue;
            };
            let decision: Decision =
                output.decode().map_err(|e| format!("run {}: {output} is not a decision: {e}", history.run_id))?;
            let approvals: Vec<bool> = history
                .events
                .iter()
                .filter_map(|e| match &e.kind {
                    Kind::SignalReceived { payload, .. } => payload.to_value()["approved"].as_bool(),
                    _ => None,
                })
                .collect();
            let published =
                finished.tool_effects.iter().filter(|e| **e == format!("publish:{}", history.workflow_id)).count();
            match decision {
                Decision::Published { .. } if !approvals.contains(&true) => {
                    return Err(format!("run {}: published without an approval", history.run_id))
                }
                Decision::Published { .. } if published != 1 => {
                    return Err(format!("run {}: published {published} times", history.run_id))
                }
                Decision::Escalated { .. } if published != 0 => {
                    return Err(format!("run {}: escalated but also published", history.run_id))
                }
                _ => {}
            }
        }
        Ok(())
    }
}
