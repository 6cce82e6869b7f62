//! `/metrics`: every family is exported, counters move by exactly what happened, labels carry
//! endpoint ids and never URLs; concurrent ingests share writes (group commit).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn scrape(h: &Hookd) -> String {
    let resp = h.raw(reqwest::Method::GET, "/metrics").send().unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().unwrap()
}

/// The value of the series `name{labels}` (labels as exported, in name order), or 0.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[test]
fn metrics_count_exactly_what_happened() {
    let h = Hookd::start(&[]);
    let r = Receiver::with(200, &[500], Duration::ZERO);
    let (ep, _) = h.endpoint("t1", &r.url, &["a"], json!({"retry_schedule": ["1s"]}));
    let before = scrape(&h);
    assert_eq!(
        value(
            &before,
            &format!("hookd_endpoint_state{{endpoint=\"{ep}\",state=\"active\"}}")
        ),
        1.0
    );

    for i in 0..3 {
        h.event("t1", "a", json!({"i": i}));
    }
    h.event("t1", "b", json!({}));
    r.wait_count(4, Duration::from_secs(10));
    let mut text = String::new();
    // A result is counted when decided and leaves the queue once stored: wait for both.
    wait_until(
        Duration::from_secs(5),
        "three succeeded deliveries, stored",
        || {
            text = scrape(&h);
            value(
                &text,
                &format!("hookd_deliveries_total{{endpoint=\"{ep}\",outcome=\"succeeded\"}}"),
            ) == 3.0
                && value(&text, &format!("hookd_queue_depth{{endpoint=\"{ep}\"}}")) == 0.0
        },
    );
    for family in [
        "hookd_events_ingested_total",
        "hookd_deliveries_total",
        "hookd_attempts_total",
        "hookd_attempt_duration_seconds",
        "hookd_queue_depth",
        "hookd_in_flight",
        "hookd_endpoint_state",
        "hookd_oldest_pending_age_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing"
        );
    }
    assert_eq!(value(&text, "hookd_events_ingested_total{type=\"a\"}"), 3.0);
    assert_eq!(value(&text, "hookd_events_ingested_total{type=\"b\"}"), 1.0);
    assert_eq!(
        value(
            &text,
            &format!("hookd_attempts_total{{endpoint=\"{ep}\",result=\"http_5xx\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            &format!("hookd_attempts_total{{endpoint=\"{ep}\",result=\"success\"}}")
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            &format!("hookd_attempt_duration_seconds_count{{endpoint=\"{ep}\"}}")
        ),
        4.0
    );
    assert!(text.contains(&format!(
        "hookd_attempt_duration_seconds_bucket{{endpoint=\"{ep}\",le=\"0.005\"}}"
    )));
    assert!(text.contains(&format!(
        "hookd_attempt_duration_seconds_bucket{{endpoint=\"{ep}\",le=\"30\"}}"
    )));
    assert_eq!(
        value(&text, &format!("hookd_queue_depth{{endpoint=\"{ep}\"}}")),
        0.0
    );
    assert_eq!(
        value(&text, &format!("hookd_in_flight{{endpoint=\"{ep}\"}}")),
        0.0
    );
    assert!(!text.contains("127.0.0.1"), "no URL in any label");

    h.post_empty(&format!("/v1/endpoints/{ep}/pause"));
    h.event("t1", "a", json!({}));
    h.event("t1", "a", json!({}));
    wait_until(Duration::from_secs(5), "paused state and depth", || {
        let t = scrape(&h);
        value(
            &t,
            &format!(
                "hookd_endpoint_state{{endpoint=\"{ep}\",reason=\"operator\",state=\"paused\"}}"
            ),
        ) == 1.0
            && value(
                &t,
                &format!("hookd_endpoint_state{{endpoint=\"{ep}\",state=\"active\"}}"),
            ) == 0.0
            && value(&t, &format!("hookd_queue_depth{{endpoint=\"{ep}\"}}")) == 2.0
    });
    h.delete(&format!("/v1/endpoints/{ep}"));
    wait_until(
        Duration::from_secs(5),
        "deleted endpoint's series gone",
        || !scrape(&h).contains(&ep),
    );
}

#[test]
fn concurrent_ingests_share_writes() {
    let h = Hookd::start(&[]);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let base = h.base.clone();
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                for i in 0..25 {
                    let r = http
                        .post(format!("{base}/v1/events"))
                        .bearer_auth(INGEST)
                        .json(&json!({"tenant": "t", "type": "a", "payload": {"t": t, "i": i}}))
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 202);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = scrape(&h);
    let events = value(&text, "hookd_storage_committed_events_total");
    let commits = value(&text, "hookd_storage_commits_total");
    assert_eq!(events, 400.0);
    eprintln!(
        "400 acknowledged single-event requests from 16 clients took {commits} fsync'd writes"
    );
    assert!(
        commits < events,
        "{commits} writes for {events} events: no grouping"
    );
}

/// API.md §10's families in one scripted scenario, with exact values: a delivery fails, is
/// recovered and then succeeds (counted once per final outcome it reaches); the oldest-pending
/// age counts from when a delivery became due, not from its creation.
#[test]
fn section_ten_families_count_a_scripted_scenario_exactly() {
    let h = Hookd::start(&[]);
    let r = Receiver::with(500, &[], Duration::ZERO);
    let (ep, _) = h.endpoint("t1", &r.url, &["a"], json!({"retry_schedule": ["200ms"]}));
    let delivery = h.event_delivery("t1", "a", json!({}));
    h.wait_delivery_status(&delivery, "failed", Duration::from_secs(10));
    r.set_status(200);
    let (status, out) = h.post(
        &format!("/v1/endpoints/{ep}/recover"),
        json!({"since": "2020-01-01T00:00:00Z"}),
    );
    assert_eq!((status, out["requeued"].as_u64()), (202, Some(1)));
    h.wait_delivery_status(&delivery, "succeeded", Duration::from_secs(10));
    // One refused event (unknown field) and one too large.
    h.post(
        "/v1/events",
        json!({"tenant": "t1", "type": "a", "payload": {}, "x": 1}),
    );
    let big = "x".repeat(300_000);
    h.post(
        "/v1/events",
        json!({"tenant": "t1", "type": "a", "payload": {"big": big}}),
    );

    let mut text = String::new();
    wait_until(
        Duration::from_secs(5),
        "the succeeded outcome counted",
        || {
            text = scrape(&h);
            value(
                &text,
                &format!("hookd_deliveries_total{{endpoint=\"{ep}\",outcome=\"succeeded\"}}"),
            ) == 1.0
        },
    );
    let v = |series: &str| value(&text, series);
    assert_eq!(
        v(&format!(
            "hookd_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert!(v("process_start_time_seconds") > 1.7e9, "process collector");
    assert!(v("process_resident_memory_bytes") > 0.0);
    assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    assert_eq!(
        v(&format!(
            "hookd_deliveries_total{{endpoint=\"{ep}\",outcome=\"failed\"}}"
        )),
        1.0
    );
    assert_eq!(
        v(&format!(
            "hookd_attempts_total{{endpoint=\"{ep}\",result=\"http_5xx\"}}"
        )),
        2.0
    );
    assert_eq!(
        v(&format!(
            "hookd_attempts_total{{endpoint=\"{ep}\",result=\"success\"}}"
        )),
        1.0
    );
    // The first attempt of the one delivery, and every attempt's lag behind its due time.
    assert_eq!(
        v(&format!(
            "hookd_first_attempt_delay_seconds_count{{endpoint=\"{ep}\"}}"
        )),
        1.0
    );
    assert_eq!(
        v(&format!(
            "hookd_delivery_lag_seconds_count{{endpoint=\"{ep}\"}}"
        )),
        3.0
    );
    assert_eq!(v("hookd_ingest_rejected_total{reason=\"invalid\"}"), 1.0);
    assert_eq!(v("hookd_ingest_rejected_total{reason=\"too_large\"}"), 1.0);
    assert_eq!(v("hookd_ingest_rejected_total{reason=\"disk_full\"}"), 0.0);
    assert!(text.contains("# TYPE hookd_storage_errors_total counter"));
    assert!(!text
        .lines()
        .any(|l| l.starts_with("hookd_storage_errors_total{") && !l.ends_with(" 0")));
    assert!(v("hookd_storage_free_bytes") > 0.0);

    // Waiting for a retry an hour away is not late: the age stays 0 ...
    let (slow, _) = h.endpoint("t2", &r.url, &["b"], json!({"retry_schedule": ["1h"]}));
    r.set_status(500);
    h.event("t2", "b", json!({}));
    wait_until(Duration::from_secs(5), "the first attempt failed", || {
        r.count() >= 4
    });
    std::thread::sleep(Duration::from_millis(6_000));
    let age = value(
        &scrape(&h),
        &format!("hookd_oldest_pending_age_seconds{{endpoint=\"{slow}\"}}"),
    );
    assert_eq!(age, 0.0, "not due yet, so not old");
    // ... while a paused endpoint's due delivery ages from when it became due.
    let (held, _) = h.endpoint("t3", &r.url, &["c"], json!({}));
    h.post_empty(&format!("/v1/endpoints/{held}/pause"));
    h.event("t3", "c", json!({}));
    wait_until(Duration::from_secs(15), "the held delivery ages", || {
        value(
            &scrape(&h),
            &format!("hookd_oldest_pending_age_seconds{{endpoint=\"{held}\"}}"),
        ) >= 5.0
    });
}
