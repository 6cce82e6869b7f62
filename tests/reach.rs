//! Reaching every receiver (API.md §13): private CAs (`delivery.ca_file`, endpoint `tls.ca`),
//! client certificates, write-only keys. Receivers here are real TLS servers with
//! certificates made by the test (rcgen).

mod common;

use std::time::Duration;

use common::pki::{server_config, Ca};
use common::*;
use serde_json::{json, Value};

/// The error of a delivery's first attempt, once it has one.
fn first_error(h: &Hookd, delivery: &str) -> String {
    let mut error = String::new();
    wait_until(Duration::from_secs(10), "a failed attempt", || {
        let d = h.delivery(delivery);
        match d["attempts"][0]["error"].as_str() {
            Some(e) => {
                error = e.to_string();
                true
            }
            None => false,
        }
    });
    error
}

#[test]
fn a_private_ca_is_trusted_through_ca_file_or_tls_ca_and_an_unknown_one_is_not() {
    let ca = Ca::new("Example Corp private CA");
    let r = Receiver::tls(server_config(&ca, None));
    assert!(r.url.starts_with("https://127.0.0.1:"));

    // Without the CA: refused as an unknown issuer.
    let h = Hookd::start(&[("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["30s"]"#)]);
    h.endpoint("plain", &r.url, &["*"], json!({}));
    let refused = h.event_delivery("plain", "a", json!({}));
    let error = first_error(&h, &refused);
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert_eq!(r.count(), 0);

    // `tls.ca` on the endpoint.
    h.endpoint("own-ca", &r.url, &["*"], json!({"tls": {"ca": ca.pem()}}));
    let own = h.event_delivery("own-ca", "a", json!({}));
    h.wait_delivery_status(&own, "succeeded", Duration::from_secs(10));
    // A CA that did not issue the receiver's certificate does not help.
    let other = Ca::new("Someone else");
    h.endpoint(
        "other-ca",
        &r.url,
        &["*"],
        json!({"tls": {"ca": other.pem()}}),
    );
    let wrong = h.event_delivery("other-ca", "a", json!({}));
    let error = first_error(&h, &wrong);
    assert!(error.contains("UnknownIssuer"), "{error}");
    drop(h);

    // `delivery.ca_file` for every endpoint.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corp-ca.pem");
    std::fs::write(&file, ca.pem()).unwrap();
    let h = Hookd::start(&[("HOOKD_DELIVERY__CA_FILE", file.to_str().unwrap())]);
    h.endpoint("t", &r.url, &["*"], json!({}));
    let d = h.event_delivery("t", "a", json!({}));
    h.wait_delivery_status(&d, "succeeded", Duration::from_secs(10));
}

#[test]
fn a_bad_ca_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-ca.pem");
    std::fs::write(&file, "hello").unwrap();
    let out = std::process::Command::new(hookd_bin())
        .arg("check-config")
        .env("HOOKD_DELIVERY__CA_FILE", &file)
        .env("HOOKD_STORAGE__PATH", dir.path().join("data"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("delivery.ca_file"), "{text}");
}

#[test]
fn a_receiver_requiring_a_client_certificate_gets_the_one_patched_in() {
    let server_ca = Ca::new("Receiver CA");
    let client_ca = Ca::new("Client CA");
    let r = Receiver::tls(server_config(&server_ca, Some(&client_ca)));
    let h = Hookd::start(&[("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["30s"]"#)]);

    // No client certificate: the receiver refuses the handshake.
    let (id, _) = h.endpoint("t", &r.url, &["*"], json!({"tls": {"ca": server_ca.pem()}}));
    let d = h.event_delivery("t", "a", json!({}));
    let error = first_error(&h, &d);
    assert_eq!(r.count(), 0, "{error}");

    // A certificate from a CA the receiver does not accept: refused too.
    let stranger = Ca::new("Stranger CA");
    let (cert, key) = stranger.issue(false);
    let (status, ep) = h.patch(
        &format!("/v1/endpoints/{id}"),
        json!({"tls": {"ca": server_ca.pem(), "client_cert": cert, "client_key": key}}),
    );
    assert_eq!(status, 200, "{ep}");
    assert_eq!(ep["tls"]["client_key"], "***");
    let d = h.event_delivery("t", "a", json!({}));
    first_error(&h, &d);
    assert_eq!(r.count(), 0);

    // The right one, PATCHed in: the next attempt uses it, no restart.
    let (cert, key) = client_ca.issue(false);
    let (status, _) = h.patch(
        &format!("/v1/endpoints/{id}"),
        json!({"tls": {"ca": server_ca.pem(), "client_cert": cert, "client_key": key}}),
    );
    assert_eq!(status, 200);
    let d = h.event_delivery("t", "a", json!({}));
    h.wait_delivery_status(&d, "succeeded", Duration::from_secs(10));
    assert_eq!(r.count(), 1);

    // A view sent back as a PATCH keeps the key it masks.
    let (_, view) = h.get(&format!("/v1/endpoints/{id}"));
    let (status, ep) = h.patch(
        &format!("/v1/endpoints/{id}"),
        json!({"tls": view["tls"].clone()}),
    );
    assert_eq!(status, 200, "{ep}");
    let d = h.event_delivery("t", "a", json!({}));
    h.wait_delivery_status(&d, "succeeded", Duration::from_secs(10));
    let text = h.log_text() + &h.get(&format!("/v1/endpoints/{id}")).1.to_string();
    assert!(!text.contains("PRIVATE KEY"), "no key in logs or views");
}

#[test]
fn unusable_tls_settings_are_refused_naming_the_field() {
    let h = Hookd::start(&[]);
    let ca = Ca::new("CA");
    let (cert, key) = ca.issue(false);
    let (other_cert, _) = ca.issue(false);
    // 422 for well-formed settings whose PEM texts are unusable; 400 for a wrong form.
    let cases: Vec<(Value, &str, u16)> = vec![
        (json!({"ca": "not pem"}), "tls.ca", 422),
        (json!({"client_cert": cert}), "tls.client_key", 422),
        (json!({"client_key": key}), "tls.client_cert", 422),
        (
            json!({"client_cert": cert, "client_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}),
            "tls.client_key",
            422,
        ),
        (
            json!({"client_cert": other_cert, "client_key": key}),
            "tls.client_key",
            422,
        ),
        (json!({"pin": "x"}), "tls", 400),
        (json!([null, null]), "tls", 400),
    ];
    for (tls, field, expected) in cases {
        let (status, body) = h.post(
            "/v1/endpoints",
            json!({"tenant": "t", "url": "https://127.0.0.1:9/", "event_types": ["*"], "tls": tls}),
        );
        assert_eq!(status, expected, "{tls}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{tls}: {message}");
        assert!(!message.contains("BEGIN"), "no PEM echoed: {message}");
    }
}

/// Runs the independent verifier on one received request; true when it verifies.
fn python_verifies(public_key: &str, got: &Received, body: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body");
    std::fs::write(&body_file, body).unwrap();
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/verify_ed25519.py"
        ))
        .arg(public_key)
        .arg(got.header("webhook-id").unwrap())
        .arg(got.header("webhook-timestamp").unwrap())
        .arg(got.header("webhook-signature").unwrap())
        .arg(&body_file)
        .output()
        .expect("python3 with the cryptography package (scripts/install-prereqs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() || stdout.contains("no v1a signature verifies"),
        "verifier failed to run: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

#[test]
fn ed25519_deliveries_verify_with_an_independent_implementation() {
    let h = Hookd::start(&[]);
    let r = Receiver::start();
    let (status, ep) = h.post(
        "/v1/endpoints",
        json!({"tenant": "t", "url": r.url, "event_types": ["*"], "signing": "ed25519"}),
    );
    assert_eq!(status, 201, "{ep}");
    assert!(ep.get("secret").is_none(), "no shared secret: {ep}");
    let public = ep["public_key"].as_str().unwrap().to_string();
    assert!(public.starts_with("whpk_"), "{public}");
    assert_eq!(ep["signing"], "ed25519");
    let id = ep["id"].as_str().unwrap().to_string();

    h.event(
        "t",
        "sale.created",
        json!({"amount": 12.5, "items": [1, 2]}),
    );
    r.wait_count(1, Duration::from_secs(10));
    let got = r.received()[0].clone();
    assert_eq!(got.header("X-Webhook-Signature"), None, "no HMAC header");
    assert!(got.header("webhook-signature").unwrap().starts_with("v1a,"));
    assert!(python_verifies(&public, &got, &got.body));
    // The verifier does refuse: another body, or another key.
    assert!(!python_verifies(&public, &got, b"{\"amount\":13}"));

    // Rotation: a new public key; during the overlap both keys sign.
    let (status, rotated) = h.post_empty(&format!("/v1/endpoints/{id}/rotate-secret"));
    assert_eq!(status, 200, "{rotated}");
    let new_public = rotated["public_key"].as_str().unwrap().to_string();
    assert_ne!(new_public, public);
    assert!(rotated.get("secret").is_none());
    h.event("t", "sale.created", json!({"n": 2}));
    r.wait_count(2, Duration::from_secs(10));
    let got = r.received()[1].clone();
    assert_eq!(
        got.header("webhook-signature")
            .unwrap()
            .matches("v1a,")
            .count(),
        2
    );
    assert!(python_verifies(&new_public, &got, &got.body));
    assert!(python_verifies(&public, &got, &got.body));
    let (_, view) = h.get(&format!("/v1/endpoints/{id}"));
    assert_eq!(view["public_key"], new_public.as_str());

    // The kind of key is fixed at creation.
    let (status, body) = h.patch(&format!("/v1/endpoints/{id}"), json!({"signing": "hmac"}));
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("signing"));
    assert!(
        !h.log_text().contains("whsk_"),
        "no private key in the logs"
    );
}
