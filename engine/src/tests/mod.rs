//! Engine tests that cross modules: one scripted host, history snapshots per feature.
//!
//! Every feature test ends with `assert_replays`, so each snapshot is also a history that
//! today's code reproduces event for event. The property tests add recovery from every
//! prefix (`assert_recovers`).
mod activities;
mod cancel;
mod children;
mod markers;
mod nondeterminism;
mod parallel;
mod properties;
mod smoke;
mod timers_signals;

use crate::engine::{ActivityTask, Effect, Engine, TimerId};
use crate::history::{Event, Kind};
use crate::machine::Machine;
use crate::testing::Host;
use crate::time::Time;
use crate::workflow::Registry;
use std::collections::BTreeMap;

/// Replays every run of `host` and checks that the code reproduces its history.
pub(crate) fn assert_replays(host: &Host) {
    for run_id in host.engine.run_ids() {
        assert_history_replays(host.engine.registry(), &host.events(run_id));
    }
}

/// Code other than the recording one replays `events` to the end, with nothing left to do.
pub(crate) fn assert_accepts(registry: &Registry, events: &[Event]) {
    match Machine::replay(registry, events) {
        Ok((_, extra)) => assert!(extra.is_empty(), "replay issues more: {extra:?}"),
        Err(error) => panic!("replay fails: {error}"),
    }
}

/// Replaying `events` succeeds with nothing left to do, and replaying up to each input event
/// issues exactly the commands recorded right after it.
pub(crate) fn assert_history_replays(registry: &Registry, events: &[Event]) {
    let run = events.first().map(|e| e.kind.to_string()).unwrap_or_default();
    let (_, extra) = Machine::replay(registry, events).unwrap_or_else(|error| panic!("{run}: replay fails: {error}"));
    assert!(extra.is_empty(), "{run}: replay issues more: {extra:?}");
    for (index, event) in events.iter().enumerate() {
        if event.kind.is_command() {
            continue;
        }
        let (_, commands) = Machine::replay(registry, &events[..=index])
            .unwrap_or_else(|error| panic!("{run}: replay up to event {index} fails: {error}"));
        let recorded: Vec<Kind> =
            events[index + 1..].iter().take_while(|e| e.kind.is_command()).map(|e| e.kind.clone()).collect();
        assert_eq!(commands, recorded, "{run}: commands after event {index}");
    }
}

/// Rebuilds an engine from the host's histories, as after a crash between two `handle`
/// calls, and checks it equals the live one: the same run states and machine snapshots,
/// nothing appended, and the pending work of every open run asked for again. Returns the
/// recovered engine and the effects it asked for.
pub(crate) fn assert_recovers(host: &Host) -> (Engine, Vec<Effect>) {
    let histories: Vec<Vec<Event>> = host.engine.run_ids().map(|id| host.events(id)).collect();
    let mut effects = Vec::new();
    let recovered = Engine::recover(host.engine.registry().clone(), histories, host.now, &mut effects)
        .unwrap_or_else(|error| panic!("recovery fails: {error}"));
    let live = &host.engine;
    assert!(recovered.run_ids().eq(live.run_ids()), "recovered runs differ");
    for run_id in live.run_ids() {
        let state = live.run_state(run_id).expect("live run");
        assert_eq!(recovered.run_state(run_id), Some(state), "run {run_id}: state");
        assert_eq!(
            recovered.machine(run_id).map(Machine::snapshot),
            live.machine(run_id).map(Machine::snapshot),
            "run {run_id}: machine snapshot"
        );
        assert_eq!(
            recovered.latest_run(&state.workflow_id),
            live.latest_run(&state.workflow_id),
            "workflow {}: latest run",
            state.workflow_id
        );
    }

    let mut activities = BTreeMap::new();
    let mut timers = BTreeMap::new();
    for effect in effects.clone() {
        match effect {
            Effect::ScheduleActivity(task) => {
                let key = (task.run_id.clone(), task.seq);
                assert!(activities.insert(key, task).is_none(), "activity asked twice");
            }
            Effect::StartTimer { run_id, timer, fire_at } => {
                assert!(timers.insert((run_id, timer), fire_at).is_none(), "timer asked twice");
            }
            other => panic!("recovery between two inputs only re-asks for work, not {other:?}"),
        }
    }
    assert_eq!(activities, live_activities(host), "re-asked activities");
    assert_eq!(timers, live_timers(host), "re-asked timers");
    (recovered, effects)
}

/// The host's open activity attempts that the live engine still waits for, as recovery asks
/// for them again: not before now.
fn live_activities(host: &Host) -> BTreeMap<(String, u32), ActivityTask> {
    host.activities
        .iter()
        .filter(|((run_id, seq), task)| {
            let state = host.engine.run_state(run_id).expect("known run");
            !state.is_closed() && state.activities.get(seq).is_some_and(|a| !a.closed && a.attempt == task.attempt)
        })
        .map(|(key, task)| {
            let mut task = task.clone();
            task.not_before = task.not_before.max(host.now);
            (key.clone(), task)
        })
        .collect()
}

/// The host's timers that would still change the live run if they fired. Recovery restarts
/// the start-to-close clock of a re-asked attempt.
fn live_timers(host: &Host) -> BTreeMap<(String, TimerId), Time> {
    host.timers
        .iter()
        .filter_map(|((run_id, timer), fire_at)| {
            let state = host.engine.run_state(run_id).expect("known run");
            if state.is_closed() {
                return None;
            }
            let fire_at = match *timer {
                TimerId::Workflow { seq } => (!state.timers[&seq].closed).then_some(*fire_at)?,
                TimerId::AttemptTimeout { seq, attempt } => {
                    let activity = state.activities.get(&seq).filter(|a| !a.closed && a.attempt == attempt)?;
                    let timeout = activity.options.start_to_close().expect("has a timeout");
                    activity.attempt_not_before.max(host.now).plus(timeout)
                }
                TimerId::ActivityDeadline { seq } => (!state.activities[&seq].closed).then_some(*fire_at)?,
            };
            Some(((run_id.clone(), *timer), fire_at))
        })
        .collect()
}

/// Whether an effect list appended any event.
pub(crate) fn appends(effects: &[Effect]) -> bool {
    effects.iter().any(|e| matches!(e, Effect::Append { .. }))
}

/// A host restarted from what the disk kept: the first `cut` appends of `host`, in the order
/// they were made durable (so possibly inside one input's step). Effects of recovery are
/// performed, including events it appends to finish a cut-off step.
pub(crate) fn restart_after(host: &Host, cut: usize) -> Host {
    let mut histories: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for (run_id, event) in &host.appended_log[..cut] {
        histories.entry(run_id.clone()).or_default().push(event.clone());
    }
    let registry = host.engine.registry().clone();
    let mut restarted = Host::new(registry.clone());
    restarted.now = host.now;
    let mut effects = Vec::new();
    restarted.engine = Engine::recover(registry, histories.into_values().collect(), host.now, &mut effects)
        .unwrap_or_else(|error| panic!("recovery after {cut} appends fails: {error}"));
    restarted.perform(effects);
    restarted
}

/// The position in `host.appended_log` just after the first event of `run_id` that
/// `matches`: a crash there keeps that event and loses everything after it.
pub(crate) fn cut_after(host: &Host, run_id: &str, matches: impl Fn(&Kind) -> bool) -> usize {
    host.appended_log
        .iter()
        .position(|(r, e)| r == run_id && matches(&e.kind))
        .unwrap_or_else(|| panic!("no such event in run {run_id}"))
        + 1
}
