//! hookd: a webhook dispatcher. Programs hand it events over a local HTTP API; it stores them
//! durably in RocksDB, fans each out to every endpoint of the tenant subscribed to its type,
//! signs every request (a hex HMAC header and Standard Webhooks headers), and delivers with a
//! per-endpoint concurrency limit and a retry schedule. An acknowledged event survives a crash
//! at any instant.
//!
//! # Layout
//!
//! - [`config`]: figment layers (defaults ← file ← `HOOKD_*`), validation.
//! - [`model`]: endpoints, events, deliveries, attempts, ids, the redacted [`model::Secret`].
//! - [`canonical`]: the exact body bytes receivers get (JavaScript's `JSON.stringify` form).
//! - [`storage`]: the [`storage::Store`], the only code that touches RocksDB; group commit.
//! - [`dispatch`]: the supervisor and one actor per endpoint; queues, timers, concurrency.
//! - [`delivery`]: the HTTP client, request signing, outcome classification.
//! - [`api`]: the actix-web handlers, auth, JSON errors.
//! - [`metrics`]: every Prometheus metric, with bounded labels.
//! - [`notify`]: systemd readiness, stopping and watchdog notifications.
//! - [`clock`]: hookd's one timeline, which wall-clock steps do not move.
//! - [`stream`]: the live feed of attempts and state changes behind `GET /v1/stream`.
//! - [`rules`]: the forms of request strings, shared by validation and the OpenAPI document.
//! - [`ctl`]: `hookd ctl`, the operator's command line over the control API.
//!
//! [`run`] is the one seam both `main` and the tests use: it serves on a listener the caller
//! bound, and returns once `shutdown` resolves and the server has stopped.

pub mod api;
pub mod canonical;
pub mod clock;
pub mod config;
pub mod ctl;
pub mod delivery;
pub mod dispatch;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod filter;
pub mod intake;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod operator;
pub mod rules;
pub mod schemas;
pub mod source;
pub mod storage;
pub mod stream;

use std::future::Future;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use crate::api::{AppState, Tokens};
use crate::config::{Config, LogConfig, LogFormat};
use crate::delivery::Sender;
use crate::dispatch::{Router, Shared};
use crate::storage::{StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("admin token file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] delivery::SenderError),
    #[error("HTTP server: {0}")]
    Server(#[from] std::io::Error),
    #[error("{0}")]
    Schemas(String),
    #[error("nats source: cannot start its thread: {0}")]
    Source(std::io::Error),
    #[error("storage cannot write and did not recover; exiting for a restart")]
    StorageFailed,
}

/// The tokens in force: the configured ones, or the generated admin token when none is.
fn tokens_of(config: &Config, generated: Option<&str>) -> Tokens {
    let mut admin = config.auth.admin_tokens.clone();
    if admin.is_empty() {
        admin.extend(generated.map(str::to_string));
    }
    Tokens::new(&admin, &config.auth.ingest_tokens)
}

/// SIGHUP: loads the configuration again; applies `auth.*`, `log.level` and `events.types`,
/// logs what changed and what would need a restart; a configuration that does not load is
/// refused with the old one kept. Never stops hookd.
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    state: web::Data<AppState>,
    started: Arc<Config>,
    file: Option<std::path::PathBuf>,
    generated: Option<String>,
) {
    let mut current = (*started).clone();
    while hangups.recv().await.is_some() {
        let new = match Config::load(file.as_deref()) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: configuration refused; keeping the one in force");
                continue;
            }
        };
        // Schemas are compiled again on every reload: their files may have changed even
        // when the setting did not. A directory that does not load keeps the old catalogue.
        let schemas = match load_schemas(&new) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: events.schemas refused; keeping the configuration in force");
                continue;
            }
        };
        if let Err(e) = reload_log_level(&new.log.level) {
            tracing::error!(error = %e, "SIGHUP: log.level refused; keeping the one in force");
            continue;
        }
        let mut changed = Vec::new();
        if new.auth.admin_tokens != current.auth.admin_tokens
            || new.auth.ingest_tokens != current.auth.ingest_tokens
        {
            *state.tokens.write() = tokens_of(&new, generated.as_deref());
            changed.push("auth");
        }
        if new.log.level != current.log.level {
            changed.push("log.level");
        }
        let catalogue = catalogue_of(&new, &schemas);
        if *state.catalogue() != catalogue {
            changed.push("events.types");
        }
        *state.catalogue.write() = Arc::new(catalogue);
        *state.schemas.write() = Arc::new(schemas);
        // What the running process cannot take: the rest, compared section by section.
        let mut restart = Vec::new();
        if !same(&new.server, &started.server) {
            restart.push("server");
        }
        if !same(&new.storage, &started.storage) {
            restart.push("storage");
        }
        if !same(&new.delivery, &started.delivery) {
            restart.push("delivery");
        }
        if new.events.max_payload_bytes != started.events.max_payload_bytes
            || new.events.max_batch_bytes != started.events.max_batch_bytes
        {
            restart.push("events limits");
        }
        if new.log.format != started.log.format {
            restart.push("log.format");
        }
        if !same(&new.source, &started.source) {
            restart.push("source");
        }
        tracing::info!(
            changed = ?changed,
            needs_restart = ?restart,
            "SIGHUP: configuration reloaded"
        );
        current = new;
    }
}

/// `events.schemas`, compiled (none when unset).
fn load_schemas(config: &Config) -> Result<schemas::Schemas, String> {
    if config.events.schemas.as_os_str().is_empty() {
        return Ok(schemas::Schemas::default());
    }
    let loaded = schemas::Schemas::load(&config.events.schemas)?;
    tracing::info!(
        path = %config.events.schemas.display(),
        types = loaded.types().count(),
        "event schemas loaded"
    );
    Ok(loaded)
}

/// The catalogue: `events.types` and the schemas' types.
fn catalogue_of(config: &Config, schemas: &schemas::Schemas) -> Vec<String> {
    let mut types = config.events.types.clone();
    for t in schemas.types() {
        if !types.iter().any(|x| x == t) {
            types.push(t.to_string());
        }
    }
    types
}

/// Configuration sections derive no `PartialEq`; their serialized forms compare instead.
fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// Pings systemd's watchdog only while the dispatcher answers (the supervisor and every
/// arbiter thread run a task within the interval) and storage can write without being stuck:
/// a wedged hookd is restarted rather than left looking alive.
async fn feed_watchdog(
    every: std::time::Duration,
    store: Store,
    supervisor: actix::Addr<dispatch::Supervisor>,
) {
    let mut tick = actix_rt::time::interval(every);
    let mut was_fed = true;
    loop {
        tick.tick().await;
        let dispatcher = matches!(
            actix_rt::time::timeout(every, supervisor.send(dispatch::Ping)).await,
            Ok(Ok(()))
        );
        let storage = store.healthy();
        if dispatcher && storage {
            notify::notify("WATCHDOG=1");
            if !was_fed {
                tracing::info!("dispatcher and storage healthy again; feeding the watchdog");
            }
        } else if was_fed {
            tracing::error!(
                dispatcher_answers = dispatcher,
                storage_writable = storage,
                "not feeding the watchdog"
            );
        }
        was_fed = dispatcher && storage;
    }
}

/// Replaces the log filter in force (a SIGHUP reload of `log.level`).
type ReloadLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
static RELOAD_LEVEL: std::sync::OnceLock<ReloadLevel> = std::sync::OnceLock::new();

fn filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    // The NATS client logs every reconnect attempt at info; hookd's source says once that it
    // is down, and why. A filter that names async_nats itself keeps its own say.
    let level = if level.contains("async_nats") {
        level.to_string()
    } else {
        format!("{level},async_nats=warn")
    };
    tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())
}

/// Sends logs to stderr, as text or one JSON object per line; `log.level` can be changed later
/// by [`reload_log_level`].
pub fn init_logging(log: &LogConfig) {
    let initial = filter(&log.level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(initial)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // The two formats are two builder types; a macro keeps the one set-up for both (a
    // generic function would have to restate tracing-subscriber's bounds).
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder.with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                let _ = RELOAD_LEVEL.set(Box::new(move |level| {
                    handle.reload(filter(level)?).map_err(|e| e.to_string())
                }));
            }
        }};
    }
    match log.format {
        LogFormat::Text => install!(builder),
        LogFormat::Json => install!(builder.json()),
    }
}

/// Sets the log filter in force to `level`.
pub fn reload_log_level(level: &str) -> Result<(), String> {
    match RELOAD_LEVEL.get() {
        Some(reload) => reload(level),
        None => Err("logging is not set up".into()),
    }
}

/// The admin token hookd uses when none is configured: read from `<data>/admin.token`, or
/// generated once and written there with mode 0600.
fn generated_admin_token(data: &Path) -> Result<String, RunError> {
    let path = data.join("admin.token");
    let err = |source| RunError::TokenFile {
        path: path.display().to_string(),
        source,
    };
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let token = existing.trim().to_string();
        if token.len() >= 16 {
            tracing::info!(path = %path.display(), "no admin token configured; using the one in the token file");
            return Ok(token);
        }
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let token = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(err)?;
    file.write_all(token.as_bytes()).map_err(err)?;
    file.write_all(b"\n").map_err(err)?;
    file.sync_all().map_err(err)?;
    tracing::info!(path = %path.display(), "no admin token configured; generated one and wrote it to the token file");
    Ok(token)
}

/// Runs hookd on `listener` until `shutdown` resolves. Must be called inside an actix system.
/// On SIGHUP the configuration is loaded again from `config_file` (as at start) and what can
/// change without a restart is applied.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    config_file: Option<std::path::PathBuf>,
) -> Result<(), RunError> {
    // Installed first, so that a SIGHUP during start-up does not end the process.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let config = Arc::new(config);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "hookd starting");
    if config.delivery.allow_http {
        tracing::warn!("delivery.allow_http is on: endpoints may use plain http");
    }
    if config.delivery.allow_private_networks {
        tracing::warn!(
            "delivery.allow_private_networks is on: hookd may connect to loopback and private addresses"
        );
    }
    let router = Arc::new(Router::default());
    let hand_over = {
        let router = router.clone();
        Box::new(move |seq, events| router.hand_over(seq, events))
    };
    let store = Store::open(
        &config.storage.path,
        config.storage.sync,
        config.storage.min_free_bytes,
        hand_over,
    )?;
    tracing::info!(path = %config.storage.path.display(), "storage opened");
    // Only now: a start that fails on its data directory never claimed to be listening.
    tracing::info!("listening on {}", listener.local_addr()?);
    let generated = if config.auth.admin_tokens.is_empty() {
        Some(generated_admin_token(&config.storage.path)?)
    } else {
        None
    };
    let tokens = tokens_of(&config, generated.as_deref());
    let schemas = load_schemas(&config).map_err(RunError::Schemas)?;
    let feed = Arc::new(stream::Feed::default());
    let (relay, relay_opener) = match config.operator.tenant() {
        Some(tenant) => {
            let (relay, opener) = operator::Relay::start(store.clone(), router.clone(), tenant);
            (Some(relay), Some(opener))
        }
        None => (None, None),
    };
    let shared = Arc::new(Shared {
        config: config.clone(),
        store: store.clone(),
        sender: Sender::new(&config.delivery)?,
        feed: feed.clone(),
        router: router.clone(),
        operator: relay,
    });
    let state = web::Data::new(AppState {
        config: config.clone(),
        store: store.clone(),
        router: router.clone(),
        tokens: parking_lot::RwLock::new(tokens),
        catalogue: parking_lot::RwLock::new(Arc::new(catalogue_of(&config, &schemas))),
        schemas: parking_lot::RwLock::new(Arc::new(schemas)),
        ready: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        supervisor: parking_lot::RwLock::new(None),
        feed: feed.clone(),
        started_at: std::time::Instant::now(),
        nats: config
            .source
            .nats
            .as_ref()
            .map(|_| Arc::new(source::SourceStatus::new(source::SourceKind::Nats))),
    });

    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .wrap(actix_web::middleware::from_fn(api::check_method_and_query))
            .configure(api::routes)
    })
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(config.server.shutdown_grace.as_secs().max(1))
    .run();
    let server_handle = server.handle();
    let server_task = actix_rt::spawn(server);

    let (supervisor, recovered) = dispatch::start(shared, router).await?;
    *state.supervisor.write() = Some(supervisor.clone());
    if let Some(opener) = relay_opener {
        opener.open();
    }
    state.ready.store(true, Ordering::Release);
    // After recovery, like HTTP intake: what it stores is handed to running actors.
    let nats = match (&config.source.nats, &state.nats) {
        (Some(nats), Some(status)) => Some(
            source::nats::NatsSource::start(nats.clone(), state.clone(), status.clone())
                .map_err(RunError::Source)?,
        ),
        _ => None,
    };
    tracing::info!(
        endpoints = recovered.endpoints,
        pending = recovered.pending,
        cancelled_orphans = recovered.orphans_cancelled,
        took_ms = recovered.took.as_millis() as u64,
        "recovery finished; ready"
    );

    match hangups {
        Ok(hangups) => {
            actix_rt::spawn(reload_on_hangup(
                hangups,
                state.clone(),
                config.clone(),
                config_file,
                generated,
            ));
        }
        Err(e) => tracing::warn!(error = %e, "cannot watch SIGHUP; reload needs a restart"),
    }
    notify::notify("READY=1");
    if let Some(every) = notify::watchdog_interval() {
        actix_rt::spawn(feed_watchdog(every, store.clone(), supervisor.clone()));
    }

    // A storage fault that does not heal ends the process (non-zero, for systemd to restart
    // it): a live hookd that cannot write helps no one, and recovery replays the WAL.
    tokio::select! {
        () = shutdown => {}
        () = store.gave_up() => {
            notify::notify("STOPPING=1");
            return Err(RunError::StorageFailed);
        }
    }
    let grace = config.server.shutdown_grace;
    tracing::info!(grace = ?grace, "shutting down: intake stopped, finishing in-flight attempts");
    notify::notify("STOPPING=1");
    state.stopping.store(true, Ordering::Release);
    if let Some(nats) = nats {
        nats.stop(grace).await;
    }
    feed.close();
    server_handle.stop(true).await;
    let _ = server_task.await;
    match actix_rt::time::timeout(grace, supervisor.send(dispatch::Drain)).await {
        Ok(Ok(())) => tracing::info!("every in-flight attempt finished and was stored"),
        Ok(Err(e)) => tracing::warn!(error = %e, "dispatcher gone before draining"),
        Err(_) => tracing::warn!(
            "shutdown grace ran out; attempts still in flight will be made again after restart"
        ),
    }
    store.close()?;
    tracing::info!("stopped");
    Ok(())
}
