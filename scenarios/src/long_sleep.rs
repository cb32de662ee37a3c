//! `long_sleep`: a subscription agent that lives for a simulated year. It wakes every day;
//! on a day when its subscriber has sent items, it summarizes them with the LLM and delivers
//! the digest; once a month it checks in with the subscriber; and every month it continues as
//! a new run, so no history grows with the length of the subscription.
//!
//! Owns the workflow, its activities (`summarize`, `notify_human`), the scripted model and
//! subscriber (who answers a check-in or a digest with new items, sometimes twice, sometimes
//! not at all) and the business checks: each run's history stays bounded, a finished
//! subscription woke once a day for every day of the year across its runs, the LLM was only
//! called with something to summarize, and every item the subscriber sent was summarized
//! exactly once.
//!
//! Its workflow never does I/O of its own and never calls the LLM with nothing to summarize.

use crate::common::{self, chat, LLM_KEY_NAME, LLM_TIMEOUT, MODEL};
use futures_util::future::{select, Either};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tempest_engine::history::{History, Kind};
use tempest_engine::services::{Activities, ActivityCtx, LlmRequest, LlmResponse, Message};
use tempest_engine::{Ctx, Failure, Registry, RetryPolicy, Time, WorkflowResult};
use tempest_sim::rng::Rng;
use tempest_sim::scenario::{Finished, HumanAnswer, Scenario, Start, ToolOutcome, NOTIFY_HUMAN};

const DAY: Duration = Duration::from_secs(86_400);
pub(crate) const DAY_COUNT_PER_YEAR: u32 = 365;
/// Days one run lives before it continues as new.
pub(crate) const DAY_COUNT_PER_RUN: u32 = 30;
/// The most events one run's history may hold; a year in one run would hold well over 730.
pub(crate) const HISTORY_LEN_MAX: usize = 600;
/// Item ids remembered to drop a subscriber's duplicate answers.
const SEEN_LEN_MAX: usize = 64;
const TOKENS: u64 = 1_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) id: String,
    pub(crate) text: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Items {
    pub(crate) items: Vec<Item>,
}

/// The subscription's state, carried from run to run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Subscription {
    pub(crate) subscriber: String,
    pub(crate) day_count: u32,
    /// Days already lived.
    #[serde(default)]
    pub(crate) day: u32,
    #[serde(default)]
    pub(crate) pending: Vec<Item>,
    #[serde(default)]
    pub(crate) seen: Vec<String>,
    #[serde(default)]
    pub(crate) digest_count: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ended {
    pub(crate) days: u32,
    pub(crate) digest_count: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SummarizeInput {
    pub(crate) subscriber: String,
    pub(crate) items: Vec<Item>,
}

/// A subscription must not drop a digest because the provider was down for an afternoon.
fn patient_retry() -> RetryPolicy {
    RetryPolicy::attempts(0).initial_interval(Duration::from_secs(1)).max_interval(Duration::from_secs(300))
}

impl Subscription {
    /// Takes new items, dropping those already seen (a subscriber may send an answer twice).
    fn accept(&mut self, items: Items) {
        for item in items.items {
            if self.seen.contains(&item.id) {
                continue;
            }
            self.seen.push(item.id.clone());
            if self.seen.len() > SEEN_LEN_MAX {
                self.seen.remove(0);
            }
            self.pending.push(item);
        }
    }
}

/// Summarizes the pending items and delivers the digest.
async fn digest(ctx: &Ctx, state: &mut Subscription) -> WorkflowResult<()> {
    let items = std::mem::take(&mut state.pending);
    let summary: String = ctx
        .activity("summarize", &SummarizeInput { subscriber: state.subscriber.clone(), items })
        .retry(patient_retry())
        .start_to_close(LLM_TIMEOUT)
        .rate_limit(LLM_KEY_NAME, TOKENS)
        .await?;
    state.digest_count += 1;
    let notice =
        json!({ "workflow_id": ctx.workflow_id(), "kind": "digest", "number": state.digest_count, "summary": summary });
    let _: Value = ctx.activity(NOTIFY_HUMAN, &notice).retry(patient_retry()).await?;
    Ok(())
}

/// Takes every item already delivered to this run without waiting for more.
async fn drain(ctx: &Ctx, state: &mut Subscription) -> WorkflowResult<()> {
    while let Some(items) = ctx.signal_timeout::<Items>("items", Duration::ZERO).await? {
        state.accept(items);
    }
    Ok(())
}

/// The subscription agent as a user writes it.
pub(crate) async fn subscription(ctx: Ctx, state: Subscription) -> WorkflowResult<Ended> {
    live(ctx, state, DAY_COUNT_PER_RUN).await
}

/// One run of the subscription: `day_count_per_run` days, then a fresh run.
async fn live(ctx: Ctx, mut state: Subscription, day_count_per_run: u32) -> WorkflowResult<Ended> {
    if state.day % day_count_per_run == 0 && state.day < state.day_count {
        let notice = json!({ "workflow_id": ctx.workflow_id(), "kind": "checkin", "number": state.day });
        let _: Value = ctx.activity(NOTIFY_HUMAN, &notice).retry(patient_retry()).await?;
    }
    let run_end = state.day_count.min(state.day.saturating_add(day_count_per_run));
    while state.day < run_end {
        // One durable timer a day; items that arrive meanwhile are taken as they come.
        let mut wake = ctx.sleep(DAY);
        loop {
            match select(ctx.signal::<Items>("items"), &mut wake).await {
                Either::Left((items, _)) => state.accept(items?),
                Either::Right((fired, _)) => {
                    fired?;
                    break;
                }
            }
        }
        state.day += 1;
        if !state.pending.is_empty() {
            digest(&ctx, &mut state).await?;
        }
    }
    // Items that came during the last digest are in this history: take them along.
    drain(&ctx, &mut state).await?;
    if state.day < state.day_count {
        return Err(ctx.continue_as_new(&state));
    }
    while !state.pending.is_empty() {
        digest(&ctx, &mut state).await?;
        drain(&ctx, &mut state).await?;
    }
    Ok(Ended { days: state.day, digest_count: state.digest_count })
}

async fn summarize(ctx: ActivityCtx, input: SummarizeInput) -> Result<String, Failure> {
    let listed: Vec<String> = input.items.iter().map(|i| format!("- {}", i.text)).collect();
    let messages = vec![
        Message::system("Summarize these items for the subscriber as JSON {\"summary\": ...}."),
        Message::user(listed.join("\n")),
    ];
    let request =
        LlmRequest { model: MODEL.to_owned(), messages, tools: Vec::new(), json_output: true, token_count: TOKENS };
    let response = chat(&ctx, request).await?;
    let answer: Value =
        serde_json::from_str(&response.content).map_err(|e| Failure::InvalidOutput { message: e.to_string() })?;
    answer["summary"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Failure::InvalidOutput { message: "missing field `summary`".to_owned() })
}

async fn notify(ctx: ActivityCtx, notice: Value) -> Result<Value, Failure> {
    ctx.tool(NOTIFY_HUMAN, notice).await
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register("long_sleep", subscription);
}

pub(crate) fn activities() -> Activities {
    let mut activities = Activities::new();
    activities.register("summarize", summarize).register(NOTIFY_HUMAN, notify);
    activities
}

pub(crate) struct LongSleep;

impl Scenario for LongSleep {
    fn name(&self) -> &'static str {
        "long_sleep"
    }

    fn description(&self) -> &'static str {
        "a subscription agent wakes daily for a year, summarizes what arrived, continues as new monthly"
    }

    fn registry(&self) -> Registry {
        common::registry_with(register)
    }

    fn activities(&self) -> Activities {
        activities()
    }

    fn workload(&self, rng: &mut Rng) -> Vec<Start> {
        vec![Start {
            at: Time(rng.below(60_000)),
            workflow_id: format!("subscription-{}", rng.below(1000)),
            workflow_type: "long_sleep".to_owned(),
            input: json!({ "subscriber": "reader", "day_count": DAY_COUNT_PER_YEAR }),
        }]
    }

    fn llm_answer(&self, request: &LlmRequest, _rng: &mut Rng) -> LlmResponse {
        let item_count = request.messages.last().map_or(0, |m| m.content.lines().count());
        LlmResponse {
            content: json!({ "summary": format!("{item_count} items, in brief") }).to_string(),
            tool_calls: Vec::new(),
            token_count: request.token_count,
        }
    }

    fn tool_call(&self, name: &str, arguments: &Value, _rng: &mut Rng) -> ToolOutcome {
        let workflow_id = arguments["workflow_id"].as_str().unwrap_or("?");
        let kind = arguments["kind"].as_str().unwrap_or("?");
        let number = arguments["number"].as_u64().unwrap_or(0);
        ToolOutcome { result: json!({ "sent": true }), effect: Some(format!("{name}:{kind}:{workflow_id}:{number}")) }
    }

    fn human_answer(&self, arguments: &Value, rng: &mut Rng) -> Option<HumanAnswer> {
        let workflow_id = arguments["workflow_id"].as_str()?.to_owned();
        let kind = arguments["kind"].as_str()?;
        let number = arguments["number"].as_u64()?;
        // A subscriber answers most check-ins and about half the digests with new items.
        if !rng.chance(if kind == "checkin" { 0.9 } else { 0.5 }) {
            return None;
        }
        let items: Vec<Item> = (0..rng.range_inclusive(1, 3))
            .map(|k| Item { id: format!("{kind}-{number}-{k}"), text: format!("article {}", rng.below(10_000)) })
            .collect();
        Some(HumanAnswer { workflow_id, signal_name: "items".to_owned(), payload: json!({ "items": items }) })
    }

    fn liveness_bound(&self) -> Duration {
        // A year, the last digests, and slack for a slow subscriber.
        Duration::from_secs(u64::from(DAY_COUNT_PER_YEAR + 35) * 86_400)
    }

    fn check(&self, finished: &Finished<'_>) -> Result<(), String> {
        let mut chains: BTreeMap<&str, Vec<&History>> = BTreeMap::new();
        for history in finished.histories.iter().filter(|h| h.workflow_type == "long_sleep") {
            if history.events.len() > HISTORY_LEN_MAX {
                return Err(format!(
                    "run {}: {} events, over the bound of {HISTORY_LEN_MAX} that continue-as-new should keep",
                    history.run_id,
                    history.events.len()
                ));
            }
            chains.entry(&history.workflow_id).or_default().push(history);
        }
        for (workflow_id, runs) in chains {
            check_subscription(workflow_id, &runs)?;
        }
        Ok(())
    }
}

/// The business outcome of one subscription, over all its runs: see the module comment.
fn check_subscription(workflow_id: &str, runs: &[&History]) -> Result<(), String> {
    let ended = runs.iter().find_map(|h| common::completed_output::<Ended>(h).transpose()).transpose()?;
    let mut received: BTreeSet<String> = BTreeSet::new();
    let mut summarized: BTreeMap<String, u32> = BTreeMap::new();
    let mut daily_wakes = 0;
    for history in runs {
        let mut daily_timers = BTreeSet::new();
        for event in &history.events {
            match &event.kind {
                Kind::TimerStarted { seq, duration_ms, .. } if *duration_ms == DAY.as_millis() as u64 => {
                    daily_timers.insert(*seq);
                }
                Kind::TimerFired { seq } if daily_timers.contains(seq) => daily_wakes += 1,
                Kind::SignalReceived { payload, .. } => {
                    let items: Items = payload
                        .decode()
                        .map_err(|e| format!("run {}: items {payload} do not decode: {e}", history.run_id))?;
                    received.extend(items.items.into_iter().map(|i| i.id));
                }
                _ => {}
            }
        }
        for (_, input) in common::scheduled(history, "summarize") {
            let input: SummarizeInput = serde_json::from_value(input.clone())
                .map_err(|e| format!("run {}: summarize input does not decode: {e}", history.run_id))?;
            if input.items.is_empty() {
                return Err(format!("run {}: called the LLM with nothing to summarize", history.run_id));
            }
            for item in input.items {
                *summarized.entry(item.id).or_default() += 1;
            }
        }
    }
    if let Some((id, count)) = summarized.iter().find(|(_, count)| **count > 1) {
        return Err(format!("subscription {workflow_id}: item {id} summarized {count} times"));
    }
    let Some(ended) = ended else {
        return Ok(());
    };
    if ended.days != DAY_COUNT_PER_YEAR || daily_wakes != DAY_COUNT_PER_YEAR {
        return Err(format!(
            "subscription {workflow_id}: ended after {} days with {daily_wakes} daily wakes, expected {DAY_COUNT_PER_YEAR}",
            ended.days
        ));
    }
    let run_count_expected = DAY_COUNT_PER_YEAR.div_ceil(DAY_COUNT_PER_RUN) as usize;
    if runs.len() != run_count_expected {
        return Err(format!(
            "subscription {workflow_id}: a year took {} runs, expected {run_count_expected}",
            runs.len()
        ));
    }
    if let Some(missing) = received.iter().find(|id| !summarized.contains_key(*id)) {
        return Err(format!("subscription {workflow_id}: item {missing} arrived but was never summarized"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, WithWorkflows};

    #[test]
    fn a_year_of_daily_wakes_runs_in_monthly_runs_and_summarizes_every_item_once() {
        let outcome = testing::run_passing(&LongSleep, 1);
        let runs: Vec<&History> = outcome.histories.iter().collect();
        assert_eq!(runs.len() as u32, DAY_COUNT_PER_YEAR.div_ceil(DAY_COUNT_PER_RUN));
        assert!(runs.iter().all(|h| h.events.len() <= HISTORY_LEN_MAX));
        let ended: Vec<Ended> = runs.iter().filter_map(|h| common::completed_output(h).unwrap()).collect();
        assert_eq!(ended.len(), 1, "the last run completes, the others continue as new");
        assert_eq!(ended[0].days, DAY_COUNT_PER_YEAR);
        let summaries: Vec<SummarizeInput> = runs
            .iter()
            .flat_map(|h| common::scheduled(h, "summarize"))
            .map(|(_, input)| serde_json::from_value(input.clone()).unwrap())
            .collect();
        assert_eq!(summaries.len() as u32, ended[0].digest_count);
        assert!(!summaries.is_empty() && summaries.iter().all(|s| !s.items.is_empty()));
        // The world's clock went round a year, and the LLM ran on far fewer days than that.
        assert!(outcome.simulated_ms >= u64::from(DAY_COUNT_PER_YEAR) * 86_400_000);
        assert!(summaries.len() < 100, "{} digests", summaries.len());
    }

    /// Lives the whole year in one run.
    async fn never_continues(ctx: Ctx, state: Subscription) -> WorkflowResult<Ended> {
        live(ctx, state, u32::MAX).await
    }

    #[test]
    fn subscription_that_never_continues_as_new_fails_its_check() {
        let broken = WithWorkflows {
            scenario: LongSleep,
            register: |registry| {
                registry.register("long_sleep", never_continues);
            },
        };
        let outcome = testing::run(&broken, 1);
        let failure = outcome.failure.expect("failed");
        assert_eq!(failure.check, "check_long_sleep_outcome", "{}", failure.message);
        assert!(failure.message.contains("over the bound"), "{}", failure.message);
    }
}
