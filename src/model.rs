//! The records hookd stores and serves: endpoints, events, deliveries, attempts; their ids;
//! the endpoint [`Secret`], whose Debug and Display never show it. Pure data with no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use ulid::Ulid;

use crate::config::HumanDuration;

/// Milliseconds since the Unix epoch; every stored time uses it.
pub type UnixMillis = i64;

/// hookd's time (see [`crate::clock`]): immune to wall-clock steps while the process runs.
pub use crate::clock::now_millis;

/// A ULID stamped with hookd's time, so that ids sort by [`now_millis`] like every other time.
///
/// One monotonic generator for the process: ids made one after another sort in that order,
/// also within a millisecond. Events, deliveries and their `due` and history entries are
/// keyed by these ids, so a group commit inserts each key next to the one before it, where
/// RocksDB's memtable skip list keeps its last position, instead of searching from the top
/// for a random place (the commit thread's largest cost, by profile).
pub fn new_ulid() -> Ulid {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let now = crate::clock::now_system_time();
    let made = GENERATOR
        .lock()
        .map(|mut g| g.generate_from_datetime(now))
        .ok()
        .and_then(Result::ok);
    // The random part overflowed within one millisecond (2^80 ids), or a thread panicked
    // holding the lock: a random id is as unique, only not in order.
    made.unwrap_or_else(|| Ulid::from_datetime(now))
}

/// RFC 3339 in UTC with milliseconds, as every API response writes times.
pub fn rfc3339(ms: UnixMillis) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an RFC 3339 time with any offset (`2026-11-22T10:00:00Z`, `…+01:00`).
pub fn parse_rfc3339(value: &str) -> Result<UnixMillis, String> {
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{value:?} is not an RFC 3339 time ({e})"))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

pub fn serialize_rfc3339<S: Serializer>(ms: &UnixMillis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

pub fn serialize_opt_rfc3339<S: Serializer>(
    ms: &Option<UnixMillis>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

/// Identifiers (`id`, `type`, `tenant`): 1–128 characters of `A-Z a-z 0-9 _ . : -`.
pub fn check_identifier(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(format!("contains {c:?}; allowed are A-Z a-z 0-9 _ . : -"));
    }
    Ok(())
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Ulid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn new() -> Self {
                Self(new_ulid())
            }

            pub fn to_bytes(self) -> [u8; 16] {
                self.0 .0.to_be_bytes()
            }

            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Ulid(u128::from_be_bytes(bytes)))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                let rest = s.strip_prefix($prefix).ok_or(())?;
                Ulid::from_string(rest).map(Self).map_err(|_| ())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse()
                    .map_err(|_| serde::de::Error::custom(format!("invalid id {s:?}")))
            }
        }
    };
}

prefixed_id!(
    /// `ep_<ulid>`.
    EndpointId,
    "ep_"
);
prefixed_id!(
    /// `dlv_<ulid>`; time-ordered, so a key range of them is a time range.
    DeliveryId,
    "dlv_"
);
prefixed_id!(
    /// The storage key of an event: assigned at receipt, time-ordered, so retention pruning
    /// walks events oldest first. Users address events by (tenant, id) instead.
    EventKey,
    "evk_"
);

/// An endpoint's signing secret: `whsec_` + base64 of 32 random bytes. Debug and Display print
/// `Secret(***)`, so no log line or error can carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn generate() -> Secret {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        Secret(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// A secret as a receiver was given it (`hookd ctl receive --secret`).
    pub fn given(secret: String) -> Secret {
        Secret(secret)
    }

    /// The secret as the receiver holds it; only create/rotate responses and signing use this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A new key for `signing`: an HMAC secret, or an ed25519 private key (`whsk_` + base64
    /// of its 32-byte seed, the Standard Webhooks form).
    pub fn generate_for(signing: Signing) -> Secret {
        match signing {
            Signing::Hmac => Secret::generate(),
            Signing::Ed25519 => {
                let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
                Secret(format!(
                    "whsk_{}",
                    base64::engine::general_purpose::STANDARD.encode(key.to_bytes())
                ))
            }
        }
    }

    /// The ed25519 private key, if this is one.
    pub fn ed25519_key(&self) -> Option<ed25519_dalek::SigningKey> {
        let b64 = self.0.strip_prefix("whsk_")?;
        let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()?
            .try_into()
            .ok()?;
        Some(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// The public key receivers verify with (`whpk_` + base64), if this is an ed25519 key.
    pub fn public_key(&self) -> Option<String> {
        let key = self.ed25519_key()?;
        Some(format!(
            "whpk_{}",
            base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes())
        ))
    }

    /// The Standard Webhooks key: the base64-decoded part after `whsec_`.
    pub fn standard_key(&self) -> Vec<u8> {
        let b64 = self.0.strip_prefix("whsec_").unwrap_or(&self.0);
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|_| b64.as_bytes().to_vec())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Stored form only: storage serializes secrets, API views never include this type.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// What a user may set on an endpoint, as given (unset options fall back to `[delivery]`).
/// PATCH merges its fields over this and validates the result like a create. Its Debug form
/// shows header names only: their values are often credentials.
#[derive(Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    #[schema(value_type = crate::rules::Identifier)]
    pub tenant: String,
    /// An absolute https URL (http with `delivery.allow_http`), without user information.
    #[schema(value_type = crate::rules::UrlString)]
    pub url: String,
    /// Event types to receive; `["*"]` for every type.
    #[schema(value_type = Vec<crate::rules::EventTypeName>, min_items = 1, max_items = 64)]
    pub event_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1024)]
    #[serde(deserialize_with = "some_whole_number")]
    pub max_concurrency: Option<u32>,
    /// The header carrying the hex HMAC signature (default `delivery.signature_header`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::rules::HeaderName>)]
    pub signature_header: Option<String>,
    /// Per attempt: more than 0, at most 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::rules::TimeoutString>)]
    pub timeout: Option<HumanDuration>,
    /// Delays before retry 1..n, each at most 30 days; at most 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<crate::rules::DelayString>>, max_items = 50)]
    pub retry_schedule: Option<Vec<HumanDuration>>,
    /// Static headers sent with every request; shown as `***`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::rules::Headers>)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// A delivery not succeeded within this of its event's receipt expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::rules::TtlString>)]
    pub ttl: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<Ordering>,
    /// A predicate on the payload ([`crate::filter`]); an event it rejects makes no delivery
    /// for this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::rules::FilterSchema>)]
    pub filter: Option<serde_json::Value>,
    /// How requests are signed: `hmac` (the default) or `ed25519`. Set at creation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,
    /// An extra CA and a client certificate for this endpoint's connections (API.md §13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EndpointTls>,
    /// An HTTP CONNECT proxy (`http://host:port`) for this endpoint, instead of
    /// `delivery.proxy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::rules::ProxyString>)]
    pub proxy: Option<String>,
    /// How hookd authenticates to the receiver beyond signing (API.md §13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<EndpointAuth>,
}

impl fmt::Debug for EndpointSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Option<Vec<&String>> = self.headers.as_ref().map(|h| h.keys().collect());
        f.debug_struct("EndpointSpec")
            .field("tenant", &self.tenant)
            .field("url", &self.url)
            .field("event_types", &self.event_types)
            .field("description", &self.description)
            .field("max_concurrency", &self.max_concurrency)
            .field("signature_header", &self.signature_header)
            .field("timeout", &self.timeout)
            .field("retry_schedule", &self.retry_schedule)
            .field("headers", &header_names)
            .field("rate_limit", &self.rate_limit)
            .field("ttl", &self.ttl)
            .field("ordering", &self.ordering)
            .field("filter", &self.filter)
            .field("signing", &self.signing)
            .field("tls", &self.tls)
            .field("proxy", &self.proxy)
            .field("auth", &self.auth)
            .finish()
    }
}

/// Endpoint setting `auth`. `client_secret` is write-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EndpointAuth {
    /// OAuth 2.0 client credentials: a bearer token from `token_url`, cached until shortly
    /// before it expires and refreshed once on a 401.
    Oauth2ClientCredentials {
        #[schema(value_type = crate::rules::UrlString)]
        token_url: String,
        #[schema(min_length = 1, max_length = 1024)]
        client_id: String,
        /// Shown as `***`.
        #[schema(value_type = String, min_length = 1, max_length = 4096)]
        client_secret: WriteOnly,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(max_length = 1024)]
        scope: Option<String>,
    },
}

/// Endpoint setting `signing` (API.md §13).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Signing {
    /// The hex HMAC header and `webhook-signature: v1,…`.
    #[default]
    Hmac,
    /// `webhook-signature: v1a,…` only (Standard Webhooks' asymmetric signature).
    Ed25519,
}

/// Endpoint setting `tls`: PEM texts. `client_key` is write-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointTls {
    /// Certificates trusted for this endpoint besides the system's and `delivery.ca_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// The client certificate chain presented to the receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// Its private key; shown as `***`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub client_key: Option<WriteOnly>,
}

/// A write-only setting (a private key, a client secret): stored as given, but Debug and
/// Display print `***`, so no log line or error can carry it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WriteOnly(String);

impl WriteOnly {
    /// What a view shows instead of the value, and what a PATCH may send back to keep it.
    pub const MASK: &'static str = "***";

    pub fn new(value: String) -> WriteOnly {
        WriteOnly(value)
    }

    /// The value itself; only the code that uses it (TLS, token requests) calls this.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WriteOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::MASK)
    }
}

impl fmt::Display for WriteOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::MASK)
    }
}

/// A JSON number that is a whole number fitting u32: `8` or `8.0` (JSON Schema calls both
/// integers, so a client generated from the OpenAPI document may send either).
fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64)
                .map(|f| f as u64)
        })
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            serde::de::Error::custom(format!("{n} is not a whole number from 0 to {}", u32::MAX))
        })
}

fn some_whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => whole_number(n).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Whether an endpoint's deliveries of events with the same `ordering_key` go one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    #[default]
    None,
    Key,
}

/// An endpoint's throttle: at most `burst` attempts at once, then `per_second` on average.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[schema(minimum = 0.01, maximum = 100000)]
    pub per_second: f64,
    #[schema(minimum = 1, maximum = 100000)]
    #[serde(deserialize_with = "whole_number")]
    pub burst: u32,
}

impl RateLimit {
    pub const MIN_PER_SECOND: f64 = 0.01;
    pub const MAX_PER_SECOND: f64 = 100_000.0;
    pub const MAX_BURST: u32 = 100_000;

    /// The first field out of range, with what is wrong with it.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(Self::MIN_PER_SECOND..=Self::MAX_PER_SECOND).contains(&self.per_second) {
            return Err((
                "rate_limit.per_second",
                format!(
                    "must be between {} and {}",
                    Self::MIN_PER_SECOND,
                    Self::MAX_PER_SECOND
                ),
            ));
        }
        if !(1..=Self::MAX_BURST).contains(&self.burst) {
            return Err((
                "rate_limit.burst",
                format!("must be between 1 and {}", Self::MAX_BURST),
            ));
        }
        Ok(())
    }
}

impl EndpointSpec {
    pub fn subscribes_to(&self, event_type: &str) -> bool {
        self.event_types.iter().any(|t| t == "*" || t == event_type)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointStatus {
    Active,
    Paused,
}

/// A signing secret together with when it stops signing (`None`: the current one).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningSecret {
    pub secret: Secret,
    pub expires_at: Option<UnixMillis>,
}

/// Why an endpoint is paused (API.md §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PausedReason {
    /// `POST /v1/endpoints/{id}/pause`.
    Operator,
    /// The receiver answered `410 Gone`.
    Gone,
    /// Failing continuously for `delivery.pause_after`.
    FailingTooLong,
}

impl PausedReason {
    pub fn label(self) -> &'static str {
        match self {
            PausedReason::Operator => "operator",
            PausedReason::Gone => "gone",
            PausedReason::FailingTooLong => "failing_too_long",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: EndpointId,
    pub spec: EndpointSpec,
    pub status: EndpointStatus,
    /// Set while paused; records written before it existed read as paused by an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<PausedReason>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    /// The current secret first, then rotated-out ones still inside their overlap.
    pub secrets: Vec<SigningSecret>,
}

impl Endpoint {
    /// Why it is paused, as views show it: null when active; a pause stored before reasons
    /// were kept was an operator's.
    pub fn paused_reason_shown(&self) -> Option<PausedReason> {
        match self.status {
            EndpointStatus::Active => None,
            EndpointStatus::Paused => Some(self.paused_reason.unwrap_or(PausedReason::Operator)),
        }
    }

    /// The secrets that sign a request sent at `now`.
    pub fn signing_secrets(&self, now: UnixMillis) -> impl Iterator<Item = &Secret> {
        self.secrets
            .iter()
            .filter(move |s| s.expires_at.is_none_or(|t| t > now))
            .map(|s| &s.secret)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
    Cancelled,
    /// Not succeeded by its deadline (the event's `expires_at`, or its receipt plus the
    /// endpoint's `ttl`): never sent again unless retried or recovered.
    Expired,
}

impl DeliveryStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, DeliveryStatus::Pending)
    }
}

/// One event to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub id: DeliveryId,
    pub endpoint_id: EndpointId,
    pub event_key: EventKey,
    pub event_id: String,
    pub event_type: String,
    pub tenant: String,
    pub status: DeliveryStatus,
    /// Attempts made so far; the next request carries `X-Webhook-Attempt: attempts + 1`.
    pub attempts: u32,
    /// Failed attempts counted against the retry schedule since the last (re)queue; `retry` and
    /// `recover` reset it, the attempt count goes on.
    pub retries_used: u32,
    pub next_attempt_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    /// When it expires if not succeeded by then; `retry` and `recover` lift it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixMillis>,
    /// For an ordered endpoint: the event's key and this delivery's place among that key's
    /// deliveries to the endpoint (1, 2, … in acknowledgement order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<Sequenced>,
    /// A `POST /v1/endpoints/{id}/test` send: final once sent, never retried or recovered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
    /// Every attempt made so far, oldest first: stored inside the delivery's record
    /// (`storage::codec`), so an attempt result is one write of one key.
    #[serde(skip)]
    pub attempt_log: Vec<Attempt>,
}

/// An ordered delivery's key and sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequenced {
    pub key: String,
    /// Assigned at acknowledgement (0 until then).
    pub seq: u64,
    /// Re-sent by `retry` or `recover` after it was final: out of order, waiting for no one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

impl Delivery {
    /// The key this delivery holds while pending, and its place, if it waits its turn.
    pub fn turn(&self) -> Option<(&str, u64)> {
        self.ordering
            .as_ref()
            .filter(|o| !o.released)
            .map(|o| (o.key.as_str(), o.seq))
    }
}

impl Delivery {
    /// Pending again at `now` on a fresh schedule (`retry`, `recover` of a final one): its
    /// deadline lifted, and, if ordered, released from its key's turn (re-sent out of order).
    pub fn requeue(&mut self, now: UnixMillis) {
        if let Some(o) = self.ordering.as_mut() {
            o.released = true;
        }
        self.status = DeliveryStatus::Pending;
        self.retries_used = 0;
        self.next_attempt_at = Some(now);
        self.updated_at = now;
        self.expires_at = None;
    }

    /// Past its deadline at `now`.
    pub fn expired(&self, now: UnixMillis) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// An endpoint's delivery record and circuit state, kept by its actor and stored with each
/// attempt result so both survive a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointStats {
    /// Deliveries that ended `succeeded` / `failed` since the endpoint was created (one that
    /// fails, is recovered and then succeeds counts in both).
    pub succeeded: u64,
    pub failed: u64,
    /// Failed attempts since the last successful one.
    pub consecutive_failures: u32,
    pub last_success_at: Option<UnixMillis>,
    pub last_failure_at: Option<UnixMillis>,
    /// Set while the circuit is open: the queue is held and single probes test the endpoint.
    pub failing_since: Option<UnixMillis>,
    /// Probes that failed since the circuit opened; each one lengthens the next interval.
    pub failed_probes: u32,
    /// The rate limit's bucket as last stored: (tokens, at), so a restart grants no new burst.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_tokens: Option<(f64, UnixMillis)>,
}

/// The result of one HTTP attempt, as stored and shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub n: u32,
    pub at: UnixMillis,
    pub status_code: Option<u16>,
    /// Absent from records stored before it was kept ([`Attempt::result_shown`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<AttemptResult>,
    pub duration_ms: u64,
    pub error: Option<String>,
    pub response_body: Option<String>,
}

impl Attempt {
    /// The stored result, or for an older record what its status and error say.
    pub fn result_shown(&self) -> AttemptResult {
        if let Some(r) = self.result {
            return r;
        }
        match (self.status_code, self.error.as_deref()) {
            (Some(s), _) if (200..300).contains(&s) => AttemptResult::Success,
            (Some(s), _) if (400..500).contains(&s) => AttemptResult::Http4xx,
            (Some(s), _) if (500..600).contains(&s) => AttemptResult::Http5xx,
            (None, Some("timeout")) => AttemptResult::Timeout,
            (None, Some(e)) if e.starts_with("connect:") || e.starts_with("blocked:") => {
                AttemptResult::ConnectError
            }
            _ => AttemptResult::Other,
        }
    }
}

/// What an attempt came to, as the `result` of its record and of `hookd_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptResult {
    Success,
    #[serde(rename = "http_4xx")]
    Http4xx,
    #[serde(rename = "http_5xx")]
    Http5xx,
    Timeout,
    ConnectError,
    ProxyError,
    AuthError,
    Other,
}

impl AttemptResult {
    pub const ALL: [AttemptResult; 8] = [
        AttemptResult::Success,
        AttemptResult::Http4xx,
        AttemptResult::Http5xx,
        AttemptResult::Timeout,
        AttemptResult::ConnectError,
        AttemptResult::ProxyError,
        AttemptResult::AuthError,
        AttemptResult::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AttemptResult::Success => "success",
            AttemptResult::Http4xx => "http_4xx",
            AttemptResult::Http5xx => "http_5xx",
            AttemptResult::Timeout => "timeout",
            AttemptResult::ConnectError => "connect_error",
            AttemptResult::ProxyError => "proxy_error",
            AttemptResult::AuthError => "auth_error",
            AttemptResult::Other => "other",
        }
    }

    /// Whether the attempt says something about the receiver: a failing proxy or token
    /// endpoint is not the receiver's failure, so it does not move the circuit.
    pub fn is_the_receivers(self) -> bool {
        !matches!(self, AttemptResult::ProxyError | AttemptResult::AuthError)
    }
}

/// Where one event went: kept in the event record so `GET /v1/events/{id}` lists them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryRef {
    pub id: DeliveryId,
    pub endpoint_id: EndpointId,
}

/// An event as stored: the payload is kept as the exact body every attempt sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub key: EventKey,
    pub id: String,
    pub tenant: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub received_at: UnixMillis,
    pub deliveries: Vec<DeliveryRef>,
    pub payload: Box<RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_carries_no_write_only_value() {
        let spec: EndpointSpec = serde_json::from_value(serde_json::json!({
            "tenant": "t", "url": "https://r/", "event_types": ["*"],
            "headers": {"X-Key": "header-secret"},
            "tls": {"client_cert": "c", "client_key": "key-secret"},
            "auth": {"type": "oauth2_client_credentials", "token_url": "https://t/",
                     "client_id": "c", "client_secret": "client-secret"}
        }))
        .unwrap();
        let debug = format!("{spec:?}");
        assert!(debug.contains("X-Key"), "{debug}");
        for secret in ["header-secret", "key-secret", "client-secret"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        let secret = Secret::generate_for(Signing::Ed25519);
        assert!(!format!("{secret:?} {secret}").contains("whsk_"));
    }

    #[test]
    fn identifiers() {
        assert!(check_identifier("prop_abc123").is_ok());
        assert!(check_identifier("visitor.blocked").is_ok());
        assert!(check_identifier("a:b-c").is_ok());
        assert!(check_identifier("").is_err());
        assert!(check_identifier(&"x".repeat(129)).is_err());
        assert!(check_identifier(&"x".repeat(128)).is_ok());
        assert!(check_identifier("a b").is_err());
        assert!(check_identifier("é").is_err());
    }

    #[test]
    fn ids_round_trip() {
        let id = EndpointId::new();
        let s = id.to_string();
        assert!(s.starts_with("ep_"));
        assert_eq!(s.parse::<EndpointId>(), Ok(id));
        assert_eq!(EndpointId::from_bytes(id.to_bytes()), id);
        assert!("dlv_01H".parse::<DeliveryId>().is_err());
        assert!(s.parse::<DeliveryId>().is_err());
    }

    #[test]
    fn rfc3339_times_parse_with_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Ok(1500));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Ok(0));
        assert!(parse_rfc3339("yesterday").is_err());
        assert_eq!(
            parse_rfc3339(&rfc3339(1_700_000_000_123)),
            Ok(1_700_000_000_123)
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::generate();
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(s.standard_key().len(), 32);
        assert!(!format!("{s:?} {s}").contains(s.expose()));
    }
}
