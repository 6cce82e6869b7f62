//! A backlog larger than an endpoint's in-memory window: it is counted whole, survives a kill
//! and a restart, and drains on resume with every event delivered exactly once.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const BACKLOG: usize = 20_000;

fn pending(h: &Hookd, id: &str) -> Value {
    h.get(&format!("/v1/endpoints/{id}")).1["stats"]["pending"].clone()
}

#[test]
fn a_paged_backlog_is_counted_survives_a_restart_and_drains_exactly_once() {
    let mut h = Hookd::start(&[]);
    let rx = Receiver::start();
    let (id, _) = h.endpoint("t1", &rx.url, &["*"], json!({"max_concurrency": 64}));
    assert_eq!(h.post_empty(&format!("/v1/endpoints/{id}/pause")).0, 200);
    for batch in 0..BACKLOG / 1000 {
        let events: Vec<Value> = (0..1000)
            .map(|i| {
                json!({"id": format!("e{}", batch * 1000 + i), "tenant": "t1", "type": "a",
                       "payload": {"n": batch * 1000 + i}})
            })
            .collect();
        let (status, res) = h.post("/v1/events/batch", json!({"events": events}));
        assert_eq!(status, 200, "{res}");
    }
    assert_eq!(pending(&h, &id), BACKLOG);

    // After a kill the restarted daemon counts the whole backlog, though it holds only a
    // window of it in memory.
    h.kill();
    h.restart();
    assert_eq!(pending(&h, &id), BACKLOG);
    let metrics = h.metrics_text();
    assert!(
        metrics.contains(&format!("hookd_queue_depth{{endpoint=\"{id}\"}} {BACKLOG}")),
        "queue depth counts the paged-out part"
    );
    assert_eq!(rx.count(), 0, "paused: nothing sent");

    assert_eq!(h.post_empty(&format!("/v1/endpoints/{id}/resume")).0, 200);
    // One more while the backlog drains.
    h.event("t1", "a", json!({"late": true}));
    rx.wait_count(BACKLOG + 1, Duration::from_secs(180));
    wait_until(Duration::from_secs(10), "queue empty", || {
        pending(&h, &id) == 0
    });
    std::thread::sleep(Duration::from_millis(500));
    let received = rx.received();
    let ids: HashSet<String> = received.iter().map(|r| r.event_id()).collect();
    assert_eq!(received.len(), BACKLOG + 1, "no event sent twice");
    assert_eq!(ids.len(), BACKLOG + 1);
    let (_, ep) = h.get(&format!("/v1/endpoints/{id}"));
    assert_eq!(ep["stats"]["succeeded"], BACKLOG + 1);
}

#[test]
fn deleting_an_endpoint_cancels_its_whole_backlog_paged_out_part_included() {
    let mut h = Hookd::start(&[]);
    let rx = Receiver::start();
    let (id, _) = h.endpoint("t1", &rx.url, &["*"], json!({}));
    assert_eq!(h.post_empty(&format!("/v1/endpoints/{id}/pause")).0, 200);
    let mut first = String::new();
    for batch in 0..BACKLOG / 1000 {
        let events: Vec<Value> = (0..1000)
            .map(|i| json!({"id": format!("d{}", batch * 1000 + i), "tenant": "t1", "type": "a", "payload": {}}))
            .collect();
        let (status, res) = h.post("/v1/events/batch", json!({"events": events}));
        assert_eq!(status, 200, "{res}");
        if batch == 0 {
            first = h.delivery_ids("t1", "d0").remove(0);
        }
    }
    let last = h.delivery_ids("t1", &format!("d{}", BACKLOG - 1)).remove(0);
    // Restarted, the daemon holds only a window of the backlog in memory.
    h.kill();
    h.restart();
    assert_eq!(h.delete(&format!("/v1/endpoints/{id}")).0, 204);
    for dlv in [&first, &last] {
        h.wait_delivery_status(dlv, "cancelled", Duration::from_secs(30));
    }
    let metrics = || h.metrics_text();
    wait_until(Duration::from_secs(30), "series removed", || {
        !metrics().contains(&id)
    });
    // Nothing pending is left behind: a restart finds no orphans to cancel.
    h.kill();
    h.restart();
    let logs = h.log_text();
    let recovery = logs
        .lines()
        .rfind(|l| l.contains("recovery finished"))
        .expect("recovery logged");
    assert!(
        recovery.contains("pending=0") && recovery.contains("cancelled_orphans=0"),
        "{recovery}"
    );
    assert_eq!(rx.count(), 0);
}
