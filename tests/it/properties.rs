//! Property tests of whole worlds: generated fault plans and workloads, every check on.
//!
//! The property is the product's promise: whatever faults a plan injects (which kinds, how
//! strong, when hosts crash), every accepted workflow completes exactly once and every check
//! of the simulator holds. Fault kinds are generated as `Option`s, so proptest shrinks a
//! failure toward a plan with the fewest faults on; a test proves that with a broken store.

use crate::checks_can_fail::StartNotIdempotent;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use serde_json::{json, Value};
use std::sync::Arc;
use tempest_engine::Time;
use tempest_sim::plan::{FaultPlan, ScheduledCrash};
use tempest_sim::scenario::Start;
use tempest_sim::world::{run_catching, Options};

const HOUR_MS: u64 = 3_600_000;

fn probability(max: f64) -> impl Strategy<Value = Option<f64>> {
    prop::option::of(0.0001f64..max)
}

/// Fault plans: each kind off or on at a generated strength, a fault phase, and crashes.
fn fault_plan() -> impl Strategy<Value = FaultPlan> {
    let network = (probability(0.1), probability(0.1), probability(0.2), probability(0.01), 1_000u64..60_000);
    let hosts = (probability(0.02), probability(0.01), probability(1.0), probability(0.05));
    let llm =
        (prop::option::of((10u64..600, 20_000u64..400_000)), probability(0.1), probability(0.05), probability(0.3));
    let others = (probability(0.3), probability(0.2), probability(0.3), probability(0.3));
    let schedule = (HOUR_MS / 6..3 * HOUR_MS, prop::collection::vec((0.0f64..1.0, 0usize..4), 0..4));
    (network, hosts, llm, others, schedule).prop_map(|(network, hosts, llm, others, schedule)| {
        let mut plan = FaultPlan::none();
        let c = &mut plan.config;
        let (drop, duplicate, delay, partition, partition_ms) = network;
        c.network.message_drop_probability = drop.unwrap_or(0.0);
        c.network.message_duplicate_probability = duplicate.unwrap_or(0.0);
        c.network.message_delay_probability = delay.unwrap_or(0.0);
        c.network.message_delay_ms_mean = if delay.is_some() { 2_000 } else { 0 };
        c.partition_probability = partition.unwrap_or(0.0);
        c.partition_duration_ms_mean = partition_ms;
        c.partition_two_way_probability = 0.5;
        let (worker_crash, store_crash, torn, lease) = hosts;
        c.worker_crash_probability = worker_crash.unwrap_or(0.0);
        c.store_crash_probability = store_crash.unwrap_or(0.0);
        c.disk_torn_write_probability = torn.unwrap_or(0.0);
        c.lease_expiry_probability = lease.unwrap_or(0.0);
        let (quota, server_error, timeout, invalid) = llm;
        c.llm.rate_limit_rpm = quota.map(|(rpm, _)| rpm);
        c.llm.rate_limit_tpm = quota.map(|(_, tpm)| tpm);
        c.llm.server_error_probability = server_error.unwrap_or(0.0);
        c.llm.server_error_burst_len_mean = 3;
        c.llm.timeout_probability = timeout.unwrap_or(0.0);
        c.llm.invalid_output_probability = invalid.unwrap_or(0.0);
        let (tool, never, duplicate, late) = others;
        c.tool.failure_probability = tool.unwrap_or(0.0);
        c.human.never_probability = never.unwrap_or(0.0);
        c.human.duplicate_probability = duplicate.unwrap_or(0.0);
        c.human.late_probability = late.unwrap_or(0.0);
        let (fault_phase_ms, crashes) = schedule;
        plan.fault_phase_ms = fault_phase_ms;
        plan.crashes = crashes
            .into_iter()
            .map(|(at, host)| ScheduledCrash {
                at_ms: (at * fault_phase_ms as f64) as u64,
                host: if host == 0 { "store".to_owned() } else { format!("worker-{host}") },
            })
            .collect();
        plan
    })
}

/// A scenario and a workload for it: which workflows start when, with what input.
fn workload() -> impl Strategy<Value = (&'static str, Vec<Start>)> {
    let at = 0u64..300_000;
    prop_oneof![
        prop::collection::vec(at.clone(), 1..8)
            .prop_map(|ats| ("hello_llm", starts("hello_llm", ats, |i| json!({ "prompt": format!("hi {i}") })))),
        prop::collection::vec((at.clone(), 1u64..8), 1..10).prop_map(|items| {
            let (ats, limits): (Vec<u64>, Vec<u64>) = items.into_iter().unzip();
            (
                "agent_loop",
                starts("agent_loop", ats, |i| json!({ "task": format!("task {i}"), "turn_limit": limits[i] })),
            )
        }),
        prop::collection::vec(at, 1..6).prop_map(|ats| (
            "human_approval",
            starts("human_approval", ats, |i| json!({ "topic": format!("note {i}") }))
        )),
    ]
}

fn starts(workflow_type: &str, ats: Vec<u64>, input: impl Fn(usize) -> Value) -> Vec<Start> {
    ats.into_iter()
        .enumerate()
        .map(|(i, at)| Start {
            at: Time(at),
            workflow_id: format!("{workflow_type}-{i}"),
            workflow_type: workflow_type.to_owned(),
            input: input(i),
        })
        .collect()
}

fn options(seed: u64, plan: FaultPlan, workload: Vec<Start>) -> Options {
    Options { plan, workload: Some(workload), ..Options::swarm(seed) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn every_workflow_completes_exactly_once_under_generated_faults(seed in any::<u64>(), plan in fault_plan(), (scenario, workload) in workload()) {
        let scenario = tempest_scenarios::find(scenario).expect("a built-in scenario");
        let workflow_count = workload.len() as u64;
        // Every check after every step, not only at the end.
        let options = Options { check_every_step: true, ..options(seed, plan, workload) };
        let outcome = run_catching(scenario.as_ref(), options);
        prop_assert!(outcome.failure.is_none(), "seed {seed}: {:?}", outcome.failure);
        prop_assert_eq!(outcome.workflows_accepted, workflow_count);
        prop_assert!(outcome.runs_completed >= workflow_count);
    }
}

#[test]
fn shrinking_reduces_a_failing_plan_to_the_faults_that_matter() {
    // A fixed generator, so this test explores the same worlds on every run.
    let config = Config { cases: 256, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let strategy = (any::<u64>(), fault_plan(), workload());
    let result = runner.run(&strategy, |(seed, plan, (scenario, workload))| {
        let scenario = tempest_scenarios::find(scenario).expect("a built-in scenario");
        let mut options = options(seed, plan, workload);
        options.store_factory = Some(Arc::new(|store| Box::new(StartNotIdempotent(store))));
        let outcome = run_catching(scenario.as_ref(), options);
        prop_assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
        Ok(())
    });
    let Err(TestError::Fail(reason, (_, plan, _))) = result else {
        panic!("the broken store went unnoticed in 256 generated worlds: {result:?}");
    };
    // A workflow started twice shows as a second run, or first as the side effect its second
    // run applies again (tools check at every call).
    let message = reason.message();
    assert!(message.contains("check_starts_exactly_once") || message.contains("check_tool_effects_once"), "{message}");
    let fault_count = plan.kinds_on().len() + plan.crashes.len();
    assert!(
        fault_count <= 3,
        "the shrunk plan still has {fault_count} faults: {:?} and crashes {:?}",
        plan.kinds_on(),
        plan.crashes
    );
}
