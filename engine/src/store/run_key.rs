//! `RunKey`: a run id as the store's ordered maps and sets key on it.
//!
//! Owns one promise: a `RunKey` orders, and is equal, exactly as its id string is. Every
//! iteration order of the store (which run a poll finds first, in which order a tick fires
//! timers) follows the string order of run ids, and with it every trace; a key that ordered
//! any other way would change them. It must never order by anything but its id: the run's
//! slot it carries is along for the ride, never compared.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// How many leading bytes of the id the key holds as integers: run ids are `r` and 12 hex
/// digits, so all of them.
const HEAD_LEN: usize = 16;

/// A run id with its first 16 bytes held as two big-endian integers (zero-padded), compared
/// before the string. The store's B-trees compare run ids on every lookup, insert and removal;
/// two integer comparisons decide what a `memcmp` call of the whole id would, and for ids no
/// longer than 16 bytes they decide equality too.
///
/// Why this is the string order: big-endian integers order as their bytes do, so heads that
/// differ order as the ids' first 16 bytes, with a shorter id's padding (zero) below any byte
/// the longer one has there, unless that byte is itself zero. Equal heads mean one id's first
/// 16 bytes are the other's, or, for an id shorter than 16 bytes, that it is a prefix of the
/// other (followed there by zero bytes only): the shorter one first, as for strings.
///
/// The key also carries the run's slot, its place in the store's list of runs, so that an
/// index entry leads to its run without a search. Within one store ids and slots go one to
/// one, so leaving the slot out of the order and of equality loses nothing.
#[derive(Clone)]
pub(super) struct RunKey {
    head: [u64; 2],
    id: Arc<str>,
    slot: usize,
}

impl RunKey {
    pub(super) fn new(id: &str, slot: usize) -> RunKey {
        let mut bytes = [0u8; HEAD_LEN];
        let len = id.len().min(HEAD_LEN);
        bytes[..len].copy_from_slice(&id.as_bytes()[..len]);
        let (high, low) = bytes.split_at(8);
        let word = |half: &[u8]| u64::from_be_bytes(half.try_into().expect("8 bytes"));
        RunKey { head: [word(high), word(low)], id: Arc::from(id), slot }
    }

    pub(super) fn as_str(&self) -> &str {
        &self.id
    }

    pub(super) fn slot(&self) -> usize {
        self.slot
    }
}

impl Ord for RunKey {
    fn cmp(&self, other: &RunKey) -> Ordering {
        self.head.cmp(&other.head).then_with(|| {
            let (mine, theirs) = (self.id.len(), other.id.len());
            if mine.min(theirs) < HEAD_LEN {
                // The shorter id is a prefix of the other (see the type's comment).
                mine.cmp(&theirs)
            } else {
                self.id.as_bytes()[HEAD_LEN..].cmp(&other.id.as_bytes()[HEAD_LEN..])
            }
        })
    }
}

impl PartialOrd for RunKey {
    fn partial_cmp(&self, other: &RunKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for RunKey {
    fn eq(&self, other: &RunKey) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for RunKey {}

/// Lets a map keyed on `RunKey` be searched by a plain id (at the protocol's edge, where a
/// request names a run); that search compares strings, in the same order.
impl Borrow<str> for RunKey {
    fn borrow(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.id, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids that end, differ or hold zero bytes on either side of the 8- and 16-byte marks.
    fn tricky_ids() -> Vec<String> {
        let mut ids = vec![
            String::new(),
            "\0".to_owned(),
            "\0\0".to_owned(),
            "r".to_owned(),
            "r\0".to_owned(),
            "r0".to_owned(),
            "r00000000000".to_owned(),
            "r000000000000".to_owned(),
            "r000000000001".to_owned(),
            "r00000000000\0".to_owned(),
            "r0000000\0".to_owned(),
            "r0000000".to_owned(),
            "r00000000".to_owned(),
            "rffffffffffff".to_owned(),
            "s".to_owned(),
            "é".to_owned(),
            "\u{7f}".to_owned(),
        ];
        for len in [7, 8, 9, 15, 16, 17, 24] {
            for last in ['\0', 'a', 'b', '\u{ff}'] {
                let mut id = "x".repeat(len - 1);
                id.push(last);
                ids.push(id.clone());
                id.push('\0');
                ids.push(id.clone());
                id.push('z');
                ids.push(id);
            }
        }
        ids
    }

    #[test]
    fn keys_order_and_compare_equal_exactly_as_their_ids() {
        let ids = tricky_ids();
        for a in &ids {
            for b in &ids {
                // Different slots, so equality can only come from the ids.
                let (key_a, key_b) = (RunKey::new(a, 1), RunKey::new(b, 2));
                assert_eq!(key_a.cmp(&key_b), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(key_a == key_b, a == b, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn a_set_of_keys_iterates_in_id_order_and_finds_keys_by_id() {
        let ids = tricky_ids();
        let keys: std::collections::BTreeSet<RunKey> =
            ids.iter().enumerate().map(|(i, id)| RunKey::new(id, i)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(keys.iter().map(RunKey::as_str).collect::<Vec<_>>(), sorted);
        assert!(ids.iter().all(|id| keys.contains(id.as_str())));
        assert!(!keys.contains("r00000000000\0\0"));
    }
}
