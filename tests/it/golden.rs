//! Golden traces: the whole trace of a few fixed seeds per scenario, as insta file snapshots.
//!
//! Owns the capture of the world's `tempest::world` trace for a seed and its comparison with
//! the committed snapshot. Any change to what a world does shows up here as a readable diff
//! of the step-by-step trace, so it is reviewed rather than silently accepted. It never
//! changes a world; review a changed trace with `cargo insta review`.

use std::cell::RefCell;
use std::io::Write;
use std::sync::Once;
use tempest_sim::{world, Options};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

/// Seeds whose traces are kept, per scenario: small worlds that still see faults.
const GOLDEN_SEEDS: [u64; 2] = [3, 11];

thread_local! {
    /// The trace of the world this thread is capturing, if any.
    static CAPTURED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Writes formatted trace lines into this thread's capture.
struct ThreadCapture;

impl Write for ThreadCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        CAPTURED.with(|c| c.borrow_mut().as_mut().map(|buffer| buffer.extend_from_slice(bytes)));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs, once per process, a global subscriber that formats `tempest` debug events of
/// capturing threads only. A subscriber scoped to this thread would race with other tests
/// running worlds on other threads: a callsite one of them hits first can leave the global
/// level hint below DEBUG, and lines go missing from the capture.
fn install_capture() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // Dynamic: whether a thread captures changes, so no callsite's answer may be cached.
        let capturing = tracing_subscriber::filter::dynamic_filter_fn(|metadata, _| {
            metadata.target().starts_with("tempest")
                && *metadata.level() <= tracing::Level::DEBUG
                && CAPTURED.with(|c| c.borrow().is_some())
        });
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(|| ThreadCapture)
            .without_time()
            .with_target(false)
            .with_ansi(false)
            .with_filter(capturing);
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("no other global subscriber in this test binary");
    });
}

fn trace_of(scenario: &str, seed: u64) -> String {
    install_capture();
    let scenario = tempest_scenarios::find(scenario).expect("built-in scenario");
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let outcome = world::run_catching(scenario.as_ref(), Options::swarm(seed));
    let captured = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    assert!(outcome.passed(), "{} seed {seed}: {:?}", scenario.name(), outcome.failure);
    let lines = String::from_utf8(captured).expect("UTF-8 trace");
    format!("{lines}outcome: passed, trace digest {}\n", outcome.trace_digest)
}

#[test]
fn golden_traces_of_every_scenario() {
    for scenario in tempest_scenarios::all() {
        for seed in GOLDEN_SEEDS {
            let name = format!("trace-{}-seed{seed}", scenario.name());
            insta::assert_snapshot!(name, trace_of(scenario.name(), seed));
        }
    }
}
