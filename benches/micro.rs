//! Micro-benchmarks of the per-event CPU work: canonical JSON, both signatures, key encoding.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hookd::delivery::signing;
use hookd::model::{DeliveryId, EndpointId, Secret};
use hookd::storage::keys;

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

criterion_group!(micro, benches);
criterion_main!(micro);
