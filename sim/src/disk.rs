//! The simulated disk under the store: an append-only log that only keeps what was synced.
//!
//! Owns what is "on disk", the framing of records and the damage a crash does: the unsynced
//! tail is lost, and the first lost record may be left half written. Recovery reads frames until
//! one fails its length or checksum and cuts the log there. It never interprets record contents
//! and never decides when to crash.
//!
//! Whole records are kept as values, not bytes: a frame that was written whole reads back as
//! exactly what was written (encoding is lossless, `Encoded`'s contract, tested for the store's
//! records), so encoding every record on append and decoding it on recovery would only spend
//! time. The one frame a crash tears is encoded for real, torn at the byte level, and judged by
//! its length and checksum on recovery, so tearing and its detection stay byte-for-byte real.

use crate::plan::{Decided, Gate};
use crate::rng::Rng;
use crate::swarm::{fault, FaultCounts};
use tempest_engine::{hash, Time};

/// Bytes in a frame header: the record length (u32 LE), then its checksum (u64 LE).
const HEADER_LEN: usize = 4 + 8;

/// A record's bytes on disk. `decode(encode(r))` must give back `r`.
pub trait Encoded: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

/// Raw bytes are their own encoding.
impl Encoded for Vec<u8> {
    fn encode(&self) -> Vec<u8> {
        self.clone()
    }

    fn decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
        Ok(bytes.to_vec())
    }
}

/// What a crash destroyed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashLoss {
    /// Records appended after the last sync; none of them survive whole.
    pub unsynced_records_lost: usize,
    /// The first lost record left a partial frame on disk for recovery to find.
    pub torn: bool,
}

/// What recovery read back.
#[derive(Debug, PartialEq, Eq)]
pub struct Recovered<'d, R> {
    pub records: &'d [R],
    /// A partial or corrupt frame ended the log; it has been truncated away.
    pub torn_tail_detected: bool,
}

#[derive(Debug)]
pub struct Disk<R> {
    /// Records whose frames were synced whole; they survive a crash.
    durable: Vec<R>,
    /// The bytes a crash left after the last whole frame: a torn frame, until recovery reads
    /// it. Empty when the log ends on a frame boundary.
    durable_tail: Vec<u8>,
    /// Records appended since the last sync, still in the page cache.
    unsynced: Vec<R>,
    /// Set by a crash: the log may end in a torn frame, so nothing may be appended after it
    /// until recovery has cut it off.
    recovery_needed: bool,
    fault_counts: FaultCounts,
    /// Decides torn writes (see `plan::Gate`).
    pub gate: Gate,
}

impl<R> Default for Disk<R> {
    fn default() -> Disk<R> {
        Disk {
            durable: Vec::new(),
            durable_tail: Vec::new(),
            unsynced: Vec::new(),
            recovery_needed: false,
            fault_counts: FaultCounts::default(),
            gate: Gate::default(),
        }
    }
}

impl<R: Encoded> Disk<R> {
    pub fn new() -> Disk<R> {
        Disk::default()
    }

    pub fn fault_counts(&self) -> &FaultCounts {
        &self.fault_counts
    }

    /// Buffers one record; it is not durable until the next `sync`.
    pub fn append(&mut self, record: R) {
        assert!(!self.recovery_needed, "append after a crash before recovery");
        self.unsynced.push(record);
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) {
        assert!(!self.recovery_needed, "sync after a crash before recovery");
        self.durable.append(&mut self.unsynced);
    }

    /// Power loss: the unsynced tail is gone, and with `torn_write_probability` the first lost
    /// record was partly written. A torn frame is either cut short (the file ends inside it) or
    /// keeps its full length with the rest reading as zeros (the file size reached the disk
    /// before the data did, as ext4 and XFS can show after a crash mid-append).
    pub fn crash(&mut self, now: Time, rng: &mut Rng, torn_write_probability: f64) -> CrashLoss {
        let unsynced_records_lost = self.unsynced.len();
        let torn = unsynced_records_lost > 0
            && self.gate.decide(Decided::DiskTornWrite, now, rng.chance(torn_write_probability));
        if torn {
            let frame = frame(&self.unsynced[0]);
            if rng.chance(0.5) {
                let cut = rng.range_inclusive(1, frame.len() as u64 - 1) as usize;
                self.durable_tail.extend_from_slice(&frame[..cut]);
            } else {
                // Zero at least one non-zero byte, so the torn frame really differs from the
                // whole one. The length and checksum are never all zero, so one exists.
                let last_nonzero = frame.iter().rposition(|b| *b != 0).expect("frame is non-zero");
                let cut = rng.range_inclusive(0, last_nonzero as u64) as usize;
                self.durable_tail.extend_from_slice(&frame[..cut]);
                self.durable_tail.resize(self.durable_tail.len() + frame.len() - cut, 0);
            }
            self.fault_counts.add(fault::DISK_TORN_WRITE);
        }
        if unsynced_records_lost > 0 {
            self.fault_counts.add(fault::DISK_UNSYNCED_LOST);
        }
        self.unsynced.clear();
        self.recovery_needed = true;
        CrashLoss { unsynced_records_lost, torn }
    }

    /// Reads the durable log up to the first frame whose length or checksum does not check
    /// out, truncates the log there, and returns the records before it.
    pub fn recover(&mut self) -> Recovered<'_, R> {
        assert!(self.unsynced.is_empty(), "recovery with unsynced records; crash first");
        let mut position = 0;
        while let Some((bytes, frame_len)) = read_frame(&self.durable_tail[position..]) {
            let record = R::decode(bytes)
                .unwrap_or_else(|error| panic!("a record that passed its checksum does not decode: {error}"));
            self.durable.push(record);
            position += frame_len;
        }
        let torn_tail_detected = position < self.durable_tail.len();
        self.durable_tail.clear();
        self.recovery_needed = false;
        Recovered { records: &self.durable, torn_tail_detected }
    }
}

/// A record's frame as it would be written: header, then the encoded record.
fn frame(record: &impl Encoded) -> Vec<u8> {
    let record = record.encode();
    let len = u32::try_from(record.len()).expect("record longer than u32::MAX bytes");
    let mut frame = Vec::with_capacity(HEADER_LEN + record.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&checksum(&record).to_le_bytes());
    frame.extend_from_slice(&record);
    frame
}

/// Covers the length too, so a torn length field cannot make a shorter prefix look valid.
fn checksum(record: &[u8]) -> u64 {
    hash::hash_bytes(record.len() as u64, record)
}

/// The record at the start of `bytes` and its frame length, if the frame is whole and sound.
fn read_frame(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let header = bytes.get(..HEADER_LEN)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let stored = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
    let record = bytes.get(HEADER_LEN..HEADER_LEN.checked_add(len)?)?;
    (checksum(record) == stored).then_some((record, HEADER_LEN + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: usize) -> Vec<u8> {
        format!("event-{index}").into_bytes()
    }

    #[test]
    fn synced_records_survive_a_crash_and_unsynced_ones_do_not() {
        let mut disk: Disk<Vec<u8>> = Disk::new();
        disk.append(record(0));
        disk.append(record(1));
        disk.sync();
        disk.append(record(2));
        let loss = disk.crash(Time::ZERO, &mut Rng::new(1), 0.0);
        assert_eq!(loss, CrashLoss { unsynced_records_lost: 1, torn: false });
        let recovered = disk.recover();
        assert_eq!(recovered.records, [record(0), record(1)]);
        assert!(!recovered.torn_tail_detected);
        assert_eq!(disk.fault_counts().get(fault::DISK_UNSYNCED_LOST), 1);
    }

    #[test]
    fn crash_with_nothing_unsynced_loses_nothing() {
        let mut disk: Disk<Vec<u8>> = Disk::new();
        disk.append(Vec::new());
        disk.sync();
        let loss = disk.crash(Time::ZERO, &mut Rng::new(2), 1.0);
        assert_eq!(loss, CrashLoss { unsynced_records_lost: 0, torn: false });
        assert_eq!(disk.recover().records, [Vec::<u8>::new()]);
        assert_eq!(disk.fault_counts().total(), 0);
    }

    #[test]
    fn torn_record_is_detected_by_checksum_and_truncated() {
        for seed in 0..2000 {
            let mut rng = Rng::new(seed);
            let mut disk: Disk<Vec<u8>> = Disk::new();
            let synced_count = rng.below(4) as usize;
            for index in 0..synced_count {
                disk.append(record(index));
            }
            disk.sync();
            // Payloads of every length, including zero bytes, so tears land everywhere.
            let torn_payload: Vec<u8> = (0..rng.below(40)).map(|_| rng.below(3) as u8).collect();
            disk.append(torn_payload);
            disk.append(record(99));

            let loss = disk.crash(Time::ZERO, &mut rng, 1.0);
            assert_eq!(loss, CrashLoss { unsynced_records_lost: 2, torn: true }, "seed {seed}");
            let recovered = disk.recover();
            let expected: Vec<Vec<u8>> = (0..synced_count).map(record).collect();
            assert_eq!(recovered.records, expected, "seed {seed}");
            assert!(recovered.torn_tail_detected, "seed {seed}");

            // The torn bytes are gone: new records land right after the good ones.
            disk.append(record(7));
            disk.sync();
            let after = disk.recover();
            assert!(!after.torn_tail_detected, "seed {seed}");
            assert_eq!(after.records.last(), Some(&record(7)), "seed {seed}");
            assert_eq!(after.records.len(), synced_count + 1, "seed {seed}");
        }
    }

    #[test]
    fn corrupted_payload_fails_checksum_even_with_valid_length() {
        let mut disk: Disk<Vec<u8>> = Disk::new();
        let mut corrupt = frame(&b"approved".to_vec());
        *corrupt.last_mut().expect("frame has bytes") ^= 1;
        disk.durable_tail = corrupt;
        let recovered = disk.recover();
        assert!(recovered.records.is_empty());
        assert!(recovered.torn_tail_detected);
    }

    #[test]
    fn a_sound_frame_left_after_the_whole_records_is_decoded_and_kept() {
        let mut disk: Disk<Vec<u8>> = Disk::new();
        disk.append(record(0));
        disk.sync();
        disk.durable_tail = frame(&record(1));
        let recovered = disk.recover();
        assert_eq!(recovered.records, [record(0), record(1)]);
        assert!(!recovered.torn_tail_detected);
    }

    #[test]
    fn append_after_crash_without_recovery_panics() {
        let mut disk: Disk<Vec<u8>> = Disk::new();
        disk.crash(Time::ZERO, &mut Rng::new(3), 0.0);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| disk.append(b"late".to_vec())));
        assert!(result.is_err());
    }
}
