//! How a delivery record is laid out on disk.
//!
//! A delivery and every attempt made of it are one record in `deliveries`: a version byte, then
//! the fields in postcard (varints, no field names). One record per delivery means one key per
//! attempt result instead of two, and about a quarter of the bytes of the JSON it replaces (a
//! delivered delivery with one attempt: 117 bytes against 330 + 113 for its two JSON records).
//!
//! Upgrade path: records written by earlier builds are JSON (their first byte is `{`), with
//! each attempt a separate JSON record in `attempts`. They still decode ([`Format::Json`]); the
//! store then reads their attempts from `attempts`, and the next write of that delivery stores
//! it in the current format with those attempts inside. Nothing is rewritten in bulk.
//!
//! Invariants:
//! - the first byte tells the format; a new layout takes a new version byte and this module
//!   keeps decoding every older one;
//! - statuses and attempt results are stored as the fixed numbers below, never as enum
//!   positions, so reordering an enum cannot change what a stored record means.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::keys::status_byte;
use crate::model::{
    Attempt, AttemptResult, Delivery, DeliveryId, DeliveryStatus, EndpointId, EventKey, Sequenced,
};

/// The first byte of a current delivery record.
const DELIVERY_V1: u8 = 1;

/// Which layout a stored delivery record had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The current one: its attempts are inside it.
    V1,
    /// An earlier build's JSON: its attempts are records of their own in `attempts`.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("unknown record version {0}")]
    UnknownVersion(u8),
    #[error("{0}")]
    Postcard(#[from] postcard::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown status {0}")]
    Status(u8),
    #[error("unknown attempt result {0}")]
    Result(u8),
}

/// Encoding never fails on a well-formed `Delivery`; should it, the write is refused whole.
impl From<CodecError> for super::StorageError {
    fn from(e: CodecError) -> Self {
        super::StorageError::Engine(format!("delivery record: {e}"))
    }
}

#[derive(Serialize, Deserialize)]
struct DeliveryV1<'a> {
    id: [u8; 16],
    endpoint_id: [u8; 16],
    event_key: [u8; 16],
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    status: u8,
    attempts: u32,
    retries_used: u32,
    next_attempt_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    expires_at: Option<i64>,
    /// (key, sequence, released)
    #[serde(borrow)]
    ordering: Option<(Cow<'a, str>, u64, bool)>,
    test: bool,
    #[serde(borrow)]
    log: Vec<AttemptV1<'a>>,
}

#[derive(Serialize, Deserialize)]
struct AttemptV1<'a> {
    n: u32,
    at: i64,
    status_code: Option<u16>,
    result: Option<u8>,
    duration_ms: u64,
    #[serde(borrow)]
    error: Option<Cow<'a, str>>,
    #[serde(borrow)]
    response_body: Option<Cow<'a, str>>,
}

fn status_from(b: u8) -> Result<DeliveryStatus, CodecError> {
    Ok(match b {
        0 => DeliveryStatus::Pending,
        1 => DeliveryStatus::Succeeded,
        2 => DeliveryStatus::Failed,
        3 => DeliveryStatus::Cancelled,
        4 => DeliveryStatus::Expired,
        other => return Err(CodecError::Status(other)),
    })
}

fn result_byte(r: AttemptResult) -> u8 {
    match r {
        AttemptResult::Success => 0,
        AttemptResult::Http4xx => 1,
        AttemptResult::Http5xx => 2,
        AttemptResult::Timeout => 3,
        AttemptResult::ConnectError => 4,
        AttemptResult::ProxyError => 5,
        AttemptResult::AuthError => 6,
        AttemptResult::Other => 7,
    }
}

fn result_from(b: u8) -> Result<AttemptResult, CodecError> {
    AttemptResult::ALL
        .into_iter()
        .find(|r| result_byte(*r) == b)
        .ok_or(CodecError::Result(b))
}

/// The current record of `d`, its attempt log inside, followed by `latest` when that is an
/// attempt the log does not hold yet (the one whose result is being stored).
pub fn encode_delivery(d: &Delivery, latest: Option<&Attempt>) -> Result<Vec<u8>, CodecError> {
    let last_logged = d.attempt_log.last().map_or(0, |a| a.n);
    let latest = latest.filter(|a| a.n > last_logged);
    let record = DeliveryV1 {
        id: d.id.to_bytes(),
        endpoint_id: d.endpoint_id.to_bytes(),
        event_key: d.event_key.to_bytes(),
        event_id: Cow::Borrowed(&d.event_id),
        event_type: Cow::Borrowed(&d.event_type),
        tenant: Cow::Borrowed(&d.tenant),
        status: status_byte(d.status),
        attempts: d.attempts,
        retries_used: d.retries_used,
        next_attempt_at: d.next_attempt_at,
        created_at: d.created_at,
        updated_at: d.updated_at,
        expires_at: d.expires_at,
        ordering: d
            .ordering
            .as_ref()
            .map(|o| (Cow::Borrowed(o.key.as_str()), o.seq, o.released)),
        test: d.test,
        log: d
            .attempt_log
            .iter()
            .chain(latest)
            .map(|a| AttemptV1 {
                n: a.n,
                at: a.at,
                status_code: a.status_code,
                result: a.result.map(result_byte),
                duration_ms: a.duration_ms,
                error: a.error.as_deref().map(Cow::Borrowed),
                response_body: a.response_body.as_deref().map(Cow::Borrowed),
            })
            .collect(),
    };
    postcard::to_extend(&record, vec![DELIVERY_V1]).map_err(CodecError::from)
}

/// A stored delivery record of any layout. For [`Format::Json`] the attempt log is empty: those
/// attempts are in `attempts`.
pub fn decode_delivery(bytes: &[u8]) -> Result<(Delivery, Format), CodecError> {
    match bytes.first() {
        None => Err(CodecError::Empty),
        Some(b'{') => Ok((serde_json::from_slice(bytes)?, Format::Json)),
        Some(&DELIVERY_V1) => {
            let r: DeliveryV1 = postcard::from_bytes(&bytes[1..])?;
            let attempt_log = r
                .log
                .into_iter()
                .map(|a| {
                    Ok(Attempt {
                        n: a.n,
                        at: a.at,
                        status_code: a.status_code,
                        result: a.result.map(result_from).transpose()?,
                        duration_ms: a.duration_ms,
                        error: a.error.map(Cow::into_owned),
                        response_body: a.response_body.map(Cow::into_owned),
                    })
                })
                .collect::<Result<Vec<_>, CodecError>>()?;
            let delivery = Delivery {
                id: DeliveryId::from_bytes(r.id),
                endpoint_id: EndpointId::from_bytes(r.endpoint_id),
                event_key: EventKey::from_bytes(r.event_key),
                event_id: r.event_id.into_owned(),
                event_type: r.event_type.into_owned(),
                tenant: r.tenant.into_owned(),
                status: status_from(r.status)?,
                attempts: r.attempts,
                retries_used: r.retries_used,
                next_attempt_at: r.next_attempt_at,
                created_at: r.created_at,
                updated_at: r.updated_at,
                expires_at: r.expires_at,
                ordering: r.ordering.map(|(key, seq, released)| Sequenced {
                    key: key.into_owned(),
                    seq,
                    released,
                }),
                test: r.test,
                attempt_log,
            };
            Ok((delivery, Format::V1))
        }
        Some(&other) => Err(CodecError::UnknownVersion(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivered delivery as an earlier build wrote it (tests/fixtures/data-json-records.tar.gz).
    const FIXTURE_RECORD: &[u8] = br#"{"id":"dlv_01M8TQWFMF9DFMXBMWP7WNN20M","endpoint_id":"ep_01M8TQWFM6BD0785136WXHQ9TB","event_key":"evk_01M8TQWFMF4KF3VR6QC5KKVM8Q","event_id":"fx-done-1","event_type":"fraud_detected","tenant":"fx-done","status":"succeeded","attempts":1,"retries_used":0,"next_attempt_at":null,"created_at":1796193795727,"updated_at":1796193795730}"#;

    fn delivery() -> Delivery {
        Delivery {
            id: DeliveryId::new(),
            endpoint_id: EndpointId::new(),
            event_key: EventKey::new(),
            event_id: "evt_1".into(),
            event_type: "fraud_detected".into(),
            tenant: "prop_abc123".into(),
            status: DeliveryStatus::Pending,
            attempts: 2,
            retries_used: 1,
            next_attempt_at: Some(1_700_000_005_000),
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_001_000,
            expires_at: Some(1_700_086_400_000),
            ordering: Some(Sequenced {
                key: "visitor-7".into(),
                seq: 42,
                released: true,
            }),
            test: false,
            attempt_log: vec![
                Attempt {
                    n: 1,
                    at: 1_700_000_000_100,
                    status_code: Some(503),
                    result: Some(AttemptResult::Http5xx),
                    duration_ms: 12,
                    error: Some("status 503".into()),
                    response_body: Some("busy ✓".into()),
                },
                Attempt {
                    n: 2,
                    at: 1_700_000_001_000,
                    status_code: None,
                    result: None,
                    duration_ms: 10_000,
                    error: Some("timeout".into()),
                    response_body: None,
                },
            ],
        }
    }

    fn same(a: &Delivery, b: &Delivery) {
        // Delivery has no PartialEq (nor needs one); its JSON form compares every field but
        // the log, compared on its own.
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&a.attempt_log).unwrap(),
            serde_json::to_value(&b.attempt_log).unwrap()
        );
    }

    #[test]
    fn a_record_round_trips_with_its_attempts() {
        let d = delivery();
        let bytes = encode_delivery(&d, None).unwrap();
        assert_eq!(bytes[0], DELIVERY_V1);
        let (back, format) = decode_delivery(&bytes).unwrap();
        assert_eq!(format, Format::V1);
        same(&d, &back);
        let mut bare = delivery();
        bare.ordering = None;
        bare.expires_at = None;
        bare.next_attempt_at = None;
        bare.attempt_log.clear();
        bare.status = DeliveryStatus::Expired;
        let (back, _) = decode_delivery(&encode_delivery(&bare, None).unwrap()).unwrap();
        same(&bare, &back);
    }

    #[test]
    fn the_attempt_being_stored_joins_the_log_once() {
        let mut d = delivery();
        let third = Attempt {
            n: 3,
            ..d.attempt_log[0].clone()
        };
        let (back, _) = decode_delivery(&encode_delivery(&d, Some(&third)).unwrap()).unwrap();
        let ns: Vec<u32> = back.attempt_log.iter().map(|a| a.n).collect();
        assert_eq!(ns, [1, 2, 3]);
        d.attempt_log.push(third.clone());
        let (back, _) = decode_delivery(&encode_delivery(&d, Some(&third)).unwrap()).unwrap();
        assert_eq!(back.attempt_log.len(), 3, "already logged: not twice");
    }

    #[test]
    fn records_of_earlier_builds_still_decode() {
        let d = delivery();
        let json = serde_json::to_vec(&d).unwrap();
        let (back, format) = decode_delivery(&json).unwrap();
        assert_eq!(format, Format::Json);
        assert!(back.attempt_log.is_empty(), "their attempts are elsewhere");
        let mut expected = d;
        expected.attempt_log.clear();
        same(&expected, &back);
        // As an earlier build wrote it.
        let old = FIXTURE_RECORD;
        let (old, _) = decode_delivery(old).unwrap();
        assert_eq!(old.status, DeliveryStatus::Succeeded);
        assert_eq!((old.attempts, old.expires_at, old.test), (1, None, false));
    }

    #[test]
    fn the_current_record_is_much_smaller_than_json() {
        let d = delivery();
        let json = serde_json::to_vec(&d).unwrap().len()
            + d.attempt_log
                .iter()
                .map(|a| serde_json::to_vec(a).unwrap().len())
                .sum::<usize>();
        let v1 = encode_delivery(&d, None).unwrap().len();
        assert!(v1 * 2 < json, "{v1} bytes against {json} as JSON");
        // The module doc's figure: a delivered delivery of the fixture with one attempt.
        let (mut done, _) = decode_delivery(FIXTURE_RECORD).unwrap();
        let attempt = br#"{"n":1,"at":1796193795729,"status_code":200,"result":"success","duration_ms":1,"error":null,"response_body":null}"#;
        done.attempt_log
            .push(serde_json::from_slice(attempt).unwrap());
        assert_eq!(
            (
                encode_delivery(&done, None).unwrap().len(),
                FIXTURE_RECORD.len(),
                attempt.len()
            ),
            (117, 330, 113)
        );
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        assert!(matches!(decode_delivery(b""), Err(CodecError::Empty)));
        assert!(matches!(
            decode_delivery(&[9, 1, 2]),
            Err(CodecError::UnknownVersion(9))
        ));
        let bytes = encode_delivery(&delivery(), None).unwrap();
        for cut in 1..bytes.len() {
            assert!(decode_delivery(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_status = delivery();
        bad_status.attempt_log.clear();
        let mut bytes = encode_delivery(&bad_status, None).unwrap();
        // The status byte follows three 16-byte ids and three strings.
        let at = 1 + 16 * 3 + (1 + 5) + (1 + 14) + (1 + 11);
        assert_eq!(bytes[at], 0);
        bytes[at] = 77;
        assert!(matches!(
            decode_delivery(&bytes),
            Err(CodecError::Status(77))
        ));
    }
}
