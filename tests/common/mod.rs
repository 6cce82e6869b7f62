//! Test harness: a real `hookd` child process on 127.0.0.1:0 with its RocksDB in a temp dir,
//! and real HTTP receivers (actix-web, each on its own thread) that record what they get and
//! answer as the test scripts them to.
#![allow(dead_code)]

pub mod nats;
pub mod pki;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

pub const ADMIN: &str = "test-admin-token";
pub const INGEST: &str = "test-ingest-token";

pub struct Hookd {
    child: Option<Child>,
    pub base: String,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
    /// `--config FILE`; its `[auth]` and `log.level` are then the file's, not the tests'.
    config_file: Option<PathBuf>,
    pub logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::blocking::Client,
}

impl Hookd {
    /// Starts hookd on a fresh data directory; `env` overrides the test defaults.
    pub fn start(env: &[(&str, &str)]) -> Hookd {
        Self::start_in(tempfile::tempdir().expect("temp dir"), env, None)
    }

    /// Starts hookd on the data directory `temp/data` left there (e.g. by an older build).
    pub fn start_on(temp: tempfile::TempDir, env: &[(&str, &str)]) -> Hookd {
        Self::start_in(temp, env, None)
    }

    fn start_in(
        temp: tempfile::TempDir,
        env: &[(&str, &str)],
        config_file: Option<PathBuf>,
    ) -> Hookd {
        let mut h = Hookd {
            child: None,
            base: String::new(),
            dir: temp.path().to_path_buf(),
            _temp: Some(temp),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            config_file,
            logs: Arc::new(Mutex::new(Vec::new())),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        h.spawn();
        h
    }

    /// Starts hookd with `--config FILE` holding `toml` (rewrite it with
    /// [`Hookd::write_config`]); the test defaults other than `[auth]` and `log.level` still
    /// apply.
    pub fn start_with_config(toml: &str, env: &[(&str, &str)]) -> Hookd {
        let temp = tempfile::tempdir().expect("temp dir");
        let file = temp.path().join("hookd.toml");
        std::fs::write(&file, toml).unwrap();
        Self::start_in(temp, env, Some(file))
    }

    /// Replaces the `--config` file's contents.
    pub fn write_config(&self, toml: &str) {
        std::fs::write(
            self.config_file
                .as_ref()
                .expect("started with a config file"),
            toml,
        )
        .unwrap();
    }

    /// Sends SIGHUP.
    pub fn hangup(&self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let sent = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(sent, 0, "SIGHUP to hookd");
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Sets (or with `None` removes) one of the environment variables the next start uses.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(hookd_bin());
        cmd.arg("serve");
        if let Some(file) = &self.config_file {
            cmd.arg("--config").arg(file);
        } else {
            cmd.env("HOOKD_AUTH__ADMIN_TOKENS", json!([ADMIN]).to_string())
                .env("HOOKD_AUTH__INGEST_TOKENS", json!([INGEST]).to_string())
                .env("HOOKD_LOG__LEVEL", "info");
        }
        cmd.current_dir(&self.dir)
            .env_remove("HOOKD_CONFIG")
            .env("HOOKD_SERVER__LISTEN", "127.0.0.1:0")
            .env("HOOKD_STORAGE__PATH", self.data_dir())
            .env("HOOKD_DELIVERY__ALLOW_HTTP", "true")
            .env("HOOKD_DELIVERY__ALLOW_PRIVATE_NETWORKS", "true")
            .env("HOOKD_DELIVERY__RETRY_JITTER", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn hookd");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let logs = self.logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']')
                        })
                        .collect();
                    let _ = tx.send(addr);
                }
                logs.lock().unwrap().push(line);
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) else {
            // Not left running when the test fails here.
            let _ = child.kill();
            let _ = child.wait();
            panic!("hookd did not start: {:?}", self.logs.lock().unwrap());
        };
        self.base = format!("http://{addr}");
        self.child = Some(child);
        wait_until(Duration::from_secs(30), "hookd ready", || {
            self.http
                .get(format!("{}/readyz", self.base))
                .send()
                .is_ok_and(|r| r.status() == 200)
        });
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("hookd running");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let sent = unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to hookd");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("hookd did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for hookd to exit by itself; `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let c = self.child.as_mut()?;
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts hookd again on the same data directory (after it exited, or to restart it).
    pub fn start_again(&mut self) {
        self.kill();
        self.spawn();
    }

    /// For each endpoint: (`stats.pending`, `hookd_queue_depth`, pending deliveries in its
    /// history).
    pub fn pending_counts(&self, endpoints: &[&str]) -> Vec<(usize, usize, usize)> {
        let metrics = self.metrics_text();
        endpoints
            .iter()
            .map(|ep| {
                let (status, e) = self.get(&format!("/v1/endpoints/{ep}"));
                assert_eq!(status, 200, "{e}");
                let stats = e["stats"]["pending"].as_u64().unwrap() as usize;
                let gauge = metric_value(&metrics, "hookd_queue_depth", ep)
                    .unwrap_or_else(|| panic!("no hookd_queue_depth for {ep}"))
                    as usize;
                (stats, gauge, self.history(ep, Some("pending")).len())
            })
            .collect()
    }

    /// Waits (bounded) until no endpoint has anything pending, by every count.
    pub fn wait_all_delivered(&self, endpoints: &[&str], within: Duration) {
        wait_until(within, "nothing pending", || {
            self.pending_counts(endpoints)
                .iter()
                .all(|&c| c == (0, 0, 0))
        });
    }

    /// At rest: for each endpoint, `stats.pending`, `hookd_queue_depth` and the pending
    /// deliveries in its history are the same number; returns those numbers.
    pub fn assert_consistent(&self, endpoints: &[&str]) -> Vec<usize> {
        self.pending_counts(endpoints)
            .into_iter()
            .zip(endpoints)
            .map(|((stats, gauge, history), ep)| {
                assert_eq!(
                    (stats, gauge),
                    (history, history),
                    "{ep}: stats.pending, hookd_queue_depth and pending deliveries in the history"
                );
                history
            })
            .collect()
    }

    /// Every delivery in an endpoint's history (with `status`, if given), newest first.
    pub fn history(&self, endpoint: &str, status: Option<&str>) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/endpoints/{endpoint}/deliveries?limit=500");
            if let Some(s) = status {
                path.push_str(&format!("&status={s}"));
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (code, page) = self.get(&path);
            assert_eq!(code, 200, "{page}");
            out.extend(page["deliveries"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    /// `hookd ctl ARGS…` against this hookd with the admin token, from its directory.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(hookd_bin());
        cmd.arg("ctl")
            .args(args)
            .env_remove("HOOKD_CONFIG")
            .env("HOOKD_URL", &self.base)
            .env("HOOKD_TOKEN", ADMIN)
            .current_dir(&self.dir);
        cmd
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("hookd running").id()
    }

    /// Resident memory of the hookd process, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().expect("request to hookd");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON response: {text}"))
        };
        (status, value)
    }

    pub fn raw(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path))
    }

    /// `GET /metrics` as text.
    pub fn metrics_text(&self) -> String {
        self.raw(reqwest::Method::GET, "/metrics")
            .send()
            .expect("GET /metrics")
            .text()
            .expect("metrics text")
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, Some(ADMIN), None)
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(ADMIN), Some(&body))
    }

    pub fn post_empty(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(ADMIN), None)
    }

    pub fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::PATCH, path, Some(ADMIN), Some(&body))
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::DELETE, path, Some(ADMIN), None)
    }

    /// Creates an endpoint; returns (id, secret). `extra` fields are merged in.
    pub fn endpoint(
        &self,
        tenant: &str,
        url: &str,
        types: &[&str],
        extra: Value,
    ) -> (String, String) {
        let mut body = json!({"tenant": tenant, "url": url, "event_types": types});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        let (status, ep) = self.post("/v1/endpoints", body);
        assert_eq!(status, 201, "{ep}");
        (
            ep["id"].as_str().unwrap().to_string(),
            ep["secret"].as_str().unwrap().to_string(),
        )
    }

    pub fn event(&self, tenant: &str, event_type: &str, payload: Value) -> Value {
        let (status, res) = self.post(
            "/v1/events",
            json!({"tenant": tenant, "type": event_type, "payload": payload}),
        );
        assert_eq!(status, 202, "{res}");
        res
    }

    /// Posts an event routed to one endpoint; returns that delivery's id.
    pub fn event_delivery(&self, tenant: &str, event_type: &str, payload: Value) -> String {
        let ev = self.event(tenant, event_type, payload);
        self.delivery_ids(tenant, ev["id"].as_str().unwrap())
            .remove(0)
    }

    pub fn delivery_ids(&self, tenant: &str, event_id: &str) -> Vec<String> {
        let (status, ev) = self.get(&format!("/v1/events/{event_id}?tenant={tenant}"));
        assert_eq!(status, 200, "{ev}");
        ev["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn delivery(&self, id: &str) -> Value {
        let (status, d) = self.get(&format!("/v1/deliveries/{id}"));
        assert_eq!(status, 200, "{d}");
        d
    }

    pub fn wait_delivery_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let mut last = Value::Null;
        wait_until(within, &format!("delivery {id} {status}"), || {
            last = self.delivery(id);
            last["status"] == status
        });
        last
    }
}

impl Drop for Hookd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One request as a receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn event_id(&self) -> String {
        self.header("webhook-id").unwrap_or_default().to_string()
    }
}

#[derive(Default)]
struct ReceiverState {
    log: Mutex<Vec<Received>>,
    /// Statuses for the next requests, in order; then `default_status`.
    script: Mutex<VecDeque<u16>>,
    default_status: AtomicU16,
    delay_ms: AtomicU64,
    current: AtomicUsize,
    max_concurrent: AtomicUsize,
    /// Sent as `Retry-After` with every non-2xx answer, when set.
    retry_after: Mutex<Option<String>>,
}

/// The hookd binary under test: TEST_HOOKD_BIN runs these tests against another build (an
/// older hookd, say), else this crate's.
pub fn hookd_bin() -> String {
    std::env::var("TEST_HOOKD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hookd").to_string())
}

/// `hookd restore --from FROM` into `storage` (hookd stopped), as an operator runs it.
pub fn restore(from: &std::path::Path, storage: &std::path::Path) -> std::process::Output {
    Command::new(hookd_bin())
        .args(["restore", "--from"])
        .arg(from)
        .env_remove("HOOKD_CONFIG")
        .env("HOOKD_STORAGE__PATH", storage)
        .env("HOOKD_AUTH__ADMIN_TOKENS", json!([ADMIN]).to_string())
        .output()
        .expect("run hookd restore")
}

/// A port on 127.0.0.1 free a moment ago (for a process that must bind it itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A webhook receiver on 127.0.0.1 that records every request.
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub fn start() -> Receiver {
        Self::with(200, &[], Duration::ZERO)
    }

    pub fn with(default_status: u16, script: &[u16], delay: Duration) -> Receiver {
        Self::serve(default_status, script, delay, None)
    }

    /// An https receiver answering 200 with `tls` (its certificate, and whom it asks for a
    /// client certificate).
    pub fn tls(tls: rustls::ServerConfig) -> Receiver {
        Self::serve(200, &[], Duration::ZERO, Some(tls))
    }

    fn serve(
        default_status: u16,
        script: &[u16],
        delay: Duration,
        tls: Option<rustls::ServerConfig>,
    ) -> Receiver {
        let state = Arc::new(ReceiverState::default());
        state.default_status.store(default_status, Ordering::SeqCst);
        state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        state.script.lock().unwrap().extend(script.iter().copied());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/hook", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        let server_state = state.clone();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let data = actix_web::web::Data::from(server_state);
                let server = actix_web::HttpServer::new(move || {
                    actix_web::App::new()
                        .app_data(data.clone())
                        .app_data(actix_web::web::PayloadConfig::new(8 << 20))
                        .default_service(actix_web::web::to(receive))
                })
                .workers(1)
                .max_connections(10_000)
                .disable_signals();
                let server = match tls {
                    Some(config) => server.listen_rustls_0_23(listener, config),
                    None => server.listen(listener),
                }
                .unwrap()
                .run();
                tx.send(server.handle()).unwrap();
                let _ = server.await;
            });
        });
        let handle = rx.recv().unwrap();
        Receiver { url, state, handle }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.log.lock().unwrap().len()
    }

    pub fn max_concurrent(&self) -> usize {
        self.state.max_concurrent.load(Ordering::SeqCst)
    }

    pub fn set_status(&self, status: u16) {
        self.state.default_status.store(status, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_retry_after(&self, value: Option<&str>) {
        *self.state.retry_after.lock().unwrap() = value.map(str::to_string);
    }

    pub fn wait_count(&self, n: usize, within: Duration) {
        wait_until(within, &format!("{n} requests at {}", self.url), || {
            self.count() >= n
        });
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn receive(
    req: actix_web::HttpRequest,
    body: actix_web::web::Bytes,
    state: actix_web::web::Data<ReceiverState>,
) -> actix_web::HttpResponse {
    let now = state.current.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_concurrent.fetch_max(now, Ordering::SeqCst);
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    state.log.lock().unwrap().push(Received {
        at: Instant::now(),
        headers,
        body: body.to_vec(),
    });
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        actix_rt::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| state.default_status.load(Ordering::SeqCst));
    state.current.fetch_sub(1, Ordering::SeqCst);
    let mut response =
        actix_web::HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if !(200..300).contains(&status) {
        if let Some(ra) = state.retry_after.lock().unwrap().clone() {
            response.insert_header(("Retry-After", ra));
        }
    }
    response.body(format!("answered {status}"))
}

/// Closes `stream` with a TCP reset (SO_LINGER 0) instead of a FIN, as a peer that gives up.
pub fn reset_connection(stream: std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this function owns, with a correctly sized linger struct.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER");
    drop(stream);
}

/// One series' value from Prometheus text: `name{endpoint="label"...} value`.
pub fn metric_value(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| l.contains(&format!("\"{label}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A systemd notification socket: what hookd sends (`READY=1`, `WATCHDOG=1`, …), with when.
pub struct NotifySocket {
    pub path: PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok(n) = socket.recv(&mut buf) {
                let line = String::from_utf8_lossy(&buf[..n]).to_string();
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        NotifySocket {
            path,
            got,
            _dir: dir,
        }
    }

    /// When each message equal to `what` arrived.
    pub fn times(&self, what: &str) -> Vec<Instant> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.trim() == what)
            .map(|(t, _)| *t)
            .collect()
    }
}

/// The LD_PRELOAD fault shim (`tests/shim/faults.c`), built once per test binary, and its
/// control file: the wall clock's offset, WAL fsyncs to fail, and a delay for each WAL fsync.
pub struct Faults {
    ctl: PathBuf,
    _dir: tempfile::TempDir,
}

fn shim() -> &'static PathBuf {
    static SHIM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SHIM.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let out = dir.join("libhookd_faults.so");
        let tmp = dir.join(format!("libhookd_faults.{}.so", std::process::id()));
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/shim/faults.c");
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(&tmp)
            .arg(src)
            .arg("-ldl")
            .status()
            .expect("run cc for the fault shim");
        assert!(status.success(), "cc failed to build the fault shim");
        std::fs::rename(&tmp, &out).unwrap();
        out
    })
}

impl Faults {
    pub fn new() -> Faults {
        let dir = tempfile::tempdir().unwrap();
        let ctl = dir.path().join("faults.ctl");
        std::fs::write(&ctl, [0u8; 16]).unwrap();
        Faults { ctl, _dir: dir }
    }

    /// The environment that puts the shim into hookd.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", shim().display().to_string()),
            ("FAULT_SHIM_CTL", self.ctl.display().to_string()),
        ]
    }

    fn put(&self, offset: u64, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.ctl)
            .unwrap();
        f.write_all_at(bytes, offset).unwrap();
    }

    /// Steps hookd's wall clock to `offset_ms` from the real one.
    pub fn set_clock_offset(&self, offset_ms: i64) {
        self.put(0, &offset_ms.to_ne_bytes());
    }

    /// The next `n` WAL fsyncs fail with EIO.
    pub fn fail_fsyncs(&self, n: i32) {
        self.put(8, &n.to_ne_bytes());
    }

    /// Every WAL fsync takes `ms` longer.
    pub fn delay_fsyncs(&self, ms: i32) {
        self.put(12, &ms.to_ne_bytes());
    }
}

pub fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks both signatures on a received request, computed here independently of hookd.
pub fn verify_signatures(r: &Received, secret: &str, header: &str) {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&r.body);
    let hex_sig = hex::encode(mac.finalize().into_bytes());
    assert_eq!(
        r.header(header),
        Some(hex_sig.as_str()),
        "hex signature under {header}"
    );

    let id = r.header("webhook-id").expect("webhook-id");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let ts_num: i64 = ts.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - ts_num).abs() < 120, "timestamp {ts} is current");
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    let header_value = r.header("webhook-signature").expect("webhook-signature");
    assert!(
        header_value.split(' ').any(|s| s == expected),
        "standard signature {expected} in {header_value}"
    );
}
