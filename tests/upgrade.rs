//! A data directory written by an older hookd, whose deliveries and attempts are JSON records
//! (`tests/fixtures/data-json-records.tar.gz`, made by `scripts/make-upgrade-fixture` with a
//! build of commit 0b51c11), opens, recovers and delivers with this build, and what this build
//! writes over the old records reads back after a restart.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn unpacked_fixture() -> tempfile::TempDir {
    let temp = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/data-json-records.tar.gz"
    );
    let status = std::process::Command::new("tar")
        .args(["-xzf", fixture, "-C"])
        .arg(temp.path())
        .status()
        .expect("tar");
    assert!(status.success(), "unpack {fixture}");
    temp
}

fn endpoint_of(h: &Hookd, tenant: &str) -> String {
    let (code, list) = h.get(&format!("/v1/endpoints?tenant={tenant}"));
    assert_eq!(code, 200, "{list}");
    let eps = list["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 1, "{list}");
    eps[0]["id"].as_str().unwrap().to_string()
}

fn attempt_codes(d: &Value) -> Vec<Option<u64>> {
    d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_u64())
        .collect()
}

fn by_event(history: &[Value]) -> std::collections::BTreeMap<String, Value> {
    history
        .iter()
        .map(|d| (d["event_id"].as_str().unwrap().to_string(), d.clone()))
        .collect()
}

#[test]
fn json_records_of_an_older_build_open_recover_and_deliver() {
    let rx = Receiver::start();
    // The fixture's events age with the calendar: a retention far longer than the test's
    // life keeps the start-up prune from removing its finished ones a week after it was made.
    let mut h = Hookd::start_on(
        unpacked_fixture(),
        &[
            ("HOOKD_OPERATOR__TENANT", ""),
            ("HOOKD_STORAGE__RETENTION", "36500days"),
        ],
    );
    let done = endpoint_of(&h, "fx-done");
    let wait = endpoint_of(&h, "fx-wait");

    // What the old build stored reads as it was written.
    let old_done = by_event(&h.history(&done, None));
    assert_eq!(
        old_done.keys().cloned().collect::<Vec<_>>(),
        ["fx-done-1", "fx-done-2", "fx-done-3"]
    );
    for d in old_done.values() {
        assert_eq!(d["status"], "succeeded", "{d}");
        assert_eq!(attempt_codes(d), [Some(200)], "{d}");
    }
    let old_wait = by_event(&h.history(&wait, None));
    assert_eq!(old_wait.len(), 6, "{old_wait:?}");
    assert!(old_wait.values().all(|d| d["status"] == "pending"));
    assert_eq!(attempt_codes(&old_wait["fx-wait-0"]), [Some(500)]);
    let (_, ep) = h.get(&format!("/v1/endpoints/{wait}"));
    assert_eq!(ep["status"], "paused", "{ep}");
    assert_eq!(ep["stats"]["pending"], 6, "{ep}");
    // Recovery counted the old pending deliveries.
    let depth: f64 = h
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("hookd_queue_depth{") && l.contains(&wait))
        .filter_map(|l| l.rsplit(" ").next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(depth, 6.0);
    // The old idempotency keys still hold.
    let (code, dup) = h.post(
        "/v1/events",
        json!({"id": "fx-done-1", "tenant": "fx-done", "type": "fraud_detected", "payload": {}}),
    );
    assert_eq!((code, &dup["duplicate"]), (200, &json!(true)), "{dup}");

    // Point both endpoints at a live receiver; bring the failed one forward (its old schedule
    // had it due an hour after the fixture was made: by now it may be due or not), then
    // resume. Retried while the endpoint is still paused, no attempt of it can be in flight.
    for ep in [&done, &wait] {
        let (code, body) = h.patch(&format!("/v1/endpoints/{ep}"), json!({"url": rx.url}));
        assert_eq!(code, 200, "{body}");
    }
    let failed_first = old_wait["fx-wait-0"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        h.post_empty(&format!("/v1/deliveries/{failed_first}/retry"))
            .0,
        202
    );
    assert_eq!(h.post_empty(&format!("/v1/endpoints/{wait}/resume")).0, 200);
    h.event(
        "fx-done",
        "fraud_detected",
        json!({"n": "after the upgrade"}),
    );
    rx.wait_count(7, Duration::from_secs(20));
    h.wait_all_delivered(&[&done, &wait], Duration::from_secs(20));

    let check = |h: &Hookd| {
        let wait_now = by_event(&h.history(&wait, None));
        assert_eq!(wait_now.len(), 6);
        for (event, d) in &wait_now {
            assert_eq!(d["status"], "succeeded", "{d}");
            let want: &[Option<u64>] = if event == "fx-wait-0" {
                &[Some(500), Some(200)]
            } else {
                &[Some(200)]
            };
            assert_eq!(attempt_codes(d), want, "{event}: {d}");
        }
        let done_now = h.history(&done, None);
        assert_eq!(done_now.len(), 4);
        for d in &done_now {
            assert_eq!(d["status"], "succeeded", "{d}");
            assert_eq!(attempt_codes(d), [Some(200)], "{d}");
        }
        let one = h.delivery(&failed_first);
        assert_eq!(attempt_codes(&one), [Some(500), Some(200)], "{one}");
    };
    check(&h);
    // Each request went out once, signed: nothing delivered twice.
    let mut ids: Vec<String> = rx.received().iter().map(|r| r.event_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7, "{ids:?}");

    // What this build wrote over the old records reads back after a crash.
    h.kill();
    h.start_again();
    check(&h);
    assert_eq!(rx.count(), 7, "nothing sent again after the restart");
}
