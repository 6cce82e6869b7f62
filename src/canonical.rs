//! The body hookd sends: an event payload written exactly as JavaScript's
//! `JSON.stringify(JSON.parse(body))` would write it, so receivers that re-serialize the parsed
//! body before checking the signature (the seeds' Node examples) compute the same bytes.
//!
//! - compact: no insignificant whitespace;
//! - numbers in the ECMAScript form (RFC 8785 §3.2.2.3): every number is an IEEE double, written
//!   shortest-round-trip (`85.0` → `85`, `1e21` → `1e+21`, `-0` → `0`);
//! - strings escaped only where JSON requires (the escapes of `JSON.stringify` and serde_json
//!   are the same set: `"` `\` and control characters);
//! - keys in submitted order, except that keys which are array indices ("0", "1", … below
//!   2³²−1) come first in ascending order, because JavaScript objects enumerate them so; a
//!   repeated key keeps its first position and its last value, as `JSON.parse` does.

use serde_json::{Map, Value};

/// Writes `value` in the canonical form.
pub fn to_string(value: &Value) -> String {
    let mut out = String::with_capacity(128);
    write_value(&mut out, value);
    out
}

/// Writes an object payload in the canonical form.
pub fn object_to_string(map: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(128);
    write_object(&mut out, map);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            // invariant: without arbitrary_precision every serde_json number converts to f64,
            // and serde_json never parses a non-finite number.
            let f = n.as_f64().unwrap_or(0.0);
            let mut buf = ryu_js::Buffer::new();
            out.push_str(buf.format(f));
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>) {
    out.push('{');
    let mut first = true;
    let mut entry = |out: &mut String, k: &str, v: &Value| {
        if !first {
            out.push(',');
        }
        first = false;
        write_str(out, k);
        out.push(':');
        write_value(out, v);
    };
    let mut indices: Vec<(u32, &str, &Value)> = map
        .iter()
        .filter_map(|(k, v)| array_index(k).map(|i| (i, k.as_str(), v)))
        .collect();
    if indices.is_empty() {
        for (k, v) in map {
            entry(out, k, v);
        }
    } else {
        indices.sort_by_key(|(i, _, _)| *i);
        for (_, k, v) in &indices {
            entry(out, k, v);
        }
        for (k, v) in map.iter().filter(|(k, _)| array_index(k).is_none()) {
            entry(out, k, v);
        }
    }
    out.push('}');
}

fn write_str(out: &mut String, s: &str) {
    // Almost every key and value needs no escape: written as it is, without the String that
    // serde_json's serializer would allocate for it (one per string of every payload).
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // invariant: serializing a &str to JSON cannot fail and yields UTF-8.
    let quoted = serde_json::to_string(s).unwrap_or_default();
    out.push_str(&quoted);
}

/// `Some(i)` when `key` is the canonical decimal form of an integer in 0..2³²−1, which
/// ECMAScript enumerates before every other own property key.
fn array_index(key: &str) -> Option<u32> {
    let bytes = key.as_bytes();
    if bytes.is_empty() || bytes.len() > 10 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return None;
    }
    let n: u64 = key.parse().ok()?;
    (n < u32::MAX as u64).then_some(n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(input: &str) -> String {
        to_string(&serde_json::from_str::<Value>(input).unwrap())
    }

    #[test]
    fn numbers_use_the_javascript_form() {
        assert_eq!(
            canon("[85.0, 1e21, 1E-7, 0.1, -0, -0.0, 100, 1.5e300]"),
            "[85,1e+21,1e-7,0.1,0,0,100,1.5e+300]"
        );
        assert_eq!(
            canon("[12345678901234567890, 9007199254740993, 0.000001]"),
            "[12345678901234567000,9007199254740992,0.000001]"
        );
        assert_eq!(
            canon("[49.5, 49.0, 0.02, 123456789012345680000]"),
            "[49.5,49,0.02,123456789012345680000]"
        );
    }

    #[test]
    fn keys_keep_submitted_order_with_array_indices_first() {
        assert_eq!(
            canon(r#"{"b":1,"a":2,"c":{"z":1,"y":2}}"#),
            r#"{"b":1,"a":2,"c":{"z":1,"y":2}}"#
        );
        assert_eq!(
            canon(r#"{"b":1,"2":2,"10":3,"1":4,"01":5,"-1":6}"#),
            r#"{"1":4,"2":2,"10":3,"b":1,"01":5,"-1":6}"#
        );
        assert_eq!(
            canon(r#"{"4294967295":1,"4294967294":2}"#),
            r#"{"4294967294":2,"4294967295":1}"#
        );
        assert_eq!(canon(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn strings_are_escaped_only_where_json_requires() {
        assert_eq!(canon(r#"["Café Zürich — 東京", "a\/b", "\u0001\b\t\n\f\r\"\\", "\u2028", "😀"]"#),
            "[\"Café Zürich — 東京\",\"a/b\",\"\\u0001\\b\\t\\n\\f\\r\\\"\\\\\",\"\u{2028}\",\"😀\"]");
    }

    #[test]
    fn whitespace_is_removed() {
        assert_eq!(
            canon(" { \"a\" : [ 1 , true , null ] } "),
            r#"{"a":[1,true,null]}"#
        );
    }

    proptest::proptest! {
        #[test]
        fn a_string_is_written_as_serde_json_writes_it(s in "\\PC*|[\\x00-\\x7f]*") {
            let mut out = String::new();
            write_str(&mut out, &s);
            proptest::prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
        }
    }
}
