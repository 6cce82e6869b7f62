//! Reaching every receiver (API.md §13): private CAs (`delivery.ca_file`, endpoint `tls.ca`),
//! client certificates, write-only keys. Receivers here are real TLS servers with
//! certificates made by the test (rcgen).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// (certificate PEM, key PEM) for 127.0.0.1 (a server) or a client.
    fn issue(&self, server: bool) -> (String, String) {
        let names = if server {
            vec!["127.0.0.1".to_string()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            if server { "receiver" } else { "hookd" },
        );
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server config for 127.0.0.1 issued by `ca`, asking for a client certificate issued
/// by `clients` when given.
fn server_config(ca: &Ca, clients: Option<&Ca>) -> rustls::ServerConfig {
    let (cert, key) = ca.issue(true);
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        Some(clients) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(clients.pem().as_bytes()).unwrap())
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(chain, key).unwrap()
}

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
    let cases: Vec<(Value, &str)> = vec![
        (json!({"ca": "not pem"}), "tls.ca"),
        (json!({"client_cert": cert}), "tls.client_key"),
        (json!({"client_key": key}), "tls.client_cert"),
        (
            json!({"client_cert": cert, "client_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}),
            "tls.client_key",
        ),
        (
            json!({"client_cert": other_cert, "client_key": key}),
            "tls.client_key",
        ),
        (json!({"pin": "x"}), "tls"),
    ];
    for (tls, field) in cases {
        let (status, body) = h.post(
            "/v1/endpoints",
            json!({"tenant": "t", "url": "https://127.0.0.1:9/", "event_types": ["*"], "tls": tls}),
        );
        assert_eq!(status, 400, "{tls}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{tls}: {message}");
        assert!(!message.contains("BEGIN"), "no PEM echoed: {message}");
    }
}
