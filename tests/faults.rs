//! The faults hookd must ride out (API.md §9), each made to happen against the real binary:
//! clients that reset mid-request, a WAL fsync that fails or crawls (an LD_PRELOAD shim), a
//! wall clock stepped both ways (the same shim), an operator retry racing the last attempt,
//! and a panicking endpoint actor (a failpoint). After each, at rest, `stats.pending`,
//! `hookd_queue_depth` and the history agree, and every stored event was delivered.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn start(faults: &Faults, extra: &[(&str, &str)]) -> Hookd {
    let env = faults.env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    Hookd::start(&all)
}

/// Sends a whole request, waits `after`, then resets the connection (SO_LINGER 0), as a
/// client or proxy that gives up does.
fn post_and_reset(base: &str, path: &str, body: &Value, after: Duration) {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect to hookd");
    let body = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    std::thread::sleep(after);
    reset_connection(s);
}

fn event_body(tenant: &str, id: &str) -> Value {
    json!({"id": id, "tenant": tenant, "type": "fraud_detected", "payload": {"score": 85}})
}

/// An event of `tenant` with one of 50 ordering keys.
fn keyed_event(tenant: &str, id: &str, n: usize) -> Value {
    let mut body = event_body(tenant, id);
    body["ordering_key"] = json!(format!("card-{}", n % 50));
    body
}

/// The event ids the receiver got, each with how many requests carried it per attempt number.
fn received_attempts(rx: &Receiver) -> HashMap<(String, String), usize> {
    let mut seen = HashMap::new();
    for r in rx.received() {
        let attempt = r.header("x-webhook-attempt").unwrap_or("").to_string();
        *seen.entry((r.event_id(), attempt)).or_insert(0) += 1;
    }
    seen
}

fn received_ids(rx: &Receiver) -> HashSet<String> {
    rx.received().iter().map(|r| r.event_id()).collect()
}

/// `id` of `tenant` is stored: its event exists.
fn stored(h: &Hookd, tenant: &str, id: &str) -> bool {
    let (status, _) = h.get(&format!("/v1/events/{id}?tenant={tenant}"));
    status == 200
}

#[test]
fn a_client_reset_mid_ingest_strands_nothing() {
    let faults = Faults::new();
    let rx = Receiver::start();
    let h = start(&faults, &[]);
    let (ep, _) = h.endpoint("reset", &rx.url, &["fraud_detected"], json!({}));
    // Each commit's fsync takes 500 ms and each client resets 100 ms after sending: the
    // request has reached the commit by then and is waiting for the fsync, exactly when a
    // reset drops the handler.
    faults.delay_fsyncs(500);
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = format!("single-{i}");
        post_and_reset(
            &h.base,
            "/v1/events",
            &event_body("reset", &id),
            Duration::from_millis(100),
        );
        ids.push(id);
    }
    for b in 0..10 {
        let events: Vec<Value> = (0..20)
            .map(|j| {
                let id = format!("batch-{b}-{j}");
                ids.push(id.clone());
                event_body("reset", &id)
            })
            .collect();
        post_and_reset(
            &h.base,
            "/v1/events/batch",
            &json!({ "events": events }),
            Duration::from_millis(100),
        );
    }
    faults.delay_fsyncs(0);
    std::thread::sleep(Duration::from_millis(500));
    let stored_ids: Vec<&String> = ids.iter().filter(|id| stored(&h, "reset", id)).collect();
    eprintln!(
        "{} of {} reset requests were stored",
        stored_ids.len(),
        ids.len()
    );
    assert!(
        stored_ids.len() >= ids.len() / 2,
        "most reset requests reached storage ({} of {}), so the test exercises the hand-over",
        stored_ids.len(),
        ids.len()
    );
    // Every stored event reaches the receiver although no request saw its answer.
    wait_until(
        Duration::from_secs(30),
        "every stored event delivered",
        || {
            let got = received_ids(&rx);
            stored_ids.iter().all(|id| got.contains(*id))
        },
    );
    // The client's resend: a duplicate for the stored ones, new for the rest; all delivered.
    for id in &ids {
        let (status, res) = h.post("/v1/events", event_body("reset", id));
        let was_stored = stored_ids.contains(&id);
        assert_eq!(
            (status, res["duplicate"].as_bool()),
            if was_stored {
                (200, Some(true))
            } else {
                (202, Some(false))
            },
            "{id}: {res}"
        );
    }
    wait_until(Duration::from_secs(30), "every event delivered", || {
        let got = received_ids(&rx);
        ids.iter().all(|id| got.contains(id))
    });
    h.wait_all_delivered(&[&ep], Duration::from_secs(15));
    assert_eq!(h.assert_consistent(&[&ep]), vec![0]);
    assert!(
        received_attempts(&rx).values().all(|&n| n == 1),
        "no event was sent twice as the same attempt"
    );
}

#[test]
fn a_failed_wal_fsync_is_a_fault_hookd_rides_out() {
    let faults = Faults::new();
    let rx = Receiver::start();
    let notify = NotifySocket::new();
    let socket = notify.path.display().to_string();
    // Watchdog pings every 250 ms.
    let mut h = start(
        &faults,
        &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "500000")],
    );
    let (ep, _) = h.endpoint("fsync", &rx.url, &["fraud_detected"], json!({}));
    let mut acked = Vec::new();
    for i in 0..10 {
        let id = format!("before-{i}");
        let (status, _) = h.post("/v1/events", event_body("fsync", &id));
        assert_eq!(status, 202);
        acked.push(id);
    }
    assert!(!notify.times("READY=1").is_empty(), "READY=1 sent");
    wait_until(Duration::from_secs(5), "watchdog pings", || {
        notify.times("WATCHDOG=1").len() >= 2
    });
    faults.fail_fsyncs(1);
    let (status, res) = h.post("/v1/events", event_body("fsync", "during"));
    let fault_at = Instant::now();
    assert_eq!(status, 503, "the request whose fsync failed: {res}");
    // Right after the fault: unready, counted, logged, and no write is attempted.
    let ready = h.raw(reqwest::Method::GET, "/readyz").send();
    assert!(
        ready.as_ref().map_or(true, |r| r.status() == 503),
        "/readyz while storage cannot write: {:?}",
        ready.map(|r| r.status())
    );
    let metrics = h.metrics_text();
    let errors = metric_value(&metrics, "hookd_storage_errors_total", "wal_sync").unwrap_or(0.0);
    assert!(
        errors >= 1.0,
        "hookd_storage_errors_total{{op=\"wal_sync\"}} = {errors}"
    );
    let (status, _) = h.post("/v1/events", event_body("fsync", "refused"));
    assert_eq!(status, 503, "ingest refused while the fault lasts");
    assert!(h.log_text().contains("storage fault"), "{}", h.log_text());
    // Never a live process that cannot write: it resumes, or exits non-zero for systemd.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut exited = None;
    loop {
        if let Some(status) = h.wait_exit(Duration::from_millis(500)) {
            exited = Some(status);
            break;
        }
        let (status, _) = h.post("/v1/events", event_body("fsync", "after"));
        if status == 202 {
            acked.push("after".into());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hookd neither resumed writing nor exited within 30 s of the fault"
        );
    }
    eprintln!("after the fault: {exited:?} (None: resumed writing)");
    // The watchdog went hungry while storage could not write (one ping may have been on its
    // way when the fault hit).
    let hungry_until = if exited.is_some() {
        Instant::now()
    } else {
        fault_at + Duration::from_millis(1500)
    };
    let fed_meanwhile = notify
        .times("WATCHDOG=1")
        .into_iter()
        .filter(|t| *t > fault_at + Duration::from_millis(300) && *t < hungry_until)
        .count();
    assert_eq!(
        fed_meanwhile, 0,
        "watchdog pings while storage could not write"
    );
    if let Some(status) = exited {
        assert!(!status.success(), "exit status {status:?} after giving up");
        assert!(h
            .log_text()
            .contains("exiting so that systemd restarts hookd"));
        h.start_again();
    }
    // Everything acknowledged is delivered; the 503'd one is either not stored or delivered;
    // the one refused during the fault is not stored.
    if stored(&h, "fsync", "during") {
        acked.push("during".into());
    }
    assert!(!stored(&h, "fsync", "refused"), "refused during the fault");
    wait_until(
        Duration::from_secs(30),
        "acknowledged events delivered",
        || {
            let got = received_ids(&rx);
            acked.iter().all(|id| got.contains(id))
        },
    );
    h.wait_all_delivered(&[&ep], Duration::from_secs(15));
    assert_eq!(h.assert_consistent(&[&ep]), vec![0]);
    let (status, _) = h.post("/v1/events", event_body("fsync", "later"));
    assert_eq!(status, 202, "writing again");
}

#[test]
fn a_slow_fsync_during_drain_and_ingest_sends_no_attempt_twice() {
    let faults = Faults::new();
    let rx = Receiver::start();
    let mut h = start(&faults, &[]);
    // Ordered (over 50 keys): ordered deliveries are handed over only after their fsync
    // (unordered ones go to their actor before it).
    let (ep, _) = h.endpoint(
        "slow",
        &rx.url,
        &["fraud_detected"],
        json!({"ordering": "key"}),
    );
    let (status, _) = h.post_empty(&format!("/v1/endpoints/{ep}/pause"));
    assert_eq!(status, 200);
    // A backlog larger than the queue's first page, so the drain reads `due` from storage.
    let mut ids = Vec::new();
    for b in 0..90 {
        let events: Vec<Value> = (0..100)
            .map(|j| {
                let id = format!("old-{b}-{j}");
                ids.push(id.clone());
                keyed_event("slow", &id, j)
            })
            .collect();
        let (status, res) = h.post("/v1/events/batch", json!({ "events": events }));
        assert_eq!(status, 200, "{res}");
    }
    h.start_again();
    // Each commit's fsync takes 2.5 s, so its (ordered) deliveries are in storage for that long
    // before they are handed over: long enough for the drain to page them in and send them
    // first.
    faults.delay_fsyncs(2500);
    let (status, _) = h.post_empty(&format!("/v1/endpoints/{ep}/resume"));
    assert_eq!(status, 200);
    // Ingest goes on while the backlog drains.
    let base = h.base.clone();
    let writers: Vec<_> = (0..6)
        .map(|t| {
            let base = base.clone();
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                let mut mine = Vec::new();
                for b in 0..8 {
                    let events: Vec<Value> = (0..25)
                        .map(|j| {
                            let id = format!("new-{t}-{b}-{j}");
                            mine.push(id.clone());
                            keyed_event("slow", &id, j)
                        })
                        .collect();
                    let r = http
                        .post(format!("{base}/v1/events/batch"))
                        .bearer_auth(ADMIN)
                        .json(&json!({ "events": events }))
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
                mine
            })
        })
        .collect();
    for w in writers {
        ids.extend(w.join().unwrap());
    }
    wait_until(
        Duration::from_secs(90),
        "backlog and new events delivered",
        || received_ids(&rx).len() >= ids.len(),
    );
    faults.delay_fsyncs(0);
    let got = received_ids(&rx);
    assert!(ids.iter().all(|id| got.contains(id)));
    let twice: Vec<_> = received_attempts(&rx)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "sent twice as the same attempt: {twice:?}"
    );
    h.wait_all_delivered(&[&ep], Duration::from_secs(15));
    assert_eq!(h.assert_consistent(&[&ep]), vec![0]);
    let succeeded = h.history(&ep, Some("succeeded")).len();
    assert_eq!(succeeded, ids.len());
}

/// Gap between the receiver's `a`-th and `b`-th requests (0-based).
fn gap(rx: &Receiver, a: usize, b: usize) -> Duration {
    let r = rx.received();
    r[b].at.duration_since(r[a].at)
}

#[test]
fn a_wall_clock_step_delays_no_retry_or_probe() {
    let faults = Faults::new();
    let h = start(&faults, &[]);
    // A retry due in 2 s, the wall clock stepped back an hour meanwhile.
    let rx = Receiver::with(500, &[], Duration::ZERO);
    let (ep1, _) = h.endpoint(
        "clock",
        &rx.url,
        &["fraud_detected"],
        json!({"retry_schedule": ["2s", "2s", "2s"]}),
    );
    h.event("clock", "fraud_detected", json!({}));
    rx.wait_count(1, Duration::from_secs(10));
    faults.set_clock_offset(-3_600_000);
    rx.wait_count(2, Duration::from_secs(6));
    let back = gap(&rx, 0, 1);
    assert!(
        back < Duration::from_millis(4000),
        "retry after a step back: {back:?}"
    );
    // Stepped forward a day (and an hour): the next retry neither fires at once nor later.
    faults.set_clock_offset(86_400_000);
    rx.wait_count(3, Duration::from_secs(6));
    let fwd = gap(&rx, 1, 2);
    assert!(
        fwd >= Duration::from_millis(1500) && fwd < Duration::from_millis(4000),
        "retry after a step forward: {fwd:?}"
    );

    // A probe due in 1 s once the circuit opens, the clock stepped back meanwhile.
    faults.set_clock_offset(0);
    let probe_rx = Receiver::with(500, &[], Duration::ZERO);
    let (ep2, _) = h.endpoint(
        "clock2",
        &probe_rx.url,
        &["fraud_detected"],
        json!({"retry_schedule": ["100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms"]}),
    );
    h.event("clock2", "fraud_detected", json!({}));
    probe_rx.wait_count(5, Duration::from_secs(10));
    faults.set_clock_offset(-3_600_000);
    probe_rx.wait_count(6, Duration::from_secs(5));
    let probe = gap(&probe_rx, 4, 5);
    assert!(
        probe >= Duration::from_millis(900) && probe < Duration::from_millis(3000),
        "probe after a step back: {probe:?}"
    );
    // Both receivers come back; everything is delivered and the counts agree.
    rx.set_status(200);
    probe_rx.set_status(200);
    h.wait_all_delivered(&[&ep1, &ep2], Duration::from_secs(15));
}

#[test]
fn a_forward_clock_step_prunes_nothing_early() {
    let faults = Faults::new();
    let rx = Receiver::start();
    let mut h = start(&faults, &[("HOOKD_STORAGE__PRUNE_INTERVAL", "1s")]);
    let (ep, _) = h.endpoint("prune", &rx.url, &["fraud_detected"], json!({}));
    let (status, _) = h.post("/v1/events", event_body("prune", "kept"));
    assert_eq!(status, 202);
    rx.wait_count(1, Duration::from_secs(10));
    // Eight days forward, past the 7-day retention, while the pruner runs every second.
    faults.set_clock_offset(8 * 86_400_000);
    std::thread::sleep(Duration::from_secs(3));
    assert!(stored(&h, "prune", "kept"), "pruned early");
    let (status, res) = h.post("/v1/events", event_body("prune", "kept"));
    assert_eq!((status, res["duplicate"].as_bool()), (200, Some(true)));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.count(), 1, "the duplicate was not sent again");
    h.wait_all_delivered(&[&ep], Duration::from_secs(15));
    assert_eq!(h.assert_consistent(&[&ep]), vec![0]);
    // Started with the clock far ahead of the newest record: a warning says so.
    h.start_again();
    assert!(
        h.log_text()
            .contains("far ahead of the newest stored event"),
        "{}",
        h.log_text()
    );
}

#[test]
fn the_pruner_removes_finished_records_past_retention() {
    // The control for the test above: with a short retention, the same pruner does prune.
    let rx = Receiver::start();
    let h = Hookd::start(&[
        ("HOOKD_STORAGE__PRUNE_INTERVAL", "1s"),
        ("HOOKD_STORAGE__RETENTION", "2s"),
    ]);
    h.endpoint("pruned", &rx.url, &["fraud_detected"], json!({}));
    let (status, _) = h.post("/v1/events", event_body("pruned", "gone"));
    assert_eq!(status, 202);
    rx.wait_count(1, Duration::from_secs(10));
    wait_until(Duration::from_secs(15), "the finished event pruned", || {
        !stored(&h, "pruned", "gone")
    });
}

#[test]
fn retry_or_recover_during_the_last_attempt_is_honoured() {
    // Every attempt takes 1.5 s; there are no retries, so the first attempt is the last.
    let rx = Receiver::with(500, &[], Duration::from_millis(1500));
    let h = Hookd::start(&[]);
    let (ep, _) = h.endpoint(
        "last",
        &rx.url,
        &["fraud_detected"],
        json!({"retry_schedule": []}),
    );
    let retried = h.event_delivery("last", "fraud_detected", json!({"n": 1}));
    rx.wait_count(1, Duration::from_secs(10));
    let (status, _) = h.post_empty(&format!("/v1/deliveries/{retried}/retry"));
    assert_eq!(status, 202);
    rx.wait_count(2, Duration::from_secs(10));
    rx.set_status(200);
    rx.set_delay(Duration::ZERO);
    let d = h.wait_delivery_status(&retried, "succeeded", Duration::from_secs(10));
    let codes: Vec<_> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_u64())
        .collect();
    assert_eq!(codes.first(), Some(&Some(500)), "{d}");
    assert_eq!(codes.last(), Some(&Some(200)), "{d}");

    // The same for recover.
    rx.set_status(500);
    rx.set_delay(Duration::from_millis(1500));
    let before = rx.count();
    let recovered = h.event_delivery("last", "fraud_detected", json!({"n": 2}));
    rx.wait_count(before + 1, Duration::from_secs(10));
    let since = humantime::format_rfc3339(std::time::SystemTime::now() - Duration::from_secs(3600));
    let (status, res) = h.post(
        &format!("/v1/endpoints/{ep}/recover"),
        json!({"since": since.to_string()}),
    );
    assert_eq!(status, 202, "{res}");
    rx.wait_count(before + 2, Duration::from_secs(10));
    rx.set_status(200);
    rx.set_delay(Duration::ZERO);
    h.wait_delivery_status(&recovered, "succeeded", Duration::from_secs(10));
    h.wait_all_delivered(&[&ep], Duration::from_secs(15));
    assert_eq!(h.assert_consistent(&[&ep]), vec![0]);
}

#[cfg(feature = "failpoints")]
#[test]
fn a_panicking_actor_aborts_and_recovery_delivers() {
    use std::os::unix::process::ExitStatusExt;
    let rx = Receiver::start();
    let mut h = Hookd::start(&[("FAILPOINT_PANIC_EVENT_TYPE", "boom")]);
    let (ep, _) = h.endpoint("panic", &rx.url, &["*"], json!({}));
    for i in 0..5 {
        h.post(
            "/v1/events",
            json!({"id": format!("ok-{i}"), "tenant": "panic", "type": "fine", "payload": {}}),
        );
    }
    rx.wait_count(5, Duration::from_secs(10));
    let (status, _) = h.post(
        "/v1/events",
        json!({"id": "boom-1", "tenant": "panic", "type": "boom", "payload": {}}),
    );
    assert_eq!(status, 202);
    let exit = h
        .wait_exit(Duration::from_secs(10))
        .expect("hookd aborts instead of leaving the endpoint stuck");
    assert_eq!(exit.signal(), Some(libc::SIGABRT), "{exit:?}");
    assert!(h.log_text().contains("panic"), "{}", h.log_text());
    h.set_env("FAILPOINT_PANIC_EVENT_TYPE", None);
    h.start_again();
    wait_until(
        Duration::from_secs(15),
        "boom-1 delivered after restart",
        || received_ids(&rx).contains("boom-1"),
    );
    let id = h.delivery_ids("panic", "boom-1").remove(0);
    h.wait_delivery_status(&id, "succeeded", Duration::from_secs(10));
    h.wait_all_delivered(&[&ep], Duration::from_secs(15));
    assert_eq!(h.assert_consistent(&[&ep]), vec![0]);
}

#[test]
fn retry_recover_and_the_pruner_racing_leave_no_stray_or_doubled_record() {
    // Two of three attempts fail (never five in a row, so the circuit stays closed) and there
    // are no retries: deliveries keep going from failed to pending and back, while the pruner
    // removes whatever has been finished for a second.
    let script: Vec<u16> = (0..3000)
        .map(|i| if i % 3 == 2 { 200 } else { 500 })
        .collect();
    let rx = Receiver::with(500, &script, Duration::ZERO);
    let mut h = Hookd::start(&[
        ("HOOKD_STORAGE__PRUNE_INTERVAL", "1s"),
        ("HOOKD_STORAGE__RETENTION", "1s"),
    ]);
    let (ep, _) = h.endpoint(
        "race",
        &rx.url,
        &["fraud_detected"],
        json!({"retry_schedule": []}),
    );
    let ids: Vec<String> = (0..40)
        .map(|i| h.event_delivery("race", "fraud_detected", json!({ "n": i })))
        .collect();
    rx.wait_count(40, Duration::from_secs(10));
    let base = h.base.clone();
    let stop = Instant::now() + Duration::from_secs(5);
    let racers: Vec<_> = (0..3)
        .map(|t| {
            let (base, ids, ep) = (base.clone(), ids.clone(), ep.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                while Instant::now() < stop {
                    if t == 2 {
                        let since = humantime::format_rfc3339(
                            std::time::SystemTime::now() - Duration::from_secs(3600),
                        );
                        let r = http
                            .post(format!("{base}/v1/endpoints/{ep}/recover"))
                            .bearer_auth(ADMIN)
                            .json(&json!({"since": since.to_string()}))
                            .send()
                            .unwrap();
                        assert_eq!(r.status(), 202);
                        continue;
                    }
                    for id in &ids {
                        let r = http
                            .post(format!("{base}/v1/deliveries/{id}/retry"))
                            .bearer_auth(ADMIN)
                            .send()
                            .unwrap();
                        assert!(
                            [202, 404, 409].contains(&r.status().as_u16()),
                            "retry: {}",
                            r.status()
                        );
                    }
                }
            })
        })
        .collect();
    for r in racers {
        r.join().unwrap();
    }
    eprintln!("attempts while racing: {}", rx.count());
    wait_until(Duration::from_secs(20), "at rest", || {
        let (_, e) = h.get(&format!("/v1/endpoints/{ep}"));
        e["stats"]["pending"] == 0 && e["stats"]["in_flight"] == 0
    });
    h.assert_consistent(&[&ep]);
    // A `due` entry left behind by a lost race would count as pending after a restart.
    h.start_again();
    h.wait_all_delivered(&[&ep], Duration::from_secs(15));
    assert_eq!(h.assert_consistent(&[&ep]), vec![0]);
    let attempts = received_attempts(&rx);
    assert!(
        attempts.values().all(|&n| n == 1),
        "an attempt number sent twice: {:?}",
        attempts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
}

#[test]
fn delete_while_attempts_are_out_leaves_every_delivery_final() {
    // 40 deliveries, 8 at a time out to a receiver that takes 400 ms, deleted mid-drain while
    // ingest goes on: each ends cancelled or with its attempt's outcome, and nothing is left
    // pending in storage for a restart to find.
    let rx = Receiver::with(200, &[], Duration::from_millis(400));
    let mut h = Hookd::start(&[]);
    let (ep, _) = h.endpoint(
        "del",
        &rx.url,
        &["fraud_detected"],
        json!({"max_concurrency": 8}),
    );
    let events: Vec<Value> = (0..40)
        .map(|i| event_body("del", &format!("del-{i}")))
        .collect();
    let (status, _) = h.post("/v1/events/batch", json!({ "events": events }));
    assert_eq!(status, 200);
    rx.wait_count(8, Duration::from_secs(10));
    let base = h.base.clone();
    let late = std::thread::spawn(move || {
        let http = reqwest::blocking::Client::new();
        for i in 0..20 {
            let _ = http
                .post(format!("{base}/v1/events"))
                .bearer_auth(ADMIN)
                .json(&event_body("del", &format!("late-{i}")))
                .send();
        }
    });
    let (status, _) = h.delete(&format!("/v1/endpoints/{ep}"));
    assert_eq!(status, 204);
    late.join().unwrap();
    let finals = ["cancelled", "succeeded"];
    wait_until(Duration::from_secs(15), "every delivery final", || {
        (0..40).all(|i| {
            let (_, ev) = h.get(&format!("/v1/events/del-{i}?tenant=del"));
            finals.contains(&ev["deliveries"][0]["status"].as_str().unwrap_or(""))
        })
    });
    h.start_again();
    assert!(
        h.log_text()
            .lines()
            .filter(|l| l.contains("recovery finished"))
            .all(|l| l.contains("pending=0") && l.contains("cancelled_orphans=0")),
        "nothing pending or orphaned in storage after the delete: {}",
        h.log_text()
    );
}

#[test]
fn a_retry_brought_forward_is_kept_across_a_crash() {
    // One request at a time. A's first attempt fails and its retry is an hour away; while C's
    // attempt is out, A is retried (brought forward), and hookd is killed before A can start.
    let rx = Receiver::with(500, &[], Duration::ZERO);
    let mut h = Hookd::start(&[]);
    let (ep, _) = h.endpoint(
        "fwd",
        &rx.url,
        &["fraud_detected"],
        json!({"max_concurrency": 1, "retry_schedule": ["1h"]}),
    );
    let a = h.event_delivery("fwd", "fraud_detected", json!({"n": "a"}));
    rx.wait_count(1, Duration::from_secs(10));
    rx.set_status(200);
    rx.set_delay(Duration::from_secs(5));
    h.event("fwd", "fraud_detected", json!({"n": "c"}));
    rx.wait_count(2, Duration::from_secs(10));
    let (status, _) = h.post_empty(&format!("/v1/deliveries/{a}/retry"));
    assert_eq!(status, 202);
    let d = h.delivery(&a);
    assert_eq!(d["status"], "pending", "{d}");
    h.kill();
    rx.set_delay(Duration::ZERO);
    let sent_before = rx.count();
    h.start_again();
    // A goes out now, not in an hour.
    h.wait_delivery_status(&a, "succeeded", Duration::from_secs(10));
    assert!(rx.count() > sent_before);
    h.wait_all_delivered(&[&ep], Duration::from_secs(10));
}

#[test]
fn a_clock_stepped_back_across_a_restart_holds_no_stored_retry() {
    let faults = Faults::new();
    let rx = Receiver::with(500, &[], Duration::ZERO);
    let mut h = start(&faults, &[]);
    let (ep, _) = h.endpoint(
        "back",
        &rx.url,
        &["fraud_detected"],
        json!({"retry_schedule": ["3s"]}),
    );
    let id = h.event_delivery("back", "fraud_detected", json!({}));
    wait_until(Duration::from_secs(10), "first attempt stored", || {
        h.delivery(&id)["next_attempt_at"].is_string() && h.delivery(&id)["attempts"][0].is_object()
    });
    rx.set_status(200);
    h.kill();
    // Back an hour while hookd is down.
    faults.set_clock_offset(-3_600_000);
    let restarted = Instant::now();
    h.start_again();
    let d = h.wait_delivery_status(&id, "succeeded", Duration::from_secs(8));
    assert!(restarted.elapsed() < Duration::from_secs(8));
    assert_eq!(d["attempts"].as_array().unwrap().len(), 2, "{d}");
    assert!(
        h.log_text()
            .contains("the wall clock is behind the newest stored event"),
        "{}",
        h.log_text()
    );
    h.wait_all_delivered(&[&ep], Duration::from_secs(10));
    assert_eq!(h.assert_consistent(&[&ep]), vec![0]);
}

/// A receiver does not wait for the disk: an unordered delivery goes to its actor as soon as
/// its group is written, while the client's 202 still waits for the WAL fsync (here made to
/// take 2 s). An ordered delivery waits for the fsync, since its `X-Webhook-Sequence` would
/// be given again to another event if the write were lost.
#[test]
fn a_delivery_does_not_wait_for_the_fsync_but_its_acknowledgement_and_an_ordered_one_do() {
    let faults = Faults::new();
    let rx = Receiver::start();
    let h = start(&faults, &[]);
    h.endpoint("early", &rx.url, &["fraud_detected"], json!({}));
    h.endpoint(
        "ordered",
        &rx.url,
        &["fraud_detected"],
        json!({"ordering": "key"}),
    );
    faults.delay_fsyncs(2000);
    // Each POST on a thread of its own, since its answer waits for the slow fsync.
    let post = |body: Value| {
        let (status, _) = h.post("/v1/events", body);
        (status, Instant::now())
    };
    std::thread::scope(|s| {
        let posted = s.spawn(|| post(event_body("early", "unordered")));
        rx.wait_count(1, Duration::from_secs(10));
        let received = Instant::now();
        let (status, answered) = posted.join().unwrap();
        assert_eq!(status, 202);
        assert!(
            received + Duration::from_millis(500) < answered,
            "delivered {:?} before its 202, not well before it",
            answered.saturating_duration_since(received)
        );

        let posted = s.spawn(|| post(keyed_event("ordered", "in-order", 1)));
        std::thread::sleep(Duration::from_millis(1000));
        assert!(!posted.is_finished(), "the fsync is still on its way");
        assert_eq!(
            rx.count(),
            1,
            "the ordered delivery was sent before its fsync"
        );
        let (status, _) = posted.join().unwrap();
        assert_eq!(status, 202);
    });
    rx.wait_count(2, Duration::from_secs(10));
    let last = rx.received().pop().unwrap();
    assert_eq!(last.event_id(), "in-order");
    assert_eq!(last.header("x-webhook-sequence"), Some("1"));
    faults.delay_fsyncs(0);
}
