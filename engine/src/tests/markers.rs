//! Recorded values (`now`, `random`, `uuid`) and version markers (`ctx.patched`).

use super::{assert_accepts, assert_history_replays, assert_recovers, assert_replays};
use crate::engine::Engine;
use crate::history::{Kind, Marker};
use crate::machine::Machine;
use crate::testing::Host;
use crate::time::Time;
use crate::workflow::{Ctx, Registry, WorkflowResult};
use serde_json::{json, Value};

/// Reads the clock and randomness before and after an activity.
async fn observer(ctx: Ctx, _: ()) -> WorkflowResult<Value> {
    let started_at = ctx.now();
    let random = ctx.random();
    let id = ctx.uuid();
    let _: String = ctx.activity("llm", &"q").await?;
    Ok(json!({
        "started_at": started_at.as_ms(),
        "resumed_at": ctx.now().as_ms(),
        "random": random,
        "second_random": ctx.random(),
        "uuid": id,
    }))
}

/// Version 1: answers with one model, waits for approval, publishes.
async fn answer_v1(ctx: Ctx, question: String) -> WorkflowResult<String> {
    let answer: String = ctx.activity("llm", &question).await?;
    let _: bool = ctx.signal("approve").await?;
    ctx.activity("publish", &answer).await.map_err(Into::into)
}

/// Version 2: checks the answer with a second call, behind patch `verify`.
async fn answer_v2(ctx: Ctx, question: String) -> WorkflowResult<String> {
    let answer: String = ctx.activity("llm", &question).await?;
    if ctx.patched("verify") {
        let _: bool = ctx.activity("verify", &answer).await?;
    }
    let _: bool = ctx.signal("approve").await?;
    ctx.activity("publish", &answer).await.map_err(Into::into)
}

fn registry(answer_version: u32) -> Registry {
    let mut registry = Registry::new();
    registry.register("observer", observer);
    match answer_version {
        1 => registry.register("answer", answer_v1),
        _ => registry.register("answer", answer_v2),
    };
    registry
}

#[test]
fn now_random_and_uuid_are_recorded_and_replayed() {
    let mut host = Host::new(registry(1));
    host.advance(1_000);
    let run = host.start("observer", "wf-1", Value::Null);
    host.advance(4_000);
    host.complete(&host.task("llm"), json!("a"));
    insta::assert_snapshot!("recorded_values", host.render(&run));

    let events = host.events(&run);
    let output = match host.engine.run_state(&run).unwrap().terminal.as_deref() {
        Some(Kind::WorkflowCompleted { output }) => output.to_value(),
        other => panic!("{other:?}"),
    };
    assert_eq!(output["started_at"], json!(1_000));
    assert_eq!(output["resumed_at"], json!(5_000));
    assert_ne!(output["random"], output["second_random"]);
    let uuid = output["uuid"].as_str().unwrap();
    let parts: Vec<&str> = uuid.split('-').collect();
    assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![8, 4, 4, 4, 12], "{uuid}");
    assert!(parts[2].starts_with('4'), "version 4 layout: {uuid}");
    assert!("89ab".contains(&parts[3][..1]), "RFC 4122 variant: {uuid}");
    // Replay re-issues the same completion, output included: the values came from history.
    assert_history_replays(host.engine.registry(), &events);
}

#[test]
fn replay_returns_recorded_random_even_if_derivation_changes() {
    let mut host = Host::new(registry(1));
    let run = host.start("observer", "wf-1", Value::Null);
    let mut events = host.events(&run);
    // Tamper with the recorded random value: replay must hand the recorded one to the code,
    // which then completes with it.
    for event in &mut events {
        if let Kind::MarkerRecorded { marker: Marker::Random { value }, .. } = &mut event.kind {
            *value = 42;
        }
    }
    let mut effects = Vec::new();
    let mut engine = Engine::recover(registry(1), vec![events], host.now, &mut effects).unwrap();
    let task = effects
        .iter()
        .find_map(|e| match e {
            crate::engine::Effect::ScheduleActivity(task) => Some(task.clone()),
            _ => None,
        })
        .expect("activity re-asked");
    let mut effects = Vec::new();
    engine
        .handle(
            Time(10),
            crate::engine::Input::ActivityCompleted {
                run_id: run.clone(),
                seq: task.seq,
                attempt: task.attempt,
                output: json!("a"),
                worker: None,
            },
            &mut effects,
        )
        .unwrap();
    match engine.run_state(&run).unwrap().terminal.as_deref() {
        Some(Kind::WorkflowCompleted { output }) => assert_eq!(output.to_value()["random"], json!(42)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn patched_code_takes_new_path_in_new_runs() {
    let mut host = Host::new(registry(2));
    let run = host.start("answer", "wf-1", json!("why?"));
    host.complete(&host.task("llm"), json!("because"));
    host.complete(&host.task("verify"), json!(true));
    host.signal("wf-1", "s1", "approve", json!(true));
    host.complete(&host.task("publish"), json!("published"));
    insta::assert_snapshot!("patched_new_run", host.render(&run));
    assert_replays(&host);
}

#[test]
fn patched_code_keeps_old_path_for_history_recorded_before_the_patch() {
    // A run recorded by version 1, in flight past the patch point: its history already
    // went from the answer straight to approval, and publishing is under way.
    let mut host = Host::new(registry(1));
    let run = host.start("answer", "wf-1", json!("why?"));
    host.complete(&host.task("llm"), json!("because"));
    host.signal("wf-1", "s1", "approve", json!(true));
    let old_history = host.events(&run);

    // Version 2 is deployed: replay accepts the old history and takes the old path...
    assert_accepts(&registry(2), &old_history);
    let mut v2 = Host::new(registry(2));
    let mut effects = Vec::new();
    v2.now = host.now;
    v2.engine = Engine::recover(registry(2), vec![old_history], host.now, &mut effects).unwrap();
    v2.perform(effects);
    assert_eq!(v2.activities.len(), 1, "only publish is re-asked");
    // ...to the end.
    v2.complete(&v2.task("publish"), json!("published"));
    let rendered = v2.render(&run);
    insta::assert_snapshot!("patched_old_run", rendered);
    assert!(!rendered.contains("verify"), "{rendered}");
    assert!(!rendered.contains("patch="), "{rendered}");
}

#[test]
fn old_run_reaching_patch_point_after_deploy_takes_new_path() {
    // Recorded by version 1 up to the first activity; the patch point lies past the end of
    // history, so version 2 decides there for the first time and takes the new path.
    let mut host = Host::new(registry(1));
    let run = host.start("answer", "wf-1", json!("why?"));
    let history = host.events(&run);
    let mut host = Host::new(registry(2));
    let mut effects = Vec::new();
    host.engine = Engine::recover(registry(2), vec![history], host.now, &mut effects).unwrap();
    host.perform(effects);
    host.complete(&host.task("llm"), json!("because"));
    assert_eq!(host.task("verify").input, json!("because").into());
    let rendered = host.render(&run);
    assert!(rendered.contains("marker_recorded seq=2 patch=verify"), "{rendered}");
    assert_recovers(&host);
    assert_replays(&host);
}

#[test]
fn patched_history_does_not_replay_on_code_without_the_patch() {
    let mut host = Host::new(registry(2));
    let run = host.start("answer", "wf-1", json!("why?"));
    host.complete(&host.task("llm"), json!("because"));
    let error =
        Machine::replay(&registry(1), &host.events(&run)).err().expect("rolling back past a patch is nondeterminism");
    assert_eq!(
        error.to_string(),
        format!(
            "run {run}: history diverges at event 3: recorded `#3   0+00:00:00.000 marker_recorded seq=2 patch=verify`, code now issues `<nothing>`"
        )
    );
}
