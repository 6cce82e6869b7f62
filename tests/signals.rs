//! API.md §12 against the real binary: payload filters at fan-out.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// Five endpoints of one tenant with different filters: each event reaches exactly the ones
/// whose filter its payload matches, and `deliveries` counts only those.
#[test]
fn fan_out_delivers_exactly_to_the_endpoints_whose_filter_matches() {
    let h = Hookd::start(&[]);
    let filters = [
        json!({"score": {"$gte": 80}}),
        json!({"decision.action": {"$in": ["block", "flag"]}}),
        json!({"$or": [{"visitor.country": "FR"}, {"visitor.vpn": true}]}),
        json!({"missing": {"$exists": false}, "score": {"$lt": 50}}),
        json!({}),
    ];
    let receivers: Vec<Receiver> = filters.iter().map(|_| Receiver::start()).collect();
    let ids: Vec<String> = filters
        .iter()
        .zip(&receivers)
        .map(|(f, r)| h.endpoint("t", &r.url, &["*"], json!({"filter": f})).0)
        .collect();
    let (_, shown) = h.get(&format!("/v1/endpoints/{}", ids[0]));
    assert_eq!(shown["filter"], filters[0]);

    let events = [
        (
            json!({"score": 85.0, "decision": {"action": "block"}}),
            [true, true, false, false, true],
        ),
        (
            json!({"score": 20, "visitor": {"country": "FR"}}),
            [false, false, true, true, true],
        ),
        (
            json!({"score": "90", "visitor": {"vpn": 1}}),
            [false, false, false, false, true],
        ),
        (
            json!({"decision": {"action": "allow"}, "visitor": {"vpn": true}}),
            [false, false, true, false, true],
        ),
    ];
    let mut expected = [0usize; 5];
    for (payload, want) in &events {
        let res = h.event("t", "fraud_detected", payload.clone());
        let n = want.iter().filter(|w| **w).count();
        assert_eq!(res["deliveries"], n, "{payload}");
        for (i, w) in want.iter().enumerate() {
            expected[i] += usize::from(*w);
        }
    }
    for (i, r) in receivers.iter().enumerate() {
        r.wait_count(expected[i], Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let counts: Vec<usize> = receivers.iter().map(Receiver::count).collect();
    assert_eq!(counts, expected);
}

#[test]
fn invalid_filters_are_refused_naming_the_path_inside_filter() {
    let h = Hookd::start(&[]);
    let r = Receiver::start();
    for (filter, path) in [
        (
            json!({"score": {"$between": [1, 2]}}),
            "filter.score.$between",
        ),
        (
            json!({"$or": [{"a": 1}, {"b": {"$in": 3}}]}),
            "filter.$or[1].b.$in",
        ),
        (json!(["a"]), "filter"),
    ] {
        let (status, err) = h.post(
            "/v1/endpoints",
            json!({"tenant": "t", "url": r.url, "event_types": ["*"], "filter": filter}),
        );
        assert_eq!(status, 400, "{err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{path}:")), "{message}");
    }
    let (id, _) = h.endpoint("t", &r.url, &["*"], json!({}));
    let (status, err) = h.patch(
        &format!("/v1/endpoints/{id}"),
        json!({"filter": {"x": {"$gt": 1, "y": 2}}}),
    );
    assert_eq!(status, 400, "{err}");
    let (status, ep) = h.patch(&format!("/v1/endpoints/{id}"), json!({"filter": {"x": 1}}));
    assert_eq!((status, &ep["filter"]), (200, &json!({"x": 1})));
    assert_eq!(h.event("t", "a", json!({"x": 2}))["deliveries"], 0);
    assert_eq!(h.event("t", "a", json!({"x": 1.0}))["deliveries"], 1);
    let (status, ep) = h.patch(&format!("/v1/endpoints/{id}"), json!({"filter": null}));
    assert_eq!((status, &ep["filter"]), (200, &serde_json::Value::Null));
    assert_eq!(h.event("t", "a", json!({"x": 2}))["deliveries"], 1);
}

/// A receiver answering 410 Gone: one attempt, the endpoint paused with reason `gone`, the
/// delivery held (pending, its retry budget untouched); `resume` drains it.
#[test]
fn a_410_pauses_the_endpoint_after_one_attempt_and_resume_drains_it() {
    let h = Hookd::start(&[("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["100ms","100ms"]"#)]);
    let r = Receiver::with(410, &[], Duration::ZERO);
    let (id, _) = h.endpoint("t", &r.url, &["*"], json!({}));
    let delivery = h.event_delivery("t", "a", json!({"n": 1}));
    r.wait_count(1, Duration::from_secs(10));
    wait_until(Duration::from_secs(5), "paused", || {
        h.get(&format!("/v1/endpoints/{id}")).1["paused_reason"] == "gone"
    });
    let (_, ep) = h.get(&format!("/v1/endpoints/{id}"));
    assert_eq!(ep["status"], "paused");
    assert_eq!(ep["stats"]["state"], "paused");
    h.event("t", "a", json!({"n": 2}));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        r.count(),
        1,
        "exactly one attempt, then nothing while paused"
    );
    let d = h.delivery(&delivery);
    assert_eq!(d["status"], "pending");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(d["attempts"][0]["status_code"], 410);
    let metrics = h.metrics_text();
    assert!(
        metrics.contains(&format!(
            "hookd_endpoint_state{{endpoint=\"{id}\",reason=\"gone\",state=\"paused\"}} 1"
        )),
        "{metrics}"
    );

    r.set_status(200);
    let (status, ep) = h.post_empty(&format!("/v1/endpoints/{id}/resume"));
    assert_eq!(
        (status, &ep["paused_reason"]),
        (200, &serde_json::Value::Null)
    );
    h.wait_delivery_status(&delivery, "succeeded", Duration::from_secs(10));
    h.wait_all_delivered(&[&id], Duration::from_secs(10));
    assert_eq!(r.count(), 3);
    // An operator's pause says so.
    let (_, ep) = h.post_empty(&format!("/v1/endpoints/{id}/pause"));
    assert_eq!(ep["paused_reason"], "operator");
}

/// `delivery.pause_after`: an endpoint failing continuously that long is paused with reason
/// `failing_too_long`, and its deliveries are kept.
#[test]
fn an_endpoint_failing_longer_than_pause_after_is_paused_not_dropped() {
    let h = Hookd::start(&[
        ("HOOKD_DELIVERY__PAUSE_AFTER", "3s"),
        (
            "HOOKD_DELIVERY__RETRY_SCHEDULE",
            r#"["50ms","50ms","50ms","50ms","50ms","50ms","50ms","50ms","50ms","50ms","50ms","50ms"]"#,
        ),
    ]);
    let r = Receiver::with(503, &[], Duration::ZERO);
    let (id, _) = h.endpoint("t", &r.url, &["*"], json!({}));
    let delivery = h.event_delivery("t", "a", json!({}));
    wait_until(
        Duration::from_secs(20),
        "paused as failing too long",
        || h.get(&format!("/v1/endpoints/{id}")).1["paused_reason"] == "failing_too_long",
    );
    let attempts = r.count();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(r.count(), attempts, "no probes once paused");
    assert_eq!(h.delivery(&delivery)["status"], "pending");
    assert!(
        h.log_text().contains("reason=\"failing_too_long\"")
            || h.log_text().contains("reason=failing_too_long")
    );
}

/// `events.schemas` pointing at the repository's `schemas/`: the seeds' sample payloads are
/// accepted, a mutated one is refused with `400 schema_violation` naming the path, and in a
/// batch only that item fails. The catalogue lists each type with its schema.
#[test]
fn the_seeds_samples_pass_their_schemas_and_a_mutated_one_is_refused() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");
    let h = Hookd::start(&[("HOOKD_EVENTS__SCHEMAS", dir)]);
    let fraud = json!({
        "event": "fraud_detected", "timestamp": "2024-01-05T14:30:00Z",
        "property": {"id": "prop_abc123", "name": "My Landing Page"},
        "visitor": {"id": "vis_xyz789", "ip": "192.168.1.100", "country": "US", "userAgent": "Mozilla/5.0..."},
        "decision": {"score": 85, "label": "FRAUD", "action": "BLOCK", "reasons": [
            {"rule": "datacenter_ip", "score": 25}, {"rule": "rapid_clicks", "score": 30},
            {"rule": "honeypot", "score": 40}]}
    });
    let samples = [
        ("fraud_detected", fraud.clone()),
        (
            "high_risk_visitor",
            json!({"event": "high_risk_visitor", "timestamp": "2024-01-05T14:30:00Z",
            "property": {"id": "prop_abc123", "name": "My Landing Page"},
            "visitor": {"id": "vis_xyz789", "score": 55, "label": "SUSPICIOUS"}}),
        ),
        (
            "daily_summary",
            json!({"event": "daily_summary", "timestamp": "2024-01-05T00:00:00Z",
            "property": {"id": "prop_abc123", "name": "My Landing Page"},
            "summary": {"date": "2024-01-04", "totalVisitors": 1250, "cleanCount": 1180,
                "suspiciousCount": 45, "fraudCount": 25, "fraudRate": "2.0%",
                "topRules": [{"rule": "datacenter_ip", "count": 15}, {"rule": "vpn_detected", "count": 8}]}}),
        ),
        (
            "visitor.blocked",
            json!({"id": "evt_abc123", "type": "visitor.blocked",
            "timestamp": "2025-05-22T14:30:00Z", "site_id": "site_xyz",
            "data": {"visitor_ip": "203.0.113.42", "country": "CN", "rule_id": "rule_456",
                "action": "block", "reason": "Geo block: CN"}}),
        ),
        (
            "ban.created",
            json!({"id": "evt_b1", "type": "ban.created", "timestamp": "2025-05-22T14:30:00Z",
            "site_id": "site_xyz", "data": {}}),
        ),
        (
            "sale.created",
            json!({"type": "sale.created", "data": {"amount": 10}}),
        ),
        ("data.synced", json!({"type": "data.synced", "data": {}})),
    ];
    for (t, payload) in &samples {
        let (status, res) = h.post(
            "/v1/events",
            json!({"tenant": "t", "type": t, "payload": payload}),
        );
        assert_eq!(status, 202, "{t}: {res}");
    }
    let mut mutated = fraud.clone();
    mutated["decision"]["score"] = json!("85");
    let (status, res) = h.post(
        "/v1/events",
        json!({"tenant": "t", "type": "fraud_detected", "payload": mutated}),
    );
    assert_eq!(status, 400, "{res}");
    assert_eq!(res["error"]["code"], "schema_violation");
    assert!(
        res["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("payload.decision.score:"),
        "{res}"
    );
    let (status, res) = h.post(
        "/v1/events",
        json!({"tenant": "t", "type": "unknown.type", "payload": {}}),
    );
    assert_eq!(
        (status, res["error"]["code"].as_str()),
        (400, Some("unknown_event_type"))
    );

    let (status, res) = h.post(
        "/v1/events/batch",
        json!({"events": [
            {"tenant": "t", "type": "fraud_detected", "payload": fraud},
            {"tenant": "t", "type": "sale.created", "payload": {"type": "sale.created"}},
            {"tenant": "t", "type": "data.synced", "payload": {"type": "data.synced", "data": {}}},
        ]}),
    );
    assert_eq!(status, 200, "{res}");
    let results = res["results"].as_array().unwrap();
    assert_eq!(results[0]["duplicate"], false);
    assert_eq!(results[1]["error"]["code"], "schema_violation");
    assert!(
        results[1]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("events[1].payload"),
        "{res}"
    );
    assert_eq!(results[2]["duplicate"], false);

    let (status, types) = h.get("/v1/event-types");
    assert_eq!(status, 200);
    let listed = types["event_types"].as_array().unwrap();
    assert_eq!(listed.len(), 14);
    let fraud_type = listed
        .iter()
        .find(|t| t["type"] == "fraud_detected")
        .unwrap();
    assert_eq!(
        fraud_type["schema"]["properties"]["event"]["const"],
        "fraud_detected"
    );
}
