//! [`PendingQueue`]: an endpoint's pending deliveries as its actor holds them. Only a window is
//! in memory — the earliest-due deliveries, up to about [`PAGE`] — and the rest stays in the
//! `due` column family until the window runs low, so a paused endpoint with a backlog of
//! hundreds of thousands costs the same memory as one with a few thousand. The first waiting
//! deliveries are read ahead in batches (their records and events) so that starting an
//! attempt never waits on a single storage read.
//!
//! Invariants:
//! - `stored` has every in-memory pending delivery (waiting or in flight) and the due time its
//!   `due` entry is stored under; `waiting` (by effective due time) and `effective` hold exactly
//!   the in-memory ones not in flight;
//! - `horizon`: every pending delivery whose stored (due, id) is below it is in memory; above
//!   it, storage may hold more (`None`: everything is in memory); first attempts handed over
//!   by ingest are kept in memory above it too (up to a bound), so that they can go first;
//! - while a page is being read, nothing leaves memory but deliveries that are finished, and
//!   those are remembered until the page lands, so a page read before a write cannot bring
//!   back a key that write moved or removed;
//! - a page never brings in a delivery whose hand-over from ingest has not arrived yet (its
//!   `due` entry carries a commit number above the last one handed over): the hand-over does
//!   that, so a delivery can never be queued twice and sent twice as the same attempt;
//! - `total` counts every pending delivery: in memory, in flight and paged out.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::{DeliveryId, UnixMillis};
use crate::storage::{DueEntry, Loaded};

/// Most deliveries read from `due` at once; the window is refilled below a quarter of it.
pub const PAGE: usize = 8192;
const REFILL_BELOW: usize = PAGE / 4;
/// Most deliveries held in memory; past it, new ones stay in storage until paged in.
const MAX_IN_MEMORY: usize = 2 * PAGE;
/// Most first attempts held in memory beyond the window: a new event is not left in storage
/// behind a paged-out pile of retries that sort before it.
const MAX_FRESH_BEYOND: usize = PAGE / 2;

/// Most payload bytes of records an endpoint keeps that ingest handed over: enough that a busy
/// endpoint starts fresh deliveries without reading them back, bounded so that a slow one with
/// a long queue does not hold every event it was sent.
const OFFERED_BYTES: usize = 4 << 20;
/// What a kept record is counted as besides its payload.
const RECORD_OVERHEAD: usize = 256;

/// A `due` entry: (due time, delivery), the order RocksDB keeps them in.
pub type DueKey = (UnixMillis, DeliveryId);

/// First attempts and retries wait apart, so that the scheduler can keep room for the first
/// ones however many retries are due (see [`crate::dispatch::retry::fresh_reserve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Never attempted yet.
    Fresh = 0,
    /// Attempted before (a retry, or re-queued by retry or recover).
    Retry = 1,
}

impl Class {
    /// A `due` entry stored by ingest carries its commit number; every later write of one
    /// (a retry's, a requeue's) stores none.
    pub fn of_entry(seq: u64) -> Class {
        if seq > 0 {
            Class::Fresh
        } else {
            Class::Retry
        }
    }
}

#[derive(Default)]
pub struct PendingQueue {
    /// By class: first attempts, retries.
    waiting: [BTreeSet<DueKey>; 2],
    // Keyed by ULIDs, whose low bits are random: a fast hash spreads them as well as SipHash.
    effective: FxHashMap<DeliveryId, (UnixMillis, Class)>,
    stored: FxHashMap<DeliveryId, UnixMillis>,
    horizon: Option<DueKey>,
    total: usize,
    loaded: FxHashMap<DeliveryId, Loaded>,
    /// What `loaded` holds, counted by [`record_bytes`].
    loaded_bytes: usize,
    paging: bool,
    /// Deliveries that finished while a page was being read: the page may still hold them.
    finished_while_paging: FxHashSet<DeliveryId>,
}

fn record_bytes((_, event): &Loaded) -> usize {
    event.payload.get().len() + RECORD_OVERHEAD
}

/// The key right after `k`: the first one a page starting after `k` may hold.
fn after(k: DueKey) -> DueKey {
    (k.0, DeliveryId(ulid::Ulid(k.1 .0 .0.saturating_add(1))))
}

impl PendingQueue {
    /// `total` pending deliveries, of which `first_page` are the earliest-due ones.
    pub fn new(total: usize, first_page: Vec<DueEntry>) -> PendingQueue {
        let mut q = PendingQueue {
            total,
            ..PendingQueue::default()
        };
        q.horizon = match first_page.last() {
            Some(&(last, _)) if first_page.len() < total => Some(after(last)),
            None if total > 0 => Some((UnixMillis::MIN, DeliveryId(ulid::Ulid(0)))),
            _ => None,
        };
        for ((due, id), seq) in first_page {
            q.insert(id, due, due, Class::of_entry(seq));
        }
        q
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn waiting_len(&self) -> usize {
        self.waiting[0].len() + self.waiting[1].len()
    }

    /// Waiting deliveries whose records are in memory.
    pub fn loaded_len(&self) -> usize {
        self.loaded.len()
    }

    pub fn is_waiting(&self, id: DeliveryId) -> bool {
        self.effective.contains_key(&id)
    }

    /// In memory, waiting or in flight.
    pub fn in_memory(&self, id: DeliveryId) -> bool {
        self.stored.contains_key(&id)
    }

    /// Its `due` entry was moved to `due` (bring-forward, resume).
    pub fn set_stored(&mut self, id: DeliveryId, due: UnixMillis) {
        if let Some(stored) = self.stored.get_mut(&id) {
            *stored = due;
        }
    }

    pub fn stored_due(&self, id: DeliveryId) -> Option<UnixMillis> {
        self.stored.get(&id).copied()
    }

    /// The earliest waiting delivery of either class.
    pub fn first(&self) -> Option<DueKey> {
        match (self.first_of(Class::Fresh), self.first_of(Class::Retry)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The earliest waiting delivery of `class`.
    pub fn first_of(&self, class: Class) -> Option<DueKey> {
        self.waiting[class as usize].first().copied()
    }

    fn insert(&mut self, id: DeliveryId, due: UnixMillis, stored: UnixMillis, class: Class) {
        if self.stored.contains_key(&id) {
            return;
        }
        self.stored.insert(id, stored);
        self.wait(id, due, class);
    }

    fn wait(&mut self, id: DeliveryId, due: UnixMillis, class: Class) {
        self.effective.insert(id, (due, class));
        self.waiting[class as usize].insert((due, id));
    }

    /// Off the waiting sets (still in `stored`).
    fn unwait(&mut self, id: DeliveryId) -> Option<(UnixMillis, Class)> {
        let (due, class) = self.effective.remove(&id)?;
        self.waiting[class as usize].remove(&(due, id));
        Some((due, class))
    }

    fn below_horizon(&self, key: DueKey) -> bool {
        self.horizon.is_none_or(|h| key < h)
    }

    /// A delivery ingest just stored with its `due` entry at `due`.
    pub fn push_new(&mut self, id: DeliveryId, due: UnixMillis) {
        self.total += 1;
        let key = (due, id);
        if self.paging {
            self.insert(id, due, due, Class::Fresh);
        } else if self.below_horizon(key) {
            if self.stored.len() >= MAX_IN_MEMORY {
                // The window is full: from this key on, storage holds the queue.
                self.horizon = Some(key);
                self.evict_from(key);
            } else {
                self.insert(id, due, due, Class::Fresh);
            }
        } else if self.waiting[Class::Fresh as usize].len() < MAX_FRESH_BEYOND {
            // Beyond the horizon, but a first attempt: kept, so that it can go first (the page
            // that later reads its entry finds it here already).
            self.insert(id, due, due, Class::Fresh);
        }
    }

    /// Leaves to storage alone the waiting deliveries at the back of the queue that are stored
    /// at `from` or later. Cost: the ones evicted. One whose effective due was brought forward
    /// may stay in memory past `from`, which only costs its place.
    fn evict_from(&mut self, from: DueKey) {
        loop {
            let last = match (self.waiting[0].last(), self.waiting[1].last()) {
                (Some(a), Some(b)) => *a.max(b),
                (Some(a), None) | (None, Some(a)) => *a,
                (None, None) => break,
            };
            let (due, id) = last;
            let stored = self.stored.get(&id).copied().unwrap_or(due);
            if (due, id) < from || (stored, id) < from {
                break;
            }
            self.unwait(id);
            self.stored.remove(&id);
            self.take_loaded(id);
        }
    }

    /// A pending delivery back in memory, due at `due` (retry, recover); `counted` when
    /// `total` already includes it (it was pending, only paged out).
    pub fn requeue(&mut self, id: DeliveryId, due: UnixMillis, stored: UnixMillis, counted: bool) {
        if !counted {
            self.total += 1;
        }
        self.insert(id, due, stored, Class::Retry);
    }

    /// Makes a waiting delivery due at `at`; false if it is not waiting.
    pub fn bring_forward(&mut self, id: DeliveryId, at: UnixMillis) -> bool {
        let Some((due, class)) = self.unwait(id) else {
            return false;
        };
        self.wait(id, due.min(at), class);
        true
    }

    /// Every waiting delivery in memory that is due later is due at `at` instead (resume).
    /// Returns the `due` entries to move to match: (delivery, stored due, `at`).
    pub fn make_all_due(&mut self, at: UnixMillis) -> Vec<(DeliveryId, UnixMillis, UnixMillis)> {
        for set in &mut self.waiting {
            *set = std::mem::take(set)
                .into_iter()
                .map(|(due, id)| (due.min(at), id))
                .collect();
        }
        let mut moves = Vec::new();
        for (id, (due, _)) in self.effective.iter_mut() {
            *due = (*due).min(at);
            if let Some(stored) = self.stored.get_mut(id) {
                if *stored > at {
                    moves.push((*id, *stored, at));
                    *stored = at;
                }
            }
        }
        moves
    }

    /// Takes the waiting delivery `key` (a [`PendingQueue::first_of`]) off the queue, with its
    /// read-ahead record, to start its attempt; `None` if it is not read yet.
    pub fn start(&mut self, (_, id): DueKey) -> Option<(DeliveryId, Loaded)> {
        if !self.loaded.contains_key(&id) {
            return None;
        }
        self.unwait(id)?;
        let loaded = self.take_loaded(id)?;
        Some((id, loaded))
    }

    /// A delivery taken by [`PendingQueue::start`] and set aside (an ordered one whose turn has
    /// not come) waits again, due at `due`, with its record.
    pub fn unpark(&mut self, id: DeliveryId, due: UnixMillis, class: Class, loaded: Loaded) {
        if self.stored.contains_key(&id) && !self.effective.contains_key(&id) {
            self.wait(id, due, class);
            self.keep_loaded(id, loaded);
        }
    }

    /// [`PendingQueue::start`] of the earliest waiting delivery of either class.
    #[cfg(test)]
    pub fn start_first(&mut self) -> Option<(DeliveryId, Loaded)> {
        let first = self.first()?;
        self.start(first)
    }

    /// Those of the first `limit` waiting deliveries of each class due by `now` whose records
    /// are not read yet. Only the heads count: a delivery queued late with an earlier due time
    /// goes before records already read and must be read itself.
    pub fn to_read_ahead(&self, now: UnixMillis, limit: usize) -> Vec<DeliveryId> {
        self.waiting
            .iter()
            .flat_map(|set| {
                set.iter()
                    .take_while(|(due, _)| *due <= now)
                    .take(limit)
                    .filter(|(_, id)| !self.loaded.contains_key(id))
                    .map(|(_, id)| *id)
            })
            .collect()
    }

    /// A read-ahead record, kept if its delivery is still waiting.
    pub fn put_loaded(&mut self, id: DeliveryId, loaded: Loaded) {
        if self.effective.contains_key(&id) {
            self.keep_loaded(id, loaded);
        }
    }

    /// The record of a delivery ingest just handed over, kept if it is waiting in memory and
    /// the budget allows; otherwise it is read back from storage when its turn comes.
    pub fn offer_loaded(&mut self, id: DeliveryId, loaded: Loaded) {
        if self.effective.contains_key(&id)
            && self.loaded_bytes + record_bytes(&loaded) <= OFFERED_BYTES
        {
            self.keep_loaded(id, loaded);
        }
    }

    fn keep_loaded(&mut self, id: DeliveryId, loaded: Loaded) {
        self.loaded_bytes += record_bytes(&loaded);
        if let Some(old) = self.loaded.insert(id, loaded) {
            self.loaded_bytes -= record_bytes(&old);
        }
    }

    fn take_loaded(&mut self, id: DeliveryId) -> Option<Loaded> {
        let loaded = self.loaded.remove(&id)?;
        self.loaded_bytes -= record_bytes(&loaded);
        Some(loaded)
    }

    /// An attempt's result is stored and the delivery is pending again at `next`, its `due`
    /// entry at `stored`. Past the horizon it goes back to storage only.
    pub fn reschedule(&mut self, id: DeliveryId, next: UnixMillis, stored: UnixMillis) {
        self.stored.remove(&id);
        self.unwait(id);
        if self.paging || self.below_horizon((stored, id)) {
            self.insert(id, next, stored, Class::Retry);
        }
    }

    /// A delivery is no longer pending (final status, or found gone).
    pub fn remove(&mut self, id: DeliveryId) {
        if self.stored.remove(&id).is_some() {
            self.total = self.total.saturating_sub(1);
            if self.paging {
                self.finished_while_paging.insert(id);
            }
        }
        self.unwait(id);
        self.take_loaded(id);
    }

    /// Where the next page starts, when the window has run low and storage holds more.
    pub fn page_wanted(&self) -> Option<DueKey> {
        if self.paging || self.waiting_len() >= REFILL_BELOW {
            return None;
        }
        self.horizon
    }

    pub fn paging_started(&mut self) {
        self.paging = true;
    }

    /// A page read from `due`: entries from the horizon on, `complete` when it reached the end.
    /// Entries stored by commits after `handed_over` are left to their hand-over.
    pub fn page_read(&mut self, entries: Vec<DueEntry>, complete: bool, handed_over: u64) {
        self.paging = false;
        self.horizon = match entries.last() {
            Some(&(last, _)) if !complete => Some(after(last)),
            _ if complete => None,
            _ => self.horizon,
        };
        let finished = std::mem::take(&mut self.finished_while_paging);
        for ((due, id), seq) in entries {
            if seq <= handed_over && !finished.contains(&id) {
                self.insert(id, due, due, Class::of_entry(seq));
            }
        }
    }

    pub fn paging_failed(&mut self) {
        self.paging = false;
        self.finished_while_paging.clear();
    }

    /// Everything is being cancelled (the endpoint was deleted); only in-flight ones, listed in
    /// `keep`, stay known until their results are stored.
    pub fn clear_except(&mut self, keep: impl Fn(DeliveryId) -> bool) {
        for set in &mut self.waiting {
            set.clear();
        }
        self.effective.clear();
        self.loaded.clear();
        self.loaded_bytes = 0;
        self.stored.retain(|id, _| keep(*id));
        self.total = self.stored.len();
        self.horizon = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ulid::Ulid;

    fn id(n: u128) -> DeliveryId {
        DeliveryId(Ulid(n))
    }

    /// A first page of deliveries ingest stored (first attempts).
    fn fresh(keys: Vec<DueKey>) -> Vec<DueEntry> {
        keys.into_iter().map(|k| (k, 1)).collect()
    }

    /// Delivery `i`'s record, its event's payload `payload_bytes` long.
    fn record_sized(i: u128, payload_bytes: usize) -> Loaded {
        let d: crate::model::Delivery = serde_json::from_value(serde_json::json!({
            "id": id(i), "endpoint_id": crate::model::EndpointId::new(),
            "event_key": crate::model::EventKey::new(), "event_id": "e", "event_type": "t",
            "tenant": "t", "status": "pending", "attempts": 0, "retries_used": 0,
            "next_attempt_at": 1, "created_at": 1, "updated_at": 1
        }))
        .unwrap();
        let filler = "x".repeat(payload_bytes.saturating_sub(8));
        let e: crate::model::Event = serde_json::from_value(serde_json::json!({
            "key": d.event_key, "id": "e", "tenant": "t", "type": "t", "received_at": 1,
            "deliveries": [], "payload": {"x": filler}
        }))
        .unwrap();
        (d, std::sync::Arc::new(e))
    }

    fn record(i: u128) -> Loaded {
        record_sized(i, 16)
    }

    #[test]
    fn a_partial_first_page_leaves_the_rest_in_storage() {
        let page: Vec<DueKey> = (0..10).map(|i| (100 + i as i64, id(i))).collect();
        let mut q = PendingQueue::new(25, fresh(page));
        assert_eq!(q.total(), 25);
        assert_eq!(q.waiting_len(), 10);
        // New deliveries due after the window are counted, and kept as first attempts...
        q.push_new(id(50), 500);
        assert_eq!((q.total(), q.waiting_len()), (26, 11));
        assert!(q.in_memory(id(50)));
        // ...but a retry rescheduled past the window goes back to storage only.
        q.reschedule(id(50), 600, 600);
        assert!(!q.in_memory(id(50)));
        // ...those due inside it are held.
        q.push_new(id(51), 105);
        assert!(q.in_memory(id(51)));
        assert_eq!(q.page_wanted(), Some((109, id(10))));
        q.paging_started();
        assert_eq!(q.page_wanted(), None);
        // While paging, nothing leaves memory.
        q.push_new(id(52), 900);
        assert!(q.in_memory(id(52)));
        q.page_read(
            vec![((109, id(10)), 0), ((500, id(50)), 0), ((900, id(52)), 0)],
            true,
            0,
        );
        assert_eq!(q.page_wanted(), None);
        assert_eq!(q.waiting_len(), 14, "no duplicate of id 52");
    }

    #[test]
    fn first_attempts_beyond_a_window_of_retries_are_kept_up_to_a_bound() {
        let retries: Vec<DueEntry> = (0..10).map(|i| ((100 + i as i64, id(i)), 0)).collect();
        let mut q = PendingQueue::new(1000, retries);
        assert_eq!(q.first_of(Class::Retry), Some((100, id(0))));
        for i in 0..MAX_FRESH_BEYOND as u128 + 5 {
            q.push_new(id(1000 + i), 5000);
        }
        assert_eq!(q.waiting_len(), 10 + MAX_FRESH_BEYOND);
        assert_eq!(q.first_of(Class::Fresh), Some((5000, id(1000))));
        assert_eq!(
            q.first(),
            Some((100, id(0))),
            "the earliest of either class"
        );
        assert_eq!(q.total(), 1000 + MAX_FRESH_BEYOND + 5);
    }

    #[test]
    fn a_full_window_leaves_new_deliveries_in_storage() {
        let mut q = PendingQueue::default();
        for i in 0..MAX_IN_MEMORY as u128 + 10 {
            q.push_new(id(i), 1000 + i as i64);
        }
        assert_eq!(q.total(), MAX_IN_MEMORY + 10);
        assert_eq!(q.waiting_len(), MAX_IN_MEMORY);
        let first_out = (1000 + MAX_IN_MEMORY as i64, id(MAX_IN_MEMORY as u128));
        assert!(!q.in_memory(first_out.1));
        // One due earlier than the window's end takes a place and pushes later ones out.
        q.push_new(id(999_999), 1500);
        assert!(!q.in_memory(id(999_999)));
        assert_eq!(
            q.waiting_len(),
            501,
            "keys after (1500, id) left to storage"
        );
        assert_eq!(q.total(), MAX_IN_MEMORY + 11);
        assert_eq!(q.page_wanted(), Some((1500, id(999_999))));
    }

    #[test]
    fn starting_needs_the_record_read_ahead() {
        let mut q = PendingQueue::new(2, fresh(vec![(1, id(1)), (5, id(2))]));
        assert!(q.start_first().is_none(), "not read yet");
        assert_eq!(q.to_read_ahead(3, 10), vec![id(1)]);
        assert_eq!(q.to_read_ahead(9, 10), vec![id(1), id(2)]);
        q.put_loaded(id(2), record(2));
        assert_eq!(q.to_read_ahead(9, 1), vec![id(1)]);
        assert_eq!(
            q.to_read_ahead(9, 2),
            vec![id(1)],
            "read records are not read again"
        );
        // One queued late but due earlier goes before them and is read next.
        q.push_new(id(3), 0);
        assert_eq!(q.to_read_ahead(9, 1), vec![id(3)]);
        assert!(q.start_first().is_none(), "the head is not read yet");
        q.put_loaded(id(3), record(3));
        q.put_loaded(id(1), record(1));
        let started: Vec<DeliveryId> =
            std::iter::from_fn(|| q.start_first().map(|(i, _)| i)).collect();
        assert_eq!(started, vec![id(3), id(1), id(2)]);
    }

    #[test]
    fn records_handed_over_by_ingest_are_kept_within_a_budget() {
        let mut q = PendingQueue::new(0, fresh(vec![]));
        let big = OFFERED_BYTES / 4;
        for i in 1..=6 {
            q.push_new(id(i), i as i64);
            q.offer_loaded(id(i), record_sized(i, big));
        }
        // A delivery not waiting in memory (paged out) keeps no record.
        q.offer_loaded(id(99), record(99));
        let kept = q.loaded_len();
        assert!(
            (1..=3).contains(&kept),
            "kept {kept} of 6 quarter-budget records"
        );
        assert!(q.loaded_bytes <= OFFERED_BYTES);
        // The kept ones start without a read; the rest are read back when their turn comes.
        let started: Vec<DeliveryId> =
            std::iter::from_fn(|| q.start_first().map(|(i, _)| i)).collect();
        assert_eq!(started.len(), kept);
        assert_eq!(q.loaded_bytes, 0, "taking a record gives its bytes back");
        assert_eq!(q.to_read_ahead(10, 16).len(), 6 - kept);
        // Once the budget is free again, new ones are kept.
        q.push_new(id(7), 0);
        q.offer_loaded(id(7), record(7));
        assert_eq!(q.start_first().map(|(i, _)| i), Some(id(7)));
        // Removal and eviction give the bytes back too.
        q.push_new(id(8), 0);
        q.offer_loaded(id(8), record_sized(8, big));
        q.remove(id(8));
        assert_eq!(q.loaded_bytes, 0);
    }

    #[test]
    fn removal_and_rescheduling_keep_the_count() {
        let mut q = PendingQueue::new(3, fresh(vec![(1, id(1)), (2, id(2))]));
        assert_eq!(q.page_wanted(), Some((2, id(3))));
        q.remove(id(1));
        assert_eq!(q.total(), 2);
        q.remove(id(1));
        assert_eq!(q.total(), 2, "removing twice counts once");
        // Rescheduled past the horizon: back to storage only, still counted.
        q.reschedule(id(2), 10, 10);
        assert!(!q.in_memory(id(2)));
        assert_eq!(q.total(), 2);
        q.requeue(id(9), 0, 0, false);
        assert_eq!(q.total(), 3);
        assert!(q.bring_forward(id(9), 0));
        assert!(!q.bring_forward(id(2), 0));
    }

    #[test]
    fn a_page_leaves_deliveries_whose_hand_over_is_still_coming_to_it() {
        // id(1) in memory, id(3) paged out.
        let mut q = PendingQueue::new(2, fresh(vec![(1, id(1))]));
        q.paging_started();
        // Meanwhile ingest stored id(2) under commit 7; its hand-over is still on the way.
        q.page_read(vec![((2, id(2)), 7), ((3, id(3)), 0)], true, 6);
        assert!(!q.in_memory(id(2)), "left to its hand-over");
        assert!(q.in_memory(id(3)));
        assert_eq!(q.total(), 2);
        // The hand-over queues and counts it, once.
        q.push_new(id(2), 2);
        assert!(q.in_memory(id(2)));
        assert_eq!((q.total(), q.waiting_len()), (3, 3));
    }

    #[test]
    fn a_delivery_finished_while_a_page_was_read_does_not_come_back() {
        let mut q = PendingQueue::new(2, fresh(vec![(1, id(1))]));
        q.put_loaded(id(1), record(1));
        q.paging_started();
        let (started, _) = q.start_first().unwrap();
        assert_eq!(started, id(1));
        q.remove(id(1));
        assert_eq!(q.total(), 1);
        // The page was read before the result's write removed its entry.
        q.page_read(vec![((1, id(1)), 0), ((5, id(2)), 0)], true, 0);
        assert!(!q.in_memory(id(1)), "finished, not queued again");
        assert!(q.in_memory(id(2)));
        assert_eq!(q.total(), 1);
    }

    #[test]
    fn resume_moves_the_stored_due_times_of_the_window() {
        let mut q = PendingQueue::new(2, fresh(vec![(100, id(1)), (900, id(2))]));
        let moves = q.make_all_due(500);
        assert_eq!(moves, vec![(id(2), 900, 500)]);
        assert_eq!(q.stored_due(id(2)), Some(500));
        assert_eq!(q.first(), Some((100, id(1))));
        assert!(q.make_all_due(500).is_empty(), "nothing left to move");
    }
}
