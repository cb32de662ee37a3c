//! Proof that sweeps reach the outcomes they claim to test: every "sometimes" fact of
//! `check::sometimes::ALL` happens within 10,000 seeds of the built-in scenarios.
//!
//! Owns only that search. It runs seeds of every scenario in turn and stops as soon as every
//! fact has been seen, so it is quick while the world keeps reaching them and slow only when
//! coverage is lost; it never changes a world.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tempest_sim::check::sometimes;
use tempest_sim::{world, Options};

const SEED_COUNT_MAX: u64 = 10_000;

#[test]
fn sweep_of_all_scenarios_reaches_every_sometimes_fact() {
    let scenarios = tempest_scenarios::all();
    let missing: Mutex<BTreeSet<&str>> = Mutex::new(sometimes::ALL.into_iter().collect());
    let next = AtomicU64::new(0);
    let worlds_max = SEED_COUNT_MAX * scenarios.len() as u64;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= worlds_max || missing.lock().expect("no panics while held").is_empty() {
                    break;
                }
                // Seed-major order: seed 0 of every scenario, then seed 1, ...
                let scenario = &scenarios[(index % scenarios.len() as u64) as usize];
                let outcome = world::run_catching(scenario.as_ref(), Options::swarm(index / scenarios.len() as u64));
                assert!(outcome.passed(), "{} seed {}: {:?}", scenario.name(), outcome.seed, outcome.failure);
                let mut missing = missing.lock().expect("no panics while held");
                for fact in outcome.sometimes.keys() {
                    missing.remove(fact);
                }
            });
        }
    });
    let missing = missing.into_inner().expect("threads done");
    assert!(missing.is_empty(), "{SEED_COUNT_MAX} seeds of every scenario never reached: {missing:?}");
}
