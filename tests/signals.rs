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
