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

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
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

/// A JSON object read straight into its canonical form: deserializing it writes each token as
/// it is read, so an ingested payload is never built as a tree of maps and strings (that tree
/// and its allocations cost more than the rest of an event's intake). The result is
/// [`object_to_string`] of the object `JSON.parse` would make of the same text.
pub struct CanonicalObject(pub String);

impl<'de> serde::Deserialize<'de> for CanonicalObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = String;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<String, A::Error> {
                let mut out = String::with_capacity(256);
                let mut entries = Vec::new();
                Writer {
                    out: &mut out,
                    entries: &mut entries,
                }
                .visit_map(map)?;
                Ok(out)
            }
        }
        deserializer.deserialize_map(Top).map(CanonicalObject)
    }
}

/// One member written into the output of an object still open: where its key starts, where
/// the key ends (the `:` follows), and where its value ends.
struct Entry {
    key: usize,
    colon: usize,
    end: usize,
    index: Option<u32>,
}

/// Writes the value it deserializes. `entries` is one stack for the members of every object
/// still open, so that no object allocates a list of its own.
struct Writer<'s> {
    out: &'s mut String,
    entries: &'s mut Vec<Entry>,
}

impl<'de> DeserializeSeed<'de> for Writer<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Writer<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.out.push_str("null");
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.out.push_str(if v { "true" } else { "false" });
        Ok(())
    }
    // Integers as IEEE doubles, as `Number::as_f64` gives them to `write_value`.
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.visit_f64(v as f64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        write_number(self.out, v);
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        write_str(self.out, v);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.out.push('[');
        let mut n = 0usize;
        loop {
            // The separator goes in before the element is known to exist, and out if not.
            let mark = self.out.len();
            if n > 0 {
                self.out.push(',');
            }
            let item = Writer {
                out: &mut *self.out,
                entries: &mut *self.entries,
            };
            if seq.next_element_seed(item)?.is_none() {
                self.out.truncate(mark);
                break;
            }
            n += 1;
        }
        self.out.push(']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.out.push('{');
        let start = self.out.len();
        let base = self.entries.len();
        loop {
            let mark = self.out.len();
            if self.entries.len() > base {
                self.out.push(',');
            }
            let key = self.out.len();
            let Some(index) = map.next_key_seed(KeyWriter(&mut *self.out))? else {
                self.out.truncate(mark);
                break;
            };
            let colon = self.out.len();
            self.out.push(':');
            map.next_value_seed(Writer {
                out: &mut *self.out,
                entries: &mut *self.entries,
            })?;
            let end = self.out.len();
            self.entries.push(Entry {
                key,
                colon,
                end,
                index,
            });
        }
        reorder(self.out, start, &self.entries[base..]);
        self.entries.truncate(base);
        self.out.push('}');
        Ok(())
    }
}

/// Writes a member's key; answers whether it is an array index.
struct KeyWriter<'s>(&'s mut String);

impl<'de> DeserializeSeed<'de> for KeyWriter<'_> {
    type Value = Option<u32>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<u32>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyWriter<'_> {
    type Value = Option<u32>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<u32>, E> {
        write_str(self.0, v);
        Ok(array_index(v))
    }
}

/// The members of an object written in the order read, from `start` (just after its `{`),
/// put in the order [`write_object`] gives: array indices first, ascending, then the rest in
/// first-seen order, a repeated key at its first place with its last value. Written keys are
/// compared as written: escaping gives equal strings equal text and different ones different.
fn reorder(out: &mut String, start: usize, entries: &[Entry]) {
    let key = |e: &Entry| &out[e.key..e.colon];
    let repeated = match entries.len() {
        0 | 1 => false,
        n if n <= 8 => (1..n).any(|i| entries[..i].iter().any(|e| key(e) == key(&entries[i]))),
        _ => {
            let mut keys: Vec<&str> = entries.iter().map(key).collect();
            keys.sort_unstable();
            keys.windows(2).any(|w| w[0] == w[1])
        }
    };
    if !repeated && entries.iter().all(|e| e.index.is_none()) {
        return;
    }
    // Rare (JavaScript-style index keys or a repeated key): put together anew.
    let mut members: Vec<(&str, &str, Option<u32>)> = Vec::with_capacity(entries.len());
    let mut place: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for e in entries {
        let (k, v) = (key(e), &out[e.colon + 1..e.end]);
        match place.get(k) {
            Some(&i) => members[i].1 = v,
            None => {
                place.insert(k, members.len());
                members.push((k, v, e.index));
            }
        }
    }
    let mut indices: Vec<&(&str, &str, Option<u32>)> =
        members.iter().filter(|m| m.2.is_some()).collect();
    indices.sort_by_key(|m| m.2);
    let mut rebuilt = String::with_capacity(out.len() - start);
    for (k, v, _) in indices
        .into_iter()
        .chain(members.iter().filter(|m| m.2.is_none()))
    {
        if !rebuilt.is_empty() {
            rebuilt.push(',');
        }
        rebuilt.push_str(k);
        rebuilt.push(':');
        rebuilt.push_str(v);
    }
    out.truncate(start);
    out.push_str(&rebuilt);
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        // invariant: without arbitrary_precision every serde_json number converts to f64,
        // and serde_json never parses a non-finite number.
        Value::Number(n) => write_number(out, n.as_f64().unwrap_or(0.0)),
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

fn write_number(out: &mut String, f: f64) {
    let mut buf = ryu_js::Buffer::new();
    out.push_str(buf.format(f));
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

    /// The single pass and the tree agree, or both refuse.
    fn both(input: &str) -> Result<String, String> {
        let streamed = serde_json::from_str::<CanonicalObject>(input).map(|c| c.0);
        let tree = serde_json::from_str::<Map<String, Value>>(input).map(|m| object_to_string(&m));
        match (streamed, tree) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "{input}");
                Ok(a)
            }
            (Err(a), Err(_)) => Err(a.to_string()),
            (a, b) => panic!("{input}: single pass {a:?}, tree {b:?}"),
        }
    }

    #[test]
    fn the_single_pass_writes_what_the_tree_writes() {
        for input in [
            r#"{}"#,
            r#"{"a":{}, "b":[], "c":[[],{}]}"#,
            r#"{"b":1,"a":2,"c":{"z":1,"y":2}}"#,
            r#"{"b":1,"2":2,"10":3,"1":4,"01":5,"-1":6}"#,
            r#"{"4294967295":1,"4294967294":2}"#,
            r#"{"a":1,"b":2,"a":3}"#,
            r#"{"a":{"x":1,"x":{"y":1,"y":2}},"1":[{"0":1,"b":2,"0":3}],"a":[85.0,-0,1e21]}"#,
            r#"{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k3":30}"#,
            r#"{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10}"#,
            r#"{"e\u0301":1,"é":2,"\u00e9":3,"a\"b":[true,false,null]}"#,
            r#" { "a" : [ 1 , 12345678901234567890 , -9007199254740993, 1E-7 ] } "#,
        ] {
            assert!(both(input).is_ok(), "{input}");
        }
        assert_eq!(
            both(r#"{"a":1,"2":[],"a":{"1":0,"0":1},"0":"x"}"#).unwrap(),
            r#"{"0":"x","2":[],"a":{"0":1,"1":0}}"#
        );
        for refused in [
            "[]",
            "\"x\"",
            "1",
            "null",
            r#"{"x":1e999}"#,
            r#"{"x":"\ud800"}"#,
            r#"{"x":NaN}"#,
            r#"{"x":1,}"#,
            r#"{"x":[1,]}"#,
            r#"{"x":1} 2"#,
        ] {
            assert!(both(refused).is_err(), "{refused}");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(
            both(&deep).is_err(),
            "nesting past serde_json's limit is refused"
        );
    }

    /// JSON text of objects whose keys repeat and look like array indices often.
    fn object_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![
            proptest::sample::select(&["a", "b", "0", "7", "10", "01"][..]).prop_map(String::from),
            "[a-c0-9\\\"é]{0,3}",
        ]
        .prop_map(|k| serde_json::to_string(&k).unwrap_or_default());
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            "\\PC{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        ];
        let value = leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                proptest::collection::vec((key.clone(), inner), 0..6).prop_map(|members| {
                    let m: Vec<String> = members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", m.join(" , "))
                }),
            ]
        });
        proptest::collection::vec(value, 0..4).prop_map(|vs| {
            let m: Vec<String> = vs
                .iter()
                .enumerate()
                .map(|(i, v)| format!("\"{}\":{v}", ["a", "1", "b", "a"][i]))
                .collect();
            format!("{{{}}}", m.join(","))
        })
    }

    proptest::proptest! {
        #[test]
        fn the_single_pass_agrees_with_the_tree_on_any_object(text in object_text()) {
            proptest::prop_assert!(both(&text).is_ok(), "{}", text);
        }

        #[test]
        fn a_string_is_written_as_serde_json_writes_it(s in "\\PC*|[\\x00-\\x7f]*") {
            let mut out = String::new();
            write_str(&mut out, &s);
            proptest::prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
        }
    }
}
