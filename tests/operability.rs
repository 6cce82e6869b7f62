//! Papercuts an operator trips over (API.md §10), against the real binary.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

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
fn start_up_says_what_it_opened_before_listening_and_a_failed_start_never_listens() {
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
    // A second hookd on the same data directory fails before it listens, and says so once.
    let out = Command::new(env!("CARGO_BIN_EXE_hookd"))
        .arg("serve")
        .env_remove("HOOKD_CONFIG")
        .env("HOOKD_SERVER__LISTEN", "127.0.0.1:0")
        .env("HOOKD_STORAGE__PATH", h.data_dir())
        .env("HOOKD_AUTH__ADMIN_TOKENS", json!([ADMIN]).to_string())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("listening on"), "{err}");
    assert_eq!(
        err.matches("is in use by another hookd").count(),
        1,
        "{err}"
    );
}
