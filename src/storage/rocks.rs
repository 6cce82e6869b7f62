//! The RocksDB implementation of [`Store`], and its group-commit writer thread.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options,
    WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use super::keys::*;
use super::{IngestOutcome, NewEvent, StorageError};
use crate::metrics::METRICS;
use crate::model::{
    Attempt, Delivery, DeliveryId, DeliveryStatus, Endpoint, EndpointId, EndpointStats, Event,
    EventKey, UnixMillis,
};

/// Most events the group-commit thread folds into one write.
const MAX_EVENTS_PER_COMMIT: usize = 8192;

/// Cheap to clone; every clone shares one database, one commit thread and one results writer.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    /// Ingest requests for the commit thread; the thread exits when the last `Store` is dropped.
    commits: crossbeam_channel::Sender<CommitJob>,
    /// Attempt results for the results writer, which folds all that are queued into one write.
    results: crossbeam_channel::Sender<ResultsJob>,
}

/// A delivery's new state for [`Store::write_results`]: the attempt that led to it, if any,
/// and the due time its `due` entry is stored under.
#[derive(Debug, Clone)]
pub struct DeliveryUpdate {
    pub delivery: Delivery,
    pub attempt: Option<Attempt>,
    pub old_due: Option<UnixMillis>,
}

struct ResultsJob {
    updates: Vec<DeliveryUpdate>,
    stats: Option<(EndpointId, EndpointStats)>,
    reply: oneshot::Sender<Result<(), StorageError>>,
}

/// What an attempt needs: the delivery, and its event (shared by every delivery of it).
pub type Loaded = (Delivery, Arc<Event>);

struct CommitJob {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<(IngestOutcome, NewEvent)>, StorageError>>,
}

impl From<rocksdb::Error> for StorageError {
    fn from(e: rocksdb::Error) -> Self {
        StorageError::Engine(e.into_string())
    }
}

impl Store {
    /// Opens (creating when missing) the database under `path`, a directory left at mode 0700.
    /// Ingest is refused while the file system has less than `min_free_bytes` free.
    pub fn open(path: &Path, sync: bool, min_free_bytes: u64) -> Result<Store, StorageError> {
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
        let cfs = ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_opts.clone()));
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
        let db = Arc::new(db);
        let (commits, rx) = crossbeam_channel::unbounded();
        let thread_db = db.clone();
        let room = FreeSpace {
            path: path.to_path_buf(),
            min: min_free_bytes,
        };
        std::thread::Builder::new()
            .name("hookd-commit".into())
            .spawn(move || commit_loop(thread_db, rx, sync, room))?;
        let (results, results_rx) = crossbeam_channel::unbounded();
        let thread_db = db.clone();
        std::thread::Builder::new()
            .name("hookd-results".into())
            .spawn(move || results_loop(thread_db, results_rx))?;
        Ok(Store {
            db,
            commits,
            results,
        })
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
    /// Resolves only once the write is in the WAL (fsync'd when `storage.sync`), with each
    /// event handed back beside what became of it, in order.
    pub async fn ingest(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<(IngestOutcome, NewEvent)>, StorageError> {
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

    fn cf(&self, name: &'static str) -> &ColumnFamily {
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

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StorageError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    // --- endpoints -------------------------------------------------------------------------

    /// Endpoint changes are rare and must survive power loss: always fsync'd.
    pub fn put_endpoint(&self, endpoint: &Endpoint) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_ENDPOINTS),
            endpoint_key(endpoint.id),
            encode(endpoint)?,
        );
        self.write(batch, true)
    }

    pub fn delete_endpoint(&self, id: EndpointId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_ENDPOINTS), endpoint_key(id));
        batch.delete_cf(self.cf(CF_ENDPOINT_STATS), endpoint_key(id));
        self.write(batch, true)
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

    pub fn get_delivery(&self, id: DeliveryId) -> Result<Option<Delivery>, StorageError> {
        self.get(CF_DELIVERIES, &delivery_key(id))
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
                Some(bytes) => decode(CF_DELIVERIES, &bytes).map(Some),
                None => Ok(None),
            })
            .collect()
    }

    pub fn attempts(&self, id: DeliveryId) -> Result<Vec<Attempt>, StorageError> {
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
    ) -> impl std::future::Future<Output = Result<(), StorageError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let queued = self
            .results
            .send(ResultsJob {
                updates,
                stats,
                reply,
            })
            .map_err(|_| StorageError::Closed);
        async move {
            queued?;
            rx.await.map_err(|_| StorageError::Closed)?
        }
    }

    /// Writes a delivery's new state (and the attempt that led to it, if any), moving its due
    /// entry from `old_due` to `delivery.next_attempt_at` (none once final). No fsync: a lost
    /// attempt result only means the attempt is made again.
    pub fn update_delivery(
        &self,
        delivery: &Delivery,
        attempt: Option<&Attempt>,
        old_due: Option<UnixMillis>,
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        self.stage_delivery_update(&mut batch, delivery, attempt, old_due)?;
        self.write(batch, false)
    }

    /// A test send, stored once it has its outcome: the event, its one final delivery and that
    /// delivery's single attempt, so the history shows it like any other.
    pub fn record_test(
        &self,
        event: &Event,
        delivery: &Delivery,
        attempt: &Attempt,
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_IDEMPOTENCY),
            idempotency_key(&event.tenant, &event.id),
            idempotency_value(event.key, 1),
        );
        batch.put_cf(self.cf(CF_EVENTS), event_key(event.key), encode(event)?);
        self.stage_delivery_update(&mut batch, delivery, Some(attempt), None)?;
        self.write(batch, false)
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
        for found in self.get_deliveries(&ids)?.into_iter().flatten() {
            let attempts = self.attempts(found.id)?;
            out.push((found, attempts));
        }
        Ok((out, next))
    }

    /// Puts every `failed` delivery of `endpoint` created in `[since, until]` back in the queue,
    /// due at `now` with a fresh retry budget; returns their ids.
    pub fn requeue_failed(
        &self,
        endpoint: EndpointId,
        since: UnixMillis,
        until: UnixMillis,
        now: UnixMillis,
    ) -> Result<Vec<DeliveryId>, StorageError> {
        let from = endpoint_delivery_key(
            endpoint,
            DeliveryId(ulid::Ulid::from_parts(since.max(0) as u64, 0)),
        );
        let to = endpoint_delivery_key(
            endpoint,
            DeliveryId(ulid::Ulid::from_parts(until.max(0) as u64, u128::MAX)),
        );
        let failed = [status_byte(DeliveryStatus::Failed)];
        let mut requeued = Vec::new();
        let mut chunk = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_ENDPOINT_DELIVERIES),
            IteratorMode::From(&from, Direction::Forward),
        );
        let mut flush = |chunk: &mut Vec<DeliveryId>| -> Result<(), StorageError> {
            let mut updates = Vec::with_capacity(chunk.len());
            for mut d in self.get_deliveries(chunk)?.into_iter().flatten() {
                if d.status == DeliveryStatus::Failed {
                    d.status = DeliveryStatus::Pending;
                    d.retries_used = 0;
                    d.next_attempt_at = Some(now);
                    d.updated_at = now;
                    requeued.push(d.id);
                    updates.push((d, None));
                }
            }
            chunk.clear();
            self.update_deliveries(&updates)
        };
        for item in iter {
            let (k, v) = item?;
            if *k > to[..] {
                break;
            }
            if *v != failed {
                continue;
            }
            if let Some((_, id)) = decode_endpoint_delivery_key(&k) {
                chunk.push(id);
            }
            if chunk.len() >= 1000 {
                flush(&mut chunk)?;
            }
        }
        flush(&mut chunk)?;
        Ok(requeued)
    }

    /// Several [`Store::update_delivery`] calls in one write.
    pub fn update_deliveries(
        &self,
        updates: &[(Delivery, Option<UnixMillis>)],
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for (delivery, old_due) in updates {
            self.stage_delivery_update(&mut batch, delivery, None, *old_due)?;
        }
        self.write(batch, false)
    }

    fn stage_delivery_update(
        &self,
        batch: &mut WriteBatch,
        delivery: &Delivery,
        attempt: Option<&Attempt>,
        old_due: Option<UnixMillis>,
    ) -> Result<(), StorageError> {
        let due_cf = self.cf(CF_DUE);
        batch.put_cf(
            self.cf(CF_DELIVERIES),
            delivery_key(delivery.id),
            encode(delivery)?,
        );
        batch.put_cf(
            self.cf(CF_ENDPOINT_DELIVERIES),
            endpoint_delivery_key(delivery.endpoint_id, delivery.id),
            [status_byte(delivery.status)],
        );
        if let Some(a) = attempt {
            batch.put_cf(
                self.cf(CF_ATTEMPTS),
                attempt_key(delivery.id, a.n),
                encode(a)?,
            );
        }
        let new_due = match delivery.status {
            DeliveryStatus::Pending => delivery.next_attempt_at,
            _ => None,
        };
        if old_due != new_due {
            if let Some(old) = old_due {
                batch.delete_cf(due_cf, due_key(delivery.endpoint_id, old, delivery.id));
            }
            if let Some(new) = new_due {
                batch.put_cf(due_cf, due_key(delivery.endpoint_id, new, delivery.id), []);
            }
        }
        Ok(())
    }

    /// Marks still-pending deliveries cancelled, removing their due entries (id, stored due);
    /// returns how many were cancelled.
    pub fn cancel_deliveries(
        &self,
        entries: &[(DeliveryId, Option<UnixMillis>)],
    ) -> Result<usize, StorageError> {
        let ids: Vec<DeliveryId> = entries.iter().map(|(id, _)| *id).collect();
        let now = crate::model::now_millis();
        let mut updates = Vec::new();
        for (found, (_, due)) in self.get_deliveries(&ids)?.into_iter().zip(entries) {
            if let Some(mut d) = found.filter(|d| d.status == DeliveryStatus::Pending) {
                d.status = DeliveryStatus::Cancelled;
                d.next_attempt_at = None;
                d.updated_at = now;
                updates.push((d, *due));
            }
        }
        self.update_deliveries(&updates)?;
        Ok(updates.len())
    }

    /// In one pass over `due`: for each endpoint with pending deliveries, how many it has and
    /// the first `page` of them in due order.
    #[allow(clippy::type_complexity)]
    pub fn due_summary(
        &self,
        page: usize,
    ) -> Result<HashMap<EndpointId, (usize, Vec<(UnixMillis, DeliveryId)>)>, StorageError> {
        let mut out: HashMap<EndpointId, (usize, Vec<_>)> = HashMap::new();
        for item in self.db.iterator_cf(self.cf(CF_DUE), IteratorMode::Start) {
            let (k, _) = item?;
            let (endpoint, due, delivery) = decode_due(&k)?;
            let (count, first) = out.entry(endpoint).or_default();
            *count += 1;
            if first.len() < page {
                first.push((due, delivery));
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
    ) -> Result<(Vec<(UnixMillis, DeliveryId)>, bool), StorageError> {
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
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                return Ok((out, true));
            }
            if out.len() == limit {
                return Ok((out, false));
            }
            let (_, due, delivery) = decode_due(&k)?;
            out.push((due, delivery));
        }
        Ok((out, true))
    }

    /// Cancels every pending delivery of an endpoint except those in `skip` (in flight: their
    /// results are still to be written); returns how many were cancelled.
    pub fn cancel_pending(
        &self,
        endpoint: EndpointId,
        skip: &std::collections::HashSet<DeliveryId>,
    ) -> Result<usize, StorageError> {
        let mut cancelled = 0;
        let mut from = None;
        loop {
            let (page, complete) = self.due_page(endpoint, from, 4096)?;
            from = page
                .last()
                .map(|&(due, id)| (due, DeliveryId(ulid::Ulid(id.0 .0.saturating_add(1)))));
            let entries: Vec<(DeliveryId, Option<UnixMillis>)> = page
                .into_iter()
                .filter(|(_, id)| !skip.contains(id))
                .map(|(due, id)| (id, Some(due)))
                .collect();
            cancelled += self.cancel_deliveries(&entries)?;
            if complete || from.is_none() {
                return Ok(cancelled);
            }
        }
    }

    /// Deletes events received before `cutoff` whose deliveries are all final, with their
    /// deliveries, attempts and idempotency keys; at most `limit` events per call.
    pub fn prune(&self, cutoff: UnixMillis, limit: usize) -> Result<usize, StorageError> {
        let cutoff_key = EventKey(ulid::Ulid::from_parts(cutoff.max(0) as u64, 0));
        let mut batch = WriteBatch::default();
        let mut pruned = 0;
        for item in self.db.iterator_cf(self.cf(CF_EVENTS), IteratorMode::Start) {
            let (k, v) = item?;
            if *k >= event_key(cutoff_key)[..] || pruned >= limit {
                break;
            }
            let event: Event = decode(CF_EVENTS, &v)?;
            let ids: Vec<DeliveryId> = event.deliveries.iter().map(|d| d.id).collect();
            let deliveries = self.get_deliveries(&ids)?;
            if deliveries
                .iter()
                .flatten()
                .any(|d| d.status == DeliveryStatus::Pending)
            {
                continue;
            }
            for d in deliveries.iter().flatten() {
                batch.delete_cf(self.cf(CF_DELIVERIES), delivery_key(d.id));
                batch.delete_cf(
                    self.cf(CF_ENDPOINT_DELIVERIES),
                    endpoint_delivery_key(d.endpoint_id, d.id),
                );
                batch.delete_range_cf(
                    self.cf(CF_ATTEMPTS),
                    attempt_key(d.id, 0),
                    attempt_key(d.id, u32::MAX),
                );
                batch.delete_cf(self.cf(CF_ATTEMPTS), attempt_key(d.id, u32::MAX));
            }
            batch.delete_cf(
                self.cf(CF_IDEMPOTENCY),
                idempotency_key(&event.tenant, &event.id),
            );
            batch.delete_cf(self.cf(CF_EVENTS), &k);
            pruned += 1;
        }
        if pruned > 0 {
            self.write(batch, false)?;
        }
        Ok(pruned)
    }
}

fn decode_due(k: &[u8]) -> Result<(EndpointId, UnixMillis, DeliveryId), StorageError> {
    decode_due_key(k).ok_or(StorageError::Corrupt {
        cf: CF_DUE,
        message: "bad key length".into(),
    })
}

/// One write's failure, for each caller that shared the write.
fn shared_failure(e: &StorageError) -> StorageError {
    StorageError::Engine(match e {
        StorageError::Engine(m) => m.clone(),
        other => other.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| StorageError::Engine(format!("encode: {e}")))
}

fn decode<T: DeserializeOwned>(cf: &'static str, bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt {
        cf,
        message: e.to_string(),
    })
}

/// RocksDB counts every key comparison in a thread-local perf context unless told not to; on
/// the writer threads, which insert every key, that bookkeeping is a measurable share of the
/// memtable work and nobody reads it.
fn skip_perf_counters() {
    rocksdb::perf::set_perf_stats(rocksdb::perf::PerfStatsLevel::Disable);
}

/// A `Store` for a writer thread: it must not keep its own channel open.
fn thread_store(db: Arc<DB>) -> Store {
    Store {
        db,
        commits: crossbeam_channel::bounded(0).0,
        results: crossbeam_channel::bounded(0).0,
    }
}

/// The results writer: every attempt result (and endpoint stats; no fsync, so after a crash the
/// counts may miss the last few outcomes) queued while the previous write ran goes into the
/// next single write. One writer thread instead of one RocksDB writer per attempt keeps
/// writers from queueing on RocksDB's write lock and the blocking pool out of the hot path.
fn results_loop(db: Arc<DB>, rx: crossbeam_channel::Receiver<ResultsJob>) {
    skip_perf_counters();
    let store = thread_store(db);
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < 1024 {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut batch = WriteBatch::default();
        // Of several stats for one endpoint, the last queued is the newest.
        let mut stats: HashMap<EndpointId, &EndpointStats> = HashMap::new();
        let staged: Result<(), StorageError> = jobs.iter().try_for_each(|job| {
            if let Some((id, s)) = &job.stats {
                stats.insert(*id, s);
            }
            job.updates.iter().try_for_each(|u| {
                store.stage_delivery_update(&mut batch, &u.delivery, u.attempt.as_ref(), u.old_due)
            })
        });
        let staged = staged.and_then(|()| {
            stats.into_iter().try_for_each(|(id, s)| {
                batch.put_cf(store.cf(CF_ENDPOINT_STATS), endpoint_key(id), encode(s)?);
                Ok(())
            })
        });
        let written = staged.and_then(|()| store.write(batch, false));
        for job in jobs {
            let _ = job
                .reply
                .send(written.as_ref().map(|_| ()).map_err(shared_failure));
        }
    }
}

/// The group-commit writer: takes every ingest request queued while the previous write ran and
/// stores them all with one write. Duplicate checks happen here, on the one thread that writes
/// idempotency keys, so two concurrent requests with the same id cannot both be stored.
///
/// With `storage.sync` the write itself is not fsync'd: the [`sync_loop`] thread fsyncs the WAL
/// and only then acknowledges the requests, while this thread already writes the next group.
/// The CPU work of one group and the fsync of the one before overlap, and no other writer
/// (attempt results) waits behind an fsync for RocksDB's write lock.
fn commit_loop(
    db: Arc<DB>,
    rx: crossbeam_channel::Receiver<CommitJob>,
    sync: bool,
    room: FreeSpace,
) {
    skip_perf_counters();
    let store = thread_store(db.clone());
    let to_sync = if sync {
        let (tx, sync_rx) = crossbeam_channel::unbounded();
        let spawned = std::thread::Builder::new()
            .name("hookd-wal-sync".into())
            .spawn(move || sync_loop(db, sync_rx));
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the WAL sync thread; refusing new events");
                for job in rx.iter() {
                    let _ = job.reply.send(Err(StorageError::Closed));
                }
                return;
            }
        }
    } else {
        None
    };
    let mut was_full = false;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut events = jobs[0].events.len();
        while events < MAX_EVENTS_PER_COMMIT {
            match rx.try_recv() {
                Ok(job) => {
                    events += job.events.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let full = room.check();
        match (&full, was_full) {
            (Err(e), false) => tracing::error!(error = %e, "refusing new events"),
            (Ok(()), true) => tracing::info!("disk has room again; accepting new events"),
            _ => {}
        }
        was_full = full.is_err();
        match full.and_then(|()| commit(&store, &jobs)) {
            Ok((outcomes, stored)) => {
                let written = Written {
                    jobs: jobs.into_iter().zip(outcomes).collect(),
                    stored,
                };
                match &to_sync {
                    Some(tx) => {
                        if let Err(unsent) = tx.send(written) {
                            for (job, _) in unsent.0.jobs {
                                let _ = job.reply.send(Err(StorageError::Closed));
                            }
                        }
                    }
                    None => {
                        METRICS.storage_commits.inc();
                        written.acknowledge(Ok(()));
                    }
                }
            }
            Err(StorageError::DiskFull { path, free, min }) => {
                for job in jobs {
                    let _ = job.reply.send(Err(StorageError::DiskFull {
                        path: path.clone(),
                        free,
                        min,
                    }));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "ingest write failed");
                for job in jobs {
                    let _ = job.reply.send(Err(shared_failure(&e)));
                }
                // A failing disk is retried by the next request; pausing here keeps a tight
                // loop of doomed writes from flooding the log.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// One group of ingest requests, written (not yet fsync'd), with each one's outcomes.
struct Written {
    jobs: Vec<(CommitJob, Vec<IngestOutcome>)>,
    stored: u64,
}

impl Written {
    /// Answers the requests once their write is durable (or failed to become so).
    fn acknowledge(self, synced: Result<(), &StorageError>) {
        if synced.is_ok() && self.stored > 0 {
            METRICS.storage_committed_events.inc_by(self.stored);
        }
        for (job, outcomes) in self.jobs {
            let reply = match synced {
                Ok(()) => Ok(outcomes.into_iter().zip(job.events).collect()),
                Err(e) => Err(shared_failure(e)),
            };
            let _ = job.reply.send(reply);
        }
    }
}

/// Fsyncs the WAL for every group written since the last fsync, then acknowledges them. A
/// duplicate found against a write still being synced is answered after that sync too, since
/// every group waits for an fsync that started after its own write.
fn sync_loop(db: Arc<DB>, rx: crossbeam_channel::Receiver<Written>) {
    while let Ok(first) = rx.recv() {
        let mut groups = vec![first];
        groups.extend(rx.try_iter());
        let synced = db.flush_wal(true).map_err(StorageError::from);
        match &synced {
            Ok(()) => METRICS.storage_commits.inc(),
            Err(e) => tracing::error!(error = %e, "WAL fsync failed; ingest answers 503"),
        }
        for group in groups {
            group.acknowledge(synced.as_ref().map(|_| ()));
        }
    }
}

/// The free-space floor under which ingest is refused. Checked before every group commit
/// (one `statvfs`), so RocksDB itself never meets a full disk because of new events: its
/// out-of-space handling stops all writes until it has a memtable's worth free again.
struct FreeSpace {
    path: std::path::PathBuf,
    min: u64,
}

impl FreeSpace {
    fn check(&self) -> Result<(), StorageError> {
        if self.min == 0 {
            return Ok(());
        }
        let free = match free_bytes(&self.path) {
            Ok(n) => n,
            // Cannot tell: let the write decide.
            Err(_) => return Ok(()),
        };
        if free < self.min {
            return Err(StorageError::DiskFull {
                path: self.path.display().to_string(),
                free,
                min: self.min,
            });
        }
        Ok(())
    }
}

/// Bytes an unprivileged writer can still use on the file system holding `path`.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value for it.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and stat a writable statvfs.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Writes one group of ingest requests without fsync; returns each request's outcomes and how
/// many events were stored.
fn commit(
    store: &Store,
    jobs: &[CommitJob],
) -> Result<(Vec<Vec<IngestOutcome>>, u64), StorageError> {
    let mut batch = WriteBatch::default();
    let mut in_batch: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut results = Vec::with_capacity(jobs.len());
    let idem_cf = store.cf(CF_IDEMPOTENCY);
    for job in jobs {
        let mut outcomes = Vec::with_capacity(job.events.len());
        for new in &job.events {
            let ev = &new.event;
            let idem = idempotency_key(&ev.tenant, &ev.id);
            if let Some(&n) = in_batch.get(&idem) {
                outcomes.push(IngestOutcome::Duplicate { deliveries: n });
                continue;
            }
            if let Some(v) = store.db.get_pinned_cf(idem_cf, &idem)? {
                let n = decode_idempotency_value(&v).map(|(_, n)| n).unwrap_or(0);
                outcomes.push(IngestOutcome::Duplicate { deliveries: n });
                continue;
            }
            let n = new.deliveries.len() as u32;
            batch.put_cf(idem_cf, &idem, idempotency_value(ev.key, n));
            batch.put_cf(store.cf(CF_EVENTS), event_key(ev.key), encode(ev)?);
            for d in &new.deliveries {
                batch.put_cf(store.cf(CF_DELIVERIES), delivery_key(d.id), encode(d)?);
                batch.put_cf(
                    store.cf(CF_ENDPOINT_DELIVERIES),
                    endpoint_delivery_key(d.endpoint_id, d.id),
                    [status_byte(d.status)],
                );
                if let Some(due) = d.next_attempt_at {
                    batch.put_cf(store.cf(CF_DUE), due_key(d.endpoint_id, due, d.id), []);
                }
            }
            in_batch.insert(idem, n);
            outcomes.push(IngestOutcome::Stored { deliveries: n });
        }
        results.push(outcomes);
    }
    if !batch.is_empty() {
        store.write(batch, false)?;
    }
    Ok((results, in_batch.len() as u64))
}
