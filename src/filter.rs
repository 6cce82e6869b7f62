//! Endpoint payload filters (API.md §12): a predicate on an event's payload, checked at
//! fan-out; an endpoint whose filter does not match gets no delivery.
//!
//! Form: an object whose keys are paths (`decision.score`, `items.0.id`: dots separate keys,
//! digits index arrays) mapping to a condition — `{"$eq"|"$ne"|"$gt"|"$gte"|"$lt"|"$lte": v}`,
//! `{"$in"|"$nin": [vs]}`, `{"$exists": bool}`, several of them (all must hold), or a bare value
//! meaning `$eq` — and `"$and"`/`"$or"` keys holding arrays of such objects. Every key must hold.
//!
//! Invariants:
//! - [`Filter::parse`] accepts exactly the form above, within [`MAX_CONDITIONS`] and
//!   [`MAX_DEPTH`]; its errors name the path inside `filter` (`filter.$or[1].score.$gt`).
//! - [`Filter::matches`] never panics and never allocates: paths are walked as `&str` segments
//!   over the payload as parsed; its cost is bounded by the filter's size times the paths'
//!   lengths, never more than a walk over the payload.
//! - Semantics: a missing path fails every condition except `$exists: false`, `$ne` and
//!   `$nin`; numbers compare by value (`85` equals `85.0`); nothing converts between strings,
//!   numbers and booleans; an ordering operator between values of different types (or of
//!   types without an order: booleans, null, arrays, objects) is false; a key holding `null`
//!   exists and equals `null`; a non-digit segment applied to an array is a missing path.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// Conditions one filter may hold at most.
pub const MAX_CONDITIONS: usize = 64;
/// `$and`/`$or` nesting at most.
pub const MAX_DEPTH: usize = 8;
/// Longest path.
const MAX_PATH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Nin,
    Exists,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "$eq" => Op::Eq,
            "$ne" => Op::Ne,
            "$gt" => Op::Gt,
            "$gte" => Op::Gte,
            "$lt" => Op::Lt,
            "$lte" => Op::Lte,
            "$in" => Op::In,
            "$nin" => Op::Nin,
            "$exists" => Op::Exists,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// Every one holds.
    All(Vec<Node>),
    /// At least one holds.
    Any(Vec<Node>),
    Test {
        path: String,
        op: Op,
        value: Value,
    },
}

/// A parsed, validated filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    root: Node,
}

/// Where in `filter` the error is, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub path: String,
    pub message: String,
}

struct Parser {
    conditions: usize,
}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError {
        path: path.to_string(),
        message: message.into(),
    })
}

impl Parser {
    fn object(&mut self, v: &Value, at: &str, depth: usize) -> Result<Node, FilterError> {
        let Value::Object(map) = v else {
            return err(at, "must be an object of paths and conditions");
        };
        if depth > MAX_DEPTH {
            return err(at, format!("nests $and/$or deeper than {MAX_DEPTH}"));
        }
        let mut all = Vec::with_capacity(map.len());
        for (key, value) in map {
            let here = format!("{at}.{key}");
            match key.as_str() {
                "$and" | "$or" => {
                    let Value::Array(items) = value else {
                        return err(&here, "must be an array of filter objects");
                    };
                    if items.is_empty() {
                        return err(&here, "must hold at least one filter object");
                    }
                    let nodes = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| self.object(item, &format!("{here}[{i}]"), depth + 1))
                        .collect::<Result<Vec<_>, _>>()?;
                    all.push(if key == "$and" {
                        Node::All(nodes)
                    } else {
                        Node::Any(nodes)
                    });
                }
                k if k.starts_with('$') => {
                    return err(&here, "is not an operator here; use $and or $or, or a path")
                }
                path => {
                    check_path(path, &here)?;
                    all.push(self.condition(path, value, &here)?);
                }
            }
        }
        Ok(Node::All(all))
    }

    fn condition(&mut self, path: &str, v: &Value, at: &str) -> Result<Node, FilterError> {
        let operators = match v {
            Value::Object(m) if m.keys().any(|k| k.starts_with('$')) => m,
            // A bare value: equality.
            other => return self.test(path, Op::Eq, other.clone(), at),
        };
        if operators.is_empty() {
            return err(at, "holds no condition");
        }
        let mut tests = Vec::with_capacity(operators.len());
        for (name, value) in operators {
            let here = format!("{at}.{name}");
            let Some(op) = Op::parse(name) else {
                return err(
                    &here,
                    "is not an operator ($eq $ne $gt $gte $lt $lte $in $nin $exists); a value compared whole cannot mix operators and keys",
                );
            };
            match (op, value) {
                (Op::In | Op::Nin, Value::Array(_)) => {}
                (Op::In | Op::Nin, _) => return err(&here, "must be an array of values"),
                (Op::Exists, Value::Bool(_)) => {}
                (Op::Exists, _) => return err(&here, "must be true or false"),
                _ => {}
            }
            tests.push(self.test(path, op, value.clone(), &here)?);
        }
        Ok(if tests.len() == 1 {
            tests.remove(0)
        } else {
            Node::All(tests)
        })
    }

    fn test(&mut self, path: &str, op: Op, value: Value, at: &str) -> Result<Node, FilterError> {
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return err(
                at,
                format!("the filter holds more than {MAX_CONDITIONS} conditions"),
            );
        }
        Ok(Node::Test {
            path: path.to_string(),
            op,
            value,
        })
    }
}

fn check_path(path: &str, at: &str) -> Result<(), FilterError> {
    if path.len() > MAX_PATH {
        return err(at, format!("path longer than {MAX_PATH} characters"));
    }
    if path.split('.').any(str::is_empty) {
        return err(at, "path has an empty segment (dots separate keys)");
    }
    Ok(())
}

impl Filter {
    /// Parses and validates the `filter` setting; errors name the path inside `filter`.
    pub fn parse(v: &Value) -> Result<Filter, FilterError> {
        let mut parser = Parser { conditions: 0 };
        let root = parser.object(v, "filter", 0)?;
        Ok(Filter { root })
    }

    /// A filter no payload matches.
    pub fn nothing() -> Filter {
        Filter {
            root: Node::Any(Vec::new()),
        }
    }

    /// Whether `payload` satisfies the filter.
    pub fn matches(&self, payload: &Map<String, Value>) -> bool {
        eval(&self.root, payload)
    }
}

fn eval(node: &Node, payload: &Map<String, Value>) -> bool {
    match node {
        Node::All(nodes) => nodes.iter().all(|n| eval(n, payload)),
        Node::Any(nodes) => nodes.iter().any(|n| eval(n, payload)),
        Node::Test { path, op, value } => test(lookup(payload, path), *op, value),
    }
}

/// The value at `path`, walking `&str` segments (no allocation).
fn lookup<'a>(payload: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let mut current = payload.get(segments.next()?)?;
    for segment in segments {
        current = match current {
            Value::Object(m) => m.get(segment)?,
            Value::Array(items) => {
                if !segment.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                items.get(segment.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(current)
}

fn test(found: Option<&Value>, op: Op, want: &Value) -> bool {
    let Some(v) = found else {
        return match op {
            Op::Ne | Op::Nin => true,
            Op::Exists => want == &Value::Bool(false),
            _ => false,
        };
    };
    match op {
        Op::Exists => want == &Value::Bool(true),
        Op::Eq => equal(v, want),
        Op::Ne => !equal(v, want),
        Op::In => want
            .as_array()
            .is_some_and(|xs| xs.iter().any(|x| equal(v, x))),
        Op::Nin => want
            .as_array()
            .is_some_and(|xs| !xs.iter().any(|x| equal(v, x))),
        Op::Gt => order(v, want) == Some(Ordering::Greater),
        Op::Gte => matches!(order(v, want), Some(Ordering::Greater | Ordering::Equal)),
        Op::Lt => order(v, want) == Some(Ordering::Less),
        Op::Lte => matches!(order(v, want), Some(Ordering::Less | Ordering::Equal)),
    }
}

/// Numbers by value: exactly as integers when both are, else as floats.
fn compare_numbers(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// Deep equality, numbers by value; no conversion between types.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| equal(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| equal(x, y)))
        }
        _ => a == b,
    }
}

/// Order between two numbers or two strings; none between other or different types.
fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload() -> Map<String, Value> {
        match json!({
            "type": "fraud_detected",
            "score": 85,
            "ratio": 0.25,
            "flag": true,
            "none": null,
            "name": "visitor-7",
            "decision": {"score": 85.0, "action": "block", "tags": ["bot", "vpn"]},
            "items": [{"id": "a1", "qty": 2}, {"id": "b2", "qty": 0}],
            "0": "zero-key",
            "big": 9007199254740993u64
        }) {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn check(filter: Value) -> bool {
        Filter::parse(&filter)
            .unwrap_or_else(|e| panic!("{filter}: {e:?}"))
            .matches(&payload())
    }

    /// (filter, expected): every operator, missing paths, type mismatches, arrays, nesting.
    #[test]
    fn truth_table() {
        let cases: Vec<(Value, bool)> = vec![
            // Bare values and $eq.
            (json!({"type": "fraud_detected"}), true),
            (json!({"type": "sale.created"}), false),
            (json!({"score": 85}), true),
            (json!({"score": 85.0}), true),
            (json!({"decision.score": 85}), true),
            (json!({"score": {"$eq": 85}}), true),
            (json!({"score": "85"}), false),
            (json!({"flag": 1}), false),
            (json!({"flag": true}), true),
            (json!({"none": null}), true),
            (json!({"missing": null}), false),
            (json!({"decision.tags": ["bot", "vpn"]}), true),
            (json!({"decision.tags": ["vpn", "bot"]}), false),
            (json!({"items.0": {"id": "a1", "qty": 2.0}}), true),
            (json!({"big": 9007199254740993u64}), true),
            (json!({"big": 9007199254740992u64}), false),
            // $ne.
            (json!({"score": {"$ne": 80}}), true),
            (json!({"score": {"$ne": 85.0}}), false),
            (json!({"missing": {"$ne": 1}}), true),
            (json!({"score": {"$ne": "85"}}), true),
            // Ordering.
            (json!({"score": {"$gt": 80}}), true),
            (json!({"score": {"$gt": 85}}), false),
            (json!({"score": {"$gte": 85.0}}), true),
            (json!({"ratio": {"$lt": 0.5}}), true),
            (json!({"ratio": {"$lte": 0.25}}), true),
            (json!({"ratio": {"$lt": 0.25}}), false),
            (json!({"score": {"$gt": "80"}}), false),
            (json!({"name": {"$gt": "visitor-1"}}), true),
            (json!({"name": {"$lt": 10}}), false),
            (json!({"flag": {"$gt": false}}), false),
            (json!({"none": {"$gte": null}}), false),
            (json!({"missing": {"$lt": 1}}), false),
            (json!({"score": {"$gt": 80, "$lt": 90}}), true),
            (json!({"score": {"$gt": 80, "$lt": 85}}), false),
            // $in / $nin.
            (json!({"decision.action": {"$in": ["block", "flag"]}}), true),
            (json!({"decision.action": {"$in": ["allow"]}}), false),
            (json!({"score": {"$in": [1, 85.0]}}), true),
            (json!({"score": {"$in": ["85"]}}), false),
            (json!({"missing": {"$in": [null]}}), false),
            (json!({"decision.action": {"$nin": ["allow"]}}), true),
            (json!({"decision.action": {"$nin": ["block"]}}), false),
            (json!({"missing": {"$nin": ["x"]}}), true),
            // $exists.
            (json!({"none": {"$exists": true}}), true),
            (json!({"missing": {"$exists": false}}), true),
            (json!({"missing": {"$exists": true}}), false),
            (json!({"score": {"$exists": false}}), false),
            // Paths through arrays and objects.
            (json!({"items.1.id": "b2"}), true),
            (json!({"items.2.id": {"$exists": false}}), true),
            (json!({"items.first.id": {"$exists": true}}), false),
            (json!({"decision.tags.0": "bot"}), true),
            (json!({"0": "zero-key"}), true),
            (json!({"score.x": {"$exists": false}}), true),
            (json!({"name.0": {"$exists": true}}), false),
            // Several keys: all must hold.
            (
                json!({"type": "fraud_detected", "score": {"$gte": 90}}),
                false,
            ),
            (json!({"type": "fraud_detected", "flag": true}), true),
            // $and / $or, nested.
            (
                json!({"$or": [{"score": {"$gt": 90}}, {"decision.action": "block"}]}),
                true,
            ),
            (
                json!({"$or": [{"score": {"$gt": 90}}, {"flag": false}]}),
                false,
            ),
            (
                json!({"$and": [{"score": {"$gt": 80}}, {"flag": true}]}),
                true,
            ),
            (
                json!({"$and": [{"score": {"$gt": 80}}, {"flag": false}]}),
                false,
            ),
            (
                json!({"$and": [{"$or": [{"missing": 1}, {"items.0.qty": {"$gte": 2}}]}, {"name": {"$nin": ["x"]}}]}),
                true,
            ),
            (
                json!({"$or": [{"$and": [{"score": 85}, {"flag": false}]}, {"$and": [{"ratio": 0.25}, {"none": {"$exists": false}}]}]}),
                false,
            ),
            (json!({}), true),
        ];
        assert!(cases.len() >= 40);
        for (filter, want) in cases {
            assert_eq!(check(filter.clone()), want, "{filter}");
        }
    }

    #[test]
    fn invalid_filters_name_the_path_inside_filter() {
        for (filter, path) in [
            (json!([1]), "filter"),
            (json!({"score": {"$gt": 1, "x": 2}}), "filter.score.x"),
            (
                json!({"score": {"$between": [1, 2]}}),
                "filter.score.$between",
            ),
            (json!({"score": {"$in": 3}}), "filter.score.$in"),
            (json!({"score": {"$exists": "yes"}}), "filter.score.$exists"),
            (json!({"$or": []}), "filter.$or"),
            (json!({"$or": {"a": 1}}), "filter.$or"),
            (json!({"$and": [{"a": 1}, 5]}), "filter.$and[1]"),
            (json!({"$not": [{"a": 1}]}), "filter.$not"),
            (json!({"a..b": 1}), "filter.a..b"),
            (
                json!({"$or": [{"$and": [{"x": {"$nin": true}}]}]}),
                "filter.$or[0].$and[0].x.$nin",
            ),
        ] {
            let e = Filter::parse(&filter).expect_err(&filter.to_string());
            assert_eq!(e.path, path, "{filter}: {e:?}");
        }
        let many: Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!(i))).collect();
        assert!(Filter::parse(&Value::Object(many)).is_err());
        let mut deep = json!({"a": 1});
        for _ in 0..10 {
            deep = json!({"$and": [deep]});
        }
        assert!(Filter::parse(&deep).is_err());
    }

    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "[a-c0-2$.]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c0-2$.]{0,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever the payload and whatever parses as a filter, evaluation returns.
        #[test]
        fn evaluation_never_panics(payload in arb_value(), filter in arb_value()) {
            if let (Value::Object(p), Ok(f)) = (&payload, Filter::parse(&filter)) {
                let _ = f.matches(p);
            }
        }
    }
}
