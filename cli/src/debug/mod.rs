//! `tempest debug`: step through one recorded history, in a terminal UI or as plain text.
//!
//! Owns loading the history for the debugger (through `replay`'s loader, so a bad file reads
//! the same everywhere), the `--at N` text form of the detail and state panes, and starting
//! the terminal UI (`tui`). The panes themselves are `model`'s. It never writes the history.

pub(crate) mod model;
pub(crate) mod tui;

use crate::replay;
use std::io::Write;
use std::path::Path;

pub(crate) use model::Timeline;

/// Why the debugger cannot show what was asked (exit 2).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("{path}: {error}")]
    Load { path: String, error: replay::Error },
    #[error("{path}: event {at} is beyond the history, whose events are 0..={last}")]
    Beyond { path: String, at: u64, last: usize },
}

pub(crate) fn load(path: &Path) -> Result<Timeline, Error> {
    let history =
        replay::load_history(path).map_err(|error| Error::Load { path: path.display().to_string(), error })?;
    Ok(Timeline::new(history))
}

/// `tempest debug FILE --at N`: the detail and state panes of event N, as text.
pub(crate) fn print_at(path: &Path, at: u64, out: &mut impl Write) -> anyhow::Result<()> {
    let timeline = load(path)?;
    let index = usize::try_from(at).ok().filter(|index| *index < timeline.len());
    let Some(index) = index else {
        return Err(Error::Beyond { path: path.display().to_string(), at, last: timeline.len() - 1 }.into());
    };
    writeln!(out, "== event ==")?;
    for line in timeline.detail_lines(index) {
        writeln!(out, "{line}")?;
    }
    writeln!(out, "== state ==")?;
    for line in timeline.state_lines(index) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `tempest debug FILE`: the terminal UI.
pub(crate) fn interactive(path: &Path) -> anyhow::Result<()> {
    let timeline = load(path)?;
    let history_path = path.to_owned();
    tui::run(tui::App::new(timeline, Some(history_path)))
}

#[cfg(test)]
pub(crate) mod tests {
    /// The first run of a world of `scenario` under `seed` without faults, as recorded.
    pub(crate) fn recorded(scenario: &str, seed: u64) -> History {
        use tempest_sim::world::{self, Options};
        let scenario = tempest_scenarios::find(scenario).expect("a built-in scenario");
        let options = Options { keep_histories: true, plan: tempest_sim::FaultPlan::none(), ..Options::swarm(seed) };
        let outcome = world::run_catching(scenario.as_ref(), options);
        assert!(outcome.passed(), "{:?}", outcome.failure);
        outcome.histories.into_iter().next().expect("a run")
    }

    use serde_json::json;
    use tempest_engine::activity::Options;
    use tempest_engine::history::{Event, History, Kind};
    use tempest_engine::{Failure, Time};

    /// A well-formed history of `len` events: activities one after another, every fifth
    /// attempt rate limited once, a timer now and then. Not replayable by any workflow code;
    /// the debugger only folds it.
    pub(crate) fn long_history(len: usize) -> History {
        let mut events = vec![Event {
            index: 0,
            time_ms: Time(0),
            kind: Kind::WorkflowStarted {
                workflow_type: "long_loop".to_owned(),
                workflow_id: "wf-long".to_owned(),
                run_id: "r-long".to_owned(),
                input: json!({ "task": "long" }).into(),
                parent: None,
                continued_from: None,
            },
        }];
        let mut seq = 0;
        let mut attempt = 1;
        let mut time = 0;
        while events.len() < len {
            time += 1_000;
            let open = matches!(
                events.last().map(|e| &e.kind),
                Some(Kind::ActivityScheduled { .. } | Kind::ActivityAttemptFailed { .. })
            );
            let kind = if open && attempt == 1 && seq % 5 == 0 {
                attempt = 2;
                Kind::ActivityAttemptFailed {
                    seq,
                    attempt: 1,
                    failure: Failure::RateLimited { retry_after_ms: Some(2_000) },
                    retry_at_ms: Time(time + 2_000),
                    worker: Some("worker-1".to_owned()),
                }
            } else if open {
                let done = Kind::ActivityCompleted {
                    seq,
                    attempt,
                    output: json!(format!("answer {seq}")).into(),
                    worker: Some("worker-2".to_owned()),
                };
                attempt = 1;
                done
            } else {
                seq += 1;
                Kind::ActivityScheduled {
                    seq,
                    activity_type: if seq % 2 == 0 { "llm_turn" } else { "call_tool" }.to_owned(),
                    input: json!({ "turn": seq }).into(),
                    idempotency_key: format!("r-long:{seq}"),
                    options: Options::default(),
                }
            };
            events.push(Event { index: events.len() as u64, time_ms: Time(time), kind });
        }
        let history = History::new(events);
        history.validate().expect("the generator writes well-formed histories");
        history
    }
}
