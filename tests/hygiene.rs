//! Write-only values (API.md §13): a TLS client key, an OAuth client secret, static header
//! values and the tokens hookd is configured with appear in no view, no log line (at
//! `trace`), no metric and no `check-config` output.

mod common;

use std::time::Duration;

use common::*;
use rcgen::{CertificateParams, KeyPair};
use serde_json::json;

#[test]
fn write_only_values_never_come_back_out() {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let key_pem = key.serialize_pem();
    // The key's base64 lines: what would leak if any part of it did.
    let key_lines: Vec<String> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_string)
        .collect();
    let client_secret = "oauth-client-secret-8d1f2a";
    let header_value = "header-value-secret-77c3e1";
    let patched_header = "patched-header-secret-0b9e44";

    let tokens = Receiver::with(500, &[], Duration::ZERO);
    let r = Receiver::start();
    let h = Hookd::start(&[
        ("HOOKD_LOG__LEVEL", "trace"),
        ("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["200ms","200ms"]"#),
    ]);
    let (id, _) = h.endpoint(
        "t",
        &r.url,
        &["*"],
        json!({
            "headers": {"X-Api-Key": header_value},
            "tls": {"client_cert": cert.pem(), "client_key": key_pem},
            "auth": {
                "type": "oauth2_client_credentials",
                "token_url": tokens.url,
                "client_id": "hookd",
                "client_secret": client_secret
            }
        }),
    );
    // A plain endpoint too, so attempts reach a receiver with the header.
    let (plain, _) = h.endpoint(
        "t",
        &r.url,
        &["*"],
        json!({"headers": {"X-Api-Key": header_value}}),
    );
    let d = h.event_delivery("t", "a", json!({"n": 1}));
    r.wait_count(1, Duration::from_secs(10));
    assert_eq!(
        r.received()[0].header("X-Api-Key"),
        Some(header_value),
        "it is sent"
    );
    wait_until(Duration::from_secs(10), "the token endpoint asked", || {
        tokens.count() >= 1
    });
    let (status, _) = h.patch(
        &format!("/v1/endpoints/{plain}"),
        json!({"headers": {"X-Api-Key": patched_header}}),
    );
    assert_eq!(status, 200);
    h.event("t", "a", json!({"n": 2}));
    r.wait_count(2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(800));

    let mut seen = String::new();
    for path in [
        format!("/v1/endpoints/{id}"),
        format!("/v1/endpoints/{plain}"),
        "/v1/endpoints".to_string(),
        format!("/v1/endpoints/{id}/deliveries"),
        format!("/v1/deliveries/{d}"),
        "/v1/openapi.json".to_string(),
    ] {
        let (status, body) = h.get(&path);
        assert_eq!(status, 200, "{path}: {body}");
        seen.push_str(&body.to_string());
    }
    let (_, view) = h.get(&format!("/v1/endpoints/{id}"));
    assert_eq!(view["tls"]["client_key"], "***");
    assert_eq!(view["auth"]["client_secret"], "***");
    assert_eq!(view["headers"]["X-Api-Key"], "***");
    seen.push_str(&h.metrics_text());
    let check = std::process::Command::new(hookd_bin())
        .arg("check-config")
        .env("HOOKD_AUTH__ADMIN_TOKENS", json!([ADMIN]).to_string())
        .env("HOOKD_AUTH__INGEST_TOKENS", json!([INGEST]).to_string())
        .output()
        .unwrap();
    assert!(check.status.success());
    seen.push_str(&String::from_utf8_lossy(&check.stdout));
    seen.push_str(&String::from_utf8_lossy(&check.stderr));
    let logs = h.log_text();
    assert!(
        logs.lines().filter(|l| l.contains("TRACE")).count() > 10,
        "trace lines are on"
    );
    seen.push_str(&logs);

    let mut secrets = vec![
        client_secret.to_string(),
        header_value.to_string(),
        patched_header.to_string(),
        ADMIN.to_string(),
        INGEST.to_string(),
    ];
    secrets.extend(key_lines);
    for secret in &secrets {
        assert!(!seen.contains(secret.as_str()), "{secret:?} came back out");
    }
}
