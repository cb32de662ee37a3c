//! The committed corpus of recorded histories (`tests/histories/`), replayed against today's
//! workflow code as CI does for runs in flight, and proof that the replay catches a change
//! that would break them while the same change behind a version marker passes.
//!
//! Owns the corpus checks only: that every file replays, that the corpus still holds the
//! cases it is there for (retries after 429, crashes, lease takeovers, late and duplicate
//! signals, continue-as-new, compensation), and the two workflow variants written here as a
//! user would write them. It never rewrites a recorded history.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempest_engine::history::{History, Kind};
use tempest_engine::store::Record;
use tempest_engine::{Ctx, Failure, Registry, WorkflowResult};
use tempest_scenarios::human_approval::{self, Approval, Decision, Request};
use tempest_sim::check::replay_reproduces;
use tempest_sim::disk::Encoded;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("histories")
}

/// Every history of the corpus, by file name, in name order.
fn corpus() -> Vec<(String, History)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/histories exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable history");
            let history = History::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.file_name().expect("a file").to_string_lossy().into_owned(), history)
        })
        .collect()
}

fn replay_all(registry: &Registry, workflow_type: Option<&str>) -> Vec<(String, Result<(), String>)> {
    corpus()
        .into_iter()
        .filter(|(_, h)| workflow_type.is_none_or(|t| h.workflow_type == t))
        .map(|(name, history)| (name, replay_reproduces(registry, &history).map(|_| ())))
        .collect()
}

#[test]
fn every_recorded_history_replays_against_todays_code() {
    let results = replay_all(&tempest_scenarios::registry(), None);
    assert!(results.len() >= 10, "the corpus holds only {} histories", results.len());
    let broken: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(broken.is_empty(), "{broken:#?}");
}

/// What a history shows, for the coverage of the corpus.
/// The simulated disk keeps whole records as values and encodes only a torn one, which is
/// sound only if every record reads back as written (`disk::Encoded`'s contract).
#[test]
fn store_records_of_every_recorded_history_survive_the_disk_encoding() {
    let mut record_count = 0;
    for (name, history) in corpus() {
        let records = Record::of_history(&history.events);
        assert!(!records.is_empty(), "{name}: no records");
        for record in records.into_iter().chain([Record::Epoch { epoch: 3 }]) {
            let decoded = Record::decode(&record.encode()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(decoded, record, "{name}");
            record_count += 1;
        }
    }
    assert!(record_count > 100, "only {record_count} records checked");
}

fn cases_of(history: &History) -> Vec<&'static str> {
    let events = &history.events;
    let mut cases = Vec::new();
    let failures = events.iter().filter_map(|e| match &e.kind {
        Kind::ActivityAttemptFailed { failure, .. } => Some(failure),
        _ => None,
    });
    for failure in failures {
        cases.push(match failure {
            Failure::RateLimited { .. } => "retry after 429",
            Failure::TimedOut => "attempt lost to a crash or stall, retried",
            _ => "retry after another failure",
        });
    }
    let mut workers_by_seq: std::collections::BTreeMap<u32, std::collections::BTreeSet<&str>> = Default::default();
    for event in events {
        if let Kind::ActivityAttemptFailed { seq, worker: Some(w), .. }
        | Kind::ActivityCompleted { seq, worker: Some(w), .. } = &event.kind
        {
            workers_by_seq.entry(*seq).or_default().insert(w);
        }
    }
    if workers_by_seq.values().any(|workers| workers.len() > 1) {
        cases.push("attempt taken over by another worker");
    }
    let signals: Vec<(u64, &str)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::SignalReceived { signal_id, .. } => {
                Some((e.index, signal_id.rsplit_once('/').map_or("", |(a, _)| a)))
            }
            _ => None,
        })
        .collect();
    let mut answers: Vec<&str> = signals.iter().map(|(_, base)| *base).collect();
    answers.sort();
    if answers.windows(2).any(|w| w[0] == w[1]) {
        cases.push("duplicate signal");
    }
    let first_timer_fired = events.iter().find(|e| matches!(e.kind, Kind::TimerFired { .. })).map(|e| e.index);
    if first_timer_fired.is_some_and(|fired| signals.iter().any(|(index, _)| *index > fired)) {
        cases.push("late signal");
    }
    if events.iter().any(|e| matches!(e.kind, Kind::WorkflowContinuedAsNew { .. })) {
        cases.push("continue-as-new");
    }
    if events.iter().any(
        |e| matches!(&e.kind, Kind::ActivityScheduled { activity_type, .. } if activity_type.starts_with("cancel_")),
    ) {
        cases.push("compensation");
    }
    cases
}

#[test]
fn corpus_holds_every_scenario_and_the_cases_that_break_live_runs() {
    let corpus = corpus();
    let types: std::collections::BTreeSet<&str> = corpus.iter().map(|(_, h)| h.workflow_type.as_str()).collect();
    for scenario in tempest_scenarios::all() {
        assert!(types.contains(scenario.name()), "no recorded history of {}", scenario.name());
    }
    let cases: std::collections::BTreeSet<&str> = corpus.iter().flat_map(|(_, h)| cases_of(h)).collect();
    for case in [
        "retry after 429",
        "attempt lost to a crash or stall, retried",
        "attempt taken over by another worker",
        "duplicate signal",
        "late signal",
        "continue-as-new",
        "compensation",
    ] {
        assert!(cases.contains(case), "the corpus has no history with: {case} (it has {cases:?})");
    }
}

// ---- a change that breaks live runs, and the same change behind a version marker ----------

/// human_approval with its first two calls swapped: notify the human before drafting. A
/// plausible edit ("tell the reviewer early") that breaks every run recorded before it.
async fn notify_first(ctx: Ctx, request: Request) -> WorkflowResult<Decision> {
    let _: serde_json::Value =
        ctx.activity("notify_human", &json!({ "workflow_id": ctx.workflow_id(), "revision": 0, "draft": "" })).await?;
    let draft: String =
        ctx.activity("draft", &json!({ "topic": request.topic, "previous": null, "comment": null })).await?;
    let answer = ctx.signal_timeout::<Approval>("approval", Duration::from_secs(3 * 86_400)).await?;
    Ok(match answer {
        Some(Approval { approved: true, .. }) => Decision::Published { draft, revisions: 0 },
        _ => Decision::Escalated { revisions: 0 },
    })
}

/// The same change as a user ships it: new runs take the new path, recorded runs the old one.
async fn notify_first_when_patched(ctx: Ctx, request: Request) -> WorkflowResult<Decision> {
    if ctx.patched("notify-before-draft") {
        notify_first(ctx, request).await
    } else {
        human_approval::human_approval(ctx, request).await
    }
}

fn registry_with_human_approval<F, Fut>(workflow: F) -> Registry
where
    F: Fn(Ctx, Request) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = WorkflowResult<Decision>> + 'static,
{
    let mut registry = tempest_scenarios::registry();
    registry.register("human_approval", workflow);
    registry
}

#[test]
fn swapping_two_activity_calls_fails_replay_with_the_exact_divergence() {
    let results = replay_all(&registry_with_human_approval(notify_first), Some("human_approval"));
    assert!(!results.is_empty());
    for (name, result) in &results {
        assert!(result.is_err(), "{name} replayed with the calls swapped");
    }
    let (name, first) = &results[0];
    insta::assert_snapshot!("swapped_calls_divergence", format!("{name}: {}", first.as_ref().unwrap_err()));
}

#[test]
fn the_same_swap_behind_a_version_marker_replays_every_recorded_run() {
    let results = replay_all(&registry_with_human_approval(notify_first_when_patched), Some("human_approval"));
    assert!(!results.is_empty());
    let broken: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(broken.is_empty(), "{broken:#?}");
}
