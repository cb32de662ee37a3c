//! `tempest debug`, `fork` and `report` as people and scripts call them: on histories the
//! binary itself recorded, on bad input, in a real terminal (tmux) and in a real browser
//! (headless Chromium).
//!
//! Owns the end-to-end claims of the debugger issue: the text panes, the fork's summary and
//! its files, the report page being self-contained with every event in it, the terminal UI
//! reacting to keys, and exit code 2 with the file named for every kind of bad input. Tests
//! that need tmux or Chromium use them when installed, fail without them under
//! `TEMPEST_REQUIRE_TOOLS=1` (CI), and otherwise say loudly that they skipped that part.

mod common;

use common::{stderr, stdout, tempest, tool, Scratch};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Records `scenario` under `seed` into `dir/histories` and returns its history files.
fn record(dir: &Scratch, scenario: &str, seed: &str) -> Vec<PathBuf> {
    let output = tempest(dir, &["run", scenario, "--seed", seed, "--record", "histories"]);
    assert_eq!(output.status.code(), Some(0), "{}{}", stdout(&output), stderr(&output));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path("histories"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

fn event_count(file: &Path) -> usize {
    let history: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    history["events"].as_array().unwrap().len()
}

#[test]
fn debug_at_prints_the_event_and_the_run_state() {
    let dir = Scratch::new("at");
    let file = record(&dir, "agent_loop", "7").remove(0);
    let output = tempest(&dir, &["debug", file.to_str().unwrap(), "--at", "2"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(text.starts_with("== event ==\nevent 2 of "), "{text}");
    assert!(text.contains("activity_completed\nactivity      seq 1 llm_turn attempt "), "{text}");
    assert!(text.contains("worker        worker-"), "{text}");
    assert!(text.contains("== state ==\nrun "), "{text}");
    assert!(text.contains("pending activities:") && text.contains("result: none yet"), "{text}");
    let last = (event_count(&file) - 1).to_string();
    let output = tempest(&dir, &["debug", file.to_str().unwrap(), "--at", &last]);
    assert!(stdout(&output).contains("result: completed {"), "{}", stdout(&output));
}

#[test]
fn bad_input_exits_2_naming_the_file_and_the_fault() {
    let dir = Scratch::new("bad");
    let good = std::fs::read_to_string(record(&dir, "hello_llm", "1").remove(0)).unwrap();
    let len = event_count(&dir.write("good.json", &good));
    dir.write("truncated.json", &good[..good.len() / 2]);
    dir.write("future.json", &good.replace("tempest-history/1", "tempest-history/9"));
    dir.write("empty.json", "");
    let beyond = len.to_string();
    let past_end = (len + 1).to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["debug", "missing.json", "--at", "0"], "missing.json: cannot read"),
        (vec!["debug", "truncated.json", "--at", "0"], "truncated.json: truncated JSON"),
        (vec!["debug", "future.json", "--at", "0"], "future.json: unknown history format \"tempest-history/9\""),
        (vec!["debug", "empty.json", "--at", "0"], "empty.json: file is empty"),
        (vec!["debug", "good.json", "--at", &beyond], "good.json: event"),
        (vec!["debug", "missing.json"], "missing.json: cannot read"),
        (vec!["debug", "good.json"], "the debugger needs a terminal; `tempest debug FILE --at N`"),
        (vec!["fork", "missing.json", "--at", "1"], "missing.json: cannot read"),
        (vec!["fork", "truncated.json", "--at", "1"], "truncated.json: truncated JSON"),
        (vec!["fork", "future.json", "--at", "1"], "future.json: unknown history format"),
        (vec!["fork", "good.json", "--at", &past_end], "is beyond the history"),
        (vec!["fork", "good.json", "--at", "0"], "needs at least workflow_started"),
        (vec!["fork", "good.json", "--at", "1", "--plan", "no-plan.json"], "no-plan.json"),
        (vec!["report", "missing.json", "-o", "r.html"], "missing.json: cannot read"),
        (vec!["report", "truncated.json", "-o", "r.html"], "truncated.json: truncated JSON"),
        (vec!["report", "future.json", "-o", "r.html"], "future.json: unknown history format"),
    ];
    for (args, expected) in cases {
        let output = tempest(&dir, &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}{}", stdout(&output), stderr(&output));
        assert!(stderr(&output).contains(expected), "{args:?}: {}", stderr(&output));
        assert!(!stderr(&output).contains("panicked"), "{args:?}: {}", stderr(&output));
    }
    assert!(!dir.path("r.html").exists(), "no page is written from bad input");
}

#[test]
fn fork_reports_endings_writes_json_and_histories_that_replay() {
    let dir = Scratch::new("fork");
    let file = record(&dir, "agent_loop", "7").remove(0);
    let file = file.to_str().unwrap();
    let output = tempest(
        &dir,
        &["fork", file, "--at", "4", "--seeds", "6", "--seed-base", "10", "--json", "fork.json", "--record", "forked"],
    );
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    assert!(text.contains("first 4 of ") && text.contains("continued in 6 worlds"), "{text}");
    assert!(text.contains("endings:\n") && text.contains(" completed {"), "{text}");
    assert!(text.contains("checks: all passed in 6 worlds"), "{text}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("fork.json")).unwrap()).unwrap();
    let counted: u64 = summary["endings"].as_array().unwrap().iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 6, "{summary}");
    assert_eq!(summary["failures"].as_array().unwrap().len(), 0);
    // Every forked history is a real history: today's code replays it.
    let replayed = tempest(&dir, &["replay", "forked"]);
    assert_eq!(replayed.status.code(), Some(0), "{}", stderr(&replayed));
    assert_eq!(stdout(&replayed).lines().count(), 6, "{}", stdout(&replayed));
}

#[test]
fn fork_under_one_plan_runs_one_world() {
    let dir = Scratch::new("fork-plan");
    let file = record(&dir, "human_approval", "3").remove(0);
    dir.write("calm.json", &tempest_sim::FaultPlan::none().to_json());
    let output = tempest(&dir, &["fork", file.to_str().unwrap(), "--at", "3", "--plan", "calm.json"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    assert!(text.contains("continued in 1 worlds"), "{text}");
}

/// Counts `needle` in `haystack`.
fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn report_of_a_recorded_world_is_self_contained_and_holds_every_event() {
    let dir = Scratch::new("report");
    let files = record(&dir, "agent_loop", "7");
    let events: usize = files.iter().map(|f| event_count(f)).sum();
    let output = tempest(&dir, &["report", "histories", "-o", "world.html"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let html = std::fs::read_to_string(dir.path("world.html")).unwrap();
    assert_eq!(count(&html, "<button class=\"ev "), events, "one mark per event in the swimlanes");
    assert_eq!(count(&html, "<tr class=\"event\""), events, "one row per event in the lists");
    assert_eq!(count(&html, "<section class=\"run\" id=\"run-"), files.len());
    assert!(html.contains("class=\"bar"), "activity attempts are drawn");
    let log = std::fs::read_to_string(dir.path("histories/agent_loop-seed7.faults")).unwrap();
    let plan = tempest_sim::FaultPlan::from_json(&log).expect("the fault log is the world's explicit plan");
    let injected = plan.schedule.as_ref().map_or(0, Vec::len) + plan.crashes.len();
    assert!(injected > 0, "seed 7 injects faults: {log}");
    assert_eq!(count(&html, "<tr class=\"fault-row\">"), injected);
    for fetch in ["http://", "https://", "<link", " src=", "@import", "url("] {
        assert!(!html.contains(fetch), "the page must fetch nothing, found {fetch:?}");
    }
    let single = tempest(&dir, &["report", files[0].to_str().unwrap(), "-o", "one.html"]);
    assert_eq!(single.status.code(), Some(0), "{}", stderr(&single));
    let one = std::fs::read_to_string(dir.path("one.html")).unwrap();
    assert_eq!(count(&one, "<button class=\"ev "), event_count(&files[0]));
    assert!(one.contains("Faults injected by the simulator"), "the fault log next to the file is read");

    if !tool("chromium") {
        return;
    }
    let url = format!("file://{}", dir.path("world.html").display());
    let screenshot = dir.path("world.png");
    let shot = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,900"])
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(shot.status.success(), "{}", stderr(&shot));
    let decoder = png::Decoder::new(std::fs::File::open(&screenshot).expect("chromium wrote the screenshot"));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let rgb = |i: usize| (pixels[i * channels], pixels[i * channels + 1], pixels[i * channels + 2]);
    let total = (info.width * info.height) as usize;
    // The attempt bars' fill (#c0d3f7) and the event dots (#7aa2f7) are only there when the
    // timeline rendered.
    let bars = (0..total).filter(|i| rgb(*i) == (0xc0, 0xd3, 0xf7)).count();
    let dots = (0..total).filter(|i| rgb(*i) == (0x7a, 0xa2, 0xf7)).count();
    assert!(bars > 500 && dots > 50, "screenshot shows no timeline: {bars} bar pixels, {dots} dot pixels");
    let dom = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(&url)
        .output()
        .expect("chromium runs");
    let dom = stdout(&dom);
    assert!(dom.contains("data-ready=\"yes\""), "the page's script ran and parsed its data");
    assert_eq!(count(&dom, "<button class=\"ev "), events, "every event is in the browser's DOM");
    // Clicking an event shows its content: a link to one clicks it when the page opens.
    let clicked = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("{url}#event-0-2"))
        .output()
        .expect("chromium runs");
    let dom = stdout(&clicked);
    let detail = dom.split("<pre id=\"detail\">").nth(1).and_then(|rest| rest.split("</pre>").next()).unwrap_or("");
    let history: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let kind = history["events"][2]["type"].as_str().unwrap();
    assert!(detail.contains("event 2\n") && detail.contains(&format!("\"type\": \"{kind}\"")), "{detail}");
}

#[test]
fn report_of_a_sweep_shows_counts_and_links_failing_seeds() {
    let dir = Scratch::new("sweep");
    let output = tempest(&dir, &["sweep", "hello_llm", "--seeds", "20", "--json", "sweep.json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let mut summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("sweep.json")).unwrap()).unwrap();
    // A failing seed as a failing sweep writes it, so the page's links can be checked.
    summary["failed"] = serde_json::json!([{ "seed": 42, "scenario": "hello_llm", "check": "check_liveness_after_heal", "message": "1 workflows still open", "repro": "cargo run --release -- run hello_llm --seed 42", "plan": "tempest-plan-hello_llm-42.json" }]);
    dir.write("failing.json", &summary.to_string());
    let output = tempest(&dir, &["report", "failing.json", "-o", "sweep.html"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let html = std::fs::read_to_string(dir.path("sweep.html")).unwrap();
    assert!(html.contains("<a href=\"#failure-0\">hello_llm seed 42</a>"), "{html}");
    assert!(html.contains("id=\"failure-0\"") && html.contains("cargo run --release -- run hello_llm --seed 42"));
    for (fault, count) in summary["faults"].as_object().unwrap() {
        assert!(html.contains(&format!("<tr><td>{fault}</td><td>{count}</td></tr>")), "{fault} {count}");
    }
    dir.write("half.json", r#"{"seed_base": 0, "seeds": 3}"#);
    let output = tempest(&dir, &["report", "half.json", "-o", "half.html"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("half.json: a sweep summary without its `scenarios` field"),
        "{}",
        stderr(&output)
    );
}

/// Captures the tmux pane until it contains `needle`, for at most a generous while (the
/// binary starts in milliseconds; the bound only keeps a broken build from hanging CI).
fn wait_for_pane(session: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let capture = Command::new("tmux").args(["capture-pane", "-p", "-t", session]).output().expect("tmux runs");
        let pane = stdout(&capture);
        if pane.contains(needle) {
            return pane;
        }
        assert!(Instant::now() < deadline, "pane never showed {needle:?}:\n{pane}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send_keys(session: &str, keys: &[&str]) {
    let status = Command::new("tmux").args(["send-keys", "-t", session]).args(keys).status().expect("tmux runs");
    assert!(status.success());
}

#[test]
fn terminal_ui_in_tmux_steps_searches_and_quits() {
    let dir = Scratch::new("tmux");
    let file = record(&dir, "agent_loop", "7").remove(0);
    if !tool("tmux") {
        return;
    }
    let session = format!("tempest-debug-{}", std::process::id());
    let command = format!("{} debug {}; sleep 30", env!("CARGO_BIN_EXE_tempest"), file.display());
    let started = Command::new("tmux")
        .args(["new-session", "-d", "-s", &session, "-x", "150", "-y", "40", &command])
        .status()
        .expect("tmux runs");
    assert!(started.success());
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).status();
        }
    }
    let _kill = Kill(session.clone());
    // Waits for the last panel drawn, not the first: a capture can land mid-draw.
    let pane = wait_for_pane(&session, "run state");
    assert!(pane.contains("event 0 of ") && pane.contains("workflow_started"), "{pane}");
    send_keys(&session, &["j", "j"]);
    wait_for_pane(&session, "event 2 of ");
    send_keys(&session, &["G"]);
    let last = event_count(&file) - 1;
    let pane = wait_for_pane(&session, "result: completed");
    assert!(pane.contains(&format!("event {last} of ")), "{pane}");
    send_keys(&session, &["g", "/", "call_tool", "Enter"]);
    wait_for_pane(&session, "match for \"call_tool\"");
    send_keys(&session, &["?"]);
    wait_for_pane(&session, "continue to the next / previous breakpoint");
    send_keys(&session, &["Escape", "q"]);
    // Quitting restores the terminal: the shell's `sleep` is left, the UI's frame is gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pane = stdout(&Command::new("tmux").args(["capture-pane", "-p", "-t", &session]).output().unwrap());
        if !pane.contains("run state") {
            break;
        }
        assert!(Instant::now() < deadline, "the UI did not quit:\n{pane}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
