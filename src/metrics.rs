//! Every Prometheus metric hookd exports, declared in one place. Labels come from bounded sets
//! only: endpoint ids (removed when the endpoint is deleted), the event catalogue (or at most
//! [`MAX_TYPE_LABELS`] types, the rest as `other`), and fixed outcome names. Never a URL.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use parking_lot::Mutex;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Distinct `type` label values without a catalogue.
pub const MAX_TYPE_LABELS: usize = 100;

/// Attempt durations: webhook receivers answer in milliseconds to tens of seconds.
const DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

/// WAL fsyncs: a fraction of a millisecond on a good disk, up to seconds on a struggling one.
const SYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

/// Waits before an attempt starts: from milliseconds (a free slot) to hours (a held backlog).
const WAIT_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0, 86400.0,
];

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        &["endpoint"],
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

/// An endpoint's state as `hookd_endpoint_state` and `stats.state` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    Active,
    Paused,
    Failing,
}

impl EndpointState {
    pub const ALL: [EndpointState; 3] = [
        EndpointState::Active,
        EndpointState::Paused,
        EndpointState::Failing,
    ];

    pub fn label(self) -> &'static str {
        match self {
            EndpointState::Active => "active",
            EndpointState::Paused => "paused",
            EndpointState::Failing => "failing",
        }
    }
}

/// Why ingest refused an event, for `hookd_ingest_rejected_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestRejection {
    DiskFull,
    StorageError,
    NotReady,
    TooLarge,
    Invalid,
}

impl IngestRejection {
    pub const ALL: [IngestRejection; 5] = [
        IngestRejection::DiskFull,
        IngestRejection::StorageError,
        IngestRejection::NotReady,
        IngestRejection::TooLarge,
        IngestRejection::Invalid,
    ];

    pub fn label(self) -> &'static str {
        match self {
            IngestRejection::DiskFull => "disk_full",
            IngestRejection::StorageError => "storage_error",
            IngestRejection::NotReady => "not_ready",
            IngestRejection::TooLarge => "too_large",
            IngestRejection::Invalid => "invalid",
        }
    }
}

/// How a delivery ended, for `hookd_deliveries_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryOutcome {
    Succeeded,
    Failed,
    Cancelled,
    Expired,
}

impl DeliveryOutcome {
    pub const ALL: [DeliveryOutcome; 4] = [
        DeliveryOutcome::Succeeded,
        DeliveryOutcome::Failed,
        DeliveryOutcome::Cancelled,
        DeliveryOutcome::Expired,
    ];

    /// `None` for a status that is not final.
    pub fn of(status: crate::model::DeliveryStatus) -> Option<DeliveryOutcome> {
        use crate::model::DeliveryStatus as S;
        match status {
            S::Succeeded => Some(DeliveryOutcome::Succeeded),
            S::Failed => Some(DeliveryOutcome::Failed),
            S::Cancelled => Some(DeliveryOutcome::Cancelled),
            S::Expired => Some(DeliveryOutcome::Expired),
            S::Pending => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            DeliveryOutcome::Succeeded => "succeeded",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::Cancelled => "cancelled",
            DeliveryOutcome::Expired => "expired",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    pub events_ingested: IntCounterVec,
    pub deliveries: IntCounterVec,
    pub attempts: IntCounterVec,
    pub attempt_duration: HistogramVec,
    pub first_attempt_delay: HistogramVec,
    pub delivery_lag: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub in_flight: IntGaugeVec,
    pub endpoint_state: StateGauge,
    pub oldest_pending_age: IntGaugeVec,
    pub storage_commits: IntCounter,
    /// How long each WAL fsync took: tells a slow disk from a slow hookd.
    pub storage_wal_sync: Histogram,
    pub storage_committed_events: IntCounter,
    pub storage_errors: IntCounterVec,
    pub ingest_rejected: IntCounterVec,
    pub storage_free_bytes: prometheus::IntGauge,
    /// 1 while a configured source takes messages, else 0 (`/readyz`'s `sources`).
    pub source_up: IntGaugeVec,
    seen_types: Mutex<HashSet<String>>,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// `reason` values of the paused series ([`crate::model::PausedReason`]).
const PAUSED_REASONS: [&str; 3] = ["operator", "gone", "failing_too_long"];

/// `hookd_endpoint_state`: one family whose `paused` series carries a `reason` label and
/// whose other series do not (API.md §12). A metric vector has one label set, so two
/// vectors are gathered as one family by this collector.
#[derive(Clone)]
pub struct StateGauge {
    plain: IntGaugeVec,
    paused: IntGaugeVec,
}

const STATE_HELP: &str = "1 for the endpoint's current state; the paused series says why (reason).";

impl StateGauge {
    // invariant: static, valid names and labels, registered once.
    fn register(registry: &Registry) -> StateGauge {
        let gauge = StateGauge {
            plain: IntGaugeVec::new(
                Opts::new("hookd_endpoint_state", STATE_HELP),
                &["endpoint", "state"],
            )
            .expect("valid metric"),
            paused: IntGaugeVec::new(
                Opts::new("hookd_endpoint_state", STATE_HELP),
                &["endpoint", "state", "reason"],
            )
            .expect("valid metric"),
        };
        registry
            .register(Box::new(gauge.clone()))
            .expect("unique metric");
        gauge
    }
}

impl prometheus::core::Collector for StateGauge {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.plain.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.plain.collect();
        let paused: Vec<_> = self
            .paused
            .collect()
            .into_iter()
            .flat_map(|mut f| f.take_metric().into_iter())
            .collect();
        match families.first_mut() {
            Some(family) => family.mut_metric().extend(paused),
            None => families = self.paused.collect(),
        }
        families
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Metrics {
    // invariant: the names and labels below are static and valid, and registered once each.
    fn new() -> Metrics {
        let registry = Registry::new();
        // process_* (CPU, memory, file descriptors, start time), read from /proc at scrape.
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        let attempt_duration = HistogramVec::new(
            HistogramOpts::new(
                "hookd_attempt_duration_seconds",
                "Duration of delivery attempts, connect to last byte read.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["endpoint"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(attempt_duration.clone()))
            .expect("unique metric");
        let storage_commits = IntCounter::new(
            "hookd_storage_commits_total",
            "Group commits of ingested events: with storage.sync, one WAL fsync acknowledging every event written since the one before; without, one write.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(storage_commits.clone()))
            .expect("unique metric");
        let storage_wal_sync = Histogram::with_opts(
            HistogramOpts::new(
                "hookd_storage_wal_sync_seconds",
                "Duration of each WAL fsync that acknowledges a group commit.",
            )
            .buckets(SYNC_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(storage_wal_sync.clone()))
            .expect("unique metric");
        let storage_committed_events = IntCounter::new(
            "hookd_storage_committed_events_total",
            "Events acknowledged by those commits; the ratio to commits is the group-commit batch size.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(storage_committed_events.clone()))
            .expect("unique metric");
        Metrics {
            events_ingested: counter(
                &registry,
                "hookd_events_ingested_total",
                "Events stored (duplicates not counted).",
                &["type"],
            ),
            deliveries: counter(
                &registry,
                "hookd_deliveries_total",
                "Deliveries that reached a final state.",
                &["endpoint", "outcome"],
            ),
            attempts: counter(
                &registry,
                "hookd_attempts_total",
                "Delivery attempts by result.",
                &["endpoint", "result"],
            ),
            attempt_duration,
            first_attempt_delay: histogram(
                &registry,
                "hookd_first_attempt_delay_seconds",
                "From an event's receipt to the start of its delivery's first attempt.",
                &WAIT_BUCKETS,
            ),
            delivery_lag: histogram(
                &registry,
                "hookd_delivery_lag_seconds",
                "From when an attempt was due to when it started.",
                &WAIT_BUCKETS,
            ),
            queue_depth: gauge(
                &registry,
                "hookd_queue_depth",
                "Pending deliveries.",
                &["endpoint"],
            ),
            in_flight: gauge(
                &registry,
                "hookd_in_flight",
                "Attempts out to the receiver (at most max_concurrency).",
                &["endpoint"],
            ),
            endpoint_state: StateGauge::register(&registry),
            oldest_pending_age: gauge(
                &registry,
                "hookd_oldest_pending_age_seconds",
                "Age of the oldest pending delivery.",
                &["endpoint"],
            ),
            storage_commits,
            storage_wal_sync,
            storage_committed_events,
            storage_errors: {
                let c = counter(
                    &registry,
                    "hookd_storage_errors_total",
                    "Failed storage writes and WAL fsyncs, by kind of write.",
                    &["op"],
                );
                // Every series exists from the start, so a rate() over it never sees a gap.
                for op in crate::storage::StorageOp::ALL {
                    c.with_label_values(&[op.label()]);
                }
                c
            },
            ingest_rejected: {
                let c = counter(
                    &registry,
                    "hookd_ingest_rejected_total",
                    "Events refused by ingest, by reason (a batch's bad items count one each).",
                    &["reason"],
                );
                for r in IngestRejection::ALL {
                    c.with_label_values(&[r.label()]);
                }
                c
            },
            storage_free_bytes: {
                let g = prometheus::IntGauge::new(
                    "hookd_storage_free_bytes",
                    "Free bytes on the data directory's file system, as last checked.",
                )
                .expect("valid metric");
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
                g
            },
            source_up: gauge(
                &registry,
                "hookd_source_up",
                "1 while the source (label source) is connected and taking messages, else 0.",
                &["source"],
            ),
            seen_types: Mutex::new(HashSet::new()),
            registry: {
                let build = IntGaugeVec::new(
                    Opts::new("hookd_build_info", "1, labelled with hookd's version."),
                    &["version"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(build.clone()))
                    .expect("unique metric");
                build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
                registry
            },
        }
    }

    pub fn ingest_rejected(&self, reason: IngestRejection, n: u64) {
        self.ingest_rejected
            .with_label_values(&[reason.label()])
            .inc_by(n);
    }

    pub fn storage_error(&self, op: crate::storage::StorageOp) {
        self.storage_errors.with_label_values(&[op.label()]).inc();
    }

    /// Counts a stored event under a bounded `type` label.
    pub fn event_ingested(&self, event_type: &str, catalogue: &[String]) {
        let label = if !catalogue.is_empty() {
            event_type
        } else {
            let mut seen = self.seen_types.lock();
            if seen.contains(event_type) {
                event_type
            } else if seen.len() < MAX_TYPE_LABELS {
                seen.insert(event_type.to_string());
                event_type
            } else {
                "other"
            }
        };
        self.events_ingested.with_label_values(&[label]).inc();
    }

    /// One-hot over the states; `reason` (why it is paused) labels the paused series only.
    pub fn set_endpoint_state(&self, endpoint: &str, state: EndpointState, reason: Option<&str>) {
        for s in EndpointState::ALL {
            if s == EndpointState::Paused {
                continue;
            }
            self.endpoint_state
                .plain
                .with_label_values(&[endpoint, s.label()])
                .set(i64::from(s == state));
        }
        let paused = EndpointState::Paused.label();
        for r in PAUSED_REASONS {
            if Some(r) != reason || state != EndpointState::Paused {
                let _ = self
                    .endpoint_state
                    .paused
                    .remove_label_values(&[endpoint, paused, r]);
            }
        }
        if state == EndpointState::Paused {
            let _ = self
                .endpoint_state
                .plain
                .remove_label_values(&[endpoint, paused]);
            self.endpoint_state
                .paused
                .with_label_values(&[endpoint, paused, reason.unwrap_or("operator")])
                .set(1);
        } else {
            self.endpoint_state
                .plain
                .with_label_values(&[endpoint, paused])
                .set(0);
        }
    }

    /// Drops every series of a deleted endpoint.
    pub fn forget_endpoint(&self, endpoint: &str) {
        let _ = self.queue_depth.remove_label_values(&[endpoint]);
        let _ = self.in_flight.remove_label_values(&[endpoint]);
        let _ = self.oldest_pending_age.remove_label_values(&[endpoint]);
        let _ = self.attempt_duration.remove_label_values(&[endpoint]);
        let _ = self.first_attempt_delay.remove_label_values(&[endpoint]);
        let _ = self.delivery_lag.remove_label_values(&[endpoint]);
        for s in EndpointState::ALL {
            let _ = self
                .endpoint_state
                .plain
                .remove_label_values(&[endpoint, s.label()]);
        }
        for r in PAUSED_REASONS {
            let _ = self.endpoint_state.paused.remove_label_values(&[
                endpoint,
                EndpointState::Paused.label(),
                r,
            ]);
        }
        for o in DeliveryOutcome::ALL {
            let _ = self.deliveries.remove_label_values(&[endpoint, o.label()]);
        }
        for r in crate::model::AttemptResult::ALL {
            let _ = self.attempts.remove_label_values(&[endpoint, r.label()]);
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // invariant: the text encoder only fails on a broken writer; a Vec never is.
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encode metrics");
        String::from_utf8(out).unwrap_or_default()
    }
}

/// One endpoint's series, looked up once: its actor updates them on every attempt, and a
/// label lookup hashes the label values each time.
pub struct EndpointMetrics {
    label: String,
    pub queue_depth: IntGauge,
    pub in_flight: IntGauge,
    pub oldest_pending_age: IntGauge,
    pub attempt_duration: Histogram,
    pub first_attempt_delay: Histogram,
    pub delivery_lag: Histogram,
    /// Created on first use, so /metrics lists only what happened.
    attempts: HashMap<&'static str, IntCounter>,
    deliveries: HashMap<DeliveryOutcome, IntCounter>,
}

impl EndpointMetrics {
    pub fn new(endpoint: &str) -> EndpointMetrics {
        let m = &*METRICS;
        EndpointMetrics {
            label: endpoint.to_string(),
            queue_depth: m.queue_depth.with_label_values(&[endpoint]),
            in_flight: m.in_flight.with_label_values(&[endpoint]),
            oldest_pending_age: m.oldest_pending_age.with_label_values(&[endpoint]),
            attempt_duration: m.attempt_duration.with_label_values(&[endpoint]),
            first_attempt_delay: m.first_attempt_delay.with_label_values(&[endpoint]),
            delivery_lag: m.delivery_lag.with_label_values(&[endpoint]),
            attempts: HashMap::new(),
            deliveries: HashMap::new(),
        }
    }

    /// `hookd_attempts_total{result}` for this endpoint.
    pub fn attempt(&mut self, result: &'static str) -> &IntCounter {
        let label = &self.label;
        self.attempts
            .entry(result)
            .or_insert_with(|| METRICS.attempts.with_label_values(&[label, result]))
    }

    /// `hookd_deliveries_total{outcome}` for this endpoint.
    pub fn delivery(&mut self, outcome: DeliveryOutcome) -> &IntCounter {
        let label = &self.label;
        self.deliveries.entry(outcome).or_insert_with(|| {
            METRICS
                .deliveries
                .with_label_values(&[label, outcome.label()])
        })
    }

    /// `reason`: why it is paused (the paused series' label).
    pub fn set_state(&self, state: EndpointState, reason: Option<&str>) {
        METRICS.set_endpoint_state(&self.label, state, reason);
    }

    /// Drops every series of this (deleted) endpoint.
    pub fn forget(&self) {
        METRICS.forget_endpoint(&self.label);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_labels_are_bounded_without_a_catalogue() {
        let m = Metrics::new();
        for i in 0..150 {
            m.event_ingested(&format!("t{i}"), &[]);
        }
        m.event_ingested("t0", &[]);
        assert_eq!(m.events_ingested.with_label_values(&["t0"]).get(), 2);
        assert_eq!(m.events_ingested.with_label_values(&["other"]).get(), 50);
        let text = m.render();
        assert!(!text.contains("type=\"t120\""));
    }

    #[test]
    fn endpoint_state_is_one_hot_and_only_paused_has_a_reason() {
        let m = Metrics::new();
        m.set_endpoint_state("ep_1", EndpointState::Paused, Some("gone"));
        let text = m.render();
        assert!(
            text.contains(
                r#"hookd_endpoint_state{endpoint="ep_1",reason="gone",state="paused"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"hookd_endpoint_state{endpoint="ep_1",state="active"} 0"#),
            "{text}"
        );
        m.set_endpoint_state("ep_1", EndpointState::Paused, Some("operator"));
        let text = m.render();
        assert!(!text.contains("reason=\"gone\""), "{text}");
        m.set_endpoint_state("ep_1", EndpointState::Active, None);
        let text = m.render();
        assert!(
            text.contains(r#"hookd_endpoint_state{endpoint="ep_1",state="paused"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"hookd_endpoint_state{endpoint="ep_1",state="active"} 1"#),
            "{text}"
        );
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("hookd_endpoint_state{") && l.contains("reason=")),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE hookd_endpoint_state gauge").count(), 1);
    }
}
