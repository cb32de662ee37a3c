//! Cancellation of a run, reaching its pending activities, timers, signal waits and children.

use super::{appends, assert_recovers, assert_replays, cut_after, restart_after};
use crate::engine::{Effect, TimerId};
use crate::history::Kind;
use crate::testing::Host;
use crate::workflow::{Ctx, Registry, WorkflowError, WorkflowResult};
use futures_util::future::join;
use serde_json::{json, Value};
use std::time::Duration;

/// An activity and a one-hour timer side by side.
async fn busy(ctx: Ctx, _: ()) -> WorkflowResult<String> {
    let (answer, slept) = join(ctx.activity::<String>("llm", &"q").start(), ctx.sleep(Duration::from_secs(3600))).await;
    slept?;
    Ok(answer?)
}

/// On cancellation, releases what it reserved before ending as canceled.
async fn booking(ctx: Ctx, _: ()) -> WorkflowResult<String> {
    let hold: String = ctx.activity("reserve", &"seat 4a").await?;
    match ctx.activity::<String>("charge", &hold).await {
        Ok(receipt) => Ok(receipt),
        Err(error) => {
            assert!(ctx.is_cancel_requested(), "only cancellation in this test");
            let _: String = ctx.activity("release", &hold).await?;
            Err(WorkflowError::from(error))
        }
    }
}

async fn waiter(ctx: Ctx, _: ()) -> WorkflowResult<bool> {
    ctx.signal("approve").await
}

async fn parent(ctx: Ctx, _: ()) -> WorkflowResult<bool> {
    ctx.child("waiter", &()).await
}

fn host() -> Host {
    let mut registry = Registry::new();
    registry.register("busy", busy).register("booking", booking).register("waiter", waiter).register("parent", parent);
    Host::new(registry)
}

fn canceled_activities(effects: &[Effect]) -> Vec<(String, u32)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::CancelActivity { run_id, seq } => Some((run_id.clone(), *seq)),
            _ => None,
        })
        .collect()
}

#[test]
fn cancel_reaches_pending_activity_and_timer() {
    let mut host = host();
    let run = host.start("busy", "wf-1", Value::Null);
    host.advance(1_000);
    let task = host.task("llm");
    let effects = host.cancel("wf-1", "user pressed stop");
    assert_eq!(canceled_activities(&effects), vec![(run.clone(), 1)]);
    assert!(host.activities.is_empty());
    let state = host.engine.run_state(&run).unwrap();
    assert!(state.activities[&1].closed && state.timers[&2].closed);
    // The activity answers anyway and the timer fires: both are ignored.
    let effects = host.complete(&task, json!("too late"));
    assert!(!appends(&effects), "{effects:?}");
    let effects = host.fire(&run, TimerId::Workflow { seq: 2 });
    assert!(!appends(&effects), "{effects:?}");
    insta::assert_snapshot!("cancel_activity_and_timer", host.render(&run));
    assert_replays(&host);
}

#[test]
fn cancel_during_activity_runs_cleanup_then_ends_canceled() {
    let mut host = host();
    let run = host.start("booking", "wf-1", Value::Null);
    host.complete(&host.task("reserve"), json!("hold-7"));
    host.advance(2_000);
    let effects = host.cancel("wf-1", "customer left");
    assert_eq!(canceled_activities(&effects), vec![(run.clone(), 2)]);
    // Cleanup after cancellation is an ordinary activity.
    let release = host.task("release");
    assert_eq!(release.input, json!("hold-7").into());
    assert_recovers(&host);
    host.complete(&release, json!("released"));
    insta::assert_snapshot!("cancel_with_cleanup", host.render(&run));
    assert_eq!(host.engine.run_state(&run).unwrap().terminal.as_deref().cloned(), Some(Kind::WorkflowCanceled));
    assert_replays(&host);
}

#[test]
fn cancel_ends_signal_wait() {
    let mut host = host();
    let run = host.start("waiter", "wf-1", Value::Null);
    host.cancel("wf-1", "no longer needed");
    let rendered = host.render(&run);
    assert!(rendered.ends_with("workflow_canceled\n"), "{rendered}");
    assert_replays(&host);
}

#[test]
fn cancel_reaches_child_run_and_parent_sees_it() {
    let mut host = host();
    let run = host.start("parent", "p-1", Value::Null);
    let child = host.engine.latest_run(&format!("p-1/{run}/1")).unwrap().to_owned();
    host.advance(1_000);
    host.cancel("p-1", "shutdown");
    insta::assert_snapshot!("cancel_parent", host.render(&run));
    insta::assert_snapshot!("cancel_child", host.render(&child));
    assert_replays(&host);
}

#[test]
fn second_cancel_and_cancel_of_closed_run_are_ignored() {
    let mut host = host();
    let run = host.start("booking", "wf-1", Value::Null);
    host.complete(&host.task("reserve"), json!("hold-7"));
    host.cancel("wf-1", "first");
    let effects = host.cancel("wf-1", "second");
    assert!(effects.is_empty(), "{effects:?}");
    host.complete(&host.task("release"), json!("released"));
    let effects = host.cancel("wf-1", "after close");
    assert!(effects.is_empty(), "{effects:?}");
    let cancels = host.events(&run).iter().filter(|e| matches!(e.kind, Kind::CancelRequested { .. })).count();
    assert_eq!(cancels, 1);
}

/// Waits for whichever of two children finishes first.
async fn two_children(ctx: Ctx, _: ()) -> WorkflowResult<bool> {
    let first = ctx.child::<bool>("waiter", &()).start();
    let second = ctx.child::<bool>("waiter", &()).start();
    match futures_util::future::select(first, second).await {
        futures_util::future::Either::Left((answer, _)) | futures_util::future::Either::Right((answer, _)) => answer,
    }
}

#[test]
fn cancel_of_parent_racing_two_children_closes_each_run_once() {
    let mut host = host();
    host.engine = crate::engine::Engine::new({
        let mut registry = Registry::new();
        registry.register("waiter", waiter).register("two_children", two_children);
        registry
    });
    let run = host.start("two_children", "p-1", Value::Null);
    host.cancel("p-1", "shutdown");
    insta::assert_snapshot!("cancel_two_children", host.render(&run));
    assert_eq!(host.closed.len(), 3, "{:?}", host.closed);
    assert_replays(&host);
}

#[test]
fn crash_between_parent_cancel_and_child_cancel_still_cancels_child() {
    let mut host = host();
    let run = host.start("parent", "p-1", Value::Null);
    let child = host.engine.latest_run(&format!("p-1/{run}/1")).unwrap().to_owned();
    host.cancel("p-1", "shutdown");
    let cut = cut_after(&host, &run, |k| matches!(k, Kind::CancelRequested { .. }));
    let restarted = restart_after(&host, cut);
    assert_eq!(restarted.render(&child), host.render(&child));
    assert_eq!(restarted.render(&run), host.render(&run));
    assert_replays(&restarted);
}
