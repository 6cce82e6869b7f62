//! An event from any source — `POST /v1/events`, a batch item, a NATS message — checked against
//! the rules of API.md §3 and given its deliveries. One place for those rules, so that every
//! source refuses the same events with the same messages.
//!
//! Invariant: [`Rules::prepare`] either returns a [`NewEvent`] whose every field is valid and
//! whose deliveries are those the router gives it now, or an [`IntakeError`] naming the field;
//! it writes nothing.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::canonical::CanonicalObject;
use crate::dispatch::{Incoming, Payload, Router};
use crate::metrics::IngestRejection;
use crate::model::{check_identifier, UnixMillis};
use crate::schemas::Schemas;
use crate::storage::NewEvent;

/// One event as a source hands it in (the `POST /v1/events` body).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    /// Made by hookd (`evt_<ulid>`) when absent; unique per tenant within retention.
    #[serde(default)]
    #[schema(value_type = Option<crate::rules::Identifier>)]
    pub id: Option<String>,
    #[serde(rename = "type")]
    #[schema(value_type = crate::rules::Identifier)]
    pub event_type: String,
    #[schema(value_type = crate::rules::Identifier)]
    pub tenant: String,
    /// Any JSON object up to `events.max_payload_bytes`. Kept as its text here and read once
    /// into its canonical form by [`Rules::prepare`]; parsed as a tree only for a schema or
    /// an endpoint filter.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    /// Its deliveries expire if not succeeded by then.
    #[serde(default)]
    #[schema(value_type = Option<crate::rules::Rfc3339String>)]
    pub expires_at: Option<String>,
    /// Deliveries to an ordered endpoint with the same key go one at a time, in order.
    #[serde(default)]
    #[schema(value_type = Option<crate::rules::Identifier>)]
    pub ordering_key: Option<String>,
}

/// Why an event is refused. Each message starts with the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// A field present but wrong.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A type outside `events.types`.
    #[error("{0}")]
    UnknownType(String),
    /// A payload that is not JSON hookd accepts (a number out of range, a lone surrogate…).
    #[error("{0}")]
    Malformed(String),
    /// A payload its type's schema refuses.
    #[error("{0}")]
    SchemaViolation(String),
    /// A payload over `events.max_payload_bytes`.
    #[error("{0}")]
    TooLarge(String),
}

impl IntakeError {
    /// How `hookd_ingest_rejected_total` counts it.
    pub fn rejection(&self) -> IngestRejection {
        match self {
            IntakeError::TooLarge(_) => IngestRejection::TooLarge,
            _ => IngestRejection::Invalid,
        }
    }
}

/// What an event is checked against: the configuration in force when its request (or its
/// batch of messages) began, so that one batch sees one version of it.
pub struct Rules<'a> {
    pub router: &'a Router,
    pub max_payload_bytes: usize,
    /// `events.types` and the types of `events.schemas`; empty: any type.
    pub catalogue: &'a [String],
    pub schemas: &'a Schemas,
}

impl Rules<'_> {
    /// Validates one event and gives it its deliveries; `field` prefixes the names in error
    /// messages (`events[3]` in a batch, empty for a single event).
    pub fn prepare(
        &self,
        input: EventIn,
        field: &str,
        now: UnixMillis,
    ) -> Result<NewEvent, IntakeError> {
        let name = |f: &str| {
            if field.is_empty() {
                f.to_string()
            } else {
                format!("{field}.{f}")
            }
        };
        let invalid = |f: &str, message: String| IntakeError::Invalid {
            field: name(f),
            message,
        };
        // First, as when the whole body was one parse: a malformed payload is reported before
        // any other field.
        let body = canonical_payload(input.payload.get(), &name)?;
        let id = match input.id {
            Some(id) => {
                check_identifier(&id).map_err(|m| invalid("id", m))?;
                id
            }
            None => format!("evt_{}", crate::model::new_ulid()),
        };
        check_identifier(&input.tenant).map_err(|m| invalid("tenant", m))?;
        check_identifier(&input.event_type).map_err(|m| invalid("type", m))?;
        if !self.catalogue.is_empty() && !self.catalogue.contains(&input.event_type) {
            return Err(IntakeError::UnknownType(format!(
                "{}: {:?} is not in the event catalogue (events.types)",
                name("type"),
                input.event_type
            )));
        }
        let mut tree = None;
        if let Some(schema) = self.schemas.get(&input.event_type) {
            // invariant: the text parsed once already, by the same parser.
            let payload: Value = serde_json::from_str(input.payload.get())
                .map_err(|e| invalid("payload", e.to_string()))?;
            let checked = schema.check(&payload);
            if let Value::Object(m) = payload {
                tree = Some(m);
            }
            if let Err((path, message)) = checked {
                let path = if field.is_empty() {
                    path
                } else {
                    format!("{field}.{path}")
                };
                return Err(IntakeError::SchemaViolation(format!("{path}: {message}")));
            }
        }
        let max = self.max_payload_bytes;
        if body.len() > max {
            return Err(IntakeError::TooLarge(format!(
                "{}: {} bytes is larger than events.max_payload_bytes ({max})",
                name("payload"),
                body.len()
            )));
        }
        let expires_at = match &input.expires_at {
            Some(at) => {
                Some(crate::rules::rfc3339_millis(at).map_err(|m| invalid("expires_at", m))?)
            }
            None => None,
        };
        if let Some(k) = &input.ordering_key {
            check_identifier(k).map_err(|m| invalid("ordering_key", m))?;
        }
        let incoming = Incoming {
            id,
            tenant: input.tenant,
            event_type: input.event_type,
            expires_at,
            ordering_key: input.ordering_key,
        };
        let payload = match &tree {
            Some(m) => Payload::Tree(m),
            None => Payload::text(input.payload.get()),
        };
        self.router
            .fan_out(incoming, &payload, body, now)
            .map_err(|e| invalid("payload", e.to_string()))
    }
}

/// The payload's canonical form, or the error `api::parse_json` would have given for it as
/// part of the whole body: the path inside the payload, `invalid_field` for a value of the wrong
/// kind, `invalid_json` for text that is not JSON hookd takes. Line and column count from the
/// start of the payload. `name` gives a field its name in messages.
fn canonical_payload(text: &str, name: &dyn Fn(&str) -> String) -> Result<String, IntakeError> {
    let (path, inner) = match parse_traced::<CanonicalObject>(text.as_bytes()) {
        Ok(c) => return Ok(c.0),
        Err(e) => e,
    };
    let field = if path.is_empty() {
        name("payload")
    } else {
        name(&format!("payload.{path}"))
    };
    Err(if inner.is_data() {
        IntakeError::Invalid {
            field,
            message: inner.to_string(),
        }
    } else {
        IntakeError::Malformed(format!("{field}: {inner}"))
    })
}

/// `bytes` as one JSON `T`, or where it went wrong: the path of the value at fault (empty at
/// the top) and serde_json's error. Most input is valid, so it is parsed plainly first and
/// only a failure again with path tracking, which costs on every field.
pub(crate) fn parse_traced<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, (String, serde_json::Error)> {
    let first = match serde_json::from_slice::<T>(bytes) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let (path, inner) = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        // The plain parse found trailing characters the traced one leaves to `end`.
        Ok(_) => (String::new(), de.end().err().unwrap_or(first)),
        Err(e) => (e.path().to_string(), e.into_inner()),
    };
    // The path is "?" where the parser lost track (e.g. at EOF) and "." at the top.
    let path = match path.as_str() {
        "." | "?" => String::new(),
        _ => path,
    };
    Err((path, inner))
}
