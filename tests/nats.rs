//! `[source.nats]` against a real `nats-server -js` on a loopback port (API.md §15): messages
//! acknowledged only once stored, so that SIGKILLs lose nothing and store nothing twice;
//! invalid messages terminated and counted; the HTTP API unaffected by the broker's outage.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::nats::{Js, NatsServer};
use common::*;
use serde_json::{json, Value};

const STREAM: &str = "EVENTS";
const DURABLE: &str = "hookd";

fn source_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HOOKD_SOURCE__NATS__URL", url.to_string()),
        ("HOOKD_SOURCE__NATS__STREAM", STREAM.to_string()),
        ("HOOKD_SOURCE__NATS__SUBJECT", "events.>".to_string()),
        ("HOOKD_SOURCE__NATS__DURABLE", DURABLE.to_string()),
        // Short, so that what a killed hookd had pulled comes back within the test.
        ("HOOKD_SOURCE__NATS__ACK_WAIT", "2s".to_string()),
    ]
}

fn start_hookd(url: &str, store_delay_ms: Option<u32>) -> Hookd {
    let mut env = source_env(url);
    if let Some(ms) = store_delay_ms {
        env.push(("FAILPOINT_SOURCE_STORE_DELAY_MS", ms.to_string()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Hookd::start(&env)
}

fn ingested(h: &Hookd) -> f64 {
    metric_value(
        &h.metrics_text(),
        "hookd_events_ingested_total",
        "fraud_detected",
    )
    .unwrap_or(0.0)
}

/// SIGKILLs hookd once this life of it has stored `after` events, while it is still taking
/// messages; returns the messages it had pulled and not acknowledged (JetStream's count).
fn kill_while_consuming(h: &mut Hookd, js: &Js, after: f64) -> usize {
    wait_until(Duration::from_secs(60), "events stored from nats", || {
        ingested(h) >= after
    });
    h.kill();
    js.consumer_counts(STREAM, DURABLE)
        .map(|(_, ack_pending, _)| ack_pending)
        .unwrap_or(0)
}

fn valid(n: usize) -> Vec<u8> {
    json!({"tenant": "t1", "type": "fraud_detected", "payload": {"n": n}})
        .to_string()
        .into_bytes()
}

/// Five ways a message is not an event.
fn invalid(n: usize) -> Vec<u8> {
    match n % 5 {
        0 => b"not json".to_vec(),
        1 => json!({"type": "fraud_detected", "payload": {}})
            .to_string()
            .into_bytes(),
        2 => json!({"tenant": "t 1", "type": "fraud_detected", "payload": {}})
            .to_string()
            .into_bytes(),
        3 => json!({"tenant": "t1", "type": "x", "payload": {}, "colour": "red"})
            .to_string()
            .into_bytes(),
        _ => json!({"tenant": "t1", "type": "x", "payload": [1, 2]})
            .to_string()
            .into_bytes(),
    }
}

type Message = (String, Option<String>, Vec<u8>);

fn readyz_nats(h: &Hookd) -> Value {
    let (status, body) = h.get("/readyz");
    assert_eq!(status, 200, "{body}");
    body["sources"]["nats"].clone()
}

fn invalid_count(h: &Hookd) -> f64 {
    metric_value(&h.metrics_text(), "hookd_ingest_rejected_total", "invalid").unwrap_or(0.0)
}

#[test]
fn every_valid_message_is_stored_once_through_two_kills_and_invalid_ones_are_terminated() {
    let nats = NatsServer::start();
    let js = Js::connect(&nats.url());
    js.create_stream(STREAM, &["events.>"], Duration::from_secs(1));
    let terminated = js.watch_terminations(STREAM, DURABLE);
    let rx = Receiver::start();
    // Each chunk waits a moment between its arrival and its commit, so that the kills find
    // messages received and not yet stored: acknowledged on arrival, those would be lost.
    let mut h = start_hookd(&nats.url(), Some(30));
    let (ep, _) = h.endpoint("t1", &rx.url, &["*"], json!({}));

    // 10,000 messages: 9,800 events, each with its own Nats-Msg-Id; 100 invalid ones among
    // them; then 100 repeats of earlier ids, published once JetStream's duplicate window has
    // passed so that JetStream stores them and only hookd's id check stops a second event.
    let mut first: Vec<Message> = Vec::new();
    let mut valid_ids = Vec::new();
    for i in 0..9_900 {
        let subject = format!("events.group-{}", i % 3);
        if i % 99 == 50 {
            first.push((subject, Some(format!("bad-{i}")), invalid(i)));
        } else {
            let id = format!("m-{i}");
            valid_ids.push(id.clone());
            first.push((subject, Some(id), valid(i)));
        }
    }
    assert_eq!(
        (valid_ids.len(), first.len() - valid_ids.len()),
        (9_800, 100)
    );
    let mut rest = first.split_off(4_000);
    let tail = rest.split_off(4_000);

    assert_eq!(js.publish(first), 4_000);
    let unacked_at_first_kill = kill_while_consuming(&mut h, &js, 1_000.0);
    assert_eq!(js.publish(rest), 4_000);
    h.start_again();
    let unacked_at_second_kill = kill_while_consuming(&mut h, &js, 2_000.0);
    assert!(
        unacked_at_first_kill > 0 && unacked_at_second_kill > 0,
        "each kill came while messages were pulled and not stored: {unacked_at_first_kill}, {unacked_at_second_kill}"
    );
    assert_eq!(js.publish(tail), 1_900);
    std::thread::sleep(Duration::from_millis(1_100));
    let repeats: Vec<Message> = valid_ids[..100]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                format!("events.group-{}", i % 3),
                Some(id.clone()),
                valid(i),
            )
        })
        .collect();
    assert_eq!(
        js.publish(repeats),
        100,
        "stored by JetStream past its window"
    );
    h.set_env("FAILPOINT_SOURCE_STORE_DELAY_MS", None);
    h.start_again();

    wait_until(Duration::from_secs(120), "the consumer drained", || {
        js.consumer_counts(STREAM, DURABLE)
            .is_some_and(|(pending, ack_pending, _)| pending == 0 && ack_pending == 0)
    });
    h.wait_all_delivered(&[&ep], Duration::from_secs(120));

    // Each id stored once: exactly one delivery per valid id, no others.
    let history = h.history(&ep, None);
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for d in &history {
        *per_id
            .entry(d["event_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let expected: HashSet<&String> = valid_ids.iter().collect();
    assert_eq!(per_id.len(), 9_800, "one event per valid id");
    assert!(per_id.values().all(|&n| n == 1), "an id stored twice");
    assert!(per_id.keys().all(|id| expected.contains(id)));
    assert!(history.iter().all(|d| d["status"] == "succeeded"));
    // Every valid event delivered at least once.
    let received: HashSet<String> = rx.received().iter().map(|r| r.event_id()).collect();
    let missing: Vec<&&String> = expected
        .iter()
        .filter(|id| !received.contains(**id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} never delivered: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Every invalid message terminated (once each, whichever life of hookd saw it).
    let terms: HashSet<u64> = terminated.lock().unwrap().iter().copied().collect();
    assert_eq!(terms.len(), 100, "invalid messages terminated");

    // In this life: invalid messages are counted, and terminated ones never come back.
    let before = invalid_count(&h);
    let late: Vec<Message> = (0..7)
        .map(|i| ("events.group-0".to_string(), None, invalid(i)))
        .chain([("events.group-1".to_string(), None, valid(20_000))])
        .collect();
    assert_eq!(js.publish(late), 8);
    wait_until(
        Duration::from_secs(30),
        "the late invalid ones terminated",
        || terminated.lock().unwrap().len() >= 107,
    );
    wait_until(
        Duration::from_secs(30),
        "the late invalid ones counted",
        || invalid_count(&h) == before + 7.0,
    );
    // Past ack_wait: nothing redelivered, nothing counted again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(invalid_count(&h), before + 7.0);
    assert_eq!(terminated.lock().unwrap().len(), 107);
    assert_eq!(
        js.consumer_counts(STREAM, DURABLE).map(|(p, a, _)| (p, a)),
        Some((0, 0)),
        "consumer pending at the end"
    );
    // A message with neither a body id nor Nats-Msg-Id gets one from its place in the stream.
    h.wait_all_delivered(&[&ep], Duration::from_secs(30));
    let ids: Vec<String> = h
        .history(&ep, None)
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_string())
        .filter(|id| !expected.contains(id))
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(ids[0].starts_with("nats-"), "{ids:?}");
    assert!(h.log_text().contains("invalid message terminated"));
    eprintln!(
        "{} requests received for {} events; {} terminated; unacknowledged at the kills: {}, {}",
        rx.count(),
        per_id.len() + 1,
        terms.len() + 7,
        unacked_at_first_kill,
        unacked_at_second_kill
    );
}

#[test]
fn the_http_api_ingests_while_nats_is_down_and_consumption_resumes_when_it_returns() {
    let mut nats = NatsServer::start();
    let js = Js::connect(&nats.url());
    js.create_stream(STREAM, &["events.>"], Duration::from_secs(120));
    let rx = Receiver::start();
    let h = start_hookd(&nats.url(), None);
    let (ep, _) = h.endpoint("t1", &rx.url, &["*"], json!({}));
    let batch = |from: usize| -> Vec<Message> {
        (from..from + 10)
            .map(|i| ("events.a".to_string(), Some(format!("n-{i}")), valid(i)))
            .collect()
    };
    assert_eq!(js.publish(batch(0)), 10);
    rx.wait_count(10, Duration::from_secs(30));
    assert_eq!(readyz_nats(&h), json!({"state": "up"}));
    drop(js);

    nats.stop();
    wait_until(Duration::from_secs(30), "readyz reports nats down", || {
        readyz_nats(&h)["state"] == "down"
    });
    let down = readyz_nats(&h);
    let up_gauge = |h: &Hookd| metric_value(&h.metrics_text(), "hookd_source_up", "nats");
    assert_eq!(up_gauge(&h), Some(0.0));
    assert!(
        down["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{down}"
    );
    let status = |h: &Hookd| {
        let out = h.ctl_command(&["status"]).output().expect("run hookd ctl");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(status(&h).contains("source nats: DOWN: "), "{}", status(&h));
    // The HTTP API still takes events and they are delivered.
    let ev = h.event("t1", "fraud_detected", json!({"via": "http"}));
    rx.wait_count(11, Duration::from_secs(30));
    assert_eq!(rx.received()[10].event_id(), ev["id"].as_str().unwrap());

    nats.start_again();
    let js = Js::connect(&nats.url());
    assert_eq!(js.publish(batch(10)), 10);
    rx.wait_count(21, Duration::from_secs(60));
    wait_until(Duration::from_secs(30), "readyz reports nats up", || {
        readyz_nats(&h) == json!({"state": "up"})
    });
    assert_eq!(up_gauge(&h), Some(1.0));
    assert!(status(&h).contains("source nats: up"), "{}", status(&h));
    h.wait_all_delivered(&[&ep], Duration::from_secs(30));
    let ids: HashSet<String> = rx.received().iter().map(|r| r.event_id()).collect();
    assert!((0..20).all(|i| ids.contains(&format!("n-{i}"))), "{ids:?}");
    assert!(h.log_text().contains("nats source: disconnected"));
}

/// docs/scaling.md's "backup + replay": the host's disk is lost after a backup; restored from
/// it, with its durable consumer made again from the start of the stream, hookd stores what
/// came after the backup again (the rest is a duplicate by id) and loses no event. With the
/// old consumer kept, the events it acknowledged after the backup would be gone.
#[test]
fn a_restored_host_replaying_the_stream_loses_no_event_acknowledged_after_the_backup() {
    let nats = NatsServer::start();
    let js = Js::connect(&nats.url());
    js.create_stream(STREAM, &["events.>"], Duration::from_secs(120));
    let rx = Receiver::start();
    let mut h = start_hookd(&nats.url(), None);
    // Paused: every delivery stays pending on the host's disk, as for an endpoint that is down.
    let (ep, _) = h.endpoint("t1", &rx.url, &["*"], json!({}));
    let (code, _) = h.post_empty(&format!("/v1/endpoints/{ep}/pause"));
    assert_eq!(code, 200);
    let publish = |prefix: &str| {
        let messages: Vec<Message> = (0..300)
            .map(|i| {
                (
                    "events.a".to_string(),
                    Some(format!("{prefix}-{i}")),
                    valid(i),
                )
            })
            .collect();
        assert_eq!(js.publish(messages), 300);
    };
    let stored = |h: &Hookd, n: f64| {
        wait_until(Duration::from_secs(60), "events stored", || {
            ingested(h) >= n
        });
    };
    publish("before");
    stored(&h, 300.0);
    let backup_dir = tempfile::tempdir().unwrap();
    let backup = backup_dir.path().join("copy");
    let (code, done) = h.post(
        "/v1/admin/backup",
        json!({"path": backup.display().to_string()}),
    );
    assert_eq!(code, 201, "{done}");
    publish("after");
    stored(&h, 600.0);
    wait_until(Duration::from_secs(30), "all acknowledged", || {
        js.consumer_counts(STREAM, DURABLE)
            .is_some_and(|(p, a, _)| p == 0 && a == 0)
    });
    // The host is lost, its disk with it.
    h.kill();
    std::fs::remove_dir_all(h.data_dir()).unwrap();

    let fresh = tempfile::tempdir().unwrap();
    let restored = restore(&backup, &fresh.path().join("data"));
    assert!(restored.status.success(), "{restored:?}");
    js.delete_consumer(STREAM, DURABLE);
    let env = source_env(&nats.url());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let h2 = Hookd::start_on(fresh, &env);
    wait_until(Duration::from_secs(60), "the stream replayed", || {
        js.consumer_counts(STREAM, DURABLE)
            .is_some_and(|(p, a, _)| p == 0 && a == 0)
    });
    // Only what came after the backup was new to the restored store.
    assert_eq!(ingested(&h2), 300.0);
    let (code, _) = h2.post_empty(&format!("/v1/endpoints/{ep}/resume"));
    assert_eq!(code, 200);
    h2.wait_all_delivered(&[&ep], Duration::from_secs(60));
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for d in h2.history(&ep, None) {
        *per_id
            .entry(d["event_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        per_id.len(),
        600,
        "every event, before and after the backup"
    );
    assert!(per_id.values().all(|&n| n == 1), "an id stored twice");
    let received: HashSet<String> = rx.received().iter().map(|r| r.event_id()).collect();
    for prefix in ["before", "after"] {
        for i in 0..300 {
            assert!(
                received.contains(&format!("{prefix}-{i}")),
                "{prefix}-{i} never delivered"
            );
        }
    }
}

/// hookd may start before the engine has made its stream: the source reports why it is down,
/// sets itself up once the stream exists, and takes what is published to it.
#[test]
fn a_stream_made_after_hookd_started_is_taken_once_it_exists() {
    let nats = NatsServer::start();
    let rx = Receiver::start();
    let h = start_hookd(&nats.url(), None);
    let (ep, _) = h.endpoint("t1", &rx.url, &["*"], json!({}));
    wait_until(
        Duration::from_secs(30),
        "readyz names the missing stream",
        || {
            let v = readyz_nats(&h);
            v["state"] == "down" && v["error"].as_str().is_some_and(|e| e.contains(STREAM))
        },
    );
    let js = Js::connect(&nats.url());
    js.create_stream(STREAM, &["events.>"], Duration::from_secs(120));
    wait_until(Duration::from_secs(30), "readyz reports nats up", || {
        readyz_nats(&h) == json!({"state": "up"})
    });
    let messages: Vec<Message> = (0..5)
        .map(|i| ("events.a".to_string(), Some(format!("late-{i}")), valid(i)))
        .collect();
    assert_eq!(js.publish(messages), 5);
    rx.wait_count(5, Duration::from_secs(30));
    h.wait_all_delivered(&[&ep], Duration::from_secs(30));
    assert!(
        h.log_text().contains("nats source down"),
        "the fault was logged"
    );
}

/// A broker that cannot be reached is reported, and holds up neither the HTTP API nor a stop.
#[test]
fn an_unreachable_broker_is_reported_and_does_not_delay_sigterm() {
    let closed = format!("nats://127.0.0.1:{}", free_port());
    let rx = Receiver::start();
    let mut h = start_hookd(&closed, None);
    let (ep, _) = h.endpoint("t1", &rx.url, &["*"], json!({}));
    wait_until(Duration::from_secs(30), "readyz names the server", || {
        readyz_nats(&h)["error"]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("cannot connect to {closed}")))
    });
    h.event("t1", "fraud_detected", json!({"via": "http"}));
    h.wait_all_delivered(&[&ep], Duration::from_secs(30));
    // Let the source be in the middle of its retries, then stop: it must not wait one out.
    std::thread::sleep(Duration::from_secs(2));
    let asked = std::time::Instant::now();
    let status = h.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "SIGTERM took {:?}",
        asked.elapsed()
    );
    // One line says the source is down; the client's reconnect attempts are not each logged.
    let lines = h.log_text();
    assert_eq!(lines.matches("nats source down").count(), 1, "{lines}");
    assert!(!lines.contains("IO error"), "{lines}");
}
