//! Simulated humans: when, whether and how often someone answers an approval request.
//!
//! Owns the plan for one request: an answer after minutes to days, sometimes twice, sometimes
//! too late, sometimes never. It never decides what the answer says (scenarios do) and never
//! schedules it: the world turns a `HumanPlan` into signals on the agenda.

use crate::plan::{Decided, Gate};
use crate::rng::Rng;
use crate::swarm::{self, fault, FaultCounts};
use serde::{Deserialize, Serialize};
use tempest_engine::Time;

/// How people answer. Probabilities are per request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HumanFaults {
    /// Fastest answer. Unit ms; range 1..=`answer_delay_ms_max`; default 60_000 (a minute);
    /// realistic a minute for an on-call approver.
    pub answer_delay_ms_min: u64,
    /// Slowest on-time answer; delays are log-uniform in between, so minutes are as likely as
    /// days. Unit ms; range `answer_delay_ms_min`..; default 86_400_000 (a day); realistic one
    /// to seven days.
    pub answer_delay_ms_max: u64,
    /// Chance nobody ever answers. Range [0, 1]; default 0; realistic 0.01-0.1.
    pub never_probability: f64,
    /// Chance an answer is sent twice (a double click, a second device), the copy arriving
    /// after an extra exponential delay with mean `answer_delay_ms_min`. Range [0, 1];
    /// default 0; realistic 0.01-0.05.
    pub duplicate_probability: f64,
    /// Chance an answer comes after `answer_delay_ms_max`, when the workflow may have given
    /// up: the extra delay is exponential with mean `answer_delay_ms_max`. Range [0, 1];
    /// default 0; realistic 0.01-0.1.
    pub late_probability: f64,
}

impl HumanFaults {
    /// Everyone answers once, between a minute and a day after being asked.
    pub fn none() -> HumanFaults {
        HumanFaults {
            answer_delay_ms_min: 60_000,
            answer_delay_ms_max: 86_400_000,
            never_probability: 0.0,
            duplicate_probability: 0.0,
            late_probability: 0.0,
        }
    }
}

impl HumanFaults {
    pub fn validate(&self) -> Result<(), swarm::Error> {
        swarm::check_at_least("human.answer_delay_ms_min", self.answer_delay_ms_min, 1)?;
        swarm::check_at_least("human.answer_delay_ms_max", self.answer_delay_ms_max, self.answer_delay_ms_min)?;
        swarm::check_probability("human.never_probability", self.never_probability)?;
        swarm::check_probability("human.duplicate_probability", self.duplicate_probability)?;
        swarm::check_probability("human.late_probability", self.late_probability)
    }
}

impl Default for HumanFaults {
    fn default() -> HumanFaults {
        HumanFaults::none()
    }
}

/// What a human will do about one request. Delays count from when the request was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HumanPlan {
    Never,
    Answer { after_ms: u64, duplicate_after_ms: Option<u64> },
}

#[derive(Debug)]
pub struct HumanModel {
    faults: HumanFaults,
    fault_counts: FaultCounts,
    /// Decides silence, lateness and second answers (see `plan::Gate`).
    pub gate: Gate,
}

impl HumanModel {
    pub fn new(faults: HumanFaults) -> HumanModel {
        if let Err(error) = faults.validate() {
            panic!("{error}");
        }
        HumanModel { faults, fault_counts: FaultCounts::new(), gate: Gate::default() }
    }

    pub fn faults(&self) -> &HumanFaults {
        &self.faults
    }

    pub fn fault_counts(&self) -> &FaultCounts {
        &self.fault_counts
    }

    /// Decides how one request will be answered.
    pub fn plan(&mut self, now: Time, rng: &mut Rng) -> HumanPlan {
        let HumanFaults { answer_delay_ms_min: min, answer_delay_ms_max: max, .. } = self.faults;
        if self.gate.decide(Decided::HumanNever, now, rng.chance(self.faults.never_probability)) {
            self.fault_counts.add(fault::HUMAN_NEVER);
            return HumanPlan::Never;
        }
        let on_time_ms = (min as f64 * (max as f64 / min as f64).powf(rng.f64())).round() as u64;
        let mut after_ms = on_time_ms.clamp(min, max);
        if self.gate.decide(Decided::HumanLate, now, rng.chance(self.faults.late_probability)) {
            self.fault_counts.add(fault::HUMAN_LATE);
            after_ms = max + 1 + rng.exp_ms(max);
        }
        let duplicate_drawn = rng.chance(self.faults.duplicate_probability);
        let duplicate_after_ms = self.gate.decide(Decided::HumanDuplicate, now, duplicate_drawn).then(|| {
            self.fault_counts.add(fault::HUMAN_DUPLICATE);
            after_ms + rng.exp_ms(min)
        });
        HumanPlan::Answer { after_ms, duplicate_after_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE_MS: u64 = 60_000;
    const DAY_MS: u64 = 86_400_000;

    fn model(change: impl FnOnce(&mut HumanFaults)) -> HumanModel {
        let mut faults = HumanFaults::none();
        change(&mut faults);
        HumanModel::new(faults)
    }

    fn after_ms(plan: HumanPlan) -> u64 {
        match plan {
            HumanPlan::Answer { after_ms, .. } => after_ms,
            HumanPlan::Never => panic!("expected an answer"),
        }
    }

    #[test]
    fn on_time_answers_span_minutes_to_days() {
        let mut humans = model(|_| {});
        let mut rng = Rng::new(1);
        let delays: Vec<u64> = (0..1000).map(|_| after_ms(humans.plan(Time::ZERO, &mut rng))).collect();
        assert!(delays.iter().all(|d| (MINUTE_MS..=DAY_MS).contains(d)));
        assert!(delays.iter().any(|d| *d < 10 * MINUTE_MS));
        assert!(delays.iter().any(|d| *d > DAY_MS / 2));
        assert_eq!(humans.fault_counts().total(), 0);
    }

    #[test]
    fn certain_never_means_no_answer() {
        let mut humans = model(|f| f.never_probability = 1.0);
        assert_eq!(humans.plan(Time::ZERO, &mut Rng::new(2)), HumanPlan::Never);
        assert_eq!(humans.fault_counts().get(fault::HUMAN_NEVER), 1);
    }

    #[test]
    fn late_answers_come_after_the_max_delay() {
        let mut humans = model(|f| f.late_probability = 1.0);
        let mut rng = Rng::new(3);
        assert!((0..100).all(|_| after_ms(humans.plan(Time::ZERO, &mut rng)) > DAY_MS));
    }

    #[test]
    fn duplicate_answer_never_precedes_the_first() {
        let mut humans = model(|f| f.duplicate_probability = 1.0);
        let mut rng = Rng::new(4);
        for _ in 0..100 {
            let HumanPlan::Answer { after_ms, duplicate_after_ms: Some(duplicate_after_ms) } =
                humans.plan(Time::ZERO, &mut rng)
            else {
                panic!("expected a duplicated answer");
            };
            assert!(duplicate_after_ms >= after_ms);
        }
        assert_eq!(humans.fault_counts().get(fault::HUMAN_DUPLICATE), 100);
    }
}
