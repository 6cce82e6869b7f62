//! The operator's API against a real hookd and real receivers on 127.0.0.1: test sends, the
//! delivery history, recover, endpoint stats, Retry-After and circuit breaking.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn stats(h: &Hookd, id: &str) -> Value {
    let (status, ep) = h.get(&format!("/v1/endpoints/{id}"));
    assert_eq!(status, 200, "{ep}");
    ep["stats"].clone()
}

#[test]
fn test_send_goes_out_while_paused_answers_its_outcome_and_is_never_retried() {
    let h = Hookd::start(&[]);
    let rx = Receiver::start();
    let (id, secret) = h.endpoint(
        "t1",
        &rx.url,
        &["fraud_detected"],
        json!({"retry_schedule": ["1s"]}),
    );
    assert_eq!(h.post_empty(&format!("/v1/endpoints/{id}/pause")).0, 200);

    let (status, out) = h.post_empty(&format!("/v1/endpoints/{id}/test"));
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["success"], true);
    assert_eq!(out["status_code"], 200);
    assert_eq!(out["error"], Value::Null);
    assert_eq!(out["response_body"], "answered 200");
    assert!(out["duration_ms"].is_u64());
    assert_eq!(rx.count(), 1, "sent at once although paused");
    let got = &rx.received()[0];
    verify_signatures(got, &secret, "X-Webhook-Signature");
    assert_eq!(got.header("X-Webhook-Event"), Some("webhook.test"));
    let body = got.json();
    assert_eq!(body["event"], "webhook.test");
    assert_eq!(body["type"], "webhook.test");
    assert_eq!(body["test"], true);
    assert_eq!(body["endpoint_id"], id.as_str());
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["event", "type", "test", "endpoint_id", "timestamp"],
        "API.md's field order"
    );

    // Recorded like any delivery.
    let dlv = h.delivery(out["delivery_id"].as_str().unwrap());
    assert_eq!(dlv["status"], "succeeded");
    assert_eq!(dlv["endpoint_id"], id.as_str());
    assert_eq!(dlv["attempts"].as_array().unwrap().len(), 1);

    // A failing test is reported, stored as failed, and not retried on the 1 s schedule.
    rx.set_status(500);
    let (status, out) = h.post(
        &format!("/v1/endpoints/{id}/test"),
        json!({"type": "fraud_detected"}),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["success"], false);
    assert_eq!(out["status_code"], 500);
    assert_eq!(out["error"], "status 500");
    assert_eq!(rx.received()[1].json()["type"], "fraud_detected");
    std::thread::sleep(SECS(3));
    assert_eq!(rx.count(), 2, "a test is never retried");
    let failed_id = out["delivery_id"].as_str().unwrap();
    assert_eq!(h.delivery(failed_id)["status"], "failed");

    let (status, err) = h.post(&format!("/v1/endpoints/{id}/test"), json!({"type": "a b"}));
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("type"));
    let (status, err) = h.post(&format!("/v1/endpoints/{id}/test"), json!({"kind": "x"}));
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("kind"));
    let missing = "ep_01JAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(
        h.post_empty(&format!("/v1/endpoints/{missing}/test")).0,
        404
    );
    assert_eq!(rx.count(), 2, "bad requests send nothing");
}

#[test]
fn history_pages_newest_first_and_filters_by_status() {
    let h = Hookd::start(&[]);
    let ok = Receiver::start();
    let (id, _) = h.endpoint("t1", &ok.url, &["*"], json!({"retry_schedule": []}));
    let mut created = Vec::new();
    for i in 0..5 {
        let dlv = h.event_delivery("t1", "sale.created", json!({"n": i}));
        created.push(dlv);
        // Ids are time-ordered to the millisecond; keep them in distinct milliseconds.
        std::thread::sleep(Duration::from_millis(3));
    }
    ok.wait_count(5, SECS(10));
    ok.set_status(500);
    let failed = h.event_delivery("t1", "sale.created", json!({"n": 5}));
    h.wait_delivery_status(&failed, "failed", SECS(10));
    for d in &created {
        h.wait_delivery_status(d, "succeeded", SECS(10));
    }
    created.push(failed.clone());

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/v1/endpoints/{id}/deliveries?limit=2");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = h.get(&path);
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let items = page["deliveries"].as_array().unwrap();
        assert!(items.len() <= 2);
        for d in items {
            assert_eq!(d["endpoint_id"], id.as_str());
            assert!(d["attempts"].is_array());
            seen.push(d["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let (_, page) = h.get(&format!("/v1/endpoints/{id}/deliveries?status=failed"));
    let ids: Vec<&str> = page["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [failed.as_str()]);
    assert_eq!(page["deliveries"][0]["status"], "failed");
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = h.get(&format!(
        "/v1/endpoints/{id}/deliveries?status=succeeded&limit=50"
    ));
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 5);
    let (_, page) = h.get(&format!("/v1/endpoints/{id}/deliveries?status=pending"));
    assert_eq!(page["deliveries"], json!([]));

    for (query, field) in [
        ("status=lost", "status"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("limit=100000", "limit"),
        ("cursor=xyz", "cursor"),
        ("colour=red", "colour"),
    ] {
        let (status, err) = h.get(&format!("/v1/endpoints/{id}/deliveries?{query}"));
        assert_eq!(status, 400, "{query}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{query}: {message}");
    }
    let missing = "ep_01JAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(h.get(&format!("/v1/endpoints/{missing}/deliveries")).0, 404);
}

#[test]
fn recover_requeues_failed_deliveries_in_the_window_and_stats_count_them() {
    let mut h = Hookd::start(&[]);
    let rx = Receiver::with(500, &[], Duration::ZERO);
    let (id, _) = h.endpoint("t1", &rx.url, &["*"], json!({"retry_schedule": []}));
    let before = rfc3339_now(-60);
    let mut ids = Vec::new();
    for i in 0..3 {
        let ev = h.event("t1", "visitor.blocked", json!({"n": i}));
        ids.push(h.delivery_ids("t1", ev["id"].as_str().unwrap()).remove(0));
    }
    for d in &ids {
        h.wait_delivery_status(d, "failed", SECS(10));
    }
    let s = stats(&h, &id);
    assert_eq!(s["failed"], 3, "{s}");
    assert_eq!(s["succeeded"], 0);
    assert_eq!(s["consecutive_failures"], 3);
    assert_eq!(s["pending"], 0);
    assert_eq!(s["in_flight"], 0);
    assert_eq!(s["state"], "active");
    assert_eq!(s["last_success_at"], Value::Null);
    assert!(s["last_failure_at"].is_string());

    // A window that ends before they were created requeues nothing.
    let (status, out) = h.post(
        &format!("/v1/endpoints/{id}/recover"),
        json!({"since": rfc3339_now(-3600), "until": rfc3339_now(-1800)}),
    );
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["requeued"], 0);
    // A window that ends before it starts is empty: nothing is recovered.
    let (status, out) = h.post(
        &format!("/v1/endpoints/{id}/recover"),
        json!({"since": rfc3339_now(0), "until": rfc3339_now(-60)}),
    );
    assert_eq!((status, out["requeued"].as_u64()), (202, Some(0)), "{out}");
    for body in [
        json!({}),
        json!({"since": "yesterday"}),
        json!({"since": rfc3339_now(0), "colour": 1}),
    ] {
        let (status, err) = h.post(&format!("/v1/endpoints/{id}/recover"), body.clone());
        assert_eq!(status, 400, "{body}: {err}");
    }
    assert_eq!(rx.count(), 3, "nothing re-sent by the bad requests");

    rx.set_status(200);
    let (status, out) = h.post(
        &format!("/v1/endpoints/{id}/recover"),
        json!({"since": before}),
    );
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["requeued"], 3);
    for d in &ids {
        let dlv = h.wait_delivery_status(d, "succeeded", SECS(10));
        let attempts = dlv["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[1]["n"], 2);
    }
    assert_eq!(rx.count(), 6);
    let s = stats(&h, &id);
    assert_eq!(s["succeeded"], 3, "{s}");
    assert_eq!(s["failed"], 3, "ended failed once each before recovery");
    assert_eq!(s["consecutive_failures"], 0);
    assert!(s["last_success_at"].is_string());

    // Stats survive a restart.
    h.restart();
    let s = stats(&h, &id);
    assert_eq!(
        (s["succeeded"].clone(), s["failed"].clone()),
        (json!(3), json!(3))
    );
}

#[test]
fn retry_after_on_429_delays_the_next_attempt_at_least_that_long() {
    let h = Hookd::start(&[]);
    let rx = Receiver::with(200, &[429], Duration::ZERO);
    rx.set_retry_after(Some("3"));
    h.endpoint("t1", &rx.url, &["*"], json!({"retry_schedule": ["1s"]}));
    let id = h.event_delivery("t1", "sale.created", json!({}));
    let dlv = h.wait_delivery_status(&id, "succeeded", SECS(15));
    let got = rx.received();
    assert_eq!(got.len(), 2);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(2900) && gap < SECS(6),
        "second attempt {gap:?} after the 429, not the schedule's 1 s"
    );
    assert_eq!(dlv["attempts"][0]["status_code"], 429);
    assert_eq!(dlv["attempts"][0]["error"], "status 429");
}

/// 200 deliveries on a 1 s schedule to a dead receiver: the circuit opens after a few failures,
/// single probes follow, nothing burns its retries, and recovery drains the whole backlog.
#[test]
fn a_dead_endpoint_is_probed_not_hammered_and_its_backlog_drains_on_recovery() {
    let h = Hookd::start(&[]);
    let rx = Receiver::with(503, &[], Duration::ZERO);
    let (id, _) = h.endpoint(
        "t1",
        &rx.url,
        &["*"],
        json!({"retry_schedule": ["1s", "1s", "1s"]}),
    );
    let events: Vec<Value> = (0..200)
        .map(|i| json!({"tenant": "t1", "type": "fraud_detected", "payload": {"n": i}}))
        .collect();
    let started = Instant::now();
    let (status, res) = h.post("/v1/events/batch", json!({"events": events}));
    assert_eq!(status, 200, "{res}");

    std::thread::sleep(SECS(6).saturating_sub(started.elapsed()));
    let in_six_seconds = rx.count();
    eprintln!("requests to the dead endpoint in 6 s: {in_six_seconds}");
    assert!(
        in_six_seconds < 40,
        "{in_six_seconds} requests in 6 s to a dead endpoint"
    );
    let s = stats(&h, &id);
    assert_eq!(s["state"], "failing", "{s}");
    assert!(s["failing_since"].is_string());
    assert_eq!(s["failed"], 0, "held deliveries keep their retries: {s}");
    assert_eq!(s["pending"], 200);
    let metrics = h.metrics_text();
    assert!(
        metrics.contains(&format!(
            "hookd_endpoint_state{{endpoint=\"{id}\",state=\"failing\"}} 1"
        )),
        "failing in metrics"
    );
    let before_recovery = rx.count();

    rx.set_status(200);
    wait_until(SECS(60), "backlog drained", || {
        stats(&h, &id)["succeeded"] == 200
    });
    let s = stats(&h, &id);
    assert_eq!(s["state"], "active", "{s}");
    assert_eq!(s["failed"], 0);
    assert_eq!(s["pending"], 0);
    assert_eq!(s["consecutive_failures"], 0);
    let delivered: HashSet<String> = rx
        .received()
        .iter()
        .skip(before_recovery)
        .map(|r| r.event_id())
        .collect();
    assert_eq!(delivered.len(), 200, "every event arrived after recovery");
    assert!(h.log_text().contains("endpoint failing"));
    assert!(h.log_text().contains("endpoint recovered"));
}

#[test]
fn a_failing_endpoint_stays_failing_across_a_restart() {
    let mut h = Hookd::start(&[]);
    let rx = Receiver::with(500, &[], Duration::ZERO);
    let (id, _) = h.endpoint(
        "t1",
        &rx.url,
        &["*"],
        json!({"retry_schedule": ["1s", "1s", "1s", "1s", "1s", "1s"], "max_concurrency": 1}),
    );
    for i in 0..3 {
        h.event("t1", "sale.created", json!({"n": i}));
    }
    wait_until(SECS(20), "failing", || stats(&h, &id)["state"] == "failing");
    h.restart();
    let s = stats(&h, &id);
    assert_eq!(s["state"], "failing", "{s}");
    assert_eq!(s["pending"], 3);
    assert!(s["next_probe_at"].is_string(), "a probe is scheduled: {s}");
    // When that probe comes is the circuit's pure transition table, unit-tested with the
    // restore (src/dispatch/circuit.rs); here a test send's success closes the circuit rather
    // than waiting for the backed-off probe.
    rx.set_status(200);
    let (status, res) = h.post(&format!("/v1/endpoints/{id}/test"), json!({}));
    assert_eq!(
        (status, res["success"].as_bool()),
        (200, Some(true)),
        "{res}"
    );
    wait_until(SECS(10), "drained", || stats(&h, &id)["succeeded"] == 4);
    assert_eq!(stats(&h, &id)["state"], "active");
}

/// RFC 3339 for now + `offset_s`, as a client would write it.
fn rfc3339_now(offset_s: i64) -> String {
    let t = std::time::SystemTime::now()
        .checked_add(Duration::from_secs(offset_s.max(0) as u64))
        .unwrap()
        .checked_sub(Duration::from_secs((-offset_s).max(0) as u64))
        .unwrap();
    humantime::format_rfc3339_seconds(t).to_string()
}
