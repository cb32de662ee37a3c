//! Activities: retry policy, timeouts, `Retry-After`, idempotency keys, classified LLM failures.

use super::{appends, assert_recovers, assert_replays};
use crate::activity::Failure;
use crate::engine::TimerId;
use crate::retry::RetryPolicy;
use crate::testing::Host;
use crate::time::Time;
use crate::workflow::{Ctx, Registry, WorkflowResult};
use serde_json::json;
use std::time::Duration;

/// How the `llm_call` workflow configures its one activity.
#[derive(Clone, Default)]
struct Call {
    policy: RetryPolicy,
    start_to_close: Option<Duration>,
    schedule_to_close: Option<Duration>,
}

/// One `llm` activity with the options of `call`; its failure fails the run.
async fn llm_call(ctx: Ctx, prompt: String, call: Call) -> WorkflowResult<String> {
    let mut activity = ctx.activity("llm", &prompt).retry(call.policy);
    if let Some(timeout) = call.start_to_close {
        activity = activity.start_to_close(timeout);
    }
    if let Some(timeout) = call.schedule_to_close {
        activity = activity.schedule_to_close(timeout);
    }
    Ok(activity.await?)
}

/// One `llm` activity whose final failure the workflow catches and returns as its output.
async fn tolerant_call(ctx: Ctx, prompt: String, policy: RetryPolicy) -> WorkflowResult<String> {
    match ctx.activity::<String>("llm", &prompt).retry(policy).await {
        Ok(text) => Ok(text),
        Err(error) => Ok(format!(
            "gave up: cause={:?} attempt_count={} last={}",
            error.cause, error.attempt_count, error.last_failure
        )),
    }
}

fn host(call: Call) -> (Host, String) {
    let mut registry = Registry::new();
    registry.register("llm_call", move |ctx: Ctx, prompt: String| llm_call(ctx, prompt, call.clone()));
    let mut host = Host::new(registry);
    let run = host.start("llm_call", "wf-1", json!("summarize"));
    (host, run)
}

fn policy(call_policy: RetryPolicy) -> Call {
    Call { policy: call_policy, ..Call::default() }
}

fn ms(ms: u64) -> Time {
    Time(ms)
}

#[test]
fn backoff_grows_by_coefficient_and_caps_at_max_interval() {
    let retry = RetryPolicy::attempts(5)
        .initial_interval(Duration::from_secs(1))
        .backoff(3.0)
        .max_interval(Duration::from_secs(5));
    let (mut host, run) = host(policy(retry));
    let mut not_befores = Vec::new();
    for _ in 0..4 {
        let task = host.task("llm");
        not_befores.push(task.not_before);
        host.fail(&task, Failure::Application { kind: "http_502".into(), message: "bad gateway".into() });
    }
    let task = host.task("llm");
    not_befores.push(task.not_before);
    assert_eq!(task.attempt, 5);
    host.complete(&task, json!("a summary"));

    // Delays 1 s, 3 s, then 9 s and 27 s capped at 5 s.
    assert_eq!(not_befores, vec![ms(0), ms(1_000), ms(4_000), ms(9_000), ms(14_000)]);
    insta::assert_snapshot!("backoff_grows_and_caps", host.render(&run));
    assert_replays(&host);
}

#[test]
fn retries_exhausted_fail_the_activity_and_the_run() {
    let (mut host, run) = host(policy(RetryPolicy::attempts(3)));
    for attempt in 1..=3 {
        let task = host.task("llm");
        assert_eq!(task.attempt, attempt);
        host.fail(&task, Failure::Overloaded { retry_after_ms: None });
    }
    assert!(host.activities.is_empty(), "no fourth attempt");
    assert_eq!(host.closed, vec![run.clone()]);
    let rendered = host.render(&run);
    assert!(
        rendered.ends_with(
            "workflow_failed error=\"activity llm (seq 1) failed after 3 attempts (AttemptsExhausted): overloaded\"\n"
        ),
        "{rendered}"
    );
    insta::assert_snapshot!("retries_exhausted", rendered);
    assert_replays(&host);
}

#[test]
fn workflow_sees_cause_attempt_count_and_last_failure_when_retries_run_out() {
    let mut registry = Registry::new();
    registry.register("tolerant", |ctx: Ctx, prompt: String| tolerant_call(ctx, prompt, RetryPolicy::attempts(2)));
    let mut host = Host::new(registry);
    let run = host.start("tolerant", "wf-1", json!("p"));
    host.fail(&host.task("llm"), Failure::TimedOut);
    host.fail(&host.task("llm"), Failure::InvalidOutput { message: "not json".into() });
    let state = host.engine.run_state(&run).unwrap();
    assert_eq!(
        state.terminal.as_deref().cloned(),
        Some(crate::history::Kind::WorkflowCompleted {
            output: json!("gave up: cause=AttemptsExhausted attempt_count=2 last=invalid output: not json").into()
        })
    );
    assert_replays(&host);
}

#[test]
fn non_retryable_kind_in_policy_fails_at_first_attempt() {
    let retry = RetryPolicy::attempts(5).non_retryable("quota_exhausted");
    let (mut host, run) = host(policy(retry));
    host.fail(
        &host.task("llm"),
        Failure::Application { kind: "quota_exhausted".into(), message: "monthly quota used up".into() },
    );
    assert!(host.activities.is_empty(), "no second attempt");
    let state = host.engine.run_state(&run).unwrap();
    assert_eq!(state.activities[&1].attempt, 1);
    insta::assert_snapshot!("non_retryable_kind", host.render(&run));
    assert_replays(&host);
}

#[test]
fn built_in_kind_listed_as_non_retryable_is_not_retried() {
    // A policy can opt out of retrying even a retryable kind, here invalid output.
    let retry = RetryPolicy::attempts(5).non_retryable("invalid_output");
    let (mut host, run) = host(policy(retry));
    host.fail(&host.task("llm"), Failure::InvalidOutput { message: "missing field `title`".into() });
    let rendered = host.render(&run);
    assert!(
        rendered.contains(
            "activity_failed seq=1 attempt=1 cause=NonRetryable failure=(invalid output: missing field `title`)"
        ),
        "{rendered}"
    );
    assert_replays(&host);
}

#[test]
fn rate_limited_attempt_waits_retry_after() {
    let (mut host, run) = host(policy(RetryPolicy::attempts(3)));
    host.advance(5_000);
    host.fail(&host.task("llm"), Failure::RateLimited { retry_after_ms: Some(30_000) });
    let task = host.task("llm");
    assert_eq!(task.attempt, 2);
    // Retry-After (30 s) beats the 1 s backoff, counted from when the 429 came back.
    assert_eq!(task.not_before, ms(35_000));
    assert_eq!(task.previous_failure, Some(Failure::RateLimited { retry_after_ms: Some(30_000) }));
    host.complete(&task, json!("ok"));
    insta::assert_snapshot!("rate_limited_retry_after", host.render(&run));
    assert_replays(&host);
}

#[test]
fn retry_after_beyond_max_interval_still_wins() {
    let retry = RetryPolicy::attempts(3).max_interval(Duration::from_secs(5));
    let (mut host, _run) = host(policy(retry));
    host.fail(&host.task("llm"), Failure::Overloaded { retry_after_ms: Some(60_000) });
    assert_eq!(host.task("llm").not_before, ms(60_000));
}

#[test]
fn backoff_longer_than_retry_after_is_kept() {
    let retry = RetryPolicy::attempts(3).initial_interval(Duration::from_secs(10));
    let (mut host, _run) = host(policy(retry));
    host.fail(&host.task("llm"), Failure::RateLimited { retry_after_ms: Some(2_000) });
    assert_eq!(host.task("llm").not_before, ms(10_000));
}

#[test]
fn invalid_output_message_reaches_next_attempt() {
    let (mut host, run) = host(policy(RetryPolicy::attempts(3)));
    let first = host.task("llm");
    assert_eq!(first.previous_failure, None);
    let invalid = Failure::InvalidOutput { message: "missing field `title` at line 1 column 20".into() };
    host.fail(&first, invalid.clone());
    let second = host.task("llm");
    assert_eq!(second.attempt, 2);
    assert_eq!(second.previous_failure, Some(invalid.clone()));
    // A worker that restarts gets the same message with the re-asked attempt.
    let (recovered, _) = assert_recovers(&host);
    assert_eq!(recovered.run_state(&run).unwrap().activities[&1].last_failure, Some(invalid));
    host.complete(&second, json!("{\"title\": \"t\"}"));
    insta::assert_snapshot!("invalid_output_retried", host.render(&run));
    assert_replays(&host);
}

#[test]
fn refused_is_not_retried_with_attempts_left() {
    let (mut host, run) = host(policy(RetryPolicy::attempts(5)));
    host.fail(&host.task("llm"), Failure::Refused { message: "content policy".into() });
    assert!(host.activities.is_empty(), "no second attempt");
    insta::assert_snapshot!("refused_not_retried", host.render(&run));
    assert_replays(&host);
}

#[test]
fn llm_failure_classes_retry_all_but_refused() {
    let cases = [
        (Failure::RateLimited { retry_after_ms: Some(1_500) }, Some(1_500)),
        (Failure::RateLimited { retry_after_ms: None }, Some(1_000)),
        (Failure::Overloaded { retry_after_ms: None }, Some(1_000)),
        (Failure::TimedOut, Some(1_000)),
        (Failure::InvalidOutput { message: "m".into() }, Some(1_000)),
        (Failure::Application { kind: "tool_error".into(), message: "m".into() }, Some(1_000)),
        (Failure::Refused { message: "m".into() }, None),
    ];
    for (failure, retry_at_ms) in cases {
        let (mut host, run) = host(policy(RetryPolicy::attempts(3)));
        host.fail(&host.task("llm"), failure.clone());
        let next = host.activities.values().next().map(|t| t.not_before.0);
        assert_eq!(next, retry_at_ms, "{failure:?}");
        let state = host.engine.run_state(&run).unwrap();
        assert_eq!(state.is_closed(), retry_at_ms.is_none(), "{failure:?}");
    }
}

#[test]
fn idempotency_key_is_stable_across_attempts_and_replays() {
    let (mut host, run) = host(policy(RetryPolicy::attempts(3)));
    let key = format!("{run}:1");
    let first = host.task("llm");
    assert_eq!(first.idempotency_key, key);
    host.fail(&first, Failure::TimedOut);
    let second = host.task("llm");
    assert_eq!(second.idempotency_key, key);
    // A crash now: the re-asked attempt carries the same key.
    let (recovered, _) = assert_recovers(&host);
    assert_eq!(recovered.run_state(&run).unwrap().activities[&1].idempotency_key, key);
    host.fail(&second, Failure::TimedOut);
    assert_eq!(host.task("llm").idempotency_key, key);
    assert!(host.render(&run).contains(&format!("key={key}")));

    // Another run of the same code gets its own key.
    host.start("llm_call", "wf-2", json!("summarize"));
    let other = host.engine.latest_run("wf-2").unwrap().to_owned();
    assert_eq!(host.task_of(&other, 1).idempotency_key, format!("{other}:1"));
    assert_ne!(other, run);
}

#[test]
fn idempotency_key_is_the_run_id_and_the_decimal_seq() {
    for seq in [0, 1, 9, 10, 99, 100, 4_294_967_295] {
        assert_eq!(crate::workflow::idempotency_key("r0123456789ab", seq), format!("r0123456789ab:{seq}"));
    }
}

#[test]
fn start_to_close_timeout_fails_attempt_and_retries() {
    let call =
        Call { policy: RetryPolicy::attempts(3), start_to_close: Some(Duration::from_secs(10)), ..Call::default() };
    let (mut host, run) = host(call);
    assert_eq!(host.timers.get(&(run.clone(), TimerId::AttemptTimeout { seq: 1, attempt: 1 })), Some(&ms(10_000)));
    let late = host.task("llm");
    host.fire(&run, TimerId::AttemptTimeout { seq: 1, attempt: 1 });
    let second = host.task("llm");
    assert_eq!((second.attempt, second.not_before), (2, ms(11_000)));
    assert_eq!(second.previous_failure, Some(Failure::TimedOut));
    assert_eq!(host.timers.get(&(run.clone(), TimerId::AttemptTimeout { seq: 1, attempt: 2 })), Some(&ms(21_000)));
    // The timed-out attempt answers after all: at-least-once, but its result is not recorded.
    let effects = host.complete(&late, json!("late"));
    assert!(!appends(&effects), "{effects:?}");
    host.complete(&second, json!("on time"));
    insta::assert_snapshot!("start_to_close_retried", host.render(&run));
    assert_replays(&host);
}

#[test]
fn start_to_close_timeout_of_last_attempt_fails_run() {
    let call =
        Call { policy: RetryPolicy::attempts(2), start_to_close: Some(Duration::from_secs(10)), ..Call::default() };
    let (mut host, run) = host(call);
    host.fire(&run, TimerId::AttemptTimeout { seq: 1, attempt: 1 });
    host.fire(&run, TimerId::AttemptTimeout { seq: 1, attempt: 2 });
    insta::assert_snapshot!("start_to_close_exhausted", host.render(&run));
    assert!(host.engine.run_state(&run).unwrap().is_closed());
    assert_replays(&host);
}

#[test]
fn retry_after_past_schedule_to_close_fails_activity_at_once() {
    let call =
        Call { policy: RetryPolicy::attempts(0), schedule_to_close: Some(Duration::from_secs(60)), ..Call::default() };
    let (mut host, run) = host(call);
    assert_eq!(host.timers.get(&(run.clone(), TimerId::ActivityDeadline { seq: 1 })), Some(&ms(60_000)));
    host.advance(1_000);
    host.fail(&host.task("llm"), Failure::RateLimited { retry_after_ms: Some(120_000) });
    assert!(host.activities.is_empty(), "no attempt that could not finish");
    insta::assert_snapshot!("schedule_to_close_retry_after", host.render(&run));
    assert_replays(&host);
}

#[test]
fn schedule_to_close_deadline_ends_running_attempt() {
    let call =
        Call { policy: RetryPolicy::attempts(0), schedule_to_close: Some(Duration::from_secs(60)), ..Call::default() };
    let (mut host, run) = host(call);
    host.fail(&host.task("llm"), Failure::Overloaded { retry_after_ms: None });
    let running = host.task("llm");
    host.fire(&run, TimerId::ActivityDeadline { seq: 1 });
    assert_eq!(host.now, ms(60_000));
    let effects = host.complete(&running, json!("too late"));
    assert!(!appends(&effects), "{effects:?}");
    let state = host.engine.run_state(&run).unwrap();
    assert!(state.activities[&1].closed);
    insta::assert_snapshot!("schedule_to_close_deadline", host.render(&run));
    assert_replays(&host);
}

#[test]
fn duplicate_completion_is_recorded_once() {
    let (mut host, run) = host(policy(RetryPolicy::attempts(3)));
    let task = host.task("llm");
    let first = host.complete(&task, json!("one"));
    assert!(appends(&first));
    let second = host.complete(&task, json!("two"));
    assert!(second.is_empty(), "{second:?}");
    let completed = host.events(&run).iter().filter(|e| e.kind.name() == "activity_completed").count();
    assert_eq!(completed, 1);
    assert_replays(&host);
}

#[test]
fn failure_report_for_an_older_attempt_is_ignored() {
    let (mut host, run) = host(policy(RetryPolicy::attempts(5)));
    let first = host.task("llm");
    host.fail(&first, Failure::TimedOut);
    let event_count = host.events(&run).len();
    let effects = host.fail(&first, Failure::TimedOut);
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(host.events(&run).len(), event_count);
    assert_eq!(host.task("llm").attempt, 2);
    let state = host.engine.run_state(&run).unwrap();
    assert_eq!(state.activities[&1].attempt, 2);
    assert!(!state.is_closed());
}
