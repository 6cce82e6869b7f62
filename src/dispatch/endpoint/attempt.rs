//! Starting an attempt, and applying its result: the decisions come from [`retry::after_attempt`]
//! and [`CircuitState::after_attempt`]; this file only carries them out and stores them.

use actix::prelude::*;

use super::{probe_in_ms, EndpointActor, Transport, Unsettled};
use crate::delivery::{AttemptOutcome, AttemptReport, WebhookRequest};
use crate::dispatch::circuit::Transition;
use crate::dispatch::queue::Class;
use crate::dispatch::retry::{self, EndpointSettings, Next, Outcome, Overrides};
use crate::dispatch::Shared;
use crate::model::{now_millis, Delivery, DeliveryId, DeliveryStatus, Endpoint, Event, UnixMillis};
use crate::operator::OperatorEvent;
use crate::storage::{DeliveryUpdate, Loaded};
use crate::stream::{AttemptLine, Line};

/// A failing endpoint's failed probes are logged at info at most this often.
const PROBE_LOG_EVERY_MS: i64 = 60_000;

impl EndpointActor {
    pub(super) fn start_attempt(
        &mut self,
        ctx: &mut Context<Self>,
        id: DeliveryId,
        (delivery, event): Loaded,
        probe: bool,
        class: Class,
    ) {
        self.unsettled.insert(
            id,
            Unsettled {
                probe,
                class,
                requeue: false,
            },
        );
        self.sending += 1;
        if class == Class::Retry {
            self.sending_retries += 1;
        }
        let shared = self.shared.clone();
        let endpoint = self.endpoint.clone();
        let settings = self.settings.clone();
        let transport = self.transport.clone();
        let attempt = async move {
            let at = now_millis();
            let report = send(
                &shared, &transport, &endpoint, &settings, &delivery, &event, at,
            )
            .await;
            (delivery, report, at)
        };
        ctx.spawn(
            attempt
                .into_actor(self)
                .map(move |(delivery, report, at), act, ctx| {
                    act.attempt_finished(ctx, id, delivery, report, at)
                }),
        );
    }

    /// Records the attempt's outcome in the stats and the circuit; returns the transition.
    pub(super) fn note_attempt(
        &mut self,
        report: &AttemptReport,
        probe: bool,
        at: UnixMillis,
        now: UnixMillis,
    ) -> Transition {
        self.metrics.attempt(report.outcome.result_label()).inc();
        self.metrics
            .attempt_duration
            .observe(report.duration.as_secs_f64());
        let success = report.outcome.is_success();
        if success {
            self.stats.last_success_at = Some(at);
            self.last_error = None;
        } else {
            self.stats.last_failure_at = Some(at);
            self.last_error = report.outcome.error();
        }
        self.recent.record(success, now);
        let failing_since = self.circuit.failing_since;
        let (circuit, transition) =
            self.circuit
                .after_result(probe, report.outcome.result(), report.retry_after, now);
        self.circuit = circuit;
        let endpoint = self.endpoint.id;
        match transition {
            Transition::Opened => {
                let error = report.outcome.error().unwrap_or_default();
                self.report(|tenant| {
                    OperatorEvent::endpoint_failing(
                        endpoint,
                        tenant,
                        circuit.failing_since.unwrap_or(now),
                        circuit.consecutive_failures,
                        &error,
                    )
                });
            }
            Transition::Closed { open_for_ms } => self.report(|tenant| {
                let since = failing_since.unwrap_or(now - open_for_ms);
                OperatorEvent::endpoint_recovered(endpoint, tenant, since, now)
            }),
            Transition::Unchanged | Transition::ProbeFailed => {}
        }
        match transition {
            Transition::Opened => {
                // The first failed probe is logged, then one a minute.
                self.probe_logged_at = None;
                tracing::warn!(
                    endpoint = %self.endpoint.id,
                    consecutive_failures = circuit.consecutive_failures,
                    error = report.outcome.error().unwrap_or_default(),
                    "endpoint failing; holding its queue and probing it"
                );
                self.publish_state();
            }
            Transition::Closed { open_for_ms } => {
                tracing::info!(
                    endpoint = %self.endpoint.id, failing_for_s = open_for_ms / 1000,
                    backlog = self.queue.total(), "endpoint recovered; draining its queue"
                );
                self.publish_state();
            }
            Transition::ProbeFailed | Transition::Unchanged => {}
        }
        transition
    }

    /// Failing continuously for at least `delivery.pause_after` (never when it is 0).
    fn failing_too_long(&self, now: UnixMillis) -> bool {
        let limit = self.shared.config.delivery.pause_after.as_millis() as i64;
        limit > 0
            && self
                .circuit
                .failing_since
                .is_some_and(|since| now - since >= limit)
    }

    /// One `event: attempt` line for `GET /v1/stream`, built only if someone listens.
    pub(super) fn publish_attempt(
        &self,
        delivery: &Delivery,
        attempt: &crate::model::Attempt,
        result: &'static str,
    ) {
        self.shared.feed.publish(|| {
            Line::Attempt(AttemptLine {
                delivery_id: delivery.id.to_string(),
                endpoint_id: delivery.endpoint_id.to_string(),
                event_id: delivery.event_id.clone(),
                tenant: delivery.tenant.clone(),
                n: attempt.n,
                at: crate::model::rfc3339(attempt.at),
                result,
                status_code: attempt.status_code,
                duration_ms: attempt.duration_ms,
                error: attempt.error.clone(),
            })
        });
    }

    fn attempt_finished(
        &mut self,
        ctx: &mut Context<Self>,
        id: DeliveryId,
        mut delivery: Delivery,
        report: AttemptReport,
        at: UnixMillis,
    ) {
        self.sending -= 1;
        #[cfg(feature = "failpoints")]
        crate::failpoints::panic_on_event_type(&delivery.event_type);
        let unsettled = self.unsettled.get(&id).copied().unwrap_or(Unsettled {
            probe: false,
            class: Class::Retry,
            requeue: false,
        });
        if unsettled.class == Class::Retry {
            self.sending_retries = self.sending_retries.saturating_sub(1);
        }
        let now = now_millis();
        let n = delivery.attempts + 1;
        let transition = self.note_attempt(&report, unsettled.probe, at, now);
        let attempt = report.to_attempt(n, at);
        self.publish_attempt(&delivery, &attempt, report.outcome.result_label());
        let next = retry::after_attempt(
            &self.settings.schedule,
            delivery.retries_used,
            Outcome {
                success: report.outcome.is_success(),
                retry_after: report.retry_after,
            },
            Overrides {
                deleting: self.deleting,
                requeue: unsettled.requeue,
                expires_at: delivery.expires_at,
            },
            now,
            retry::jitter_draw(),
        );
        // 410 Gone: the receiver says the endpoint is gone. The delivery stays pending,
        // due now and held by the pause, with its retry budget untouched.
        let gone = report.outcome.is_gone();
        let next = match next {
            Next::Retry { .. } | Next::Failed if gone => Next::Retry {
                at: now,
                retries_used: delivery.retries_used,
            },
            other => other,
        };
        if gone {
            self.pause_self(crate::model::PausedReason::Gone);
        } else if self.failing_too_long(now) {
            self.pause_self(crate::model::PausedReason::FailingTooLong);
        }
        delivery.attempts = n;
        delivery.updated_at = now;
        (delivery.status, delivery.next_attempt_at) = match next {
            Next::Succeeded => (DeliveryStatus::Succeeded, None),
            Next::Retry { at, retries_used } => {
                delivery.retries_used = retries_used;
                (DeliveryStatus::Pending, Some(at))
            }
            Next::Failed => (DeliveryStatus::Failed, None),
            Next::Cancelled => (DeliveryStatus::Cancelled, None),
            Next::Expired => (DeliveryStatus::Expired, None),
        };
        self.note_final(delivery.status, 1);
        let error = attempt.error.as_deref().unwrap_or("");
        match delivery.status {
            DeliveryStatus::Failed => {
                self.report(|_| OperatorEvent::delivery_failed(&delivery, error))
            }
            DeliveryStatus::Expired => self.report(|_| OperatorEvent::delivery_expired(&delivery)),
            _ => {}
        }
        match delivery.status {
            DeliveryStatus::Succeeded => tracing::debug!(
                delivery = %id, endpoint = %delivery.endpoint_id, attempt = n,
                ms = attempt.duration_ms, "delivered"
            ),
            DeliveryStatus::Failed => tracing::warn!(
                delivery = %id, endpoint = %delivery.endpoint_id, attempt = n,
                error, "delivery failed; schedule exhausted"
            ),
            DeliveryStatus::Expired => tracing::info!(
                delivery = %id, endpoint = %delivery.endpoint_id, attempt = n,
                error, "delivery expired: its next retry would come after its deadline"
            ),
            // A dead receiver is probed for as long as it is down: one line a minute says
            // so without flooding the journal.
            _ if transition == Transition::ProbeFailed => {
                if self
                    .probe_logged_at
                    .is_none_or(|t| now - t >= PROBE_LOG_EVERY_MS)
                {
                    self.probe_logged_at = Some(now);
                    tracing::info!(
                        delivery = %id, endpoint = %delivery.endpoint_id, attempt = n, error,
                        failed_probes = self.circuit.failed_probes,
                        next_probe_in_ms = probe_in_ms(&self.circuit, now),
                        "probe failed; endpoint still failing"
                    )
                } else {
                    tracing::debug!(
                        delivery = %id, endpoint = %delivery.endpoint_id, attempt = n, error,
                        next_probe_in_ms = probe_in_ms(&self.circuit, now),
                        "probe failed; endpoint still failing"
                    )
                }
            }
            _ => tracing::info!(
                delivery = %id, endpoint = %delivery.endpoint_id, attempt = n, error,
                retry_in_ms = delivery.next_attempt_at.map(|t| t - now),
                "attempt failed"
            ),
        }
        let old_due = self.queue.stored_due(id);
        // The stats go with the result; a deleted endpoint's are not written back.
        let stats = (!self.deleting).then(|| self.stats_snapshot());
        let (status, next_at) = (delivery.status, delivery.next_attempt_at);
        let turn = delivery.turn().map(|(k, s)| (k.to_string(), s));
        let update = DeliveryUpdate {
            delivery,
            attempt: Some(attempt),
            old_due,
        };
        // Queued now, so the stats it carries are stored after those queued before.
        let reported = std::mem::take(&mut self.outbox);
        let write = self
            .shared
            .store
            .write_results(vec![update], stats, reported.clone());
        ctx.spawn(write.into_actor(self).map(move |written, act, ctx| {
            act.submit_reported(reported);
            // On a failed write the stored state still says pending at the old due time, so a
            // restart retries it; in this process it goes on as computed.
            let stored = match &written {
                Ok(()) => next_at,
                Err(e) => {
                    tracing::error!(delivery = %id, error = %e, "cannot store attempt result");
                    old_due
                }
            };
            // A retry asked for after the result was decided, while it was being stored.
            let requeue = act.unsettled.remove(&id).is_some_and(|u| u.requeue);
            match (status, next_at) {
                (DeliveryStatus::Pending, Some(next)) => {
                    act.queue.reschedule(id, next, stored.unwrap_or(next))
                }
                _ => act.queue.remove(id),
            }
            if let Some((key, seq)) = &turn {
                act.turn_done(key, *seq, status.is_final() && written.is_ok());
            }
            // A retry asked for while its result was being stored: failed for good, it is
            // queued again; waiting for a retry, it is due now.
            if requeue && !act.deleting {
                match status {
                    DeliveryStatus::Failed | DeliveryStatus::Expired => act.requeue_stored(ctx, id),
                    // Paged out: storage knows where it is.
                    DeliveryStatus::Pending if !act.bring_forward_now(ctx, id, now_millis()) => {
                        act.requeue_stored(ctx, id)
                    }
                    _ => {}
                }
            }
            act.after_change(ctx);
        }));
        // Its request slot is free: the next delivery need not wait for this write.
        self.after_change(ctx);
    }
}

impl EndpointActor {
    /// A delivery whose deadline passed before its turn came: stored as `expired`. It stays
    /// unsettled until that is stored, so a retry asked for meanwhile is not lost.
    pub(super) fn expire(
        &mut self,
        ctx: &mut Context<Self>,
        id: DeliveryId,
        mut delivery: Delivery,
        class: Class,
    ) {
        self.unsettled.insert(
            id,
            Unsettled {
                probe: false,
                class,
                requeue: false,
            },
        );
        let now = now_millis();
        delivery.status = DeliveryStatus::Expired;
        delivery.next_attempt_at = None;
        delivery.updated_at = now;
        self.note_final(DeliveryStatus::Expired, 1);
        self.report(|_| OperatorEvent::delivery_expired(&delivery));
        tracing::info!(
            delivery = %id, endpoint = %delivery.endpoint_id, attempts = delivery.attempts,
            "delivery expired before its turn"
        );
        let old_due = self.queue.stored_due(id);
        let turn = delivery.turn().map(|(k, s)| (k.to_string(), s));
        let update = DeliveryUpdate {
            delivery,
            attempt: None,
            old_due,
        };
        let stats = (!self.deleting).then(|| self.stats_snapshot());
        let reported = std::mem::take(&mut self.outbox);
        let write = self
            .shared
            .store
            .write_results(vec![update], stats, reported.clone());
        ctx.spawn(write.into_actor(self).map(move |written, act, ctx| {
            act.submit_reported(reported);
            let requeue = act.unsettled.remove(&id).is_some_and(|u| u.requeue);
            if let Some((key, seq)) = &turn {
                act.turn_done(key, *seq, written.is_ok());
            }
            match written {
                Ok(()) => act.queue.remove(id),
                // Still pending in storage: try again shortly.
                Err(e) => {
                    tracing::error!(delivery = %id, error = %e, "cannot store an expired delivery");
                    let again = now_millis() + super::STORAGE_RETRY.as_millis() as i64;
                    act.queue.reschedule(id, again, old_due.unwrap_or(again));
                }
            }
            if requeue && !act.deleting {
                act.requeue_stored(ctx, id);
            }
            act.after_change(ctx);
        }));
    }
}

pub(super) async fn send(
    shared: &Shared,
    transport: &Transport,
    endpoint: &Endpoint,
    settings: &EndpointSettings,
    delivery: &Delivery,
    event: &Event,
    at: UnixMillis,
) -> AttemptReport {
    let started = std::time::Instant::now();
    let unusable = |outcome: AttemptOutcome| AttemptReport {
        outcome,
        duration: started.elapsed(),
        response_body: None,
        retry_after: None,
    };
    let url = match &settings.url {
        Ok(url) => url,
        Err(e) => return unusable(AttemptOutcome::Other(format!("invalid url: {e}"))),
    };
    let identity = match &transport.identity {
        Ok(identity) => identity,
        Err(e) => return unusable(AttemptOutcome::Other(e.clone())),
    };
    let client = &identity.client;
    let body = bytes::Bytes::copy_from_slice(event.payload.get().as_bytes());
    let request = |bearer| WebhookRequest {
        url,
        signature_header: settings.signature_name.as_ref(),
        signing: endpoint.spec.signing.unwrap_or_default(),
        secrets: endpoint.signing_secrets(at).collect(),
        event_id: &delivery.event_id,
        event_type: &delivery.event_type,
        attempt: delivery.attempts + 1,
        body: body.clone(),
        static_headers: endpoint.spec.headers.as_ref(),
        timeout: settings.timeout,
        // Receivers compare it with their own wall clock, not with hookd's.
        timestamp: crate::clock::wall_millis() / 1000,
        ordering: delivery.ordering.as_ref().map(|o| (o.key.as_str(), o.seq)),
        bearer,
    };
    let (Some(auth), Some(tokens)) = (&endpoint.spec.auth, &transport.tokens) else {
        return go(shared, transport, identity, request(None)).await;
    };
    let token = match tokens.token(client, auth, None).await {
        Ok(t) => t,
        Err(e) => return unusable(AttemptOutcome::AuthError(e)),
    };
    let report = go(shared, transport, identity, request(Some(&token))).await;
    if report.outcome.status_code() != Some(401) {
        return report;
    }
    // Refused: the token may have been revoked early. One new token, one more try, and
    // that try is the attempt's outcome.
    let token = match tokens.token(client, auth, Some(&token)).await {
        Ok(t) => t,
        Err(e) => return unusable(AttemptOutcome::AuthError(e)),
    };
    let mut again = go(shared, transport, identity, request(Some(&token))).await;
    again.duration = started.elapsed();
    again
}

/// One request, through the endpoint's proxy if it has one.
async fn go(
    shared: &Shared,
    transport: &Transport,
    identity: &crate::delivery::Identity,
    request: WebhookRequest<'_>,
) -> AttemptReport {
    match &transport.proxy {
        Some(proxy) => {
            let open = shared.sender.allows_private_networks();
            crate::delivery::proxy::send(proxy, &identity.tls, open, request).await
        }
        None => shared.sender.send(&identity.client, request).await,
    }
}
