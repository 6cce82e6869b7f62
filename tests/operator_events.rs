//! Operator events (API.md §12): hookd's own transitions reach endpoints of the operator tenant
//! (`hookd`) through its pipeline, signed like every webhook, once each, across SIGKILLs.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::*;
use rand::Rng;
use serde_json::{json, Value};

const OPERATOR_TYPES: [&str; 5] = [
    "endpoint.failing",
    "endpoint.recovered",
    "endpoint.paused",
    "delivery.failed",
    "delivery.expired",
];

/// The operator events a receiver got, once per event id (a resend after a crash is the same
/// event): id → (type, payload).
fn operator_events(r: &Receiver) -> BTreeMap<String, (String, Value)> {
    r.received()
        .iter()
        .map(|got| {
            (
                got.event_id(),
                (
                    got.header("X-Webhook-Event")
                        .unwrap_or_default()
                        .to_string(),
                    got.json(),
                ),
            )
        })
        .collect()
}

fn of_type<'a>(events: &'a BTreeMap<String, (String, Value)>, t: &str) -> Vec<&'a Value> {
    events
        .values()
        .filter(|(ty, _)| ty == t)
        .map(|(_, p)| p)
        .collect()
}

/// An operator endpoint subscribed to every operator type; returns (receiver, id, secret).
fn operator_endpoint(h: &Hookd) -> (Receiver, String, String) {
    let r = Receiver::start();
    let (id, secret) = h.endpoint("hookd", &r.url, &OPERATOR_TYPES, json!({}));
    (r, id, secret)
}

#[test]
fn a_410_is_reported_once_as_endpoint_paused_and_signed() {
    let h = Hookd::start(&[("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["100ms"]"#)]);
    let (op, op_id, op_secret) = operator_endpoint(&h);
    let r = Receiver::with(410, &[], Duration::ZERO);
    let (id, _) = h.endpoint("t", &r.url, &["*"], json!({}));
    let delivery = h.event_delivery("t", "a", json!({"n": 1}));
    op.wait_count(1, Duration::from_secs(10));
    assert_eq!(r.count(), 1, "paused after exactly one attempt");
    let got = &op.received()[0];
    verify_signatures(got, &op_secret, "X-Webhook-Signature");
    assert_eq!(got.header("X-Webhook-Event"), Some("endpoint.paused"));
    assert!(got.event_id().starts_with("op_"), "{}", got.event_id());
    assert_eq!(
        got.json(),
        json!({"endpoint_id": id, "tenant": "t", "reason": "gone"})
    );
    // Stored like any event of the operator tenant.
    let (status, ev) = h.get(&format!("/v1/events/{}?tenant=hookd", got.event_id()));
    assert_eq!(status, 200, "{ev}");
    assert_eq!(ev["type"], "endpoint.paused");
    assert_eq!(ev["deliveries"][0]["endpoint_id"], op_id.as_str());

    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(op.count(), 1, "one transition, one event");
    r.set_status(200);
    h.post_empty(&format!("/v1/endpoints/{id}/resume"));
    h.wait_delivery_status(&delivery, "succeeded", Duration::from_secs(10));
    // An operator's pause is reported too, with its reason.
    h.post_empty(&format!("/v1/endpoints/{id}/pause"));
    op.wait_count(2, Duration::from_secs(10));
    let events = operator_events(&op);
    let reasons: Vec<&Value> = of_type(&events, "endpoint.paused")
        .iter()
        .map(|p| &p["reason"])
        .collect();
    assert_eq!(reasons.len(), 2, "{events:?}");
    assert!(reasons.contains(&&json!("operator")), "{events:?}");
}

#[test]
fn failing_too_long_is_reported_with_failing_then_paused() {
    let h = Hookd::start(&[
        ("HOOKD_DELIVERY__PAUSE_AFTER", "3s"),
        (
            "HOOKD_DELIVERY__RETRY_SCHEDULE",
            r#"["50ms","50ms","50ms","50ms","50ms","50ms","50ms","50ms","50ms","50ms"]"#,
        ),
    ]);
    let (op, _, _) = operator_endpoint(&h);
    let r = Receiver::with(503, &[], Duration::ZERO);
    let (id, _) = h.endpoint("t", &r.url, &["*"], json!({}));
    h.event("t", "a", json!({}));
    op.wait_count(2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    let events = operator_events(&op);
    assert_eq!(events.len(), 2, "{events:?}");
    let failing = of_type(&events, "endpoint.failing");
    assert_eq!(failing.len(), 1, "{events:?}");
    assert_eq!(failing[0]["endpoint_id"], id.as_str());
    assert_eq!(failing[0]["tenant"], "t");
    assert_eq!(failing[0]["consecutive_failures"], 5);
    assert_eq!(failing[0]["last_error"], "status 503");
    assert!(failing[0]["since"].as_str().unwrap().ends_with('Z'));
    let paused = of_type(&events, "endpoint.paused");
    assert_eq!(
        paused,
        [&json!({"endpoint_id": id, "tenant": "t", "reason": "failing_too_long"})]
    );
}

#[test]
fn a_receiver_down_and_back_is_failing_then_recovered_and_exhausted_deliveries_fail() {
    let h = Hookd::start(&[("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["50ms"]"#)]);
    let (op, _, _) = operator_endpoint(&h);
    let r = Receiver::with(500, &[], Duration::ZERO);
    let (id, _) = h.endpoint("t", &r.url, &["*"], json!({}));
    // Three deliveries, two attempts each: the first exhaust the schedule, five failures in
    // a row open the circuit.
    let deliveries: Vec<String> = (0..3)
        .map(|i| h.event_delivery("t", "a", json!({"i": i})))
        .collect();
    wait_until(Duration::from_secs(10), "endpoint.failing", || {
        !of_type(&operator_events(&op), "endpoint.failing").is_empty()
    });
    r.set_status(200);
    h.event("t", "a", json!({"probe": true}));
    wait_until(Duration::from_secs(15), "endpoint.recovered", || {
        !of_type(&operator_events(&op), "endpoint.recovered").is_empty()
    });
    h.wait_all_delivered(&[&id], Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    let events = operator_events(&op);
    let failing = of_type(&events, "endpoint.failing");
    let recovered = of_type(&events, "endpoint.recovered");
    assert_eq!((failing.len(), recovered.len()), (1, 1), "{events:?}");
    assert_eq!(recovered[0]["failing_since"], failing[0]["since"]);
    assert_eq!(recovered[0]["endpoint_id"], id.as_str());
    assert!(
        recovered[0]["recovered_at"].as_str().unwrap() >= failing[0]["since"].as_str().unwrap()
    );

    let failed: HashSet<String> = h
        .history(&id, Some("failed"))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !failed.is_empty(),
        "some deliveries exhausted their schedule"
    );
    let reported: Vec<&Value> = of_type(&events, "delivery.failed");
    let reported_ids: HashSet<String> = reported
        .iter()
        .map(|p| p["delivery_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        reported_ids, failed,
        "one delivery.failed per failed delivery"
    );
    assert_eq!(reported.len(), failed.len());
    let one = reported[0];
    assert!(deliveries.contains(&one["delivery_id"].as_str().unwrap().to_string()));
    assert_eq!(one["endpoint_id"], id.as_str());
    assert_eq!(one["tenant"], "t");
    assert_eq!(one["attempts"], 2);
    assert_eq!(one["last_error"], "status 500");
    assert!(one["event_id"].as_str().unwrap().starts_with("evt_"));
}

/// Expiry is reported; endpoints of the operator tenant report nothing about themselves.
#[test]
fn expiry_is_reported_and_the_operator_tenant_is_silent_about_itself() {
    let h = Hookd::start(&[("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["2s","2s"]"#)]);
    let (op, _, _) = operator_endpoint(&h);
    // A broken pager: its own failures must not page.
    let dead = Receiver::with(500, &[], Duration::ZERO);
    h.endpoint("hookd", &dead.url, &OPERATOR_TYPES, json!({}));
    let r = Receiver::with(500, &[], Duration::ZERO);
    let (id, _) = h.endpoint("t", &r.url, &["*"], json!({"ttl": "1s"}));
    let delivery = h.event_delivery("t", "a", json!({}));
    h.wait_delivery_status(&delivery, "expired", Duration::from_secs(10));
    op.wait_count(1, Duration::from_secs(10));
    // The first attempt fails and the retry would come after the deadline. The dead pager
    // fails its delivery of that event for good (two retries of 2 s).
    dead.wait_count(3, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(1500));
    let events = operator_events(&op);
    assert_eq!(events.len(), 1, "{events:?}");
    let (ty, payload) = events.values().next().unwrap();
    assert_eq!(ty, "delivery.expired");
    assert_eq!(
        payload,
        &json!({
            "delivery_id": delivery,
            "event_id": h.delivery(&delivery)["event_id"],
            "endpoint_id": id,
            "tenant": "t"
        })
    );
}

/// `[operator] tenant = ""`: no operator events at all.
#[test]
fn an_empty_operator_tenant_turns_them_off() {
    let h = Hookd::start(&[("HOOKD_OPERATOR__TENANT", "")]);
    let (op, _, _) = operator_endpoint(&h);
    let r = Receiver::with(410, &[], Duration::ZERO);
    let (id, _) = h.endpoint("t", &r.url, &["*"], json!({}));
    h.event("t", "a", json!({}));
    wait_until(Duration::from_secs(10), "paused", || {
        h.get(&format!("/v1/endpoints/{id}")).1["paused_reason"] == "gone"
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(op.count(), 0);
}

/// SIGKILL at a random instant while endpoints fail, pause, recover and deliveries fail for
/// good, 20 times over one data directory. Afterwards every stored transition has exactly one
/// event: failing and recovered alternate with matching times, each failed delivery has one
/// delivery.failed, each stored pause one endpoint.paused.
#[test]
fn sigkill_during_transitions_neither_loses_nor_repeats_an_operator_event() {
    // With the failpoints, each event reaches ingest 300 ms after its transition is stored,
    // so many kills land in between: only the outbox written with the transition brings
    // those events back.
    let mut h = Hookd::start(&[
        ("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["20ms"]"#),
        ("FAILPOINT_RELAY_DELAY_MS", "300"),
    ]);
    let (op, op_id, _) = operator_endpoint(&h);
    let r = Receiver::with(503, &[], Duration::ZERO);
    // One at a time, two attempts each: some deliveries fail for good before the fifth
    // failure in a row opens the circuit.
    let (id, _) = h.endpoint("t", &r.url, &["*"], json!({"max_concurrency": 1}));
    let mut rng = rand::thread_rng();
    let mut pauses_stored = 0;
    for round in 0..20 {
        // Odd rounds: the receiver says 410 (a pause); even ones: it is down (failing, and
        // deliveries exhaust their schedule).
        let gone = round % 2 == 1;
        r.set_status(if gone { 410 } else { 503 });
        for i in 0..4 {
            h.event("t", "a", json!({"round": round, "i": i}));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..600)));
        h.kill();
        r.set_status(200);
        h.start_again();
        let (_, ep) = h.get(&format!("/v1/endpoints/{id}"));
        if ep["status"] == "paused" {
            assert_eq!(ep["paused_reason"], "gone", "round {round}: {ep}");
            pauses_stored += 1;
            let (status, _) = h.post_empty(&format!("/v1/endpoints/{id}/resume"));
            assert_eq!(status, 200);
        }
        // A probe closes the circuit if it is open; then everything drains.
        h.event("t", "a", json!({"round": round, "probe": true}));
        h.wait_all_delivered(&[&id], Duration::from_secs(30));
    }
    // What the last start replays from the outbox, and its deliveries.
    std::thread::sleep(Duration::from_millis(1000));
    h.wait_all_delivered(&[&id, &op_id], Duration::from_secs(30));
    let events = operator_events(&op);

    // Failing and recovered alternate, each recovered naming the failing it ends.
    let mut circuit: Vec<(String, &str, String)> = Vec::new();
    for p in of_type(&events, "endpoint.failing") {
        circuit.push((
            p["since"].as_str().unwrap().into(),
            "failing",
            p["since"].as_str().unwrap().into(),
        ));
    }
    for p in of_type(&events, "endpoint.recovered") {
        circuit.push((
            p["recovered_at"].as_str().unwrap().into(),
            "recovered",
            p["failing_since"].as_str().unwrap().into(),
        ));
    }
    circuit.sort();
    assert!(!circuit.is_empty(), "the endpoint failed at least once");
    for (i, pair) in circuit.chunks(2).enumerate() {
        assert!(
            pair.len() == 2
                && pair[0].1 == "failing"
                && pair[1].1 == "recovered"
                && pair[0].2 == pair[1].2,
            "transition {i}: {pair:?} in {circuit:?}"
        );
    }
    let (_, ep) = h.get(&format!("/v1/endpoints/{id}"));
    assert_eq!(ep["stats"]["state"], "active", "{ep}");

    // One delivery.failed per stored failed delivery, none for any other.
    let failed: HashSet<String> = h
        .history(&id, Some("failed"))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    let mut per_delivery: HashMap<String, usize> = HashMap::new();
    for p in of_type(&events, "delivery.failed") {
        *per_delivery
            .entry(p["delivery_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(per_delivery.values().all(|&n| n == 1), "{per_delivery:?}");
    assert_eq!(
        per_delivery.keys().cloned().collect::<HashSet<_>>(),
        failed,
        "delivery.failed for exactly the failed deliveries"
    );

    // One endpoint.paused per pause that was stored.
    let paused = of_type(&events, "endpoint.paused");
    assert_eq!(paused.len(), pauses_stored, "{paused:?}");
    assert!(paused.iter().all(|p| p["reason"] == "gone"));
    eprintln!(
        "20 rounds: {} failing/recovered pairs, {} failed deliveries, {} pauses",
        circuit.len() / 2,
        failed.len(),
        pauses_stored
    );
}
