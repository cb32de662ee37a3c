//! `tool_agent`: a non-looping agent. The model picks one tool for the user's request, and
//! that tool runs once; its result is the answer.
//!
//! Owns the workflow, its two activities (`choose_tool`, `run_tool`), the scripted model
//! (usually the right tool, sometimes a tool it was not offered, which validation rejects and
//! the next attempt is told about), the tools (two read-only, two with side effects) and the
//! business checks: a completed run ran exactly one offered tool, the one it reports, and no
//! request ever applied more than one side effect.
//!
//! Its workflow never does I/O of its own: the world carries out both activities.

use crate::common::{self, chat, LLM_KEY_NAME, LLM_TIMEOUT, MODEL};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use tempest_engine::services::{Activities, ActivityCtx, LlmRequest, LlmResponse, Message, ToolCall};
use tempest_engine::{Ctx, Failure, Registry, Time, WorkflowResult};
use tempest_sim::rng::Rng;
use tempest_sim::scenario::{Finished, Scenario, Start, ToolOutcome};

/// The tools on offer, and the side effect each applies (`None`: read-only).
const TOOLS: [(&str, Option<&str>); 4] =
    [("get_weather", None), ("lookup_order", None), ("send_email", Some("email")), ("create_ticket", Some("ticket"))];
/// A tool the model sometimes makes up.
const HALLUCINATED_TOOL: &str = "delete_account";
const TOKENS: u64 = 600;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub(crate) request: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Answer {
    pub(crate) tool: String,
    pub(crate) result: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ChooseInput {
    request: String,
    tools: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunToolInput {
    name: String,
    arguments: Value,
    workflow_id: String,
}

/// The agent as a user writes it: one model call to choose, one tool call to act.
pub(crate) async fn tool_agent(ctx: Ctx, input: Request) -> WorkflowResult<Answer> {
    let tools: Vec<String> = TOOLS.iter().map(|(name, _)| (*name).to_owned()).collect();
    let call: ToolCall = ctx
        .activity("choose_tool", &ChooseInput { request: input.request, tools })
        .retry(common::llm_retry())
        .start_to_close(LLM_TIMEOUT)
        .rate_limit(LLM_KEY_NAME, TOKENS)
        .await?;
    let result: Value = ctx
        .activity(
            "run_tool",
            &RunToolInput { name: call.name.clone(), arguments: call.arguments, workflow_id: ctx.workflow_id() },
        )
        .retry(common::tool_retry())
        .start_to_close(Duration::from_secs(60))
        .await?;
    Ok(Answer { tool: call.name, result })
}

async fn choose_tool(ctx: ActivityCtx, input: ChooseInput) -> Result<ToolCall, Failure> {
    let mut messages = vec![Message::system("Pick exactly one tool for the request."), Message::user(input.request)];
    if let Some(Failure::InvalidOutput { message }) = ctx.previous_failure() {
        messages.push(Message::user(format!("Your last answer was invalid: {message}")));
    }
    let request = LlmRequest {
        model: MODEL.to_owned(),
        messages,
        tools: input.tools.clone(),
        json_output: true,
        token_count: TOKENS,
    };
    let response = chat(&ctx, request).await?;
    let Some(call) = response.tool_calls.into_iter().next() else {
        return Err(Failure::InvalidOutput { message: "the answer calls no tool".to_owned() });
    };
    if !input.tools.contains(&call.name) {
        return Err(Failure::InvalidOutput {
            message: format!("tool {} is not offered; choose one of {}", call.name, input.tools.join(", ")),
        });
    }
    Ok(call)
}

async fn run_tool(ctx: ActivityCtx, input: RunToolInput) -> Result<Value, Failure> {
    ctx.tool(&input.name, json!({ "arguments": input.arguments, "workflow_id": input.workflow_id })).await
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register("tool_agent", tool_agent);
}

/// The tool a request needs: requests name it first.
fn tool_for(request: &str) -> &'static str {
    TOOLS.iter().map(|(name, _)| *name).find(|name| request.starts_with(name)).unwrap_or(TOOLS[0].0)
}

pub(crate) struct ToolAgent;

impl Scenario for ToolAgent {
    fn name(&self) -> &'static str {
        "tool_agent"
    }

    fn description(&self) -> &'static str {
        "the model picks one tool for a request (made-up tools are rejected), and it runs once"
    }

    fn registry(&self) -> Registry {
        common::registry_with(register)
    }

    fn activities(&self) -> Activities {
        let mut activities = Activities::new();
        activities.register("choose_tool", choose_tool).register("run_tool", run_tool);
        activities
    }

    fn workload(&self, rng: &mut Rng) -> Vec<Start> {
        (0..rng.range_inclusive(5, 10))
            .map(|i| {
                let (tool, _) = rng.pick(&TOOLS);
                Start {
                    at: Time(rng.below(60_000)),
                    workflow_id: format!("request-{i}"),
                    workflow_type: "tool_agent".to_owned(),
                    input: json!({ "request": format!("{tool} for customer {i}") }),
                }
            })
            .collect()
    }

    fn llm_answer(&self, request: &LlmRequest, rng: &mut Rng) -> LlmResponse {
        let told = request.messages.iter().any(|m| m.content.starts_with("Your last answer was invalid"));
        let asked = request.messages.get(1).map(|m| m.content.as_str()).unwrap_or_default();
        // A model usually picks the tool the request needs, sometimes another one, and now
        // and then one it was never offered, unless it was just told off for that.
        let name = if !told && rng.chance(0.1) {
            HALLUCINATED_TOOL.to_owned()
        } else if rng.chance(0.85) {
            tool_for(asked).to_owned()
        } else {
            rng.pick(&request.tools).clone()
        };
        LlmResponse {
            content: "{}".to_owned(),
            tool_calls: vec![ToolCall { name, arguments: json!({ "query": asked }) }],
            token_count: request.token_count,
        }
    }

    fn tool_call(&self, name: &str, arguments: &Value, rng: &mut Rng) -> ToolOutcome {
        let workflow_id = arguments["workflow_id"].as_str().unwrap_or("?");
        let effect = TOOLS.iter().find(|(tool, _)| *tool == name).and_then(|(_, effect)| *effect);
        ToolOutcome {
            result: json!({ "tool": name, "value": rng.below(1000) }),
            effect: effect.map(|effect| format!("{effect}:{workflow_id}")),
        }
    }

    fn liveness_bound(&self) -> Duration {
        Duration::from_secs(3 * 3600)
    }

    fn check(&self, finished: &Finished<'_>) -> Result<(), String> {
        for history in finished.histories {
            let workflow_id = &history.workflow_id;
            let effects: Vec<&String> = finished
                .tool_effects
                .iter()
                .filter(|e| e.split_once(':').is_some_and(|(_, of)| of == workflow_id))
                .collect();
            if effects.len() > 1 {
                return Err(format!("request {workflow_id}: one tool call applied {effects:?}"));
            }
            let Some(answer) = common::completed_output::<Answer>(history)? else {
                continue;
            };
            let runs = common::scheduled(history, "run_tool");
            let [(_, run)] = runs.as_slice() else {
                return Err(format!("run {}: a non-looping agent ran {} tools", history.run_id, runs.len()));
            };
            if run["name"] != answer.tool {
                return Err(format!(
                    "run {}: ran tool {} but answers for {}",
                    history.run_id, run["name"], answer.tool
                ));
            }
            let Some((_, effect)) = TOOLS.iter().find(|(tool, _)| *tool == answer.tool) else {
                return Err(format!("run {}: ran tool {}, which was never offered", history.run_id, answer.tool));
            };
            let expected: Vec<String> = effect.map(|e| format!("{e}:{workflow_id}")).into_iter().collect();
            if effects.iter().map(|e| e.as_str()).ne(expected.iter().map(String::as_str)) {
                return Err(format!(
                    "request {workflow_id}: tool {} should have applied {expected:?} but applied {effects:?}",
                    answer.tool
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, WithWorkflows};
    use tempest_engine::history::Kind;

    #[test]
    fn each_request_runs_one_offered_tool_once_and_made_up_tools_are_rejected() {
        let mut rejected = 0;
        for seed in 0..4 {
            let outcome = testing::run_passing(&ToolAgent, seed);
            for history in &outcome.histories {
                let Some(answer) = common::completed_output::<Answer>(history).unwrap() else { continue };
                assert!(TOOLS.iter().any(|(tool, _)| *tool == answer.tool), "seed {seed}: {answer:?}");
                assert_eq!(common::scheduled(history, "run_tool").len(), 1, "seed {seed} {}", history.run_id);
                assert_eq!(answer.result["tool"], answer.tool.as_str(), "seed {seed} {}", history.run_id);
                rejected += history
                    .events
                    .iter()
                    .filter(|e| matches!(&e.kind, Kind::ActivityAttemptFailed { failure: Failure::InvalidOutput { message }, .. }
                        if message.contains(HALLUCINATED_TOOL)))
                    .count();
            }
        }
        assert!(rejected > 0, "the model never made up a tool");
    }

    /// Runs the chosen tool, then looks the order up too "to be helpful": two tools.
    async fn two_tools(ctx: Ctx, input: Request) -> WorkflowResult<Answer> {
        let answer = tool_agent(ctx.clone(), input).await?;
        let arguments =
            RunToolInput { name: "lookup_order".to_owned(), arguments: json!({}), workflow_id: ctx.workflow_id() };
        let _: Value = ctx.activity("run_tool", &arguments).retry(common::tool_retry()).await?;
        Ok(answer)
    }

    #[test]
    fn agent_running_a_second_tool_fails_its_check() {
        let broken = WithWorkflows {
            scenario: ToolAgent,
            register: |registry| {
                registry.register("tool_agent", two_tools);
            },
        };
        let outcome = testing::first_failure(&broken, 5).expect("the first seed fails");
        let failure = outcome.failure.expect("failed");
        assert_eq!(failure.check, "check_tool_agent_outcome", "{}", failure.message);
    }
}
