//! Micro-benchmarks of the per-event CPU work (canonical JSON, both signatures, key encoding)
//! and of a storage write batch (RocksDB in a temp dir, without fsync so the figure is the
//! batch's own cost, not the disk's).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hookd::delivery::signing;
use hookd::model::{
    Delivery, DeliveryId, DeliveryRef, DeliveryStatus, EndpointId, Event, EventKey, Secret,
};
use hookd::storage::{keys, NewEvent, Store};

const PAYLOAD: &str = r#"{"event":"fraud_detected","timestamp":"2024-01-05T14:30:00Z",
 "property":{"id":"prop_abc123","name":"My Landing Page"},
 "visitor":{"id":"vis_xyz789","ip":"192.168.1.100","country":"US","userAgent":"Mozilla/5.0..."},
 "decision":{"score":85.0,"label":"FRAUD","action":"BLOCK","reasons":[{"rule":"datacenter_ip","score":25},
 {"rule":"rapid_clicks","score":30},{"rule":"honeypot","score":40}]}}"#;

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("canonical_json", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_str(PAYLOAD).unwrap();
            hookd::canonical::to_string(&v)
        })
    });
    // What intake runs: the payload's text read straight into the canonical form.
    g.bench_function("canonical_json_single_pass", |b| {
        b.iter(|| serde_json::from_str::<hookd::canonical::CanonicalObject>(PAYLOAD).unwrap())
    });
    let body = hookd::canonical::to_string(&serde_json::from_str(PAYLOAD).unwrap());
    let secret = Secret::generate();
    g.bench_function("sign_hex", |b| {
        b.iter(|| signing::hex_signature(&secret, body.as_bytes()))
    });
    g.bench_function("sign_standard", |b| {
        b.iter(|| signing::standard_signature(&secret, "evt_1", 1_700_000_000, body.as_bytes()))
    });
    let (ep, dlv) = (EndpointId::new(), DeliveryId::new());
    g.bench_function("due_key_round_trip", |b| {
        b.iter(|| keys::decode_due_key(&keys::due_key(ep, 1_700_000_000_000, dlv)))
    });
    g.finish();
}

/// One event with one delivery, as ingest stores it.
fn new_event(n: u64, endpoint: EndpointId, payload: &str) -> NewEvent {
    let key = EventKey::new();
    let id = DeliveryId::new();
    let event = Event {
        key,
        id: format!("evt_{n}"),
        tenant: "prop_abc123".into(),
        event_type: "fraud_detected".into(),
        received_at: 1_700_000_000_000,
        deliveries: vec![DeliveryRef {
            id,
            endpoint_id: endpoint,
        }],
        payload: serde_json::value::RawValue::from_string(payload.to_string()).unwrap(),
    };
    let delivery = Delivery {
        id,
        endpoint_id: endpoint,
        event_key: key,
        event_id: event.id.clone(),
        event_type: event.event_type.clone(),
        tenant: event.tenant.clone(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        retries_used: 0,
        next_attempt_at: Some(1_700_000_000_000),
        created_at: 1_700_000_000_000,
        updated_at: 1_700_000_000_000,
        expires_at: None,
        ordering: None,
        test: false,
        attempt_log: Vec::new(),
    };
    NewEvent {
        event,
        deliveries: vec![delivery],
    }
}

fn storage(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false, 0, Box::new(|_, _| {})).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let body = hookd::canonical::to_string(&serde_json::from_str(PAYLOAD).unwrap());
    let endpoint = EndpointId::new();
    let mut n = 0u64;
    let mut g = c.benchmark_group("storage");
    for batch in [1u64, 100] {
        g.throughput(Throughput::Elements(batch));
        g.bench_function(format!("ingest_write_batch_{batch}"), |b| {
            b.iter_batched(
                || {
                    (0..batch)
                        .map(|_| {
                            n += 1;
                            new_event(n, endpoint, &body)
                        })
                        .collect::<Vec<_>>()
                },
                |events| rt.block_on(store.ingest(events)).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(micro, benches, storage);
criterion_main!(micro);
