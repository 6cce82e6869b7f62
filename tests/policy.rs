//! Delivery policy per endpoint (API.md §11), against the real binary: the rate limit.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Most arrivals in any window of `window` (sliding over the arrivals themselves).
fn max_in_window(at: &[Instant], window: Duration) -> usize {
    let mut best = 0;
    let mut j = 0;
    for i in 0..at.len() {
        while at[i].duration_since(at[j]) >= window {
            j += 1;
        }
        best = best.max(i - j + 1);
    }
    best
}

fn count_between(at: &[Instant], from: Instant, to: Instant) -> usize {
    at.iter().filter(|t| **t >= from && **t < to).count()
}

#[test]
fn a_rate_limit_holds_over_every_window_across_a_restart_and_a_patch() {
    let rx = Receiver::start();
    let mut h = Hookd::start(&[]);
    let (ep, _) = h.endpoint(
        "rate",
        &rx.url,
        &["*"],
        json!({"rate_limit": {"per_second": 100, "burst": 10}}),
    );
    let (status, e) = h.get(&format!("/v1/endpoints/{ep}"));
    assert_eq!(status, 200);
    assert_eq!(e["rate_limit"], json!({"per_second": 100.0, "burst": 10}));
    h.post_empty(&format!("/v1/endpoints/{ep}/pause"));
    for b in 0..20 {
        let events: Vec<Value> = (0..100)
            .map(|j| json!({"id": format!("r-{b}-{j}"), "tenant": "rate", "type": "x", "payload": {}}))
            .collect();
        let (status, _) = h.post("/v1/events/batch", json!({ "events": events }));
        assert_eq!(status, 200);
    }
    let resumed = Instant::now();
    h.post_empty(&format!("/v1/endpoints/{ep}/resume"));
    std::thread::sleep(Duration::from_secs(6));
    // The sustained rate of the backlog, leaving out the first second's burst.
    let at: Vec<Instant> = rx.received().iter().map(|r| r.at).collect();
    let steady = count_between(
        &at,
        resumed + Duration::from_secs(1),
        resumed + Duration::from_secs(6),
    );
    let rate = steady as f64 / 5.0;
    assert!(
        (95.0..=105.0).contains(&rate),
        "sustained {rate}/s for a limit of 100/s"
    );

    // kill -9 and restart: the bucket is what it was, not a fresh burst on top.
    h.kill();
    h.start_again();
    let restarted = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let at: Vec<Instant> = rx.received().iter().map(|r| r.at).collect();
    let first_second = count_between(&at, restarted, restarted + Duration::from_secs(1));
    assert!(
        first_second <= 110,
        "{first_second} starts in the first second after a restart"
    );

    // A PATCH takes effect within a second.
    let (status, res) = h.patch(
        &format!("/v1/endpoints/{ep}"),
        json!({"rate_limit": {"per_second": 300, "burst": 10}}),
    );
    assert_eq!(status, 200, "{res}");
    let patched = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let at: Vec<Instant> = rx.received().iter().map(|r| r.at).collect();
    let faster = count_between(
        &at,
        patched + Duration::from_secs(1),
        patched + Duration::from_secs(2),
    );
    assert!(
        (250..=320).contains(&faster),
        "{faster} starts in a second at 300/s"
    );

    wait_until(Duration::from_secs(20), "backlog drained", || {
        h.pending_counts(&[&ep]) == vec![(0, 0, 0)]
    });
    let at: Vec<Instant> = rx.received().iter().map(|r| r.at).collect();
    // Before the PATCH the limit was 100/s with a burst of 10.
    let before_patch: Vec<Instant> = at.iter().copied().filter(|t| *t < patched).collect();
    let most = max_in_window(&before_patch, Duration::from_secs(10));
    eprintln!(
        "sustained {rate}/s; {first_second} in the first second after kill -9; \
         {faster}/s after the PATCH to 300/s; at most {most} in any 10 s before it"
    );
    assert!(
        most <= 1010,
        "{most} starts in a 10 s window at 100/s, burst 10"
    );
    // null removes the limit.
    let (status, res) = h.patch(&format!("/v1/endpoints/{ep}"), json!({"rate_limit": null}));
    assert_eq!((status, &res["rate_limit"]), (200, &Value::Null), "{res}");
}

#[test]
fn a_bad_rate_limit_is_refused_naming_the_field() {
    let rx = Receiver::start();
    let h = Hookd::start(&[]);
    for (limit, field) in [
        (
            json!({"per_second": 0, "burst": 1}),
            "rate_limit.per_second",
        ),
        (
            json!({"per_second": 1e6, "burst": 1}),
            "rate_limit.per_second",
        ),
        (json!({"per_second": 10, "burst": 0}), "rate_limit.burst"),
        (json!({"per_second": 10}), "rate_limit"),
        (
            json!({"per_second": 10, "burst": 1, "extra": 1}),
            "rate_limit",
        ),
    ] {
        let (status, res) = h.post(
            "/v1/endpoints",
            json!({"tenant": "bad", "url": rx.url, "event_types": ["*"], "rate_limit": limit}),
        );
        assert_eq!(status, 400, "{limit}: {res}");
        let message = res["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{limit}: {message}");
    }
}

/// Cumulative count of `hookd_first_attempt_delay_seconds` for `endpoint` at `le`, and in all.
fn first_attempt_delays(h: &Hookd, endpoint: &str, le: &str) -> (f64, f64) {
    let text = h.metrics_text();
    let series = |suffix: &str, extra: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(&format!("hookd_first_attempt_delay_seconds_{suffix}{{"))
                    && l.contains(&format!("endpoint=\"{endpoint}\""))
                    && l.contains(extra)
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        series("bucket", &format!("le=\"{le}\"")),
        series("count", ""),
    )
}

#[test]
fn first_attempts_start_at_once_behind_ten_thousand_due_retries() {
    // Every other request fails, so the circuit stays closed while half of everything needs
    // a retry.
    let script: Vec<u16> = (0..100_000)
        .map(|i| if i % 2 == 0 { 500 } else { 200 })
        .collect();
    let rx = Receiver::with(200, &script, Duration::ZERO);
    let h = Hookd::start(&[]);
    let schedule: Vec<&str> = vec!["1s"; 20];
    let (ep, _) = h.endpoint(
        "fresh",
        &rx.url,
        &["*"],
        json!({ "retry_schedule": schedule }),
    );
    for b in 0..204 {
        let events: Vec<Value> = (0..100)
            .map(|j| json!({"id": format!("old-{b}-{j}"), "tenant": "fresh", "type": "x", "payload": {}}))
            .collect();
        let (status, _) = h.post("/v1/events/batch", json!({ "events": events }));
        assert_eq!(status, 200);
    }
    wait_until(
        Duration::from_secs(120),
        "every old event attempted once",
        || rx.count() >= 20_400,
    );
    // Now the receiver answers slowly: the retries keep coming due and pile up, and keep
    // their share of the endpoint's 16 request slots busy.
    rx.set_delay(Duration::from_millis(150));
    std::thread::sleep(Duration::from_secs(2));
    let (_, e) = h.get(&format!("/v1/endpoints/{ep}"));
    let pending = e["stats"]["pending"].as_u64().unwrap();
    assert!(pending >= 10_000, "{pending} retries queued: {e}");
    assert_eq!(
        e["stats"]["state"], "active",
        "the circuit stays closed: {e}"
    );

    let (fast_before, all_before) = first_attempt_delays(&h, &ep, "0.1");
    for i in 0..200 {
        h.post(
            "/v1/events",
            json!({"id": format!("new-{i}"), "tenant": "fresh", "type": "x", "payload": {}}),
        );
        // 20 new events a second at 150 ms each need about 3 of the 8 slots kept for them.
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_until(
        Duration::from_secs(10),
        "200 first attempts started",
        || first_attempt_delays(&h, &ep, "0.1").1 - all_before >= 200.0,
    );
    let (fast_after, all_after) = first_attempt_delays(&h, &ep, "0.1");
    let (fast, all) = (fast_after - fast_before, all_after - all_before);
    eprintln!("{fast} of {all} first attempts started within 100 ms, behind {pending} due retries");
    assert!(fast / all >= 0.99, "{fast} of {all} within 100 ms");
}

fn rfc3339_in(ms: i64) -> String {
    let t = std::time::SystemTime::now() + Duration::from_millis(ms.max(0) as u64)
        - Duration::from_millis((-ms).max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[test]
fn an_event_past_its_deadline_is_never_sent_and_recover_can_still_send_it() {
    let rx = Receiver::start();
    let h = Hookd::start(&[]);
    let (ep, _) = h.endpoint("exp", &rx.url, &["*"], json!({}));
    h.post_empty(&format!("/v1/endpoints/{ep}/pause"));
    let (status, res) = h.post(
        "/v1/events",
        json!({"id": "late", "tenant": "exp", "type": "fraud_detected", "payload": {},
               "expires_at": rfc3339_in(2000)}),
    );
    assert_eq!(status, 202, "{res}");
    let id = h.delivery_ids("exp", "late").remove(0);
    std::thread::sleep(Duration::from_secs(3));
    h.post_empty(&format!("/v1/endpoints/{ep}/resume"));
    let d = h.wait_delivery_status(&id, "expired", Duration::from_secs(5));
    assert_eq!(d["attempts"], json!([]), "never attempted: {d}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.count(), 0, "never sent");
    assert_eq!(h.history(&ep, Some("expired")).len(), 1);
    let metrics = h.metrics_text();
    assert!(
        metrics.contains(&format!(
            "hookd_deliveries_total{{endpoint=\"{ep}\",outcome=\"expired\"}} 1"
        )),
        "{metrics}"
    );
    // recover takes failed ones only, unless told otherwise.
    let since = rfc3339_in(-3_600_000);
    let (status, res) = h.post(
        &format!("/v1/endpoints/{ep}/recover"),
        json!({ "since": since }),
    );
    assert_eq!((status, res["requeued"].as_u64()), (202, Some(0)), "{res}");
    let (status, res) = h.post(
        &format!("/v1/endpoints/{ep}/recover"),
        json!({"since": since, "statuses": ["expired"]}),
    );
    assert_eq!((status, res["requeued"].as_u64()), (202, Some(1)), "{res}");
    h.wait_delivery_status(&id, "succeeded", Duration::from_secs(5));
    assert_eq!(rx.count(), 1);
    h.wait_all_delivered(&[&ep], Duration::from_secs(5));
    assert_eq!(h.assert_consistent(&[&ep]), vec![0]);
}

#[test]
fn a_ttl_expires_a_delivery_whose_next_retry_comes_too_late() {
    let rx = Receiver::with(500, &[], Duration::ZERO);
    let h = Hookd::start(&[]);
    let (ep, _) = h.endpoint(
        "ttl",
        &rx.url,
        &["*"],
        json!({"ttl": "1s", "retry_schedule": ["2s"]}),
    );
    let (_, e) = h.get(&format!("/v1/endpoints/{ep}"));
    assert_eq!(e["ttl"], "1s", "{e}");
    let id = h.event_delivery("ttl", "x", json!({}));
    let d = h.wait_delivery_status(&id, "expired", Duration::from_secs(5));
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1, "{d}");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(rx.count(), 1, "the retry after the deadline never went out");
    // retry lifts the deadline.
    rx.set_status(200);
    let (status, _) = h.post_empty(&format!("/v1/deliveries/{id}/retry"));
    assert_eq!(status, 202);
    h.wait_delivery_status(&id, "succeeded", Duration::from_secs(5));
    h.wait_all_delivered(&[&ep], Duration::from_secs(5));
    assert_eq!(h.assert_consistent(&[&ep]), vec![0]);
}

#[test]
fn bad_deadlines_are_refused_naming_the_field() {
    let rx = Receiver::start();
    let h = Hookd::start(&[]);
    let (status, res) = h.post(
        "/v1/endpoints",
        json!({"tenant": "bad", "url": rx.url, "event_types": ["*"], "ttl": "0s"}),
    );
    assert_eq!(status, 400, "{res}");
    assert!(res["error"]["message"].as_str().unwrap().contains("ttl"));
    let (status, res) = h.post(
        "/v1/events",
        json!({"tenant": "bad", "type": "x", "payload": {}, "expires_at": "tomorrow"}),
    );
    assert_eq!(status, 400, "{res}");
    assert!(res["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expires_at"));
    let (ep, _) = h.endpoint("bad", &rx.url, &["*"], json!({}));
    let (status, res) = h.post(
        &format!("/v1/endpoints/{ep}/recover"),
        json!({"since": rfc3339_in(-1000), "statuses": ["failed", "pending"]}),
    );
    assert_eq!(status, 400, "{res}");
    assert!(res["error"]["message"]
        .as_str()
        .unwrap()
        .contains("statuses[1]"));
}

/// A receiver that answers each request, at random, 200 (70 %), 500 (10 %), not at all until
/// the sender gives up (10 %), or with a connection reset (10 %), and records what it
/// accepted: (ordering key, sequence, event id), in the order it took them (each logged before its 200).
struct Unreliable {
    url: String,
    accepted: Arc<Mutex<Vec<(String, u64, String)>>>,
}

impl Unreliable {
    fn start() -> Unreliable {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let log = accepted.clone();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(conn) = conn else { continue };
                let log = log.clone();
                std::thread::spawn(move || serve_unreliably(conn, log, n as u64));
            }
        });
        Unreliable { url, accepted }
    }
}

fn serve_unreliably(
    mut conn: std::net::TcpStream,
    log: Arc<Mutex<Vec<(String, u64, String)>>>,
    seed: u64,
) {
    use std::io::{BufRead, BufReader, Read};
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % 100
    };
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => headers.push(line),
            }
        }
        let header = |name: &str| {
            headers.iter().find_map(|h| {
                let (k, v) = h.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        match next() {
            // Logged before the answer: once hookd reads the 200 it may send the key's next
            // delivery on another connection, whose thread must not log ahead of this one.
            // A 200 that cannot be written is an at-least-once resend of the same sequence.
            0..=69 => {
                log.lock().unwrap().push((
                    header("x-webhook-ordering-key").unwrap_or_default(),
                    header("x-webhook-sequence")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    header("webhook-id").unwrap_or_default(),
                ));
                if conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .is_err()
                {
                    return;
                }
            }
            70..=79 => {
                if conn
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
                    .is_err()
                {
                    return;
                }
            }
            // Silent past the endpoint's 300 ms timeout.
            80..=89 => {
                std::thread::sleep(Duration::from_millis(600));
                return;
            }
            _ => {
                reset_connection(conn);
                return;
            }
        }
    }
}

#[test]
fn ordered_deliveries_arrive_in_sequence_per_key_through_failures_and_crashes() {
    let rx = Unreliable::start();
    let mut h = Hookd::start(&[]);
    let schedule = vec!["200ms"; 10];
    let (ep, _) = h.endpoint(
        "ord",
        &rx.url,
        &["*"],
        json!({"ordering": "key", "timeout": "300ms", "retry_schedule": schedule}),
    );
    let (_, e) = h.get(&format!("/v1/endpoints/{ep}"));
    assert_eq!(e["ordering"], "key", "{e}");
    const KEYS: usize = 50;
    const PER_KEY: usize = 40;
    // Events interleaved across keys, in batches, with two kill -9s along the way.
    for round in 0..PER_KEY {
        let events: Vec<Value> = (0..KEYS)
            .map(|k| {
                json!({"id": format!("k{k}-{round}"), "tenant": "ord", "type": "x",
                       "ordering_key": format!("card-{k}"), "payload": {"n": round}})
            })
            .collect();
        let (status, res) = h.post("/v1/events/batch", json!({ "events": events }));
        assert_eq!(status, 200, "{res}");
        if round == 15 || round == 30 {
            h.kill();
            h.start_again();
        }
    }
    wait_until(
        Duration::from_secs(120),
        "every ordered delivery final",
        || h.pending_counts(&[&ep]) == vec![(0, 0, 0)],
    );
    // Per key, the receiver accepted sequence numbers 1, 2, … in order (a repeat after a
    // crash is the at-least-once resend of the one before, never one from later).
    let accepted = rx.accepted.lock().unwrap().clone();
    let mut per_key: HashMap<String, Vec<u64>> = HashMap::new();
    for (key, seq, _) in &accepted {
        let seen = per_key.entry(key.clone()).or_default();
        if seen.last() == Some(seq) {
            continue;
        }
        assert!(
            !seen.contains(seq),
            "{key}: {seq} accepted again after later ones: {seen:?}"
        );
        seen.push(*seq);
    }
    let failed = h.history(&ep, Some("failed"));
    assert_eq!(per_key.len(), KEYS, "every key delivered");
    // Keys go side by side: a key whose head is retrying holds up only itself.
    let early: std::collections::HashSet<&String> =
        accepted.iter().take(4 * KEYS).map(|(k, _, _)| k).collect();
    assert!(
        early.len() >= KEYS * 4 / 5,
        "the first {} acceptances span only {} keys",
        4 * KEYS,
        early.len()
    );
    for (key, seqs) in &per_key {
        let skipped: Vec<u64> = (1..=PER_KEY as u64).filter(|s| !seqs.contains(s)).collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(&sorted, seqs, "{key} out of order: {seqs:?}");
        // A gap is only a delivery that failed for good.
        for s in skipped {
            assert!(
                failed
                    .iter()
                    .any(|d| d["ordering_key"] == key.as_str() && d["sequence"] == s),
                "{key}: {s} neither accepted nor failed"
            );
        }
    }
    eprintln!(
        "{} accepted requests, {} keys in order, {} failed for good",
        accepted.len(),
        per_key.len(),
        failed.len()
    );
    assert_eq!(h.assert_consistent(&[&ep]), vec![0]);
}

#[test]
fn an_ordered_key_waits_through_pause_skips_a_failed_delivery_and_retry_releases_it() {
    // The first request fails; no retries, so that failure is final at once.
    let rx = Receiver::with(200, &[500], Duration::ZERO);
    let h = Hookd::start(&[]);
    let (ep, _) = h.endpoint(
        "seq",
        &rx.url,
        &["*"],
        json!({"ordering": "key", "retry_schedule": []}),
    );
    h.post_empty(&format!("/v1/endpoints/{ep}/pause"));
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let (status, res) = h.post(
                "/v1/events",
                json!({"id": format!("s{i}"), "tenant": "seq", "type": "x",
                       "ordering_key": "card-1", "payload": {"n": i}}),
            );
            assert_eq!(status, 202, "{res}");
            h.delivery_ids("seq", &format!("s{i}")).remove(0)
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let d = h.delivery(id);
        assert_eq!(
            (d["ordering_key"].as_str(), d["sequence"].as_u64()),
            (Some("card-1"), Some(i as u64 + 1)),
            "{d}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.count(), 0, "paused: the key waits");
    // The first fails for good; the key moves on to the second, which the receiver takes.
    h.post_empty(&format!("/v1/endpoints/{ep}/resume"));
    rx.wait_count(1, Duration::from_secs(5));
    h.wait_delivery_status(&ids[0], "failed", Duration::from_secs(5));
    h.wait_delivery_status(&ids[2], "succeeded", Duration::from_secs(5));
    let seqs: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.header("x-webhook-sequence").unwrap_or("").to_string())
        .collect();
    assert_eq!(
        seqs,
        ["1", "2", "3"],
        "in sequence, the failed one skipped once final"
    );
    assert!(rx
        .received()
        .iter()
        .all(|r| r.header("x-webhook-ordering-key") == Some("card-1")));
    // retry re-sends the failed first one out of order; it waits for no one.
    let (status, _) = h.post_empty(&format!("/v1/deliveries/{}/retry", ids[0]));
    assert_eq!(status, 202);
    h.wait_delivery_status(&ids[0], "succeeded", Duration::from_secs(5));
    assert_eq!(
        rx.received().last().unwrap().header("x-webhook-sequence"),
        Some("1")
    );
    h.wait_all_delivered(&[&ep], Duration::from_secs(5));
    assert_eq!(h.assert_consistent(&[&ep]), vec![0]);
}
