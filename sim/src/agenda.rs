//! The agenda: every future event of a world, and the virtual clock they drive.
//!
//! Owns the order of events, (time, then push order), and `now`, which moves only when an event
//! is popped. Idle time is skipped, so a week-long wait costs one pop. It never decides what an
//! event means and never reads a real clock.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use tempest_engine::Time;

/// Future events ordered by `(Time, sequence)`, where the sequence number is assigned at push,
/// so events due at the same time come out in the order they were scheduled.
///
/// A binary heap rather than an ordered map: every step pushes and pops a few events, and a
/// map keeps its events in nodes whose entries shift on every insert and on every pop of the
/// first, which cost more than the heap's few swaps. Keys are unique, so both give one order.
#[derive(Debug)]
pub struct Agenda<E> {
    events: BinaryHeap<Entry<E>>,
    now: Time,
    sequence_next: u64,
    /// A world holding more pending events than this has run away; it fails loudly instead.
    len_max: usize,
}

/// One scheduled event; ordered so that the heap's greatest is the earliest `(at, sequence)`.
#[derive(Debug)]
struct Entry<E> {
    at: Time,
    sequence: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.sequence).cmp(&(self.at, self.sequence))
    }
}

impl<E> Agenda<E> {
    pub fn new(len_max: usize) -> Agenda<E> {
        assert!(len_max > 0, "an agenda that holds nothing cannot run a world");
        Agenda { events: BinaryHeap::new(), now: Time::ZERO, sequence_next: 0, len_max }
    }

    /// An agenda whose clock starts at `now` instead of zero (a fork's world begins where
    /// its recorded history stopped).
    pub fn starting_at(len_max: usize, now: Time) -> Agenda<E> {
        Agenda { now, ..Agenda::new(len_max) }
    }

    /// The virtual clock: the time of the last popped event.
    pub fn now(&self) -> Time {
        self.now
    }

    pub fn push(&mut self, at: Time, event: E) {
        assert!(at >= self.now, "event scheduled at {at}, before now {}", self.now);
        assert!(self.events.len() < self.len_max, "agenda is full at len_max {}", self.len_max);
        self.events.push(Entry { at, sequence: self.sequence_next, event });
        self.sequence_next += 1;
    }

    /// Removes the earliest event and moves the clock to its time.
    pub fn pop(&mut self) -> Option<(Time, E)> {
        let Entry { at, event, .. } = self.events.pop()?;
        assert!(at >= self.now, "agenda went back in time from {} to {at}", self.now);
        self.now = at;
        Some((at, event))
    }

    pub fn peek_time(&self) -> Option<Time> {
        self.events.peek().map(|entry| entry.at)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    #[test]
    fn pops_by_time_then_push_order() {
        let mut agenda = Agenda::new(10);
        agenda.push(Time(20), "c");
        agenda.push(Time(10), "a");
        agenda.push(Time(20), "d");
        agenda.push(Time(10), "b");
        assert_eq!(agenda.peek_time(), Some(Time(10)));
        let order: Vec<_> = std::iter::from_fn(|| agenda.pop()).collect();
        assert_eq!(order, [(Time(10), "a"), (Time(10), "b"), (Time(20), "c"), (Time(20), "d")]);
        assert!(agenda.is_empty());
        assert_eq!(agenda.pop(), None);
    }

    #[test]
    fn many_events_pop_by_time_then_push_order() {
        // Enough events, with many ties, that the heap reorders them internally.
        let mut agenda = Agenda::new(1_000);
        let mut expected = Vec::new();
        for index in 0..500u64 {
            let at = Time((index * 7_919) % 13);
            agenda.push(at, index);
            expected.push((at, index));
        }
        expected.sort_by_key(|(at, index)| (*at, *index));
        let order: Vec<_> = std::iter::from_fn(|| agenda.pop()).collect();
        assert_eq!(order, expected);
    }

    #[test]
    fn pop_advances_clock_and_skips_idle_time() {
        let mut agenda = Agenda::new(10);
        let week_ms = 7 * 24 * 3600 * 1000;
        agenda.push(Time(week_ms), ());
        assert_eq!(agenda.now(), Time::ZERO);
        agenda.pop();
        assert_eq!(agenda.now(), Time(week_ms));
        agenda.push(Time(week_ms), ());
        assert_eq!(agenda.len(), 1);
    }

    #[test]
    fn scheduling_in_the_past_panics() {
        let mut agenda = Agenda::new(10);
        agenda.push(Time(5), ());
        agenda.pop();
        let result = catch_unwind(AssertUnwindSafe(|| agenda.push(Time(4), ())));
        assert!(result.is_err());
    }

    #[test]
    fn runaway_world_hits_len_max() {
        let mut agenda = Agenda::new(2);
        agenda.push(Time(1), ());
        agenda.push(Time(1), ());
        let result = catch_unwind(AssertUnwindSafe(|| agenda.push(Time(1), ())));
        assert!(result.is_err());
    }
}
