//! The agenda: every future event of a world, and the virtual clock they drive.
//!
//! Owns the order of events, (time, then push order), and `now`, which moves only when an event
//! is popped. Idle time is skipped, so a week-long wait costs one pop. It never decides what an
//! event means and never reads a real clock.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use tempest_engine::Time;

/// How many events a world usually has pending at once, reserved up front: a small world
/// would otherwise regrow its agenda's lists a few times over, and a sweep runs thousands.
const PENDING_EXPECTED: usize = 32;

/// Future events ordered by `(Time, sequence)`, where the sequence number is assigned at push,
/// so events due at the same time come out in the order they were scheduled.
///
/// A binary heap rather than an ordered map: every step pushes and pops a few events, and a
/// map keeps its events in nodes whose entries shift on every insert and on every pop of the
/// first, which cost more than the heap's few swaps. Keys are unique, so both give one order.
///
/// The heap holds only small keys; the events themselves wait in a slab of slots. A world's
/// events are over a hundred bytes, and a heap moves its entries a few times on every push
/// and pop, so moving keys instead of events saves most of the copying. Freed slots are
/// reused, so the slab grows only to the most events ever pending at once.
#[derive(Debug)]
pub struct Agenda<E> {
    keys: BinaryHeap<Key>,
    /// The events, by the slot their key names; `None` for a free slot.
    slots: Vec<Option<E>>,
    /// Slots whose events were popped, to be filled again before the slab grows.
    slots_free: Vec<u32>,
    now: Time,
    sequence_next: u64,
    /// A world holding more pending events than this has run away; it fails loudly instead.
    len_max: usize,
}

/// Where and when one scheduled event is; ordered so that the heap's greatest is the
/// earliest `(at, sequence)`. The slot takes no part in the order.
#[derive(Debug)]
struct Key {
    at: Time,
    sequence: u64,
    slot: u32,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.sequence).cmp(&(self.at, self.sequence))
    }
}

impl<E> Agenda<E> {
    pub fn new(len_max: usize) -> Agenda<E> {
        assert!(len_max > 0, "an agenda that holds nothing cannot run a world");
        assert!(u32::try_from(len_max).is_ok(), "len_max {len_max} does not fit the agenda's u32 slots");
        Agenda {
            keys: BinaryHeap::with_capacity(PENDING_EXPECTED),
            slots: Vec::with_capacity(PENDING_EXPECTED),
            slots_free: Vec::with_capacity(PENDING_EXPECTED),
            now: Time::ZERO,
            sequence_next: 0,
            len_max,
        }
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
        assert!(self.keys.len() < self.len_max, "agenda is full at len_max {}", self.len_max);
        let slot = match self.slots_free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(event);
                slot
            }
            None => {
                self.slots.push(Some(event));
                // At most `len_max` events are pending, and `new` checked that it fits a u32.
                (self.slots.len() - 1) as u32
            }
        };
        self.keys.push(Key { at, sequence: self.sequence_next, slot });
        self.sequence_next += 1;
    }

    /// Removes the earliest event and moves the clock to its time.
    pub fn pop(&mut self) -> Option<(Time, E)> {
        let Key { at, slot, .. } = self.keys.pop()?;
        assert!(at >= self.now, "agenda went back in time from {} to {at}", self.now);
        let event = self.slots[slot as usize].take().expect("a key names a filled slot");
        self.slots_free.push(slot);
        self.now = at;
        Some((at, event))
    }

    pub fn peek_time(&self) -> Option<Time> {
        self.keys.peek().map(|key| key.at)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
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
    fn interleaved_pushes_and_pops_keep_order_and_reuse_slots() {
        // A reference model: the same events in an ordered map keyed by (time, push order).
        let mut agenda = Agenda::new(1_000);
        let mut model = std::collections::BTreeMap::new();
        let mut pending_max = 0;
        for index in 0..600u64 {
            let at = Time(agenda.now().as_ms() + (index * 7_919) % 5);
            agenda.push(at, index);
            model.insert((at, index), index);
            pending_max = pending_max.max(agenda.len());
            if index % 3 != 0 {
                let expected = model.pop_first().map(|((at, _), event)| (at, event));
                assert_eq!(agenda.pop(), expected);
            }
        }
        while let Some(((at, _), event)) = model.pop_first() {
            assert_eq!(agenda.pop(), Some((at, event)));
        }
        assert_eq!(agenda.pop(), None);
        assert_eq!(agenda.slots.len(), pending_max, "freed slots are filled again before the slab grows");
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
