//! The shapes of the strings a request may carry, each one pattern used twice: by the
//! handlers' validation ([`check`]) and by the OpenAPI document (each type here is a schema
//! with that pattern). A client, or a fuzzer, reading the document therefore knows exactly
//! what hookd accepts: a string that matches is never refused for its form, and one that does
//! not is always refused.
//!
//! The patterns are narrower than what HTTP would allow where that keeps the promise simple
//! (URL hosts are names or dotted IPv4 addresses; header values are printable ASCII).

use std::sync::LazyLock;

use regex::Regex;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// Declares a string schema type whose pattern is `$pattern`, and its compiled regex.
macro_rules! pattern {
    ($doc:literal, $name:ident, $re:ident, $pattern:literal, $example:literal) => {
        #[doc = $doc]
        pub struct $name;

        pub static $re: LazyLock<Regex> =
            // invariant: the pattern is a literal tested below.
            LazyLock::new(|| Regex::new($pattern).expect("valid pattern"));

        impl $name {
            pub const PATTERN: &'static str = $pattern;
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some($pattern))
                    .description(Some($doc))
                    .examples([serde_json::json!($example)])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

pattern!(
    "An id, tenant or event type: 1-128 of A-Z a-z 0-9 _ . : -",
    Identifier,
    IDENTIFIER,
    r"^[A-Za-z0-9_.:-]{1,128}$",
    "prop_abc123"
);
pattern!(
    "An event type to subscribe to, or * for every type",
    EventTypeName,
    EVENT_TYPE_NAME,
    r"^(\*|[A-Za-z0-9_.:-]{1,128})$",
    "fraud_detected"
);
pattern!(
    "An absolute http(s) URL: a host name or dotted IPv4 address, an optional port, path and query; no user information",
    UrlString, URL,
    r"^https?://([A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]))(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*(\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$",
    "https://crm.example.com/hooks"
);
pattern!(
    "An HTTP CONNECT proxy: http:// and a host name or dotted IPv4 address, an optional port; nothing else",
    ProxyString, PROXY,
    r"^http://([A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]))(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?/?$",
    "http://proxy.internal:3128"
);
pattern!(
    "An HTTP header name (not one hookd sets itself)",
    HeaderName,
    HEADER_NAME,
    r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$",
    "X-Team"
);
pattern!(
    "A header value: printable ASCII and spaces, at most 1024 characters",
    HeaderValue,
    HEADER_VALUE,
    r"^[ -~]{0,1024}$",
    "risk"
);
pattern!(
    "A per-attempt timeout: more than 0 and at most 5 minutes",
    TimeoutString,
    TIMEOUT,
    r"^([1-9][0-9]{0,4}ms|([1-9]|[1-9][0-9]|[12][0-9][0-9]|300)s|[1-5]m)$",
    "10s"
);
pattern!(
    "A retry delay: at most 30 days",
    DelayString,
    DELAY,
    r"^([0-9]{1,7}ms|[0-9]{1,6}s|[0-9]{1,4}m|([0-9]{1,2}|[1-6][0-9]{2}|7[01][0-9]|720)h|([0-9]|[12][0-9]|30)d)$",
    "5m"
);
pattern!(
    "A time-to-live: more than 0 and at most 365 days",
    TtlString,
    TTL,
    r"^([1-9][0-9]{0,6}s|[1-9][0-9]{0,4}m|[1-9][0-9]{0,2}h|([1-9]|[1-9][0-9]|[12][0-9]{2}|3[0-5][0-9]|36[0-5])d)$",
    "1h"
);
pattern!(
    "An RFC 3339 time",
    Rfc3339String,
    RFC3339,
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])$",
    "2026-12-01T10:00:00Z"
);

pattern!(
    "A page cursor: the next_cursor of the page before",
    CursorString,
    CURSOR,
    r"^dlv_[0-7][0-9A-HJKMNP-TV-Z]{25}$",
    "dlv_01J9Z8Q4W6R2M5T7V9X1Y3Z5A7"
);

/// An RFC 3339 time of the form the document promises ([`RFC3339`]), as milliseconds.
pub fn rfc3339_millis(raw: &str) -> Result<crate::model::UnixMillis, String> {
    check(&RFC3339, raw, "an RFC 3339 time").and_then(|()| crate::model::parse_rfc3339(raw))
}

/// `Ok` when `value` has the form `re` describes; else the message names what was expected.
pub fn check(re: &Regex, value: &str, what: &str) -> Result<(), String> {
    if re.is_match(value) {
        Ok(())
    } else {
        Err(format!("{value:?} is not {what}"))
    }
}

/// The name the OpenAPI document's post-processing turns into JSON Schema's `propertyNames`,
/// which utoipa's builders have no setter for.
pub const PROPERTY_NAMES_EXTENSION: &str = "x-property-names";

/// An endpoint's static headers: at most 32, names and values of the forms above.
pub struct Headers;

impl utoipa::PartialSchema for Headers {
    fn schema() -> RefOr<Schema> {
        let names = serde_json::json!({"type": "string", "pattern": HeaderName::PATTERN});
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(<HeaderValue as utoipa::PartialSchema>::schema()))
            .max_properties(Some(32))
            .description(Some(
                "Static headers sent with every request; their values show as *** in views",
            ))
            .extensions(Some(
                utoipa::openapi::extensions::ExtensionsBuilder::new()
                    .add(PROPERTY_NAMES_EXTENSION, names)
                    .build(),
            ))
            .into()
    }
}

impl utoipa::ToSchema for Headers {}

/// Checks the string fields of an endpoint create or PATCH body against the forms above
/// (`url` is checked last by the endpoint's validation, after the checks with a more specific
/// message: scheme, credentials, private addresses),
/// before they are parsed (a duration parser would take `"1 min"` too; the document promises
/// one form). Returns the field at fault and why.
pub fn check_endpoint_fields(
    body: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), (String, String)> {
    use serde_json::Value;
    let string = |field: &str, value: &Value, re: &Regex, what: &str| match value {
        Value::String(s) => check(re, s, what).map_err(|m| (field.to_string(), m)),
        // Not a string: the parser names the type error.
        _ => Ok(()),
    };
    for (key, value) in body {
        match key.as_str() {
            "signature_header" => string(key, value, &HEADER_NAME, "an HTTP header name")?,
            "timeout" => string(
                key,
                value,
                &TIMEOUT,
                "a duration of more than 0 and at most 5m",
            )?,
            "ttl" => string(
                key,
                value,
                &TTL,
                "a duration of more than 0 and at most 365d",
            )?,
            "retry_schedule" => {
                for (i, d) in value.as_array().into_iter().flatten().enumerate() {
                    string(
                        &format!("retry_schedule[{i}]"),
                        d,
                        &DELAY,
                        "a delay of at most 30d",
                    )?;
                }
            }
            "headers" => {
                for (name, v) in value.as_object().into_iter().flatten() {
                    let field = format!("headers.{name}");
                    check(&HEADER_NAME, name, "an HTTP header name")
                        .map_err(|m| (field.clone(), m))?;
                    string(
                        &field,
                        v,
                        &HEADER_VALUE,
                        "printable ASCII of at most 1024 characters",
                    )?;
                }
            }
            "proxy" => string(key, value, &PROXY, "http://host:port (HTTP CONNECT)")?,
            // Objects only: serde would also read a struct from an array of its fields.
            "tls" | "auth" if !value.is_object() && !value.is_null() => {
                return Err((key.clone(), "must be an object".into()))
            }
            "auth" => {
                if let Some(url) = value.get("token_url") {
                    string(
                        "auth.token_url",
                        url,
                        &URL,
                        "an absolute http(s) URL: a host name or dotted IPv4 address, optional port, path and query",
                    )?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// An endpoint's `filter` ([`crate::filter`]): a reference to the `Filter` component, whose
/// recursive schema [`filter_components`] gives (utoipa's builders cannot write
/// `patternProperties`).
pub struct FilterSchema;

impl utoipa::PartialSchema for FilterSchema {
    fn schema() -> RefOr<Schema> {
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Filter"))
    }
}

impl utoipa::ToSchema for FilterSchema {}

/// The `Filter` and `FilterCondition` components: exactly the form [`crate::filter::Filter`]
/// parses, but for its limits on nesting and on conditions in all (in the description).
pub fn filter_components() -> [(&'static str, serde_json::Value); 2] {
    use serde_json::json;
    [
        (
            "Filter",
            json!({
                "type": "object",
                "description": "A predicate on the payload: every key holds. Keys are paths (dots separate keys, digits index arrays) mapping to a condition, or $and / $or holding arrays of filters. At most 64 conditions in all and 8 levels of $and/$or.",
                "maxProperties": 64,
                "propertyNames": {"anyOf": [
                    {"enum": ["$and", "$or"]},
                    {"type": "string", "maxLength": 256, "pattern": "^[^$.][^.]*(\\.[^.]+)*$"}
                ]},
                "patternProperties": {
                    "^\\$(and|or)$": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Filter"}},
                    "^[^$]": {"$ref": "#/components/schemas/FilterCondition"}
                }
            }),
        ),
        (
            "FilterCondition",
            json!({
                "description": "A bare value (equality, numbers by value) or an object of operators, all of which must hold.",
                "anyOf": [
                    {"type": ["string", "number", "boolean", "null"]},
                    {"type": "array"},
                    {"type": "object", "propertyNames": {"pattern": "^([^$][\\s\\S]*)?$"}},
                    {
                        "type": "object",
                        "minProperties": 1,
                        "additionalProperties": false,
                        "properties": {
                            "$eq": {}, "$ne": {}, "$gt": {}, "$gte": {}, "$lt": {}, "$lte": {},
                            "$in": {"type": "array"}, "$nin": {"type": "array"},
                            "$exists": {"type": "boolean"}
                        }
                    }
                ]
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles_and_takes_its_example() {
        for (re, yes, no) in [
            (&*IDENTIFIER, "prop_abc:1.2-3", "a b"),
            (&*EVENT_TYPE_NAME, "*", "**"),
            (
                &*URL,
                "https://crm.example.com:8443/hooks/a?x=1&y=%20",
                "https://u:p@x.com/",
            ),
            (&*URL, "http://127.0.0.1:9000/", "http://999.1.1.1/"),
            (
                &*URL,
                "http://localhost:65535/a",
                "http://localhost:65536/a",
            ),
            (&*HEADER_NAME, "X-Team", "X Team"),
            (&*HEADER_VALUE, "Bearer abc", "é"),
            (&*TIMEOUT, "300s", "301s"),
            (&*TIMEOUT, "5m", "0s"),
            (&*DELAY, "30d", "31d"),
            (&*DELAY, "0s", "721h"),
            (&*TTL, "365d", "366d"),
            (
                &*RFC3339,
                "2026-12-01T10:00:00.5+01:00",
                "2026-12-01 10:00:00",
            ),
        ] {
            assert!(re.is_match(yes), "{} should take {yes:?}", re.as_str());
            assert!(!re.is_match(no), "{} should refuse {no:?}", re.as_str());
        }
    }

    /// What the patterns promise, the durations parser and the limits agree with.
    #[test]
    fn matching_durations_parse_within_their_limits() {
        for (re, max) in [
            (&*TIMEOUT, std::time::Duration::from_secs(300)),
            (&*DELAY, std::time::Duration::from_secs(30 * 86400)),
            (&*TTL, std::time::Duration::from_secs(365 * 86400)),
        ] {
            for n in [
                "1", "9", "10", "99", "299", "300", "301", "365", "720", "999", "9999", "99999",
                "999999", "9999999",
            ] {
                for unit in ["ms", "s", "m", "h", "d"] {
                    let s = format!("{n}{unit}");
                    if re.is_match(&s) {
                        let d = humantime::parse_duration(&s).expect("parses");
                        assert!(d <= max, "{s} matches {} but is over {max:?}", re.as_str());
                    }
                }
            }
        }
    }
}
