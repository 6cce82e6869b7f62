//! End-to-end load bench: a release hookd (RocksDB in a temp dir, `storage.sync = true`) and a
//! fast actix-web receiver on 127.0.0.1, driven by an HTTP client in this process.
//!
//! Two baselines, and every figure's ratio to both: the same client posting the same events
//! straight to the receiver (loopback), and the hardest honest one, `wrk -t1 -c32` posting the
//! same body to nginx answering `return 200` (Debian's `wrk` and `nginx-light`, installed when
//! missing).
//!
//! Reports ingest events/s (single events at 64 connections, and batches; wrk → hookd at 32
//! connections), delivered events/s end to end (100,000 batch-ingested events delivered to nginx;
//! open loop; sustained), latency from a standing start and at a fixed moderate rate (with the
//! WAL fsyncs that took over 5 ms, to tell the disk from hookd), a 1,000,000-event backlog
//! (RSS, restart, drain), hookd's peak RSS, and ingest from NATS JetStream (`[source.nats]`,
//! against a real `nats-server -js`) beside HTTP batches of the same events.
//!
//! `cargo bench --bench e2e` (about 6 min). `E2E_BENCH_SECS` sets each phase's length;
//! `E2E_PHASES=e2e,sustained` runs only those phases (see [`PHASES`]);
//! `E2E_DEBUG=1` prints queue progress during the drain and batch phases and the standing
//! start's latency by arrival; `E2E_HOOKD_BIN=path` benches another hookd binary.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

#[path = "../tests/common/nats.rs"]
mod nats_harness;

const ADMIN: &str = "bench-admin-token";
const CONNECTIONS: usize = 64;
const BATCH: usize = 100;
const LATENCY_RATE: u64 = 500;
const BACKLOG_EVENTS: usize = 1_000_000;
/// Warm-up events, then events sent by 32 clients, in the standing-start phase.
const COLD_WARMUP: u64 = 200;
const COLD_EVENTS: u64 = 20_000;
/// Events ingested in batches and delivered in the wire phase.
const WIRE_EVENTS: usize = 100_000;
const SPREAD: u64 = 8;
/// The pause between phases for RocksDB's background work.
const SETTLE: Duration = Duration::from_secs(5);
/// Most events ingested but not yet received in the sustained phase.
const SUSTAINED_WINDOW: u64 = 10_000;

const PAYLOAD: &str = r#"{"event":"fraud_detected","timestamp":"2024-01-05T14:30:00Z",
 "property":{"id":"prop_abc123","name":"My Landing Page"},
 "visitor":{"id":"vis_xyz789","ip":"192.168.1.100","country":"US","userAgent":"Mozilla/5.0..."},
 "decision":{"score":85.0,"label":"FRAUD","action":"BLOCK","reasons":[{"rule":"datacenter_ip","score":25},
 {"rule":"rapid_clicks","score":30},{"rule":"honeypot","score":40}]}}"#;

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Counts requests; for bodies carrying `"sent_us"`, records the delay since it.
#[derive(Default)]
struct ReceiverState {
    received: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

fn start_receiver() -> (String, Arc<ReceiverState>) {
    start_receiver_with(None)
}

/// An https receiver whose certificate for 127.0.0.1 is issued by a CA made here; returns
/// its URL, its state and the CA's PEM (for `delivery.ca_file`).
fn start_tls_receiver() -> (String, Arc<ReceiverState>, String) {
    use rustls::pki_types::pem::PemObject;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()],
        rustls::pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let (url, state) = start_receiver_with(Some(config));
    (url, state, ca.pem())
}

fn start_receiver_with(tls: Option<rustls::ServerConfig>) -> (String, Arc<ReceiverState>) {
    let state = Arc::new(ReceiverState::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}/hook", listener.local_addr().unwrap());
    let data = state.clone();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let data = actix_web::web::Data::from(data);
            let server = actix_web::HttpServer::new(move || {
                actix_web::App::new()
                    .app_data(data.clone())
                    .default_service(actix_web::web::to(receive))
            })
            .workers(1)
            .backlog(4096)
            .max_connections(100_000)
            .disable_signals();
            match tls {
                Some(config) => server.listen_rustls_0_23(listener, config),
                None => server.listen(listener),
            }
            .unwrap()
            .run()
            .await
        })
    });
    (url, state)
}

async fn receive(
    body: actix_web::web::Bytes,
    state: actix_web::web::Data<ReceiverState>,
) -> actix_web::HttpResponse {
    state.received.fetch_add(1, Ordering::Relaxed);
    if let Some(pos) = memchr_sent(&body) {
        let digits: String = body[pos..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|b| *b as char)
            .collect();
        if let Ok(sent) = digits.parse::<u64>() {
            let lat = now_micros().saturating_sub(sent);
            state.latencies_us.lock().unwrap().push(lat);
        }
    }
    actix_web::HttpResponse::Ok().finish()
}

fn memchr_sent(body: &[u8]) -> Option<usize> {
    let needle = b"\"sent_us\":";
    body.windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + needle.len())
}

struct Hookd {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Hookd {
    fn start() -> Hookd {
        Hookd::start_in(tempfile::tempdir().unwrap(), &[])
    }

    /// A fresh hookd with `env` on top of the bench's settings.
    fn start_with(env: &[(&str, &str)]) -> Hookd {
        Hookd::start_in(tempfile::tempdir().unwrap(), env)
    }

    /// SIGKILL, then a new hookd on the same data; returns it and how long it took to be ready.
    fn kill_and_restart(self) -> (Hookd, Duration) {
        self.kill_and_restart_with(&[])
    }

    /// As [`Hookd::kill_and_restart`], the new process with `env` on top of the bench's settings.
    fn kill_and_restart_with(mut self, env: &[(&str, &str)]) -> (Hookd, Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        let started = Instant::now();
        let h = Hookd::start_in(dir, env);
        (h, started.elapsed())
    }

    fn rss_mb(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        kb / 1024.0
    }

    fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Hookd {
        // E2E_HOOKD_BIN runs another build, e.g. one with frame pointers for profiling.
        let bin =
            std::env::var_os("E2E_HOOKD_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_hookd").into());
        let mut child = Command::new(bin)
            .arg("serve")
            .current_dir(dir.path())
            .env_remove("HOOKD_CONFIG")
            .env("HOOKD_SERVER__LISTEN", "127.0.0.1:0")
            .env("HOOKD_STORAGE__PATH", dir.path().join("data"))
            .env("HOOKD_STORAGE__SYNC", "true")
            .env("HOOKD_AUTH__ADMIN_TOKENS", json!([ADMIN]).to_string())
            .env("HOOKD_DELIVERY__ALLOW_HTTP", "true")
            .env("HOOKD_DELIVERY__ALLOW_PRIVATE_NETWORKS", "true")
            .env("HOOKD_DELIVERY__MAX_ENDPOINTS_PER_TENANT", "10")
            .env("HOOKD_LOG__LEVEL", "warn,hookd=info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hookd (cargo bench builds it)");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && line.contains("hookd:") && !line.contains("INFO") {
                    eprintln!("{line}");
                }
                if !sent {
                    if let Some(addr) = line.split("listening on ").nth(1) {
                        let _ = tx.send(addr.trim().to_string());
                        sent = true;
                    }
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) else {
            // Not left running when the bench stops here.
            let _ = child.kill();
            let _ = child.wait();
            panic!("hookd did not report its address within 30 s");
        };
        let h = Hookd {
            child,
            base: format!("http://{addr}"),
            _dir: dir,
        };
        let client = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client
            .get(format!("{}/readyz", h.base))
            .send()
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(Instant::now() < deadline, "hookd ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        h
    }

    fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let client = reqwest::blocking::Client::new();
        let mut req = client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().unwrap_or(Value::Null)
    }

    /// Creates an endpoint of `tenant` for every type; returns its id.
    fn endpoint(&self, tenant: &str, url: &str, max_concurrency: Option<u32>) -> String {
        let mut spec = json!({"tenant": tenant, "url": url, "event_types": ["*"]});
        if let Some(n) = max_concurrency {
            spec["max_concurrency"] = json!(n);
        }
        let ep = self.admin(reqwest::Method::POST, "/v1/endpoints", Some(spec));
        ep["id"].as_str().unwrap().to_string()
    }

    /// CPU time hookd has used so far (user + system), in seconds.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }

    fn peak_rss_mb(&self) -> f64 {
        self.rss_mb("VmHWM:")
    }

    fn metric(&self, name: &str) -> f64 {
        self.metric_lines(name).map(|(_, v)| v).sum()
    }

    /// (WAL fsyncs so far, those that took longer than 5 ms), from the fsync histogram.
    fn slow_syncs(&self) -> (f64, f64) {
        let total = self.metric("hookd_storage_wal_sync_seconds_count");
        let fast = self.metric(r#"hookd_storage_wal_sync_seconds_bucket{le="0.005"}"#);
        (total, total - fast)
    }

    /// The WAL fsync histogram's cumulative buckets: (upper bound, count).
    fn sync_buckets(&self) -> Vec<(String, f64)> {
        self.metric_lines("hookd_storage_wal_sync_seconds_bucket")
            .filter_map(|(l, v)| Some((l.split("le=\"").nth(1)?.split('"').next()?.to_string(), v)))
            .collect()
    }

    /// The lines of `/metrics` starting with `name`, each with its value.
    fn metric_lines(&self, name: &str) -> impl Iterator<Item = (String, f64)> {
        let text = reqwest::blocking::get(format!("{}/metrics", self.base))
            .unwrap()
            .text()
            .unwrap();
        let name = name.to_string();
        text.lines()
            .filter(|l| l.starts_with(&name))
            .filter_map(|l| Some((l.to_string(), l.rsplit(' ').next()?.parse::<f64>().ok()?)))
            .collect::<Vec<_>>()
            .into_iter()
    }
}

impl Drop for Hookd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON POST as the engine makes it.
fn post_json(client: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
    client
        .post(url)
        .bearer_auth(ADMIN)
        .header("Content-Type", "application/json")
        .body(body)
}

/// Holds the clients back while `window` or more of the events they sent are not yet received.
struct Gate {
    received: Arc<ReceiverState>,
    window: u64,
    per_request: u64,
    sent: Arc<AtomicU64>,
}

impl Gate {
    async fn pass(&self) {
        while self.sent.load(Ordering::Relaxed)
            >= self.received.received.load(Ordering::Relaxed) + self.window
        {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        self.sent.fetch_add(self.per_request, Ordering::Relaxed);
    }
}

/// `connections` clients each POST `body()` to `url` back to back for `secs` (through `gate`,
/// if any); returns successful requests per second.
async fn hammer(
    url: String,
    connections: usize,
    secs: Duration,
    body: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
    ok_status: u16,
    gate: Option<Gate>,
) -> f64 {
    let gate = gate.map(Arc::new);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, url, stop, done, seq, body, gate) = (
            client.clone(),
            url.clone(),
            stop.clone(),
            done.clone(),
            seq.clone(),
            body.clone(),
            gate.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(gate) = &gate {
                    gate.pass().await;
                }
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let resp = post_json(&client, &url, body(n)).send().await;
                match resp {
                    Ok(r) if r.status().as_u16() == ok_status => {
                        let _ = r.bytes().await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => panic!("{url}: {}", r.status()),
                    Err(e) => panic!("{url}: {e}"),
                }
            }
        }));
    }
    tokio::time::sleep(secs).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// One event whose payload carries the time it was sent, for the receiver's latencies.
fn timed_event(tenant: &str, id: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","tenant":"{tenant}","type":"fraud_detected","payload":{{"sent_us":{},"p":{PAYLOAD}}}}}"#,
        now_micros()
    )
    .into_bytes()
}

/// Posts `body(0)` … `body(batches - 1)` to `url` over 4 connections, as fast as they are
/// answered (each one 200).
async fn post_batches(url: String, body: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>, batches: u64) {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (client, body, next, url) =
                (client.clone(), body.clone(), next.clone(), url.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= batches {
                        break;
                    }
                    let r = post_json(&client, &url, body(n)).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn event_body(tenant: &'static str) -> Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync> {
    Arc::new(move |n| {
        format!(
            r#"{{"id":"e{n}","tenant":"{tenant}","type":"fraud_detected","payload":{PAYLOAD}}}"#
        )
        .into_bytes()
    })
}

fn batch_body(tenant: &'static str) -> Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync> {
    Arc::new(move |n| {
        let events: Vec<String> = (0..BATCH)
            .map(|i| {
                format!(
                    r#"{{"id":"b{n}-{i}","tenant":"{tenant}","type":"fraud_detected","payload":{PAYLOAD}}}"#
                )
            })
            .collect();
        format!(r#"{{"events":[{}]}}"#, events.join(",")).into_bytes()
    })
}

/// How a phase hands events to hookd.
struct Load {
    tenant: &'static str,
    url: String,
    connections: usize,
    body: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
    ok_status: u16,
    events_per_request: u64,
}

impl Load {
    fn single(h: &Hookd, tenant: &'static str) -> Load {
        Load {
            tenant,
            url: format!("{}/v1/events", h.base),
            connections: CONNECTIONS,
            body: event_body(tenant),
            ok_status: 202,
            events_per_request: 1,
        }
    }

    fn batches(h: &Hookd, tenant: &'static str) -> Load {
        Load {
            tenant,
            url: format!("{}/v1/events/batch", h.base),
            connections: 4,
            body: batch_body(tenant),
            ok_status: 200,
            events_per_request: BATCH as u64,
        }
    }
}

struct Throughput {
    delivered: f64,
    ingested: f64,
    cpu_us_per_event: f64,
}

/// Gives the load's tenant an active endpoint at the receiver, runs `load` for `secs` and measures
/// what came out at the receiver meanwhile; then waits for the rest to drain.
fn through(
    h: &Hookd,
    rt: &tokio::runtime::Runtime,
    (rx_url, rx): (&str, &Arc<ReceiverState>),
    secs: Duration,
    load: Load,
    gate: Option<Gate>,
) -> Throughput {
    h.endpoint(load.tenant, rx_url, Some(64));
    rx.received.store(0, Ordering::Relaxed);
    let cpu0 = h.cpu_secs();
    let start = Instant::now();
    let requests = rt.block_on(hammer(
        load.url,
        load.connections,
        secs,
        load.body,
        load.ok_status,
        gate,
    ));
    let received = rx.received.load(Ordering::Relaxed);
    let run = Throughput {
        delivered: received as f64 / start.elapsed().as_secs_f64(),
        ingested: requests * load.events_per_request as f64,
        cpu_us_per_event: (h.cpu_secs() - cpu0) * 1e6 / received.max(1) as f64,
    };
    wait_drained(h, Duration::from_secs(60));
    // Let RocksDB finish flushing and compacting what this phase wrote, so that work is not
    // counted against the next one.
    std::thread::sleep(SETTLE);
    run
}

/// Waits until no endpoint has anything pending, so one phase's backlog does not load the next.
fn wait_drained(h: &Hookd, within: Duration) {
    let deadline = Instant::now() + within;
    while h.metric("hookd_queue_depth") > 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// `E2E_PHASES=a,b` runs only the named phases (the baseline always runs); unset runs all.
const PHASES: [&str; 14] = [
    "cold",
    "wire",
    "ingest",
    "drain",
    "e2e",
    "e2e-batch",
    "spread",
    "sustained",
    "latency",
    "ordered",
    "backlog",
    "checked",
    "https",
    "nats",
];

/// Events per endpoint in the ordered phase, spread over `ORDERED_KEYS` ordering keys.
const ORDERED_EVENTS: usize = 50_000;
const ORDERED_KEYS: usize = 50;
/// Events taken from JetStream in the nats phase (and posted over HTTP beside it).
const NATS_EVENTS: usize = 100_000;

/// Prints rows as `name value ratio` (and the ratio to wrk → nginx, when there is one).
struct Table {
    baseline: f64,
    nginx: Option<f64>,
}

impl Table {
    fn row(&self, name: &str, v: f64) {
        match self.nginx {
            Some(n) => println!(
                "{name:<64} {v:>12.0} {:>10.2} {:>10.2}",
                v / self.baseline,
                v / n
            ),
            None => println!("{name:<64} {v:>12.0} {:>10.2}", v / self.baseline),
        }
    }

    fn note(&self, name: &str, v: impl std::fmt::Display) {
        println!("{name:<64} {v:>12}");
    }
}

/// Debian's `wrk` and `nginx-light`, installed when missing (as root, non-interactively);
/// without them the bench reports against the loopback baseline only.
fn wrk_and_nginx() -> Option<String> {
    let sh = |script: &str| Command::new("sh").args(["-c", script]).output().ok();
    let found = |script: &str| sh(script).is_some_and(|o| o.status.success());
    let present =
        "command -v wrk >/dev/null && (command -v nginx || test -x /usr/sbin/nginx) >/dev/null";
    if !found(present)
        && !found(
            "[ \"$(id -u)\" -eq 0 ] && apt-get update -qq && \
             DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null",
        )
    {
        eprintln!("wrk and nginx are not available: no wrk → nginx baseline");
        return None;
    }
    sh("command -v nginx || echo /usr/sbin/nginx")
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// nginx answering every request with `return 200` on 127.0.0.1: the fastest receiver there is.
struct Nginx {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(nginx: &str) -> Option<Nginx> {
        let dir = tempfile::tempdir().ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let d = dir.path().display();
        let conf = format!(
            "worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             keepalive_requests 1000000;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200; }} }} }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).ok()?;
        let child = Command::new(nginx)
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(dir.path())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Nginx {
            child,
            url: format!("http://127.0.0.1:{port}/hook"),
            _dir: dir,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its worker too.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// What one wrk run measured.
struct WrkRun {
    per_sec: f64,
    /// Responses outside 2xx/3xx plus socket errors: 0 when every request succeeded.
    failures: u64,
}

/// `wrk -t1 -c{connections} -d{secs}` POSTing what `lua` builds (a script setting `wrk.body` or
/// `request`), with the bench's bearer token and JSON content type.
fn wrk(url: &str, connections: usize, secs: Duration, lua: &str) -> Option<WrkRun> {
    let dir = tempfile::tempdir().ok()?;
    let script = dir.path().join("post.lua");
    let head = format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer {ADMIN}\"\n"
    );
    std::fs::write(&script, head + lua).ok()?;
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}")])
        .arg(format!("-d{}s", secs.as_secs().max(1)))
        .arg("-s")
        .arg(&script)
        .arg(url)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let per_sec = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())?;
    let mut failures = 0;
    for line in text.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            failures += n.trim().parse::<u64>().unwrap_or(u64::MAX / 2);
        }
        if let Some(errors) = line.strip_prefix("Socket errors:") {
            failures += errors
                .split(',')
                .filter_map(|e| e.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Some(WrkRun { per_sec, failures })
}

/// The payload as a Lua long string (it holds quotes and newlines).
fn lua_payload() -> String {
    format!("[==[{}]==]", PAYLOAD.replace('\n', ""))
}

/// Single events with ids unique within the run, for wrk.
fn lua_single_events(tenant: &str) -> String {
    format!(
        "local n = 0\nlocal payload = {}\nrequest = function()\n  n = n + 1\n  \
         return wrk.format(nil, nil, nil, '{{\"id\":\"w' .. n .. '\",\"tenant\":\"{tenant}\",\
         \"type\":\"fraud_detected\",\"payload\":' .. payload .. '}}')\nend\n",
        lua_payload()
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks benches to list themselves
    }
    let secs = Duration::from_secs(
        std::env::var("E2E_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    );
    let selected = std::env::var("E2E_PHASES").ok().filter(|s| !s.is_empty());
    if let Some(s) = &selected {
        for p in s.split(',') {
            assert!(
                PHASES.contains(&p.trim()),
                "E2E_PHASES: unknown phase {p:?}; phases are {PHASES:?}"
            );
        }
    }
    let on = |phase: &str| {
        selected
            .as_deref()
            .is_none_or(|s| s.split(',').any(|p| p.trim() == phase))
    };
    let debug = std::env::var_os("E2E_DEBUG").is_some_and(|v| !v.is_empty());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (rx_url, rx) = start_receiver();

    // Loopback baseline: the same client posting the same events straight to the receiver.
    let baseline = rt.block_on(hammer(
        rx_url.clone(),
        CONNECTIONS,
        secs,
        event_body("base"),
        200,
        None,
    ));
    rx.received.store(0, Ordering::Relaxed);
    let nginx_bin = wrk_and_nginx();
    let nginx_server = nginx_bin.as_deref().and_then(Nginx::start);
    let nginx = nginx_server.as_ref().and_then(|n| {
        let body = format!("wrk.body = {}\n", lua_payload());
        wrk(&n.url, 32, secs.max(Duration::from_secs(5)), &body).map(|r| r.per_sec)
    });
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "hookd e2e bench: {cpus} CPUs, {}s phases, storage.sync = true, payload {} bytes",
        secs.as_secs(),
        PAYLOAD.len()
    );
    match nginx {
        Some(_) => println!(
            "{:<64} {:>12} {:>10} {:>10}",
            "figure", "value", "× baseline", "× nginx"
        ),
        None => println!("{:<64} {:>12} {:>10}", "figure", "value", "× baseline"),
    }
    let table = Table { baseline, nginx };
    table.row("loopback baseline: client → receiver, req/s", baseline);
    if let Some(n) = nginx {
        table.row("wrk -t1 -c32 → nginx return 200, same body, req/s", n);
    }

    let receiver = (rx_url.as_str(), &rx);

    // From a standing start: a fresh process, 200 warm-up events one at a time, then 32
    // clients sending COLD_EVENTS back to back; ingest → receipt latency of those.
    if on("cold") {
        let hc = Hookd::start();
        hc.endpoint("cold", &rx_url, Some(64));
        let url = format!("{}/v1/events", hc.base);
        let lat = rt.block_on(async {
            let client = reqwest::Client::new();
            for n in 0..COLD_WARMUP {
                let r = post_json(&client, &url, timed_event("cold", &format!("w{n}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
            while rx.received.load(Ordering::Relaxed) < COLD_WARMUP {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            rx.latencies_us.lock().unwrap().clear();
            let per_client = COLD_EVENTS / 32;
            let tasks: Vec<_> = (0..32)
                .map(|c| {
                    let (client, url) = (client.clone(), url.clone());
                    tokio::spawn(async move {
                        for n in 0..per_client {
                            let r =
                                post_json(&client, &url, timed_event("cold", &format!("c{c}-{n}")))
                                    .send()
                                    .await
                                    .unwrap();
                            assert_eq!(r.status(), 202);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while rx.latencies_us.lock().unwrap().len() < (per_client * 32) as usize
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            rx.latencies_us.lock().unwrap().clone()
        });
        let syncs = hc.slow_syncs();
        if debug {
            let chunks: Vec<String> = lat
                .chunks(100)
                .take(30)
                .map(|c| format!("{:.1}", *c.iter().max().unwrap_or(&0) as f64 / 1000.0))
                .collect();
            eprintln!("cold: max ms per 100 received: {}", chunks.join(" "));
        }
        let first: Vec<u64> = lat.iter().take(1000).copied().collect();
        let mut all = lat;
        all.sort_unstable();
        let mut first = first;
        first.sort_unstable();
        table.note(
            &format!("standing start, 32 clients, {} events: p50 ms", all.len()),
            format!("{:.2}", percentile(&all, 0.50)),
        );
        table.note("  p99 ms", format!("{:.2}", percentile(&all, 0.99)));
        table.note(
            "  max ms; p99 of the first 1000 received, ms",
            format!(
                "{:.2}; {:.2}",
                percentile(&all, 1.0),
                percentile(&first, 0.99)
            ),
        );
        table.note(
            "  WAL fsyncs, of them over 5 ms",
            format!("{:.0}, {:.0}", syncs.0, syncs.1),
        );
        rx.received.store(0, Ordering::Relaxed);
    }

    // Against wrk → nginx: wrk posting single events to hookd at the same 32 connections
    // (fsync'd ingest, every response 202), and 100,000 events ingested in batches while
    // hookd delivers them to nginx, timed until the last is delivered.
    if on("wire") {
        let hw = Hookd::start();
        let paused = hw.endpoint("wire", &rx_url, Some(64));
        hw.admin(
            reqwest::Method::POST,
            &format!("/v1/endpoints/{paused}/pause"),
            None,
        );
        match wrk(
            &format!("{}/v1/events", hw.base),
            32,
            secs.max(Duration::from_secs(5)),
            &lua_single_events("wire"),
        ) {
            Some(run) => {
                table.row(
                    "wrk -t1 -c32 → hookd, single events (fsync'd), events/s",
                    run.per_sec,
                );
                table.note("  … responses other than 2xx", run.failures);
            }
            None => eprintln!("wire: wrk did not run"),
        }
        drop(hw);
        if let Some(n) = &nginx_server {
            let hw = Hookd::start();
            hw.endpoint("wire100k", &n.url, Some(64));
            let body = batch_body("wire100k");
            let cpu0 = hw.cpu_secs();
            let started = Instant::now();
            rt.block_on(post_batches(
                format!("{}/v1/events/batch", hw.base),
                body,
                (WIRE_EVENTS / BATCH) as u64,
            ));
            let ingested = started.elapsed();
            let deadline = Instant::now() + Duration::from_secs(120);
            let succeeded = r#"hookd_deliveries_total{endpoint"#;
            let mut delivered = 0.0;
            while Instant::now() < deadline {
                delivered = hw
                    .metric_lines(succeeded)
                    .filter(|(l, _)| l.contains(r#"outcome="succeeded""#))
                    .map(|(_, v)| v)
                    .sum::<f64>();
                if delivered >= WIRE_EVENTS as f64 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let took = started.elapsed();
            table.row(
                &format!(
                    "end to end, {WIRE_EVENTS} events in batches → nginx, all delivered, events/s"
                ),
                delivered / took.as_secs_f64(),
            );
            table.note(
                "  … ingest done after, s; last delivered after, s",
                format!("{:.2}; {:.2}", ingested.as_secs_f64(), took.as_secs_f64()),
            );
            table.note(
                "  … hookd CPU per event (ingest + delivery), µs",
                format!("{:.0}", (hw.cpu_secs() - cpu0) * 1e6 / delivered.max(1.0)),
            );
        }
    }

    let h = Hookd::start();
    if on("ingest") {
        // Ingest only: the tenant's endpoint is paused, so every event stores one delivery.
        let paused_id = h.endpoint("ingest", &rx_url, Some(64));
        h.admin(
            reqwest::Method::POST,
            &format!("/v1/endpoints/{paused_id}/pause"),
            None,
        );
        let commits0 = h.metric("hookd_storage_commits_total");
        let events0 = h.metric("hookd_storage_committed_events_total");
        let single = rt.block_on(hammer(
            format!("{}/v1/events", h.base),
            CONNECTIONS,
            secs,
            event_body("ingest"),
            202,
            None,
        ));
        let per_commit = (h.metric("hookd_storage_committed_events_total") - events0)
            / (h.metric("hookd_storage_commits_total") - commits0);
        table.row("ingest, single events, 64 connections, events/s", single);
        table.note(
            "  group commit: events per fsync'd write",
            format!("{per_commit:.1}"),
        );
        let batches = rt.block_on(hammer(
            format!("{}/v1/events/batch", h.base),
            4,
            secs,
            batch_body("ingest"),
            200,
            None,
        ));
        table.row(
            &format!("ingest, batches of {BATCH}, 4 connections, events/s"),
            batches * BATCH as f64,
        );

        if on("drain") {
            // Backlog drain: resume the paused endpoint and time its queue to the receiver.
            let backlog = h.metric("hookd_queue_depth") as u64;
            rx.received.store(0, Ordering::Relaxed);
            let drain_start = Instant::now();
            h.admin(
                reqwest::Method::POST,
                &format!("/v1/endpoints/{paused_id}/resume"),
                None,
            );
            let drain_deadline = drain_start + Duration::from_secs(120);
            let mut last_report = Instant::now();
            while rx.received.load(Ordering::Relaxed) < backlog && Instant::now() < drain_deadline {
                std::thread::sleep(Duration::from_millis(10));
                if debug && last_report.elapsed() > Duration::from_secs(1) {
                    last_report = Instant::now();
                    eprintln!(
                        "drain: received {} in_flight {} depth {}",
                        rx.received.load(Ordering::Relaxed),
                        h.metric("hookd_in_flight"),
                        h.metric("hookd_queue_depth")
                    );
                }
            }
            let drained = rx.received.load(Ordering::Relaxed);
            table.row(
                &format!("backlog drain of {drained}, delivered/s"),
                drained as f64 / drain_start.elapsed().as_secs_f64(),
            );
        }
        // RocksDB compacts what the phases above wrote; let it settle so it does not load
        // the next phase.
        wait_drained(&h, Duration::from_secs(60));
        std::thread::sleep(SETTLE);
    }

    // End to end, open loop: single-event ingest at 64 connections as fast as hookd answers,
    // while it delivers to an active endpoint; delivered/s counted at the receiver over the
    // same window.
    if on("e2e") {
        let run = through(&h, &rt, receiver, secs, Load::single(&h, "e2e"), None);
        table.row("end to end, open loop, delivered/s", run.delivered);
        table.row("  … while ingesting single events, events/s", run.ingested);
    }

    // The same with the engine handing events over in batches of 100 at 4 connections: ingest
    // outruns delivery, and the rest piles up as backlog.
    if on("e2e-batch") {
        if debug {
            let (base, rx) = (h.base.clone(), rx.clone());
            std::thread::spawn(move || {
                for _ in 0..8 {
                    std::thread::sleep(Duration::from_millis(700));
                    let text = reqwest::blocking::get(format!("{base}/metrics"))
                        .unwrap()
                        .text()
                        .unwrap();
                    let lines: Vec<&str> = text
                        .lines()
                        .filter(|l| {
                            l.starts_with("hookd_in_flight") || l.starts_with("hookd_queue_depth")
                        })
                        .collect();
                    eprintln!(
                        "e2e-batch: received {} {lines:?}",
                        rx.received.load(Ordering::Relaxed)
                    );
                }
            });
        }
        let load = Load::batches(&h, "e2e-batch");
        let run = through(&h, &rt, receiver, secs, load, None);
        table.row(
            "end to end, open loop, batch ingest, delivered/s",
            run.delivered,
        );
        table.row("  … while ingesting in batches, events/s", run.ingested);
    }

    // The first again with the events spread over 8 tenants, one endpoint each: the
    // endpoints' actors share the work over the cores instead of one actor doing it all.
    if on("spread") {
        for t in 1..SPREAD {
            h.endpoint(&format!("spread{t}"), &rx_url, Some(64));
        }
        let load = Load {
            body: Arc::new(|n| {
                format!(
                    r#"{{"id":"s{n}","tenant":"spread{}","type":"fraud_detected","payload":{PAYLOAD}}}"#,
                    n % SPREAD
                )
                .into_bytes()
            }),
            ..Load::single(&h, "spread0")
        };
        let run = through(&h, &rt, receiver, secs, load, None);
        table.row(
            &format!("end to end, open loop, {SPREAD} endpoints, delivered/s"),
            run.delivered,
        );
        table.row("  … while ingesting single events, events/s", run.ingested);
    }

    // End to end, sustained: the engine sends as fast as hookd carries events through to the
    // receiver, holding at most SUSTAINED_WINDOW ingested but not yet received, so ingest and
    // delivery run at one rate and no backlog builds. This is the throughput of the whole
    // path: engine → hookd (fsync'd) → receiver.
    if on("sustained") {
        for (label, load) in [
            (
                "single events, 64 connections",
                Load::single(&h, "sus-single"),
            ),
            (
                "batches of 100, 4 connections",
                Load::batches(&h, "sus-batch"),
            ),
        ] {
            let gate = Gate {
                received: rx.clone(),
                window: SUSTAINED_WINDOW,
                per_request: load.events_per_request,
                sent: Arc::new(AtomicU64::new(0)),
            };
            let run = through(&h, &rt, receiver, secs, load, Some(gate));
            table.row(
                &format!("end to end, sustained, {label}, delivered/s"),
                run.delivered,
            );
            table.row("  … ingested, events/s", run.ingested);
            table.note(
                "  … hookd CPU per delivered event, µs",
                format!("{:.0}", run.cpu_us_per_event),
            );
        }
    }

    // Latency at a fixed moderate rate, ingest to receipt, with nothing else pending.
    if on("latency") {
        // Three windows in a row, each with its own p99: one run's tail is not the next one's.
        h.endpoint("lat", &rx_url, None);
        let lat_url = format!("{}/v1/events", h.base);
        for window in 1..=3 {
            rx.latencies_us.lock().unwrap().clear();
            let syncs0 = h.slow_syncs();
            let buckets0 = h.sync_buckets();
            let sum0 = h.metric("hookd_storage_wal_sync_seconds_sum");
            rt.block_on(async {
                let client = reqwest::Client::new();
                let mut tick =
                    tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE));
                let end = Instant::now() + secs;
                let mut n = 0u64;
                let mut tasks = Vec::new();
                while Instant::now() < end {
                    tick.tick().await;
                    n += 1;
                    let body = timed_event("lat", &format!("l{window}-{n}"));
                    let (client, url) = (client.clone(), lat_url.clone());
                    tasks.push(tokio::spawn(async move {
                        let r = post_json(&client, &url, body).send().await.unwrap();
                        assert_eq!(r.status(), 202);
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            });
            std::thread::sleep(Duration::from_secs(1));
            let mut lat = rx.latencies_us.lock().unwrap().clone();
            if debug {
                let slow: Vec<String> = lat
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| **l > 2000)
                    .map(|(i, l)| format!("#{i}:{:.1}", *l as f64 / 1000.0))
                    .collect();
                eprintln!(
                    "latency window {window}: over 2 ms, by order received: {}",
                    slow.join(" ")
                );
                let buckets: Vec<String> = h
                    .sync_buckets()
                    .iter()
                    .zip(&buckets0)
                    .map(|((le, n), (_, n0))| format!("≤{le}: {:.0}", n - n0))
                    .collect();
                eprintln!(
                    "latency window {window}: WAL fsyncs by seconds, cumulative: {}",
                    buckets.join(", ")
                );
                eprintln!(
                    "latency window {window}: WAL fsync mean {:.3} ms",
                    (h.metric("hookd_storage_wal_sync_seconds_sum") - sum0) * 1e3
                        / (h.slow_syncs().0 - syncs0.0).max(1.0)
                );
            }
            lat.sort_unstable();
            table.note(
                &format!(
                    "latency ingest → receipt at {LATENCY_RATE}/s, window {window}: p50 / p99 / max ms"
                ),
                format!(
                    "{:.2} / {:.2} / {:.2}",
                    percentile(&lat, 0.50),
                    percentile(&lat, 0.99),
                    percentile(&lat, 1.0)
                ),
            );
            let syncs = h.slow_syncs();
            table.note(
                "  WAL fsyncs in the window, of them over 5 ms",
                format!("{:.0}, {:.0}", syncs.0 - syncs0.0, syncs.1 - syncs0.1),
            );
        }
    }
    table.note(
        "hookd peak RSS (phases above), MB",
        format!("{:.0}", h.peak_rss_mb()),
    );
    drop(h);

    // Bounded memory: a paused endpoint with a 200,000-delivery backlog, a kill -9 and a
    // restart with it pending, then resume and drain.
    if on("ordered") {
        // The same backlog drained by an unordered endpoint and by an ordered one whose events
        // carry one of 50 ordering keys, on a fresh database.
        let h = Hookd::start();
        let mut rates = Vec::new();
        for (tenant, ordering) in [("unordered", "none"), ("ordered", "key")] {
            let spec = json!({"tenant": tenant, "url": rx_url, "event_types": ["*"],
                              "max_concurrency": 64, "ordering": ordering});
            let ep = h.admin(reqwest::Method::POST, "/v1/endpoints", Some(spec));
            let id = ep["id"].as_str().unwrap().to_string();
            h.admin(
                reqwest::Method::POST,
                &format!("/v1/endpoints/{id}/pause"),
                None,
            );
            rt.block_on(async {
                let client = reqwest::Client::new();
                let url = format!("{}/v1/events/batch", h.base);
                for n in 0..ORDERED_EVENTS / BATCH {
                    let events: Vec<String> = (0..BATCH)
                        .map(|i| {
                            format!(
                                r#"{{"id":"o{n}-{i}","tenant":"{tenant}","type":"fraud_detected","ordering_key":"k{}","payload":{PAYLOAD}}}"#,
                                (n * BATCH + i) % ORDERED_KEYS
                            )
                        })
                        .collect();
                    let body = format!(r#"{{"events":[{}]}}"#, events.join(",")).into_bytes();
                    let r = post_json(&client, &url, body).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                }
            });
            std::thread::sleep(SETTLE);
            rx.received.store(0, Ordering::Relaxed);
            let start = Instant::now();
            h.admin(
                reqwest::Method::POST,
                &format!("/v1/endpoints/{id}/resume"),
                None,
            );
            while rx.received.load(Ordering::Relaxed) < ORDERED_EVENTS as u64
                && start.elapsed() < Duration::from_secs(120)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            let rate = rx.received.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
            table.row(
                &format!("{tenant} endpoint, {ORDERED_KEYS} keys: backlog of {ORDERED_EVENTS}, delivered/s"),
                rate,
            );
            rates.push(rate);
            wait_drained(&h, Duration::from_secs(60));
            std::thread::sleep(SETTLE);
        }
        table.note(
            "  ordered ÷ unordered",
            format!("{:.2}", rates[1] / rates[0]),
        );
    }

    // Sustained single events to an https receiver (a private CA in `delivery.ca_file`)
    // against the same to an http one, on one fresh instance.
    if on("https") {
        let (tls_url, tls_rx, ca_pem) = start_tls_receiver();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let hs = Hookd::start_with(&[("HOOKD_DELIVERY__CA_FILE", ca_file.to_str().unwrap())]);
        let mut figures = Vec::new();
        for (tenant, url, state) in [
            ("sus-http", rx_url.as_str(), &rx),
            ("sus-https", tls_url.as_str(), &tls_rx),
        ] {
            let load = Load::single(&hs, tenant);
            let gate = Gate {
                received: state.clone(),
                window: SUSTAINED_WINDOW,
                per_request: load.events_per_request,
                sent: Arc::new(AtomicU64::new(0)),
            };
            figures.push(through(&hs, &rt, (url, state), secs, load, Some(gate)));
        }
        table.row(
            "end to end, sustained, single events, http receiver, delivered/s",
            figures[0].delivered,
        );
        table.row(
            "  … https receiver (private CA), delivered/s",
            figures[1].delivered,
        );
        table.note(
            "  … hookd CPU per delivered event, http / https, µs",
            format!(
                "{:.0} / {:.0}",
                figures[0].cpu_us_per_event, figures[1].cpu_us_per_event
            ),
        );
        table.note(
            "  … ratio https / http",
            format!("{:.2}", figures[1].delivered / figures[0].delivered),
        );
    }

    if on("checked") {
        // Ingest with a filter on each of a tenant's 5 (paused) endpoints and the payload's
        // JSON Schema checked, against the same without either, on two fresh instances.
        let filters = [
            json!({"decision.score": {"$gte": 70}}),
            json!({"decision.action": "BLOCK"}),
            json!({"visitor.country": {"$in": ["US", "FR", "DE"]}}),
            json!({"$or": [{"decision.label": "FRAUD"}, {"decision.reasons.0.score": {"$gt": 50}}]}),
            json!({"property.id": "prop_abc123", "visitor.ip": {"$exists": true}}),
        ];
        let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");
        let mut figures = Vec::new();
        for checked in [false, true] {
            let env: &[(&str, &str)] = if checked {
                &[("HOOKD_EVENTS__SCHEMAS", schemas)]
            } else {
                &[]
            };
            let hc = Hookd::start_with(env);
            for f in &filters {
                let mut spec = json!({"tenant": "checked", "url": rx_url, "event_types": ["*"]});
                if checked {
                    spec["filter"] = f.clone();
                }
                let ep = hc.admin(reqwest::Method::POST, "/v1/endpoints", Some(spec));
                let id = ep["id"].as_str().unwrap().to_string();
                hc.admin(
                    reqwest::Method::POST,
                    &format!("/v1/endpoints/{id}/pause"),
                    None,
                );
            }
            let single = rt.block_on(hammer(
                format!("{}/v1/events", hc.base),
                CONNECTIONS,
                secs,
                event_body("checked"),
                202,
                None,
            ));
            let batches = rt.block_on(hammer(
                format!("{}/v1/events/batch", hc.base),
                4,
                secs,
                batch_body("checked"),
                200,
                None,
            )) * BATCH as f64;
            // Every filter matched: five deliveries per event, as without filters. The
            // endpoints' actors count what ingest handed them on their own time, so the last
            // hand-overs may still be in their mailboxes when the load stops.
            let deadline = Instant::now() + Duration::from_secs(10);
            let (mut depth, mut ingested);
            loop {
                depth = hc.metric("hookd_queue_depth");
                ingested = hc.metric("hookd_events_ingested_total");
                if depth == 5.0 * ingested || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            assert_eq!(
                depth,
                5.0 * ingested,
                "every filter matches the bench's payload"
            );
            figures.push((single, batches));
        }
        let ((plain_single, plain_batch), (checked_single, checked_batch)) =
            (figures[0], figures[1]);
        table.row(
            "ingest to 5 endpoints, single events, events/s",
            plain_single,
        );
        table.row(
            "  … with 5 filters and the schema checked, events/s",
            checked_single,
        );
        table.note(
            "  … ratio checked / plain",
            format!("{:.2}", checked_single / plain_single),
        );
        table.row(
            &format!("ingest to 5 endpoints, batches of {BATCH}, events/s"),
            plain_batch,
        );
        table.row(
            "  … with 5 filters and the schema checked, events/s",
            checked_batch,
        );
        table.note(
            "  … ratio checked / plain",
            format!("{:.2}", checked_batch / plain_batch),
        );
    }

    if on("nats") {
        nats_phase(&rt, &table, &rx_url);
    }

    if on("backlog") {
        let h = Hookd::start();
        let backlog_id = h.endpoint("backlog", &rx_url, Some(64));
        h.admin(
            reqwest::Method::POST,
            &format!("/v1/endpoints/{backlog_id}/pause"),
            None,
        );
        rt.block_on(post_batches(
            format!("{}/v1/events/batch", h.base),
            batch_body("backlog"),
            (BACKLOG_EVENTS / BATCH) as u64,
        ));
        let backlog_pending = h.metric("hookd_queue_depth");
        let backlog_rss = h.rss_mb("VmRSS:");
        let backlog_peak = h.peak_rss_mb();
        let (h, restart_ready) = h.kill_and_restart();
        let restarted_pending = h.metric("hookd_queue_depth");
        let restarted_rss = h.rss_mb("VmRSS:");
        rx.received.store(0, Ordering::Relaxed);
        let drain_start = Instant::now();
        h.admin(
            reqwest::Method::POST,
            &format!("/v1/endpoints/{backlog_id}/resume"),
            None,
        );
        while rx.received.load(Ordering::Relaxed) < BACKLOG_EVENTS as u64
            && drain_start.elapsed() < Duration::from_secs(180)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let backlog_drained = rx.received.load(Ordering::Relaxed);
        let backlog_drain_secs = drain_start.elapsed().as_secs_f64();
        let restarted_peak = h.peak_rss_mb();
        println!("backlog of {BACKLOG_EVENTS} for a paused endpoint:");
        table.note("  pending after ingest", backlog_pending);
        table.note(
            "  RSS with it pending, MB",
            format!("{backlog_rss:.0} (peak {backlog_peak:.0})"),
        );
        table.note(
            "  kill -9, restart until /readyz is 200, s",
            format!("{:.2}", restart_ready.as_secs_f64()),
        );
        table.note(
            "  pending after restart",
            format!("{restarted_pending:.0} ({restarted_rss:.0} MB RSS)"),
        );
        table.note(
            "  resumed: delivered",
            format!(
                "{backlog_drained} in {backlog_drain_secs:.1} s ({:.0}/s), peak RSS {restarted_peak:.0} MB",
                backlog_drained as f64 / backlog_drain_secs
            ),
        );
    }
}

/// `[source.nats]` against HTTP batches, on the same events: each into a fresh hookd whose
/// one endpoint is paused (ingest only, one delivery stored per event), timed until all
/// `NATS_EVENTS` are stored. The JetStream messages are published before hookd starts
/// taking them, so that the publisher does not share the CPU with hookd while it is timed
/// (the HTTP client does: it is the source there).
fn nats_phase(rt: &tokio::runtime::Runtime, table: &Table, rx_url: &str) {
    if Command::new("nats-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("nats: no nats-server on PATH (./scripts/install-prereqs installs it); skipped");
        return;
    }
    let stored = |h: &Hookd| h.metric("hookd_events_ingested_total");
    let wait_stored = |h: &Hookd, n: f64| {
        let deadline = Instant::now() + Duration::from_secs(180);
        while stored(h) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let body = format!(r#"{{"tenant":"vianats","type":"fraud_detected","payload":{PAYLOAD}}}"#);
    let paused_hookd = |tenant: &str| {
        let h = Hookd::start();
        let id = h.endpoint(tenant, rx_url, Some(64));
        h.admin(
            reqwest::Method::POST,
            &format!("/v1/endpoints/{id}/pause"),
            None,
        );
        h
    };

    let hh = paused_hookd("viahttp");
    let cpu0 = hh.cpu_secs();
    let started = Instant::now();
    rt.block_on(post_batches(
        format!("{}/v1/events/batch", hh.base),
        batch_body("viahttp"),
        (NATS_EVENTS / BATCH) as u64,
    ));
    wait_stored(&hh, NATS_EVENTS as f64);
    let http = stored(&hh) / started.elapsed().as_secs_f64();
    let http_cpu = (hh.cpu_secs() - cpu0) * 1e6 / NATS_EVENTS as f64;
    drop(hh);

    let server = nats_harness::NatsServer::start();
    let js = nats_harness::Js::connect(&server.url());
    js.create_stream("BENCH", &["bench.>"], Duration::from_secs(120));
    let published = Instant::now();
    for chunk in 0..NATS_EVENTS / 10_000 {
        let messages = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|i| {
                (
                    format!("bench.t{}", i % 4),
                    Some(format!("n{i}")),
                    body.clone().into_bytes(),
                )
            })
            .collect();
        assert_eq!(js.publish(messages), 10_000);
    }
    let publish_rate = NATS_EVENTS as f64 / published.elapsed().as_secs_f64();
    let url = server.url();
    let env = [
        ("HOOKD_SOURCE__NATS__URL", url.as_str()),
        ("HOOKD_SOURCE__NATS__STREAM", "BENCH"),
        ("HOOKD_SOURCE__NATS__SUBJECT", "bench.>"),
    ];
    // The endpoint first, then a restart with the source: every message finds it.
    let hn = paused_hookd("vianats");
    let started = Instant::now();
    let (hn, _) = hn.kill_and_restart_with(&env);
    let cpu0 = hn.cpu_secs();
    wait_stored(&hn, NATS_EVENTS as f64);
    let took = started.elapsed().as_secs_f64();
    let nats = stored(&hn) / took;
    let nats_cpu = (hn.cpu_secs() - cpu0) * 1e6 / NATS_EVENTS as f64;
    table.row(
        &format!(
            "ingest, {NATS_EVENTS} events in HTTP batches of {BATCH}, 4 connections, events/s"
        ),
        http,
    );
    table.row(
        &format!("ingest, {NATS_EVENTS} events from NATS JetStream, events/s"),
        nats,
    );
    table.note(
        "  … NATS / HTTP batches; hookd CPU per event, µs (NATS, HTTP)",
        format!("{:.2}; {nats_cpu:.0}, {http_cpu:.0}", nats / http),
    );
    table.note(
        "  … published to JetStream beforehand, messages/s",
        format!("{publish_rate:.0}"),
    );
    if let Some((pending, ack_pending, _)) = js.consumer_counts("BENCH", "hookd") {
        table.note(
            "  … consumer pending, ack pending at the end",
            format!("{pending}, {ack_pending}"),
        );
    }
}
