//! The storage writer threads, and the only places RocksDB is written from besides endpoint
//! records:
//!
//! - `hookd-commit` (group commit): takes every ingest request queued while the previous write
//!   ran and stores them with one write; duplicate checks happen here, on the one thread that
//!   writes idempotency keys, so two requests with the same id cannot both be stored. It
//!   then **hands the new deliveries to their endpoint actors**, before the fsync, unless
//!   they must wait for it or this thread is busy ([`early_hand_over`]);
//! - `hookd-wal-sync` (with `storage.sync`): fsyncs the WAL for every group written since the
//!   last fsync, hands over the deliveries that wait for it (ordered ones, those written
//!   under load, and any group behind them), and only then answers the requests. The hand-over is part of the commit,
//!   not of the HTTP request: a client that resets its connection cannot keep stored
//!   deliveries from their actors;
//! - `hookd-results` (the ordered writer): attempt results and endpoint stats, folded into one
//!   write per round, and the [`Ordered`] jobs, each run after the results queued before it
//!   are written. Queue order is apply order.
//!
//! Every group's `due` entries carry the group's commit number (see [`Store::base_seq`]), so
//! an actor reading `due` can tell a delivery whose hand-over is still on its way from one it
//! should take from storage.
//!
//! A failed write or fsync is a storage fault ([`super::health`]): it is counted, logged,
//! and ingest is refused until a probe write succeeds again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rocksdb::WriteBatch;
use tokio::sync::oneshot;

use super::health::Busy;
use super::keys::*;
use super::ordered::Ordered;
use super::rocks::{encode, shared_failure, Store};
use super::{HandOver, IngestOutcome, NewEvent, StorageError, StorageOp};
use crate::metrics::METRICS;
use crate::model::{EndpointId, EndpointStats};
use crate::operator::OperatorEvent;

/// Most events the group-commit thread folds into one write.
const MAX_EVENTS_PER_COMMIT: usize = 8192;
/// Most results jobs folded into one write.
const MAX_RESULTS_JOBS: usize = 1024;

pub(super) type IngestReply = oneshot::Sender<Result<Vec<IngestOutcome>, StorageError>>;

pub(super) struct CommitJob {
    pub events: Vec<NewEvent>,
    pub reply: IngestReply,
}

pub(super) struct ResultsJob {
    pub updates: Vec<super::DeliveryUpdate>,
    pub stats: Option<(EndpointId, EndpointStats)>,
    /// Operator events reporting the transitions these results and stats store.
    pub outbox: Vec<OperatorEvent>,
    pub reply: oneshot::Sender<Result<(), StorageError>>,
}

pub(super) type OrderedJob = Box<dyn FnOnce(&Ordered<'_>) + Send>;

pub(super) enum WriterJob {
    Results(ResultsJob),
    Ordered(OrderedJob),
}

/// RocksDB counts every key comparison in a thread-local perf context unless told not to; on
/// the writer threads, which insert every key, that bookkeeping is a measurable share of the
/// memtable work and nobody reads it.
fn skip_perf_counters() {
    rocksdb::perf::set_perf_stats(rocksdb::perf::PerfStatsLevel::Disable);
}

/// The ordered writer. Results (and endpoint stats; no fsync, so after a crash the counts may
/// miss the last few outcomes) queued while the previous write ran go into the next single
/// write; an [`Ordered`] job first lets the results before it be written, then runs alone.
/// One writer thread instead of one RocksDB writer per attempt keeps writers from queueing on
/// RocksDB's write lock and the blocking pool out of the hot path.
pub(super) fn results_loop(store: Store, rx: crossbeam_channel::Receiver<WriterJob>) {
    skip_perf_counters();
    let ordered = Ordered(&store);
    let mut pending: Vec<ResultsJob> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                WriterJob::Results(job) => pending.push(job),
                WriterJob::Ordered(run) => {
                    write_results(&store, &mut pending);
                    let _busy = store.health.busy(Busy::Results);
                    run(&ordered);
                }
            }
            if pending.len() < MAX_RESULTS_JOBS {
                next = rx.try_recv().ok();
            }
        }
        write_results(&store, &mut pending);
    }
}

fn write_results(store: &Store, jobs: &mut Vec<ResultsJob>) {
    if jobs.is_empty() {
        return;
    }
    let _busy = store.health.busy(Busy::Results);
    let ordered = Ordered(store);
    let mut batch = WriteBatch::default();
    // Of several stats for one endpoint, the last queued is the newest.
    let mut stats: HashMap<EndpointId, &EndpointStats> = HashMap::new();
    let staged: Result<(), StorageError> = jobs.iter().try_for_each(|job| {
        if let Some((id, s)) = &job.stats {
            stats.insert(*id, s);
        }
        job.outbox
            .iter()
            .try_for_each(|e| store.stage_outbox(&mut batch, e))?;
        job.updates.iter().try_for_each(|u| {
            ordered.stage_delivery_update(&mut batch, &u.delivery, u.attempt.as_ref(), u.old_due)
        })
    });
    let staged = staged.and_then(|()| {
        stats.into_iter().try_for_each(|(id, s)| {
            batch.put_cf(store.cf(CF_ENDPOINT_STATS), endpoint_key(id), encode(s)?);
            Ok(())
        })
    });
    let written = staged.and_then(|()| store.write(batch, false, StorageOp::Results));
    for job in jobs.drain(..) {
        let _ = job
            .reply
            .send(written.as_ref().map(|_| ()).map_err(shared_failure));
    }
}

/// The group-commit writer. With `storage.sync` the write itself is not fsync'd: the
/// [`sync_loop`] thread fsyncs the WAL and only then hands over and acknowledges, while this
/// thread already writes the next group. The CPU work of one group and the fsync of the one
/// before overlap, and no other writer (attempt results) waits behind an fsync for RocksDB's
/// write lock.
pub(super) fn commit_loop(
    store: Store,
    rx: crossbeam_channel::Receiver<CommitJob>,
    sync: bool,
    room: FreeSpace,
    hand_over: HandOver,
) {
    skip_perf_counters();
    let hand_over = Arc::new(hand_over);
    // Groups sent to the sync thread whose deliveries are handed over after their fsync, and
    // not yet handed over: while there is one, later groups wait their turn behind it.
    let late = Arc::new(AtomicUsize::new(0));
    let to_sync = if sync {
        let (tx, sync_rx) = crossbeam_channel::unbounded();
        let (sync_store, sync_hand_over, sync_late) =
            (store.clone(), hand_over.clone(), late.clone());
        let spawned = std::thread::Builder::new()
            .name("hookd-wal-sync".into())
            .spawn(move || sync_loop(sync_store, sync_rx, sync_hand_over, sync_late));
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
    let mut seq = store.base_seq();
    let mut sequences = Sequences::default();
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
        // Until a probe write succeeds again, nothing is written: the answer is 503 and the
        // event is not stored.
        if let Err(e) = store.health.check() {
            for job in jobs {
                let _ = job.reply.send(Err(shared_failure(&e)));
            }
            continue;
        }
        let full = room.check();
        match (&full, was_full) {
            (Err(e), false) => tracing::error!(error = %e, "refusing new events"),
            (Ok(()), true) => tracing::info!("disk has room again; accepting new events"),
            _ => {}
        }
        was_full = full.is_err();
        let group_seq = seq + 1;
        let committed = {
            let _busy = store.health.busy(Busy::Commit);
            full.and_then(|()| commit(&store, &mut jobs, group_seq, &mut sequences))
        };
        match committed {
            Ok((outcomes, stored)) => {
                if stored > 0 {
                    seq = group_seq;
                }
                let mut written = Written::new(jobs, outcomes, stored, group_seq);
                match &to_sync {
                    Some(tx) => {
                        let early = early_hand_over(
                            written.has_ordered(),
                            late.load(Ordering::Acquire),
                            !rx.is_empty(),
                        );
                        if early {
                            written.hand_over(&hand_over);
                        }
                        if written.awaits_hand_over() {
                            late.fetch_add(1, Ordering::AcqRel);
                        }
                        if let Err(unsent) = tx.send(written) {
                            unsent.0.fail(&StorageError::Closed);
                        }
                    }
                    None => {
                        METRICS.storage_commits.inc();
                        written.acknowledge(Ok(()), &hand_over);
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
                // Counted and logged by the failed write; nothing of this group is stored.
                for job in jobs {
                    let _ = job.reply.send(Err(shared_failure(&e)));
                }
            }
        }
    }
}

/// Whether the commit thread hands a group's deliveries to their actors as soon as it is
/// written, before its fsync: unless it holds an ordered delivery, an earlier group is still
/// waiting for its fsync to be handed over (hand-overs keep commit order), or more requests
/// wait for this thread (`busy`).
///
/// A receiver thus does not wait for the disk when hookd is not saturated: the fsync was about
/// half of an event's path at moderate rates, and on a VM disk all of its tail (a slow fsync
/// held up every group behind it). Under load the hand-over is left to the sync thread, as
/// before: on this thread it would lengthen every group's write, the one serial step of
/// ingest (wrk → hookd single events lost 7% that way), while the fsync's wait is shared by
/// the whole group anyway. The acknowledgement always waits for the fsync. What an early
/// hand-over lets happen: if the machine loses power before the fsync, a delivery may have
/// been sent for an event that is not stored, whose client got no 2xx and sends it again, so
/// the receiver sees one `webhook-id` twice, as at-least-once delivery allows. An ordered
/// delivery waits for the fsync, because its `X-Webhook-Sequence` would then be given again to
/// another event.
fn early_hand_over(has_ordered: bool, late_groups: usize, busy: bool) -> bool {
    !has_ordered && late_groups == 0 && !busy
}

/// One group of ingest requests, written (not yet fsync'd): each request's reply and
/// outcomes, and the events that were stored (not duplicates), to hand over.
struct Written {
    replies: Vec<(IngestReply, Vec<IngestOutcome>)>,
    stored_events: Vec<NewEvent>,
    stored: u64,
    seq: u64,
}

impl Written {
    fn new(jobs: Vec<CommitJob>, outcomes: Vec<Vec<IngestOutcome>>, stored: u64, seq: u64) -> Self {
        let mut replies = Vec::with_capacity(jobs.len());
        let mut stored_events = Vec::new();
        for (job, outcomes) in jobs.into_iter().zip(outcomes) {
            for (new, outcome) in job.events.into_iter().zip(&outcomes) {
                if matches!(outcome, IngestOutcome::Stored { .. }) {
                    stored_events.push(new);
                }
            }
            replies.push((job.reply, outcomes));
        }
        Written {
            replies,
            stored_events,
            stored,
            seq,
        }
    }

    fn has_ordered(&self) -> bool {
        self.stored_events
            .iter()
            .any(|e| e.deliveries.iter().any(|d| d.ordering.is_some()))
    }

    /// Whether deliveries of this group are still to be handed over (after its fsync: see
    /// [`early_hand_over`]).
    fn awaits_hand_over(&self) -> bool {
        !self.stored_events.is_empty()
    }

    /// Hands the stored deliveries to their actors, once: a later call hands over nothing.
    fn hand_over(&mut self, hand_over: &HandOver) {
        if self.awaits_hand_over() {
            hand_over(self.seq, std::mem::take(&mut self.stored_events));
        }
    }

    /// Hands the stored deliveries to their actors (unless done already), then answers the
    /// requests. The hand-over happens whether or not the fsync succeeded: the records are in
    /// the memtable either way, so an event whose request gets a 503 is still delivered unless
    /// the process dies before (then it is either in the WAL, and recovered, or not stored at
    /// all).
    fn acknowledge(mut self, synced: Result<(), &StorageError>, hand_over: &HandOver) {
        if synced.is_ok() && self.stored > 0 {
            METRICS.storage_committed_events.inc_by(self.stored);
        }
        self.hand_over(hand_over);
        for (reply, outcomes) in self.replies {
            let _ = reply.send(match synced {
                Ok(()) => Ok(outcomes),
                Err(e) => Err(shared_failure(e)),
            });
        }
    }

    /// The group never reached the sync thread (hookd is stopping): nothing was answered yet,
    /// and deliveries not handed over early are left to recovery at the next start.
    fn fail(self, e: &StorageError) {
        for (reply, _) in self.replies {
            let _ = reply.send(Err(shared_failure(e)));
        }
    }
}

/// Fsyncs the WAL for every group written since the last fsync, then hands over and
/// acknowledges them. A duplicate found against a write still being synced is answered after
/// that sync too, since every group waits for an fsync that started after its own write.
fn sync_loop(
    store: Store,
    rx: crossbeam_channel::Receiver<Written>,
    hand_over: Arc<HandOver>,
    late: Arc<AtomicUsize>,
) {
    while let Ok(first) = rx.recv() {
        let mut groups = vec![first];
        groups.extend(rx.try_iter());
        let synced = {
            let _busy = store.health.busy(Busy::Sync);
            let _timer = METRICS.storage_wal_sync.start_timer();
            store.sync_wal()
        };
        if synced.is_ok() {
            METRICS.storage_commits.inc();
        }
        for group in groups {
            let was_late = group.awaits_hand_over();
            group.acknowledge(synced.as_ref().map(|_| ()), &hand_over);
            if was_late {
                late.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// The free-space floor under which ingest is refused. Checked before every group commit
/// (one `statvfs`), so RocksDB itself never meets a full disk because of new events: its
/// out-of-space handling stops all writes until it has a memtable's worth free again.
pub(super) struct FreeSpace {
    pub path: std::path::PathBuf,
    pub min: u64,
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
        METRICS
            .storage_free_bytes
            .set(free.min(i64::MAX as u64) as i64);
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

/// The last sequence number given per (endpoint, ordering key), as far as this thread has
/// looked them up; this thread is the only one that gives them. Bounded: past `MAX`, it is
/// emptied and read back from storage as needed.
#[derive(Default)]
struct Sequences {
    last: HashMap<Vec<u8>, u64>,
}

impl Sequences {
    const MAX: usize = 100_000;

    fn last(&mut self, store: &Store, key: &[u8]) -> Result<u64, StorageError> {
        if let Some(&n) = self.last.get(key) {
            return Ok(n);
        }
        let n = store
            .db
            .get_pinned_cf(store.cf(CF_SEQUENCES), key)?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map_or(0, u64::from_be_bytes);
        Ok(n)
    }
}

/// Writes one group of ingest requests without fsync, its `due` entries marked with `seq`,
/// giving ordered deliveries their sequence numbers; returns each request's outcomes and how
/// many events were stored.
fn commit(
    store: &Store,
    jobs: &mut [CommitJob],
    seq: u64,
    sequences: &mut Sequences,
) -> Result<(Vec<Vec<IngestOutcome>>, u64), StorageError> {
    // Numbers given in this group; kept only once its write succeeds, so a failed write
    // leaves no gap in any key's sequence.
    let mut given: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut batch = WriteBatch::default();
    let mut in_batch: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut results = Vec::with_capacity(jobs.len());
    let idem_cf = store.cf(CF_IDEMPOTENCY);
    let seq_bytes = seq.to_be_bytes();
    for job in jobs.iter_mut() {
        let mut outcomes = Vec::with_capacity(job.events.len());
        for new in &mut job.events {
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
            for d in &mut new.deliveries {
                if let Some(o) = d.ordering.as_mut() {
                    let k = sequence_key(d.endpoint_id, &o.key);
                    let last = match given.get(&k) {
                        Some(&n) => n,
                        None => sequences.last(store, &k)?,
                    };
                    o.seq = last + 1;
                    given.insert(k.clone(), o.seq);
                    batch.put_cf(store.cf(CF_SEQUENCES), &k, o.seq.to_be_bytes());
                    batch.put_cf(
                        store.cf(CF_KEY_PENDING),
                        key_pending_key(d.endpoint_id, &o.key, o.seq),
                        [],
                    );
                }
                batch.put_cf(
                    store.cf(CF_DELIVERIES),
                    delivery_key(d.id),
                    super::codec::encode_delivery(d, None)?,
                );
                batch.put_cf(
                    store.cf(CF_ENDPOINT_DELIVERIES),
                    endpoint_delivery_key(d.endpoint_id, d.id),
                    [status_byte(d.status)],
                );
                if let Some(due) = d.next_attempt_at {
                    batch.put_cf(
                        store.cf(CF_DUE),
                        due_key(d.endpoint_id, due, d.id),
                        seq_bytes,
                    );
                }
            }
            in_batch.insert(idem, n);
            outcomes.push(IngestOutcome::Stored { deliveries: n });
        }
        results.push(outcomes);
    }
    if !batch.is_empty() {
        store.write(batch, false, StorageOp::Ingest)?;
    }
    if sequences.last.len() + given.len() > Sequences::MAX {
        sequences.last.clear();
    }
    sequences.last.extend(given);
    Ok((results, in_batch.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::early_hand_over;

    #[test]
    fn unordered_deliveries_go_to_their_actors_before_the_fsync() {
        assert!(early_hand_over(false, 0, false));
    }

    #[test]
    fn ordered_deliveries_and_any_group_behind_them_wait_for_the_fsync() {
        assert!(!early_hand_over(true, 0, false));
        // An earlier group still waits for its fsync: this one is handed over after it.
        assert!(!early_hand_over(false, 1, false));
        assert!(!early_hand_over(true, 3, false));
    }

    #[test]
    fn under_load_the_sync_thread_hands_over() {
        assert!(!early_hand_over(false, 0, true));
    }
}
