//! One conformance suite, two stores: the SQLite store, and the engine's `Store` over the
//! simulator's `Disk` (the store the simulated worlds run). Both must keep every claim of
//! `tempest_runtime::conformance`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tempest_engine::store::{Config, Record};
use tempest_runtime::conformance::{self, Subject};
use tempest_runtime::store::{DurableStore, Journal, RunStore};
use tempest_sim::disk::Disk;
use tokio::sync::watch;

struct SqliteSubject {
    path: std::path::PathBuf,
    store: Option<DurableStore>,
    _dir: tempfile::TempDir,
}

impl Subject for SqliteSubject {
    fn store(&self) -> &dyn RunStore {
        self.store.as_ref().expect("open")
    }

    fn restart(&mut self) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move {
            // Dropping the store stops its journal once the queued writes are done, so the
            // reopened store is the only writer; the tests rely only on what was acknowledged.
            self.store = None;
            let (store, _) = tempest_runtime::sqlite::open_store(&self.path, Config::default()).await.expect("reopen");
            self.store = Some(store);
        })
    }
}

#[tokio::test]
async fn sqlite_store_keeps_the_protocol() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tempest.db");
    let (store, _) = tempest_runtime::sqlite::open_store(&path, Config::default()).await.expect("open");
    let mut subject = SqliteSubject { path, store: Some(store), _dir: dir };
    conformance::run_all(&mut subject).await;
}

/// The simulator's disk as a journal: every submit is appended and synced, as the simulated
/// store host does before it replies.
struct SimDiskJournal {
    disk: Arc<Mutex<Disk<Record>>>,
    durable: watch::Sender<u64>,
}

impl Journal for SimDiskJournal {
    fn submit(&self, seq: u64, records: Vec<Record>) {
        let mut disk = self.disk.lock().expect("disk");
        for record in records {
            disk.append(record);
        }
        disk.sync();
        self.durable.send_replace(seq);
    }

    fn durable(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }
}

struct SimSubject {
    disk: Arc<Mutex<Disk<Record>>>,
    store: DurableStore,
}

async fn sim_store(disk: &Arc<Mutex<Disk<Record>>>) -> DurableStore {
    let records: Vec<Record> = disk.lock().expect("disk").recover().records.to_vec();
    let (durable, _) = watch::channel(0);
    let journal = Arc::new(SimDiskJournal { disk: disk.clone(), durable });
    DurableStore::recover(Config::default(), records, journal).await.expect("recover")
}

impl Subject for SimSubject {
    fn store(&self) -> &dyn RunStore {
        &self.store
    }

    fn restart(&mut self) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move {
            self.store = sim_store(&self.disk).await;
        })
    }
}

#[tokio::test]
async fn simulated_store_keeps_the_protocol() {
    let disk = Arc::new(Mutex::new(Disk::new()));
    let store = sim_store(&disk).await;
    let mut subject = SimSubject { disk, store };
    conformance::run_all(&mut subject).await;
}
