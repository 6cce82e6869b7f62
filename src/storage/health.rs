//! Whether storage can write, and what hookd does when it cannot.
//!
//! A failed write or WAL fsync is a fault: it counts in `hookd_storage_errors_total{op}`, the
//! first one of an episode is logged, and from then on ingest is refused (503) and `/readyz`
//! answers 503. The `hookd-storage-health` thread then tries a small fsync'd probe write
//! every [`PROBE_EVERY`]: the first that succeeds ends the episode (logged); if none has
//! after [`GIVE_UP_AFTER`], hookd gives up and exits non-zero so that systemd restarts it,
//! and recovery replays the WAL. RocksDB treats a failed WAL write or sync as fatal for the
//! open database, so in practice that is how a failed fsync ends; a full disk that frees up
//! ends with the probe.
//!
//! A writer sitting in one write or fsync for longer than [`WEDGED_AFTER`] is
//! wedged: storage is not healthy then either, and the systemd watchdog stops being fed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{StorageError, StorageOp};
use crate::metrics::METRICS;

/// How often a probe write is tried while storage is failing.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long hookd keeps probing before it exits for systemd to restart it.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(10);
/// How long a writer may sit in one write or fsync before storage counts as wedged.
pub const WEDGED_AFTER: Duration = Duration::from_secs(10);

/// The writer threads whose time in one write is watched.
#[derive(Debug, Clone, Copy)]
pub enum Busy {
    Commit = 0,
    Sync = 1,
    Results = 2,
}

pub struct Health {
    writable: AtomicBool,
    /// Per [`Busy`] thread: when its current write started (ms since `epoch`, plus one), 0 when
    /// it is not writing.
    busy_since: [AtomicU64; 3],
    epoch: Instant,
    /// Woken on the first fault of an episode.
    wake: crossbeam_channel::Sender<()>,
    wake_rx: crossbeam_channel::Receiver<()>,
    /// Set when hookd gives up on storage; `run` then exits non-zero.
    gave_up: Arc<tokio::sync::Notify>,
    gave_up_flag: AtomicBool,
    /// The last fault, for the 503s while it lasts.
    last_error: parking_lot::Mutex<String>,
}

/// Clears a thread's busy mark when its write returns.
pub struct BusyGuard<'a>(&'a AtomicU64);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

impl Default for Health {
    fn default() -> Self {
        let (wake, wake_rx) = crossbeam_channel::bounded(1);
        Health {
            writable: AtomicBool::new(true),
            busy_since: Default::default(),
            epoch: Instant::now(),
            wake,
            wake_rx,
            gave_up: Arc::new(tokio::sync::Notify::new()),
            gave_up_flag: AtomicBool::new(false),
            last_error: parking_lot::Mutex::new(String::new()),
        }
    }
}

impl Health {
    /// Storage can write and no writer is stuck.
    pub fn healthy(&self) -> bool {
        self.writable.load(Ordering::Acquire) && !self.wedged()
    }

    /// Ingest's gate: `Err` while a fault episode lasts.
    pub fn check(&self) -> Result<(), StorageError> {
        if self.writable.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(StorageError::Unavailable(self.last_error.lock().clone()))
    }

    pub fn busy(&self, who: Busy) -> BusyGuard<'_> {
        let slot = &self.busy_since[who as usize];
        slot.store(
            self.epoch.elapsed().as_millis() as u64 + 1,
            Ordering::Release,
        );
        BusyGuard(slot)
    }

    /// Some writer has been in one write or fsync for longer than `WEDGED_AFTER`.
    pub fn wedged(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let limit = WEDGED_AFTER.as_millis() as u64;
        self.busy_since.iter().any(|s| {
            let since = s.load(Ordering::Acquire);
            since != 0 && now.saturating_sub(since) > limit
        })
    }

    /// A write or fsync failed.
    pub fn fault(&self, op: StorageOp, error: &StorageError) {
        METRICS.storage_error(op);
        *self.last_error.lock() = error.to_string();
        if self.writable.swap(false, Ordering::AcqRel) {
            tracing::error!(
                op = op.label(), error = %error,
                "storage fault: refusing new events and unready until a probe write succeeds"
            );
            let _ = self.wake.try_send(());
        }
    }

    /// Resolves once hookd has given up on storage.
    pub async fn gave_up(&self) {
        let notified = self.gave_up.notified();
        if self.gave_up_flag.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    /// The `hookd-storage-health` thread: on each fault episode, probes until a write works
    /// or the time is up. `probe` is one fsync'd write.
    pub(super) fn watch(&self, probe: impl Fn() -> Result<(), StorageError>) {
        while self.wake_rx.recv().is_ok() {
            let started = Instant::now();
            loop {
                std::thread::sleep(PROBE_EVERY);
                match probe() {
                    Ok(()) => {
                        self.writable.store(true, Ordering::Release);
                        tracing::info!(
                            after_ms = started.elapsed().as_millis() as u64,
                            "storage writable again; accepting new events"
                        );
                        break;
                    }
                    Err(e) if started.elapsed() >= GIVE_UP_AFTER => {
                        tracing::error!(
                            error = %e, after_s = started.elapsed().as_secs(),
                            "storage still cannot write; exiting so that systemd restarts hookd and recovery replays the WAL"
                        );
                        self.gave_up_flag.store(true, Ordering::Release);
                        self.gave_up.notify_waiters();
                        return;
                    }
                    Err(_) => {}
                }
            }
        }
    }
}
