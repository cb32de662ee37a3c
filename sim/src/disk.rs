//! The simulated disk under the store: an append-only log that only keeps what was synced.
//!
//! Owns the bytes on "disk", the framing of records and the damage a crash does: the unsynced
//! tail is lost, and the first lost record may be left half written. Recovery reads frames until
//! one fails its length or checksum and cuts the log there. It never interprets record contents
//! and never decides when to crash.

use crate::plan::{Decided, Gate};
use crate::rng::Rng;
use crate::swarm::{fault, FaultCounts};
use tempest_engine::{hash, Time};

/// Bytes in a frame header: the record length (u32 LE), then its checksum (u64 LE).
const HEADER_LEN: usize = 4 + 8;

/// What a crash destroyed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashLoss {
    /// Records appended after the last sync; none of them survive whole.
    pub unsynced_records_lost: usize,
    /// The first lost record left a partial frame on disk for recovery to find.
    pub torn: bool,
}

/// What recovery read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub records: Vec<Vec<u8>>,
    /// A partial or corrupt frame ended the log; it has been truncated away.
    pub torn_tail_detected: bool,
}

#[derive(Debug, Default)]
pub struct Disk {
    /// Bytes that survive a crash.
    durable: Vec<u8>,
    /// Framed records appended since the last sync, still in the page cache.
    unsynced: Vec<Vec<u8>>,
    /// Set by a crash: the log may end in a torn frame, so nothing may be appended after it
    /// until recovery has cut it off.
    recovery_needed: bool,
    fault_counts: FaultCounts,
    /// Decides torn writes (see `plan::Gate`).
    pub gate: Gate,
}

impl Disk {
    pub fn new() -> Disk {
        Disk::default()
    }

    pub fn fault_counts(&self) -> &FaultCounts {
        &self.fault_counts
    }

    /// Buffers one record; it is not durable until the next `sync`.
    pub fn append(&mut self, record: &[u8]) {
        assert!(!self.recovery_needed, "append after a crash before recovery");
        let len = u32::try_from(record.len()).expect("record longer than u32::MAX bytes");
        let mut frame = Vec::with_capacity(HEADER_LEN + record.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&checksum(record).to_le_bytes());
        frame.extend_from_slice(record);
        self.unsynced.push(frame);
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) {
        assert!(!self.recovery_needed, "sync after a crash before recovery");
        for frame in self.unsynced.drain(..) {
            self.durable.extend_from_slice(&frame);
        }
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
            let frame = &self.unsynced[0];
            if rng.chance(0.5) {
                let cut = rng.range_inclusive(1, frame.len() as u64 - 1) as usize;
                self.durable.extend_from_slice(&frame[..cut]);
            } else {
                // Zero at least one non-zero byte, so the torn frame really differs from the
                // whole one. The length and checksum are never all zero, so one exists.
                let last_nonzero = frame.iter().rposition(|b| *b != 0).expect("frame is non-zero");
                let cut = rng.range_inclusive(0, last_nonzero as u64) as usize;
                self.durable.extend_from_slice(&frame[..cut]);
                self.durable.resize(self.durable.len() + frame.len() - cut, 0);
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
    pub fn recover(&mut self) -> Recovered {
        assert!(self.unsynced.is_empty(), "recovery with unsynced records; crash first");
        let mut records = Vec::new();
        let mut position = 0;
        while let Some((record, frame_len)) = read_frame(&self.durable[position..]) {
            records.push(record.to_vec());
            position += frame_len;
        }
        let torn_tail_detected = position < self.durable.len();
        self.durable.truncate(position);
        self.recovery_needed = false;
        Recovered { records, torn_tail_detected }
    }
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
        let mut disk = Disk::new();
        disk.append(&record(0));
        disk.append(&record(1));
        disk.sync();
        disk.append(&record(2));
        let loss = disk.crash(Time::ZERO, &mut Rng::new(1), 0.0);
        assert_eq!(loss, CrashLoss { unsynced_records_lost: 1, torn: false });
        let recovered = disk.recover();
        assert_eq!(recovered.records, [record(0), record(1)]);
        assert!(!recovered.torn_tail_detected);
        assert_eq!(disk.fault_counts().get(fault::DISK_UNSYNCED_LOST), 1);
    }

    #[test]
    fn crash_with_nothing_unsynced_loses_nothing() {
        let mut disk = Disk::new();
        disk.append(b"");
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
            let mut disk = Disk::new();
            let synced_count = rng.below(4) as usize;
            for index in 0..synced_count {
                disk.append(&record(index));
            }
            disk.sync();
            // Payloads of every length, including zero bytes, so tears land everywhere.
            let torn_payload: Vec<u8> = (0..rng.below(40)).map(|_| rng.below(3) as u8).collect();
            disk.append(&torn_payload);
            disk.append(&record(99));

            let loss = disk.crash(Time::ZERO, &mut rng, 1.0);
            assert_eq!(loss, CrashLoss { unsynced_records_lost: 2, torn: true }, "seed {seed}");
            let recovered = disk.recover();
            let expected: Vec<Vec<u8>> = (0..synced_count).map(record).collect();
            assert_eq!(recovered.records, expected, "seed {seed}");
            assert!(recovered.torn_tail_detected, "seed {seed}");

            // The torn bytes are gone: new records land right after the good ones.
            disk.append(&record(7));
            disk.sync();
            let after = disk.recover();
            assert!(!after.torn_tail_detected, "seed {seed}");
            assert_eq!(after.records.last(), Some(&record(7)), "seed {seed}");
            assert_eq!(after.records.len(), synced_count + 1, "seed {seed}");
        }
    }

    #[test]
    fn corrupted_payload_fails_checksum_even_with_valid_length() {
        let mut disk = Disk::new();
        disk.append(b"approved");
        disk.sync();
        let last = disk.durable.len() - 1;
        disk.durable[last] ^= 1;
        let recovered = disk.recover();
        assert!(recovered.records.is_empty());
        assert!(recovered.torn_tail_detected);
    }

    #[test]
    fn append_after_crash_without_recovery_panics() {
        let mut disk = Disk::new();
        disk.crash(Time::ZERO, &mut Rng::new(3), 0.0);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| disk.append(b"late")));
        assert!(result.is_err());
    }
}
