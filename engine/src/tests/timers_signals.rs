//! Durable timers, signals (with and without a timeout, buffered, deduplicated) and queries.

use super::{appends, assert_recovers, assert_replays};
use crate::engine::{Input, TimerId};
use crate::testing::Host;
use crate::time::Time;
use crate::workflow::{Ctx, Registry, WorkflowError, WorkflowResult};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

const DAY: Duration = Duration::from_secs(86_400);

async fn year_sleep(ctx: Ctx, _: ()) -> WorkflowResult<u64> {
    ctx.sleep(DAY * 365).await?;
    Ok(ctx.now().as_ms())
}

/// Drafts, then waits for a human's approval for as long as it takes.
async fn approval(ctx: Ctx, _: ()) -> WorkflowResult<String> {
    let draft: String = ctx.activity("draft", &"release notes").await?;
    let approved: bool = ctx.signal("approve").await?;
    Ok(format!("{draft} approved={approved}"))
}

/// Drafts, then waits a day at most for approval; no answer fails the run.
async fn approval_within_a_day(ctx: Ctx, _: ()) -> WorkflowResult<String> {
    let draft: String = ctx.activity("draft", &"release notes").await?;
    match ctx.signal_timeout::<bool>("approve", DAY).await? {
        Some(approved) => Ok(format!("{draft} approved={approved}")),
        None => Err(WorkflowError::failed("no approval within a day")),
    }
}

/// Collects `item` signals until `done`; answers the `items` query with what it has so far.
async fn collector(ctx: Ctx, _: ()) -> WorkflowResult<Vec<String>> {
    let items = Rc::new(RefCell::new(Vec::<String>::new()));
    let shared = items.clone();
    ctx.set_query_handler("items", move |_| json!(*shared.borrow()));
    let shared = items.clone();
    ctx.set_query_handler("item", move |args| {
        let index = args.as_u64().unwrap_or(0) as usize;
        json!(shared.borrow().get(index))
    });
    loop {
        let item: String = ctx.signal("item").await?;
        if item == "done" {
            break;
        }
        items.borrow_mut().push(item);
        ctx.set_query_value("count", &items.borrow().len());
    }
    let items = items.borrow().clone();
    Ok(items)
}

/// Drafts, then takes three `item` signals.
async fn three_items(ctx: Ctx, _: ()) -> WorkflowResult<Vec<String>> {
    let _: String = ctx.activity("draft", &"release notes").await?;
    let mut items = Vec::new();
    for _ in 0..3 {
        items.push(ctx.signal::<String>("item").await?);
    }
    Ok(items)
}

fn host() -> Host {
    let mut registry = Registry::new();
    registry
        .register("year_sleep", year_sleep)
        .register("approval", approval)
        .register("approval_within_a_day", approval_within_a_day)
        .register("collector", collector)
        .register("three_items", three_items);
    Host::new(registry)
}

#[test]
fn sleep_of_a_year_fires_at_the_recorded_time() {
    let mut host = host();
    let run = host.start("year_sleep", "wf-1", Value::Null);
    let year_ms = 365 * 86_400_000;
    assert_eq!(host.timers.get(&(run.clone(), TimerId::Workflow { seq: 1 })), Some(&Time(year_ms)));
    let (recovered, _) = assert_recovers(&host);
    assert_eq!(recovered.run_state(&run).unwrap().timers[&1].fire_at, Time(year_ms));
    host.fire_next_timer();
    insta::assert_snapshot!("sleep_a_year", host.render(&run));
    assert_eq!(
        host.engine.run_state(&run).unwrap().terminal.as_deref().cloned(),
        Some(crate::history::Kind::WorkflowCompleted { output: json!(year_ms).into() })
    );
    assert_replays(&host);
}

#[test]
fn timer_fired_twice_is_recorded_once() {
    let mut host = host();
    let run = host.start("year_sleep", "wf-1", Value::Null);
    host.fire_next_timer();
    let effects = host.feed(Input::TimerFired { run_id: run.clone(), timer: TimerId::Workflow { seq: 1 } });
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(host.events(&run).len(), 4);
}

#[test]
fn signal_wait_resumes_run_days_later() {
    let mut host = host();
    let run = host.start("approval", "wf-1", Value::Null);
    host.complete(&host.task("draft"), json!("v1"));
    let snapshot = host.engine.machine(&run).unwrap().snapshot();
    assert_eq!(snapshot.awaited_signals, vec!["approve".to_owned()]);
    host.advance(3 * 86_400_000);
    host.signal("wf-1", "human-1", "approve", json!(true));
    insta::assert_snapshot!("signal_wait", host.render(&run));
    assert_replays(&host);
}

#[test]
fn signal_sent_before_the_wait_is_buffered() {
    let mut host = host();
    let run = host.start("approval", "wf-1", Value::Null);
    host.signal("wf-1", "human-1", "approve", json!(false));
    let snapshot = host.engine.machine(&run).unwrap().snapshot();
    assert_eq!(snapshot.buffered_signals, vec![("approve".to_owned(), 1)]);
    assert!(snapshot.awaited_signals.is_empty());
    assert_recovers(&host);
    host.advance(500);
    host.complete(&host.task("draft"), json!("v1"));
    // The buffered signal is consumed as soon as the wait begins, in the same step.
    insta::assert_snapshot!("signal_buffered", host.render(&run));
    assert_replays(&host);
}

#[test]
fn duplicate_signal_id_is_recorded_once() {
    let mut host = host();
    let run = host.start("collector", "wf-1", Value::Null);
    host.signal("wf-1", "s1", "item", json!("a"));
    let effects = host.signal("wf-1", "s1", "item", json!("a"));
    assert!(effects.is_empty(), "{effects:?}");
    host.signal("wf-1", "s2", "item", json!("b"));
    // Even a redelivered id with another payload is a duplicate.
    host.signal("wf-1", "s2", "item", json!("c"));
    host.signal("wf-1", "s3", "item", json!("done"));
    insta::assert_snapshot!("signal_duplicate", host.render(&run));
    assert_eq!(
        host.engine.run_state(&run).unwrap().terminal.as_deref().cloned(),
        Some(crate::history::Kind::WorkflowCompleted { output: json!(["a", "b"]).into() })
    );
    assert_replays(&host);
}

#[test]
fn buffered_signals_of_one_name_are_taken_in_arrival_order() {
    let mut host = host();
    let run = host.start("three_items", "wf-1", Value::Null);
    for (id, item) in [("s1", "x"), ("s2", "y"), ("s3", "z")] {
        host.signal("wf-1", id, "item", json!(item));
    }
    host.signal("wf-1", "s4", "unrelated", json!(1));
    assert_eq!(
        host.engine.machine(&run).unwrap().snapshot().buffered_signals,
        vec![("item".to_owned(), 3), ("unrelated".to_owned(), 1)]
    );
    host.complete(&host.task("draft"), json!("v1"));
    assert_eq!(
        host.engine.run_state(&run).unwrap().terminal.as_deref().cloned(),
        Some(crate::history::Kind::WorkflowCompleted { output: json!(["x", "y", "z"]).into() })
    );
    // A signal nobody waits for stays buffered and does not disturb the run.
    assert_eq!(host.engine.machine(&run).unwrap().snapshot().buffered_signals, vec![("unrelated".to_owned(), 1)]);
    assert_replays(&host);
}

#[test]
fn signal_with_timeout_returns_signal_before_deadline() {
    let mut host = host();
    let run = host.start("approval_within_a_day", "wf-1", Value::Null);
    host.complete(&host.task("draft"), json!("v1"));
    host.advance(3_600_000);
    host.signal("wf-1", "human-1", "approve", json!(true));
    assert!(host.engine.run_state(&run).unwrap().is_closed());
    // The timeout timer was not canceled; when it fires the closed run ignores it.
    let effects = host.fire_next_timer();
    assert!(!appends(&effects), "{effects:?}");
    insta::assert_snapshot!("signal_timeout_answered", host.render(&run));
    assert_replays(&host);
}

#[test]
fn signal_timeout_expires_and_fails_run() {
    let mut host = host();
    let run = host.start("approval_within_a_day", "wf-1", Value::Null);
    host.complete(&host.task("draft"), json!("v1"));
    host.fire_next_timer();
    assert_eq!(host.now, Time(86_400_000));
    // A late approval finds the run closed.
    let effects = host.signal("wf-1", "human-1", "approve", json!(true));
    assert!(effects.is_empty(), "{effects:?}");
    insta::assert_snapshot!("signal_timeout_expired", host.render(&run));
    assert_replays(&host);
}

#[test]
fn signal_with_timeout_takes_buffered_signal_without_timer() {
    let mut host = host();
    let run = host.start("approval_within_a_day", "wf-1", Value::Null);
    host.signal("wf-1", "human-1", "approve", json!(true));
    host.complete(&host.task("draft"), json!("v1"));
    assert!(host.timers.is_empty(), "{:?}", host.timers);
    insta::assert_snapshot!("signal_timeout_buffered", host.render(&run));
    assert_replays(&host);
}

#[test]
fn query_reads_live_state_and_records_nothing() {
    let mut host = host();
    let run = host.start("collector", "wf-1", Value::Null);
    let query =
        |host: &Host, name: &str, args: Value| host.engine.query("wf-1", name, &args).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(query(&host, "items", Value::Null), json!([]));
    host.signal("wf-1", "s1", "item", json!("a"));
    host.signal("wf-1", "s2", "item", json!("b"));
    let event_count = host.events(&run).len();
    assert_eq!(query(&host, "items", Value::Null), json!(["a", "b"]));
    assert_eq!(query(&host, "item", json!(1)), json!("b"));
    assert_eq!(query(&host, "count", Value::Null), json!(2));
    assert_eq!(host.events(&run).len(), event_count, "queries append nothing");

    // A recovered engine rebuilds the same answers from history alone.
    let (recovered, _) = assert_recovers(&host);
    assert_eq!(recovered.query("wf-1", "items", &Value::Null).unwrap(), json!(["a", "b"]));

    let error = host.engine.query("wf-1", "nope", &Value::Null).unwrap_err();
    assert_eq!(error.to_string(), format!("run {run}: query \"nope\" is not defined"));
    // A closed run still answers with its final state.
    host.signal("wf-1", "s3", "item", json!("done"));
    assert_eq!(query(&host, "items", Value::Null), json!(["a", "b"]));
    assert_replays(&host);
}
