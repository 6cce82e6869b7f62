//! Durable state. [`Store`] is the only storage API; the files of this module are the only ones
//! that import RocksDB. Records live in one column family per kind (see [`keys`]).
//!
//! - `rocks`: the front door — opening, reads, endpoint records, queueing work for writers;
//! - `codec`: the delivery record's layout (attempts inside it) and the upgrade path from
//!   earlier builds' JSON records;
//! - `writer`: the group-commit, WAL-sync and results writer threads;
//! - [`Ordered`] (`ordered`): the one path by which a stored delivery changes;
//! - [`health`]: storage faults, the probe, and when hookd gives up;
//! - [`backup`]: online checkpoints and restoring one into an empty data directory.
//!
//! Invariants:
//! - an event, its idempotency key, its deliveries and their due entries are written in one
//!   `WriteBatch`, and with `storage.sync` the WAL is fsync'd after that write, before ingest is
//!   acknowledged; concurrent ingests share one write, and the groups written during one fsync
//!   share the next ([`Store::ingest`], group commit);
//! - once that write is made (and for ordered deliveries, or under load, once it is durable),
//!   its deliveries are handed to the [`HandOver`] by the writer threads, whatever became of
//!   the request that brought them; the acknowledgement waits for durability either way;
//! - a delivery is pending exactly when it has one entry in `due`; a final status removes it;
//! - after creation a delivery is written only by the results writer thread, in queue order:
//!   attempt results ([`Store::write_results`]) and every other change ([`Store::ordered`]);
//!   results are written without fsync: a crash may forget the last attempts, which are then
//!   simply made again;
//! - each delivery also has an `endpoint_deliveries` entry holding its status, so an endpoint's
//!   history pages newest first and filters by status without reading the deliveries;
//! - no write is attempted for new events while a storage fault lasts ([`health`]).
//!
//! Every method but [`Store::ingest`], [`Store::write_results`] and [`Store::ordered`] blocks on
//! disk; async callers go through [`Store::call`].

pub mod backup;
mod codec;
pub mod health;
pub mod keys;
mod ordered;
mod rocks;
mod writer;

pub use ordered::Ordered;
pub use rocks::{DeliveryUpdate, DueEntry, Loaded, Store};

/// Receives the events of each durable commit with their deliveries, on a writer thread, in
/// commit order, with the commit's number. Must not block.
pub type HandOver = Box<dyn Fn(u64, Vec<NewEvent>) + Send + Sync>;

/// Which kind of write failed, for `hookd_storage_errors_total{op}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageOp {
    /// A group commit of new events.
    Ingest,
    /// The WAL fsync that makes a group durable.
    WalSync,
    /// Attempt results and endpoint stats.
    Results,
    /// Retry, recover, cancel, test records, pruning.
    Ordered,
    /// Endpoint records.
    Endpoint,
    /// The health probe.
    Probe,
}

impl StorageOp {
    pub const ALL: [StorageOp; 6] = [
        StorageOp::Ingest,
        StorageOp::WalSync,
        StorageOp::Results,
        StorageOp::Ordered,
        StorageOp::Endpoint,
        StorageOp::Probe,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StorageOp::Ingest => "ingest",
            StorageOp::WalSync => "wal_sync",
            StorageOp::Results => "results",
            StorageOp::Ordered => "ordered",
            StorageOp::Endpoint => "endpoint",
            StorageOp::Probe => "probe",
        }
    }
}

/// What [`Ordered::requeue_one`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeued {
    /// Failed or expired; pending again now with a fresh schedule.
    Requeued,
    /// Pending already; its `due` entry is now at `stored`.
    BroughtForward {
        stored: crate::model::UnixMillis,
    },
    NotRetryable(crate::model::DeliveryStatus),
    NotFound,
}

use crate::model::{Delivery, Event};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("data directory {path} is in use by another hookd")]
    InUse { path: String },
    #[error("storage: {0}")]
    Engine(String),
    #[error("storage: corrupt record in {cf}: {message}")]
    Corrupt { cf: &'static str, message: String },
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage is shutting down")]
    Closed,
    #[error("storage cannot write ({0}); new events are refused until it can")]
    Unavailable(String),
    #[error(
        "disk full: {free} bytes free on the file system of {path}, below storage.min_free_bytes \
         ({min}); new events are refused until there is room"
    )]
    DiskFull { path: String, free: u64, min: u64 },
}

/// An event ready to be stored with the deliveries routing gave it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: Event,
    pub deliveries: Vec<Delivery>,
}

/// What ingest did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored durably with this many deliveries.
    Stored { deliveries: u32 },
    /// The (tenant, id) was already stored; nothing was written.
    Duplicate { deliveries: u32 },
}
