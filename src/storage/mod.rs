//! Durable state. [`Store`] is the only storage API; [`rocks`] is the only file that imports
//! RocksDB. Records live in one column family per kind (see [`keys`]).
//!
//! Invariants:
//! - an event, its idempotency key, its deliveries and their due entries are written in one
//!   `WriteBatch`, and with `storage.sync` the WAL is fsync'd after that write, before ingest is
//!   acknowledged; concurrent ingests share one write, and the groups written during one fsync
//!   share the next ([`Store::ingest`], group commit);
//! - a delivery is pending exactly when it has one entry in `due`; a final status removes it;
//! - attempt results are written without fsync, by one results writer that folds every result
//!   queued meanwhile into one write ([`Store::write_results`]): a crash may forget the last
//!   attempts, which are then simply made again;
//! - each delivery also has an `endpoint_deliveries` entry holding its status, so an endpoint's
//!   history pages newest first and filters by status without reading the deliveries.
//!
//! Every method but [`Store::ingest`] and [`Store::write_results`] blocks on disk; async callers
//! go through [`Store::call`].

pub mod keys;
mod rocks;

pub use rocks::{DeliveryUpdate, Loaded, Store};

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
