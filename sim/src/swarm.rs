//! Swarm testing: each seed draws its own mix of faults, and the world counts what it injected.
//!
//! Owns `FaultConfig` (every fault knob of a world, as written into fault-plan JSON), the draw
//! that turns each fault kind on or off and picks its strength, the names of fault kinds, and
//! `FaultCounts`. It never injects a fault itself: the components and the world read the knobs.
//! Turning whole kinds off per seed (Groce et al., "Swarm Testing", 2012) finds more bugs than
//! running every fault at once, because some faults mask others: a world that loses every
//! message never reaches the code that mishandles a duplicate.

use crate::human::HumanFaults;
use crate::llm::LlmFaults;
use crate::net::NetworkFaults;
use crate::rng::Rng;
use crate::tool::ToolFaults;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The names of fault kinds, as they appear in counts, traces and fault plans.
pub mod fault {
    pub const MESSAGE_DROPPED: &str = "message_dropped";
    pub const MESSAGE_DUPLICATED: &str = "message_duplicated";
    pub const MESSAGE_DELAYED: &str = "message_delayed";
    pub const PARTITION: &str = "partition";
    pub const WORKER_CRASH: &str = "worker_crash";
    pub const STORE_CRASH: &str = "store_crash";
    pub const DISK_UNSYNCED_LOST: &str = "disk_unsynced_lost";
    pub const DISK_TORN_WRITE: &str = "disk_torn_write";
    pub const LEASE_EXPIRED: &str = "lease_expired";
    pub const LLM_RATE_LIMITED: &str = "llm_rate_limited";
    pub const LLM_SERVER_ERROR: &str = "llm_server_error";
    pub const LLM_TIMEOUT: &str = "llm_timeout";
    pub const LLM_INVALID_OUTPUT: &str = "llm_invalid_output";
    pub const TOOL_FAILURE: &str = "tool_failure";
    pub const HUMAN_LATE: &str = "human_late";
    pub const HUMAN_DUPLICATE: &str = "human_duplicate";
    pub const HUMAN_NEVER: &str = "human_never";

    pub const ALL: [&str; 17] = [
        MESSAGE_DROPPED,
        MESSAGE_DUPLICATED,
        MESSAGE_DELAYED,
        PARTITION,
        WORKER_CRASH,
        STORE_CRASH,
        DISK_UNSYNCED_LOST,
        DISK_TORN_WRITE,
        LEASE_EXPIRED,
        LLM_RATE_LIMITED,
        LLM_SERVER_ERROR,
        LLM_TIMEOUT,
        LLM_INVALID_OUTPUT,
        TOOL_FAILURE,
        HUMAN_LATE,
        HUMAN_DUPLICATE,
        HUMAN_NEVER,
    ];
}

/// A fault plan's knob holds a value the simulator cannot run with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("fault knob {knob} is {value}, outside {range}")]
    OutOfRange { knob: &'static str, value: String, range: String },
}

/// Every fault knob of one world. Each kind's knobs are documented where they live; the ranges
/// `draw` picks from are documented there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    pub network: NetworkFaults,
    /// Chance, per message sent, that a partition starts between its sender and receiver.
    /// Range [0, 1]; default 0; realistic 0.0001-0.001 (a switch or route failure).
    pub partition_probability: f64,
    /// Mean length of a partition, exponentially distributed. Unit ms; range 0..; default 0;
    /// realistic 1_000-60_000.
    pub partition_duration_ms_mean: u64,
    /// Chance a partition blocks both directions rather than one. Range [0, 1]; default 0;
    /// realistic 0.5 (one-way partitions come from asymmetric firewall or routing failures).
    pub partition_two_way_probability: f64,
    /// Chance, per task a worker handles, that the worker crashes and loses its memory and
    /// in-flight work. Range [0, 1]; default 0; realistic 0.0001-0.01 (deploys, OOM kills).
    pub worker_crash_probability: f64,
    /// Chance, per store transaction, that the store crashes and loses what it had not synced.
    /// Range [0, 1]; default 0; realistic 0.0001-0.001.
    pub store_crash_probability: f64,
    /// Chance that a store crash which loses records leaves the first one torn on disk. Range
    /// [0, 1]; default 0; realistic 0.1-0.5 without a battery-backed write cache.
    pub disk_torn_write_probability: f64,
    /// Chance, per task a worker runs, that the worker stalls (GC pause, VM migration) until
    /// its lease expires, then carries on unaware. Range [0, 1]; default 0; realistic 0.001.
    pub lease_expiry_probability: f64,
    /// Mean time a crashed worker or store stays down, exponentially distributed. Unit ms;
    /// range 0..; default 1_000; realistic 1_000-60_000 (process restart to node replacement).
    pub restart_delay_ms_mean: u64,
    pub llm: LlmFaults,
    pub tool: ToolFaults,
    pub human: HumanFaults,
}

impl FaultConfig {
    /// No faults at all: the baseline, and the plan of the heal phase.
    pub fn none() -> FaultConfig {
        FaultConfig {
            network: NetworkFaults::none(),
            partition_probability: 0.0,
            partition_duration_ms_mean: 0,
            partition_two_way_probability: 0.0,
            worker_crash_probability: 0.0,
            store_crash_probability: 0.0,
            disk_torn_write_probability: 0.0,
            lease_expiry_probability: 0.0,
            restart_delay_ms_mean: 1_000,
            llm: LlmFaults::none(),
            tool: ToolFaults::none(),
            human: HumanFaults::none(),
        }
    }

    /// Swarm testing: each fault kind is independently on with `KIND_ON_PROBABILITY`, and when
    /// on its strength is drawn from the range written next to it. Each kind draws from its own
    /// fork of `rng`, so adding a kind does not change what existing kinds draw for a seed.
    /// `disk_unsynced_lost` has no knob of its own: it follows from `store_crash`.
    pub fn draw(rng: &Rng) -> FaultConfig {
        let mut config = FaultConfig::none();
        let mut env = rng.fork("environment");
        // The environment is not a fault, so it is always drawn: how fast things are.
        config.network.latency_ms_min = env.range_inclusive(0, 2);
        config.network.latency_ms_mean = config.network.latency_ms_min + env.range_inclusive(1, 20);
        config.restart_delay_ms_mean = env.range_inclusive(100, 30_000);
        config.llm.latency_ms_base = env.range_inclusive(100, 2_000);
        config.llm.latency_ms_per_token = env.range_inclusive(1, 20);
        config.tool.latency_ms_mean = env.range_inclusive(10, 2_000);
        config.human.answer_delay_ms_min = env.range_inclusive(MINUTE_MS, HOUR_MS);
        config.human.answer_delay_ms_max = env.range_inclusive(HOUR_MS, 7 * DAY_MS);

        if let Some(mut r) = kind_on(rng, fault::MESSAGE_DROPPED) {
            config.network.message_drop_probability = probability(&mut r, 0.001, 0.1);
        }
        if let Some(mut r) = kind_on(rng, fault::MESSAGE_DUPLICATED) {
            config.network.message_duplicate_probability = probability(&mut r, 0.001, 0.1);
        }
        if let Some(mut r) = kind_on(rng, fault::MESSAGE_DELAYED) {
            config.network.message_delay_probability = probability(&mut r, 0.01, 0.2);
            config.network.message_delay_ms_mean = r.range_inclusive(100, 10_000);
        }
        if let Some(mut r) = kind_on(rng, fault::PARTITION) {
            config.partition_probability = probability(&mut r, 0.0005, 0.01);
            config.partition_duration_ms_mean = r.range_inclusive(1_000, 60_000);
            config.partition_two_way_probability = probability(&mut r, 0.0, 1.0);
        }
        if let Some(mut r) = kind_on(rng, fault::WORKER_CRASH) {
            config.worker_crash_probability = probability(&mut r, 0.001, 0.02);
        }
        if let Some(mut r) = kind_on(rng, fault::STORE_CRASH) {
            config.store_crash_probability = probability(&mut r, 0.0005, 0.01);
        }
        if let Some(mut r) = kind_on(rng, fault::DISK_TORN_WRITE) {
            config.disk_torn_write_probability = probability(&mut r, 0.1, 1.0);
        }
        if let Some(mut r) = kind_on(rng, fault::LEASE_EXPIRED) {
            config.lease_expiry_probability = probability(&mut r, 0.001, 0.05);
        }
        if let Some(mut r) = kind_on(rng, fault::LLM_RATE_LIMITED) {
            // Tight enough that a handful of agents hit it; a request may need up to 20_000
            // tokens, the smallest token limit drawn.
            config.llm.rate_limit_rpm = Some(r.range_inclusive(10, 600));
            config.llm.rate_limit_tpm = Some(r.range_inclusive(20_000, 400_000));
        }
        if let Some(mut r) = kind_on(rng, fault::LLM_SERVER_ERROR) {
            config.llm.server_error_probability = probability(&mut r, 0.005, 0.1);
            config.llm.server_error_burst_len_mean = r.range_inclusive(1, 20);
        }
        if let Some(mut r) = kind_on(rng, fault::LLM_TIMEOUT) {
            config.llm.timeout_probability = probability(&mut r, 0.001, 0.05);
        }
        if let Some(mut r) = kind_on(rng, fault::LLM_INVALID_OUTPUT) {
            config.llm.invalid_output_probability = probability(&mut r, 0.01, 0.3);
        }
        if let Some(mut r) = kind_on(rng, fault::TOOL_FAILURE) {
            config.tool.failure_probability = probability(&mut r, 0.01, 0.3);
        }
        if let Some(mut r) = kind_on(rng, fault::HUMAN_LATE) {
            config.human.late_probability = probability(&mut r, 0.01, 0.3);
        }
        if let Some(mut r) = kind_on(rng, fault::HUMAN_DUPLICATE) {
            config.human.duplicate_probability = probability(&mut r, 0.01, 0.3);
        }
        if let Some(mut r) = kind_on(rng, fault::HUMAN_NEVER) {
            config.human.never_probability = probability(&mut r, 0.01, 0.2);
        }
        config
    }

    /// Checks every knob, so a hand-edited fault plan fails with the knob's name instead of
    /// a panic deep inside a world.
    pub fn validate(&self) -> Result<(), Error> {
        self.network.validate()?;
        self.llm.validate()?;
        self.tool.validate()?;
        self.human.validate()?;
        check_probability("partition_probability", self.partition_probability)?;
        check_probability("partition_two_way_probability", self.partition_two_way_probability)?;
        check_probability("worker_crash_probability", self.worker_crash_probability)?;
        check_probability("store_crash_probability", self.store_crash_probability)?;
        check_probability("disk_torn_write_probability", self.disk_torn_write_probability)?;
        check_probability("lease_expiry_probability", self.lease_expiry_probability)
    }
}

impl Default for FaultConfig {
    fn default() -> FaultConfig {
        FaultConfig::none()
    }
}

/// Half the kinds are on in an average seed, so most seeds mix several without drowning
/// the world in all of them.
pub const KIND_ON_PROBABILITY: f64 = 0.5;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

/// The kind's own stream if the coin turns it on.
fn kind_on(rng: &Rng, kind: &str) -> Option<Rng> {
    let mut r = rng.fork(kind);
    r.chance(KIND_ON_PROBABILITY).then_some(r)
}

/// Uniform in `[lo, hi]`, on a grid of 1e-4 so the value prints as a short decimal and reads
/// back bit for bit from fault-plan JSON (serde_json's default float parser is exact only for
/// short decimals).
fn probability(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    const STEPS: f64 = 10_000.0;
    let step_index = rng.range_inclusive((lo * STEPS).round() as u64, (hi * STEPS).round() as u64);
    step_index as f64 / STEPS
}

pub(crate) fn check_probability(knob: &'static str, value: f64) -> Result<(), Error> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::OutOfRange { knob, value: value.to_string(), range: "[0, 1]".to_owned() })
    }
}

pub(crate) fn check_at_least(knob: &'static str, value: u64, min: u64) -> Result<(), Error> {
    if value >= min {
        Ok(())
    } else {
        Err(Error::OutOfRange { knob, value: value.to_string(), range: format!("{min}..") })
    }
}

/// How many times each fault kind was injected. Only names from `fault::ALL` are accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FaultCounts(BTreeMap<&'static str, u64>);

impl FaultCounts {
    pub fn new() -> FaultCounts {
        FaultCounts::default()
    }

    pub fn add(&mut self, kind: &'static str) {
        assert!(fault::ALL.contains(&kind), "unknown fault kind {kind}");
        *self.0.entry(kind).or_insert(0) += 1;
    }

    pub fn get(&self, kind: &str) -> u64 {
        self.0.get(kind).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Adds another component's counts into these.
    pub fn merge(&mut self, other: &FaultCounts) {
        for (kind, count) in &other.0 {
            *self.0.entry(kind).or_insert(0) += count;
        }
    }

    /// Kinds injected at least once, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().map(|(kind, count)| (*kind, *count))
    }
}

impl fmt::Display for FaultCounts {
    /// `message_dropped=3 worker_crash=1`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "none");
        }
        let parts: Vec<String> = self.iter().map(|(kind, count)| format!("{kind}={count}")).collect();
        write!(f, "{}", parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_kind_names_are_unique_snake_case() {
        let mut names = fault::ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), fault::ALL.len());
        assert!(fault::ALL.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }

    #[test]
    fn same_seed_draws_same_config() {
        assert_eq!(FaultConfig::draw(&Rng::new(9)), FaultConfig::draw(&Rng::new(9)));
        assert_ne!(FaultConfig::draw(&Rng::new(9)), FaultConfig::draw(&Rng::new(10)));
    }

    #[test]
    fn each_kind_is_on_in_about_half_the_seeds_and_valid_when_on() {
        let configs: Vec<FaultConfig> = (0..400).map(|s| FaultConfig::draw(&Rng::new(s))).collect();
        let on_count = |on: fn(&FaultConfig) -> bool| configs.iter().filter(|c| on(c)).count();
        let kinds: [fn(&FaultConfig) -> bool; 4] = [
            |c| c.network.message_drop_probability > 0.0,
            |c| c.worker_crash_probability > 0.0,
            |c| c.llm.rate_limit_rpm.is_some(),
            |c| c.human.never_probability > 0.0,
        ];
        for on in kinds {
            assert!((150..250).contains(&on_count(on)), "{}", on_count(on));
        }
        // Independence: some seeds run without any of these, some with all of them.
        assert!(configs.iter().any(|c| kinds.iter().all(|on| !on(c))));
        assert!(configs.iter().any(|c| kinds.iter().all(|on| on(c))));
        for config in &configs {
            assert_eq!(config.validate(), Ok(()));
        }
    }

    #[test]
    fn drawn_config_round_trips_through_json_exactly() {
        for seed in 0..200 {
            let config = FaultConfig::draw(&Rng::new(seed));
            let json = serde_json::to_string(&config).expect("config serializes");
            let back: FaultConfig = serde_json::from_str(&json).expect("config parses");
            assert_eq!(back, config, "seed {seed}");
        }
    }

    #[test]
    fn none_is_valid_and_injects_nothing() {
        let none = FaultConfig::none();
        assert_eq!(none.validate(), Ok(()));
        assert_eq!(none.network.message_drop_probability, 0.0);
        assert_eq!(none.llm.rate_limit_rpm, None);
    }

    #[test]
    fn validate_names_the_knob_out_of_range() {
        let mut config = FaultConfig::none();
        config.llm.timeout_probability = 1.5;
        assert_eq!(
            config.validate().map_err(|e| e.to_string()),
            Err("fault knob llm.timeout_probability is 1.5, outside [0, 1]".to_owned())
        );
    }

    #[test]
    fn counts_merge_and_render_in_name_order() {
        let mut world = FaultCounts::new();
        world.add(fault::WORKER_CRASH);
        let mut net = FaultCounts::new();
        net.add(fault::MESSAGE_DROPPED);
        net.add(fault::MESSAGE_DROPPED);
        world.merge(&net);
        assert_eq!(world.to_string(), "message_dropped=2 worker_crash=1");
        assert_eq!(world.total(), 3);
        assert_eq!(FaultCounts::new().to_string(), "none");
    }
}
