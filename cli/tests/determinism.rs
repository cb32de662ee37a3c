//! The `tempest` binary as scripts and CI call it: a seed's world gives the same trace digest
//! in every process, and bad input or a failing world ends with the documented exit code and
//! message.
//!
//! Owns the cross-process half of the determinism claim (the in-process half lives in
//! `tests/it/determinism.rs`) and the binary's exit-code contract: 0 all good, 1 a check
//! failed, 2 bad usage or input. It runs the real binary in a scratch directory and only
//! reads what it prints.

mod common;

use common::{stderr, stdout, tempest, Scratch};
use std::process::Output;
use tempest_sim::world::{self, Options};
use tempest_sim::FaultPlan;

/// The digest from `tempest run`'s `trace digest:` line.
fn trace_digest(output: &Output) -> String {
    let text = stdout(output);
    text.lines()
        .find_map(|line| line.strip_prefix("trace digest: "))
        .unwrap_or_else(|| panic!("no trace digest line in:\n{text}"))
        .to_owned()
}

#[test]
fn same_seed_gives_same_trace_digest_across_processes() {
    let dir = Scratch::new("digest");
    for scenario in ["hello_llm", "agent_loop", "human_approval"] {
        for seed in ["0", "7", "42"] {
            let first = tempest(&dir, &["run", scenario, "--seed", seed]);
            let second = tempest(&dir, &["run", scenario, "--seed", seed]);
            assert_eq!(first.status.code(), Some(0), "{scenario} seed {seed}: {}", stdout(&first));
            assert_eq!(trace_digest(&first), trace_digest(&second), "{scenario} seed {seed}");
            // And the binary's world is the library's world.
            let seed_number: u64 = seed.parse().expect("decimal seed");
            let found = tempest_scenarios::find(scenario).expect("built-in scenario");
            let in_process = world::run_catching(found.as_ref(), Options::swarm(seed_number));
            assert_eq!(trace_digest(&first), in_process.trace_digest, "{scenario} seed {seed}");
        }
    }
}

#[test]
fn unknown_scenario_exits_2_naming_it_and_the_known_ones() {
    let output = tempest(&Scratch::new("unknown"), &["run", "no_such_scenario", "--seed", "1"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("no_such_scenario"), "{message}");
    for known in ["hello_llm", "agent_loop", "human_approval"] {
        assert!(message.contains(known), "{message}");
    }
}

#[test]
fn sweep_of_zero_seeds_exits_2() {
    let output = tempest(&Scratch::new("zero"), &["sweep", "--all", "--seeds", "0"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--seeds"), "{}", stderr(&output));
}

#[test]
fn unknown_flag_exits_2() {
    let output = tempest(&Scratch::new("flag"), &["run", "hello_llm", "--seed", "1", "--frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--frobnicate"), "{}", stderr(&output));
}

#[test]
fn missing_plan_file_exits_2_naming_the_file() {
    let dir = Scratch::new("missing-plan");
    let output = tempest(&dir, &["run", "hello_llm", "--seed", "1", "--plan", "no-such-plan.json"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("no-such-plan.json"), "{}", stderr(&output));
}

#[test]
fn malformed_plan_file_exits_2_naming_the_file() {
    let dir = Scratch::new("malformed-plan");
    dir.write("broken-plan.json", "{ \"config\": ");
    let output = tempest(&dir, &["run", "hello_llm", "--seed", "1", "--plan", "broken-plan.json"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("broken-plan.json"), "{}", stderr(&output));
}

#[test]
fn failing_world_exits_1_with_a_rerun_line() {
    // A network slower than the workflow task lease (10 s) lets no task complete, even after
    // the heal: every run is still open when the liveness bound runs out.
    let mut plan = FaultPlan::none();
    plan.config.network.latency_ms_min = 60_000;
    plan.config.network.latency_ms_mean = 60_000;
    let dir = Scratch::new("failing");
    dir.write("slow-network.json", &plan.to_json());
    let output = tempest(&dir, &["run", "hello_llm", "--seed", "1", "--plan", "slow-network.json"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("outcome: FAILED check_liveness_after_heal"), "{text}");
    // The repro reruns the plan that failed, not the seed's drawn plan (which passes).
    let repro = text.lines().skip_while(|line| !line.starts_with("rerun with:")).nth(1).unwrap_or_default();
    assert_eq!(repro.trim(), "cargo run --release -- run hello_llm --seed 1 --plan slow-network.json", "{text}");
}
