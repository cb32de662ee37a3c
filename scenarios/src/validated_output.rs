//! `validated_output`: structured output. The model triages a support ticket as JSON; an
//! answer that does not match the schema is sent back with the validation error in the next
//! prompt, and after a fixed number of invalid answers the workflow gives up cleanly.
//!
//! Owns the workflow, its `extract` activity, the schema (`validate`, shared by the activity
//! and the check), the scripted model (often wrong at first, usually right once told what was
//! wrong) and the business checks: a result matches the schema and is the model's recorded
//! answer; every retry was told the previous validation error; a give-up comes only after the
//! limit, with the last error.
//!
//! Its workflow never does I/O of its own and never returns an answer it has not validated.

use crate::common::{self, chat, LLM_KEY_NAME, LLM_TIMEOUT, MODEL};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use tempest_engine::activity::Cause;
use tempest_engine::history::Kind;
use tempest_engine::services::{Activities, ActivityCtx, LlmRequest, LlmResponse, Message};
use tempest_engine::{Ctx, Failure, Registry, Time, WorkflowResult};
use tempest_sim::rng::Rng;
use tempest_sim::scenario::{Finished, Scenario, Start, ToolOutcome};

/// Answers the model may give before the workflow gives up.
pub(crate) const VALIDATION_ATTEMPT_COUNT_MAX: u32 = 3;
const CATEGORIES: [&str; 3] = ["billing", "bug", "account"];
const SUMMARY_LEN_MAX: usize = 80;
const TOKENS: u64 = 700;
/// How a prompt tells the model what was wrong with its last answer.
const FEEDBACK_PREFIX: &str = "Your last answer did not match the schema: ";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Ticket {
    pub(crate) ticket: String,
}

/// The schema: a category, a priority from 1 to 3 and a short summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Triage {
    pub(crate) category: String,
    pub(crate) priority: u8,
    pub(crate) summary: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum Outcome {
    Valid { triage: Triage, attempts: u32 },
    GaveUp { attempts: u32, last_error: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ExtractInput {
    pub(crate) ticket: String,
    /// The validation error of the previous answer, for the model to fix.
    pub(crate) feedback: Option<String>,
}

/// Checks an answer against the schema; the error says what to fix.
pub(crate) fn validate(answer: &Value) -> Result<Triage, String> {
    let category = answer["category"].as_str().ok_or("field `category` is missing or not a string")?;
    if !CATEGORIES.contains(&category) {
        return Err(format!("`category` is {category:?}, expected one of {CATEGORIES:?}"));
    }
    let priority = answer["priority"].as_u64().ok_or("field `priority` is missing or not an integer")?;
    if !(1..=3).contains(&priority) {
        return Err(format!("`priority` is {priority}, expected 1, 2 or 3"));
    }
    let summary = answer["summary"].as_str().ok_or("field `summary` is missing or not a string")?;
    if summary.is_empty() || summary.chars().count() > SUMMARY_LEN_MAX {
        return Err(format!("`summary` has {} characters, expected 1 to {SUMMARY_LEN_MAX}", summary.chars().count()));
    }
    Ok(Triage { category: category.to_owned(), priority: priority as u8, summary: summary.to_owned() })
}

/// The structured-output loop as a user writes it. Transient failures (429, 5xx, timeouts)
/// are retried by the activity's policy; an invalid answer ends the activity at once, and the
/// loop asks again with the validation error.
pub(crate) async fn validated_output(ctx: Ctx, input: Ticket) -> WorkflowResult<Outcome> {
    let mut feedback = None;
    for attempt in 1..=VALIDATION_ATTEMPT_COUNT_MAX {
        let extracted = ctx
            .activity::<Triage>("extract", &ExtractInput { ticket: input.ticket.clone(), feedback: feedback.clone() })
            .retry(common::llm_retry().non_retryable("invalid_output"))
            .start_to_close(LLM_TIMEOUT)
            .rate_limit(LLM_KEY_NAME, TOKENS)
            .await;
        match extracted {
            Ok(triage) => return Ok(Outcome::Valid { triage, attempts: attempt }),
            Err(error) => match (&error.cause, &error.last_failure) {
                (Cause::NonRetryable, Failure::InvalidOutput { message }) => feedback = Some(message.clone()),
                _ => return Err(error.into()),
            },
        }
    }
    let last_error = feedback.unwrap_or_default();
    Ok(Outcome::GaveUp { attempts: VALIDATION_ATTEMPT_COUNT_MAX, last_error })
}

async fn extract(ctx: ActivityCtx, input: ExtractInput) -> Result<Triage, Failure> {
    let mut messages = vec![
        Message::system("Triage the ticket as JSON {\"category\", \"priority\", \"summary\"}."),
        Message::user(input.ticket),
    ];
    if let Some(feedback) = input.feedback {
        messages.push(Message::user(format!("{FEEDBACK_PREFIX}{feedback}")));
    }
    let request =
        LlmRequest { model: MODEL.to_owned(), messages, tools: Vec::new(), json_output: true, token_count: TOKENS };
    let response = chat(&ctx, request).await?;
    let answer: Value =
        serde_json::from_str(&response.content).map_err(|e| Failure::InvalidOutput { message: e.to_string() })?;
    validate(&answer).map_err(|message| Failure::InvalidOutput { message })
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register("validated_output", validated_output);
}

pub(crate) fn activities() -> Activities {
    let mut activities = Activities::new();
    activities.register("extract", extract);
    activities
}

pub(crate) struct ValidatedOutput;

impl Scenario for ValidatedOutput {
    fn name(&self) -> &'static str {
        "validated_output"
    }

    fn description(&self) -> &'static str {
        "the model's JSON is validated against a schema, retried with the error, given up after 3 tries"
    }

    fn registry(&self) -> Registry {
        common::registry_with(register)
    }

    fn activities(&self) -> Activities {
        activities()
    }

    fn workload(&self, rng: &mut Rng) -> Vec<Start> {
        (0..rng.range_inclusive(5, 10))
            .map(|i| Start {
                at: Time(rng.below(60_000)),
                workflow_id: format!("ticket-{i}"),
                workflow_type: "validated_output".to_owned(),
                input: json!({ "ticket": format!("ticket {i}: I was charged twice for order {}", rng.below(1000)) }),
            })
            .collect()
    }

    fn llm_answer(&self, request: &LlmRequest, rng: &mut Rng) -> LlmResponse {
        let told = request.messages.iter().any(|m| m.content.starts_with(FEEDBACK_PREFIX));
        // Models get structured output wrong fairly often, and mostly right once told why.
        let valid = rng.chance(if told { 0.85 } else { 0.55 });
        let category = *rng.pick(&CATEGORIES);
        let content = if valid {
            json!({ "category": category, "priority": rng.range_inclusive(1, 3), "summary": "customer charged twice" })
                .to_string()
        } else {
            match rng.below(4) {
                0 => json!({ "category": category, "summary": "charged twice" }).to_string(),
                1 => json!({ "category": category, "priority": 7, "summary": "charged twice" }).to_string(),
                2 => json!({ "category": "urgent", "priority": 1, "summary": "charged twice" }).to_string(),
                _ => "Sure! This ticket is about billing.".to_owned(),
            }
        };
        LlmResponse { content, tool_calls: Vec::new(), token_count: request.token_count }
    }

    fn tool_call(&self, _name: &str, _arguments: &Value, _rng: &mut Rng) -> ToolOutcome {
        ToolOutcome { result: Value::Null, effect: None }
    }

    fn liveness_bound(&self) -> Duration {
        Duration::from_secs(3 * 3600)
    }

    fn check(&self, finished: &Finished<'_>) -> Result<(), String> {
        for history in finished.histories {
            check_run(history)?;
        }
        Ok(())
    }
}

/// The business outcome of one run: see the module comment.
fn check_run(history: &tempest_engine::History) -> Result<(), String> {
    let Some(outcome) = common::completed_output::<Outcome>(history)? else {
        return Ok(());
    };
    let run = &history.run_id;
    let extracts = common::scheduled(history, "extract");
    let count = extracts.len() as u32;
    if count == 0 || count > VALIDATION_ATTEMPT_COUNT_MAX {
        return Err(format!("run {run}: asked the model {count} times, limit {VALIDATION_ATTEMPT_COUNT_MAX}"));
    }
    let result_of = |seq: u32| {
        history.events.iter().find_map(|e| match &e.kind {
            Kind::ActivityCompleted { seq: s, output, .. } if *s == seq => Some(Ok(output)),
            Kind::ActivityFailed { seq: s, failure, .. } if *s == seq => Some(Err(failure)),
            _ => None,
        })
    };
    let mut told = None;
    for (index, (seq, input)) in extracts.iter().enumerate() {
        let input: ExtractInput = serde_json::from_value(input.clone())
            .map_err(|e| format!("run {run}: extract input {input} does not decode: {e}"))?;
        if input.feedback != told {
            return Err(format!(
                "run {run}: answer {} was asked with feedback {:?}, but the previous answer failed with {told:?}",
                index + 1,
                input.feedback
            ));
        }
        told = match result_of(*seq) {
            Some(Err(Failure::InvalidOutput { message })) => Some(message.clone()),
            _ => None,
        };
    }
    let last = result_of(extracts[extracts.len() - 1].0);
    match outcome {
        Outcome::Valid { triage, attempts } => {
            let Some(Ok(recorded)) = last else {
                return Err(format!("run {run}: reports a valid answer but its last extract did not complete"));
            };
            let valid = validate(&recorded.to_value())
                .map_err(|e| format!("run {run}: accepted {recorded}, which fails the schema: {e}"))?;
            if valid != triage || attempts != count {
                return Err(format!(
                    "run {run}: reports {triage:?} after {attempts} answers, recorded {valid:?} after {count}"
                ));
            }
        }
        Outcome::GaveUp { attempts, last_error } => {
            if attempts != VALIDATION_ATTEMPT_COUNT_MAX || count != VALIDATION_ATTEMPT_COUNT_MAX {
                return Err(format!(
                    "run {run}: gave up after {count} answers, before the limit {VALIDATION_ATTEMPT_COUNT_MAX}"
                ));
            }
            if told.as_ref() != Some(&last_error) {
                return Err(format!(
                    "run {run}: gave up with {last_error:?}, but the last answer failed with {told:?}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, WithWorkflows};

    /// The real scenario with a model that never gets the schema right.
    struct StubbornModel;

    impl Scenario for StubbornModel {
        fn name(&self) -> &'static str {
            ValidatedOutput.name()
        }

        fn description(&self) -> &'static str {
            ValidatedOutput.description()
        }

        fn registry(&self) -> Registry {
            ValidatedOutput.registry()
        }

        fn activities(&self) -> Activities {
            ValidatedOutput.activities()
        }

        fn workload(&self, rng: &mut Rng) -> Vec<Start> {
            ValidatedOutput.workload(rng)
        }

        fn llm_answer(&self, request: &LlmRequest, _rng: &mut Rng) -> LlmResponse {
            let content = json!({ "category": "urgent", "priority": 1, "summary": "x" }).to_string();
            LlmResponse { content, tool_calls: Vec::new(), token_count: request.token_count }
        }

        fn tool_call(&self, name: &str, arguments: &Value, rng: &mut Rng) -> ToolOutcome {
            ValidatedOutput.tool_call(name, arguments, rng)
        }

        fn liveness_bound(&self) -> Duration {
            ValidatedOutput.liveness_bound()
        }

        fn check(&self, finished: &Finished<'_>) -> Result<(), String> {
            ValidatedOutput.check(finished)
        }
    }

    #[test]
    fn results_match_the_schema_after_retries_told_the_error() {
        let mut retried = 0;
        for seed in 0..4 {
            let outcome = testing::run_passing(&ValidatedOutput, seed);
            for history in &outcome.histories {
                let Some(Outcome::Valid { triage, attempts }) = common::completed_output(history).unwrap() else {
                    continue;
                };
                assert!(validate(&serde_json::to_value(&triage).unwrap()).is_ok(), "seed {seed}: {triage:?}");
                let inputs = common::scheduled(history, "extract");
                assert_eq!(inputs.len() as u32, attempts, "seed {seed} {}", history.run_id);
                if attempts > 1 {
                    retried += 1;
                    let feedback = inputs[1].1["feedback"].as_str().unwrap_or_default();
                    assert!(!feedback.is_empty(), "seed {seed} {}: the retry was not told the error", history.run_id);
                }
            }
        }
        assert!(retried > 0, "no run needed a second answer");
    }

    #[test]
    fn a_model_that_never_matches_the_schema_is_given_up_on_after_the_limit() {
        let outcome = testing::run_passing(&StubbornModel, 1);
        assert!(outcome.sometimes.contains_key(tempest_sim::check::sometimes::LLM_ANSWER_FAILED_VALIDATION));
        for history in &outcome.histories {
            let outcome: Option<Outcome> = common::completed_output(history).unwrap();
            let Some(Outcome::GaveUp { attempts, last_error }) = outcome else {
                panic!("run {}: {outcome:?}, expected a give-up", history.run_id);
            };
            assert_eq!(attempts, VALIDATION_ATTEMPT_COUNT_MAX);
            assert!(last_error.contains("`category` is \"urgent\""), "{last_error}");
            assert_eq!(common::scheduled(history, "extract").len() as u32, VALIDATION_ATTEMPT_COUNT_MAX);
        }
    }

    /// Asks again without saying what was wrong.
    async fn without_feedback(ctx: Ctx, input: Ticket) -> WorkflowResult<Outcome> {
        for attempt in 1..=VALIDATION_ATTEMPT_COUNT_MAX {
            let request = ExtractInput { ticket: input.ticket.clone(), feedback: None };
            let extracted = ctx
                .activity::<Triage>("extract", &request)
                .retry(common::llm_retry().non_retryable("invalid_output"))
                .await;
            if let Ok(triage) = extracted {
                return Ok(Outcome::Valid { triage, attempts: attempt });
            }
        }
        Ok(Outcome::GaveUp { attempts: VALIDATION_ATTEMPT_COUNT_MAX, last_error: String::new() })
    }

    #[test]
    fn retrying_without_the_validation_error_fails_its_check() {
        let broken = WithWorkflows {
            scenario: ValidatedOutput,
            register: |registry| {
                registry.register("validated_output", without_feedback);
            },
        };
        let outcome = testing::first_failure(&broken, 10).expect("a seed with a retried answer");
        let failure = outcome.failure.expect("failed");
        assert_eq!(failure.check, "check_validated_output_outcome", "{}", failure.message);
        assert!(failure.message.contains("feedback"), "{}", failure.message);
    }

    /// LLM work waited an hour behind a poll that left out the then rate-limited key.
    #[test]
    fn seed_3083_finishes_within_its_liveness_bound() {
        testing::run_passing(&ValidatedOutput, 3083);
    }
}
