//! Determinism inside one process: a seed's world, run twice, leaves the same trace digest.
//!
//! Owns the in-process half of the determinism claim (the CLI's integration tests own the
//! half across processes). It only runs worlds and compares digests; it never looks inside.

use tempest_sim::world;
use tempest_sim::Options;

const SEED_COUNT: u64 = 20;

#[test]
fn same_seed_gives_same_trace_digest_in_one_process() {
    for scenario in tempest_scenarios::all() {
        let mut digests = std::collections::BTreeSet::new();
        for seed in 0..SEED_COUNT {
            let first = world::run_catching(scenario.as_ref(), Options::swarm(seed));
            let second = world::run_catching(scenario.as_ref(), Options::swarm(seed));
            assert!(first.passed(), "{} seed {seed} failed: {:?}", scenario.name(), first.failure);
            assert_eq!(
                first.trace_digest,
                second.trace_digest,
                "{} seed {seed}: two runs in one process differ",
                scenario.name()
            );
            digests.insert(first.trace_digest);
        }
        // A digest that ignored the world would pass the comparison above for nothing.
        assert_eq!(digests.len() as u64, SEED_COUNT, "{}: seeds share trace digests", scenario.name());
    }
}
