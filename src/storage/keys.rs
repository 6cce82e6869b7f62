//! Column family names and key encodings. Every multi-part key is big-endian, fixed-width where
//! it can be, so RocksDB's byte order is the order hookd iterates in (by endpoint, then due time).

use crate::model::{DeliveryId, DeliveryStatus, EndpointId, EventKey, UnixMillis};

/// Endpoint id → `Endpoint` (JSON).
pub const CF_ENDPOINTS: &str = "endpoints";
/// Event key (time-ordered) → `Event` (JSON, payload raw).
pub const CF_EVENTS: &str = "events";
/// Delivery id → `Delivery` with its attempts (see `storage::codec`; JSON without them when an
/// earlier build wrote it).
pub const CF_DELIVERIES: &str = "deliveries";
/// Delivery id ‖ attempt n → `Attempt` (JSON): written by earlier builds only, read for their
/// deliveries until rewritten, removed by prune.
pub const CF_ATTEMPTS: &str = "attempts";
/// Endpoint id ‖ due time ‖ delivery id → the ingest commit number (8 bytes) or empty: one
/// entry per pending delivery.
pub const CF_DUE: &str = "due";
/// Tenant ‖ 0x00 ‖ event id → event key ‖ delivery count: duplicate detection and lookup by id.
pub const CF_IDEMPOTENCY: &str = "idempotency";

/// Endpoint id ‖ delivery id → status byte: an endpoint's history, newest last, filterable by
/// status without reading the deliveries.
pub const CF_ENDPOINT_DELIVERIES: &str = "endpoint_deliveries";
/// Endpoint id → `EndpointStats` (JSON).
pub const CF_ENDPOINT_STATS: &str = "endpoint_stats";

/// Small records of hookd's own (the storage probe).
pub const CF_META: &str = "meta";
/// Endpoint id ‖ ordering key → the last sequence number given (8 bytes, big-endian).
pub const CF_SEQUENCES: &str = "sequences";
/// Endpoint id ‖ ordering key ‖ 0x00 ‖ sequence → empty: one entry per pending ordered
/// delivery, so the endpoint's actor knows each key's head after a restart.
pub const CF_KEY_PENDING: &str = "key_pending";

/// Operator event id → `OperatorEvent` (JSON): written with the transition it reports, removed
/// once the event is ingested (see [`crate::operator`]).
pub const CF_OUTBOX: &str = "outbox";

pub const ALL_CFS: [&str; 12] = [
    CF_ENDPOINTS,
    CF_EVENTS,
    CF_DELIVERIES,
    CF_ATTEMPTS,
    CF_DUE,
    CF_IDEMPOTENCY,
    CF_ENDPOINT_DELIVERIES,
    CF_ENDPOINT_STATS,
    CF_META,
    CF_SEQUENCES,
    CF_KEY_PENDING,
    CF_OUTBOX,
];

/// Every key of `endpoint` in a column family keyed by endpoint id first: [from, to).
pub fn endpoint_range(endpoint: EndpointId) -> ([u8; 16], [u8; 16]) {
    let next = endpoint.0 .0.saturating_add(1);
    (endpoint.to_bytes(), next.to_be_bytes())
}

pub fn sequence_key(endpoint: EndpointId, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + key.len());
    k.extend_from_slice(&endpoint.to_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// Identifiers never contain 0x00, so the separator keeps (key, sequence) pairs apart and a
/// key's entries in sequence order.
pub fn key_pending_key(endpoint: EndpointId, key: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + key.len() + 9);
    k.extend_from_slice(&endpoint.to_bytes());
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// (ordering key, sequence) of a `key_pending` key, without its endpoint prefix.
pub fn decode_key_pending(k: &[u8]) -> Option<(String, u64)> {
    let rest = k.get(16..)?;
    let split = rest.len().checked_sub(9)?;
    if rest.get(split) != Some(&0) {
        return None;
    }
    let key = std::str::from_utf8(&rest[..split]).ok()?.to_string();
    let seq = u64::from_be_bytes(rest[split + 1..].try_into().ok()?);
    Some((key, seq))
}

pub const DUE_KEY_LEN: usize = 16 + 8 + 16;

pub fn endpoint_key(id: EndpointId) -> [u8; 16] {
    id.to_bytes()
}

pub fn event_key(key: EventKey) -> [u8; 16] {
    key.to_bytes()
}

pub fn delivery_key(id: DeliveryId) -> [u8; 16] {
    id.to_bytes()
}

pub fn attempt_key(id: DeliveryId, n: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&id.to_bytes());
    k[16..].copy_from_slice(&n.to_be_bytes());
    k
}

/// Times before the epoch sort as the epoch: they are all simply "due".
fn encode_time(t: UnixMillis) -> [u8; 8] {
    (t.max(0) as u64).to_be_bytes()
}

pub fn due_key(endpoint: EndpointId, due: UnixMillis, delivery: DeliveryId) -> [u8; DUE_KEY_LEN] {
    let mut k = [0u8; DUE_KEY_LEN];
    k[..16].copy_from_slice(&endpoint.to_bytes());
    k[16..24].copy_from_slice(&encode_time(due));
    k[24..].copy_from_slice(&delivery.to_bytes());
    k
}

pub fn decode_due_key(k: &[u8]) -> Option<(EndpointId, UnixMillis, DeliveryId)> {
    if k.len() != DUE_KEY_LEN {
        return None;
    }
    let ep = EndpointId::from_bytes(k[..16].try_into().ok()?);
    let due = u64::from_be_bytes(k[16..24].try_into().ok()?) as i64;
    let dlv = DeliveryId::from_bytes(k[24..].try_into().ok()?);
    Some((ep, due, dlv))
}

pub fn endpoint_delivery_key(endpoint: EndpointId, delivery: DeliveryId) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&endpoint.to_bytes());
    k[16..].copy_from_slice(&delivery.to_bytes());
    k
}

pub fn decode_endpoint_delivery_key(k: &[u8]) -> Option<(EndpointId, DeliveryId)> {
    if k.len() != 32 {
        return None;
    }
    Some((
        EndpointId::from_bytes(k[..16].try_into().ok()?),
        DeliveryId::from_bytes(k[16..].try_into().ok()?),
    ))
}

pub fn status_byte(status: DeliveryStatus) -> u8 {
    match status {
        DeliveryStatus::Pending => 0,
        DeliveryStatus::Succeeded => 1,
        DeliveryStatus::Failed => 2,
        DeliveryStatus::Cancelled => 3,
        DeliveryStatus::Expired => 4,
    }
}

/// Identifiers never contain 0x00, so the separator makes (tenant, id) pairs unambiguous.
pub fn idempotency_key(tenant: &str, event_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 1 + event_id.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(event_id.as_bytes());
    k
}

pub fn idempotency_value(key: EventKey, deliveries: u32) -> [u8; 20] {
    let mut v = [0u8; 20];
    v[..16].copy_from_slice(&key.to_bytes());
    v[16..].copy_from_slice(&deliveries.to_be_bytes());
    v
}

pub fn decode_idempotency_value(v: &[u8]) -> Option<(EventKey, u32)> {
    if v.len() != 20 {
        return None;
    }
    Some((
        EventKey::from_bytes(v[..16].try_into().ok()?),
        u32::from_be_bytes(v[16..].try_into().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ulid::Ulid;

    #[test]
    fn due_keys_round_trip_and_sort_by_endpoint_then_time() {
        let ep = EndpointId::new();
        let d1 = DeliveryId::new();
        let d2 = DeliveryId::new();
        let k = due_key(ep, 1_700_000_000_123, d1);
        assert_eq!(decode_due_key(&k), Some((ep, 1_700_000_000_123, d1)));
        let early = due_key(ep, 255, d2);
        let late = due_key(ep, 256, d1);
        assert!(early < late, "due time is big-endian");
        let other = EndpointId(Ulid(ep.0 .0 + 1));
        assert!(due_key(ep, i64::MAX, d1) < due_key(other, 0, d1));
        assert_eq!(decode_due_key(&due_key(ep, -5, d1)).unwrap().1, 0);
        assert_eq!(decode_due_key(&k[..39]), None);
    }

    #[test]
    fn attempt_keys_sort_by_delivery_then_number() {
        let d = DeliveryId::new();
        assert!(attempt_key(d, 2) < attempt_key(d, 10));
        assert!(attempt_key(d, 255) < attempt_key(d, 256));
        assert_eq!(&attempt_key(d, 1)[..16], &d.to_bytes());
    }

    #[test]
    fn endpoint_delivery_keys_group_by_endpoint_in_creation_order() {
        let ep = EndpointId::new();
        let a = DeliveryId(Ulid::from_parts(1000, 5));
        let b = DeliveryId(Ulid::from_parts(1001, 0));
        assert!(endpoint_delivery_key(ep, a) < endpoint_delivery_key(ep, b));
        let other = EndpointId(Ulid(ep.0 .0 + 1));
        assert!(endpoint_delivery_key(ep, b) < endpoint_delivery_key(other, a));
        assert_eq!(
            decode_endpoint_delivery_key(&endpoint_delivery_key(ep, a)),
            Some((ep, a))
        );
        let bytes: Vec<u8> = [
            DeliveryStatus::Pending,
            DeliveryStatus::Succeeded,
            DeliveryStatus::Failed,
            DeliveryStatus::Cancelled,
            DeliveryStatus::Expired,
        ]
        .into_iter()
        .map(status_byte)
        .collect();
        assert_eq!(bytes, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn ids_encode_in_creation_order() {
        let a = DeliveryId(Ulid::from_parts(1000, 5));
        let b = DeliveryId(Ulid::from_parts(1001, 0));
        assert!(delivery_key(a) < delivery_key(b));
    }

    #[test]
    fn idempotency_keys_separate_tenant_and_id() {
        assert_ne!(idempotency_key("ab", "c"), idempotency_key("a", "bc"));
        let k = EventKey::new();
        assert_eq!(
            decode_idempotency_value(&idempotency_value(k, 7)),
            Some((k, 7))
        );
        assert_eq!(decode_idempotency_value(b"short"), None);
    }
}
