//! The SQLite journal: the store's durable records in one table, written by one committer
//! thread with group commit.
//!
//! Owns the database file: WAL mode with `synchronous=FULL`, so a commit returns only once
//! the write-ahead log is synced; one transaction for every batch of records that arrived
//! while the previous commit was syncing, so many concurrent requests share one fsync.
//! Records are acknowledged (the durable sequence moves) only after their commit returned.
//! It never interprets records beyond decoding them for recovery.

use crate::store::Journal;
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tempest_engine::store::Record;
use tokio::sync::watch;

/// The schema version written into the file, checked on open. Format 2 writes one row per
/// commit (a JSON array of records); format 1 wrote one row per record and is still read, and
/// upgraded in place on open.
const FORMAT: &str = "tempest-sqlite/2";
const FORMAT_ONE_ROW_PER_RECORD: &str = "tempest-sqlite/1";
/// Records per transaction at most, so one huge burst does not hold every reply.
const BATCH_RECORD_COUNT_MAX: usize = 20_000;
/// Tests set this to delay every commit by so many ms: it widens the window between a record
/// queued and a record written, so a store that acknowledged too early loses acknowledged
/// writes to a SIGKILL, and the crash test sees it.
pub const COMMIT_DELAY_VAR: &str = "TEMPEST_TEST_COMMIT_DELAY_MS";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("database {path}: row {id} of the records table does not decode: {detail}")]
    BadRecord { path: PathBuf, id: i64, detail: String },
    #[error("database {path}: format {found:?}, this build reads {FORMAT:?}")]
    Format { path: PathBuf, found: String },
}

/// How the committer has batched so far.
#[derive(Debug, Default)]
pub struct Stats {
    pub commit_count: AtomicU64,
    pub record_count: AtomicU64,
    /// Total time spent in COMMIT (the fsync), in microseconds.
    pub commit_us_total: AtomicU64,
}

/// Batches of records on their way to the committer, each with its sequence number.
type Queue = mpsc::Sender<(u64, Vec<Record>)>;

pub struct SqliteJournal {
    /// None once the journal is dropped.
    queue: Mutex<Option<Queue>>,
    durable: watch::Receiver<u64>,
    stats: Arc<Stats>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Dropping the journal waits for its committer to write what was queued and stop, so no
/// write of this journal can land after another opens the same database (a host restarted in
/// the same process, or a test's simulated restart).
impl Drop for SqliteJournal {
    fn drop(&mut self) {
        drop(self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        let committer = self.committer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(committer) = committer {
            let _ = committer.join();
        }
    }
}

impl SqliteJournal {
    /// Opens (or creates) the database and reads every record, in order, for recovery.
    pub fn open(path: &Path) -> Result<(Arc<SqliteJournal>, Vec<Record>), Error> {
        let sqlite = |source| Error::Sqlite { path: path.to_owned(), source };
        let connection = Connection::open(path).map_err(sqlite)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
            )
            .map_err(sqlite)?;
        connection
            .execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('format', ?1)", params![FORMAT])
            .map_err(sqlite)?;
        let found: String = connection
            .query_row("SELECT value FROM meta WHERE key = 'format'", [], |row| row.get(0))
            .map_err(sqlite)?;
        if found == FORMAT_ONE_ROW_PER_RECORD {
            connection.execute("UPDATE meta SET value = ?1 WHERE key = 'format'", params![FORMAT]).map_err(sqlite)?;
        } else if found != FORMAT {
            return Err(Error::Format { path: path.to_owned(), found });
        }
        let records = read_records(&connection, path)?;
        let (sender, receiver) = mpsc::channel();
        let (durable_tx, durable) = watch::channel(0);
        let stats = Arc::new(Stats::default());
        let committer_stats = stats.clone();
        let committer_path = path.to_owned();
        let committer = std::thread::Builder::new()
            .name("tempest-sqlite".to_owned())
            .spawn(move || commit_loop(connection, &committer_path, receiver, durable_tx, &committer_stats))
            .expect("the committer thread starts");
        let journal =
            SqliteJournal { queue: Mutex::new(Some(sender)), durable, stats, committer: Mutex::new(Some(committer)) };
        Ok((Arc::new(journal), records))
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

fn read_records(connection: &Connection, path: &Path) -> Result<Vec<Record>, Error> {
    let sqlite = |source| Error::Sqlite { path: path.to_owned(), source };
    let mut statement = connection.prepare("SELECT id, body FROM records ORDER BY id").map_err(sqlite)?;
    let rows = statement.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))).map_err(sqlite)?;
    let mut records = Vec::new();
    for row in rows {
        let (id, body) = row.map_err(sqlite)?;
        let bad_record = |e: serde_json::Error| Error::BadRecord { path: path.to_owned(), id, detail: e.to_string() };
        // A row is one commit's records as an array; files written by format 1 hold one
        // record per row.
        if body.starts_with('[') {
            records.extend(serde_json::from_str::<Vec<Record>>(&body).map_err(bad_record)?);
        } else {
            records.push(serde_json::from_str(&body).map_err(bad_record)?);
        }
    }
    Ok(records)
}

fn commit_loop(
    mut connection: Connection,
    path: &Path,
    queue: mpsc::Receiver<(u64, Vec<Record>)>,
    durable: watch::Sender<u64>,
    stats: &Stats,
) {
    let delay =
        std::env::var(COMMIT_DELAY_VAR).ok().and_then(|ms| ms.parse().ok()).map(std::time::Duration::from_millis);
    // Blocks for the first batch, then takes whatever else queued up meanwhile: that is the
    // group commit. The loop ends when the store is dropped.
    while let Ok(first) = queue.recv() {
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        let mut batch = vec![first];
        let mut record_count = batch[0].1.len();
        while record_count < BATCH_RECORD_COUNT_MAX {
            match queue.try_recv() {
                Ok(next) => {
                    record_count += next.1.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let seq = batch.last().map(|(seq, _)| *seq).unwrap_or_default();
        let started = std::time::Instant::now();
        if let Err(error) = commit(&mut connection, &batch) {
            // Nothing after this can be made durable: close the durable channel so every
            // waiter answers with an error instead of acknowledging.
            tracing::error!(database = %path.display(), %error, "commit failed; the store stops acknowledging");
            return;
        }
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.commit_count.fetch_add(1, Ordering::Relaxed);
        stats.record_count.fetch_add(record_count as u64, Ordering::Relaxed);
        stats.commit_us_total.fetch_add(elapsed_us, Ordering::Relaxed);
        durable.send_replace(seq);
    }
}

/// Writes a batch as one row holding the JSON array of its records: one insert per commit
/// instead of one per record.
fn commit(connection: &mut Connection, batch: &[(u64, Vec<Record>)]) -> Result<(), rusqlite::Error> {
    let records: Vec<&Record> = batch.iter().flat_map(|(_, records)| records).collect();
    let body = serde_json::to_string(&records).expect("records serialize");
    let transaction = connection.transaction()?;
    transaction.prepare_cached("INSERT INTO records (body) VALUES (?1)")?.execute(params![body])?;
    transaction.commit()
}

impl Journal for SqliteJournal {
    fn submit(&self, seq: u64, records: Vec<Record>) {
        // A send fails only once the committer stopped after a failed commit; the waiters of
        // these records then see the closed durable channel.
        if let Some(queue) = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            let _ = queue.send((seq, records));
        }
    }

    fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }
}

/// Opens a durable store on the SQLite database at `path`, recovering what it holds.
pub async fn open_store(
    path: &Path,
    config: tempest_engine::store::Config,
) -> Result<(crate::store::DurableStore, Arc<SqliteJournal>), OpenError> {
    let (journal, records) = SqliteJournal::open(path)?;
    let record_count = records.len();
    let store = crate::store::DurableStore::recover(config, records, journal.clone()).await?;
    tracing::info!(database = %path.display(), record_count, epoch = store.epoch(), "store recovered");
    Ok((store, journal))
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Sqlite(#[from] Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: u32) -> Record {
        Record::Epoch { epoch }
    }

    /// A database as format 1 wrote it: one record per row.
    fn write_format_one(path: &Path, records: &[Record]) {
        let connection = Connection::open(path).expect("create");
        connection
            .execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE records (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
                 INSERT INTO meta (key, value) VALUES ('format', 'tempest-sqlite/1');",
            )
            .expect("schema");
        for record in records {
            let body = serde_json::to_string(record).expect("serialize");
            connection.execute("INSERT INTO records (body) VALUES (?1)", params![body]).expect("insert");
        }
    }

    #[test]
    fn batches_written_as_one_row_read_back_in_order_after_format_one_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        write_format_one(&path, &[epoch(1), epoch(2)]);
        let (journal, records) = SqliteJournal::open(&path).expect("open a format 1 file");
        assert_eq!(records, vec![epoch(1), epoch(2)]);
        journal.submit(1, vec![epoch(3), epoch(4)]);
        journal.submit(2, vec![epoch(5)]);
        drop(journal);
        let (_, records) = SqliteJournal::open(&path).expect("reopen");
        assert_eq!(records, (1..=5).map(epoch).collect::<Vec<_>>());
        let connection = Connection::open(&path).expect("open");
        let format: String =
            connection.query_row("SELECT value FROM meta WHERE key = 'format'", [], |row| row.get(0)).expect("format");
        assert_eq!(format, FORMAT);
        let row_count: i64 = connection.query_row("SELECT COUNT(*) FROM records", [], |row| row.get(0)).expect("count");
        assert!(row_count <= 4, "{row_count} rows: the 3 records written in 2 batches took more than 2 rows");
    }

    #[test]
    fn an_unknown_format_and_a_bad_row_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        write_format_one(&path, &[epoch(1)]);
        let connection = Connection::open(&path).expect("open");
        connection.execute("INSERT INTO records (body) VALUES ('[{\"Nope\": 1}]')", []).expect("insert");
        drop(connection);
        let error = SqliteJournal::open(&path).err().expect("a bad row fails the open").to_string();
        assert!(error.contains("row 2 of the records table does not decode"), "{error}");
        let connection = Connection::open(&path).expect("open");
        connection.execute("UPDATE meta SET value = 'tempest-sqlite/9' WHERE key = 'format'", []).expect("update");
        drop(connection);
        let error = SqliteJournal::open(&path).err().expect("an unknown format fails the open").to_string();
        assert!(error.contains("tempest-sqlite/9"), "{error}");
    }
}
