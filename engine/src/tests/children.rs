//! Child workflows and continue-as-new.

use super::{assert_recovers, assert_replays, cut_after, restart_after};
use crate::activity::Failure;
use crate::history::Kind;
use crate::retry::RetryPolicy;
use crate::testing::Host;
use crate::workflow::{next_run_id, Ctx, Registry, WorkflowResult};
use serde_json::{json, Value};
use std::time::Duration;

async fn summarize_chunk(ctx: Ctx, chunk: String) -> WorkflowResult<String> {
    let summary: String = ctx.activity("llm", &chunk).retry(RetryPolicy::attempts(2)).await?;
    Ok(summary)
}

/// Summarizes a document chunk by chunk, one child per chunk, in sequence.
async fn summarize_doc(ctx: Ctx, chunks: Vec<String>) -> WorkflowResult<String> {
    let mut summaries = Vec::new();
    for chunk in &chunks {
        summaries.push(ctx.child::<String>("summarize_chunk", chunk).await?);
    }
    Ok(summaries.join(" "))
}

/// Starts a child under a fixed workflow id.
async fn named_child(ctx: Ctx, id: String) -> WorkflowResult<String> {
    ctx.child::<String>("summarize_chunk", &"x").id(&id).await
}

/// Counts up to 3 across runs, one hour per run; each run ends by handing over.
async fn counter(ctx: Ctx, count: u32) -> WorkflowResult<u32> {
    if count >= 3 {
        return Ok(count);
    }
    ctx.sleep(Duration::from_secs(3600)).await?;
    Err(ctx.continue_as_new(&(count + 1)))
}

/// Each of its runs delegates to a child under the default child id, twice in all.
async fn delegating_loop(ctx: Ctx, round: u32) -> WorkflowResult<String> {
    let summary: String = ctx.child("summarize_chunk", &format!("round {round}")).await?;
    if round < 2 {
        return Err(ctx.continue_as_new(&(round + 1)));
    }
    Ok(summary)
}

/// Awaits a child that itself continues as new.
async fn counting_parent(ctx: Ctx, _: ()) -> WorkflowResult<u32> {
    ctx.child("counter", &1u32).await
}

fn host() -> Host {
    let mut registry = Registry::new();
    registry
        .register("summarize_chunk", summarize_chunk)
        .register("summarize_doc", summarize_doc)
        .register("named_child", named_child)
        .register("counter", counter)
        .register("delegating_loop", delegating_loop)
        .register("counting_parent", counting_parent);
    Host::new(registry)
}

#[test]
fn child_output_returns_to_parent() {
    let mut host = host();
    let run = host.start("summarize_doc", "doc-1", json!(["intro", "body"]));
    let first = host.engine.latest_run(&format!("doc-1/{run}/1")).unwrap().to_owned();
    host.advance(1_000);
    host.complete(&host.task("llm"), json!("Intro."));
    let second = host.engine.latest_run(&format!("doc-1/{run}/2")).unwrap().to_owned();
    assert_recovers(&host);
    host.advance(1_000);
    host.complete(&host.task("llm"), json!("Body."));
    insta::assert_snapshot!("child_parent", host.render(&run));
    insta::assert_snapshot!("child_first", host.render(&first));
    insta::assert_snapshot!("child_second", host.render(&second));
    assert_replays(&host);
}

#[test]
fn child_failure_fails_parent_with_child_error() {
    let mut host = host();
    let run = host.start("summarize_doc", "doc-1", json!(["intro"]));
    let child = host.engine.latest_run(&format!("doc-1/{run}/1")).unwrap().to_owned();
    host.fail(&host.task("llm"), Failure::Refused { message: "unsafe content".into() });
    insta::assert_snapshot!("child_failed_parent", host.render(&run));
    insta::assert_snapshot!("child_failed_child", host.render(&child));
    assert_replays(&host);
}

#[test]
fn child_with_workflow_id_in_use_fails_to_start() {
    let mut host = host();
    host.start("summarize_chunk", "taken", json!("other"));
    let run = host.start("named_child", "wf-1", json!("taken"));
    insta::assert_snapshot!("child_id_in_use", host.render(&run));
    assert_eq!(
        host.engine.latest_run("taken"),
        Some(crate::engine::first_run_id("taken").as_str()),
        "the existing workflow keeps its run"
    );
    assert_replays(&host);
}

#[test]
fn continue_as_new_hands_over_to_next_run_with_new_input() {
    let mut host = host();
    let first = host.start("counter", "count-1", json!(1));
    host.fire_next_timer();
    let second = next_run_id("count-1", &first);
    assert_eq!(host.engine.latest_run("count-1"), Some(second.as_str()));
    assert_recovers(&host);
    host.fire_next_timer();
    let third = next_run_id("count-1", &second);
    assert_eq!(host.engine.latest_run("count-1"), Some(third.as_str()));
    insta::assert_snapshot!("continue_first", host.render(&first));
    insta::assert_snapshot!("continue_second", host.render(&second));
    insta::assert_snapshot!("continue_third", host.render(&third));
    assert_eq!(host.closed, vec![first, second, third.clone()]);
    assert_eq!(
        host.engine.run_state(&third).unwrap().terminal.as_deref().cloned(),
        Some(Kind::WorkflowCompleted { output: json!(3).into() })
    );
    assert_replays(&host);
}

#[test]
fn signals_and_starts_after_continue_as_new_reach_the_latest_run() {
    let mut host = host();
    let first = host.start("counter", "count-1", json!(1));
    host.fire_next_timer();
    let second = host.engine.latest_run("count-1").unwrap().to_owned();
    assert_ne!(first, second);
    host.signal("count-1", "s1", "poke", Value::Null);
    assert_eq!(host.engine.run_state(&second).unwrap().signal_count, 1);
    assert_eq!(host.engine.run_state(&first).unwrap().signal_count, 0);
    // Starting the same workflow id again is a no-op that returns the latest run.
    let effects = host.feed(crate::engine::Input::StartRun {
        workflow_id: "count-1".into(),
        workflow_type: "counter".into(),
        input: json!(1),
    });
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(host.engine.latest_run("count-1"), Some(second.as_str()));
}

#[test]
fn child_that_continues_as_new_reports_its_last_run_to_parent() {
    let mut host = host();
    let run = host.start("counting_parent", "p-1", Value::Null);
    host.fire_next_timer();
    host.fire_next_timer();
    insta::assert_snapshot!("child_continued_parent", host.render(&run));
    let child_last = host.engine.latest_run(&format!("p-1/{run}/1")).unwrap().to_owned();
    let rendered = host.render(&child_last);
    assert!(rendered.contains(&format!("parent=p-1/{run}#1")), "the last run keeps the parent: {rendered}");
    assert_replays(&host);
}

#[test]
fn continued_run_starts_child_under_fresh_default_id() {
    let mut host = host();
    let first = host.start("delegating_loop", "loop-1", json!(1));
    host.complete(&host.task("llm"), json!("one"));
    let second = host.engine.latest_run("loop-1").unwrap().to_owned();
    assert_ne!(first, second);
    host.complete(&host.task("llm"), json!("two"));
    insta::assert_snapshot!("continued_child_first", host.render(&first));
    insta::assert_snapshot!("continued_child_second", host.render(&second));
    assert_eq!(
        host.engine.run_state(&second).unwrap().terminal.as_deref().cloned(),
        Some(Kind::WorkflowCompleted { output: json!("two").into() })
    );
    assert_replays(&host);
}

/// Starts a child and returns without waiting for it.
async fn fire_and_forget(ctx: Ctx, child_type: String) -> WorkflowResult<String> {
    // Dropping the future does not cancel the child: it runs on by itself.
    drop(ctx.child::<Value>(&child_type, &()).start());
    Ok("started".to_owned())
}

async fn instant(_ctx: Ctx, _: ()) -> WorkflowResult<String> {
    Ok("done at once".to_owned())
}

#[test]
fn outcome_of_child_finishing_after_parent_closed_is_dropped() {
    // The child finishes within the parent's step: its outcome is queued for the parent,
    // which completes in the same step before the outcome is appended.
    for (child_type, closed_count) in [("instant", 2), ("no_such_type", 1)] {
        let mut registry = Registry::new();
        registry.register("fire_and_forget", fire_and_forget).register("instant", instant);
        let mut host = Host::new(registry);
        let run = host.start("fire_and_forget", "wf-1", json!(child_type));
        insta::assert_snapshot!(format!("fire_and_forget_{child_type}"), host.render(&run));
        assert_eq!(host.closed.len(), closed_count, "{child_type}");
        assert!(host.closed.contains(&run), "{child_type}");
        assert!(
            !host.render(&run).contains("child_completed"),
            "the parent had closed before its child's outcome came to be appended"
        );
        assert_replays(&host);
    }
}

#[test]
fn crash_after_child_started_is_recorded_starts_child_on_recovery() {
    let mut host = host();
    let run = host.start("summarize_doc", "doc-1", json!(["intro"]));
    let cut = cut_after(&host, &run, |k| matches!(k, Kind::ChildStarted { .. }));
    let mut restarted = restart_after(&host, cut);
    let child = restarted
        .engine
        .latest_run(&format!("doc-1/{run}/1"))
        .expect("the child run is started on recovery")
        .to_owned();
    restarted.complete(&restarted.task("llm"), json!("Intro."));
    assert_eq!(restarted.render(&run), host_render_completed(&run));
    assert_eq!(
        restarted.engine.run_state(&child).unwrap().terminal.as_deref().cloned(),
        Some(Kind::WorkflowCompleted { output: json!("Intro.").into() })
    );
    assert_replays(&restarted);
}

/// The parent's history after its one child summarized "Intro." at time 0.
fn host_render_completed(run: &str) -> String {
    let mut host = host();
    host.start("summarize_doc", "doc-1", json!(["intro"]));
    host.complete(&host.task("llm"), json!("Intro."));
    host.render(run)
}

#[test]
fn crash_before_child_outcome_reaches_parent_delivers_it_on_recovery() {
    let mut host = host();
    let run = host.start("summarize_doc", "doc-1", json!(["intro"]));
    let child = host.engine.latest_run(&format!("doc-1/{run}/1")).unwrap().to_owned();
    host.complete(&host.task("llm"), json!("Intro."));
    let cut = cut_after(&host, &child, |k| k.is_terminal());
    assert!(cut < host.appended_log.len(), "the parent's child_completed comes later");
    let restarted = restart_after(&host, cut);
    assert_eq!(restarted.render(&run), host.render(&run));
    assert_replays(&restarted);
}

#[test]
fn crash_between_continue_as_new_and_next_run_starts_next_run_on_recovery() {
    let mut host = host();
    let first = host.start("counter", "count-1", json!(1));
    host.fire_next_timer();
    let second = next_run_id("count-1", &first);
    let cut = cut_after(&host, &first, |k| k.is_terminal());
    let mut restarted = restart_after(&host, cut);
    assert_eq!(restarted.engine.latest_run("count-1"), Some(second.as_str()));
    assert_eq!(restarted.render(&second), host.render(&second));
    restarted.fire_next_timer();
    let third = next_run_id("count-1", &second);
    assert_eq!(
        restarted.engine.run_state(&third).unwrap().terminal.as_deref().cloned(),
        Some(Kind::WorkflowCompleted { output: json!(3).into() })
    );
    assert_replays(&restarted);
}

#[test]
fn crash_inside_parent_batch_after_child_closed_keeps_the_batch_whole() {
    // The parent starts a child that finishes at once, then continues as new. A crash after
    // the child's first event loses the child's and the parent's last ones. Recovery appends
    // both cut-off batches before the child's outcome, which then finds the parent closed, as
    // it did live, instead of landing in the middle of the parent's batch. (The child's run
    // id sorts before the parent's, so it is recovered first.)
    let mut registry = Registry::new();
    registry.register("instant", instant).register("detach_then_continue", |ctx: Ctx, round: u32| async move {
        drop(ctx.child::<Value>("instant", &()).start());
        if round == 0 {
            return Err(ctx.continue_as_new(&1u32));
        }
        Ok(round)
    });
    let mut host = Host::new(registry);
    let second = host.start("detach_then_continue", "wf-1", json!(0));
    let first = crate::engine::first_run_id("wf-1");
    assert_eq!(second, next_run_id("wf-1", &first));
    let child = host.engine.latest_run(&format!("wf-1/{first}/1")).unwrap().to_owned();
    assert!(child < first, "{child} {first}");
    let cut = cut_after(&host, &child, |k| matches!(k, Kind::WorkflowStarted { .. }));
    let restarted = restart_after(&host, cut);
    for run in [&first, &child, &second] {
        assert_eq!(restarted.render(run), host.render(run));
    }
    assert_replays(&restarted);
}
