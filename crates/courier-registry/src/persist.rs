//! Persistence: three redb tables, written by one thread that commits the
//! changes of concurrent requests together.
//!
//! - `registrations`: `service \0 id` -> the registration as JSON;
//! - `leases`: lease id -> TTL in milliseconds;
//! - `meta`: `revision` and `last_lease`.
//!
//! Group commit: each request's changes go to the writer thread with a
//! oneshot; the thread takes everything waiting, applies it in one write
//! transaction, commits (durably, redb's default), and answers them all. A
//! burst of registrations costs one disk sync, not one each.
//!
//! Durable-through revision: changes are queued under the store's lock, so
//! the writer commits them in revision order, and after each commit it
//! publishes the highest revision written. Answers to `List` and `Watch`
//! wait until it reaches their own revision ([`Persistence::durable_through`]),
//! so no watcher is told of a change a crash could still lose: a concurrent
//! registration applied in memory but not yet on disk stays invisible until
//! the next group commit (a few milliseconds).
//!
//! Opening is careful about what it finds: no data file is a first start
//! (said in the log); a data file of 0 bytes is a file that was truncated
//! or never written, and opening it as an empty registry would silently
//! forget every registration, so it is refused
//! ([`PersistError::EmptyDataFile`]) unless the operator says to start
//! empty. Records that cannot be read, or that break today's limits (an
//! instance over `MAX_INSTANCE_BYTES`), are skipped with a warning each;
//! their providers find their leases holding nothing and register again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use courier::registry::Registration;
use courier::registry::mem::store::{Change, Store};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot, watch};

const REGISTRATIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("registrations");
const LEASES: TableDefinition<'_, u64, u64> = TableDefinition::new("leases");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// The most changes one transaction takes.
const MAX_BATCH: usize = 4096;

/// redb's page cache: enough for the B-tree's inner pages, which every
/// write walks, not for the data (see `Persistence::open`).
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The database file in the data directory.
pub(crate) const DATA_FILE: &str = "registry.redb";

/// Why the registry's state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The data directory could not be used.
    #[error("registry data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The database failed.
    #[error("registry database: {0}")]
    Database(String),
    /// The writer thread is gone.
    #[error("the registry's writer stopped")]
    WriterGone,
    /// The data file exists but is empty: opening it would start an empty
    /// registry and forget every registration without a word.
    #[error(
        "the registry data file {} is empty (0 bytes): it was truncated or never completely written, \
         and opening it would forget every registration. Restore it from a backup, or start an empty \
         registry on purpose (`courier registry serve --allow-empty-data`, or \
         `OpenOptions::allow_empty_data`)",
        path.display()
    )]
    EmptyDataFile {
        /// The file.
        path: PathBuf,
    },
}

fn db_error(err: impl std::fmt::Display) -> PersistError {
    PersistError::Database(err.to_string())
}

type Batch = (Vec<Change>, Option<oneshot::Sender<Result<(), String>>>);

pub(crate) struct Persistence {
    writer: mpsc::UnboundedSender<Batch>,
    /// The highest revision the writer has committed (or given up on: see
    /// `write_loop`).
    durable: watch::Receiver<u64>,
}

impl Persistence {
    /// Open the database in `dir`, load the store, start the writer thread.
    /// An empty (0-byte) data file is refused unless `allow_empty`.
    pub(crate) fn open(dir: &Path, allow_empty: bool) -> Result<(Persistence, Store), PersistError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DATA_FILE);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == 0 => {
                if !allow_empty {
                    let err = PersistError::EmptyDataFile { path };
                    tracing::error!("{err}");
                    return Err(err);
                }
                tracing::warn!(
                    path = %path.display(),
                    "the registry data file is empty (0 bytes); starting an empty registry as asked: \
                     every provider registers again when its renewal finds its lease unknown"
                );
                // redb writes a fresh database over the empty file.
            }
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no registry data file yet: starting an empty registry");
            }
            Err(err) => return Err(err.into()),
        }
        // The database is read whole once, at start (`load`); after that
        // it is written, never read: redb's default 1 GiB cache would only
        // keep a second copy of every registration in memory.
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(&path).map_err(db_error)?;
        let store = load(&db)?;
        let (writer, batches) = mpsc::unbounded_channel();
        // Everything the store holds now came from the disk.
        let (durable_sender, durable) = watch::channel(store.revision());
        std::thread::Builder::new()
            .name("courier-registry-writer".into())
            .spawn(move || write_loop(db, batches, &durable_sender))?;
        Ok((Persistence { writer, durable }, store))
    }

    /// Wait until every change up to `revision` is on disk. Returns at once
    /// if the writer has stopped (the registry is going away, and its
    /// answers with it).
    pub(crate) async fn durable_through(&self, revision: u64) {
        let mut durable = self.durable.clone();
        let _ = durable.wait_for(|written| *written >= revision).await;
    }

    /// Queue `changes` for the disk, in call order (call it under the
    /// store's lock); the receipt resolves once they are durable.
    pub(crate) fn enqueue(&self, changes: Vec<Change>) -> Receipt {
        let (done, result) = oneshot::channel();
        let sent = self.writer.send((changes, Some(done))).is_ok();
        Receipt { result, sent }
    }
}

/// Resolves when the changes it was given for are on disk.
pub(crate) struct Receipt {
    result: oneshot::Receiver<Result<(), String>>,
    sent: bool,
}

impl Receipt {
    pub(crate) async fn durable(self) -> Result<(), PersistError> {
        if !self.sent {
            return Err(PersistError::WriterGone);
        }
        match self.result.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(PersistError::Database(reason)),
            Err(_) => Err(PersistError::WriterGone),
        }
    }
}

fn key(service: &str, id: &str) -> String {
    format!("{service}\u{0}{id}")
}

fn load(db: &Database) -> Result<Store, PersistError> {
    // Create the tables on first open so reads below find them.
    let txn = db.begin_write().map_err(db_error)?;
    {
        txn.open_table(REGISTRATIONS).map_err(db_error)?;
        txn.open_table(LEASES).map_err(db_error)?;
        txn.open_table(META).map_err(db_error)?;
    }
    txn.commit().map_err(db_error)?;

    let txn = db.begin_read().map_err(db_error)?;
    let meta = txn.open_table(META).map_err(db_error)?;
    let revision = meta.get("revision").map_err(db_error)?.map_or(0, |v| v.value());
    let last_lease = meta.get("last_lease").map_err(db_error)?.map_or(0, |v| v.value());
    let mut leases = Vec::new();
    for entry in txn.open_table(LEASES).map_err(db_error)?.iter().map_err(db_error)? {
        let (id, ttl_ms) = entry.map_err(db_error)?;
        leases.push((id.value(), Duration::from_millis(ttl_ms.value())));
    }
    let mut registrations = Vec::new();
    for entry in txn.open_table(REGISTRATIONS).map_err(db_error)?.iter().map_err(db_error)? {
        let (key, value) = entry.map_err(db_error)?;
        match serde_json::from_slice::<Registration>(value.value()) {
            Ok(registration) => match registration.instance.validate() {
                Ok(()) => registrations.push(registration),
                // Accepted before today's limits (an instance too large to
                // deliver, say): serving it would break every answer about
                // its service.
                Err(reason) => tracing::warn!(
                    key = %key.value().replace('\u{0}', "/"),
                    %reason,
                    "skipping a registry record that breaks the registry's limits"
                ),
            },
            // One bad record must not keep the registry from starting; the
            // instance re-registers when its lease is not found.
            Err(err) => {
                tracing::warn!(key = %key.value().replace('\u{0}', "/"), %err, "skipping a corrupt registry record");
            }
        }
    }
    let last_lease = last_lease.max(leases.iter().map(|(id, _)| *id).max().unwrap_or(0));
    tracing::info!(revision, leases = leases.len(), instances = registrations.len(), "registry state loaded");
    Ok(Store::restore(revision, last_lease, leases, registrations, Instant::now()))
}

fn write_loop(db: Database, mut batches: mpsc::UnboundedReceiver<Batch>, durable: &watch::Sender<u64>) {
    while let Some(first) = batches.blocking_recv() {
        let mut pending = vec![first];
        let mut count = pending[0].0.len();
        while count < MAX_BATCH {
            match batches.try_recv() {
                Ok(batch) => {
                    count += batch.0.len();
                    pending.push(batch);
                }
                Err(_) => break,
            }
        }
        let result =
            write(&db, pending.iter().flat_map(|(changes, _)| changes.iter())).map_err(|err| err.to_string());
        if let Err(reason) = &result {
            tracing::error!(%reason, "could not persist registry changes");
        }
        // Advanced on failure too, or every watcher would wait forever: the
        // callers whose changes failed are told so, and a registration
        // that failed is undone in memory (and that undo published).
        let written = pending
            .iter()
            .flat_map(|(changes, _)| changes.iter())
            .filter_map(|change| match change {
                Change::Revision(revision) => Some(*revision),
                _ => None,
            })
            .max();
        if let Some(written) = written {
            durable.send_if_modified(|through| {
                let advanced = written > *through;
                *through = (*through).max(written);
                advanced
            });
        }
        for (_, done) in pending {
            if let Some(done) = done {
                let _ = done.send(result.clone());
            }
        }
    }
}

fn write<'a>(db: &Database, changes: impl Iterator<Item = &'a Change>) -> Result<(), PersistError> {
    let txn = db.begin_write().map_err(db_error)?;
    {
        let mut registrations = txn.open_table(REGISTRATIONS).map_err(db_error)?;
        let mut leases = txn.open_table(LEASES).map_err(db_error)?;
        let mut meta = txn.open_table(META).map_err(db_error)?;
        for change in changes {
            match change {
                Change::Put(registration) => {
                    let value = serde_json::to_vec(registration).map_err(db_error)?;
                    let key = key(&registration.instance.service, &registration.instance.id);
                    registrations.insert(key.as_str(), value.as_slice()).map_err(db_error)?;
                }
                Change::Delete { service, id } => {
                    registrations.remove(key(service, id).as_str()).map_err(db_error)?;
                }
                Change::PutLease { id, ttl } => {
                    leases
                        .insert(*id, u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                        .map_err(db_error)?;
                    let last = meta.get("last_lease").map_err(db_error)?.map_or(0, |v| v.value());
                    meta.insert("last_lease", (*id).max(last)).map_err(db_error)?;
                }
                Change::DeleteLease(id) => {
                    leases.remove(*id).map_err(db_error)?;
                }
                Change::Revision(revision) => {
                    // Never backwards, whatever order batches were written in.
                    let last = meta.get("revision").map_err(db_error)?.map_or(0, |v| v.value());
                    meta.insert("revision", (*revision).max(last)).map_err(db_error)?;
                }
            }
        }
    }
    txn.commit().map_err(db_error)?;
    Ok(())
}
