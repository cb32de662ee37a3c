//! Crash safety, proven: `tempest serve` as a child process, a few hundred workflows (steps
//! that fail and retry, durable timers, signals, the LLM scenarios with a flaky mock), SIGKILL
//! at random moments many times, a restart after each. At the end every accepted run completed
//! exactly once, no activity result was recorded twice, no acknowledged signal was lost or
//! doubled, and every history replays.
//!
//! Fast by default; `TEMPEST_CRASH_RUNS=1000 TEMPEST_CRASH_KILLS=60` makes the long version,
//! `TEMPEST_CRASH_SEED=N` picks the kill schedule (the seed is printed).

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempest_engine::history::Kind;
use tempest_engine::{History, Machine};
use tempest_runtime::client::ApiClient;
use tokio::task::JoinSet;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text.parse().unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}")),
        Err(_) => default,
    }
}

/// A small deterministic generator for the kill schedule and workload mix.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Server {
    child: Child,
    client: ApiClient,
}

fn start_server(db: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tempest"))
        .args(["serve", "--db"])
        .arg(db)
        .args(["--listen", "127.0.0.1:0", "--mock-llm-failure-percent", "30"])
        .env("RUST_LOG", "warn")
        // Slow commits: a server that acknowledged before its commit would lose acknowledged
        // starts and signals to the kills, and this test would fail.
        .env(tempest_runtime::sqlite::COMMIT_DELAY_VAR, "15")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tempest serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the listening line");
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    Server { child, client: ApiClient::new(&url, None).expect("client") }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failing assertion must not leave the server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kill(server: &mut Server) {
    // `Child::kill` is SIGKILL on Unix: no chance to flush or clean up.
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
}

#[derive(Clone)]
struct Planned {
    workflow_type: &'static str,
    workflow_id: String,
    input: Value,
    /// (signal name, signal id, payload) the run needs to finish.
    signal: Option<(&'static str, String, Value)>,
}

fn workload(count: u64, rng: &mut Rng) -> Vec<Planned> {
    (0..count)
        .map(|i| {
            let workflow_id = format!("crash-{i}");
            match rng.below(10) {
                0 => Planned {
                    workflow_type: "hello_llm",
                    input: json!({ "prompt": format!("hello {i}") }),
                    signal: None,
                    workflow_id,
                },
                1 => Planned {
                    workflow_type: "agent_loop",
                    input: json!({ "task": format!("task {i}"), "turn_limit": 4 }),
                    signal: None,
                    workflow_id,
                },
                2 => Planned {
                    workflow_type: "human_approval",
                    input: json!({ "topic": format!("topic {i}") }),
                    signal: Some(("approval", format!("approve-{i}"), json!({ "approved": true }))),
                    workflow_id,
                },
                _ => Planned {
                    workflow_type: "steps",
                    input: json!({
                        "step_count": 3,
                        "fail_attempt_count": rng.below(3),
                        "sleep_ms": 20 + rng.below(300),
                        "signal": "go",
                    }),
                    signal: Some(("go", format!("go-{i}"), json!(i))),
                    workflow_id,
                },
            }
        })
        .collect()
}

#[derive(Default)]
struct Progress {
    started: BTreeMap<String, String>,
    signaled: BTreeMap<String, String>,
}

/// Requests sent at once; a kill lands among them, not after them.
const REQUESTS_IN_FLIGHT: usize = 8;
/// A server that accepts connections but never answers (its worker thread died) must fail
/// the test, not hang it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts what is not started and signals what is not signaled, a few requests at a time so
/// that kills land while requests are in flight, until every request was acknowledged;
/// requests cut off by a kill are simply sent again (starts and signals are idempotent).
async fn drive(client: &ApiClient, plan: &[Planned], progress: &mut Progress) {
    loop {
        let mut requests = JoinSet::new();
        let starts = plan.iter().filter(|p| !progress.started.contains_key(&p.workflow_id));
        for planned in starts.take(REQUESTS_IN_FLIGHT) {
            let (client, planned) = (client.clone(), planned.clone());
            requests.spawn(async move {
                let start = client.start(planned.workflow_type, &planned.workflow_id, &planned.input);
                let answer = tokio::time::timeout(REQUEST_TIMEOUT, start).await.map_err(|_| ());
                (planned.workflow_id, None, answer.and_then(|a| a.map_err(|_| ())))
            });
        }
        let signals = plan.iter().filter(|p| {
            p.signal.is_some()
                && progress.started.contains_key(&p.workflow_id)
                && !progress.signaled.contains_key(&p.workflow_id)
        });
        for planned in signals.take(REQUESTS_IN_FLIGHT) {
            let Some((name, signal_id, payload)) = planned.signal.clone() else { continue };
            let (client, workflow_id) = (client.clone(), planned.workflow_id.clone());
            requests.spawn(async move {
                let signal = client.signal(&workflow_id, name, &signal_id, &payload);
                let answer = tokio::time::timeout(REQUEST_TIMEOUT, signal).await.map_err(|_| ());
                (workflow_id, Some(signal_id), answer.and_then(|a| a.map_err(|_| ())))
            });
        }
        if requests.is_empty() {
            return;
        }
        while let Some(joined) = requests.join_next().await {
            let (workflow_id, signal_id, answer) = joined.expect("request task");
            let Ok(answer) = answer else { continue };
            match (signal_id, answer.status) {
                (None, 200) => {
                    let run_id = answer.body["run_id"].as_str().unwrap_or_default().to_owned();
                    progress.started.insert(workflow_id, run_id);
                }
                (Some(signal_id), 200) => {
                    let status = answer.body["status"].as_str().unwrap_or_default();
                    assert!(status == "pending" || status == "recorded", "signal answer {answer:?}");
                    progress.signaled.insert(workflow_id, signal_id);
                }
                (Some(_), 404) => panic!("{workflow_id}: its start was acknowledged, but the run is gone"),
                (_, status) => panic!("{workflow_id}: unexpected answer {status}: {}", answer.error_message()),
            }
        }
        // Paces the requests over the server's life, so more kills cut some off.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn running_count(client: &ApiClient) -> Option<usize> {
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, client.list(Some("running"))).await.ok()?.ok()?;
    answer.body["runs"].as_array().map(Vec::len)
}

#[tokio::test(flavor = "current_thread")]
async fn kill_9_loses_no_run_signal_or_activity_result() {
    let run_count = env_number("TEMPEST_CRASH_RUNS", 200);
    let kill_count = env_number("TEMPEST_CRASH_KILLS", 20);
    let seed = env_number("TEMPEST_CRASH_SEED", 0x7e57) | 1;
    eprintln!("crash test: {run_count} runs, {kill_count} kills, TEMPEST_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crash.db");
    let plan = workload(run_count, &mut rng);
    let mut progress = Progress::default();
    let mut kills_mid_work = 0;
    for _ in 0..kill_count {
        let mut server = start_server(&db);
        let alive = Duration::from_millis(30 + rng.below(400));
        let client = server.client.clone();
        let _ = tokio::time::timeout(alive, async {
            drive(&client, &plan, &mut progress).await;
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if running_count(&client).await.is_some_and(|n| n > 0) || progress.started.len() < plan.len() {
            kills_mid_work += 1;
        }
        kill(&mut server);
    }
    let mut server = start_server(&db);
    let client = server.client.clone();
    let deadline = Instant::now() + Duration::from_secs(240);
    while progress.started.len() < plan.len()
        || progress.signaled.len() < plan.iter().filter(|p| p.signal.is_some()).count()
    {
        assert!(Instant::now() < deadline, "requests still not acknowledged after a clean restart");
        drive(&client, &plan, &mut progress).await;
    }
    while running_count(&client).await != Some(0) {
        assert!(Instant::now() < deadline, "runs still running long after the last restart");
        assert!(server.child.try_wait().expect("child status").is_none(), "tempest serve exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("crash test: {kills_mid_work} of {kill_count} kills landed while work was in flight");
    assert!(kills_mid_work > 0, "no kill landed while work was in flight: the test proved nothing");
    check_every_run(&client, &plan, &progress).await;
    kill(&mut server);
}

async fn check_every_run(client: &ApiClient, plan: &[Planned], progress: &Progress) {
    let registry = {
        let mut registry = tempest_scenarios::registry();
        tempest_runtime::builtin::register(&mut registry, &mut tempest_engine::services::Activities::new());
        registry
    };
    let listed = client.list(None).await.expect("list").body["runs"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), plan.len(), "one run per workflow id, no more, no fewer");
    for planned in plan {
        let id = &planned.workflow_id;
        let shown = client.show(id).await.expect("show");
        assert_eq!(shown.body["status"], "completed", "{id}: {shown:?}");
        assert_eq!(
            shown.body["run_id"].as_str(),
            progress.started.get(id).map(String::as_str),
            "{id}: the run acknowledged"
        );
        let answer = client.history(id).await.expect("history");
        let history = History::from_json(&answer.body.to_string()).unwrap_or_else(|e| panic!("{id}: {e}"));
        let kinds: Vec<&Kind> = history.events.iter().map(|e| &e.kind).collect();
        let terminal = kinds.iter().filter(|k| k.is_terminal()).count();
        assert_eq!(terminal, 1, "{id}: completed exactly once");
        assert!(matches!(kinds.last(), Some(Kind::WorkflowCompleted { .. })), "{id}: ends completed");
        let mut results_per_activity = BTreeMap::new();
        for kind in &kinds {
            if let Kind::ActivityCompleted { seq, .. } = kind {
                *results_per_activity.entry(*seq).or_insert(0) += 1;
            }
        }
        assert!(results_per_activity.values().all(|n| *n == 1), "{id}: an activity result recorded twice");
        if let Some(signal_id) = progress.signaled.get(id) {
            let copies = kinds
                .iter()
                .filter(|k| matches!(k, Kind::SignalReceived { signal_id: s, .. } if s == signal_id))
                .count();
            assert_eq!(copies, 1, "{id}: acknowledged signal {signal_id} recorded {copies} times");
        }
        if let Err(error) = Machine::replay(&registry, &history.events) {
            panic!("{id}: the history does not replay: {error}");
        }
    }
}
