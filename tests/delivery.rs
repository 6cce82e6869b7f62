//! Delivery behaviour against a real hookd and real receivers on 127.0.0.1.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::json;

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn fan_out_by_type_and_tenant_signed_both_ways() {
    let h = Hookd::start(&[]);
    let typed = Receiver::start();
    let wildcard = Receiver::start();
    let other_type = Receiver::start();
    let other_tenant = Receiver::start();
    let (_, typed_secret) = h.endpoint("t1", &typed.url, &["fraud_detected"], json!({}));
    let (_, wild_secret) = h.endpoint(
        "t1",
        &wildcard.url,
        &["*"],
        json!({"signature_header": "X-ClickDefender-Signature", "headers": {"X-Team": "risk"}}),
    );
    h.endpoint("t1", &other_type.url, &["sale.created"], json!({}));
    h.endpoint("t2", &other_tenant.url, &["*"], json!({}));

    let payload = json!({"event": "fraud_detected", "score": 85.0, "big": 1e21,
                         "name": "Café Zürich — 東京", "nested": {"b": 1, "a": [1.5, true, null]}});
    let res = h.event("t1", "fraud_detected", payload);
    assert_eq!(res["deliveries"], 2);
    assert_eq!(res["duplicate"], false);
    let id = res["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("evt_"));

    typed.wait_count(1, SECS(10));
    wildcard.wait_count(1, SECS(10));
    let expected_body = r#"{"event":"fraud_detected","score":85,"big":1e+21,"name":"Café Zürich — 東京","nested":{"b":1,"a":[1.5,true,null]}}"#;
    for (r, secret, header) in [
        (&typed, &typed_secret, "X-Webhook-Signature"),
        (&wildcard, &wild_secret, "X-ClickDefender-Signature"),
    ] {
        let got = &r.received()[0];
        assert_eq!(String::from_utf8_lossy(&got.body), expected_body);
        verify_signatures(got, secret, header);
        assert_eq!(got.header("X-Webhook-Id"), Some(id.as_str()));
        assert_eq!(got.header("webhook-id"), Some(id.as_str()));
        assert_eq!(got.header("X-Webhook-Event"), Some("fraud_detected"));
        assert_eq!(got.header("X-Webhook-Attempt"), Some("1"));
        assert_eq!(got.header("Content-Type"), Some("application/json"));
        assert!(got.header("User-Agent").unwrap().starts_with("hookd/"));
    }
    assert_eq!(wildcard.received()[0].header("X-Team"), Some("risk"));
    assert_eq!(wildcard.received()[0].header("X-Webhook-Signature"), None);

    // Both deliveries are recorded as succeeded.
    for d in h.delivery_ids("t1", &id) {
        let d = h.wait_delivery_status(&d, "succeeded", SECS(10));
        assert_eq!(d["attempts"].as_array().unwrap().len(), 1);
        assert_eq!(d["attempts"][0]["status_code"], 200);
    }
    // Neither the other type nor the other tenant got anything.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(other_type.count(), 0);
    assert_eq!(other_tenant.count(), 0);
}

#[test]
fn duplicate_id_is_acknowledged_and_not_resent() {
    let h = Hookd::start(&[]);
    let r = Receiver::start();
    h.endpoint("t1", &r.url, &["*"], json!({}));
    let ev = json!({"id": "evt_same", "tenant": "t1", "type": "a", "payload": {"n": 1}});
    let (s1, b1) = h.post("/v1/events", ev.clone());
    assert_eq!(
        (s1, &b1["duplicate"], &b1["deliveries"]),
        (202, &json!(false), &json!(1))
    );
    let (s2, b2) = h.post("/v1/events", ev);
    assert_eq!(s2, 200, "{b2}");
    assert_eq!(
        b2,
        json!({"id": "evt_same", "deliveries": 1, "duplicate": true})
    );
    // The same id under another tenant is a different event.
    let (s3, b3) = h.post(
        "/v1/events",
        json!({"id": "evt_same", "tenant": "t2", "type": "a", "payload": {}}),
    );
    assert_eq!((s3, &b3["duplicate"]), (202, &json!(false)));
    r.wait_count(1, SECS(10));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(r.count(), 1);
}

#[test]
fn batch_of_200_is_stored_and_delivered() {
    let h = Hookd::start(&[]);
    let r = Receiver::start();
    h.endpoint("t1", &r.url, &["*"], json!({}));
    let events: Vec<_> = (0..200)
        .map(|i| json!({"id": format!("b{i}"), "tenant": "t1", "type": "a", "payload": {"i": i}}))
        .collect();
    let (status, res) = h.request(
        reqwest::Method::POST,
        "/v1/events/batch",
        Some(INGEST),
        Some(&json!({ "events": events })),
    );
    assert_eq!(status, 200, "{res}");
    let results = res["results"].as_array().unwrap();
    assert_eq!(results.len(), 200);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["id"], format!("b{i}"));
        assert_eq!(r["deliveries"], 1);
        assert_eq!(r["duplicate"], false);
    }
    r.wait_count(200, SECS(20));
    let ids: HashSet<String> = r.received().iter().map(|x| x.event_id()).collect();
    assert_eq!(ids.len(), 200);
}

#[test]
fn batch_reports_bad_items_and_stores_the_good_ones() {
    let h = Hookd::start(&[]);
    let r = Receiver::start();
    h.endpoint("t1", &r.url, &["*"], json!({}));
    let (status, res) = h.post(
        "/v1/events/batch",
        json!({"events": [
            {"id": "ok1", "tenant": "t1", "type": "a", "payload": {}},
            {"id": "bad", "tenant": "t1", "type": "a b", "payload": {}},
            {"tenant": "t1", "type": "a"},
            {"id": "ok1", "tenant": "t1", "type": "a", "payload": {}},
        ]}),
    );
    assert_eq!(status, 200, "{res}");
    let results = res["results"].as_array().unwrap();
    assert_eq!(results[0]["duplicate"], false);
    assert!(results[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("events[1].type"));
    assert!(results[2]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("payload"));
    assert_eq!(results[3]["duplicate"], true);
    r.wait_count(1, SECS(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(r.count(), 1);
    assert_eq!(h.get("/v1/events/bad?tenant=t1").0, 404);
}

#[test]
fn failing_then_succeeding_receiver_is_retried_on_schedule() {
    let h = Hookd::start(&[]);
    let r = Receiver::with(200, &[500, 500], Duration::ZERO);
    h.endpoint(
        "t1",
        &r.url,
        &["*"],
        json!({"retry_schedule": ["1s", "2s"]}),
    );
    let id = h.event("t1", "a", json!({"amount": 49.5}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    r.wait_count(3, SECS(15));
    let got = r.received();
    let attempts: Vec<_> = got
        .iter()
        .map(|x| x.header("X-Webhook-Attempt").unwrap())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(
        got.iter().all(|x| x.body == got[0].body),
        "byte-identical bodies"
    );
    let gap1 = got[1].at - got[0].at;
    let gap2 = got[2].at - got[1].at;
    assert!(
        gap1 >= Duration::from_millis(950) && gap1 < Duration::from_millis(1900),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(1950) && gap2 < Duration::from_millis(2900),
        "{gap2:?}"
    );
    let dlv = &h.delivery_ids("t1", &id)[0];
    let d = h.wait_delivery_status(dlv, "succeeded", SECS(5));
    let a = d["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(a[0]["error"], "status 500");
    assert_eq!(a[0]["response_body"], "answered 500");
    assert_eq!(a[2]["status_code"], 200);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(r.count(), 3);
}

#[test]
fn exhausted_schedule_fails_the_delivery_and_retry_sends_again() {
    let h = Hookd::start(&[("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["1s","1s"]"#)]);
    let r = Receiver::with(500, &[], Duration::ZERO);
    h.endpoint("t1", &r.url, &["*"], json!({}));
    let dlv = h.event_delivery("t1", "a", json!({}));
    let d = h.wait_delivery_status(&dlv, "failed", SECS(15));
    assert_eq!(d["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(d["next_attempt_at"], serde_json::Value::Null);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(r.count(), 3, "nothing more is sent once failed");

    let (status, res) = h.post_empty(&format!("/v1/deliveries/{dlv}/retry"));
    assert_eq!(status, 202, "{res}");
    r.wait_count(4, SECS(5));
    assert_eq!(r.received()[3].header("X-Webhook-Attempt"), Some("4"));
    // A fresh schedule: two more retries, then failed again.
    let d = h.wait_delivery_status(&dlv, "failed", SECS(15));
    assert_eq!(d["attempts"].as_array().unwrap().len(), 6);
    assert_eq!(r.count(), 6);

    // A succeeded delivery is not retryable.
    r.set_status(200);
    let dlv2 = h.event_delivery("t1", "a", json!({}));
    h.wait_delivery_status(&dlv2, "succeeded", SECS(10));
    let (status, res) = h.post_empty(&format!("/v1/deliveries/{dlv2}/retry"));
    assert_eq!(status, 409, "{res}");
    assert_eq!(res["error"]["code"], "not_retryable");
}

#[test]
fn max_concurrency_is_never_exceeded() {
    let h = Hookd::start(&[]);
    let r = Receiver::with(200, &[], Duration::from_millis(300));
    h.endpoint("t1", &r.url, &["*"], json!({"max_concurrency": 2}));
    for i in 0..10 {
        h.event("t1", "a", json!({"i": i}));
    }
    r.wait_count(10, SECS(20));
    assert_eq!(r.max_concurrent(), 2);
}

#[test]
fn a_slow_endpoint_does_not_delay_another() {
    let h = Hookd::start(&[]);
    let slow = Receiver::with(200, &[], Duration::from_secs(4));
    let fast = Receiver::start();
    h.endpoint("t1", &slow.url, &["*"], json!({"max_concurrency": 1}));
    h.endpoint("t1", &fast.url, &["*"], json!({}));
    let started = std::time::Instant::now();
    for i in 0..20 {
        h.event("t1", "a", json!({"i": i}));
    }
    fast.wait_count(20, SECS(10));
    // The slow endpoint is still on its first request when the fast one has everything.
    assert!(started.elapsed() < SECS(4), "{:?}", started.elapsed());
    assert_eq!(slow.count(), 1);
}

#[test]
fn pause_holds_everything_and_resume_drains() {
    let h = Hookd::start(&[]);
    let r = Receiver::start();
    let (ep, _) = h.endpoint("t1", &r.url, &["*"], json!({}));
    let (status, body) = h.post_empty(&format!("/v1/endpoints/{ep}/pause"));
    assert_eq!((status, &body["status"]), (200, &json!("paused")));
    let mut ids = Vec::new();
    for i in 0..5 {
        let res = h.event("t1", "a", json!({"i": i}));
        assert_eq!(
            res["deliveries"], 1,
            "a paused endpoint still gets deliveries"
        );
        ids.push(res["id"].as_str().unwrap().to_string());
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(r.count(), 0);
    let dlv = h.delivery_ids("t1", &ids[0])[0].clone();
    assert_eq!(h.delivery(&dlv)["status"], "pending");
    assert_eq!(h.get(&format!("/v1/endpoints/{ep}")).1["status"], "paused");

    let (status, body) = h.post_empty(&format!("/v1/endpoints/{ep}/resume"));
    assert_eq!((status, &body["status"]), (200, &json!("active")));
    r.wait_count(5, SECS(10));
    let got: HashSet<String> = r.received().iter().map(|x| x.event_id()).collect();
    assert_eq!(got, ids.into_iter().collect());
}

#[test]
fn pause_survives_a_restart() {
    let mut h = Hookd::start(&[]);
    let r = Receiver::start();
    let (ep, _) = h.endpoint("t1", &r.url, &["*"], json!({}));
    h.post_empty(&format!("/v1/endpoints/{ep}/pause"));
    h.event("t1", "a", json!({}));
    h.restart();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(r.count(), 0);
    h.post_empty(&format!("/v1/endpoints/{ep}/resume"));
    r.wait_count(1, SECS(10));
}

#[test]
fn delete_cancels_pending_deliveries() {
    let h = Hookd::start(&[]);
    let r = Receiver::start();
    let (ep, _) = h.endpoint("t1", &r.url, &["*"], json!({}));
    h.post_empty(&format!("/v1/endpoints/{ep}/pause"));
    let ids: Vec<String> = (0..3)
        .map(|_| {
            h.event("t1", "a", json!({}))["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let dlvs: Vec<String> = ids
        .iter()
        .map(|id| h.delivery_ids("t1", id)[0].clone())
        .collect();
    let (status, _) = h.delete(&format!("/v1/endpoints/{ep}"));
    assert_eq!(status, 204);
    for d in &dlvs {
        h.wait_delivery_status(d, "cancelled", SECS(5));
    }
    assert_eq!(h.get(&format!("/v1/endpoints/{ep}")).0, 404);
    assert_eq!(h.delete(&format!("/v1/endpoints/{ep}")).0, 404);
    // A new event for the tenant goes nowhere.
    assert_eq!(h.event("t1", "a", json!({}))["deliveries"], 0);
    let (status, res) = h.post_empty(&format!("/v1/deliveries/{}/retry", dlvs[0]));
    assert_eq!(status, 409, "{res}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.count(), 0);
}

#[test]
fn patch_changes_settings_and_routing() {
    let h = Hookd::start(&[]);
    let r = Receiver::start();
    let (ep, _) = h.endpoint("t1", &r.url, &["a"], json!({"description": "CRM"}));
    let (status, body) = h.patch(
        &format!("/v1/endpoints/{ep}"),
        json!({"event_types": ["b"], "max_concurrency": 3, "timeout": "5s"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event_types"], json!(["b"]));
    assert_eq!(body["max_concurrency"], 3);
    assert_eq!(body["timeout"], "5s");
    assert_eq!(body["description"], "CRM");
    assert!(body.get("secret").is_none());
    assert_eq!(h.event("t1", "a", json!({}))["deliveries"], 0);
    assert_eq!(h.event("t1", "b", json!({}))["deliveries"], 1);
    r.wait_count(1, SECS(10));
    let (status, body) = h.patch(&format!("/v1/endpoints/{ep}"), json!({"tenant": "t9"}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = h.patch(
        &format!("/v1/endpoints/{ep}"),
        json!({"max_concurrency": 0}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_concurrency"));
    assert_eq!(
        h.get(&format!("/v1/endpoints/{ep}")).1["max_concurrency"],
        3
    );
}

#[test]
fn rotated_secret_signs_alongside_the_old_one_during_the_overlap() {
    let h = Hookd::start(&[]);
    let r = Receiver::start();
    let (ep, old) = h.endpoint("t1", &r.url, &["*"], json!({}));
    let (status, body) = h.post_empty(&format!("/v1/endpoints/{ep}/rotate-secret"));
    assert_eq!(status, 200, "{body}");
    let new = body["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_") && new != old);
    assert!(!h
        .get(&format!("/v1/endpoints/{ep}"))
        .1
        .to_string()
        .contains(&new));
    h.event("t1", "a", json!({}));
    r.wait_count(1, SECS(10));
    let got = &r.received()[0];
    // The hex header uses the new secret; webhook-signature carries both.
    verify_signatures(got, &new, "X-Webhook-Signature");
    assert_eq!(
        got.header("webhook-signature").unwrap().split(' ').count(),
        2
    );
    let mut with_old = got.clone();
    with_old
        .headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("X-Webhook-Signature"));
    let hex_old = {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(old.as_bytes()).unwrap();
        m.update(&got.body);
        hex::encode(m.finalize().into_bytes())
    };
    with_old
        .headers
        .push(("X-Webhook-Signature".into(), hex_old));
    verify_signatures(&with_old, &old, "X-Webhook-Signature");
}
