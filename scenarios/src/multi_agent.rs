//! `multi_agent`: a planner splits a topic into subtopics with the LLM, starts a researcher
//! child workflow per subtopic in parallel, retries a researcher that failed once and reports
//! the subtopics that failed twice, then has a writer child combine the research and a
//! reviewer child review it (one revision when the reviewer asks for changes).
//!
//! Owns the four workflows (the planner, registered as `multi_agent`, `researcher`, `writer`,
//! `reviewer`), their activities
//! (`plan`, `web_search`, `summarize_sources`, `draft`, `review`), the scripted model and
//! search engine, and the business checks over the planner's history: every planned subtopic
//! is either in the report, from a researcher that completed, or reported failed after a
//! retry; the writer got exactly the research that succeeded; the report is the writer's last
//! draft and covers every subtopic it claims.
//!
//! Its workflows never do I/O of their own, and the planner never drops a failed child silently.

use crate::common::{self, chat, LLM_KEY_NAME, LLM_TIMEOUT, MODEL};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use tempest_engine::history::{ChildOutcome, Kind};
use tempest_engine::services::{Activities, ActivityCtx, LlmRequest, LlmResponse, Message};
use tempest_engine::{Ctx, Failure, Registry, Time, WorkflowError, WorkflowResult};
use tempest_sim::rng::Rng;
use tempest_sim::scenario::{Finished, Scenario, Start, ToolOutcome};

/// Tries of one subtopic's research before the planner reports it failed.
pub(crate) const RESEARCH_ATTEMPT_COUNT_MAX: usize = 2;
const TOKENS: u64 = 1_200;
const PLAN_PROMPT: &str = "Split the topic into subtopics, as JSON {\"subtopics\": [...]}.";
const SUMMARIZE_PROMPT: &str = "Summarize the sources as JSON {\"notes\": ...}.";
const DRAFT_PROMPT: &str = "Write a report from the notes as JSON {\"draft\": ...}.";
const REVIEW_PROMPT: &str = "Review the draft as JSON {\"approved\": ..., \"comment\": ...}.";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Topic {
    pub(crate) topic: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Assignment {
    pub(crate) topic: String,
    pub(crate) subtopic: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Research {
    pub(crate) subtopic: String,
    pub(crate) notes: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct DraftRequest {
    pub(crate) topic: String,
    pub(crate) research: Vec<Research>,
    pub(crate) comment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Review {
    pub(crate) approved: bool,
    pub(crate) comment: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) draft: String,
    /// Subtopics covered, from researchers that completed.
    pub(crate) sections: Vec<String>,
    /// Subtopics whose research failed on every try.
    pub(crate) failed: Vec<String>,
    pub(crate) revisions: u32,
}

fn llm_call<O: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    activity_type: &str,
    input: &impl Serialize,
) -> tempest_engine::workflow::ActivityCall<O> {
    ctx.activity(activity_type, input)
        .retry(common::llm_retry())
        .start_to_close(LLM_TIMEOUT)
        .rate_limit(LLM_KEY_NAME, TOKENS)
}

/// Researches every subtopic in parallel; a failed researcher is started once more.
async fn research_all(ctx: &Ctx, topic: &str, subtopics: &[String]) -> Vec<Result<Research, String>> {
    let mut results: Vec<Result<Research, String>> =
        subtopics.iter().map(|s| Err(format!("{s} not researched yet"))).collect();
    for _ in 0..RESEARCH_ATTEMPT_COUNT_MAX {
        let pending: Vec<usize> = (0..subtopics.len()).filter(|i| results[*i].is_err()).collect();
        let children = pending.iter().map(|i| {
            let assignment = Assignment { topic: topic.to_owned(), subtopic: subtopics[*i].clone() };
            ctx.child::<Research>("researcher", &assignment).start()
        });
        let outcomes = join_all(children.collect::<Vec<_>>()).await;
        for (i, outcome) in pending.into_iter().zip(outcomes) {
            results[i] = outcome.map_err(|e| e.to_string());
        }
    }
    results
}

/// The planner as a user writes it.
pub(crate) async fn planner(ctx: Ctx, input: Topic) -> WorkflowResult<Report> {
    let subtopics: Vec<String> = llm_call(&ctx, "plan", &input.topic).await?;
    let mut research = Vec::new();
    let mut failed = Vec::new();
    for (subtopic, result) in subtopics.iter().zip(research_all(&ctx, &input.topic, &subtopics).await) {
        match result {
            Ok(notes) => research.push(notes),
            Err(_) => failed.push(subtopic.clone()),
        }
    }
    let sections: Vec<String> = research.iter().map(|r| r.subtopic.clone()).collect();
    let mut request = DraftRequest { topic: input.topic.clone(), research, comment: None };
    let mut draft: String = ctx.child("writer", &request).await?;
    let review: Review = ctx.child("reviewer", &draft).await?;
    let mut revisions = 0;
    if !review.approved {
        request.comment = Some(review.comment);
        draft = ctx.child("writer", &request).await?;
        revisions = 1;
    }
    Ok(Report { draft, sections, failed, revisions })
}

/// A researcher: search the web, then summarize what it found; no sources is a failure.
pub(crate) async fn researcher(ctx: Ctx, assignment: Assignment) -> WorkflowResult<Research> {
    let hits: Vec<String> = ctx
        .activity("web_search", &json!({ "query": assignment.subtopic, "workflow_id": ctx.workflow_id() }))
        .retry(common::tool_retry())
        .start_to_close(Duration::from_secs(60))
        .await?;
    if hits.is_empty() {
        return Err(WorkflowError::failed(format!("no sources found for {}", assignment.subtopic)));
    }
    let notes: String =
        llm_call(&ctx, "summarize_sources", &json!({ "subtopic": assignment.subtopic, "sources": hits })).await?;
    Ok(Research { subtopic: assignment.subtopic, notes })
}

pub(crate) async fn writer(ctx: Ctx, request: DraftRequest) -> WorkflowResult<String> {
    Ok(llm_call(&ctx, "draft", &request).await?)
}

pub(crate) async fn reviewer(ctx: Ctx, draft: String) -> WorkflowResult<Review> {
    Ok(llm_call(&ctx, "review", &draft).await?)
}

/// Asks the model with `prompt` and `content`, and decodes field `field` of its JSON answer.
async fn ask<T: serde::de::DeserializeOwned>(
    ctx: &ActivityCtx,
    prompt: &str,
    content: String,
    field: &str,
) -> Result<T, Failure> {
    let mut messages = vec![Message::system(prompt), Message::user(content)];
    if let Some(Failure::InvalidOutput { message }) = ctx.previous_failure() {
        messages.push(Message::user(format!("Your last answer was invalid: {message}")));
    }
    let request =
        LlmRequest { model: MODEL.to_owned(), messages, tools: Vec::new(), json_output: true, token_count: TOKENS };
    let response = chat(ctx, request).await?;
    let answer: Value =
        serde_json::from_str(&response.content).map_err(|e| Failure::InvalidOutput { message: e.to_string() })?;
    serde_json::from_value(answer[field].clone())
        .map_err(|e| Failure::InvalidOutput { message: format!("field `{field}`: {e}") })
}

async fn plan(ctx: ActivityCtx, topic: String) -> Result<Vec<String>, Failure> {
    let subtopics: Vec<String> = ask(&ctx, PLAN_PROMPT, topic, "subtopics").await?;
    if subtopics.is_empty() {
        return Err(Failure::InvalidOutput { message: "no subtopics".to_owned() });
    }
    Ok(subtopics)
}

async fn web_search(ctx: ActivityCtx, query: Value) -> Result<Vec<String>, Failure> {
    let answer = ctx.tool("web_search", query).await?;
    serde_json::from_value(answer)
        .map_err(|e| Failure::Application { kind: "bad_answer".to_owned(), message: e.to_string() })
}

async fn summarize_sources(ctx: ActivityCtx, input: Value) -> Result<String, Failure> {
    ask(&ctx, SUMMARIZE_PROMPT, input.to_string(), "notes").await
}

/// Drafts the report; a draft that leaves out a subtopic's research is sent back.
async fn draft(ctx: ActivityCtx, request: DraftRequest) -> Result<String, Failure> {
    let content = serde_json::to_string(&request).unwrap_or_default();
    let draft: String = ask(&ctx, DRAFT_PROMPT, content, "draft").await?;
    if let Some(missing) = request.research.iter().find(|r| !draft.contains(&r.notes)) {
        return Err(Failure::InvalidOutput {
            message: format!("the draft leaves out the notes on {}", missing.subtopic),
        });
    }
    Ok(draft)
}

async fn review(ctx: ActivityCtx, draft: String) -> Result<Review, Failure> {
    let answer: Value = ask(&ctx, REVIEW_PROMPT, draft, "review").await?;
    serde_json::from_value(answer).map_err(|e| Failure::InvalidOutput { message: e.to_string() })
}

pub(crate) fn register(registry: &mut Registry) {
    registry
        .register("multi_agent", planner)
        .register("researcher", researcher)
        .register("writer", writer)
        .register("reviewer", reviewer);
}

pub(crate) fn activities() -> Activities {
    let mut activities = Activities::new();
    activities
        .register("plan", plan)
        .register("web_search", web_search)
        .register("summarize_sources", summarize_sources)
        .register("draft", draft)
        .register("review", review);
    activities
}

pub(crate) struct MultiAgent;

impl Scenario for MultiAgent {
    fn name(&self) -> &'static str {
        "multi_agent"
    }

    fn description(&self) -> &'static str {
        "a planner runs researcher, writer and reviewer child workflows; a failed child is retried or reported"
    }

    fn registry(&self) -> Registry {
        common::registry_with(register)
    }

    fn activities(&self) -> Activities {
        activities()
    }

    fn workload(&self, rng: &mut Rng) -> Vec<Start> {
        (0..rng.range_inclusive(2, 3))
            .map(|i| Start {
                at: Time(rng.below(60_000)),
                workflow_id: format!("report-{i}"),
                workflow_type: "multi_agent".to_owned(),
                input: json!({ "topic": format!("topic {i}") }),
            })
            .collect()
    }

    fn llm_answer(&self, request: &LlmRequest, rng: &mut Rng) -> LlmResponse {
        let prompt = request.messages.first().map(|m| m.content.as_str()).unwrap_or_default();
        let content = request.messages.get(1).map(|m| m.content.as_str()).unwrap_or_default();
        let answer = match prompt {
            PLAN_PROMPT => {
                let count = rng.range_inclusive(2, 3);
                json!({ "subtopics": (0..count).map(|i| format!("{content} / part {i}")).collect::<Vec<_>>() })
            }
            SUMMARIZE_PROMPT => json!({ "notes": format!("notes#{}", rng.below(1_000_000)) }),
            DRAFT_PROMPT => {
                // The model combines the notes it was given, and now and then forgets one.
                let request: Option<DraftRequest> = serde_json::from_str(content).ok();
                let mut notes: Vec<String> =
                    request.map(|r| r.research.into_iter().map(|r| r.notes).collect()).unwrap_or_default();
                if !notes.is_empty() && rng.chance(0.1) {
                    notes.pop();
                }
                json!({ "draft": format!("report: {}", notes.join("; ")) })
            }
            _ => json!({ "review": { "approved": rng.chance(0.7), "comment": "cite more sources" } }),
        };
        LlmResponse { content: answer.to_string(), tool_calls: Vec::new(), token_count: request.token_count }
    }

    fn tool_call(&self, _name: &str, _arguments: &Value, rng: &mut Rng) -> ToolOutcome {
        // Some subtopics turn up nothing.
        let hits = if rng.chance(0.15) { 0 } else { rng.range_inclusive(1, 3) };
        let result =
            json!((0..hits).map(|i| format!("https://example.org/{}", i + rng.below(100))).collect::<Vec<_>>());
        ToolOutcome { result, effect: None }
    }

    fn liveness_bound(&self) -> Duration {
        Duration::from_secs(6 * 3600)
    }

    fn check(&self, finished: &Finished<'_>) -> Result<(), String> {
        for history in finished.histories.iter().filter(|h| h.workflow_type == "multi_agent") {
            check_planner(history)?;
        }
        Ok(())
    }
}

/// The business outcome of one planner run: see the module comment.
fn check_planner(history: &tempest_engine::History) -> Result<(), String> {
    let Some(report) = common::completed_output::<Report>(history)? else {
        return Ok(());
    };
    let run = &history.run_id;
    let plan_seq = common::scheduled(history, "plan").first().map(|(seq, _)| *seq);
    let subtopics: Vec<String> = history
        .events
        .iter()
        .find_map(|e| match &e.kind {
            Kind::ActivityCompleted { seq, output, .. } if Some(*seq) == plan_seq => output.decode().ok(),
            _ => None,
        })
        .ok_or_else(|| format!("run {run}: completed without a plan"))?;
    let outcome_of = |seq: u32| {
        history.events.iter().find_map(|e| match &e.kind {
            Kind::ChildCompleted { seq: s, outcome } if *s == seq => Some(outcome),
            _ => None,
        })
    };
    let children = |workflow_type: &str| -> Vec<(u32, Value)> {
        history
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                Kind::ChildStarted { seq, workflow_type: t, input, .. } if t == workflow_type => {
                    Some((*seq, input.to_value()))
                }
                _ => None,
            })
            .collect()
    };
    let researchers = children("researcher");
    let mut research = Vec::new();
    for subtopic in &subtopics {
        let tries: Vec<u32> =
            researchers.iter().filter(|(_, input)| input["subtopic"] == *subtopic).map(|(seq, _)| *seq).collect();
        let outcomes: Vec<Option<&ChildOutcome>> = tries.iter().map(|seq| outcome_of(*seq)).collect();
        let succeeded = outcomes.iter().find_map(|o| match o {
            Some(ChildOutcome::Completed { output }) => Some(output),
            _ => None,
        });
        let in_report = report.sections.contains(subtopic);
        let reported_failed = report.failed.contains(subtopic);
        match succeeded {
            Some(output) => {
                let notes: Research =
                    output.decode().map_err(|e| format!("run {run}: research {output} does not decode: {e}"))?;
                if !in_report || reported_failed {
                    return Err(format!("run {run}: research on {subtopic:?} completed but is not in the report"));
                }
                research.push(notes);
            }
            None if tries.len() < RESEARCH_ATTEMPT_COUNT_MAX => {
                return Err(format!(
                    "run {run}: research on {subtopic:?} failed {} times and was not retried",
                    tries.len()
                ))
            }
            None if !reported_failed || in_report => {
                return Err(format!(
                    "run {run}: research on {subtopic:?} failed on every try and is not reported failed"
                ))
            }
            None => {}
        }
    }
    let writers = children("writer");
    for (seq, input) in &writers {
        let request: DraftRequest = serde_json::from_value(input.clone())
            .map_err(|e| format!("run {run}: writer input {input} does not decode: {e}"))?;
        if request.research != research {
            return Err(format!(
                "run {run}: writer {seq} got research on {:?}, but the researchers that completed covered {:?}",
                request.research.iter().map(|r| &r.subtopic).collect::<Vec<_>>(),
                research.iter().map(|r| &r.subtopic).collect::<Vec<_>>()
            ));
        }
    }
    let last_draft = writers.last().and_then(|(seq, _)| match outcome_of(*seq) {
        Some(ChildOutcome::Completed { output }) => output.decode::<String>().ok(),
        _ => None,
    });
    if last_draft.as_deref() != Some(report.draft.as_str()) {
        return Err(format!("run {run}: reports a draft that is not the last writer's ({last_draft:?})"));
    }
    if let Some(missing) = research.iter().find(|r| !report.draft.contains(&r.notes)) {
        return Err(format!("run {run}: the report leaves out the research on {:?}", missing.subtopic));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, WithWorkflows};
    use std::collections::BTreeSet;

    /// The real scenario, with a search engine that never finds anything on part 1.
    struct NothingOnPartOne;

    impl Scenario for NothingOnPartOne {
        fn name(&self) -> &'static str {
            MultiAgent.name()
        }

        fn description(&self) -> &'static str {
            MultiAgent.description()
        }

        fn registry(&self) -> Registry {
            MultiAgent.registry()
        }

        fn activities(&self) -> Activities {
            MultiAgent.activities()
        }

        fn workload(&self, rng: &mut Rng) -> Vec<Start> {
            MultiAgent.workload(rng)
        }

        fn llm_answer(&self, request: &LlmRequest, rng: &mut Rng) -> LlmResponse {
            MultiAgent.llm_answer(request, rng)
        }

        fn tool_call(&self, name: &str, arguments: &Value, rng: &mut Rng) -> ToolOutcome {
            if arguments["query"].as_str().is_some_and(|q| q.ends_with("part 1")) {
                return ToolOutcome { result: json!([]), effect: None };
            }
            let outcome = MultiAgent.tool_call(name, arguments, rng);
            if outcome.result.as_array().is_some_and(Vec::is_empty) {
                return ToolOutcome { result: json!(["https://example.org/found"]), effect: None };
            }
            outcome
        }

        fn liveness_bound(&self) -> Duration {
            MultiAgent.liveness_bound()
        }

        fn check(&self, finished: &Finished<'_>) -> Result<(), String> {
            MultiAgent.check(finished)
        }
    }

    #[test]
    fn planner_combines_the_research_and_reports_a_subtopic_that_failed_twice() {
        for seed in 0..3 {
            let outcome = testing::run_passing(&NothingOnPartOne, seed);
            for history in outcome.histories.iter().filter(|h| h.workflow_type == "multi_agent") {
                let report: Report = common::completed_output(history).unwrap().expect("planner ends");
                let failed_part = format!("{} / part 1", history.workflow_id.replace("report-", "topic "));
                assert_eq!(report.failed, vec![failed_part.clone()], "seed {seed} {}", history.run_id);
                assert!(!report.sections.contains(&failed_part), "seed {seed}");
                assert!(!report.sections.is_empty(), "seed {seed}: part 0 always has sources");
                let tries = history
                    .events
                    .iter()
                    .filter(|e| matches!(&e.kind, Kind::ChildStarted { input, .. } if input.to_value()["subtopic"] == failed_part.as_str()))
                    .count();
                assert_eq!(tries, RESEARCH_ATTEMPT_COUNT_MAX, "seed {seed}: failed research is retried once");
            }
            // The planner's children ran as runs of their own.
            let types: BTreeSet<&str> = outcome.histories.iter().map(|h| h.workflow_type.as_str()).collect();
            assert_eq!(types, BTreeSet::from(["multi_agent", "researcher", "reviewer", "writer"]), "seed {seed}");
        }
    }

    /// Gives up on a failed researcher at once, and leaves its subtopic out without a word.
    async fn forgetful_planner(ctx: Ctx, input: Topic) -> WorkflowResult<Report> {
        let subtopics: Vec<String> = llm_call(&ctx, "plan", &input.topic).await?;
        let children = subtopics.iter().map(|subtopic| {
            let assignment = Assignment { topic: input.topic.clone(), subtopic: subtopic.clone() };
            ctx.child::<Research>("researcher", &assignment).start()
        });
        let research: Vec<Research> = join_all(children.collect::<Vec<_>>()).await.into_iter().flatten().collect();
        let sections = research.iter().map(|r| r.subtopic.clone()).collect();
        let request = DraftRequest { topic: input.topic, research, comment: None };
        let draft: String = ctx.child("writer", &request).await?;
        Ok(Report { draft, sections, failed: Vec::new(), revisions: 0 })
    }

    #[test]
    fn planner_dropping_a_failed_child_fails_its_check() {
        let broken = WithWorkflows {
            scenario: NothingOnPartOne,
            register: |registry| {
                register(registry);
                registry.register("multi_agent", forgetful_planner);
            },
        };
        let outcome = testing::first_failure(&broken, 3).expect("the first seed fails");
        let failure = outcome.failure.expect("failed");
        assert_eq!(failure.check, "check_multi_agent_outcome", "{}", failure.message);
        assert!(failure.message.contains("not retried"), "{}", failure.message);
    }
}
