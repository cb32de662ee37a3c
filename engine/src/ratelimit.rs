//! Rate limits: requests per minute, tokens per minute and concurrency, per limiter key.
//!
//! Owns a worker's view of how much it may still dispatch under each key (e.g.
//! `llm:gpt-4o`), over a sliding 60 s window so that "at most N in any minute" holds
//! exactly, not only on average. Pure arithmetic on engine time; it never waits: callers ask
//! `next_allowed` and schedule themselves.

use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

pub const WINDOW: Duration = Duration::from_secs(60);
const WINDOW_MS: u64 = 60_000;

/// The limits of one key. `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub concurrency_max: Option<u32>,
}

#[derive(Clone, Debug, Default)]
struct KeyState {
    /// Dispatches in the last window: (time, tokens).
    window: VecDeque<(Time, u64)>,
    in_flight: u32,
}

/// Per-key limits and what has been dispatched under them.
#[derive(Clone, Debug, Default)]
pub struct Limiter {
    limits: BTreeMap<String, Limit>,
    keys: BTreeMap<String, KeyState>,
    /// Nothing limited is dispatched before this time (see `after_restart`).
    quiet_until: Time,
}

impl Limiter {
    pub fn new(limits: BTreeMap<String, Limit>) -> Limiter {
        Limiter { limits, keys: BTreeMap::new(), quiet_until: Time::ZERO }
    }

    /// A limiter for a process that restarted at `now` and forgot what it dispatched before:
    /// it stays quiet for one window, so no window ever holds dispatches of two lives and
    /// "at most N in any minute" survives the restart.
    pub fn after_restart(limits: BTreeMap<String, Limit>, now: Time) -> Limiter {
        Limiter { quiet_until: now.plus(WINDOW), ..Limiter::new(limits) }
    }

    pub fn limits(&self) -> &BTreeMap<String, Limit> {
        &self.limits
    }

    fn forget_old(state: &mut KeyState, now: Time) {
        while state.window.front().is_some_and(|(t, _)| t.0 + WINDOW_MS <= now.0) {
            state.window.pop_front();
        }
    }

    /// The earliest time at which a dispatch of `token_count` tokens under `key` fits, or
    /// `None` if it must wait for an in-flight activity to finish.
    pub fn next_allowed(&mut self, now: Time, key: &str, token_count: u64) -> Option<Time> {
        let Some(limit) = self.limits.get(key) else {
            return Some(now);
        };
        // Looked up before inserting, so the common case allocates no owned key.
        if !self.keys.contains_key(key) {
            self.keys.insert(key.to_owned(), KeyState::default());
        }
        let state = self.keys.get_mut(key).expect("inserted above");
        allowed_at(key, limit, state, self.quiet_until, now, token_count)
    }

    /// Keys under which nothing can be dispatched at `now` (for a zero-token request).
    pub fn blocked_keys(&mut self, now: Time) -> BTreeSet<String> {
        let mut blocked = BTreeSet::new();
        for (key, limit) in &self.limits {
            if !self.keys.contains_key(key) {
                self.keys.insert(key.clone(), KeyState::default());
            }
            let state = self.keys.get_mut(key).expect("inserted above");
            if allowed_at(key, limit, state, self.quiet_until, now, 0) != Some(now) {
                blocked.insert(key.clone());
            }
        }
        blocked
    }

    /// Records a dispatch; the caller checked `next_allowed` first.
    pub fn dispatch(&mut self, now: Time, key: &str, token_count: u64) {
        assert_eq!(self.next_allowed(now, key, token_count), Some(now), "key {key}: dispatch over the limit");
        if !self.limits.contains_key(key) {
            return;
        }
        let state = self.keys.get_mut(key).expect("next_allowed created the state");
        state.window.push_back((now, token_count));
        state.in_flight += 1;
    }

    /// An activity dispatched under `key` finished (or was given up).
    pub fn finish(&mut self, key: &str) {
        if let Some(state) = self.keys.get_mut(key) {
            assert!(state.in_flight > 0, "key {key}: finish without dispatch");
            state.in_flight -= 1;
        }
    }
}

/// `Limiter::next_allowed` for one key whose limit and state are at hand.
fn allowed_at(
    key: &str,
    limit: &Limit,
    state: &mut KeyState,
    quiet_until: Time,
    now: Time,
    token_count: u64,
) -> Option<Time> {
    Limiter::forget_old(state, now);
    if limit.concurrency_max.is_some_and(|max| state.in_flight >= max) {
        return None;
    }
    let mut at = now.max(quiet_until);
    if let Some(rpm) = limit.requests_per_minute {
        assert!(rpm > 0, "key {key}: requests_per_minute must be positive");
        let count = state.window.len() as u64;
        if count >= rpm {
            // The oldest dispatch that must leave the window first.
            let (t, _) = state.window[(count - rpm) as usize];
            at = at.max(Time(t.0 + WINDOW_MS));
        }
    }
    if let Some(tpm) = limit.tokens_per_minute {
        assert!(
            token_count <= tpm,
            "key {key}: one activity needs {token_count} tokens, over the {tpm} per minute limit"
        );
        let mut used: u64 = state.window.iter().map(|(_, n)| n).sum();
        for (t, n) in &state.window {
            if used + token_count <= tpm {
                break;
            }
            used -= n;
            at = at.max(Time(t.0 + WINDOW_MS));
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rpm: Option<u64>, tpm: Option<u64>, conc: Option<u32>) -> Limiter {
        let limit = Limit { requests_per_minute: rpm, tokens_per_minute: tpm, concurrency_max: conc };
        Limiter::new(BTreeMap::from([("llm".to_owned(), limit)]))
    }

    #[test]
    fn requests_per_minute_hold_in_any_window() {
        let mut l = limiter(Some(2), None, None);
        l.dispatch(Time(0), "llm", 0);
        l.finish("llm");
        l.dispatch(Time(10_000), "llm", 0);
        l.finish("llm");
        assert_eq!(l.next_allowed(Time(20_000), "llm", 0), Some(Time(60_000)));
        assert_eq!(l.next_allowed(Time(60_000), "llm", 0), Some(Time(60_000)));
    }

    #[test]
    fn tokens_per_minute_wait_for_room() {
        let mut l = limiter(None, Some(1_000), None);
        l.dispatch(Time(0), "llm", 600);
        l.dispatch(Time(5_000), "llm", 300);
        assert_eq!(l.next_allowed(Time(6_000), "llm", 200), Some(Time(60_000)));
        assert_eq!(l.next_allowed(Time(6_000), "llm", 100), Some(Time(6_000)));
    }

    #[test]
    fn concurrency_blocks_until_finish() {
        let mut l = limiter(None, None, Some(1));
        l.dispatch(Time(0), "llm", 0);
        assert_eq!(l.next_allowed(Time(1), "llm", 0), None);
        assert!(l.blocked_keys(Time(1)).contains("llm"));
        l.finish("llm");
        assert_eq!(l.next_allowed(Time(1), "llm", 0), Some(Time(1)));
    }

    #[test]
    fn restarted_limiter_waits_one_window() {
        let limit = Limit { requests_per_minute: Some(10), tokens_per_minute: None, concurrency_max: None };
        let mut l = Limiter::after_restart(BTreeMap::from([("llm".to_owned(), limit)]), Time(5_000));
        assert_eq!(l.next_allowed(Time(5_000), "llm", 0), Some(Time(65_000)));
    }

    #[test]
    fn unknown_keys_are_unlimited() {
        let mut l = Limiter::default();
        assert_eq!(l.next_allowed(Time(5), "tool", 10), Some(Time(5)));
    }
}
