//! Nondeterminism: code changed under a recorded history is reported with the event index
//! and both sides; a change behind a version marker is accepted.

use super::{assert_accepts, assert_replays};
use crate::engine::{self, Engine};
use crate::history::Event;
use crate::machine::{self, Machine};
use crate::retry::RetryPolicy;
use crate::testing::Host;
use crate::workflow::{Ctx, Registry, WorkflowResult};
use serde_json::json;
use std::time::Duration;

/// The versions of the `research` workflow that a history may be replayed against.
#[derive(Clone, Copy, PartialEq)]
enum Version {
    Original,
    SwappedCalls,
    RenamedSearch,
    ChangedSearchInput,
    NoTimer,
    SignalInsteadOfTimer,
    LongerTimer,
    OtherRetryPolicy,
    ExtraCallAtEnd,
    PatchedSearch,
}

/// Plans, waits 10 s, searches, asks the model.
async fn research(ctx: Ctx, question: String, version: Version) -> WorkflowResult<String> {
    let plan: String = ctx.activity("plan", &question).await?;
    match version {
        Version::NoTimer => {}
        Version::SignalInsteadOfTimer => ctx.signal::<()>("go").await?,
        Version::LongerTimer => ctx.sleep(Duration::from_secs(60)).await?,
        _ => ctx.sleep(Duration::from_secs(10)).await?,
    }
    let search = |ctx: &Ctx| -> crate::workflow::ActivityCall<String> {
        match version {
            Version::RenamedSearch => ctx.activity("web_search", &question),
            Version::ChangedSearchInput => ctx.activity("search", &question.to_uppercase()),
            Version::PatchedSearch if ctx.patched("web-search") => ctx.activity("web_search", &question),
            Version::OtherRetryPolicy => ctx.activity("search", &question).retry(RetryPolicy::attempts(9)),
            _ => ctx.activity("search", &question),
        }
    };
    let (notes, answer): (String, String) = if version == Version::SwappedCalls {
        let answer = ctx.activity("llm", &question).await?;
        (search(&ctx).await?, answer)
    } else {
        let notes = search(&ctx).await?;
        (notes, ctx.activity("llm", &question).await?)
    };
    if version == Version::ExtraCallAtEnd {
        let _: String = ctx.activity("log", &answer).await?;
    }
    Ok(format!("{plan} / {notes} / {answer}"))
}

fn registry(version: Version) -> Registry {
    let mut registry = Registry::new();
    registry.register("research", move |ctx: Ctx, question: String| research(ctx, question, version));
    registry
}

/// Runs `version` to completion, answering every activity with its type, and returns the
/// run id and history.
fn record(version: Version) -> (String, Vec<Event>) {
    let mut host = Host::new(registry(version));
    let run = host.start("research", "wf-1", json!("q"));
    loop {
        if let Some(task) = host.activities.values().next().cloned() {
            host.advance(1_000);
            host.complete(&task, json!(task.activity_type));
        } else if !host.timers.is_empty() {
            host.fire_next_timer();
        } else {
            break;
        }
    }
    assert_replays(&host);
    (run.clone(), host.events(&run))
}

/// The nondeterminism error of replaying `events` with `version`.
fn divergence(version: Version, events: &[Event]) -> machine::Nondeterminism {
    match Machine::replay(&registry(version), events) {
        Err(machine::Error::Nondeterminism(error)) => error,
        Err(other) => panic!("expected nondeterminism, got {other}"),
        Ok(_) => panic!("expected nondeterminism, replay succeeded"),
    }
}

#[test]
fn original_code_records_plan_sleep_search_llm() {
    let (_, events) = record(Version::Original);
    insta::assert_snapshot!("original", crate::history::render(&events));
}

#[test]
fn swapped_activity_calls_are_reported_at_the_first_swapped_event() {
    let (run, events) = record(Version::Original);
    let error = divergence(Version::SwappedCalls, &events);
    assert_eq!(error.event_index, 5);
    assert_eq!(
        error.to_string(),
        format!(
            "run {run}: history diverges at event 5: recorded `#5   0+00:00:11.000 activity_scheduled seq=3 search input=\"q\" key={run}:3`, code now issues `activity_scheduled seq=3 llm input=\"q\" key={run}:3`"
        )
    );
}

#[test]
fn renamed_activity_type_is_reported() {
    let (run, events) = record(Version::Original);
    let error = divergence(Version::RenamedSearch, &events);
    assert_eq!(
        error.to_string(),
        format!(
            "run {run}: history diverges at event 5: recorded `#5   0+00:00:11.000 activity_scheduled seq=3 search input=\"q\" key={run}:3`, code now issues `activity_scheduled seq=3 web_search input=\"q\" key={run}:3`"
        )
    );
}

#[test]
fn changed_activity_input_is_reported() {
    let (run, events) = record(Version::Original);
    let error = divergence(Version::ChangedSearchInput, &events);
    assert_eq!(
        error.to_string(),
        format!(
            "run {run}: history diverges at event 5: recorded `#5   0+00:00:11.000 activity_scheduled seq=3 search input=\"q\" key={run}:3`, code now issues `activity_scheduled seq=3 search input=\"Q\" key={run}:3`"
        )
    );
}

#[test]
fn removed_timer_is_reported() {
    let (run, events) = record(Version::Original);
    let error = divergence(Version::NoTimer, &events);
    assert_eq!(
        error.to_string(),
        format!(
            "run {run}: history diverges at event 3: recorded `#3   0+00:00:01.000 timer_started seq=2 duration_ms=10000 fire_at=0+00:00:11.000`, code now issues `activity_scheduled seq=2 search input=\"q\" key={run}:2`"
        )
    );
}

#[test]
fn call_added_after_the_last_one_is_reported_against_the_recorded_completion() {
    let (run, events) = record(Version::Original);
    let error = divergence(Version::ExtraCallAtEnd, &events);
    assert_eq!(
        error.to_string(),
        format!(
            "run {run}: history diverges at event 9: recorded `#9   0+00:00:13.000 workflow_completed output=\"plan / search / llm\"`, code now issues `activity_scheduled seq=5 log input=\"llm\" key={run}:5`"
        )
    );
}

#[test]
fn timer_replaced_by_a_signal_wait_is_reported_as_nothing_issued() {
    let (run, events) = record(Version::Original);
    let error = divergence(Version::SignalInsteadOfTimer, &events);
    assert_eq!(
        error.to_string(),
        format!(
            "run {run}: history diverges at event 3: recorded `#3   0+00:00:01.000 timer_started seq=2 duration_ms=10000 fire_at=0+00:00:11.000`, code now issues `<nothing>`"
        )
    );
}

#[test]
fn longer_timer_and_other_retry_policy_are_compatible_changes() {
    let (_, events) = record(Version::Original);
    assert_accepts(&registry(Version::LongerTimer), &events);
    assert_accepts(&registry(Version::OtherRetryPolicy), &events);
}

#[test]
fn recovery_reports_nondeterminism_as_an_error() {
    let (run, events) = record(Version::Original);
    let mut effects = Vec::new();
    let error = Engine::recover(
        registry(Version::RenamedSearch),
        vec![events[..6].to_vec()],
        crate::time::Time(12_000),
        &mut effects,
    )
    .err()
    .expect("recovery refuses a diverging history");
    assert!(
        matches!(
            error,
            engine::Error::Machine(machine::Error::Nondeterminism(ref n)) if n.event_index == 5
        ),
        "{error}"
    );
    assert!(error.to_string().starts_with(&format!("run {run}: history diverges at event 5: recorded `#5")));
    assert!(effects.is_empty(), "nothing is asked of a diverged run");
}

#[test]
fn change_behind_patch_accepts_old_history_and_takes_new_path_in_new_runs() {
    let (_, old) = record(Version::Original);
    // The old history replays unchanged: no marker, old activity.
    assert_accepts(&registry(Version::PatchedSearch), &old);
    // A new run records the marker and calls the new activity.
    let (_, new) = record(Version::PatchedSearch);
    insta::assert_snapshot!("patched_search_new", crate::history::render(&new));
    // And the old code rejects the new history.
    let error = divergence(Version::Original, &new);
    assert_eq!(error.event_index, 5);
}
