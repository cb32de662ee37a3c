//! `agent_loop`: an agent that calls the LLM and a dynamic set of tools until the model
//! says it is done or a turn limit is reached.
//!
//! Owns the workflow, its two activities (`llm_turn`, `call_tool`), the scripted model (which
//! tool it picks, when it stops) and the business checks. Tool results feed the next turn.

use crate::common::{self, chat, LLM_KEY_NAME, LLM_TIMEOUT, MODEL};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use tempest_engine::history::Kind;
use tempest_engine::services::{Activities, ActivityCtx, LlmRequest, LlmResponse, Message, ToolCall};
use tempest_engine::{Ctx, Failure, Registry, Time, WorkflowResult};
use tempest_sim::rng::Rng;
use tempest_sim::scenario::{Finished, Scenario, Start, ToolOutcome};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AgentInput {
    pub(crate) task: String,
    pub(crate) turn_limit: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct AgentOutput {
    pub(crate) answer: Option<String>,
    pub(crate) turns: u32,
    pub(crate) tool_calls: u32,
}

/// One model turn: the conversation so far and the tools on offer.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TurnInput {
    messages: Vec<Message>,
    tools: Vec<String>,
}

/// What the workflow sends as a `TurnInput`: the same JSON, written from the workflow's own
/// lists instead of from copies of them (the conversation grows every turn).
#[derive(Serialize)]
struct TurnRequest<'a> {
    messages: &'a [Message],
    tools: &'a [String],
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum TurnOutput {
    Answer(String),
    Call(ToolCall),
}

const TOKENS_PER_TURN: u64 = 800;

/// The agent loop as a user writes it.
pub(crate) async fn agent_loop(ctx: Ctx, input: AgentInput) -> WorkflowResult<AgentOutput> {
    let mut messages =
        vec![Message::system("You are a research agent. Use tools, then answer."), Message::user(input.task.clone())];
    // The tool set grows as the agent works: notes can be written once something was found.
    let mut tools = vec!["search".to_owned(), "calculator".to_owned()];
    let mut tool_calls = 0;
    let workflow_id = ctx.workflow_id();
    for turn in 1..=input.turn_limit {
        let output: TurnOutput = ctx
            .activity("llm_turn", &TurnRequest { messages: &messages, tools: &tools })
            .retry(common::llm_retry())
            .start_to_close(LLM_TIMEOUT)
            .rate_limit(LLM_KEY_NAME, TOKENS_PER_TURN)
            .await?;
        match output {
            TurnOutput::Answer(answer) => return Ok(AgentOutput { answer: Some(answer), turns: turn, tool_calls }),
            TurnOutput::Call(call) => {
                let result: Value = ctx
                    .activity(
                        "call_tool",
                        &ToolRequest { arguments: &call.arguments, name: &call.name, turn, workflow_id: &workflow_id },
                    )
                    .retry(common::tool_retry())
                    .start_to_close(Duration::from_secs(60))
                    .await?;
                tool_calls += 1;
                messages.push(Message::assistant(format!("call {} {}", call.name, call.arguments)));
                messages.push(Message::tool(result.to_string()));
                if call.name == "search" && !tools.iter().any(|t| t == "write_note") {
                    tools.push("write_note".to_owned());
                }
            }
        }
    }
    Ok(AgentOutput { answer: None, turns: input.turn_limit, tool_calls })
}

async fn llm_turn(ctx: ActivityCtx, input: TurnInput) -> Result<TurnOutput, Failure> {
    let request = LlmRequest {
        model: MODEL.to_owned(),
        messages: input.messages,
        tools: input.tools,
        json_output: true,
        token_count: TOKENS_PER_TURN,
    };
    let response = chat(&ctx, request).await?;
    if let Some(call) = response.tool_calls.into_iter().next() {
        return Ok(TurnOutput::Call(call));
    }
    Ok(TurnOutput::Answer(response.content))
}

/// What the workflow sends as a `ToolInput`, without building a JSON map first. The fields are
/// in the order that map wrote its keys (sorted), so recorded runs keep their exact text.
#[derive(Serialize)]
struct ToolRequest<'a> {
    arguments: &'a Value,
    name: &'a str,
    turn: u32,
    workflow_id: &'a str,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ToolInput {
    name: String,
    arguments: Value,
    workflow_id: String,
    turn: u32,
}

async fn call_tool(ctx: ActivityCtx, input: ToolInput) -> Result<Value, Failure> {
    let arguments = json!({ "arguments": input.arguments, "workflow_id": input.workflow_id, "turn": input.turn });
    ctx.tool(&input.name, arguments).await
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register("agent_loop", agent_loop);
}

pub(crate) struct AgentLoop;

impl Scenario for AgentLoop {
    fn name(&self) -> &'static str {
        "agent_loop"
    }

    fn description(&self) -> &'static str {
        "agents call the LLM and a growing set of tools until the model answers or a turn limit"
    }

    fn registry(&self) -> Registry {
        common::registry_with(register)
    }

    fn activities(&self) -> Activities {
        let mut activities = Activities::new();
        activities.register("llm_turn", llm_turn).register("call_tool", call_tool);
        activities
    }

    fn workload(&self, rng: &mut Rng) -> Vec<Start> {
        let count = rng.range_inclusive(8, 12);
        (0..count)
            .map(|i| Start {
                at: Time(rng.below(120_000)),
                workflow_id: format!("agent-{i}"),
                workflow_type: "agent_loop".to_owned(),
                input: json!({ "task": format!("research question {i}"), "turn_limit": rng.range_inclusive(3, 8) }),
            })
            .collect()
    }

    fn llm_answer(&self, request: &LlmRequest, rng: &mut Rng) -> LlmResponse {
        let tool_results = request.messages.iter().filter(|m| m.role == "tool").count() as u64;
        // The more the agent has learned, the likelier the model answers.
        let answer_now = tool_results >= 1 && rng.chance(0.25 + 0.15 * tool_results as f64);
        if answer_now || request.tools.is_empty() {
            return LlmResponse {
                content: json!({ "answer": format!("answer after {tool_results} tool results") }).to_string(),
                tool_calls: Vec::new(),
                token_count: request.token_count,
            };
        }
        let tool = rng.pick(&request.tools).clone();
        let arguments = json!({ "query": format!("q{}", rng.below(100)) });
        LlmResponse {
            content: "{}".to_owned(),
            tool_calls: vec![ToolCall { name: tool, arguments }],
            token_count: request.token_count,
        }
    }

    fn tool_call(&self, name: &str, arguments: &Value, rng: &mut Rng) -> ToolOutcome {
        let workflow_id = arguments["workflow_id"].as_str().unwrap_or("?");
        let turn = arguments["turn"].as_u64().unwrap_or(0);
        match name {
            "write_note" => {
                ToolOutcome { result: json!({ "saved": true }), effect: Some(format!("note:{workflow_id}:{turn}")) }
            }
            "calculator" => ToolOutcome { result: json!({ "value": rng.below(1000) }), effect: None },
            _ => ToolOutcome { result: json!({ "hits": rng.below(10) }), effect: None },
        }
    }

    fn liveness_bound(&self) -> Duration {
        Duration::from_secs(6 * 3600)
    }

    fn check(&self, finished: &Finished<'_>) -> Result<(), String> {
        for history in finished.histories {
            let Some(last) = history.events.last() else {
                continue;
            };
            let Kind::WorkflowCompleted { output } = &last.kind else {
                continue;
            };
            let output: AgentOutput = output
                .decode()
                .map_err(|e| format!("run {}: output {output} is not an agent output: {e}", history.run_id))?;
            let limit = match &history.events[0].kind {
                Kind::WorkflowStarted { input, .. } => input.to_value()["turn_limit"].as_u64().unwrap_or(0) as u32,
                _ => 0,
            };
            if output.turns > limit || output.tool_calls > limit {
                return Err(format!(
                    "run {}: {} turns and {} tool calls exceed the turn limit {limit}",
                    history.run_id, output.turns, output.tool_calls
                ));
            }
            let scheduled_tools = history.events.iter().filter(|e| matches!(&e.kind, Kind::ActivityScheduled { activity_type, .. } if activity_type == "call_tool")).count() as u32;
            if scheduled_tools != output.tool_calls {
                return Err(format!(
                    "run {}: {scheduled_tools} tool activities in the history but the agent counted {}",
                    history.run_id, output.tool_calls
                ));
            }
        }
        Ok(())
    }
}
