//! The web page in a real browser: headless Chromium loads it from a fake API that serves
//! recorded histories (`tempest run agent_loop --seed 7 --record DIR` and friends, in
//! `tests/data/histories`), and the rendered DOM must list the runs and show a run's
//! timeline; a screenshot must not be blank.
//!
//! Chromium is an external tool: `.ci/run` installs it and sets `TEMPEST_REQUIRE_TOOLS=1`,
//! which makes its absence a failure. Elsewhere, without it, the browser checks are skipped
//! loudly and the HTTP-level checks still run.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tempest_engine::{History, Kind};

/// The run whose history is cut short, so the page has a running run to show.
const RUNNING_WORKFLOW_ID: &str = "agent-6";
const RUNNING_EVENT_COUNT: usize = 5;

struct Run {
    view: Value,
    history: History,
}

type Runs = Arc<BTreeMap<String, Run>>;

fn view_of(history: &History) -> Value {
    let mut view = json!({
        "workflow_id": history.workflow_id,
        "run_id": history.run_id,
        "workflow_type": history.workflow_type,
        "status": "running",
        "event_count": history.events.len(),
    });
    match history.events.last().map(|e| &e.kind) {
        Some(Kind::WorkflowCompleted { output }) => {
            view["status"] = json!("completed");
            view["result"] = output.to_value();
        }
        Some(Kind::WorkflowFailed { error }) => {
            view["status"] = json!("failed");
            view["error"] = json!(error);
        }
        Some(Kind::WorkflowCanceled) => view["status"] = json!("canceled"),
        Some(Kind::WorkflowContinuedAsNew { .. }) => view["status"] = json!("continued"),
        _ => {}
    }
    view
}

fn recorded_runs() -> Runs {
    let dir = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/histories");
    let mut runs = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut history = History::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if history.workflow_id == RUNNING_WORKFLOW_ID {
            history.events.truncate(RUNNING_EVENT_COUNT);
        }
        runs.insert(history.workflow_id.clone(), Run { view: view_of(&history), history });
    }
    assert_eq!(runs.len(), 7, "fixtures in {}", dir.display());
    Arc::new(runs)
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_runs(State(runs): State<Runs>, Query(query): Query<ListQuery>) -> Json<Value> {
    let listed: Vec<&Value> = runs
        .values()
        .map(|run| &run.view)
        .filter(|view| query.status.as_deref().is_none_or(|status| view["status"] == status))
        .collect();
    Json(json!({ "runs": listed }))
}

async fn show_run(State(runs): State<Runs>, Path(workflow_id): Path<String>) -> Response {
    match runs.get(&workflow_id) {
        Some(run) => Json(run.view.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": "no such run" }))).into_response(),
    }
}

async fn history_of_run(State(runs): State<Runs>, Path(workflow_id): Path<String>) -> Response {
    match runs.get(&workflow_id) {
        Some(run) => ([("content-type", "application/json")], run.history.to_json()).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": "no such run" }))).into_response(),
    }
}

/// The API shape the runtime serves, over recorded histories, with the page merged in the
/// way `tempest serve` merges it.
fn fake_app(runs: Runs) -> Router {
    Router::new()
        .route("/api/runs", get(list_runs))
        .route("/api/runs/{workflow_id}", get(show_run))
        .route("/api/runs/{workflow_id}/history", get(history_of_run))
        .with_state(runs)
        .merge(tempest_runtime::web::router())
}

/// Serves the fake app on 127.0.0.1 from a thread of its own, for the rest of the process.
fn serve() -> SocketAddr {
    serve_app(fake_app(recorded_runs()))
}

/// The fake API behind a bearer token, as `tempest serve` answers with `TEMPEST_TOKEN` set
/// (the page itself stays public: it holds no run data).
fn serve_with_token(token: &'static str) -> SocketAddr {
    let api = fake_app(recorded_runs()).route_layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| async move {
            let expected = format!("Bearer {token}");
            let given = request.headers().get("authorization").and_then(|v| v.to_str().ok());
            if request.uri().path().starts_with("/api/") && given != Some(expected.as_str()) {
                return (StatusCode::UNAUTHORIZED, Json(json!({ "error": "missing or wrong bearer token" })))
                    .into_response();
            }
            next.run(request).await
        },
    ));
    serve_app(api)
}

fn serve_app(app: Router) -> SocketAddr {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    address
}

/// A plain HTTP/1.1 GET; returns the status line, the headers and the body.
fn http_get(address: SocketAddr, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a complete HTTP answer");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_lowercase(), body.to_owned())
}

#[test]
fn page_is_served_at_root_and_self_contained() {
    let address = serve();
    let (status, headers, body) = http_get(address, "/");
    assert!(status.contains("200"), "{status}");
    assert!(headers.contains("content-type: text/html"), "{headers}");
    assert!(headers.contains("content-security-policy: default-src 'none'"), "{headers}");
    assert!(body.contains("<script>") && body.contains("/api/runs"), "the page reads the API");
    // Nothing is loaded from anywhere else: no external scripts, styles, fonts or images.
    for forbidden in ["src=\"http", "href=\"http", "url(http", "@import", "<link", "src=\"//", "href=\"//"] {
        assert!(!body.contains(forbidden), "the page refers outside itself: {forbidden}");
    }
    let (status, _, body) = http_get(address, "/api/runs?status=running");
    assert!(status.contains("200"), "{status}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1, "{listed}");
}

fn tools_required() -> bool {
    std::env::var("TEMPEST_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Debian's `chromium`, if installed.
fn chromium() -> Option<PathBuf> {
    let found = Command::new("chromium").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    match found {
        Ok(status) if status.success() => Some(PathBuf::from("chromium")),
        _ if tools_required() => {
            panic!("chromium is not installed and TEMPEST_REQUIRE_TOOLS=1 (apt-get install -y chromium)")
        }
        _ => {
            // Straight to stderr, past the test harness's capture, so the skip is seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!! skipped: chromium not installed; the browser checks of the web page did not run !!!!\n"
            );
            None
        }
    }
}

/// Runs headless Chromium with `args` on `url`, for at most two minutes; returns stdout.
fn run_chromium(browser: &FsPath, profile: &FsPath, args: &[&str], url: &str) -> String {
    let child = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--virtual-time-budget=8000")
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(Duration::from_secs(120)) {
        Ok(output) => {
            let output = output.unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
            stdout
        }
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("chromium did not finish within two minutes on {url}");
        }
    }
}

fn profile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tempest-web-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn browser_lists_runs_and_shows_an_agent_timeline() {
    let Some(browser) = chromium() else { return };
    let address = serve();
    let profile = profile_dir("agent");
    let dom = run_chromium(&browser, &profile, &["--dump-dom"], &format!("http://{address}/#run=agent-7"));
    let _ = std::fs::remove_dir_all(&profile);

    for workflow_id in ["agent-3", "agent-6", "agent-7", "agent-9", "approval-2", "approval-3", "hello-5"] {
        assert!(dom.contains(&format!("data-workflow-id=\"{workflow_id}\"")), "run {workflow_id} listed:\n{dom}");
    }
    assert!(dom.contains("data-workflow-id=\"agent-6\" data-status=\"running\""), "the cut history runs:\n{dom}");
    assert!(dom.contains("data-workflow-id=\"agent-7\" data-status=\"completed\""), "{dom}");
    assert!(dom.contains("data-workflow-id=\"agent-3\" data-status=\"failed\""), "{dom}");
    assert!(dom.contains("(7)"), "run count shown:\n{dom}");
    // The selected run's timeline: LLM turns with prompts and answers, tool activities,
    // attempts that failed and the ones that completed.
    assert!(dom.contains("class=\"item activity llm\""), "LLM activities marked:\n{dom}");
    assert!(dom.contains("llm_turn #1") && dom.contains("call_tool #2"), "{dom}");
    assert!(dom.contains("You are a research agent. Use tools, then answer."), "prompt shown:\n{dom}");
    assert!(dom.contains("calls tool calculator {\"query\":\"q33\"}"), "answer shown:\n{dom}");
    assert!(dom.contains("attempt 1 failed at +1m 6s on worker-2: timed out; retry at +1m 7s"), "{dom}");
    assert!(dom.contains("attempt 2 completed at +1m 18s on worker-3"), "{dom}");
    assert!(dom.contains("answer after 2 tool results"), "final answer shown:\n{dom}");
    assert!(dom.contains("r76fe400d4bb3"), "run id shown:\n{dom}");
    assert!(!dom.contains("role=\"alert\">"), "no error banner text expected:\n{dom}");
}

#[test]
fn browser_shows_timers_and_signals_of_a_human_approval() {
    let Some(browser) = chromium() else { return };
    let address = serve();
    let profile = profile_dir("approval");
    let dom = run_chromium(&browser, &profile, &["--dump-dom"], &format!("http://{address}/#run=approval-3"));
    let _ = std::fs::remove_dir_all(&profile);

    assert!(dom.contains("data-kind=\"timer\"") && dom.contains("sleep 3d 0h #3"), "timer shown:\n{dom}");
    assert!(dom.contains("fired at +"), "timer firing shown:\n{dom}");
    assert!(dom.contains("data-kind=\"signal\"") && dom.contains("notify:approval-3:0/approval/1"), "{dom}");
    assert!(dom.contains("make it shorter"), "signal payload shown:\n{dom}");
    assert!(dom.contains("escalate #7"), "{dom}");
    assert!(dom.contains("completed: {\"revisions\":1,\"status\":\"escalated\"}"), "ending shown:\n{dom}");
}

#[test]
fn browser_screenshot_is_not_blank() {
    let Some(browser) = chromium() else { return };
    let address = serve();
    let profile = profile_dir("screenshot");
    let shot = profile.join("page.png");
    let screenshot_arg = format!("--screenshot={}", shot.display());
    run_chromium(
        &browser,
        &profile,
        &[&screenshot_arg, "--window-size=1280,1000", "--hide-scrollbars"],
        &format!("http://{address}/#run=agent-7"),
    );
    let decoder =
        png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).expect("chromium wrote the screenshot")));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().expect("a screenshot fits in memory")];
    let frame = reader.next_frame(&mut pixels).unwrap();
    // To look at the page yourself: TEMPEST_KEEP_SCREENSHOT=/tmp/page.png cargo test ...
    if let Ok(keep) = std::env::var("TEMPEST_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, &keep).unwrap_or_else(|e| panic!("{keep}: {e}"));
    }
    let _ = std::fs::remove_dir_all(&profile);
    assert_eq!((frame.width, frame.height), (1280, 1000));

    let channels = frame.color_type.samples();
    let mut counts: BTreeMap<&[u8], u64> = BTreeMap::new();
    for pixel in pixels[..frame.buffer_size()].chunks(channels) {
        *counts.entry(pixel).or_default() += 1;
    }
    let total = u64::from(frame.width) * u64::from(frame.height);
    let most_common = counts.values().copied().max().unwrap();
    // A blank or error page is one or two flat colours; the rendered page has text, badges
    // and bars in many colours over a good part of the window.
    assert!(counts.len() >= 50, "only {} distinct colours", counts.len());
    assert!(most_common * 100 < total * 90, "{most_common} of {total} pixels share one colour");
}

#[test]
fn browser_shows_invalid_output_and_a_timer_the_run_outlived() {
    let Some(browser) = chromium() else { return };
    let address = serve();
    let profile = profile_dir("outlived");
    let dom = run_chromium(&browser, &profile, &["--dump-dom"], &format!("http://{address}/#run=approval-2"));
    let _ = std::fs::remove_dir_all(&profile);

    assert!(
        dom.contains("invalid output: answer is not valid JSON: \"{\\\"truncated\""),
        "failure message shown:\n{dom}"
    );
    assert!(dom.contains("attempt 2 failed at +1m 43s on worker-3: timed out"), "{dom}");
    // The human answered before the three-day reminder, so the run ended with it pending.
    assert!(dom.contains("sleep 3d 0h #3") && dom.contains("not fired: the run ended first"), "{dom}");
    assert!(!dom.contains("· waiting until"), "a closed run waits for nothing:\n{dom}");
}

#[test]
fn browser_filters_runs_by_status() {
    let Some(browser) = chromium() else { return };
    let address = serve();
    let profile = profile_dir("filter");
    let dom = run_chromium(&browser, &profile, &["--dump-dom"], &format!("http://{address}/?status=running"));
    let _ = std::fs::remove_dir_all(&profile);

    assert!(dom.contains("data-workflow-id=\"agent-6\" data-status=\"running\""), "{dom}");
    assert!(!dom.contains("data-status=\"completed\""), "only running runs listed:\n{dom}");
    assert!(dom.contains("(1)"), "{dom}");
}

#[test]
fn browser_shows_a_failed_run_and_its_exhausted_activity() {
    let Some(browser) = chromium() else { return };
    let address = serve();
    let profile = profile_dir("failed");
    let dom = run_chromium(&browser, &profile, &["--dump-dom"], &format!("http://{address}/#run=agent-3"));
    let _ = std::fs::remove_dir_all(&profile);

    assert!(dom.contains("class=\"badge status-failed\">failed"), "failed badge:\n{dom}");
    assert!(dom.contains("class=\"item activity llm failed\""), "the failed activity is marked:\n{dom}");
    assert!(dom.contains("attempt 10 failed at +") && dom.contains("overloaded (attempts exhausted)"), "{dom}");
    assert!(
        dom.contains("failed: activity llm_turn (seq 5) failed after 10 attempts (AttemptsExhausted): overloaded"),
        "{dom}"
    );
}

#[test]
fn browser_asks_for_the_token_when_the_api_wants_one() {
    let Some(browser) = chromium() else { return };
    let address = serve_with_token("s3cret");
    let (status, _, _) = http_get(address, "/api/runs");
    assert!(status.contains("401"), "{status}");
    let profile = profile_dir("token");
    let dom = run_chromium(&browser, &profile, &["--dump-dom"], &format!("http://{address}/"));
    let _ = std::fs::remove_dir_all(&profile);

    assert!(dom.contains("<form id=\"token-form\" class=\"banner\">"), "token form shown:\n{dom}");
    assert!(dom.contains("the server needs a bearer token (401)"), "{dom}");
    assert!(!dom.contains("data-workflow-id="), "no runs without the token:\n{dom}");
}
