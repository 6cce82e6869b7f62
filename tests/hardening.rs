//! Hostile surroundings: the SSRF guard, receivers that misbehave at the socket level (raw TCP
//! servers on 127.0.0.1), secret hygiene, and a second hookd on a data directory in use.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A TCP server on 127.0.0.1 that answers every connection with `behave`, on its own thread.
struct RawServer {
    url: String,
    connections: Arc<AtomicUsize>,
    /// Bytes the behaviour managed to write (for the flood).
    written: Arc<AtomicUsize>,
}

impl RawServer {
    fn start(behave: impl Fn(TcpStream, &AtomicUsize) + Send + Sync + 'static) -> RawServer {
        let behave = Arc::new(behave);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(AtomicUsize::new(0));
        let (c, w) = (connections.clone(), written.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                c.fetch_add(1, Ordering::SeqCst);
                let (w, behave) = (w.clone(), behave.clone());
                std::thread::spawn(move || behave(stream, &w));
            }
        });
        RawServer {
            url,
            connections,
            written,
        }
    }
}

/// Reads the request head (and whatever body came with it), bounded in time.
fn read_request(s: &mut TcpStream) {
    s.set_read_timeout(Some(SECS(2))).unwrap();
    let mut buf = [0u8; 16384];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

fn never_answers(mut s: TcpStream, _: &AtomicUsize) {
    read_request(&mut s);
    std::thread::sleep(SECS(20));
}

fn resets(mut s: TcpStream, _: &AtomicUsize) {
    read_request(&mut s);
    reset_connection(s);
}

fn trickles(mut s: TcpStream, _: &AtomicUsize) {
    read_request(&mut s);
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(200));
        if s.write_all(b"X").is_err() {
            return;
        }
    }
}

fn floods(mut s: TcpStream, written: &AtomicUsize) {
    read_request(&mut s);
    let total = 50 << 20;
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n");
    if s.write_all(head.as_bytes()).is_err() {
        return;
    }
    s.set_write_timeout(Some(SECS(10))).unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        match s.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                sent += n;
                written.fetch_add(n, Ordering::SeqCst);
            }
        }
    }
}

fn speaks_garbage(mut s: TcpStream, _: &AtomicUsize) {
    read_request(&mut s);
    let _ = s.write_all(b"SMTP READY\r\n\x00\x01\x02 not http\r\n\r\n");
}

fn redirects_to(mut s: TcpStream, target: &str) {
    read_request(&mut s);
    let _ = s.write_all(
        format!("HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    );
}

fn attempts(d: &Value) -> Vec<Value> {
    d["attempts"].as_array().unwrap().clone()
}

#[test]
fn hostile_receivers_fail_attempts_cleanly_and_are_retried_on_schedule() {
    let h = Hookd::start(&[]);
    let target = Receiver::start();
    let target_url = target.url.clone();
    let servers = [
        ("silent", RawServer::start(never_answers)),
        ("reset", RawServer::start(resets)),
        ("trickle", RawServer::start(trickles)),
        ("garbage", RawServer::start(speaks_garbage)),
        (
            "redirect",
            RawServer::start(move |s, _| redirects_to(s, &target_url)),
        ),
    ];
    let flood = RawServer::start(floods);
    let settings = json!({"timeout": "1s", "retry_schedule": ["1s"]});
    for (name, server) in &servers {
        h.endpoint(name, &server.url, &["*"], settings.clone());
    }
    h.endpoint("flood", &flood.url, &["*"], settings.clone());
    let rss_before = h.rss_bytes();

    let mut deliveries = Vec::new();
    for tenant in ["silent", "reset", "trickle", "garbage", "redirect", "flood"] {
        let id = h.event_delivery(tenant, "fraud_detected", json!({"tenant": tenant}));
        deliveries.push((tenant, id));
    }
    let started = Instant::now();
    for (tenant, id) in &deliveries {
        let expected = if *tenant == "flood" {
            "succeeded"
        } else {
            "failed"
        };
        let d = h.wait_delivery_status(id, expected, SECS(20));
        let tries = attempts(&d);
        let errors: Vec<&str> = tries
            .iter()
            .map(|a| a["error"].as_str().unwrap_or(""))
            .collect();
        eprintln!("{tenant}: {errors:?}");
        match *tenant {
            "flood" => {
                assert_eq!(tries.len(), 1);
                let kept = tries[0]["response_body"].as_str().unwrap();
                assert!(kept.len() <= 1024 && kept.starts_with("aaaa"), "{kept:?}");
            }
            _ => {
                assert_eq!(tries.len(), 2, "{tenant}: the first try and one retry");
                let gap = rfc3339_ms(&tries[1]["at"]) - rfc3339_ms(&tries[0]["at"]);
                let first_took = tries[0]["duration_ms"].as_i64().unwrap();
                assert!(
                    gap >= 1000 + first_took - 50,
                    "{tenant}: retry {gap} ms after the first start"
                );
            }
        }
        for a in &tries {
            let error = a["error"].as_str().unwrap_or("");
            let took = a["duration_ms"].as_u64().unwrap();
            match *tenant {
                "silent" | "trickle" => {
                    assert_eq!(error, "timeout", "{tenant}");
                    assert!(
                        (900..3000).contains(&took),
                        "{tenant}: {took} ms for a 1 s timeout"
                    );
                }
                "reset" | "garbage" => {
                    assert!(!error.is_empty() && error != "timeout", "{tenant}: {error}");
                    assert!(took < 2000, "{tenant}: {took} ms");
                }
                "redirect" => {
                    assert_eq!(a["status_code"], 302);
                    assert!(error.contains("redirect"), "{error}");
                }
                _ => assert_eq!(a["status_code"], 200),
            }
        }
    }
    assert!(started.elapsed() < SECS(20));
    for (name, server) in &servers[..4] {
        assert_eq!(
            server.connections.load(Ordering::SeqCst),
            2,
            "{name}: one connection per attempt"
        );
    }
    assert_eq!(target.count(), 0, "the redirect was not followed");
    let flooded = flood.written.load(Ordering::SeqCst);
    assert!(
        flooded < 20 << 20,
        "hookd stopped reading the 50 MB body early ({flooded} bytes left the server)"
    );
    let rss_after = h.rss_bytes();
    assert!(
        rss_after < rss_before + (32 << 20),
        "memory stayed flat: {rss_before} → {rss_after} bytes"
    );
}

#[test]
fn private_addresses_are_refused_at_creation_and_at_connect_time() {
    let h = Hookd::start(&[("HOOKD_DELIVERY__ALLOW_PRIVATE_NETWORKS", "false")]);
    let rx = Receiver::start();
    let port = rx.url.split(':').nth(2).unwrap().split('/').next().unwrap();
    for host in [
        "127.0.0.1",
        "2130706433",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "127.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.0.10",
        "100.64.1.1",
        "169.254.169.254",
        "[fe80::1]",
        "[fd00::1]",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
    ] {
        let url = format!("http://{host}:{port}/hook");
        let (status, err) = h.post(
            "/v1/endpoints",
            json!({"tenant": "t1", "url": url, "event_types": ["*"]}),
        );
        assert_eq!(status, 400, "{url}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("url:") && message.contains("private address"),
            "{url}: {message}"
        );
    }
    let (_, list) = h.get("/v1/endpoints");
    assert_eq!(list["endpoints"], json!([]), "nothing stored");

    // A name is checked where it resolves, at connect time: localhost resolves to loopback.
    let url = format!("http://localhost:{port}/hook");
    let (id, _) = h.endpoint("t1", &url, &["*"], json!({"retry_schedule": []}));
    let dlv = h.event_delivery("t1", "fraud_detected", json!({}));
    let d = h.wait_delivery_status(&dlv, "failed", SECS(10));
    let error = d["attempts"][0]["error"].as_str().unwrap();
    assert!(
        error == "blocked: private address 127.0.0.1" || error == "blocked: private address ::1",
        "{error}"
    );
    assert_eq!(rx.count(), 0, "nothing reached the loopback receiver");
    let (_, out) = h.post_empty(&format!("/v1/endpoints/{id}/test"));
    assert_eq!(out["success"], false);
    assert!(out["error"]
        .as_str()
        .unwrap()
        .starts_with("blocked: private address"));
    assert_eq!(rx.count(), 0);
    let metrics = h.metrics_text();
    assert!(metrics.contains(&format!(
        "hookd_attempts_total{{endpoint=\"{id}\",result=\"connect_error\"}} 2"
    )));
}

#[test]
fn secrets_never_leave_except_in_create_and_rotate() {
    let mut h = Hookd::start(&[("HOOKD_LOG__LEVEL", "trace")]);
    let rx = Receiver::start();
    let (status, created) = h.post(
        "/v1/endpoints",
        json!({"tenant": "t1", "url": rx.url, "event_types": ["*"], "retry_schedule": ["1s"]}),
    );
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap().to_string();
    let first = created["secret"].as_str().unwrap().to_string();
    let (status, rotated) = h.post_empty(&format!("/v1/endpoints/{id}/rotate-secret"));
    assert_eq!(status, 200);
    let second = rotated["secret"].as_str().unwrap().to_string();
    let secrets = [first.clone(), second.clone()];
    // The Standard Webhooks key too: the base64 part after whsec_.
    let needles: Vec<String> = secrets
        .iter()
        .flat_map(|s| [s.clone(), s.trim_start_matches("whsec_").to_string()])
        .collect();

    let ev = h.event("t1", "fraud_detected", json!({"n": 1}));
    let dlv = h.delivery_ids("t1", ev["id"].as_str().unwrap()).remove(0);
    h.wait_delivery_status(&dlv, "succeeded", SECS(10));
    let mut responses = vec![
        h.get(&format!("/v1/endpoints/{id}")).1,
        h.get("/v1/endpoints").1,
        h.get("/v1/endpoints?tenant=t1").1,
        h.patch(&format!("/v1/endpoints/{id}"), json!({"description": "x"}))
            .1,
        h.post_empty(&format!("/v1/endpoints/{id}/pause")).1,
        h.post_empty(&format!("/v1/endpoints/{id}/resume")).1,
        h.post_empty(&format!("/v1/endpoints/{id}/test")).1,
        h.get(&format!("/v1/endpoints/{id}/deliveries")).1,
        h.get(&format!("/v1/deliveries/{dlv}")).1,
        h.get(&format!(
            "/v1/events/{}?tenant=t1",
            ev["id"].as_str().unwrap()
        ))
        .1,
    ];
    let (status, err) = h.patch(&format!("/v1/endpoints/{id}"), json!({"secret": first}));
    assert_eq!(status, 400);
    responses.push(err);
    let metrics = h.metrics_text();
    assert_eq!(h.terminate().code(), Some(0));
    let logs = h.log_text();
    assert!(
        logs.contains("TRACE") || logs.contains("trace"),
        "logs at trace level"
    );
    for needle in &needles {
        for r in &responses {
            assert!(
                !r.to_string().contains(needle.as_str()),
                "secret in response {r}"
            );
        }
        assert!(!metrics.contains(needle.as_str()), "secret in metrics");
        assert!(!logs.contains(needle.as_str()), "secret in the logs");
    }

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(h.data_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "data directory mode {mode:o}");
}

#[test]
fn a_second_hookd_on_a_data_directory_in_use_exits_at_once() {
    let h = Hookd::start(&[]);
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_hookd"))
        .arg("serve")
        .env_remove("HOOKD_CONFIG")
        .env("HOOKD_SERVER__LISTEN", "127.0.0.1:0")
        .env("HOOKD_STORAGE__PATH", h.data_dir())
        .env("HOOKD_AUTH__ADMIN_TOKENS", json!([ADMIN]).to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(started.elapsed() < SECS(10));
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "data directory {} is in use by another hookd",
            h.data_dir().display()
        )),
        "{stderr}"
    );
    // It failed before it listened, and said so once.
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert_eq!(
        stderr.matches("is in use by another hookd").count(),
        1,
        "{stderr}"
    );
    // The first one is unharmed.
    let rx = Receiver::start();
    h.endpoint("t1", &rx.url, &["*"], json!({}));
    h.event("t1", "a", json!({}));
    rx.wait_count(1, SECS(10));
}

fn rfc3339_ms(v: &Value) -> i64 {
    let t = humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(size_mb: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap().keep();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(dir))
    }

    fn resize(&self, size_mb: u32) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size_mb}m")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Disk full: below `storage.min_free_bytes` ingest answers 503 naming the cause, nothing
/// acknowledged is lost, and ingest resumes by itself as soon as there is room again. Needs
/// root to mount a small tmpfs; elsewhere it says so and checks nothing.
#[test]
fn a_full_disk_gets_503_loses_nothing_and_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount(24) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let data = disk.0.join("data");
    let mut h = Hookd::start(&[
        ("HOOKD_STORAGE__PATH", data.to_str().unwrap()),
        ("HOOKD_STORAGE__MIN_FREE_BYTES", "8388608"),
    ]);
    let big = "x".repeat(200_000);
    let post = |i: usize| {
        let body =
            json!({"id": format!("e{i}"), "tenant": "t1", "type": "a", "payload": {"s": big}});
        let resp = h
            .raw(reqwest::Method::POST, "/v1/events")
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .unwrap_or_else(|e| {
                std::thread::sleep(SECS(1));
                panic!("event e{i}: {e}; hookd log:\n{}", h.log_text())
            });
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().unwrap_or(Value::Null))
    };
    let mut acked = 0;
    let refusal = loop {
        let (status, body) = post(acked);
        if status != 202 {
            break (status, body);
        }
        acked += 1;
        assert!(acked < 500, "the 24 MB disk never filled");
    };
    assert_eq!(refusal.0, 503, "{}", refusal.1);
    assert_eq!(refusal.1["error"]["code"], "disk_full");
    let message = refusal.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("disk full") && message.contains("storage.min_free_bytes"),
        "{message}"
    );
    assert!(acked > 10, "{acked} acknowledged before the disk filled");
    assert_eq!(post(acked).0, 503, "still refused while full");
    assert_eq!(h.get("/healthz").0, 200, "hookd itself is fine");

    disk.resize(48);
    let mut resumed_after = Duration::ZERO;
    let started = Instant::now();
    wait_until(SECS(5), "ingest resumes", || {
        resumed_after = started.elapsed();
        post(acked).0 == 202
    });
    eprintln!("{acked} events acknowledged before the disk filled; ingest resumed {resumed_after:?} after space returned");
    acked += 1;
    h.kill();
    h.restart();
    for i in 0..acked {
        let (status, ev) = h.get(&format!("/v1/events/e{i}?tenant=t1"));
        assert_eq!(status, 200, "acknowledged event e{i} survived: {ev}");
    }
}
