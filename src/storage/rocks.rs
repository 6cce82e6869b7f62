//! The RocksDB implementation of [`Store`]: opening, reads, endpoint records, and the doors to
//! the writer threads ([`super::writer`]) and the ordered path ([`super::ordered`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options,
    WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use super::health::Health;
use super::keys::*;
use super::ordered::Ordered;
use super::writer::{self, CommitJob, FreeSpace, ResultsJob, WriterJob};
use super::{HandOver, IngestOutcome, NewEvent, StorageError, StorageOp};
use crate::model::{
    Attempt, Delivery, DeliveryId, DeliveryStatus, Endpoint, EndpointId, EndpointStats, Event,
    EventKey, UnixMillis,
};
use crate::operator::OperatorEvent;

/// Cheap to clone; every clone shares one database, one commit thread and one results writer.
#[derive(Clone)]
pub struct Store {
    pub(super) db: Arc<DB>,
    pub(super) health: Arc<Health>,
    /// RocksDB's sequence number when the database was opened: every `due` entry stored
    /// before carries a commit number at most this, every one stored since a larger one.
    base_seq: u64,
    /// Ingest requests for the commit thread; the thread exits when the last `Store` is dropped.
    commits: crossbeam_channel::Sender<CommitJob>,
    /// Results and ordered jobs for the results writer.
    results: crossbeam_channel::Sender<WriterJob>,
}

/// A delivery's new state for [`Store::write_results`]: the attempt that led to it, if any,
/// and the due time its `due` entry is stored under.
#[derive(Debug, Clone)]
pub struct DeliveryUpdate {
    pub delivery: Delivery,
    pub attempt: Option<Attempt>,
    pub old_due: Option<UnixMillis>,
}

/// What an attempt needs: the delivery, and its event (shared by every delivery of it).
pub type Loaded = (Delivery, Arc<Event>);

/// A `due` entry as read: its key (due time, delivery) and the commit number it was stored
/// with (0 for entries the results writer stored).
pub type DueEntry = ((UnixMillis, DeliveryId), u64);

impl From<rocksdb::Error> for StorageError {
    fn from(e: rocksdb::Error) -> Self {
        StorageError::Engine(e.into_string())
    }
}

/// The probe write's key, in the `meta` column family.
const PROBE_KEY: &[u8] = b"probe";

impl Store {
    /// Opens (creating when missing) the database under `path`, a directory left at mode 0700.
    /// Ingest is refused while the file system has less than `min_free_bytes` free.
    /// `hand_over` receives every stored event's deliveries once their write is made (for some,
    /// once it is durable: see `writer::early_hand_over`).
    pub fn open(
        path: &Path,
        sync: bool,
        min_free_bytes: u64,
        hand_over: HandOver,
    ) -> Result<Store, StorageError> {
        std::fs::create_dir_all(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.increase_parallelism(2);
        // Eight column families would each grow a 64 MB memtable; one budget for all of them
        // keeps memory bounded whatever the mix of records.
        opts.set_db_write_buffer_size(64 << 20);
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_block_cache(&rocksdb::Cache::new_lru_cache(32 << 20)?);
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_write_buffer_size(16 << 20);
        // Every new event is looked up in `idempotency` first and is almost never there: a
        // bloom filter over the memtable answers "absent" without walking its skip list.
        let mut idempotency_opts = cf_opts.clone();
        idempotency_opts.set_memtable_whole_key_filtering(true);
        idempotency_opts.set_memtable_prefix_bloom_ratio(0.05);
        let cfs = ALL_CFS.iter().map(|name| {
            let opts = if *name == CF_IDEMPOTENCY {
                idempotency_opts.clone()
            } else {
                cf_opts.clone()
            };
            ColumnFamilyDescriptor::new(*name, opts)
        });
        let db = DB::open_cf_descriptors(&opts, path.join("db"), cfs).map_err(|e| {
            let message = e.into_string();
            if message.contains("lock") || message.contains("Lock") {
                StorageError::InUse {
                    path: path.display().to_string(),
                }
            } else {
                StorageError::Engine(message)
            }
        })?;
        let base_seq = db.latest_sequence_number();
        let db = Arc::new(db);
        let health = Arc::new(Health::default());
        // The writer threads hold a `Store` without channels of their own, so that dropping
        // the last outside `Store` closes them and they exit.
        let threads_store = Store {
            db: db.clone(),
            health: health.clone(),
            base_seq,
            commits: crossbeam_channel::bounded(0).0,
            results: crossbeam_channel::bounded(0).0,
        };
        let (commits, rx) = crossbeam_channel::unbounded();
        let room = FreeSpace {
            path: path.to_path_buf(),
            min: min_free_bytes,
        };
        let commit_store = threads_store.clone();
        std::thread::Builder::new()
            .name("hookd-commit".into())
            .spawn(move || writer::commit_loop(commit_store, rx, sync, room, hand_over))?;
        let (results, results_rx) = crossbeam_channel::unbounded();
        let results_store = threads_store.clone();
        std::thread::Builder::new()
            .name("hookd-results".into())
            .spawn(move || writer::results_loop(results_store, results_rx))?;
        let probe_store = threads_store;
        std::thread::Builder::new()
            .name("hookd-storage-health".into())
            .spawn(move || {
                let health = probe_store.health.clone();
                health.watch(|| probe_store.probe());
            })?;
        Ok(Store {
            db,
            health,
            base_seq,
            commits,
            results,
        })
    }

    /// See the field; endpoint actors start out having "seen" every commit up to it.
    pub fn base_seq(&self) -> u64 {
        self.base_seq
    }

    /// Storage can write, and no writer is stuck in a write or fsync.
    pub fn healthy(&self) -> bool {
        self.health.healthy()
    }

    /// Resolves if hookd gives up on storage (see [`super::health`]).
    pub async fn gave_up(&self) {
        self.health.gave_up().await
    }

    /// One small fsync'd write: can storage write again?
    fn probe(&self) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_META),
            PROBE_KEY,
            crate::model::now_millis().to_be_bytes(),
        );
        self.write(batch, true, StorageOp::Probe)
    }

    /// Fsyncs the WAL (the group commit's second half).
    pub(super) fn sync_wal(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(|e| {
            let e = StorageError::from(e);
            self.health.fault(StorageOp::WalSync, &e);
            e
        })
    }

    /// Queues `f` on the ordered writer (see [`super::Ordered`]); it runs after every job
    /// queued before this call, and before every job queued after. The job is queued by this
    /// call, not when the future is first polled.
    pub fn ordered<T, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = Result<T, StorageError>> + Send + 'static
    where
        F: FnOnce(&Ordered<'_>) -> Result<T, StorageError> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let queued = self
            .results
            .send(WriterJob::Ordered(Box::new(move |o: &Ordered<'_>| {
                let _ = tx.send(f(o));
            })))
            .map_err(|_| StorageError::Closed);
        async move {
            queued?;
            rx.await.map_err(|_| StorageError::Closed)?
        }
    }

    /// Each ordering key of `endpoint` with pending ordered deliveries: its lowest and highest
    /// pending sequence numbers.
    pub fn key_heads(
        &self,
        endpoint: EndpointId,
    ) -> Result<HashMap<String, (u64, u64)>, StorageError> {
        let prefix = endpoint_key(endpoint);
        let mut out: HashMap<String, (u64, u64)> = HashMap::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_KEY_PENDING),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let (key, seq) = decode_key_pending(&k).ok_or(StorageError::Corrupt {
                cf: CF_KEY_PENDING,
                message: "bad key".into(),
            })?;
            let e = out.entry(key).or_insert((seq, seq));
            e.0 = e.0.min(seq);
            e.1 = e.1.max(seq);
        }
        Ok(out)
    }

    /// The newest time any stored event carries (its key's time), for the start-up clock check.
    pub fn newest_event_time(&self) -> Result<Option<UnixMillis>, StorageError> {
        let mut iter = self.db.iterator_cf(self.cf(CF_EVENTS), IteratorMode::End);
        match iter.next() {
            Some(item) => {
                let (k, _) = item?;
                let key: [u8; 16] = k[..].try_into().map_err(|_| StorageError::Corrupt {
                    cf: CF_EVENTS,
                    message: "bad key length".into(),
                })?;
                Ok(Some(EventKey::from_bytes(key).0.timestamp_ms() as i64))
            }
            None => Ok(None),
        }
    }

    /// Runs blocking storage work off the async threads.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        F: FnOnce(&Store) -> Result<T, StorageError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StorageError::Engine(format!("storage task failed: {e}")))?
    }

    /// Stores events durably, sharing one write (and one fsync) with concurrent callers.
    /// Resolves only once the write is in the WAL (fsync'd when `storage.sync`) and the stored
    /// events' deliveries are handed over, with what became of each event, in order. Dropping
    /// the future changes nothing about what is stored or handed over.
    pub async fn ingest(&self, events: Vec<NewEvent>) -> Result<Vec<IngestOutcome>, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.commits
            .send(CommitJob { events, reply })
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Makes everything written so far durable and stops RocksDB's background threads, so the
    /// process can exit without them racing its teardown. Call once, after the last write.
    pub fn close(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true)?;
        self.db.cancel_all_background_work(true);
        Ok(())
    }

    pub(super) fn cf(&self, name: &'static str) -> &ColumnFamily {
        // invariant: every name in ALL_CFS is created at open.
        self.db.cf_handle(name).expect("column family exists")
    }

    fn get<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self.db.get_pinned_cf(self.cf(cf), key)? {
            Some(bytes) => decode(cf, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every write goes through here, so that every failed one is a counted, logged fault.
    pub(super) fn write(
        &self,
        batch: WriteBatch,
        sync: bool,
        op: StorageOp,
    ) -> Result<(), StorageError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo).map_err(|e| {
            let e = StorageError::from(e);
            self.health.fault(op, &e);
            e
        })
    }

    // --- endpoints -------------------------------------------------------------------------

    /// Endpoint changes are rare and must survive power loss: always fsync'd.
    pub fn put_endpoint(&self, endpoint: &Endpoint) -> Result<(), StorageError> {
        self.put_endpoint_reporting(endpoint, &[])
    }

    /// [`Store::put_endpoint`], with the operator events that report the change in the same
    /// write.
    pub fn put_endpoint_reporting(
        &self,
        endpoint: &Endpoint,
        outbox: &[OperatorEvent],
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_ENDPOINTS),
            endpoint_key(endpoint.id),
            encode(endpoint)?,
        );
        for e in outbox {
            self.stage_outbox(&mut batch, e)?;
        }
        self.write(batch, true, StorageOp::Endpoint)
    }

    // --- operator outbox -------------------------------------------------------------------

    pub(super) fn stage_outbox(
        &self,
        batch: &mut WriteBatch,
        event: &OperatorEvent,
    ) -> Result<(), StorageError> {
        batch.put_cf(self.cf(CF_OUTBOX), event.id.as_bytes(), encode(event)?);
        Ok(())
    }

    /// Operator events written but not yet known to be ingested.
    pub fn outbox(&self) -> Result<Vec<OperatorEvent>, StorageError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_OUTBOX), IteratorMode::Start) {
            let (_, v) = item?;
            out.push(decode(CF_OUTBOX, &v)?);
        }
        Ok(out)
    }

    /// Their events are ingested. No fsync: a record that comes back is a duplicate by id.
    pub fn delete_outbox(&self, ids: &[String]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for id in ids {
            batch.delete_cf(self.cf(CF_OUTBOX), id.as_bytes());
        }
        self.write(batch, false, StorageOp::Ordered)
    }

    pub fn delete_endpoint(&self, id: EndpointId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_ENDPOINTS), endpoint_key(id));
        batch.delete_cf(self.cf(CF_ENDPOINT_STATS), endpoint_key(id));
        // Its keys' sequence numbers go with it (ids are never reused).
        let (from, to) = endpoint_range(id);
        batch.delete_range_cf(self.cf(CF_SEQUENCES), from, to);
        self.write(batch, true, StorageOp::Endpoint)
    }

    pub fn get_stats(&self, id: EndpointId) -> Result<Option<EndpointStats>, StorageError> {
        self.get(CF_ENDPOINT_STATS, &endpoint_key(id))
    }

    pub fn get_endpoint(&self, id: EndpointId) -> Result<Option<Endpoint>, StorageError> {
        self.get(CF_ENDPOINTS, &endpoint_key(id))
    }

    pub fn list_endpoints(&self) -> Result<Vec<Endpoint>, StorageError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_ENDPOINTS), IteratorMode::Start)
        {
            let (_, v) = item?;
            out.push(decode(CF_ENDPOINTS, &v)?);
        }
        Ok(out)
    }

    // --- events ----------------------------------------------------------------------------

    pub fn get_event(&self, key: EventKey) -> Result<Option<Event>, StorageError> {
        self.get(CF_EVENTS, &event_key(key))
    }

    /// The event a tenant submitted under `id`, if still retained.
    pub fn find_event(&self, tenant: &str, id: &str) -> Result<Option<Event>, StorageError> {
        let Some(v) = self
            .db
            .get_pinned_cf(self.cf(CF_IDEMPOTENCY), idempotency_key(tenant, id))?
        else {
            return Ok(None);
        };
        let (key, _) = decode_idempotency_value(&v).ok_or(StorageError::Corrupt {
            cf: CF_IDEMPOTENCY,
            message: "bad value length".into(),
        })?;
        self.get_event(key)
    }

    // --- deliveries ------------------------------------------------------------------------

    /// A delivery as stored, with its attempt log (its layout: `storage/codec.rs`).
    pub fn get_delivery(&self, id: DeliveryId) -> Result<Option<Delivery>, StorageError> {
        match self
            .db
            .get_pinned_cf(self.cf(CF_DELIVERIES), delivery_key(id))?
        {
            Some(bytes) => self.decode_delivery(&bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn get_deliveries(
        &self,
        ids: &[DeliveryId],
    ) -> Result<Vec<Option<Delivery>>, StorageError> {
        let cf = self.cf(CF_DELIVERIES);
        self.db
            .batched_multi_get_cf(cf, ids.iter().map(|id| delivery_key(*id)), false)
            .into_iter()
            .map(|r| match r? {
                Some(bytes) => self.decode_delivery(&bytes).map(Some),
                None => Ok(None),
            })
            .collect()
    }

    /// Decodes a `deliveries` record of any layout; one written by an earlier build gets its
    /// attempts from their own records, so that its next write keeps them.
    pub(super) fn decode_delivery(&self, bytes: &[u8]) -> Result<Delivery, StorageError> {
        let (mut d, format) =
            super::codec::decode_delivery(bytes).map_err(|e| StorageError::Corrupt {
                cf: CF_DELIVERIES,
                message: e.to_string(),
            })?;
        if format == super::codec::Format::Json {
            d.attempt_log = self.legacy_attempts(d.id)?;
        }
        Ok(d)
    }

    /// The separate attempt records an earlier build wrote for a delivery.
    fn legacy_attempts(&self, id: DeliveryId) -> Result<Vec<Attempt>, StorageError> {
        let prefix = delivery_key(id);
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_ATTEMPTS),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(decode(CF_ATTEMPTS, &v)?);
        }
        Ok(out)
    }

    /// What attempts need for several deliveries at once, in `ids` order: `None` where the
    /// delivery or its event is gone.
    pub fn load_for_attempts(
        &self,
        ids: &[DeliveryId],
    ) -> Result<Vec<Option<Loaded>>, StorageError> {
        let deliveries = self.get_deliveries(ids)?;
        let mut keys: Vec<EventKey> = deliveries.iter().flatten().map(|d| d.event_key).collect();
        keys.sort_unstable();
        keys.dedup();
        let cf = self.cf(CF_EVENTS);
        let mut events: HashMap<EventKey, Arc<Event>> = HashMap::with_capacity(keys.len());
        for (key, found) in keys.iter().zip(self.db.batched_multi_get_cf(
            cf,
            keys.iter().map(|k| event_key(*k)),
            false,
        )) {
            if let Some(bytes) = found? {
                events.insert(*key, Arc::new(decode(CF_EVENTS, &bytes)?));
            }
        }
        Ok(deliveries
            .into_iter()
            .map(|d| {
                let d = d?;
                let event = events.get(&d.event_key)?.clone();
                Some((d, event))
            })
            .collect())
    }

    /// Stores attempt results (and an endpoint's stats as they stand after them) without
    /// fsync, in one write with whatever other endpoints queued meanwhile; the returned future
    /// resolves once written. The job is queued by this call, not when the future is first
    /// polled: one writer takes jobs in the order of calls, so stats written later are newer.
    pub fn write_results(
        &self,
        updates: Vec<DeliveryUpdate>,
        stats: Option<(EndpointId, EndpointStats)>,
        outbox: Vec<OperatorEvent>,
    ) -> impl std::future::Future<Output = Result<(), StorageError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let queued = self
            .results
            .send(WriterJob::Results(ResultsJob {
                updates,
                stats,
                outbox,
                reply,
            }))
            .map_err(|_| StorageError::Closed);
        async move {
            queued?;
            rx.await.map_err(|_| StorageError::Closed)?
        }
    }

    /// One page of an endpoint's deliveries, newest first, each with its attempts: those
    /// created before `before` (a cursor), with `status` if given. The second value is the
    /// cursor of the next page, if there is one.
    #[allow(clippy::type_complexity)]
    pub fn endpoint_deliveries(
        &self,
        endpoint: EndpointId,
        status: Option<DeliveryStatus>,
        before: Option<DeliveryId>,
        limit: usize,
    ) -> Result<(Vec<(Delivery, Vec<Attempt>)>, Option<DeliveryId>), StorageError> {
        let start = endpoint_delivery_key(
            endpoint,
            before.unwrap_or(DeliveryId(ulid::Ulid(u128::MAX))),
        );
        let prefix = endpoint_key(endpoint);
        let mut ids = Vec::with_capacity(limit);
        let mut more = false;
        let iter = self.db.iterator_cf(
            self.cf(CF_ENDPOINT_DELIVERIES),
            IteratorMode::From(&start, Direction::Reverse),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let Some((_, id)) = decode_endpoint_delivery_key(&k) else {
                continue;
            };
            if Some(id) == before {
                continue;
            }
            if status.is_some_and(|s| v.first() != Some(&status_byte(s))) {
                continue;
            }
            if ids.len() == limit {
                more = true;
                break;
            }
            ids.push(id);
        }
        let next = if more { ids.last().copied() } else { None };
        let mut out = Vec::with_capacity(ids.len());
        for mut found in self.get_deliveries(&ids)?.into_iter().flatten() {
            let attempts = std::mem::take(&mut found.attempt_log);
            out.push((found, attempts));
        }
        Ok((out, next))
    }

    /// In one pass over `due`: for each endpoint with pending deliveries, how many it has and
    /// the first `page` of them in due order.
    #[allow(clippy::type_complexity)]
    pub fn due_summary(
        &self,
        page: usize,
    ) -> Result<HashMap<EndpointId, (usize, Vec<DueEntry>)>, StorageError> {
        let mut out: HashMap<EndpointId, (usize, Vec<_>)> = HashMap::new();
        for item in self.db.iterator_cf(self.cf(CF_DUE), IteratorMode::Start) {
            let (k, v) = item?;
            let (endpoint, due, delivery) = decode_due(&k)?;
            let (count, first) = out.entry(endpoint).or_default();
            *count += 1;
            if first.len() < page {
                first.push(((due, delivery), decode_due_seq(&v)));
            }
        }
        Ok(out)
    }

    /// Up to `limit` of an endpoint's pending deliveries in due order, from `from` (inclusive)
    /// or the start; the flag says whether that reached the end.
    pub fn due_page(
        &self,
        endpoint: EndpointId,
        from: Option<(UnixMillis, DeliveryId)>,
        limit: usize,
    ) -> Result<(Vec<DueEntry>, bool), StorageError> {
        let start = match from {
            Some((due, id)) => due_key(endpoint, due, id),
            None => due_key(endpoint, 0, DeliveryId(ulid::Ulid(0))),
        };
        let prefix = endpoint_key(endpoint);
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_DUE),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                return Ok((out, true));
            }
            if out.len() == limit {
                return Ok((out, false));
            }
            let (_, due, delivery) = decode_due(&k)?;
            out.push(((due, delivery), decode_due_seq(&v)));
        }
        Ok((out, true))
    }
}

/// A `due` entry's commit number: 0 unless ingest stored it (see [`Store::base_seq`]).
fn decode_due_seq(v: &[u8]) -> u64 {
    v.try_into().map_or(0, u64::from_be_bytes)
}

pub(super) fn decode_due(k: &[u8]) -> Result<(EndpointId, UnixMillis, DeliveryId), StorageError> {
    decode_due_key(k).ok_or(StorageError::Corrupt {
        cf: CF_DUE,
        message: "bad key length".into(),
    })
}

/// One write's failure, for each caller that shared the write.
pub(super) fn shared_failure(e: &StorageError) -> StorageError {
    StorageError::Engine(match e {
        StorageError::Engine(m) => m.clone(),
        other => other.to_string(),
    })
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| StorageError::Engine(format!("encode: {e}")))
}

pub(super) fn decode<T: DeserializeOwned>(
    cf: &'static str,
    bytes: &[u8],
) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt {
        cf,
        message: e.to_string(),
    })
}
