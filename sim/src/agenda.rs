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

/// How many low bits of a key hold the slot; `len_max` must fit them.
const SLOT_BITS: u32 = 24;
/// How many bits of a key hold the sequence number, above the slot.
const SEQUENCE_BITS: u32 = 64 - SLOT_BITS;

/// Where and when one scheduled event is, packed in one number: the time in the high 64 bits,
/// then the sequence number, then the slot. Since sequence numbers are unique, the slot never
/// decides an order, so comparing the numbers orders events by `(at, sequence)`; the heap's
/// greatest key is the earliest. Packed because the heap compares and moves keys a few times
/// on every push and pop, and one 16-byte number does both with fewer instructions than a
/// struct of three fields.
#[derive(Debug, PartialEq, Eq)]
struct Key(u128);

impl Key {
    fn new(at: Time, sequence: u64, slot: u32) -> Key {
        Key(u128::from(at.as_ms()) << 64 | u128::from(sequence << SLOT_BITS | u64::from(slot)))
    }

    fn at(&self) -> Time {
        Time((self.0 >> 64) as u64)
    }

    fn slot(&self) -> u32 {
        (self.0 as u64 & ((1 << SLOT_BITS) - 1)) as u32
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.cmp(&self.0)
    }
}

impl<E> Agenda<E> {
    pub fn new(len_max: usize) -> Agenda<E> {
        assert!(len_max > 0, "an agenda that holds nothing cannot run a world");
        assert!(len_max <= 1 << SLOT_BITS, "len_max {len_max} does not fit the agenda's {SLOT_BITS}-bit slots");
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
                // At most `len_max` events are pending, and `new` checked that it fits the slot bits.
                (self.slots.len() - 1) as u32
            }
        };
        // A world stops long before: it takes at most millions of steps, each pushing a few.
        assert!(self.sequence_next < 1 << SEQUENCE_BITS, "agenda ran out of sequence numbers");
        self.keys.push(Key::new(at, self.sequence_next, slot));
        self.sequence_next += 1;
    }

    /// Removes the earliest event and moves the clock to its time.
    pub fn pop(&mut self) -> Option<(Time, E)> {
        let key = self.keys.pop()?;
        let (at, slot) = (key.at(), key.slot());
        assert!(at >= self.now, "agenda went back in time from {} to {at}", self.now);
        let event = self.slots[slot as usize].take().expect("a key names a filled slot");
        self.slots_free.push(slot);
        self.now = at;
        Some((at, event))
    }

    pub fn peek_time(&self) -> Option<Time> {
        self.keys.peek().map(Key::at)
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
    fn packed_keys_keep_time_and_slot_at_their_extremes() {
        let key = Key::new(Time(u64::MAX), (1 << SEQUENCE_BITS) - 1, (1 << SLOT_BITS) - 1);
        assert_eq!((key.at(), key.slot()), (Time(u64::MAX), (1 << SLOT_BITS) - 1));
        // A later time wins over any sequence number; at one time, the earlier push is first.
        assert!(Key::new(Time(1), (1 << SEQUENCE_BITS) - 1, 0) > Key::new(Time(2), 0, 0));
        assert!(Key::new(Time(2), 3, (1 << SLOT_BITS) - 1) > Key::new(Time(2), 4, 0));
        let mut agenda = Agenda::new(10);
        agenda.push(Time(u64::MAX), "last");
        agenda.push(Time(7), "first");
        assert_eq!(agenda.pop(), Some((Time(7), "first")));
        assert_eq!(agenda.pop(), Some((Time(u64::MAX), "last")));
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
