//! A real `nats-server -js` (Debian's) on a loopback port with its store in a temp dir, and a
//! blocking JetStream client for tests and the e2e bench to publish and inspect with.
//! Shared by `tests/nats.rs` and `benches/e2e.rs` (included there by path).
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a JetStream server on a port of 127.0.0.1 it picks itself, and waits until it
    /// speaks NATS.
    ///
    /// The server picks (`-p -1`) and reports it in a ports file because a port found free by
    /// the test and handed over can be taken in between: by another test's nats-server, whose
    /// restart then resets this test's connections, as CI once saw.
    pub fn start() -> NatsServer {
        let mut s = NatsServer {
            child: None,
            port: 0,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let ports_dir = self.dir.path().join("ports");
        std::fs::create_dir_all(&ports_dir).expect("ports dir");
        let port = if self.port == 0 {
            "-1".to_string()
        } else {
            self.port.to_string()
        };
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "--ports_file_dir"])
            .arg(&ports_dir)
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian's nats-server package; ./scripts/install-prereqs)");
        let ports_file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            assert!(Instant::now() < deadline, "nats-server did not start");
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("nats-server exited at start: {status}");
            }
            if let Some(port) = reported_port(&ports_file) {
                assert!(
                    self.port == 0 || self.port == port,
                    "nats-server moved from port {} to {port}",
                    self.port
                );
                if speaks_nats(port) {
                    self.port = port;
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and waits for it to exit: JetStream's store stays in the temp dir.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }
}

/// The client port in a nats-server ports file (`{"nats":["nats://127.0.0.1:PORT"]}`), once
/// the file is whole.
fn reported_port(file: &std::path::Path) -> Option<u16> {
    let text = std::fs::read_to_string(file).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["nats"][0].as_str()?.rsplit(':').next()?.parse().ok()
}

/// Whether a server on `port` greets a new connection with NATS's `INFO`: a bare TCP connect
/// can succeed against a listener that is not (or not yet) a working nats-server.
fn speaks_nats(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let mut greeting = [0u8; 5];
    c.read_exact(&mut greeting).is_ok() && &greeting == b"INFO "
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A JetStream client driven from blocking code.
pub struct Js {
    pub rt: tokio::runtime::Runtime,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

impl Js {
    pub fn connect(url: &str) -> Js {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let client = rt
            .block_on(async_nats::connect(url))
            .expect("connect to nats-server");
        // The context spawns its acknowledgement task on the runtime it is made in.
        let js = {
            let _in_runtime = rt.enter();
            jetstream::new(client.clone())
        };
        Js { rt, client, js }
    }

    /// A file-backed stream over `subjects`, refusing a repeated `Nats-Msg-Id` within
    /// `duplicate_window`.
    pub fn create_stream(&self, name: &str, subjects: &[&str], duplicate_window: Duration) {
        self.rt
            .block_on(self.js.create_stream(jetstream::stream::Config {
                name: name.to_string(),
                subjects: subjects.iter().map(|s| s.to_string()).collect(),
                duplicate_window,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            }))
            .expect("create stream");
    }

    /// Publishes each (subject, Nats-Msg-Id, body) and waits for JetStream to have stored
    /// them all; returns how many it stored (a repeated id within the window is not).
    pub fn publish(&self, messages: Vec<(String, Option<String>, Vec<u8>)>) -> usize {
        self.rt.block_on(async {
            let mut stored = 0;
            let mut acks = Vec::new();
            for (subject, id, body) in messages {
                let mut headers = async_nats::HeaderMap::new();
                if let Some(id) = id {
                    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
                }
                acks.push(
                    self.js
                        .publish_with_headers(subject, headers, body.into())
                        .await
                        .expect("publish"),
                );
                // The context lets 5,000 acknowledgements be outstanding, then waits on them.
                if acks.len() == 1_000 {
                    stored += Self::stored(std::mem::take(&mut acks)).await;
                }
            }
            stored + Self::stored(acks).await
        })
    }

    async fn stored(acks: Vec<jetstream::context::PublishAckFuture>) -> usize {
        let mut stored = 0;
        for ack in acks {
            if !ack.await.expect("publish acknowledged").duplicate {
                stored += 1;
            }
        }
        stored
    }

    /// The consumer's (pending, ack pending, redelivered) counts.
    pub fn consumer_counts(&self, stream: &str, durable: &str) -> Option<(u64, usize, usize)> {
        self.rt.block_on(async {
            let s = self.js.get_stream(stream).await.ok()?;
            let info = s.consumer_info(durable).await.ok()?;
            Some((info.num_pending, info.num_ack_pending, info.num_redelivered))
        })
    }

    /// Deletes a durable consumer (an operator's `nats consumer rm`): the next hookd to start
    /// with it makes it again, from the start of the stream.
    pub fn delete_consumer(&self, stream: &str, durable: &str) {
        self.rt
            .block_on(async {
                let s = self.js.get_stream(stream).await?;
                s.delete_consumer(durable).await?;
                Ok::<_, async_nats::Error>(())
            })
            .expect("delete the consumer");
    }

    /// Records the stream sequence of every message the consumer terminates (`+TERM`), from
    /// JetStream's own advisories.
    pub fn watch_terminations(
        &self,
        stream: &str,
        durable: &str,
    ) -> std::sync::Arc<std::sync::Mutex<Vec<u64>>> {
        use futures_util::StreamExt;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let subject = format!("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.{durable}");
        let mut sub = self
            .rt
            .block_on(self.client.subscribe(subject))
            .expect("subscribe to advisories");
        // The subscription is registered once this flush returns.
        self.rt.block_on(self.client.flush()).expect("flush");
        let out = seen.clone();
        self.rt.spawn(async move {
            while let Some(m) = sub.next().await {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
                if let Some(seq) = v["stream_seq"].as_u64() {
                    out.lock().unwrap().push(seq);
                }
            }
        });
        seen
    }
}
