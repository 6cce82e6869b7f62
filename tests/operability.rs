//! Papercuts an operator trips over (API.md §10), against the real binary.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[test]
fn a_test_send_is_final_retry_refuses_it_and_recover_skips_it() {
    let rx = Receiver::with(500, &[], Duration::ZERO);
    let h = Hookd::start(&[]);
    let (ep, _) = h.endpoint("t", &rx.url, &["*"], json!({}));
    let (status, res) = h.post(&format!("/v1/endpoints/{ep}/test"), json!({}));
    assert_eq!(
        (status, res["success"].as_bool()),
        (200, Some(false)),
        "{res}"
    );
    let id = res["delivery_id"].as_str().unwrap();
    let (status, res) = h.post_empty(&format!("/v1/deliveries/{id}/retry"));
    assert_eq!(
        (status, res["error"]["code"].as_str()),
        (409, Some("not_retryable")),
        "{res}"
    );
    let since = humantime::format_rfc3339(std::time::SystemTime::now() - Duration::from_secs(60));
    let (status, res) = h.post(
        &format!("/v1/endpoints/{ep}/recover"),
        json!({"since": since.to_string()}),
    );
    assert_eq!((status, res["requeued"].as_u64()), (202, Some(0)), "{res}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.count(), 1, "the test send went out once");
}

#[test]
fn urls_with_credentials_and_unknown_query_parameters_are_refused() {
    let h = Hookd::start(&[]);
    let (status, res) = h.post(
        "/v1/endpoints",
        json!({"tenant": "t", "url": "http://user:secret@127.0.0.1:9/hook", "event_types": ["*"]}),
    );
    assert_eq!(status, 400, "{res}");
    let message = res["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("url") && message.contains("credentials"),
        "{message}"
    );
    assert!(
        !message.contains("secret"),
        "the password is not echoed: {message}"
    );
    for path in ["/v1/endpoints?tennant=t", "/v1/events/e1?tenant=t&extra=1"] {
        let (status, res) = h.get(path);
        assert_eq!(status, 400, "{path}: {res}");
        let message = res["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("tennant") || message.contains("extra"),
            "{path}: {message}"
        );
    }
}

#[test]
fn check_config_refuses_a_log_level_that_would_silence_everything() {
    let out = Command::new(env!("CARGO_BIN_EXE_hookd"))
        .arg("check-config")
        .env_remove("HOOKD_CONFIG")
        .env("HOOKD_LOG__LEVEL", "verbose")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("log.level") && err.contains("verbose"),
        "{err}"
    );
    for ok in ["debug", "warn,hookd=debug", "hookd=trace"] {
        let out = Command::new(env!("CARGO_BIN_EXE_hookd"))
            .arg("check-config")
            .env_remove("HOOKD_CONFIG")
            .env("HOOKD_LOG__LEVEL", ok)
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{ok}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn start_up_says_what_it_opened_before_listening() {
    let h = Hookd::start(&[]);
    let log = h.log_text();
    let at = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("no {what:?} in the log: {log}"))
    };
    assert!(at("hookd starting") < at("storage opened"));
    assert!(at("storage opened") < at("listening on"));
    assert!(log.contains("delivery.allow_http is on"), "{log}");
    assert!(
        log.contains("delivery.allow_private_networks is on"),
        "{log}"
    );
    // That a failed start never listens is checked with the data-directory lock in
    // tests/hardening.rs.
}

#[test]
fn methods_schemes_and_written_only_headers_answer_as_http_says() {
    let rx = Receiver::start();
    let h = Hookd::start(&[]);
    let (ep, _) = h.endpoint(
        "t",
        &rx.url,
        &["*"],
        json!({"headers": {"X-Api-Key": "k-123"}}),
    );
    // A known path with a method it does not serve: 405 with Allow.
    let r = h
        .raw(reqwest::Method::PUT, &format!("/v1/endpoints/{ep}"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, PATCH, DELETE")
    );
    let r = h
        .raw(reqwest::Method::GET, "/v1/nowhere")
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    // 401 names the scheme; the scheme is case-insensitive.
    let r = h.raw(reqwest::Method::GET, "/v1/endpoints").send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let r = h
        .raw(reqwest::Method::GET, "/v1/endpoints")
        .header("Authorization", format!("bearer {ADMIN}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Static header values are sent, never shown.
    let (_, e) = h.get(&format!("/v1/endpoints/{ep}"));
    assert_eq!(e["headers"], json!({"X-Api-Key": "***"}), "{e}");
    h.event("t", "x", json!({}));
    rx.wait_count(1, Duration::from_secs(10));
    assert_eq!(rx.received()[0].header("X-Api-Key"), Some("k-123"));
}

#[test]
fn refused_events_and_free_space_show_in_the_metrics() {
    let h = Hookd::start(&[("HOOKD_EVENTS__MAX_PAYLOAD_BYTES", "64")]);
    let (status, _) = h.post("/v1/events", json!({"tenant": "t", "type": "x"}));
    assert_eq!(status, 400);
    let (status, _) = h.post(
        "/v1/events",
        json!({"tenant": "t", "type": "x", "payload": {"big": "x".repeat(100)}}),
    );
    assert_eq!(status, 413);
    let (status, res) = h.post(
        "/v1/events/batch",
        json!({"events": [{"tenant": "t", "type": "x", "payload": {}}, {"tenant": "t"}, {"type": "x"}]}),
    );
    assert_eq!(status, 200, "{res}");
    // Not an event: a request without a good token.
    let (status, _) = h.request(
        reqwest::Method::POST,
        "/v1/events",
        Some("wrong"),
        Some(&json!({"tenant": "t", "type": "x", "payload": {}})),
    );
    assert_eq!(status, 401);
    let text = h.metrics_text();
    let value = |line: &str| {
        text.lines()
            .find(|l| l.starts_with(line))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {line} in {text}"))
    };
    assert_eq!(
        value("hookd_ingest_rejected_total{reason=\"invalid\"}"),
        3.0
    );
    assert_eq!(
        value("hookd_ingest_rejected_total{reason=\"too_large\"}"),
        1.0
    );
    assert_eq!(
        value("hookd_ingest_rejected_total{reason=\"disk_full\"}"),
        0.0
    );
    assert_eq!(
        value(&format!(
            "hookd_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert!(value("hookd_storage_free_bytes") > 0.0);
}

#[test]
fn sighup_reloads_tokens_level_and_catalogue_refuses_a_bad_file_and_never_stops() {
    let config = |token: &str, level: &str, types: &str| {
        format!("[auth]\nadmin_tokens = [\"{token}\"]\n[log]\nlevel = \"{level}\"\n[events]\ntypes = [{types}]\n")
    };
    let h = Hookd::start_with_config(&config(ADMIN, "info", "\"a\""), &[]);
    let rx = Receiver::start();
    h.endpoint("t", &rx.url, &["a"], json!({}));
    h.post(
        "/v1/events",
        json!({"tenant": "t", "type": "a", "payload": {}}),
    );
    rx.wait_count(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!h.log_text().contains("delivered"), "a debug line at info");
    let get = |token: &str| {
        h.request(reqwest::Method::GET, "/v1/endpoints", Some(token), None)
            .0
    };
    assert_eq!(get(ADMIN), 200);
    let (status, _) = h.post(
        "/v1/events",
        json!({"tenant": "t", "type": "b", "payload": {}}),
    );
    assert_eq!(status, 400, "b is not in the catalogue yet");

    h.write_config(&config("a-new-admin-token", "debug", "\"a\", \"b\""));
    h.hangup();
    wait_until(Duration::from_secs(10), "the reload", || {
        h.log_text().contains("SIGHUP: configuration reloaded")
    });
    assert_eq!(get(ADMIN), 401, "the old token no longer works");
    assert_eq!(get("a-new-admin-token"), 200);
    let (status, res) = h.request(
        reqwest::Method::POST,
        "/v1/events",
        Some("a-new-admin-token"),
        Some(&json!({"tenant": "t", "type": "b", "payload": {}})),
    );
    assert_eq!(status, 202, "b is in the catalogue now: {res}");
    let log = h.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("SIGHUP: configuration reloaded"))
        .unwrap();
    assert!(
        line.contains("auth") && line.contains("log.level") && line.contains("events.types"),
        "{line}"
    );
    assert!(
        !log.contains("a-new-admin-token"),
        "tokens are never logged"
    );
    // A bad file is refused and the configuration in force kept.
    h.write_config("[auth]\nadmin_tokens = [\"x\"]\nunknown_key = 1\n");
    h.hangup();
    wait_until(Duration::from_secs(10), "the refusal", || {
        h.log_text().contains("SIGHUP: configuration refused")
    });
    assert_eq!(get("a-new-admin-token"), 200);
    let r = h.raw(reqwest::Method::GET, "/readyz").send().unwrap();
    assert_eq!(r.status(), 200, "still running");
}

/// API.md §10: every operator action is one info line naming the endpoint and the token's
/// fingerprint (the first 8 hex digits of its SHA-256), never the token.
#[test]
fn operator_actions_leave_one_line_each_with_the_token_fingerprint() {
    use sha2::Digest;
    let h = Hookd::start(&[("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["100ms"]"#)]);
    let rx = Receiver::with(500, &[], Duration::ZERO);
    let fingerprint = hex::encode(&sha2::Sha256::digest(ADMIN.as_bytes())[..4]);
    let (id, _) = h.endpoint("t", &rx.url, &["*"], json!({}));
    let delivery = h.event_delivery("t", "a", json!({}));
    h.wait_delivery_status(&delivery, "failed", Duration::from_secs(10));
    h.patch(&format!("/v1/endpoints/{id}"), json!({"description": "x"}));
    h.post_empty(&format!("/v1/endpoints/{id}/pause"));
    h.post_empty(&format!("/v1/endpoints/{id}/resume"));
    h.post_empty(&format!("/v1/endpoints/{id}/rotate-secret"));
    h.post_empty(&format!("/v1/deliveries/{delivery}/retry"));
    h.post(
        &format!("/v1/endpoints/{id}/recover"),
        json!({"since": "2020-01-01T00:00:00Z"}),
    );
    h.post_empty(&format!("/v1/endpoints/{id}/test"));
    h.delete(&format!("/v1/endpoints/{id}"));
    let log = h.log_text();
    for action in [
        "operator: endpoint created",
        "operator: endpoint updated",
        "operator: endpoint paused",
        "operator: endpoint resumed",
        "operator: secret rotated",
        "operator: delivery retried",
        "operator: recover",
        "operator: test sent",
        "operator: endpoint deleted",
    ] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(action)).collect();
        assert_eq!(lines.len(), 1, "{action}: {lines:?}");
        assert!(lines[0].contains(" INFO "), "{}", lines[0]);
        assert!(lines[0].contains(&id), "{}", lines[0]);
        assert!(
            lines[0].contains(&format!("token={fingerprint}")),
            "{}",
            lines[0]
        );
    }
    assert!(
        log.contains("fields=[\"description\"]"),
        "what a patch changed"
    );
    assert!(!log.contains(ADMIN), "the token itself is never logged");
}

/// A dead receiver is probed for as long as it is down; its failed probes are logged at most
/// once a minute (the rest at debug), so the journal says it is still failing without a flood.
#[test]
fn a_failing_endpoints_probes_are_logged_at_most_once_a_minute() {
    let h = Hookd::start(&[(
        "HOOKD_DELIVERY__RETRY_SCHEDULE",
        r#"["50ms","50ms","50ms","50ms","50ms","50ms","50ms","50ms","50ms","50ms"]"#,
    )]);
    let rx = Receiver::with(500, &[], Duration::ZERO);
    let (id, _) = h.endpoint("t", &rx.url, &["*"], json!({}));
    h.event("t", "a", json!({}));
    // The circuit opens after 5 failures; probes follow after 1 s, 2 s, 4 s.
    rx.wait_count(8, Duration::from_secs(20));
    let log = h.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("endpoint failing; holding its queue"))
            .count(),
        1,
        "{log}"
    );
    let probes: Vec<&str> = log.lines().filter(|l| l.contains("probe failed")).collect();
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert!(
        probes[0].contains(&id) && probes[0].contains("INFO"),
        "{}",
        probes[0]
    );
}

#[test]
fn unknown_query_parameters_are_refused_on_every_route() {
    let h = Hookd::start(&[]);
    for (method, path, name) in [
        (reqwest::Method::GET, "/metrics?debug=1", "debug"),
        (reqwest::Method::GET, "/readyz?x=1", "x"),
        (
            reqwest::Method::POST,
            "/v1/endpoints/ep_x/pause?force=1",
            "force",
        ),
        (
            reqwest::Method::GET,
            "/v1/endpoints/ep_x/deliveries?status=failed&page=2",
            "page",
        ),
        (reqwest::Method::POST, "/v1/events?tenant=t", "tenant"),
        (reqwest::Method::GET, "/v1/openapi.json?v=3", "v"),
    ] {
        let resp = h
            .raw(method.clone(), path)
            .bearer_auth(ADMIN)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 400, "{method} {path}");
        let v: Value = resp.json().unwrap();
        assert_eq!(v["error"]["code"], "unknown_query_parameter");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{name}:")),
            "{v}"
        );
    }
    let log = h.log_text();
    assert!(
        log.contains("recovery finished; ready") && log.contains("took_ms"),
        "{log}"
    );
}
