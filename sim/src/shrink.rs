//! Shrinking: from a failing explicit plan to a small one that still fails the same check.
//!
//! Owns the search only: which faults to drop (delta debugging over the scheduled faults,
//! crashes and quota limits, largest chunks first), then how much to shorten what remains
//! (partitions). Whether a candidate still fails is the caller's closure, so this module never
//! runs a world itself and never decides what counts as "the same failure" beyond the check's
//! name.

use crate::plan::FaultPlan;
use crate::swarm::fault;

/// What shrinking found.
#[derive(Clone, Debug, PartialEq)]
pub struct Shrunk {
    /// The smallest explicit plan found that still fails the check.
    pub plan: FaultPlan,
    /// Faults in the plan shrinking started from.
    pub faults_before: usize,
    /// Worlds run while shrinking.
    pub attempts: u32,
}

/// One removable fault of an explicit plan.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Unit {
    Scheduled(usize),
    Crash(usize),
    RequestQuota,
    TokenQuota,
}

fn units(plan: &FaultPlan) -> Vec<Unit> {
    let mut units: Vec<Unit> = (0..plan.crashes.len()).map(Unit::Crash).collect();
    units.extend((0..plan.schedule.as_ref().map_or(0, Vec::len)).map(Unit::Scheduled));
    if plan.config.llm.rate_limit_rpm.is_some() {
        units.push(Unit::RequestQuota);
    }
    if plan.config.llm.rate_limit_tpm.is_some() {
        units.push(Unit::TokenQuota);
    }
    units
}

/// `plan` without the faults in `removed`.
fn without(plan: &FaultPlan, removed: &[Unit]) -> FaultPlan {
    let mut smaller = plan.clone();
    let keep = |unit: Unit| !removed.contains(&unit);
    smaller.crashes =
        plan.crashes.iter().enumerate().filter(|(i, _)| keep(Unit::Crash(*i))).map(|(_, c)| c.clone()).collect();
    smaller.schedule = plan.schedule.as_ref().map(|schedule| {
        schedule.iter().enumerate().filter(|(i, _)| keep(Unit::Scheduled(*i))).map(|(_, f)| f.clone()).collect()
    });
    if !keep(Unit::RequestQuota) {
        smaller.config.llm.rate_limit_rpm = None;
    }
    if !keep(Unit::TokenQuota) {
        smaller.config.llm.rate_limit_tpm = None;
    }
    smaller
}

/// Shrinks explicit `plan`, which fails `check`, running at most `budget` worlds.
/// `failing_check(plan)` runs the world under a candidate and names the check that failed.
pub fn shrink(
    plan: FaultPlan,
    check: &str,
    budget: u32,
    mut failing_check: impl FnMut(&FaultPlan) -> Option<String>,
) -> Shrunk {
    assert!(plan.schedule.is_some(), "only explicit plans shrink");
    let faults_before = plan.fault_count().unwrap_or(0);
    let mut attempts = 0;
    let mut still_fails = |candidate: &FaultPlan, attempts: &mut u32| {
        *attempts += 1;
        failing_check(candidate).as_deref() == Some(check)
    };
    let mut best = plan;

    // Drop faults: chunks of half the remaining faults, then quarters, down to single ones.
    let mut chunk_len = units(&best).len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < units(&best).len() && attempts < budget {
            let all = units(&best);
            let chunk = &all[start..(start + chunk_len).min(all.len())];
            let candidate = without(&best, chunk);
            if still_fails(&candidate, &mut attempts) {
                best = candidate;
            } else {
                start += chunk_len;
            }
        }
        if chunk_len == 1 || attempts >= budget {
            break;
        }
        chunk_len = chunk_len.div_ceil(2);
    }

    // Shorten partitions: halve each one's duration while the failure persists.
    let partitions: Vec<usize> = best
        .schedule
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, f)| f.kind == fault::PARTITION && f.duration_ms.is_some())
        .map(|(i, _)| i)
        .collect();
    for i in partitions {
        while attempts < budget {
            let mut candidate = best.clone();
            let entry = &mut candidate.schedule.as_mut().expect("explicit")[i];
            let duration_ms = entry.duration_ms.unwrap_or(0);
            if duration_ms <= 1 {
                break;
            }
            entry.duration_ms = Some(duration_ms / 2);
            if !still_fails(&candidate, &mut attempts) {
                break;
            }
            best = candidate;
        }
    }
    Shrunk { plan: best, faults_before, attempts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ScheduledCrash, ScheduledFault};

    fn scheduled(kind: &str, nth: u64) -> ScheduledFault {
        ScheduledFault { kind: kind.to_owned(), nth, at_ms: nth, duration_ms: None }
    }

    fn plan_with(faults: Vec<ScheduledFault>) -> FaultPlan {
        let mut plan = FaultPlan::none();
        plan.crashes.push(ScheduledCrash { at_ms: 5, host: "worker-1".into() });
        plan.schedule = Some(faults);
        plan
    }

    #[test]
    fn keeps_only_the_faults_the_failure_needs() {
        let mut faults: Vec<ScheduledFault> = (0..40).map(|n| scheduled(fault::MESSAGE_DROPPED, n)).collect();
        faults.push(ScheduledFault { duration_ms: Some(60_000), ..scheduled(fault::PARTITION, 0) });
        // The "bug" needs drop #17 and a partition of at least 1 s.
        let fails = |plan: &FaultPlan| {
            let schedule = plan.schedule.as_ref().unwrap();
            let drop = schedule.iter().any(|f| f.kind == fault::MESSAGE_DROPPED && f.nth == 17);
            let partition = schedule.iter().any(|f| f.kind == fault::PARTITION && f.duration_ms >= Some(1_000));
            (drop && partition).then(|| "check_x".to_owned())
        };
        let shrunk = shrink(plan_with(faults), "check_x", 1_000, fails);
        assert_eq!(shrunk.faults_before, 42);
        assert_eq!(shrunk.plan.fault_count(), Some(2), "{:?}", shrunk.plan);
        assert!(shrunk.plan.crashes.is_empty());
        let partition = shrunk.plan.schedule.as_ref().unwrap().iter().find(|f| f.kind == fault::PARTITION).unwrap();
        assert!((1_000..2_000).contains(&partition.duration_ms.unwrap()), "{partition:?}");
        assert!(shrunk.attempts < 200, "{}", shrunk.attempts);
    }

    #[test]
    fn a_different_check_failing_is_not_the_same_failure() {
        let faults = vec![scheduled(fault::TOOL_FAILURE, 0), scheduled(fault::TOOL_FAILURE, 1)];
        // Without both faults another check fails: shrinking must keep both.
        let fails = |plan: &FaultPlan| {
            let n = plan.schedule.as_ref().unwrap().len();
            Some(if n == 2 { "check_x" } else { "check_y" }.to_owned())
        };
        let mut plan = plan_with(faults);
        plan.crashes.clear();
        let shrunk = shrink(plan.clone(), "check_x", 100, fails);
        assert_eq!(shrunk.plan, plan);
    }

    #[test]
    fn stops_at_the_budget() {
        let faults: Vec<ScheduledFault> = (0..64).map(|n| scheduled(fault::MESSAGE_DELAYED, n)).collect();
        let shrunk = shrink(plan_with(faults), "check_x", 5, |_| None);
        assert_eq!(shrunk.attempts, 5);
    }
}
