//! `tempest report`: one self-contained HTML page of a run's timeline, or of a sweep.
//!
//! Owns reading what it is given (a history file, a directory of them with the fault logs
//! `tempest run --record` writes next to them, or a sweep summary from `tempest sweep --json`)
//! and rendering it: swimlanes for the workflow, each activity with its attempts, timers and
//! signals; the faults the simulator injected, marked where they happened; the content of any
//! event on a click. Everything is inline (CSS, script, data), so the page never fetches
//! anything. It never changes its inputs.

use crate::replay;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tempest_engine::history::{History, Kind};
use tempest_sim::FaultPlan;

/// The faults of one world, read from the fault log `tempest run --record` writes next to its
/// histories: the world's explicit fault plan (every fault it injected, with its time), which
/// `tempest run --plan` replays. Its extension is not `.json`, so `tempest replay DIR` passes
/// it by.
struct FaultLog {
    /// The file's name without extension: `SCENARIO-seedN`.
    world: String,
    faults: Vec<FaultMark>,
}

/// One injected fault, where the timeline marks it.
#[derive(Debug, Serialize)]
struct FaultMark {
    at_ms: u64,
    kind: String,
    detail: String,
}

/// The extension of fault log files.
pub(crate) const FAULT_LOG_EXTENSION: &str = "faults";

/// The fault log's path for a world's histories recorded in `dir`.
pub(crate) fn fault_log_path(dir: &Path, scenario: &str, seed: u64) -> PathBuf {
    dir.join(format!("{scenario}-seed{seed}.{FAULT_LOG_EXTENSION}"))
}

/// Why no report could be written (exit 2).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("{path}: {error}")]
    History { path: String, error: replay::Error },
    #[error("{path}: {message}")]
    Input { path: String, message: String },
}

/// What a page is made of.
enum Input {
    Runs { histories: Vec<(PathBuf, History)>, faults: Vec<FaultLog> },
    Sweep(Value),
}

/// Reads `path` and writes the page to `output`; returns what the page shows, in a line.
pub(crate) fn run(path: &Path, output: &Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let input = read(path)?;
    let (html, what) = match &input {
        Input::Runs { histories, faults } => {
            let events: usize = histories.iter().map(|(_, h)| h.events.len()).sum();
            let what = format!(
                "{} runs, {events} events, {} faults",
                histories.len(),
                faults.iter().map(|f| f.faults.len()).sum::<usize>()
            );
            (runs_page(&path.display().to_string(), histories, faults), what)
        }
        Input::Sweep(summary) => (sweep_page(&path.display().to_string(), summary), "a sweep summary".to_owned()),
    };
    std::fs::write(output, html).with_context(|| format!("cannot write {}", output.display()))?;
    Ok(what)
}

fn read(path: &Path) -> Result<Input, Error> {
    let input_error = |message: String| Error::Input { path: path.display().to_string(), message };
    let metadata = std::fs::metadata(path).map_err(|e| input_error(format!("cannot read: {e}")))?;
    if metadata.is_dir() {
        let files = replay::history_files(path).map_err(input_error)?;
        let mut histories = Vec::new();
        for file in files {
            let history = replay::load_history(&file)
                .map_err(|error| Error::History { path: file.display().to_string(), error })?;
            histories.push((file, history));
        }
        let mut faults = Vec::new();
        let entries = std::fs::read_dir(path).map_err(|e| input_error(format!("cannot list: {e}")))?;
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == FAULT_LOG_EXTENSION))
            .collect();
        logs.sort();
        for log in logs {
            faults.push(read_fault_log(&log)?);
        }
        return Ok(Input::Runs { histories, faults });
    }
    // A sweep summary is told apart by its fields; anything else must be a history, whose
    // loader names what is wrong with it (empty, truncated, wrong format, malformed).
    let text = std::fs::read_to_string(path).map_err(|e| input_error(format!("cannot read: {e}")))?;
    if let Ok(value) = serde_json::from_str::<Value>(&text) {
        if value.get("format").is_none() && value.get("seed_base").is_some() {
            for field in ["scenarios", "seeds", "passed", "failed", "faults"] {
                if value.get(field).is_none() {
                    return Err(input_error(format!("a sweep summary without its `{field}` field")));
                }
            }
            return Ok(Input::Sweep(value));
        }
    }
    let history =
        replay::load_history(path).map_err(|error| Error::History { path: path.display().to_string(), error })?;
    let mut faults = Vec::new();
    if let Some(log) = sibling_fault_log(path, &history) {
        faults.push(read_fault_log(&log)?);
    }
    Ok(Input::Runs { histories: vec![(path.to_owned(), history)], faults })
}

/// `{scenario}-seed{N}-{run_id}.json` has its world's faults in `{scenario}-seed{N}.faults`.
fn sibling_fault_log(path: &Path, history: &History) -> Option<PathBuf> {
    let stem = path.file_stem()?.to_str()?;
    let world = stem.strip_suffix(&format!("-{}", history.run_id))?;
    let log = path.with_file_name(format!("{world}.{FAULT_LOG_EXTENSION}"));
    log.exists().then_some(log)
}

fn read_fault_log(path: &Path) -> Result<FaultLog, Error> {
    let input_error = |message: String| Error::Input { path: path.display().to_string(), message };
    let text = std::fs::read_to_string(path).map_err(|e| input_error(format!("cannot read: {e}")))?;
    let plan = FaultPlan::from_json(&text).map_err(|e| input_error(format!("not a fault log (a fault plan): {e}")))?;
    let mut faults: Vec<FaultMark> = plan
        .schedule
        .iter()
        .flatten()
        .map(|fault| FaultMark {
            at_ms: fault.at_ms,
            kind: fault.kind.clone(),
            detail: match fault.duration_ms {
                Some(ms) => {
                    format!("decision {} of its kind, lasting {}", fault.nth, crate::debug::model::format_ms(ms))
                }
                None => format!("decision {} of its kind", fault.nth),
            },
        })
        .collect();
    faults.extend(plan.crashes.iter().map(|crash| FaultMark {
        at_ms: crash.at_ms,
        kind: "scheduled_crash".to_owned(),
        detail: crash.host.clone(),
    }));
    faults.sort_by(|a, b| (a.at_ms, &a.kind).cmp(&(b.at_ms, &b.kind)));
    let world = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(FaultLog { world, faults })
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON safe inside a `<script>` element.
fn script_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("values serialize").replace('<', "\\u003c").replace('>', "\\u003e")
}

const STYLE: &str = r#"
body { font: 13px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: 10px 16px; }
header h1 { font-size: 16px; margin: 0; }
main { padding: 12px 16px 260px; }
section.run { background: #fff; border: 1px solid #d5d9e0; border-radius: 6px; margin-bottom: 16px; padding: 8px 12px; }
section.run h2 { font-size: 14px; margin: 4px 0 8px; }
.lane { display: flex; align-items: center; border-top: 1px solid #eef0f3; min-height: 24px; }
.lane .label { width: 210px; flex: none; font-family: ui-monospace, monospace; font-size: 12px; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
.lane .track { position: relative; flex: 1; height: 22px; }
.ev { position: absolute; top: 4px; width: 12px; height: 12px; margin-left: -6px; border-radius: 50%; border: 1px solid #334; background: #7aa2f7; cursor: pointer; padding: 0; }
.ev.command { background: #9ece6a; }
.ev.failure { background: #f7768e; }
.ev.terminal { background: #1d2330; border-radius: 2px; }
.bar { position: absolute; top: 3px; height: 16px; background: #c0d3f7; border: 1px solid #6b8fd6; border-radius: 3px; font-size: 10px; overflow: hidden; white-space: nowrap; cursor: pointer; min-width: 4px; }
.bar.failed { background: #f9c5cf; border-color: #d9506a; }
.bar.open { background: repeating-linear-gradient(45deg, #eee, #eee 4px, #ddd 4px, #ddd 8px); }
.fault { position: absolute; top: 1px; width: 0; height: 0; margin-left: -7px; border-left: 7px solid transparent; border-right: 7px solid transparent; border-top: 14px solid #e0af68; cursor: pointer; }
.axis { font-size: 11px; color: #667; display: flex; justify-content: space-between; margin-left: 210px; }
table { border-collapse: collapse; margin: 6px 0 10px; }
td, th { border: 1px solid #e1e4ea; padding: 2px 8px; text-align: left; font-size: 12px; }
tr.event { cursor: pointer; }
tr.event:hover, tr.selected { background: #e8eefc; }
details > summary { cursor: pointer; margin: 6px 0; }
#detail { position: fixed; left: 0; right: 0; bottom: 0; height: 240px; overflow: auto; margin: 0; background: #1d2330; color: #e6e9ef; padding: 8px 16px; font: 12px/1.4 ui-monospace, monospace; white-space: pre-wrap; }
code { background: #eef0f3; padding: 1px 4px; border-radius: 3px; }
.failed-seed { color: #b3263e; }
"#;

const SCRIPT: &str = r#"
const data = JSON.parse(document.getElementById('report-data').textContent);
const detail = document.getElementById('detail');
function show(run, index) {
  const event = data.runs[run].events[index];
  document.querySelectorAll('tr.selected').forEach(r => r.classList.remove('selected'));
  const row = document.querySelector(`tr.event[data-run="${run}"][data-index="${index}"]`);
  if (row) row.classList.add('selected');
  detail.textContent = `run ${data.runs[run].run_id}  event ${index}\n` + JSON.stringify(event, null, 2);
}
function showFault(run, index) {
  const fault = data.runs[run].faults[index];
  detail.textContent = `fault injected by the simulator\n` + JSON.stringify(fault, null, 2);
}
document.body.dataset.ready = 'yes';
document.addEventListener('click', e => {
  const target = e.target.closest('[data-index]');
  if (!target) return;
  const run = Number(target.dataset.run);
  if (target.dataset.fault !== undefined) showFault(run, Number(target.dataset.index));
  else show(run, Number(target.dataset.index));
});
// A link to `#event-R-I` opens with event I of run R shown, as if clicked.
const linked = location.hash.match(/^#event-(\d+)-(\d+)$/);
if (linked) {
  const mark = document.querySelector(`.ev[data-run="${linked[1]}"][data-index="${linked[2]}"]`);
  if (mark) { mark.scrollIntoView(); mark.click(); }
}
"#;

/// Where each moment goes on the time axis. The axis is ordinal, each distinct moment gets
/// the same room, so a three-day wait for a human does not squash a burst of retries.
struct Axis {
    times: Vec<u64>,
}

impl Axis {
    fn new(mut times: Vec<u64>) -> Axis {
        times.sort_unstable();
        times.dedup();
        Axis { times }
    }

    /// Percent from the left for time `t` (between the neighbouring moments if not one).
    fn x(&self, t: u64) -> f64 {
        let slots = self.times.len().saturating_sub(1).max(1) as f64;
        let position = match self.times.binary_search(&t) {
            Ok(i) => i as f64,
            Err(0) => 0.0,
            Err(i) if i >= self.times.len() => slots,
            Err(i) => {
                let (a, b) = (self.times[i - 1], self.times[i]);
                (i - 1) as f64 + (t - a) as f64 / (b - a) as f64
            }
        };
        2.0 + 96.0 * position / slots
    }
}

/// One lane of a run: a label and what is drawn in its track.
#[derive(Default)]
struct Lane {
    label: String,
    track: String,
}

fn runs_page(source: &str, histories: &[(PathBuf, History)], fault_logs: &[FaultLog]) -> String {
    let faults: Vec<&FaultMark> = fault_logs.iter().flat_map(|log| &log.faults).collect();
    let mut data_runs = Vec::new();
    let mut body = String::new();
    for (run_index, (path, history)) in histories.iter().enumerate() {
        let first = history.events.first().map_or(0, |e| e.time_ms.as_ms());
        let last = history.events.last().map_or(0, |e| e.time_ms.as_ms());
        // Faults during the run's life; later ones cannot have touched it (the table below
        // lists every fault of the world).
        let run_faults: Vec<&FaultMark> =
            faults.iter().copied().filter(|f| f.at_ms >= first && f.at_ms <= last).collect();
        let mut times: Vec<u64> = history.events.iter().map(|e| e.time_ms.as_ms()).collect();
        times.extend(run_faults.iter().map(|f| f.at_ms));
        let axis = Axis::new(times);
        body.push_str(&run_section(run_index, path, history, &run_faults, &axis));
        data_runs.push(serde_json::json!({
            "run_id": history.run_id,
            "events": history.events,
            "faults": run_faults,
        }));
    }
    let mut fault_table = String::new();
    if !fault_logs.is_empty() {
        let _ = write!(fault_table, "<section class=\"run\"><h2>Faults injected by the simulator</h2><table><tr><th>world</th><th>at</th><th>fault</th><th>detail</th></tr>");
        for log in fault_logs {
            for fault in &log.faults {
                let _ = write!(
                    fault_table,
                    "<tr class=\"fault-row\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&log.world),
                    escape(&crate::debug::model::format_ms(fault.at_ms)),
                    escape(&fault.kind),
                    escape(&fault.detail)
                );
            }
        }
        fault_table.push_str("</table></section>");
    }
    page(
        &format!("tempest report: {source}"),
        &format!("{body}{fault_table}"),
        &script_json(&serde_json::json!({ "runs": data_runs })),
    )
}

fn run_section(run_index: usize, path: &Path, history: &History, faults: &[&FaultMark], axis: &Axis) -> String {
    let mut workflow = Lane { label: format!("workflow {}", history.workflow_type), ..Lane::default() };
    let mut signals = Lane { label: "signals".to_owned(), ..Lane::default() };
    let mut activities: BTreeMap<u32, Lane> = BTreeMap::new();
    let mut timers: BTreeMap<u32, Lane> = BTreeMap::new();
    let mut children: BTreeMap<u32, Lane> = BTreeMap::new();
    // For each open attempt: (seq) -> (attempt, started at).
    let mut attempt_start: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
    let end = history.events.last().map_or(0, |e| e.time_ms.as_ms());
    let closed = history.events.last().is_some_and(|e| e.kind.is_terminal());
    let dot = |index: u64, time: u64, kind: &Kind| -> String {
        let class = if kind.is_terminal() {
            "terminal"
        } else if kind.is_failure() {
            "failure"
        } else if kind.is_command() {
            "command"
        } else {
            "input"
        };
        format!(
            "<button class=\"ev {class}\" data-run=\"{run_index}\" data-index=\"{index}\" style=\"left:{:.2}%\" title=\"#{index} {}\"></button>",
            axis.x(time),
            escape(&kind.to_string())
        )
    };
    let bar = |index: u64, from: u64, to: u64, class: &str, label: &str| -> String {
        let (left, right) = (axis.x(from), axis.x(to));
        format!(
            "<div class=\"bar {class}\" data-run=\"{run_index}\" data-index=\"{index}\" style=\"left:{left:.2}%;width:{:.2}%\" title=\"{}\">{}</div>",
            (right - left).max(0.3),
            escape(label),
            escape(label)
        )
    };
    for event in &history.events {
        let time = event.time_ms.as_ms();
        let marker = dot(event.index, time, &event.kind);
        match &event.kind {
            Kind::ActivityScheduled { seq, activity_type, .. } => {
                let lane = activities.entry(*seq).or_default();
                lane.label = format!("activity {seq} {activity_type}");
                lane.track.push_str(&marker);
                attempt_start.insert(*seq, (1, time));
            }
            Kind::ActivityAttemptFailed { seq, attempt, failure, retry_at_ms, .. } => {
                let (_, started) = attempt_start.get(seq).copied().unwrap_or((*attempt, time));
                let lane = activities.entry(*seq).or_default();
                lane.track.push_str(&bar(
                    event.index,
                    started,
                    time,
                    "failed",
                    &format!("attempt {attempt}: {failure}"),
                ));
                lane.track.push_str(&marker);
                attempt_start.insert(*seq, (attempt + 1, retry_at_ms.as_ms().max(time)));
            }
            Kind::ActivityCompleted { seq, attempt, .. } | Kind::ActivityFailed { seq, attempt, .. } => {
                let (_, started) = attempt_start.remove(seq).unwrap_or((*attempt, time));
                let failed = matches!(event.kind, Kind::ActivityFailed { .. });
                let lane = activities.entry(*seq).or_default();
                let label = format!("attempt {attempt}{}", if failed { " failed, gave up" } else { "" });
                lane.track.push_str(&bar(event.index, started, time, if failed { "failed" } else { "" }, &label));
                lane.track.push_str(&marker);
            }
            Kind::TimerStarted { seq, fire_at_ms, duration_ms } => {
                let lane = timers.entry(*seq).or_default();
                lane.label = format!("timer {seq} ({})", crate::debug::model::format_ms(*duration_ms));
                let to = fire_at_ms.as_ms().min(end.max(time));
                lane.track.push_str(&bar(event.index, time, to, "", "sleeping"));
                lane.track.push_str(&marker);
            }
            Kind::TimerFired { seq } => timers.entry(*seq).or_default().track.push_str(&marker),
            Kind::SignalReceived { .. } => signals.track.push_str(&marker),
            Kind::ChildStarted { seq, workflow_type, workflow_id, .. } => {
                let lane = children.entry(*seq).or_default();
                lane.label = format!("child {seq} {workflow_type} {workflow_id}");
                lane.track.push_str(&marker);
            }
            Kind::ChildCompleted { seq, .. } => children.entry(*seq).or_default().track.push_str(&marker),
            _ => workflow.track.push_str(&marker),
        }
    }
    // Attempts still open when the history ends.
    for (seq, (attempt, started)) in &attempt_start {
        if let Some(lane) = activities.get_mut(seq) {
            let label =
                if closed { format!("attempt {attempt} never reported") } else { format!("attempt {attempt} open") };
            let index = history.events.len() as u64 - 1;
            lane.track.push_str(&bar(index, *started, end.max(*started), "open", &label));
        }
    }
    let mut fault_lane = Lane { label: "faults injected".to_owned(), ..Lane::default() };
    for (index, fault) in faults.iter().enumerate() {
        let _ = write!(
            fault_lane.track,
            "<div class=\"fault\" data-run=\"{run_index}\" data-fault=\"\" data-index=\"{index}\" style=\"left:{:.2}%\" title=\"{} at {}: {}\"></div>",
            axis.x(fault.at_ms),
            escape(&fault.kind),
            crate::debug::model::format_ms(fault.at_ms),
            escape(&fault.detail)
        );
    }
    let mut lanes = vec![workflow];
    lanes.extend(activities.into_values());
    lanes.extend(timers.into_values());
    lanes.extend(children.into_values());
    if !signals.track.is_empty() {
        lanes.push(signals);
    }
    if !faults.is_empty() {
        lanes.push(fault_lane);
    }
    let status = match history.events.last().map(|e| &e.kind) {
        Some(kind) if kind.is_terminal() => kind.name().to_owned(),
        _ => "still running".to_owned(),
    };
    let mut html = String::new();
    let _ = write!(
        html,
        "<section class=\"run\" id=\"run-{run_index}\"><h2>{} <small>{} · run {} · {} events · {status} · {}</small></h2>",
        escape(&history.workflow_id),
        escape(&history.workflow_type),
        escape(&history.run_id),
        history.events.len(),
        escape(&path.display().to_string())
    );
    let first = history.events.first().map_or(0, |e| e.time_ms.as_ms());
    let _ = write!(
        html,
        "<div class=\"axis\"><span>{}</span><span>time (each moment gets equal room)</span><span>{}</span></div>",
        crate::debug::model::format_ms(first),
        crate::debug::model::format_ms(end)
    );
    for lane in lanes {
        let _ = write!(
            html,
            "<div class=\"lane\"><div class=\"label\" title=\"{0}\">{0}</div><div class=\"track\">{1}</div></div>",
            escape(&lane.label),
            lane.track
        );
    }
    let _ = write!(
        html,
        "<details><summary>all {} events</summary><table><tr><th>#</th><th>time</th><th>event</th></tr>",
        history.events.len()
    );
    for event in &history.events {
        let _ = write!(
            html,
            "<tr class=\"event\" data-run=\"{run_index}\" data-index=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
            event.index,
            event.index,
            crate::debug::model::format_ms(event.time_ms.as_ms()),
            escape(&event.kind.to_string())
        );
    }
    html.push_str("</table></details></section>");
    html
}

fn page(title: &str, body: &str, data: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style></head>\n<body><header><h1>{title}</h1></header><main>{body}</main>\n<pre id=\"detail\">Click an event, an attempt or a fault to see its content.</pre>\n<script id=\"report-data\" type=\"application/json\">{data}</script>\n<script>{SCRIPT}</script></body></html>\n",
        title = escape(title)
    )
}

fn sweep_page(source: &str, summary: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut body = String::from("<section class=\"run\"><h2>Summary</h2><table>");
    for field in [
        "scenarios",
        "seed_base",
        "seeds",
        "passed",
        "runs_completed",
        "simulated_seconds",
        "wall_seconds",
        "seeds_per_second",
        "jobs",
    ] {
        if let Some(value) = summary.get(field) {
            let shown = match (field, value) {
                ("scenarios", Value::Array(items)) => items.iter().map(text).collect::<Vec<_>>().join(", "),
                ("seed_base", Value::Number(n)) => format!("{:#x}", n.as_u64().unwrap_or(0)),
                (_, value) => text(value),
            };
            let _ = write!(body, "<tr><th>{}</th><td>{}</td></tr>", escape(field), escape(&shown));
        }
    }
    let failed = summary.get("failed").and_then(Value::as_array).cloned().unwrap_or_default();
    let _ = write!(
        body,
        "<tr><th>failed</th><td class=\"{}\">{}</td></tr></table>",
        if failed.is_empty() { "" } else { "failed-seed" },
        failed.len()
    );
    if !failed.is_empty() {
        body.push_str("<p>Failing seeds: ");
        for (index, failure) in failed.iter().enumerate() {
            let _ = write!(
                body,
                "<a href=\"#failure-{index}\">{} seed {}</a> ",
                escape(&text(&failure["scenario"])),
                escape(&text(&failure["seed"]))
            );
        }
        body.push_str("</p>");
    }
    body.push_str("</section>");
    for (title, field) in [("Faults injected", "faults"), ("Sometimes", "sometimes")] {
        let _ = write!(
            body,
            "<section class=\"run\"><h2>{title}</h2><table class=\"{field}\"><tr><th>what</th><th>count</th></tr>"
        );
        if let Some(Value::Object(counts)) = summary.get(field) {
            for (name, count) in counts {
                let _ = write!(body, "<tr><td>{}</td><td>{}</td></tr>", escape(name), escape(&text(count)));
            }
        }
        body.push_str("</table></section>");
    }
    if !failed.is_empty() {
        body.push_str("<section class=\"run\"><h2>Failing seeds</h2>");
        for (index, failure) in failed.iter().enumerate() {
            let _ = write!(
                body,
                "<div class=\"failure\" id=\"failure-{index}\"><p class=\"failed-seed\">{} seed {}: <b>{}</b>: {}</p><p>rerun with: <code>{}</code></p><p>fault plan: <code>{}</code></p></div>",
                escape(&text(&failure["scenario"])),
                escape(&text(&failure["seed"])),
                escape(&text(&failure["check"])),
                escape(&text(&failure["message"])),
                escape(&text(&failure["repro"])),
                escape(&text(&failure["plan"]))
            );
        }
        body.push_str("</section>");
    }
    page(&format!("tempest sweep report: {source}"), &body, &script_json(&serde_json::json!({ "runs": [] })))
}
