//! [`Ordered`]: the one path by which an existing delivery changes. Every change to a stored
//! delivery — attempt results, retry, recover, bring-forward, cancel, test records, pruning —
//! is a job on the results writer thread, applied in the order the jobs were queued
//! ([`Store::write_results`], [`Store::ordered`]). An `Ordered` exists only on that thread, so
//! two changes can never interleave: whatever a job reads (is this delivery still failed? is
//! every delivery of this event final?) is still true when its write lands, because nothing
//! else writes in between.
//!
//! Who decides: a delivery's endpoint actor decides everything about it while it can still be
//! sent (only it queues changes for pending deliveries), and each job checks its own
//! precondition against the stored record, so a decision made on a stale read (a retry racing
//! the pruner, two recovers at once) changes nothing instead of resurrecting or duplicating a
//! record. The pruner only removes what no actor will touch again: events whose deliveries
//! are all final.

use std::collections::HashSet;
use std::ops::Deref;

use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::keys::*;
use super::rocks::{decode, encode, Store};
use super::{Requeued, StorageError};
use crate::model::{
    Attempt, Delivery, DeliveryId, DeliveryStatus, EndpointId, Event, EventKey, UnixMillis,
};

/// The writer thread's handle on the store: the only one with the delivery-changing methods.
pub struct Ordered<'a>(pub(super) &'a Store);

impl Deref for Ordered<'_> {
    type Target = Store;

    fn deref(&self) -> &Store {
        self.0
    }
}

impl Ordered<'_> {
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
        self.write(batch, false, super::StorageOp::Ordered)
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
        self.write(batch, false, super::StorageOp::Ordered)
    }

    /// Puts every delivery of `endpoint` created in `[since, until]` whose status is one of
    /// `statuses` (`failed`, `expired`) back in the queue, due at `now` with a fresh retry
    /// budget and no deadline; returns their ids.
    pub fn requeue_failed(
        &self,
        endpoint: EndpointId,
        since: UnixMillis,
        until: UnixMillis,
        statuses: &[DeliveryStatus],
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
        let wanted: Vec<u8> = statuses.iter().map(|s| status_byte(*s)).collect();
        let mut requeued = Vec::new();
        let mut chunk = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_ENDPOINT_DELIVERIES),
            IteratorMode::From(&from, Direction::Forward),
        );
        let mut flush = |chunk: &mut Vec<DeliveryId>| -> Result<(), StorageError> {
            let mut updates = Vec::with_capacity(chunk.len());
            for mut d in self.get_deliveries(chunk)?.into_iter().flatten() {
                if statuses.contains(&d.status) && !d.test {
                    d.requeue(now);
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
            if !v.first().is_some_and(|b| wanted.contains(b)) {
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

    /// Several [`Ordered::update_delivery`] calls in one write.
    pub fn update_deliveries(
        &self,
        updates: &[(Delivery, Option<UnixMillis>)],
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for (delivery, old_due) in updates {
            self.stage_delivery_update(&mut batch, delivery, None, *old_due)?;
        }
        self.write(batch, false, super::StorageOp::Ordered)
    }

    pub(super) fn stage_delivery_update(
        &self,
        batch: &mut WriteBatch,
        delivery: &Delivery,
        attempt: Option<&Attempt>,
        old_due: Option<UnixMillis>,
    ) -> Result<(), StorageError> {
        let due_cf = self.cf(CF_DUE);
        // The attempt goes inside the delivery's record: one key per result.
        batch.put_cf(
            self.cf(CF_DELIVERIES),
            delivery_key(delivery.id),
            super::codec::encode_delivery(delivery, attempt)?,
        );
        batch.put_cf(
            self.cf(CF_ENDPOINT_DELIVERIES),
            endpoint_delivery_key(delivery.endpoint_id, delivery.id),
            [status_byte(delivery.status)],
        );
        let new_due = match delivery.status {
            DeliveryStatus::Pending => delivery.next_attempt_at,
            _ => None,
        };
        // A final ordered delivery no longer holds its key.
        if let (Some((key, seq)), true) = (delivery.turn(), delivery.status.is_final()) {
            batch.delete_cf(
                self.cf(CF_KEY_PENDING),
                key_pending_key(delivery.endpoint_id, key, seq),
            );
        }
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

    /// `POST /v1/deliveries/{id}/retry` for a delivery its actor does not hold: a failed one
    /// is pending again now with a fresh retry budget; a pending one (paged out) is due now.
    pub fn requeue_one(&self, id: DeliveryId, now: UnixMillis) -> Result<Requeued, StorageError> {
        let Some(mut d) = self.get_delivery(id)? else {
            return Ok(Requeued::NotFound);
        };
        match d.status {
            DeliveryStatus::Failed | DeliveryStatus::Expired if !d.test => {
                d.requeue(now);
                self.update_delivery(&d, None, None)?;
                Ok(Requeued::Requeued)
            }
            DeliveryStatus::Pending => {
                let old = d.next_attempt_at;
                if old.is_some_and(|due| due > now) {
                    d.next_attempt_at = Some(now);
                    self.update_delivery(&d, None, old)?;
                }
                Ok(Requeued::BroughtForward {
                    stored: d.next_attempt_at.unwrap_or(now),
                })
            }
            other => Ok(Requeued::NotRetryable(other)),
        }
    }

    /// Moves pending deliveries' due entries `(id, from, to)` (bring-forward, resume), so that
    /// a restart keeps what the operator asked for. Deliveries no longer pending, or no longer
    /// due at `from`, are left alone; returns how many moved.
    pub fn reschedule(
        &self,
        moves: &[(DeliveryId, UnixMillis, UnixMillis)],
    ) -> Result<usize, StorageError> {
        let ids: Vec<DeliveryId> = moves.iter().map(|m| m.0).collect();
        let mut updates = Vec::new();
        for (found, &(_, from, to)) in self.get_deliveries(&ids)?.into_iter().zip(moves) {
            let Some(mut d) = found else { continue };
            if d.status != DeliveryStatus::Pending || d.next_attempt_at != Some(from) || from == to
            {
                continue;
            }
            d.next_attempt_at = Some(to);
            updates.push((d, Some(from)));
        }
        self.update_deliveries(&updates)?;
        Ok(updates.len())
    }

    /// Removes a `due` entry found to have no pending delivery behind it (a write that failed
    /// half-way in an earlier run), so it is not counted as pending again at every start.
    pub fn drop_stray_due(
        &self,
        endpoint: EndpointId,
        due: UnixMillis,
        id: DeliveryId,
    ) -> Result<bool, StorageError> {
        let pending = self
            .get_delivery(id)?
            .is_some_and(|d| d.status == DeliveryStatus::Pending && d.next_attempt_at == Some(due));
        if pending {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_DUE), due_key(endpoint, due, id));
        self.write(batch, false, super::StorageOp::Ordered)?;
        Ok(true)
    }

    /// Cancels up to `limit` pending deliveries of an endpoint, except those in `skip` (in
    /// flight: their results are still to come); returns how many were cancelled and whether
    /// more may remain. A chunk at a time keeps other endpoints' results from waiting long.
    pub fn cancel_pending_chunk(
        &self,
        endpoint: EndpointId,
        skip: &HashSet<DeliveryId>,
        limit: usize,
    ) -> Result<(usize, bool), StorageError> {
        let mut cancelled = 0;
        let mut from = None;
        loop {
            let (page, complete) = self.due_page(endpoint, from, limit)?;
            from = page
                .last()
                .map(|&((due, id), _)| (due, DeliveryId(ulid::Ulid(id.0 .0.saturating_add(1)))));
            let entries: Vec<(DeliveryId, Option<UnixMillis>)> = page
                .into_iter()
                .filter(|((_, id), _)| !skip.contains(id))
                .map(|((due, id), _)| (id, Some(due)))
                .collect();
            let scanned_only_skipped = entries.is_empty();
            cancelled += self.cancel_deliveries(&entries)?;
            if complete || from.is_none() {
                return Ok((cancelled, false));
            }
            if !scanned_only_skipped {
                return Ok((cancelled, true));
            }
        }
    }

    /// Deletes, with their deliveries, attempts and idempotency keys, the events received before
    /// `cutoff` whose deliveries are all final and last changed before `cutoff`. Looks at most
    /// `scan` events from `from` on; returns how many were pruned and where the next call goes
    /// on (`None`: the end of what is old enough).
    pub fn prune(
        &self,
        cutoff: UnixMillis,
        from: Option<EventKey>,
        scan: usize,
    ) -> Result<(usize, Option<EventKey>), StorageError> {
        let cutoff_key = event_key(EventKey(ulid::Ulid::from_parts(cutoff.max(0) as u64, 0)));
        let start = from.map(event_key);
        let mode = match &start {
            Some(k) => IteratorMode::From(k, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut batch = WriteBatch::default();
        let (mut pruned, mut scanned) = (0, 0);
        let mut next = None;
        for item in self.db.iterator_cf(self.cf(CF_EVENTS), mode) {
            let (k, v) = item?;
            if *k >= cutoff_key[..] {
                break;
            }
            if scanned == scan {
                next = Some(EventKey::from_bytes(k[..16].try_into().map_err(|_| {
                    StorageError::Corrupt {
                        cf: CF_EVENTS,
                        message: "bad key length".into(),
                    }
                })?));
                break;
            }
            scanned += 1;
            let event: Event = decode(CF_EVENTS, &v)?;
            let ids: Vec<DeliveryId> = event.deliveries.iter().map(|d| d.id).collect();
            let deliveries = self.get_deliveries(&ids)?;
            if deliveries
                .iter()
                .flatten()
                .any(|d| d.status == DeliveryStatus::Pending || d.updated_at >= cutoff)
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
            self.write(batch, false, super::StorageOp::Ordered)?;
        }
        Ok((pruned, next))
    }
}
