//! Egress through an HTTP CONNECT proxy (API.md §13), with a proxy made here: deliveries go
//! through it, a proxy that is down is `proxy_error` and leaves the circuit alone, and the
//! SSRF guard still refuses a private target behind it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;

/// A CONNECT proxy: records each CONNECT target, then relays bytes both ways. While `down`,
/// it accepts and closes at once (a proxy that cannot serve).
struct ConnectProxy {
    url: String,
    targets: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicBool>,
}

impl ConnectProxy {
    fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let targets = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let (t, d) = (targets.clone(), down.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if d.load(Ordering::SeqCst) {
                    reset_connection(client);
                    continue;
                }
                let t = t.clone();
                std::thread::spawn(move || relay(client, &t));
            }
        });
        ConnectProxy { url, targets, down }
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

fn relay(client: TcpStream, targets: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap_or(0);
    let target = match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["CONNECT", target, _] => target.to_string(),
        _ => return,
    };
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
    }
    targets.lock().unwrap().push(target.clone());
    let Ok(upstream) = TcpStream::connect(&target) else {
        let _ = (&client).write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return;
    };
    let _ = (&client).write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n");
    let (mut c_read, mut u_write) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut u_read, mut c_write) = (upstream, client);
    let _ = std::io::copy(&mut u_read, &mut c_write);
    let _ = c_write.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

const SCHEDULE: &str = r#"["100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms"]"#;

#[test]
fn deliveries_go_through_the_proxy_and_a_proxy_that_is_down_is_not_the_receivers_fault() {
    let proxy = ConnectProxy::start();
    let r = Receiver::start();
    let h = Hookd::start(&[
        ("HOOKD_DELIVERY__PROXY", proxy.url.as_str()),
        ("HOOKD_DELIVERY__RETRY_SCHEDULE", SCHEDULE),
        // Ignored: only hookd's own settings choose a proxy.
        ("HTTP_PROXY", "http://127.0.0.1:9"),
        ("HTTPS_PROXY", "http://127.0.0.1:9"),
    ]);
    let (id, secret) = h.endpoint("t", &r.url, &["*"], json!({}));
    let (_, view) = h.get(&format!("/v1/endpoints/{id}"));
    assert_eq!(view["proxy"], proxy.url.as_str());
    let ds: Vec<String> = (0..3)
        .map(|i| h.event_delivery("t", "a", json!({"i": i})))
        .collect();
    for d in &ds {
        h.wait_delivery_status(d, "succeeded", Duration::from_secs(10));
    }
    let port = r.url.split(':').nth(2).unwrap().split('/').next().unwrap();
    assert_eq!(proxy.targets(), vec![format!("127.0.0.1:{port}"); 3]);
    // Signed as ever, through the tunnel.
    verify_signatures(&r.received()[0], &secret, "X-Webhook-Signature");

    proxy.down.store(true, Ordering::SeqCst);
    let d = h.event_delivery("t", "a", json!({"while": "down"}));
    wait_until(
        Duration::from_secs(15),
        "eight proxy_error attempts",
        || h.delivery(&d)["attempts"].as_array().unwrap().len() >= 8,
    );
    for a in h.delivery(&d)["attempts"].as_array().unwrap() {
        assert_eq!(a["result"], "proxy_error", "{a}");
        assert!(
            a["error"].as_str().unwrap().starts_with("proxy_error: "),
            "{a}"
        );
    }
    let (_, ep) = h.get(&format!("/v1/endpoints/{id}"));
    assert_eq!(ep["stats"]["state"], "active", "circuit untouched: {ep}");
    assert_eq!(ep["stats"]["consecutive_failures"], 0);
    let metrics = h.metrics_text();
    assert!(metrics.contains(&format!(
        "hookd_attempts_total{{endpoint=\"{id}\",result=\"proxy_error\"}}"
    )));
    assert_eq!(r.count(), 3);

    proxy.down.store(false, Ordering::SeqCst);
    h.wait_delivery_status(&d, "succeeded", Duration::from_secs(10));
    assert_eq!(r.count(), 4);
}

#[test]
fn an_endpoints_own_proxy_is_used_and_the_guard_still_refuses_private_targets() {
    let proxy = ConnectProxy::start();
    let r = Receiver::start();
    // The guard on: a name that resolves to loopback is refused before any CONNECT.
    let h = Hookd::start(&[
        ("HOOKD_DELIVERY__ALLOW_PRIVATE_NETWORKS", "false"),
        ("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["30s"]"#),
    ]);
    let url = r.url.replace("127.0.0.1", "localhost");
    h.endpoint("t", &url, &["*"], json!({"proxy": proxy.url}));
    let d = h.event_delivery("t", "a", json!({}));
    let mut error = String::new();
    wait_until(Duration::from_secs(10), "a refused attempt", || {
        match h.delivery(&d)["attempts"][0]["error"].as_str() {
            Some(e) => {
                error = e.to_string();
                true
            }
            None => false,
        }
    });
    assert!(error.starts_with("blocked: private address"), "{error}");
    assert!(
        proxy.targets().is_empty(),
        "no CONNECT for a refused target"
    );
    assert_eq!(r.count(), 0);

    // A bad proxy setting is refused naming the field.
    let (status, body) = h.post(
        "/v1/endpoints",
        json!({"tenant": "t", "url": "https://example.com/", "event_types": ["*"], "proxy": "socks5://p:1"}),
    );
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("proxy"),
        "{body}"
    );
    drop(h);

    // The guard off: the endpoint's own proxy carries it.
    let h = Hookd::start(&[]);
    h.endpoint("t", &url, &["*"], json!({"proxy": proxy.url}));
    let d = h.event_delivery("t", "a", json!({}));
    h.wait_delivery_status(&d, "succeeded", Duration::from_secs(10));
    assert_eq!(proxy.targets().len(), 1);
    assert!(
        !proxy.targets()[0].starts_with("localhost"),
        "the CONNECT names the resolved address"
    );

    // https inside the tunnel: the receiver's certificate is checked (here against its
    // private CA), and the client certificate it asks for is presented.
    let server_ca = common::pki::Ca::new("Receiver CA");
    let client_ca = common::pki::Ca::new("Client CA");
    let tls_r = Receiver::tls(common::pki::server_config(&server_ca, Some(&client_ca)));
    let (cert, key) = client_ca.issue(false);
    h.endpoint(
        "tls",
        &tls_r.url,
        &["*"],
        json!({"proxy": proxy.url, "tls": {"ca": server_ca.pem(), "client_cert": cert, "client_key": key}}),
    );
    let d = h.event_delivery("tls", "a", json!({}));
    h.wait_delivery_status(&d, "succeeded", Duration::from_secs(10));
    assert_eq!(tls_r.count(), 1);
    assert_eq!(proxy.targets().len(), 2);
    // Without the CA the tunnel opens, and TLS refuses the receiver.
    h.endpoint("untrusted", &tls_r.url, &["*"], json!({"proxy": proxy.url}));
    let d = h.event_delivery("untrusted", "a", json!({}));
    wait_until(Duration::from_secs(10), "a refused handshake", || {
        h.delivery(&d)["attempts"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("UnknownIssuer"))
    });
    assert_eq!(tls_r.count(), 1);
}
