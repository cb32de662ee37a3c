//! Histories: the append-only record of a run, and its file format.
//!
//! Owns `Event`, the split between *input* events (what the world told the run) and
//! *command* events (what the workflow code decided), the `tempest-history/1` JSON format,
//! and the one-line-per-event rendering used by snapshots and tools. It never decides
//! anything: deciding is the machine's and the run state's job.

use crate::activity::{Cause, Failure, Options};
use crate::time::Time;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// A JSON value an event carries (a run's input, an activity's input or output, a signal's
/// payload), kept as its compact JSON text.
///
/// Text, not a parsed `serde_json::Value`: a conversation payload grows with every agent turn,
/// and as a `Value` tree it costs an allocation per string and per object (a B-tree map),
/// to build, to compare on replay, to digest and to drop. As text it is one allocation, one
/// `memcmp` and one free; it is parsed only where code reads it (`decode`). Shared, not
/// copied: an event is cloned into the store, its inbox, its records, workflow tasks and
/// replays, so a clone is a reference count.
///
/// It reads and writes as the JSON value it holds (in a history file it is that value, not a
/// string). Equality is equality of the values: two texts that differ only in key order or
/// spacing (a history file written by another tool, or by an older build that sorted keys)
/// are equal. Equal texts, the common case, never need parsing.
#[derive(Clone)]
pub struct Payload(Arc<RawValue>);

impl Payload {
    /// The payload of `value` as `serde_json` writes it.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Payload, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(|raw| Payload(Arc::from(raw)))
    }

    /// JSON `null`.
    pub fn null() -> Payload {
        Payload::from(&Value::Null)
    }

    /// Reads the payload as a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.json())
    }

    /// The payload as a `Value`, for code that inspects it generically.
    pub fn to_value(&self) -> Value {
        // The text was written by `serde_json` (from a value it serialized, or a value it
        // parsed), so it always parses back.
        self.decode().unwrap_or(Value::Null)
    }

    /// The compact JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }
}

impl From<&Value> for Payload {
    fn from(value: &Value) -> Payload {
        // Serializing a `Value` cannot fail: its map keys are strings.
        Payload::encode(value).expect("a JSON value serializes")
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Payload {
        Payload::from(&value)
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || self.json() == other.json()
            || matches!((self.decode::<Value>(), other.decode::<Value>()), (Ok(a), Ok(b)) if a == b)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    /// Through a `Value`, so any deserializer works (a history arrives as a file, or inside
    /// an HTTP body already parsed), and the text comes out compact whatever the input's
    /// spacing was.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Payload, D::Error> {
        Value::deserialize(deserializer).map(Payload::from)
    }
}

/// The format tag written into every history file.
pub const FORMAT: &str = "tempest-history/1";

/// One entry of a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 0-based position in the history; equal to the event's place in the list.
    pub index: u64,
    /// Engine time at which the event was appended, in ms.
    pub time_ms: Time,
    #[serde(flatten)]
    pub kind: Kind,
}

/// Where a child run reports back to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    pub workflow_id: String,
    pub run_id: String,
    pub seq: u32,
}

/// A value the workflow read that replay must return unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "marker", rename_all = "snake_case")]
pub enum Marker {
    Random {
        value: u64,
    },
    Uuid {
        value: String,
    },
    /// The run took the new code path of patch `patch_id`.
    Patch {
        patch_id: String,
    },
}

/// How a child run ended, as its parent sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChildOutcome {
    Completed { output: Payload },
    Failed { error: String },
    Canceled,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    // Input events: the world speaking to the run.
    WorkflowStarted {
        workflow_type: String,
        workflow_id: String,
        run_id: String,
        input: Payload,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<Parent>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        continued_from: Option<String>,
    },
    ActivityCompleted {
        seq: u32,
        attempt: u32,
        output: Payload,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
    },
    /// One attempt failed and another is due at `retry_at_ms`; the workflow does not see it.
    ActivityAttemptFailed {
        seq: u32,
        attempt: u32,
        failure: Failure,
        retry_at_ms: Time,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
    },
    ActivityFailed {
        seq: u32,
        attempt: u32,
        cause: Cause,
        failure: Failure,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
    },
    TimerFired {
        seq: u32,
    },
    SignalReceived {
        signal_id: String,
        name: String,
        payload: Payload,
    },
    CancelRequested {
        reason: String,
    },
    ChildCompleted {
        seq: u32,
        outcome: ChildOutcome,
    },
    // Command events: decisions of the workflow code, matched on replay.
    ActivityScheduled {
        seq: u32,
        activity_type: String,
        input: Payload,
        idempotency_key: String,
        options: Options,
    },
    TimerStarted {
        seq: u32,
        duration_ms: u64,
        fire_at_ms: Time,
    },
    ChildStarted {
        seq: u32,
        workflow_type: String,
        workflow_id: String,
        input: Payload,
    },
    MarkerRecorded {
        seq: u32,
        #[serde(flatten)]
        marker: Marker,
    },
    WorkflowCompleted {
        output: Payload,
    },
    WorkflowFailed {
        error: String,
    },
    WorkflowCanceled,
    WorkflowContinuedAsNew {
        input: Payload,
        next_run_id: String,
    },
}

impl Kind {
    /// The snake_case name used in files, renderings and debugger filters.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::WorkflowStarted { .. } => "workflow_started",
            Kind::ActivityCompleted { .. } => "activity_completed",
            Kind::ActivityAttemptFailed { .. } => "activity_attempt_failed",
            Kind::ActivityFailed { .. } => "activity_failed",
            Kind::TimerFired { .. } => "timer_fired",
            Kind::SignalReceived { .. } => "signal_received",
            Kind::CancelRequested { .. } => "cancel_requested",
            Kind::ChildCompleted { .. } => "child_completed",
            Kind::ActivityScheduled { .. } => "activity_scheduled",
            Kind::TimerStarted { .. } => "timer_started",
            Kind::ChildStarted { .. } => "child_started",
            Kind::MarkerRecorded { .. } => "marker_recorded",
            Kind::WorkflowCompleted { .. } => "workflow_completed",
            Kind::WorkflowFailed { .. } => "workflow_failed",
            Kind::WorkflowCanceled => "workflow_canceled",
            Kind::WorkflowContinuedAsNew { .. } => "workflow_continued_as_new",
        }
    }

    /// Commands come from workflow code and are matched on replay; the rest are inputs.
    pub fn is_command(&self) -> bool {
        match self {
            Kind::ActivityScheduled { .. }
            | Kind::TimerStarted { .. }
            | Kind::ChildStarted { .. }
            | Kind::MarkerRecorded { .. }
            | Kind::WorkflowCompleted { .. }
            | Kind::WorkflowFailed { .. }
            | Kind::WorkflowCanceled
            | Kind::WorkflowContinuedAsNew { .. } => true,
            Kind::WorkflowStarted { .. }
            | Kind::ActivityCompleted { .. }
            | Kind::ActivityAttemptFailed { .. }
            | Kind::ActivityFailed { .. }
            | Kind::TimerFired { .. }
            | Kind::SignalReceived { .. }
            | Kind::CancelRequested { .. }
            | Kind::ChildCompleted { .. } => false,
        }
    }

    /// Whether the workflow code must run to take this input in. An attempt failure that the
    /// store will retry changes nothing the code can see (the activity is still open, the
    /// code still waits on it), so it needs no workflow task of its own: it waits in the
    /// inbox and enters the history, in its place, with the next input that does wake the
    /// code. Under a storm of 429s this saves a workflow task per failed attempt.
    pub fn wakes_workflow(&self) -> bool {
        !self.is_command() && !matches!(self, Kind::ActivityAttemptFailed { .. })
    }

    /// A run ends with exactly one of these.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Kind::WorkflowCompleted { .. }
                | Kind::WorkflowFailed { .. }
                | Kind::WorkflowCanceled
                | Kind::WorkflowContinuedAsNew { .. }
        )
    }

    /// Whether the event records a failure (for the debugger's "next failure").
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Kind::ActivityAttemptFailed { .. }
                | Kind::ActivityFailed { .. }
                | Kind::WorkflowFailed { .. }
                | Kind::ChildCompleted { outcome: ChildOutcome::Failed { .. }, .. }
        )
    }

    /// The command sequence number, for events that carry one.
    pub fn seq(&self) -> Option<u32> {
        match self {
            Kind::ActivityCompleted { seq, .. }
            | Kind::ActivityAttemptFailed { seq, .. }
            | Kind::ActivityFailed { seq, .. }
            | Kind::TimerFired { seq }
            | Kind::ChildCompleted { seq, .. }
            | Kind::ActivityScheduled { seq, .. }
            | Kind::TimerStarted { seq, .. }
            | Kind::ChildStarted { seq, .. }
            | Kind::MarkerRecorded { seq, .. } => Some(*seq),
            Kind::WorkflowStarted { .. }
            | Kind::SignalReceived { .. }
            | Kind::CancelRequested { .. }
            | Kind::WorkflowCompleted { .. }
            | Kind::WorkflowFailed { .. }
            | Kind::WorkflowCanceled
            | Kind::WorkflowContinuedAsNew { .. } => None,
        }
    }

    /// Whether a command the code issued now is the same decision as a recorded one.
    /// Activities compare type and input (not options, so a retry-policy change is safe);
    /// timers compare only that they are timers (a changed duration does not break runs in
    /// flight, as in Temporal); everything else compares whole.
    pub fn same_command(recorded: &Kind, issued: &Kind) -> bool {
        match (recorded, issued) {
            (
                Kind::ActivityScheduled { seq: a, activity_type: ta, input: ia, .. },
                Kind::ActivityScheduled { seq: b, activity_type: tb, input: ib, .. },
            ) => a == b && ta == tb && ia == ib,
            (Kind::TimerStarted { seq: a, .. }, Kind::TimerStarted { seq: b, .. }) => a == b,
            (Kind::MarkerRecorded { seq: a, marker: ma }, Kind::MarkerRecorded { seq: b, marker: mb }) => {
                a == b
                    && match (ma, mb) {
                        (Marker::Random { .. }, Marker::Random { .. }) | (Marker::Uuid { .. }, Marker::Uuid { .. }) => {
                            true
                        }
                        (Marker::Patch { patch_id: pa }, Marker::Patch { patch_id: pb }) => pa == pb,
                        _ => false,
                    }
            }
            (Kind::WorkflowContinuedAsNew { input: a, .. }, Kind::WorkflowContinuedAsNew { input: b, .. }) => a == b,
            (recorded, issued) => recorded == issued,
        }
    }
}

fn compact(payload: &Payload) -> String {
    let text = payload.json();
    const LEN_MAX: usize = 120;
    if text.len() <= LEN_MAX {
        return text.to_owned();
    }
    let mut cut = LEN_MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        let worker_suffix = |w: &Option<String>| w.as_ref().map(|w| format!(" worker={w}")).unwrap_or_default();
        match self {
            Kind::WorkflowStarted { workflow_type, workflow_id, run_id, input, parent, continued_from } => {
                write!(f, " {workflow_type} id={workflow_id} run={run_id} input={}", compact(input))?;
                if let Some(p) = parent {
                    write!(f, " parent={}/{}#{}", p.workflow_id, p.run_id, p.seq)?;
                }
                if let Some(c) = continued_from {
                    write!(f, " continued_from={c}")?;
                }
                Ok(())
            }
            Kind::ActivityCompleted { seq, attempt, output, worker } => {
                write!(f, " seq={seq} attempt={attempt} output={}{}", compact(output), worker_suffix(worker))
            }
            Kind::ActivityAttemptFailed { seq, attempt, failure, retry_at_ms, worker } => write!(
                f,
                " seq={seq} attempt={attempt} failure=({failure}) retry_at={retry_at_ms}{}",
                worker_suffix(worker)
            ),
            Kind::ActivityFailed { seq, attempt, cause, failure, worker } => {
                write!(f, " seq={seq} attempt={attempt} cause={cause:?} failure=({failure}){}", worker_suffix(worker))
            }
            Kind::TimerFired { seq } => write!(f, " seq={seq}"),
            Kind::SignalReceived { signal_id, name, payload } => {
                write!(f, " {name} id={signal_id} payload={}", compact(payload))
            }
            Kind::CancelRequested { reason } => write!(f, " reason={reason:?}"),
            Kind::ChildCompleted { seq, outcome } => match outcome {
                ChildOutcome::Completed { output } => {
                    write!(f, " seq={seq} completed output={}", compact(output))
                }
                ChildOutcome::Failed { error } => write!(f, " seq={seq} failed error={error:?}"),
                ChildOutcome::Canceled => write!(f, " seq={seq} canceled"),
            },
            Kind::ActivityScheduled { seq, activity_type, input, idempotency_key, .. } => {
                write!(f, " seq={seq} {activity_type} input={} key={idempotency_key}", compact(input))
            }
            Kind::TimerStarted { seq, duration_ms, fire_at_ms } => {
                write!(f, " seq={seq} duration_ms={duration_ms} fire_at={fire_at_ms}")
            }
            Kind::ChildStarted { seq, workflow_type, workflow_id, input } => {
                write!(f, " seq={seq} {workflow_type} id={workflow_id} input={}", compact(input))
            }
            Kind::MarkerRecorded { seq, marker } => match marker {
                Marker::Random { value } => write!(f, " seq={seq} random={value}"),
                Marker::Uuid { value } => write!(f, " seq={seq} uuid={value}"),
                Marker::Patch { patch_id } => write!(f, " seq={seq} patch={patch_id}"),
            },
            Kind::WorkflowCompleted { output } => write!(f, " output={}", compact(output)),
            Kind::WorkflowFailed { error } => write!(f, " error={error:?}"),
            Kind::WorkflowCanceled => Ok(()),
            Kind::WorkflowContinuedAsNew { input, next_run_id } => {
                write!(f, " next_run={next_run_id} input={}", compact(input))
            }
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:<3} {} {}", self.index, self.time_ms, self.kind)
    }
}

/// A whole history as stored in a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub format: String,
    pub workflow_id: String,
    pub run_id: String,
    pub workflow_type: String,
    pub events: Vec<Event>,
}

/// Why a history file could not be read. Bad input is an error, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not valid history JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown history format {found:?}; this build reads {FORMAT:?}")]
    Format { found: String },
    #[error("history is empty: it must start with workflow_started")]
    Empty,
    #[error("event {index}: {detail}")]
    Malformed { index: u64, detail: String },
}

impl History {
    /// Wraps events of one run; the first must be `workflow_started`.
    pub fn new(events: Vec<Event>) -> History {
        let Some(Event { kind: Kind::WorkflowStarted { workflow_type, workflow_id, run_id, .. }, .. }) = events.first()
        else {
            panic!("a history starts with workflow_started");
        };
        History {
            format: FORMAT.to_owned(),
            workflow_id: workflow_id.clone(),
            run_id: run_id.clone(),
            workflow_type: workflow_type.clone(),
            events,
        }
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("histories serialize");
        text.push('\n');
        text
    }

    /// Parses and validates a history: format tag, header, and well-formed events.
    pub fn from_json(text: &str) -> Result<History, Error> {
        // Read the format tag first, so a future format is reported as such and not as a
        // confusing field error.
        let raw: Value = serde_json::from_str(text)?;
        match raw.get("format").and_then(Value::as_str) {
            Some(FORMAT) => {}
            Some(other) => return Err(Error::Format { found: other.to_owned() }),
            None => return Err(Error::Format { found: "<missing>".to_owned() }),
        }
        let history: History = serde_json::from_value(raw)?;
        history.validate()?;
        Ok(history)
    }

    /// Checks the header against the first event and every event's well-formedness.
    pub fn validate(&self) -> Result<(), Error> {
        let first = self.events.first().ok_or(Error::Empty)?;
        let Kind::WorkflowStarted { workflow_type, workflow_id, run_id, .. } = &first.kind else {
            return Err(Error::Malformed {
                index: 0,
                detail: format!("first event is {}, not workflow_started", first.kind.name()),
            });
        };
        if (workflow_type, workflow_id, run_id) != (&self.workflow_type, &self.workflow_id, &self.run_id) {
            return Err(Error::Malformed { index: 0, detail: "header does not match workflow_started".to_owned() });
        }
        let mut state = crate::run::RunState::default();
        for event in &self.events {
            state.apply(event).map_err(|detail| Error::Malformed { index: event.index, detail })?;
        }
        Ok(())
    }

    /// One line per event, as used by snapshots and `tempest debug`.
    pub fn render(&self) -> String {
        render(&self.events)
    }
}

pub fn render(events: &[Event]) -> String {
    let mut out = String::new();
    for event in events {
        out.push_str(&event.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Serialize)]
    struct Message {
        role: &'static str,
        content: &'static str,
    }

    #[test]
    fn payload_keeps_the_text_serde_writes_and_reads_back_as_the_value() {
        let payload = Payload::encode(&Message { role: "user", content: "say \"hi\"" }).unwrap();
        assert_eq!(payload.json(), r#"{"role":"user","content":"say \"hi\""}"#);
        assert_eq!(payload.to_value(), json!({ "role": "user", "content": "say \"hi\"" }));
        // In a file a payload is the JSON value itself, not a string holding it.
        let event = Kind::WorkflowCompleted { output: payload.clone() };
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(text, r#"{"type":"workflow_completed","output":{"role":"user","content":"say \"hi\""}}"#);
        assert_eq!(serde_json::from_str::<Kind>(&text).unwrap(), event);
    }

    #[test]
    fn payloads_are_equal_when_their_values_are() {
        let declared = Payload::encode(&Message { role: "user", content: "hi" }).unwrap();
        // What a history file written with sorted keys and indentation holds.
        let from_file: Payload = serde_json::from_str("{\n  \"content\": \"hi\",\n  \"role\": \"user\"\n}").unwrap();
        assert_eq!(from_file.json(), r#"{"content":"hi","role":"user"}"#, "read payloads are compact");
        assert_ne!(declared.json(), from_file.json());
        assert_eq!(declared, from_file);
        assert_ne!(declared, Payload::from(json!({ "role": "user", "content": "bye" })));
        assert_ne!(Payload::from(json!(1)), Payload::from(json!(1.0)), "JSON tells 1 and 1.0 apart");
    }
}
