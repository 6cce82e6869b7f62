//! Host loss: a backup taken through the running daemon while events are ingested and
//! delivered, the data directory then deleted, `hookd restore` into a new one and a start:
//! every event acknowledged before the backup began is delivered (at least once, before the
//! loss or after the restore), and none acknowledged after the backup answered is claimed.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn a_backup_under_load_restores_every_event_acknowledged_before_it() {
    // Slow enough that a backlog is pending when the backup is cut: one delivery at a time,
    // 30 ms each (33 a second), against the 100 to 500 events a second one client ingests.
    // The endpoint is paused once the backup has answered, so that backlog is still pending at
    // the loss (left to drain, it was delivered before the loss on a loaded CI machine).
    let rx = Receiver::with(200, &[], Duration::from_millis(30));
    let mut h = Hookd::start(&[("HOOKD_OPERATOR__TENANT", "")]);
    let (ep, _) = h.endpoint("bk", &rx.url, &["*"], json!({"max_concurrency": 1}));

    // One client ingests b0, b1, … back to back, noting when each was acknowledged.
    let acked: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ingest = {
        let (acked, stop, base) = (acked.clone(), stop.clone(), h.base.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let r = client
                    .post(format!("{base}/v1/events"))
                    .bearer_auth(INGEST)
                    .json(&json!({"id": format!("b{n}"), "tenant": "bk",
                                  "type": "fraud_detected", "payload": {"n": n}}))
                    .send()
                    .expect("ingest");
                assert_eq!(r.status(), 202);
                acked.lock().unwrap().push((n, Instant::now()));
                n += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    let backup_dir = tempfile::tempdir().unwrap();
    let backup = backup_dir.path().join("hookd-backup");
    let began = Instant::now();
    let (code, done) = h.post(
        "/v1/admin/backup",
        json!({"path": backup.display().to_string()}),
    );
    let answered = Instant::now();
    assert_eq!(code, 201, "{done}");
    let (paused, _) = h.post_empty(&format!("/v1/endpoints/{ep}/pause"));
    assert_eq!(paused, 200);
    assert_eq!(done["path"], backup.display().to_string());
    assert!(done["files"].as_u64().unwrap() > 0, "{done}");
    // Ingest and delivery go on after the backup.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    ingest.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let before: BTreeSet<u64> = acked
        .iter()
        .filter(|(_, at)| *at < began)
        .map(|(n, _)| *n)
        .collect();
    let after: BTreeSet<u64> = acked
        .iter()
        .filter(|(_, at)| *at > answered)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        before.len() > 50 && after.len() > 50,
        "{} / {}",
        before.len(),
        after.len()
    );
    let pending_at_loss = h.history(&ep, Some("pending")).len();
    assert!(
        pending_at_loss > 0,
        "a backlog was pending when the host was lost"
    );

    // A second backup into the same place is refused; a relative path names the field.
    let (code, again) = h.post(
        "/v1/admin/backup",
        json!({"path": backup.display().to_string()}),
    );
    assert_eq!(
        (code, again["error"]["code"].as_str()),
        (409, Some("exists")),
        "{again}"
    );
    let (code, rel) = h.post("/v1/admin/backup", json!({"path": "relative/dir"}));
    assert_eq!(code, 400, "{rel}");
    assert!(
        rel["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("path"),
        "{rel}"
    );

    // The host is lost: the process and its whole data directory.
    h.kill();
    std::fs::remove_dir_all(h.data_dir()).unwrap();
    let delivered_before_loss: BTreeSet<u64> = rx
        .received()
        .iter()
        .filter_map(|r| r.json()["n"].as_u64())
        .collect();

    // Restore on a new data directory; a non-empty one is refused.
    let fresh = tempfile::tempdir().unwrap();
    let occupied = fresh.path().join("occupied");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("something"), b"x").unwrap();
    let refused = restore(&backup, &occupied);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not empty"),
        "{refused:?}"
    );
    let restored = restore(&backup, &fresh.path().join("data"));
    assert!(restored.status.success(), "{restored:?}");
    let h2 = Hookd::start_on(fresh, &[("HOOKD_OPERATOR__TENANT", "")]);
    let (_, ep_view) = h2.get(&format!("/v1/endpoints/{ep}"));
    assert_eq!(ep_view["id"], ep, "the endpoint came back: {ep_view}");
    h2.wait_all_delivered(&[&ep], Duration::from_secs(60));

    let delivered: BTreeSet<u64> = rx
        .received()
        .iter()
        .filter_map(|r| r.json()["n"].as_u64())
        .collect();
    let missing: Vec<&u64> = before.difference(&delivered).collect();
    let carried = before
        .iter()
        .filter(|n| !delivered_before_loss.contains(n))
        .count();
    assert!(
        carried > 0,
        "the backup carried deliveries still pending when it was cut"
    );
    assert!(
        missing.is_empty(),
        "acknowledged before the backup, never delivered: {missing:?}"
    );
    // Nothing acknowledged after the backup answered is in the restored store or sent by it.
    let delivered_after_restore: BTreeSet<u64> = delivered
        .difference(&delivered_before_loss)
        .copied()
        .collect();
    for n in &after {
        let (code, _) = h2.get(&format!("/v1/events/b{n}?tenant=bk"));
        assert_eq!(code, 404, "b{n} was acknowledged after the backup");
        assert!(
            !delivered_after_restore.contains(n),
            "b{n} sent after the restore"
        );
    }
    eprintln!(
        "acknowledged: {} before the backup, {} after; pending at the loss: {pending_at_loss}; \
         delivered after the restore: {}",
        before.len(),
        after.len(),
        delivered_after_restore.len()
    );
}

#[test]
fn ctl_backup_writes_a_copy_that_restores_and_delivers() {
    let rx = Receiver::start();
    let mut h = Hookd::start(&[("HOOKD_OPERATOR__TENANT", "")]);
    let (ep, _) = h.endpoint("ctlbk", &rx.url, &["*"], json!({}));
    assert_eq!(h.post_empty(&format!("/v1/endpoints/{ep}/pause")).0, 200);
    for n in 0..3 {
        h.event("ctlbk", "fraud_detected", json!({"n": n}));
    }
    let dir = tempfile::tempdir().unwrap();
    // A relative DIR is made absolute against ctl's working directory.
    let out = std::process::Command::new(hookd_bin())
        .args(["ctl", "backup", "copy"])
        .current_dir(dir.path())
        .env_remove("HOOKD_CONFIG")
        .env("HOOKD_URL", &h.base)
        .env("HOOKD_TOKEN", ADMIN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("backup written to "), "{stdout}");
    assert!(dir.path().join("copy/CURRENT").is_file());
    h.kill();

    let fresh = tempfile::tempdir().unwrap();
    assert!(
        restore(&dir.path().join("copy"), &fresh.path().join("data"))
            .status
            .success()
    );
    let h2 = Hookd::start_on(fresh, &[("HOOKD_OPERATOR__TENANT", "")]);
    assert_eq!(h2.history(&ep, Some("pending")).len(), 3);
    assert_eq!(h2.post_empty(&format!("/v1/endpoints/{ep}/resume")).0, 200);
    rx.wait_count(3, Duration::from_secs(20));
    h2.wait_all_delivered(&[&ep], Duration::from_secs(20));
}
