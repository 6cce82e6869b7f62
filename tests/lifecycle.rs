//! Process lifecycle: graceful shutdown, systemd notifications, check-config, JSON logs.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn sigterm_lets_in_flight_attempts_finish_and_they_are_not_resent() {
    let mut h = Hookd::start(&[("HOOKD_SERVER__SHUTDOWN_GRACE", "10s")]);
    let r = Receiver::with(200, &[], Duration::from_secs(2));
    h.endpoint("t1", &r.url, &["*"], json!({}));
    let dlv = h.event_delivery("t1", "a", json!({}));
    r.wait_count(1, Duration::from_secs(5));
    let status = h.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", h.log_text());
    let logs = h.log_text();
    assert!(logs.contains("every in-flight attempt finished"), "{logs}");

    h.restart();
    assert_eq!(h.delivery(&dlv)["status"], "succeeded");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(r.count(), 1, "a finished delivery is not sent again");
}

#[test]
fn systemd_sees_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut h = Hookd::start(&[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means ready: the API answers.
    assert_eq!(h.get("/v1/endpoints").0, 200);
    assert!(h.terminate().success());
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[test]
fn check_config_prints_masked_configuration_or_names_the_bad_key() {
    let bin = env!("CARGO_BIN_EXE_hookd");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .arg("check-config")
        .current_dir(dir.path())
        .env("HOOKD_AUTH__ADMIN_TOKENS", r#"["a-very-secret-token"]"#)
        .env("HOOKD_DELIVERY__MAX_CONCURRENCY", "4")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("max_concurrency = 4"), "{text}");
    assert!(text.contains("***"));
    assert!(!text.contains("a-very-secret-token"));

    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[delivery]\nmax_concurency = 4\n").unwrap();
    let out = Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_concurency"));

    let out = Command::new(bin)
        .arg("check-config")
        .current_dir(dir.path())
        .env("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["1s","often"]"#)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("retry_schedule"), "{err}");
}

#[test]
fn json_logs_are_one_object_per_line_and_never_carry_secrets() {
    let h = Hookd::start(&[("HOOKD_LOG__FORMAT", "json"), ("HOOKD_LOG__LEVEL", "debug")]);
    let r = Receiver::start();
    let (_, secret) = h.endpoint("t1", &r.url, &["*"], json!({}));
    h.event("t1", "a", json!({}));
    r.wait_count(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let lines = h.logs.lock().unwrap().clone();
    assert!(lines.len() > 3);
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(v.is_object());
        assert!(!line.contains(&secret));
        assert!(!line.contains(ADMIN));
    }
    assert!(lines.iter().any(|l| l.contains("listening on")));
}
