//! The simulated network between hosts.
//!
//! Owns the fate of each message: its latency, whether it is dropped, duplicated or delayed, and
//! which links a partition blocks. It never carries payloads or schedules deliveries itself: it
//! answers `send` with delivery times and the world puts them on the agenda.

use crate::plan::{Decided, Gate};
use crate::rng::Rng;
use crate::swarm::{self, fault, FaultCounts};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use tempest_engine::Time;

/// A node of the world: the store, a worker, a client, a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostId(pub u32);

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host-{}", self.0)
    }
}

/// How the network misbehaves. Probabilities are per message sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFaults {
    /// Floor of every message's latency. Unit ms; range 0..=`latency_ms_mean`; default 1;
    /// realistic 0-1 within a datacenter, 20-80 across regions.
    pub latency_ms_min: u64,
    /// Mean latency: `latency_ms_min` plus an exponential tail. Unit ms; range
    /// `latency_ms_min`..; default 2; realistic 1-5 within a datacenter, 50-150 across regions.
    pub latency_ms_mean: u64,
    /// Chance a message is lost. Range [0, 1]; default 0; realistic 0.0001-0.01, higher under
    /// congestion.
    pub message_drop_probability: f64,
    /// Chance a message arrives twice, each copy with its own latency (a retransmit whose
    /// original was not lost). Range [0, 1]; default 0; realistic 0.0001-0.001.
    pub message_duplicate_probability: f64,
    /// Chance a copy is held up (a retransmit, a GC pause in a proxy) and so can overtake or be
    /// overtaken by later messages. Range [0, 1]; default 0; realistic 0.001-0.05.
    pub message_delay_probability: f64,
    /// Mean extra latency of a delayed copy, exponentially distributed. Unit ms; range 0..;
    /// default 0; realistic 200-5000 (TCP retransmit timeouts start at 200 ms to 1 s).
    pub message_delay_ms_mean: u64,
}

impl NetworkFaults {
    /// A healthy datacenter network: 1-2 ms latency, nothing lost, duplicated or delayed.
    pub fn none() -> NetworkFaults {
        NetworkFaults {
            latency_ms_min: 1,
            latency_ms_mean: 2,
            message_drop_probability: 0.0,
            message_duplicate_probability: 0.0,
            message_delay_probability: 0.0,
            message_delay_ms_mean: 0,
        }
    }

    pub fn validate(&self) -> Result<(), swarm::Error> {
        swarm::check_at_least("network.latency_ms_mean", self.latency_ms_mean, self.latency_ms_min)?;
        swarm::check_probability("network.message_drop_probability", self.message_drop_probability)?;
        swarm::check_probability("network.message_duplicate_probability", self.message_duplicate_probability)?;
        swarm::check_probability("network.message_delay_probability", self.message_delay_probability)
    }
}

impl Default for NetworkFaults {
    fn default() -> NetworkFaults {
        NetworkFaults::none()
    }
}

#[derive(Debug)]
pub struct Network {
    faults: NetworkFaults,
    /// Blocked directed links `(from, to)` and when each block ends. Bounded by hosts squared.
    partitions: BTreeMap<(HostId, HostId), Time>,
    fault_counts: FaultCounts,
    /// Decides drops, duplicates and delays (see `plan::Gate`).
    pub gate: Gate,
}

impl Network {
    pub fn new(faults: NetworkFaults) -> Network {
        if let Err(error) = faults.validate() {
            panic!("{error}");
        }
        Network { faults, partitions: BTreeMap::new(), fault_counts: FaultCounts::new(), gate: Gate::default() }
    }

    pub fn faults(&self) -> &NetworkFaults {
        &self.faults
    }

    pub fn fault_counts(&self) -> &FaultCounts {
        &self.fault_counts
    }

    /// Blocks messages from `a` to `b` (and from `b` to `a` if `two_way`) that are sent before
    /// `until`. Messages already in flight still arrive: they are past the broken switch.
    pub fn partition(&mut self, a: HostId, b: HostId, two_way: bool, until: Time) {
        assert_ne!(a, b, "partition of {a} from itself");
        self.block(a, b, until);
        if two_way {
            self.block(b, a, until);
        }
        self.fault_counts.add(fault::PARTITION);
    }

    fn block(&mut self, from: HostId, to: HostId, until: Time) {
        let end = self.partitions.entry((from, to)).or_insert(until);
        *end = (*end).max(until);
    }

    pub fn heal_partitions(&mut self) {
        self.partitions.clear();
    }

    /// The heal phase: ends every partition and stops dropping, duplicating and delaying
    /// messages. Latency stays, since a healthy network still takes time.
    pub fn heal(&mut self) {
        self.heal_partitions();
        self.gate.heal();
        self.faults = NetworkFaults {
            latency_ms_min: self.faults.latency_ms_min,
            latency_ms_mean: self.faults.latency_ms_mean,
            ..NetworkFaults::none()
        };
    }

    pub fn is_blocked(&self, from: HostId, to: HostId, now: Time) -> bool {
        self.partitions.get(&(from, to)).is_some_and(|until| now < *until)
    }

    /// Decides the fate of one message sent at `now`: the times its copies arrive. Empty means
    /// dropped or blocked by a partition; two entries mean it was duplicated.
    pub fn send(&mut self, from: HostId, to: HostId, now: Time, rng: &mut Rng) -> Deliveries {
        let mut deliveries = Deliveries::default();
        if self.is_blocked(from, to, now) {
            return deliveries;
        }
        if self.gate.decide(Decided::MessageDropped, now, rng.chance(self.faults.message_drop_probability)) {
            self.fault_counts.add(fault::MESSAGE_DROPPED);
            return deliveries;
        }
        let copy_count =
            if self.gate.decide(Decided::MessageDuplicated, now, rng.chance(self.faults.message_duplicate_probability))
            {
                self.fault_counts.add(fault::MESSAGE_DUPLICATED);
                2
            } else {
                1
            };
        for _ in 0..copy_count {
            let tail_mean_ms = self.faults.latency_ms_mean - self.faults.latency_ms_min;
            let mut latency_ms = self.faults.latency_ms_min + rng.exp_ms(tail_mean_ms);
            if self.gate.decide(Decided::MessageDelayed, now, rng.chance(self.faults.message_delay_probability)) {
                self.fault_counts.add(fault::MESSAGE_DELAYED);
                latency_ms += rng.exp_ms(self.faults.message_delay_ms_mean);
            }
            deliveries.push(Time(now.as_ms().saturating_add(latency_ms)));
        }
        deliveries
    }
}

/// The arrival times of one message's copies: none, one, or two if it was duplicated. Kept
/// inline rather than in a `Vec`, since every message sent would otherwise allocate one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deliveries {
    times: [Time; 2],
    len: usize,
}

impl Deliveries {
    fn push(&mut self, at: Time) {
        self.times[self.len] = at;
        self.len += 1;
    }
}

impl std::ops::Deref for Deliveries {
    type Target = [Time];

    fn deref(&self) -> &[Time] {
        &self.times[..self.len]
    }
}

impl IntoIterator for Deliveries {
    type Item = Time;
    type IntoIter = std::iter::Take<std::array::IntoIter<Time, 2>>;

    fn into_iter(self) -> Self::IntoIter {
        self.times.into_iter().take(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: HostId = HostId(1);
    const B: HostId = HostId(2);

    fn network(change: impl FnOnce(&mut NetworkFaults)) -> Network {
        let mut faults = NetworkFaults::none();
        change(&mut faults);
        Network::new(faults)
    }

    #[test]
    fn healthy_network_delivers_each_message_once_after_latency_min() {
        let mut net = network(|_| {});
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let deliveries = net.send(A, B, Time(100), &mut rng);
            assert_eq!(deliveries.len(), 1);
            assert!(deliveries[0] >= Time(101));
        }
        assert_eq!(net.fault_counts().total(), 0);
    }

    #[test]
    fn two_way_partition_blocks_both_directions_until_it_ends() {
        let mut net = network(|_| {});
        let mut rng = Rng::new(2);
        net.partition(A, B, true, Time(50));
        assert!(net.send(A, B, Time(49), &mut rng).is_empty());
        assert!(net.send(B, A, Time(49), &mut rng).is_empty());
        assert_eq!(net.send(A, B, Time(50), &mut rng).len(), 1);
        assert_eq!(net.fault_counts().get(fault::PARTITION), 1);
    }

    #[test]
    fn one_way_partition_blocks_only_its_direction() {
        let mut net = network(|_| {});
        let mut rng = Rng::new(3);
        net.partition(A, B, false, Time(50));
        assert!(net.send(A, B, Time(0), &mut rng).is_empty());
        assert_eq!(net.send(B, A, Time(0), &mut rng).len(), 1);
    }

    #[test]
    fn overlapping_partitions_keep_the_later_end() {
        let mut net = network(|_| {});
        net.partition(A, B, false, Time(80));
        net.partition(A, B, false, Time(30));
        assert!(net.is_blocked(A, B, Time(79)));
    }

    #[test]
    fn certain_drop_loses_every_message_and_counts_it() {
        let mut net = network(|f| f.message_drop_probability = 1.0);
        let mut rng = Rng::new(4);
        assert!((0..10).all(|_| net.send(A, B, Time(0), &mut rng).is_empty()));
        assert_eq!(net.fault_counts().get(fault::MESSAGE_DROPPED), 10);
    }

    #[test]
    fn certain_duplicate_delivers_twice() {
        let mut net = network(|f| f.message_duplicate_probability = 1.0);
        let mut rng = Rng::new(5);
        assert_eq!(net.send(A, B, Time(0), &mut rng).len(), 2);
        assert_eq!(net.fault_counts().get(fault::MESSAGE_DUPLICATED), 1);
    }

    #[test]
    fn delayed_messages_can_be_overtaken() {
        let mut net = network(|f| {
            f.message_delay_probability = 0.3;
            f.message_delay_ms_mean = 1000;
        });
        let mut rng = Rng::new(6);
        let arrivals: Vec<Time> = (0..100).flat_map(|sent_ms| net.send(A, B, Time(sent_ms), &mut rng)).collect();
        assert!(arrivals.windows(2).any(|pair| pair[1] < pair[0]), "no message was overtaken");
        assert!(net.fault_counts().get(fault::MESSAGE_DELAYED) > 0);
    }

    #[test]
    fn heal_ends_partitions_and_message_faults_but_keeps_latency() {
        let mut net = network(|f| {
            f.latency_ms_min = 10;
            f.latency_ms_mean = 20;
            f.message_drop_probability = 1.0;
        });
        net.partition(A, B, true, Time(1_000_000));
        net.heal();
        let mut rng = Rng::new(7);
        let deliveries = net.send(A, B, Time(0), &mut rng);
        assert_eq!(deliveries.len(), 1);
        assert!(deliveries[0] >= Time(10));
        assert_eq!(net.faults().latency_ms_mean, 20);
    }

    #[test]
    fn host_id_displays_with_prefix() {
        assert_eq!(HostId(3).to_string(), "host-3");
    }
}
