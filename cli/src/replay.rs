//! `tempest replay`: replays recorded histories against today's workflow code.
//!
//! Reads history files (or every `.json` file under a directory), runs the workflow code of
//! this build's registry against each, and checks that it issues exactly the recorded
//! commands. It reports one line per good file on stdout and every problem on stderr, and goes
//! on to the next file after a bad one. It never writes a history and never runs an activity:
//! replay only re-decides.

use crate::Outcome;
use serde_json::error::Category;
use std::fmt;
use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use tempest_engine::{history, machine, History, Machine, Registry};

/// Why one file did not replay (or, for the commands that only read histories, load).
#[derive(Debug)]
pub(crate) enum Error {
    Read(io::Error),
    Empty,
    Truncated(serde_json::Error),
    NotJson(serde_json::Error),
    /// Valid JSON of the wrong shape (a missing or mistyped field).
    Shape(serde_json::Error),
    NotHistory(history::Error),
    UnknownWorkflowType {
        workflow_type: String,
        known: Vec<String>,
    },
    Nondeterminism(machine::Nondeterminism),
    Machine(machine::Error),
    Panicked(String),
}

impl Error {
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            Error::Read(_)
            | Error::Empty
            | Error::Truncated(_)
            | Error::NotJson(_)
            | Error::Shape(_)
            | Error::NotHistory(_)
            | Error::UnknownWorkflowType { .. } => Outcome::BadInput,
            Error::Nondeterminism(_) | Error::Machine(_) | Error::Panicked(_) => Outcome::Failed,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Read(error) => write!(f, "cannot read: {error}"),
            Error::Empty => write!(f, "file is empty, not a history"),
            Error::Truncated(error) => write!(f, "truncated JSON ({error})"),
            Error::NotJson(error) => write!(f, "not JSON ({error})"),
            Error::Shape(error) => write!(f, "not a valid history: {error}"),
            Error::NotHistory(error @ history::Error::Format { .. }) => write!(f, "{error}"),
            Error::NotHistory(error) => write!(f, "not a valid history: {error}"),
            Error::UnknownWorkflowType { workflow_type, known } => write!(
                f,
                "workflow type {workflow_type:?} is not registered in this build (registered: {})",
                known.join(", ")
            ),
            Error::Nondeterminism(n) => write!(
                f,
                "replay diverges: run {} at event {}\n  recorded event:    {}\n  code now issues:   {}",
                n.run_id, n.event_index, n.recorded, n.issued
            ),
            Error::Machine(error) => write!(f, "replay failed: {error}"),
            Error::Panicked(message) => {
                write!(f, "replay panicked, a bug in tempest or in the workflow code: {message}")
            }
        }
    }
}

/// What a good file replayed to.
struct Replayed {
    run_id: String,
    event_count: usize,
}

/// Replays every history named by `paths`; returns the worst outcome of all files.
pub(crate) fn run(
    registry: &Registry,
    paths: &[PathBuf],
    out: &mut impl Write,
    err: &mut impl Write,
) -> io::Result<Outcome> {
    let mut outcome = Outcome::Ok;
    for path in paths {
        let files = match history_files(path) {
            Ok(files) => files,
            Err(message) => {
                writeln!(err, "tempest replay: {}: {message}", path.display())?;
                outcome = outcome.max(Outcome::BadInput);
                continue;
            }
        };
        for file in files {
            match replay_file(registry, &file) {
                Ok(replayed) => {
                    writeln!(out, "ok {} run={} events={}", file.display(), replayed.run_id, replayed.event_count)?
                }
                Err(error) => {
                    writeln!(err, "tempest replay: {}: {error}", file.display())?;
                    outcome = outcome.max(error.outcome());
                }
            }
        }
    }
    Ok(outcome)
}

/// The files a path names: itself, or the `.json` files under a directory, sorted.
pub(crate) fn history_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    collect_json_files(path, &mut files).map_err(|e| format!("cannot list: {e}"))?;
    if files.is_empty() {
        return Err("directory holds no .json history files".to_owned());
    }
    files.sort();
    Ok(files)
}

fn collect_json_files(dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_json_files(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    Ok(())
}

/// Reads and validates one history file; every way it can be bad is its own error.
pub(crate) fn load_history(path: &Path) -> Result<History, Error> {
    let text = std::fs::read_to_string(path).map_err(Error::Read)?;
    if text.trim().is_empty() {
        return Err(Error::Empty);
    }
    History::from_json(&text).map_err(|error| match error {
        history::Error::Json(json) => match json.classify() {
            Category::Eof => Error::Truncated(json),
            Category::Syntax | Category::Io => Error::NotJson(json),
            Category::Data => Error::Shape(json),
        },
        other => Error::NotHistory(other),
    })
}

fn replay_file(registry: &Registry, path: &Path) -> Result<Replayed, Error> {
    let history = load_history(path)?;
    if !registry.contains(&history.workflow_type) {
        return Err(Error::UnknownWorkflowType {
            workflow_type: history.workflow_type,
            known: registry.workflow_types().map(str::to_owned).collect(),
        });
    }
    // A panic while replaying is a bug, but one bad file must not hide the verdict on the
    // others, so it is reported like a failed replay and the next file goes on.
    let replayed = panic::catch_unwind(AssertUnwindSafe(|| Machine::replay(registry, &history.events).map(|_| ())));
    match replayed {
        Ok(Ok(())) => Ok(Replayed { run_id: history.run_id, event_count: history.events.len() }),
        Ok(Err(machine::Error::Nondeterminism(n))) => Err(Error::Nondeterminism(n)),
        Ok(Err(error)) => Err(Error::Machine(error)),
        Err(payload) => Err(Error::Panicked(panic_message(payload.as_ref()))),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "<no message>".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tempest_engine::testing::Host;

    /// A scratch directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("tempest-replay-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The history of one finished `hello_llm` run, as JSON.
    fn hello_history() -> String {
        let mut host = Host::new(tempest_scenarios::registry());
        let run_id = host.start("hello_llm", "wf-hello", json!({ "prompt": "hi" }));
        let task = host.task("llm");
        host.complete(&task, json!("hello"));
        host.engine.history(&run_id).unwrap().to_json()
    }

    fn replay(paths: &[PathBuf]) -> (Outcome, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let outcome = run(&tempest_scenarios::registry(), paths, &mut out, &mut err).unwrap();
        (outcome, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[test]
    fn good_history_prints_ok_line() {
        let scratch = Scratch::new("good");
        let file = scratch.write("hello.json", &hello_history());
        let (outcome, out, err) = replay(std::slice::from_ref(&file));
        assert_eq!(outcome, Outcome::Ok, "{err}");
        let run_id = tempest_engine::engine::first_run_id("wf-hello");
        assert_eq!(out, format!("ok {} run={run_id} events=4\n", file.display()));
    }

    #[test]
    fn directory_replays_its_json_files_in_order() {
        let scratch = Scratch::new("dir");
        std::fs::create_dir(scratch.0.join("nested")).unwrap();
        scratch.write("b.json", &hello_history());
        scratch.write("nested/a.json", &hello_history());
        scratch.write("notes.txt", "not a history");
        let (outcome, out, err) = replay(std::slice::from_ref(&scratch.0));
        assert_eq!(outcome, Outcome::Ok, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].contains("b.json") && lines[1].contains("a.json"));
    }

    #[test]
    fn changed_code_is_a_replay_failure_naming_event_and_both_sides() {
        let scratch = Scratch::new("nondeterminism");
        let changed = hello_history().replace("\"llm\"", "\"llm_v2\"");
        let file = scratch.write("changed.json", &changed);
        let (outcome, out, err) = replay(&[file]);
        assert_eq!(outcome, Outcome::Failed);
        assert_eq!(out, "");
        assert!(err.contains("changed.json: replay diverges: run r"), "{err}");
        assert!(err.contains("at event 1"), "{err}");
        assert!(err.contains("activity_scheduled seq=1 llm_v2"), "{err}");
        assert!(err.contains("code now issues:   activity_scheduled seq=1 llm "), "{err}");
    }

    #[test]
    fn bad_files_are_bad_input_with_a_clear_message() {
        let scratch = Scratch::new("bad");
        let good = hello_history();
        let cases = [
            ("empty.json", String::new(), "file is empty"),
            ("text.json", "hello".to_owned(), "not JSON (expected value at line 1"),
            (
                "truncated.json",
                good[..good.len() / 2].to_owned(),
                "truncated JSON (EOF while parsing",
            ),
            (
                "future.json",
                good.replace("tempest-history/1", "tempest-history/9"),
                "unknown history format \"tempest-history/9\"",
            ),
            (
                "unknown_type.json",
                good.replace("hello_llm", "goodbye_llm"),
                "workflow type \"goodbye_llm\" is not registered in this build (registered: agent_loop, hello_llm, human_approval, long_sleep, multi_agent, rag_ingest, researcher, reviewer, saga_booking, tool_agent, validated_output, writer)",
            ),
            (
                "shape.json",
                r#"{"format": "tempest-history/1"}"#.to_owned(),
                "not a valid history: missing field `workflow_id`",
            ),
            (
                "index.json",
                good.replace("\"index\": 2", "\"index\": 5"),
                "not a valid history: event 5: index 5 where 2 was expected",
            ),
        ];
        for (name, text, expected) in cases {
            let file = scratch.write(name, &text);
            let (outcome, out, err) = replay(&[file]);
            assert_eq!(outcome, Outcome::BadInput, "{name}: {err}");
            assert_eq!(out, "", "{name}");
            assert!(err.contains(&format!("{name}: {expected}")), "{name}: {err}");
        }
    }

    #[test]
    fn missing_file_and_empty_directory_are_bad_input_and_others_still_replay() {
        let scratch = Scratch::new("missing");
        let good = scratch.write("good.json", &hello_history());
        let empty_dir = scratch.0.join("empty");
        std::fs::create_dir(&empty_dir).unwrap();
        let missing = scratch.0.join("missing.json");
        let (outcome, out, err) = replay(&[missing, empty_dir, good]);
        assert_eq!(outcome, Outcome::BadInput);
        assert!(out.starts_with("ok "), "{out}");
        assert!(err.contains("missing.json: cannot read: No such file"), "{err}");
        assert!(err.contains("empty: directory holds no .json history files"), "{err}");
    }

    #[test]
    fn bad_input_outranks_a_failed_replay() {
        let scratch = Scratch::new("rank");
        let changed = scratch.write("changed.json", &hello_history().replace("\"llm\"", "\"x\""));
        let bad = scratch.write("bad.json", "{");
        assert_eq!(replay(&[changed, bad]).0, Outcome::BadInput);
    }
}
