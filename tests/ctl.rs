//! `hookd ctl` against a real hookd: every command, in tables and in `--json`, its exit codes,
//! `tail` over `GET /v1/stream`, and `receive` checking both signatures of real deliveries.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, hookd_bin, Hookd, Receiver, ADMIN};
use serde_json::{json, Value};

/// `hookd ctl` with the URL and token in the environment, as an operator would set them.
fn ctl_command(h: &Hookd, args: &[&str]) -> Command {
    h.ctl_command(args)
}

fn ctl(h: &Hookd, args: &[&str]) -> Output {
    ctl_command(h, args).output().expect("run hookd ctl")
}

/// Runs ctl, expects exit 0; its stdout.
fn ok(h: &Hookd, args: &[&str]) -> String {
    let out = ctl(h, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "hookd ctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs ctl with --json first; its parsed stdout.
fn ok_json(h: &Hookd, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = ok(h, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
}

/// A long-running ctl (tail, receive) whose stdout lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hookd ctl");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The next line that satisfies `want`, within `within`.
    fn wait_line(&self, within: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("no matching line within {within:?}"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_endpoint_command_in_tables_and_json() {
    let h = Hookd::start(&[("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["1s"]"#)]);
    let rx = Receiver::start();

    let created = ok_json(
        &h,
        &[
            "endpoints",
            "create",
            "--tenant",
            "t1",
            "--url",
            &rx.url,
            "--types",
            "fraud_detected,sale.created",
            "--description",
            "CRM",
            "--header",
            "X-Team=risk",
            "--signature-header",
            "X-ClickDefender-Signature",
            "--timeout",
            "10s",
            "--retry-schedule",
            "1s,2s",
            "--max-concurrency",
            "4",
            "--rate-limit",
            "50/s,burst=10",
            "--ordering",
            "key",
            "--ttl",
            "1h",
            "--filter",
            r#"{"decision.score": {"$gte": 70}}"#,
        ],
    );
    let id = created["id"].as_str().expect("id").to_string();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(
        created["event_types"],
        json!(["fraud_detected", "sale.created"])
    );
    assert_eq!(created["headers"], json!({"X-Team": "***"}));
    assert_eq!(
        created["rate_limit"],
        json!({"per_second": 50.0, "burst": 10})
    );
    assert_eq!(created["retry_schedule"], json!(["1s", "2s"]));
    assert_eq!(created["ordering"], "key");
    assert_eq!(created["filter"], json!({"decision.score": {"$gte": 70}}));

    // The human form shows the settings and, once, the secret.
    let human = ok(
        &h,
        &[
            "endpoints",
            "create",
            "--tenant",
            "t1",
            "--url",
            &rx.url,
            "--types",
            "*",
        ],
    );
    assert!(human.contains("secret (shown once"), "{human}");
    assert!(
        human.contains("event_types") && human.contains("[\"*\"]"),
        "{human}"
    );

    let list = ok(&h, &["endpoints", "list", "--tenant", "t1"]);
    assert!(list.starts_with("ID"), "{list}");
    assert!(list.contains(&id) && list.contains("active"), "{list}");
    assert_eq!(
        ok_json(&h, &["endpoints", "list", "--tenant", "nobody"])["endpoints"],
        json!([])
    );

    let shown = ok(&h, &["endpoints", "show", &id]);
    assert!(
        shown.contains("X-ClickDefender-Signature") && shown.contains("pending"),
        "{shown}"
    );
    assert!(
        !shown.contains("whsec_"),
        "show never prints the secret: {shown}"
    );
    assert_eq!(
        ok_json(&h, &["endpoints", "show", &id])["stats"]["pending"],
        0
    );

    let updated = ok_json(&h, &["endpoints", "update", &id, "--description", "CRM v2"]);
    assert_eq!(updated["description"], "CRM v2");
    assert!(
        ok(&h, &["endpoints", "update", &id, "--max-concurrency", "2"])
            .contains("max_concurrency   2")
    );

    assert!(ok(&h, &["endpoints", "pause", &id]).contains("is paused"));
    let status = ok(&h, &["status"]);
    assert!(status.contains("paused (operator)"), "{status}");
    assert_eq!(
        ok_json(&h, &["endpoints", "resume", &id])["status"],
        "active"
    );
    assert!(ok(&h, &["endpoints", "pause", &id]).contains("is paused"));
    assert!(ok(&h, &["endpoints", "resume", &id]).contains("is active"));

    let test = ok(&h, &["endpoints", "test", &id, "--type", "fraud_detected"]);
    assert!(test.starts_with("test succeeded: status 200"), "{test}");
    let test = ok_json(&h, &["endpoints", "test", &id]);
    assert_eq!(test["success"], true);
    assert_eq!(rx.count(), 2);
    assert_eq!(
        rx.received()[0].header("x-webhook-event"),
        Some("fraud_detected")
    );

    let rotated = ok_json(&h, &["endpoints", "rotate-secret", &id]);
    assert!(rotated["secret"].as_str().unwrap().starts_with("whsec_"));
    assert!(ok(&h, &["endpoints", "rotate-secret", &id]).contains("new secret (shown once"));

    assert!(ok(&h, &["endpoints", "delete", &id]).contains("deleted"));
    let gone = ctl(&h, &["endpoints", "show", &id]);
    assert_eq!(gone.status.code(), Some(1));
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("no endpoint") && err.contains("404"), "{err}");
    let json_delete = ctl(&h, &["--json", "endpoints", "delete", &id]);
    assert_eq!(
        json_delete.status.code(),
        Some(1),
        "deleting twice is an API error"
    );
}

#[test]
fn deliveries_events_recover_and_status() {
    let h = Hookd::start(&[("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["300ms"]"#)]);
    let rx = Receiver::with(500, &[], Duration::ZERO);
    let (id, _) = h.endpoint("t1", &rx.url, &["*"], json!({}));

    let sent = ok_json(
        &h,
        &[
            "events",
            "send",
            "--tenant",
            "t1",
            "--type",
            "fraud_detected",
            "--payload",
            r#"{"score": 85.0}"#,
            "--id",
            "evt_ctl_1",
        ],
    );
    assert_eq!(
        sent,
        json!({"id": "evt_ctl_1", "deliveries": 1, "duplicate": false})
    );
    let again = ok(
        &h,
        &[
            "events",
            "send",
            "--tenant",
            "t1",
            "--type",
            "fraud_detected",
            "--payload",
            "{}",
            "--id",
            "evt_ctl_1",
        ],
    );
    assert!(again.contains("duplicate"), "{again}");
    let file = h.dir.join("payload.json");
    std::fs::write(&file, r#"{"visitor": "v1"}"#).unwrap();
    ok(
        &h,
        &[
            "events",
            "send",
            "--tenant",
            "t1",
            "--type",
            "visitor.blocked",
            "--payload-file",
            file.to_str().unwrap(),
        ],
    );

    let event = ok_json(&h, &["events", "show", "evt_ctl_1", "--tenant", "t1"]);
    assert_eq!(event["payload"], json!({"score": 85}));
    let delivery = event["deliveries"][0]["id"].as_str().unwrap().to_string();
    let shown = ok(&h, &["events", "show", "evt_ctl_1", "--tenant", "t1"]);
    assert!(shown.contains(&delivery), "{shown}");

    // Both fail: the first try and one retry.
    h.wait_delivery_status(&delivery, "failed", Duration::from_secs(10));
    let shown = ok(&h, &["deliveries", "show", &delivery]);
    assert!(
        shown.contains("status 500") && shown.lines().count() >= 4,
        "{shown}"
    );
    assert_eq!(
        ok_json(&h, &["deliveries", "show", &delivery])["attempts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let page = ok_json(
        &h,
        &["deliveries", "list", "--endpoint", &id, "--limit", "1"],
    );
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());
    let every = ok_json(
        &h,
        &[
            "deliveries",
            "list",
            "--endpoint",
            &id,
            "--limit",
            "1",
            "--all",
        ],
    );
    assert_eq!(every["deliveries"].as_array().unwrap().len(), 2);
    let table = ok(
        &h,
        &[
            "deliveries",
            "list",
            "--endpoint",
            &id,
            "--status",
            "failed",
        ],
    );
    assert!(
        table.starts_with("DELIVERY") && table.contains("failed"),
        "{table}"
    );

    let status = ok_json(&h, &["status"]);
    assert_eq!(status["ready"], true);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["endpoints"][0]["id"], id.as_str());
    assert_eq!(status["endpoints"][0]["success_ratio_last_hour"], 0.0);
    let human = ok(&h, &["status"]);
    assert!(
        human.contains("ready") && human.contains("0.0% of 4"),
        "{human}"
    );

    // The receiver recovers: a retry, then a recover of the rest, succeed.
    rx.set_status(200);
    assert!(ok(&h, &["deliveries", "retry", &delivery]).contains("pending again"));
    h.wait_delivery_status(&delivery, "succeeded", Duration::from_secs(10));
    let recovered = ok_json(&h, &["recover", &id, "--since", "1h"]);
    assert_eq!(recovered["requeued"], 1);
    let none = ok(
        &h,
        &[
            "recover",
            &id,
            "--since",
            "2026-01-01T00:00:00Z",
            "--until",
            "2026-01-02T00:00:00Z",
        ],
    );
    assert!(none.contains("0 deliveries queued again"), "{none}");
    h.wait_all_delivered(&[&id], Duration::from_secs(10));
    let status = ok_json(&h, &["status"]);
    assert_eq!(status["pending"], 0);
    assert_eq!(status["endpoints"][0]["attempts_last_hour"], 6);

    // Retrying a test send is refused (409), and ctl says so with exit 1.
    let test = ok_json(&h, &["endpoints", "test", &id]);
    let refused = ctl(
        &h,
        &["deliveries", "retry", test["delivery_id"].as_str().unwrap()],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not_retryable, HTTP 409"));
}

#[test]
fn exit_codes_defaults_and_generated_files() {
    let h = Hookd::start(&[]);
    // Usage errors: exit 2.
    for args in [
        vec!["bogus"],
        vec!["endpoints", "create", "--url", "http://x"],
        vec!["recover", "ep_x", "--since", "yesterday-ish"],
        vec!["events", "send", "--tenant", "t", "--type", "x"],
    ] {
        let out = ctl(&h, &args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A wrong token: the API's 401, exit 1.
    let out = ctl_command(&h, &["endpoints", "list"])
        .env("HOOKD_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"));
    // Nobody listening: a connection error, exit 1.
    let out = ctl_command(&h, &["status"])
        .env("HOOKD_URL", format!("http://127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach hookd"));

    // Without HOOKD_URL and HOOKD_TOKEN: server.listen and <storage.path>/admin.token of the
    // configuration given, here one whose generated token is the only one.
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = data.path().join("hookd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = \"{}\"\n",
            data.path().join("data").display()
        ),
    )
    .unwrap();
    let mut serve = Command::new(hookd_bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("HOOKD_CONFIG")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let out = Command::new(hookd_bin())
            .args([
                "ctl",
                "--config",
                config.to_str().unwrap(),
                "--json",
                "status",
            ])
            .env_remove("HOOKD_URL")
            .env_remove("HOOKD_TOKEN")
            .output()
            .unwrap();
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["ready"], true);

    // Completions and the man page come from the command definition.
    for shell in ["bash", "zsh", "fish"] {
        let out = ok(&h, &["completions", shell]);
        assert!(
            out.contains("rotate-secret") && out.contains("deliveries"),
            "{shell}"
        );
    }
    let man = Command::new(hookd_bin()).arg("man").output().unwrap();
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(man.starts_with(".ie") || man.contains(".TH hookd"), "{man}");
    assert!(man.contains("ctl"));
}

#[test]
fn tail_shows_an_attempt_within_a_second_and_receive_checks_both_signatures() {
    let h = Hookd::start(&[]);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let created = ok_json(
        &h,
        &[
            "endpoints",
            "create",
            "--tenant",
            "t1",
            "--url",
            &url,
            "--types",
            "*",
            "--signature-header",
            "X-ClickDefender-Signature",
        ],
    );
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();

    let receiver = Running::start({
        let mut c = ctl_command(
            &h,
            &[
                "receive",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--secret",
                &secret,
            ],
        );
        c.env_remove("HOOKD_URL");
        c
    });
    receiver.wait_line(Duration::from_secs(10), |l| l.starts_with("listening on"));
    let tail = Running::start(ctl_command(&h, &["tail", "--endpoint", &id]));
    let json_tail = Running::start(ctl_command(&h, &["--json", "tail", "--tenant", "t1"]));
    // The stream is open once hookd counts its subscriber; give both a moment to connect.
    std::thread::sleep(Duration::from_millis(500));

    let sent_at = Instant::now();
    let event = h.event("t1", "fraud_detected", json!({"score": 85.0}));
    let line = tail.wait_line(Duration::from_secs(5), |l| l.contains("attempt 1"));
    assert!(
        sent_at.elapsed() < Duration::from_secs(1),
        "tail saw it after {:?}",
        sent_at.elapsed()
    );
    assert!(
        line.contains(&id) && line.contains("success") && line.contains("200"),
        "{line}"
    );
    let v: Value = serde_json::from_str(
        &json_tail.wait_line(Duration::from_secs(5), |l| l.contains("\"attempt\"")),
    )
    .unwrap();
    assert_eq!(v["event_id"], event["id"]);
    assert_eq!(v["n"], 1);
    assert_eq!(v["result"], "success");

    let got = receiver.wait_line(Duration::from_secs(5), |l| l.starts_with("POST /hook"));
    assert!(got.contains(event["id"].as_str().unwrap()), "{got}");
    let sigs = receiver.wait_line(Duration::from_secs(5), |l| l.contains("signature"));
    assert_eq!(sigs.trim(), "hex signature: ok  webhook-signature: ok");
    receiver.wait_line(Duration::from_secs(5), |l| l.contains(r#"{"score":85}"#));

    // A state change shows too.
    ok(&h, &["endpoints", "pause", &id]);
    let line = tail.wait_line(Duration::from_secs(5), |l| l.contains("is now"));
    assert!(line.contains("is now paused (operator)"), "{line}");

    // A receiver holding the wrong secret sees both signatures fail, and answers as told.
    drop(receiver);
    ok(&h, &["endpoints", "resume", &id]);
    let wrong = Running::start(ctl_command(
        &h,
        &[
            "--json",
            "receive",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--secret",
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "--status",
            "503",
        ],
    ));
    wrong.wait_line(Duration::from_secs(10), |l| l.starts_with("listening on"));
    // A failed test send prints its outcome and exits 1.
    let out = ctl(&h, &["--json", "endpoints", "test", &id]);
    assert_eq!(out.status.code(), Some(1));
    let test: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(test["status_code"], 503);
    let v: Value =
        serde_json::from_str(&wrong.wait_line(Duration::from_secs(5), |l| l.starts_with('{')))
            .unwrap();
    assert_eq!(v["hex_signature"], "BAD");
    assert_eq!(v["standard_signature"], "BAD");
    assert_eq!(v["answered"], 503);
}

#[test]
fn the_stream_refuses_a_65th_subscriber_and_needs_an_admin_token() {
    let h = Hookd::start(&[]);
    let rx = Receiver::start();
    h.endpoint("t", &rx.url, &["*"], json!({}));
    let (status, _) = h.request(
        reqwest::Method::GET,
        "/v1/stream?tennant=x",
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 400);
    let (status, _) = h.request(
        reqwest::Method::GET,
        "/v1/stream",
        Some(common::INGEST),
        None,
    );
    assert_eq!(status, 403);
    let open: Vec<_> = (0..64)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(h.base.trim_start_matches("http://")).unwrap();
            std::io::Write::write_all(
                &mut s,
                format!(
                    "GET /v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
            let mut first = [0u8; 12];
            std::io::Read::read_exact(&mut s, &mut first).unwrap();
            assert_eq!(&first, b"HTTP/1.1 200");
            s
        })
        .collect();
    let (status, body) = h.request(reqwest::Method::GET, "/v1/stream", Some(ADMIN), None);
    assert_eq!(status, 429, "{body}");
    drop(open);
    // Places are freed once hookd notices the clients left (its next write to them).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = h
            .raw(reqwest::Method::GET, "/v1/stream")
            .bearer_auth(ADMIN)
            .timeout(Duration::from_secs(2))
            .send();
        if resp.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "places were never freed");
        // Lines written to the dead connections find them closed.
        h.event("t", "x", json!({}));
        std::thread::sleep(Duration::from_millis(200));
    }
}
