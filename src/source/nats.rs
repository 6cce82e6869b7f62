//! `[source.nats]`: events from a JetStream stream through a durable pull consumer.
//!
//! The path of a message: JetStream → this thread's pull subscription → a chunk of whatever
//! has arrived (at most [`BATCH`]) → each message parsed and checked by the same intake as
//! `POST /v1/events` → one `Store::ingest` call for the chunk's valid events (one group
//! commit, one fsync) → `+ACK` for each of them. An invalid message is answered `+TERM` at
//! once, logged and counted. Chunks wait for their commit side by side, up to `IN_FLIGHT`
//! messages in all, so that parsing the next chunk overlaps the fsync of the previous ones,
//! and small chunks (messages arriving no faster than they are parsed) still fill a group
//! commit together.
//!
//! Invariants:
//! - a message is acknowledged only after `Store::ingest` answered for its event, so after
//!   the fsync; a crash before that leaves it unacknowledged and JetStream redelivers it after
//!   `ack_wait`. Its event id (the body's `id`, else `Nats-Msg-Id`, else one derived from the
//!   message's stream sequence and publish time, which a redelivery keeps) makes the second
//!   arrival a duplicate, acknowledged without storing anything;
//! - a message hookd could not store (disk full, storage fault) is neither acknowledged nor
//!   terminated: it is answered `-NAK` with a delay, so JetStream offers it again;
//! - the consumer is only ever created or updated, never deleted: its position belongs to
//!   JetStream and survives hookd's restarts and the loss of its disk.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use async_nats::connection::State;
use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use super::SourceStatus;
use crate::api::AppState;
use crate::config::NatsConfig;
use crate::intake::{EventIn, Rules};
use crate::metrics::{IngestRejection, METRICS};
use crate::model::now_millis;
use crate::storage::{IngestOutcome, NewEvent, StorageError};

/// Most messages per pull request and per `Store::ingest` call: what one HTTP batch holds.
pub const BATCH: usize = 1000;
/// Messages whose commit is awaited at once (in chunks of any size). Counted in messages, not
/// chunks: four chunks of a few dozen messages each kept the group commit at a few hundred
/// events per fsync.
const IN_FLIGHT: usize = 4 * BATCH;
/// JetStream stops delivering past this many unacknowledged messages: room for the messages
/// in flight, the chunk being parsed and the next pull.
const MAX_ACK_PENDING: i64 = (IN_FLIGHT + 2 * BATCH) as i64;
/// The server sends a heartbeat this often while a pull waits; two missed mean the
/// subscription is gone (a server restart, a lost route) and the consumer is set up again.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// The first wait after a fault before the consumer is set up again; it doubles up to
/// `RETRY_MAX` while the fault lasts.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Longest wait between two attempts to set the consumer up.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long a message hookd could not store waits before JetStream offers it again.
const NAK_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
enum SourceError {
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("consumer {durable}: {message}")]
    Consumer { durable: String, message: String },
    #[error("the subscription ended: {0}")]
    Messages(String),
}

/// The running source; [`NatsSource::stop`] ends it.
pub struct NatsSource {
    stop: tokio::sync::watch::Sender<bool>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl NatsSource {
    /// Starts consuming on a thread of its own. Call once recovery has finished: the events
    /// it stores are handed to the endpoint actors at once.
    pub fn start(
        config: NatsConfig,
        state: web::Data<AppState>,
        status: Arc<SourceStatus>,
    ) -> std::io::Result<NatsSource> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (finished, done) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("hookd-nats".into())
            .spawn(move || {
                runtime.block_on(consume(config, state, status, stopped));
                let _ = finished.send(());
            })?;
        Ok(NatsSource { stop, done })
    }

    /// Stops taking messages and waits, up to `grace`, for the chunks in flight to be stored
    /// and acknowledged. What was pulled but not stored is redelivered after `ack_wait`.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        if actix_rt::time::timeout(grace, self.done).await.is_err() {
            tracing::warn!("nats source: still storing at the end of the grace period");
        }
    }
}

/// Sets the consumer up and takes messages until told to stop, setting it up again after
/// every fault, with a growing pause.
async fn consume(
    config: NatsConfig,
    state: web::Data<AppState>,
    status: Arc<SourceStatus>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let url = config.masked_url();
    let client = match connect(&config, status.clone()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "nats source: not started");
            status.fault(e.to_string());
            return;
        }
    };
    let js = jetstream::new(client.clone());
    let mut pause = FIRST_PAUSE;
    loop {
        if *stop.borrow() {
            break;
        }
        // Asked of JetStream only over a connection: a request while the client reconnects
        // waits out its timeout, and a stop meanwhile would wait with it.
        let set_up = if client.connection_state() == State::Connected {
            tokio::select! {
                _ = stop.changed() => break,
                set_up = set_up(&config, &js) => set_up,
            }
        } else {
            Err(SourceError::Connect {
                url: url.clone(),
                message: "no connection; retrying".into(),
            })
        };
        let result = match set_up {
            Ok(messages) => {
                // Set up: a later fault starts its retries from the shortest pause again.
                pause = FIRST_PAUSE;
                take(messages, &config, &state, &status, &mut stop).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => break,
            Err(e) => {
                if status.is_up() || pause == FIRST_PAUSE {
                    tracing::warn!(error = %e, url = %url, "nats source down; setting it up again");
                }
                status.fault(e.to_string());
            }
        }
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
    // Acknowledgements are buffered by the client: sent before it is dropped, or the
    // messages they answer come back after ack_wait as duplicates.
    if client.connection_state() == State::Connected {
        match tokio::time::timeout(Duration::from_secs(1), client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "nats source: acknowledgements not flushed at stop")
            }
            Err(_) => tracing::warn!("nats source: acknowledgements not flushed within 1 s"),
        }
    }
    tracing::info!("nats source stopped");
}

async fn connect(
    config: &NatsConfig,
    status: Arc<SourceStatus>,
) -> Result<async_nats::Client, SourceError> {
    let url = config.masked_url();
    let log_url = url.clone();
    async_nats::ConnectOptions::new()
        .name("hookd")
        // The first connection is retried in the background like every later one: a broker
        // that is down at start must not keep hookd from serving HTTP.
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let status = status.clone();
            let url = log_url.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(url = %url, "nats source: connected");
                        status.set_connected(true, None);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(url = %url, "nats source: disconnected; reconnecting");
                        status.set_connected(false, Some(format!("disconnected from {url}")));
                    }
                    // A failed reconnect: the source's own fault report says it once.
                    async_nats::Event::ClientError(e) => {
                        tracing::debug!(url = %url, error = %e, "nats source: client error")
                    }
                    other => tracing::warn!(url = %url, event = %other, "nats source"),
                }
            }
        })
        .connect(config.url.as_str())
        .await
        .map_err(|e| SourceError::Connect {
            url,
            message: e.to_string(),
        })
}

/// The stream and the durable consumer (created, or updated to this configuration), and a
/// pull subscription on it.
async fn set_up(config: &NatsConfig, js: &jetstream::Context) -> Result<pull::Stream, SourceError> {
    let stream = js
        .get_stream(&config.stream)
        .await
        .map_err(|e| SourceError::Stream {
            stream: config.stream.clone(),
            message: e.to_string(),
        })?;
    let consumer_error = |e: &dyn std::fmt::Display| SourceError::Consumer {
        durable: config.durable.clone(),
        message: e.to_string(),
    };
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(config.durable.clone()),
            filter_subject: config.subject.clone(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_ack_pending: MAX_ACK_PENDING,
            description: Some("hookd: events in; acknowledged once durably stored".into()),
            ..Default::default()
        })
        .await
        .map_err(|e| consumer_error(&e))?;
    consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .heartbeat(HEARTBEAT)
        .messages()
        .await
        .map_err(|e| consumer_error(&e))
}

/// One life of the consumer: chunks until a fault (an error) or a stop (`Ok`). Either way,
/// the chunks in flight are stored and acknowledged before it returns.
async fn take(
    messages: pull::Stream,
    config: &NatsConfig,
    state: &web::Data<AppState>,
    status: &SourceStatus,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), SourceError> {
    status.set_consuming();
    tracing::info!(
        stream = %config.stream,
        durable = %config.durable,
        subject = %config.subject,
        "nats source: consuming"
    );
    let mut chunks = messages.ready_chunks(BATCH);
    let mut in_flight = FuturesUnordered::new();
    let mut in_flight_messages = 0usize;
    let result = loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break Ok(()),
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                in_flight_messages -= done;
            }
            chunk = chunks.next(), if in_flight_messages < IN_FLIGHT => {
                let Some(chunk) = chunk else {
                    break Err(SourceError::Messages("closed by the client".into()));
                };
                let mut fault = None;
                let mut good = Vec::with_capacity(chunk.len());
                for m in chunk {
                    match m {
                        Ok(m) => good.push(m),
                        Err(e) => fault = Some(SourceError::Messages(e.to_string())),
                    }
                }
                if !good.is_empty() {
                    in_flight_messages += good.len();
                    in_flight.push(store_chunk(state, &config.stream, good));
                }
                if let Some(e) = fault {
                    break Err(e);
                }
            }
        }
    };
    while in_flight.next().await.is_some() {}
    result
}

/// A chunk checked: the events to store with what acknowledges each, and what to terminate.
struct CheckedChunk {
    to_store: Vec<NewEvent>,
    ackers: Vec<jetstream::message::Acker>,
    refused: Vec<jetstream::message::Acker>,
    /// The catalogue the chunk was checked against, for counting what it stores.
    catalogue: std::sync::Arc<Vec<String>>,
}

/// Parses, checks and routes each message of a chunk (the CPU-bound part); logs and counts
/// the invalid ones.
fn check_chunk(
    state: &web::Data<AppState>,
    stream: &str,
    messages: Vec<jetstream::Message>,
) -> CheckedChunk {
    let catalogue = state.catalogue();
    let schemas = state.schemas();
    let rules = state.rules(&catalogue, &schemas);
    let now = now_millis();
    let mut checked = CheckedChunk {
        to_store: Vec::with_capacity(messages.len()),
        ackers: Vec::with_capacity(messages.len()),
        refused: Vec::new(),
        catalogue: catalogue.clone(),
    };
    for m in messages {
        // One parse of the reply subject for both.
        let (sequence, published) = m.info().map_or((0, 0), |i| {
            (i.stream_sequence, i.published.unix_timestamp_nanos())
        });
        let (message, acker) = m.split();
        match check(&rules, &message, sequence, published, now) {
            Ok(new) => {
                checked.to_store.push(new);
                checked.ackers.push(acker);
            }
            Err((reason, error)) => {
                tracing::warn!(stream, sequence, error = %error, "nats source: invalid message terminated");
                METRICS.ingest_rejected(reason, 1);
                checked.refused.push(acker);
            }
        }
    }
    checked
}

/// Checks a chunk, terminates what is invalid, stores the rest with one `Store::ingest`, then
/// acknowledges it (or, if it could not be stored, offers it again later). Resolves to the
/// number of messages it took.
fn store_chunk(
    state: &web::Data<AppState>,
    stream: &str,
    messages: Vec<jetstream::Message>,
) -> impl std::future::Future<Output = usize> {
    let count = messages.len();
    let state = state.clone();
    // Checked here, on this thread: handing chunks to the blocking pool cost more (22 µs of
    // CPU per event against 18 in the bench's nats phase) than the second core gave back.
    let CheckedChunk {
        to_store,
        ackers,
        refused,
        catalogue,
    } = check_chunk(&state, stream, messages);
    let store = state.store.clone();
    async move {
        for acker in refused {
            if let Err(e) = acker.ack_with(AckKind::Term).await {
                tracing::warn!(error = %e, "nats source: +TERM not sent; the message comes back");
            }
        }
        if to_store.is_empty() {
            return count;
        }
        #[cfg(feature = "failpoints")]
        if let Some(delay) = crate::failpoints::source_store_delay() {
            tokio::time::sleep(delay).await;
        }
        let types: Vec<String> = to_store
            .iter()
            .map(|n| n.event.event_type.clone())
            .collect();
        match store.ingest(to_store).await {
            Ok(outcomes) => {
                for ((acker, outcome), event_type) in ackers.into_iter().zip(outcomes).zip(types) {
                    if matches!(outcome, IngestOutcome::Stored { .. }) {
                        METRICS.event_ingested(&event_type, &catalogue);
                    }
                    // A lost +ACK only means the message comes back, as a duplicate.
                    if let Err(e) = acker.ack().await {
                        tracing::warn!(error = %e, "nats source: +ACK not sent; the message comes back");
                    }
                }
            }
            Err(e) => {
                let reason = match e {
                    StorageError::DiskFull { .. } => IngestRejection::DiskFull,
                    _ => IngestRejection::StorageError,
                };
                tracing::warn!(error = %e, messages = ackers.len(), "nats source: not stored; offered again");
                METRICS.ingest_rejected(reason, ackers.len() as u64);
                for acker in ackers {
                    let _ = acker.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
                }
            }
        }
        count
    }
}

/// One message as an event: its body in the `POST /v1/events` form, its id from the body,
/// else `Nats-Msg-Id`, else derived from where it sits in the stream (which a redelivery
/// keeps: the stream sequence and the publish time, which differ once a stream is recreated).
fn check(
    rules: &Rules<'_>,
    message: &async_nats::Message,
    sequence: u64,
    published: i128,
    now: crate::model::UnixMillis,
) -> Result<NewEvent, (IngestRejection, String)> {
    let mut input: EventIn = crate::api::parse_json(&message.payload, "")
        .map_err(|e| (IngestRejection::Invalid, e.message))?;
    if input.id.is_none() {
        let header = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_string());
        input.id = Some(match header {
            Some(id) => {
                crate::model::check_identifier(&id)
                    .map_err(|m| (IngestRejection::Invalid, format!("Nats-Msg-Id: {m}")))?;
                id
            }
            None => format!("nats-{sequence}-{published}"),
        });
    }
    rules
        .prepare(input, "", now)
        .map_err(|e| (e.rejection(), e.to_string()))
}
