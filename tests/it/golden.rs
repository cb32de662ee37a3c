//! Golden traces: the whole trace of a few fixed seeds per scenario, as insta file snapshots.
//!
//! Owns the capture of the world's `tempest::world` trace for a seed and its comparison with
//! the committed snapshot. Any change to what a world does shows up here as a readable diff
//! of the step-by-step trace, so it is reviewed rather than silently accepted. It never
//! changes a world; review a changed trace with `cargo insta review`.

use std::io::Write;
use std::sync::{Arc, Mutex};
use tempest_sim::{world, Options};

/// Seeds whose traces are kept, per scenario: small worlds that still see faults.
const GOLDEN_SEEDS: [u64; 2] = [3, 11];

/// Collects formatted trace lines in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("no panics while held").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn trace_of(scenario: &str, seed: u64) -> String {
    let scenario = tempest_scenarios::find(scenario).expect("built-in scenario");
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("tempest=debug"))
        .with_writer(move || writer.clone())
        .without_time()
        .with_target(false)
        .with_ansi(false)
        .finish();
    let outcome =
        tracing::subscriber::with_default(subscriber, || world::run_catching(scenario.as_ref(), Options::swarm(seed)));
    assert!(outcome.passed(), "{} seed {seed}: {:?}", scenario.name(), outcome.failure);
    let lines = String::from_utf8(captured.0.lock().expect("no panics while held").clone()).expect("UTF-8 trace");
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
