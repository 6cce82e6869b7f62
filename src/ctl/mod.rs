//! `hookd ctl`: the operator's command line over the control API (API.md §10). Human tables
//! by default, the API's JSON with `--json`; exit 0 on success, 1 on an API or connection
//! error (its message on stderr), 2 on a usage error (clap's own exit code).
//!
//! Where it connects: `--url`, else `$HOOKD_URL`, else `http://<server.listen>` of the
//! effective configuration; with `--token`, else `--token-file`, else `$HOOKD_TOKEN`, else
//! `<storage.path>/admin.token`.

mod client;
mod receive;
mod table;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

pub use client::CtlError;
use client::{q, Api};
use table::{age, print_table};

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// hookd's control API (else $HOOKD_URL, else http://<server.listen> of the configuration)
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Bearer token (else --token-file, else $HOOKD_TOKEN, else <storage.path>/admin.token)
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the bearer token
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON instead of tables
    #[arg(long)]
    pub json: bool,
    /// The configuration whose server.listen and storage.path give the defaults
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

// Parsed once per run: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Readiness, version, uptime, pending total, and every endpoint's state
    Status,
    /// Endpoints: list, show, create, update, delete, pause, resume, test, rotate-secret
    #[command(subcommand)]
    Endpoints(EndpointsCommand),
    /// Deliveries: list, show, retry
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Queue an endpoint's failed deliveries of a time window again
    Recover {
        /// Endpoint id
        id: String,
        /// RFC 3339 time, or a duration back from now (2h, 3d)
        #[arg(long)]
        since: String,
        /// RFC 3339 time, or a duration back from now (default: now)
        #[arg(long)]
        until: Option<String>,
    },
    /// Events: show, send
    #[command(subcommand)]
    Events(EventsCommand),
    /// Have the daemon write an online, consistent backup into DIR (a new directory on its host)
    Backup {
        /// Where the backup goes: must not exist yet; its parent must, writable by hookd
        dir: std::path::PathBuf,
    },
    /// Follow attempts and endpoint state changes as they happen, until interrupted
    Tail {
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// A receiver for trying hookd: prints each request, checks both signatures
    Receive {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: String,
        /// The endpoint's secret (whsec_…): both signatures are checked with it
        #[arg(long)]
        secret: Option<String>,
        /// The status code to answer with
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(100..=599))]
        status: u16,
    },
    /// Shell completions on stdout
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug, Default)]
pub struct EndpointFlags {
    /// Endpoint URL
    #[arg(long)]
    pub url: Option<String>,
    /// Event types, comma-separated (* for all)
    #[arg(long, value_delimiter = ',')]
    pub types: Option<Vec<String>>,
    #[arg(long)]
    pub description: Option<String>,
    /// A static header, K=V; repeat for more
    #[arg(long = "header", value_name = "K=V")]
    pub headers: Vec<String>,
    #[arg(long)]
    pub signature_header: Option<String>,
    /// Per-attempt timeout (10s)
    #[arg(long)]
    pub timeout: Option<String>,
    /// Delays before each retry, comma-separated (1m,5m,30m)
    #[arg(long, value_delimiter = ',')]
    pub retry_schedule: Option<Vec<String>>,
    #[arg(long)]
    pub max_concurrency: Option<u32>,
    /// N/s with an optional burst: 50/s or 50/s,burst=100
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// key: deliveries with the same ordering key go one at a time
    #[arg(long)]
    pub ordering: Option<String>,
    /// Deliveries not succeeded within this expire (1h)
    #[arg(long)]
    pub ttl: Option<String>,
    /// A payload filter, as JSON
    #[arg(long)]
    pub filter: Option<String>,
    /// hmac (default) or ed25519 (create only)
    #[arg(long)]
    pub signing: Option<String>,
    /// An HTTP CONNECT proxy, http://host:port
    #[arg(long)]
    pub proxy: Option<String>,
    /// A PEM file of CAs trusted for this endpoint
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// A PEM file with the client certificate chain
    #[arg(long, value_name = "FILE")]
    pub tls_client_cert: Option<std::path::PathBuf>,
    /// A PEM file with the client certificate's private key
    #[arg(long, value_name = "FILE")]
    pub tls_client_key: Option<std::path::PathBuf>,
    /// OAuth 2.0 client credentials as JSON: {"token_url", "client_id", "client_secret", "scope"}
    #[arg(long, value_name = "JSON")]
    pub oauth2: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum EndpointsCommand {
    /// One row per endpoint
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Settings and stats
    Show {
        id: String,
    },
    /// Create an endpoint; prints its secret, this once
    Create {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        flags: EndpointFlags,
    },
    /// Change the settings given
    Update {
        id: String,
        #[command(flatten)]
        flags: EndpointFlags,
    },
    Delete {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// Send one test delivery now and print its outcome
    Test {
        id: String,
        #[arg(long = "type")]
        event_type: Option<String>,
    },
    /// A new secret (the old one keeps signing for delivery.secret_overlap)
    RotateSecret {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeliveriesCommand {
    /// An endpoint's deliveries, newest first
    List {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        /// Follow next_cursor to the last page
        #[arg(long)]
        all: bool,
    },
    /// A delivery and its attempts
    Show { id: String },
    /// Queue a failed delivery again, or bring a pending one forward
    Retry { id: String },
}

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    Show {
        id: String,
        #[arg(long)]
        tenant: String,
    },
    /// Ingest one event
    Send {
        #[arg(long)]
        tenant: String,
        #[arg(long = "type")]
        event_type: String,
        /// The payload, a JSON object
        #[arg(
            long,
            conflicts_with = "payload_file",
            required_unless_present = "payload_file"
        )]
        payload: Option<String>,
        #[arg(long)]
        payload_file: Option<PathBuf>,
        #[arg(long)]
        id: Option<String>,
    },
}

/// Where to connect and with which token, from the flags, the environment and the
/// configuration, in that order.
fn connect(args: &CtlArgs) -> Result<Api, CtlError> {
    let config = || {
        crate::config::Config::load(args.config.as_deref())
            .map_err(|e| CtlError::Other(format!("configuration: {e}")))
    };
    let url = match args.url.clone().or_else(|| std::env::var("HOOKD_URL").ok()) {
        Some(u) => u,
        None => format!("http://{}", config()?.server.listen),
    };
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map(|t| t.trim().to_string())
            .map_err(|e| CtlError::Other(format!("token file {}: {e}", path.display())))
    };
    let token = if let Some(t) = &args.token {
        Some(t.clone())
    } else if let Some(f) = &args.token_file {
        Some(read(f)?)
    } else if let Ok(t) = std::env::var("HOOKD_TOKEN") {
        Some(t)
    } else {
        // Without a token file the request goes without one, and hookd's 401 says so.
        let file = config()?.storage.path.join("admin.token");
        file.exists().then(|| read(&file)).transpose()?
    };
    Api::new(&url, token)
}

/// Runs a ctl command; the exit code main returns.
pub fn run(args: CtlArgs) -> i32 {
    match execute(&args) {
        Ok(()) => 0,
        Err(CtlError::Usage(m)) => {
            eprintln!("hookd ctl: {m}");
            2
        }
        Err(e) => {
            eprintln!("hookd ctl: {e}");
            1
        }
    }
}

fn execute(args: &CtlArgs) -> Result<(), CtlError> {
    if let CtlCommand::Receive {
        listen,
        secret,
        status,
    } = &args.command
    {
        return receive::run(listen, secret.as_deref(), *status, args.json);
    }
    let api = connect(args)?;
    let json = args.json;
    match &args.command {
        CtlCommand::Status => status(&api, json),
        CtlCommand::Endpoints(c) => endpoints(&api, c, json),
        CtlCommand::Deliveries(c) => deliveries(&api, c, json),
        CtlCommand::Recover { id, since, until } => {
            let mut body = json!({"since": when(since)?});
            if let Some(u) = until {
                body["until"] = Value::String(when(u)?);
            }
            let v = api.post(&format!("/v1/endpoints/{}/recover", q(id)), Some(&body))?;
            emit(json, &v, || {
                println!("{} deliveries queued again", v["requeued"]);
            });
            Ok(())
        }
        CtlCommand::Events(c) => events(&api, c, json),
        CtlCommand::Backup { dir } => {
            // The daemon resolves paths against its own working directory: send an absolute one.
            let dir = std::path::absolute(dir).map_err(|e| {
                CtlError::Usage(format!(
                    "backup: cannot make {} absolute: {e}",
                    dir.display()
                ))
            })?;
            let v = api.post(
                "/v1/admin/backup",
                Some(&json!({"path": dir.display().to_string()})),
            )?;
            emit(json, &v, || {
                println!(
                    "backup written to {} ({} files, {} bytes, {} ms)",
                    v["path"].as_str().unwrap_or("?"),
                    v["files"],
                    v["bytes"],
                    v["took_ms"]
                );
            });
            Ok(())
        }
        CtlCommand::Tail { endpoint, tenant } => {
            receive::tail(&api, endpoint.as_deref(), tenant.as_deref(), json)
        }
        // Handled by main (they need the whole command definition) and above.
        CtlCommand::Receive { .. } | CtlCommand::Completions { .. } => Ok(()),
    }
}

/// Prints `v` as JSON with `--json`, else runs `human`.
fn emit(json: bool, v: &Value, human: impl FnOnce()) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        human();
    }
}

/// RFC 3339 as given, or a duration back from now.
fn when(raw: &str) -> Result<String, CtlError> {
    if crate::model::parse_rfc3339(raw).is_ok() {
        return Ok(raw.to_string());
    }
    let back = humantime::parse_duration(raw).map_err(|_| {
        CtlError::Usage(format!(
            "{raw:?} is neither an RFC 3339 time nor a duration (2h, 3d)"
        ))
    })?;
    let at = time::OffsetDateTime::now_utc() - back;
    Ok(crate::model::rfc3339(
        (at.unix_timestamp_nanos() / 1_000_000) as i64,
    ))
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn status(api: &Api, json: bool) -> Result<(), CtlError> {
    let readyz = match api.get("/readyz") {
        Ok(body) => Some(body),
        Err(CtlError::Api { .. }) => None,
        Err(e) => return Err(e),
    };
    let ready = readyz.is_some();
    // Each configured source (API.md §15), as /readyz reports it; null when there is none.
    let sources = readyz.map_or(Value::Null, |r| r["sources"].clone());
    let metrics = api.text("/metrics")?;
    let version = metrics
        .lines()
        .find(|l| l.starts_with("hookd_build_info{"))
        .and_then(|l| l.split("version=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("?")
        .to_string();
    let started = metrics
        .lines()
        .find(|l| l.starts_with("process_start_time_seconds "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let uptime = started.map(|s| (now - s).max(0.0) as u64);
    let list = api.get("/v1/endpoints")?;
    let mut endpoints = Vec::new();
    let mut total = 0u64;
    for e in list["endpoints"].as_array().into_iter().flatten() {
        let id = s(&e["id"]);
        let detail = api.get(&format!("/v1/endpoints/{}", q(&id)))?;
        let st = &detail["stats"];
        total += st["pending"].as_u64().unwrap_or(0);
        let (attempts, ok) = (
            st["last_hour"]["attempts"].as_u64().unwrap_or(0),
            st["last_hour"]["succeeded"].as_u64().unwrap_or(0),
        );
        endpoints.push(json!({
            "id": id,
            "tenant": detail["tenant"],
            "state": st["state"],
            "paused_reason": detail["paused_reason"],
            "pending": st["pending"],
            "in_flight": st["in_flight"],
            "oldest_pending_age_seconds": st["oldest_pending_age_seconds"],
            "success_ratio_last_hour": (attempts > 0).then(|| ok as f64 / attempts as f64),
            "attempts_last_hour": attempts,
            "last_error": st["last_error"],
        }));
    }
    let v = json!({
        "ready": ready,
        "version": version,
        "uptime_seconds": uptime,
        "pending": total,
        "sources": sources,
        "endpoints": endpoints,
    });
    emit(json, &v, || {
        println!(
            "hookd {version}  {}  up {}  {total} pending",
            if ready { "ready" } else { "NOT READY" },
            uptime.map_or("?".into(), age)
        );
        for (name, source) in sources.as_object().into_iter().flatten() {
            match source["state"].as_str() {
                Some("up") => println!("source {name}: up"),
                _ => println!("source {name}: DOWN: {}", s(&source["error"])),
            }
        }
        let rows: Vec<Vec<String>> = endpoints
            .iter()
            .map(|e| {
                vec![
                    s(&e["id"]),
                    s(&e["tenant"]),
                    match e["paused_reason"].as_str() {
                        Some(r) => format!("{} ({r})", s(&e["state"])),
                        None => s(&e["state"]),
                    },
                    s(&e["pending"]),
                    s(&e["in_flight"]),
                    e["oldest_pending_age_seconds"]
                        .as_u64()
                        .map_or("-".into(), age),
                    e["success_ratio_last_hour"]
                        .as_f64()
                        .map_or("-".into(), |r| {
                            format!("{:.1}% of {}", r * 100.0, e["attempts_last_hour"])
                        }),
                ]
            })
            .collect();
        print_table(
            &[
                "ENDPOINT",
                "TENANT",
                "STATE",
                "PENDING",
                "IN FLIGHT",
                "OLDEST",
                "SUCCESS 1H",
            ],
            &rows,
        );
    });
    Ok(())
}

fn endpoint_row(e: &Value) -> Vec<String> {
    let types: Vec<String> = e["event_types"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    vec![
        s(&e["id"]),
        s(&e["tenant"]),
        s(&e["status"]),
        s(&e["url"]),
        types.join(","),
    ]
}

/// The request body of a create or update from its flags.
fn endpoint_body(flags: &EndpointFlags) -> Result<Map<String, Value>, CtlError> {
    let mut b = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            b.insert(k.to_string(), v);
        }
    };
    put("url", flags.url.clone().map(Value::from));
    put("event_types", flags.types.clone().map(Value::from));
    put("description", flags.description.clone().map(Value::from));
    put(
        "signature_header",
        flags.signature_header.clone().map(Value::from),
    );
    put("timeout", flags.timeout.clone().map(Value::from));
    put(
        "retry_schedule",
        flags.retry_schedule.clone().map(Value::from),
    );
    put("max_concurrency", flags.max_concurrency.map(Value::from));
    put("ttl", flags.ttl.clone().map(Value::from));
    put("ordering", flags.ordering.clone().map(Value::from));
    if let Some(raw) = &flags.rate_limit {
        put("rate_limit", Some(rate_limit(raw)?));
    }
    if let Some(raw) = &flags.filter {
        let filter: Value = serde_json::from_str(raw)
            .map_err(|e| CtlError::Usage(format!("--filter: not JSON ({e})")))?;
        put("filter", Some(filter));
    }
    put("signing", flags.signing.clone().map(Value::from));
    put("proxy", flags.proxy.clone().map(Value::from));
    let read = |flag: &str, path: &Option<std::path::PathBuf>| -> Result<Option<Value>, CtlError> {
        path.as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(Value::from)
                    .map_err(|e| CtlError::Usage(format!("{flag} {}: {e}", p.display())))
            })
            .transpose()
    };
    let mut tls = Map::new();
    for (key, flag, path) in [
        ("ca", "--tls-ca", &flags.tls_ca),
        ("client_cert", "--tls-client-cert", &flags.tls_client_cert),
        ("client_key", "--tls-client-key", &flags.tls_client_key),
    ] {
        if let Some(v) = read(flag, path)? {
            tls.insert(key.to_string(), v);
        }
    }
    if !tls.is_empty() {
        put("tls", Some(Value::Object(tls)));
    }
    if let Some(raw) = &flags.oauth2 {
        let mut auth: Map<String, Value> = serde_json::from_str(raw)
            .map_err(|e| CtlError::Usage(format!("--oauth2: not a JSON object ({e})")))?;
        auth.insert("type".into(), Value::from("oauth2_client_credentials"));
        put("auth", Some(Value::Object(auth)));
    }
    if !flags.headers.is_empty() {
        let mut headers = Map::new();
        for h in &flags.headers {
            let (k, v) = h
                .split_once('=')
                .ok_or_else(|| CtlError::Usage(format!("--header {h:?}: expected K=V")))?;
            headers.insert(k.to_string(), Value::from(v));
        }
        put("headers", Some(Value::Object(headers)));
    }
    Ok(b)
}

/// `50/s` or `50/s,burst=100` as the API's `rate_limit` object (burst defaults to the rate).
fn rate_limit(raw: &str) -> Result<Value, CtlError> {
    let bad = || CtlError::Usage(format!("--rate-limit {raw:?}: expected N/s or N/s,burst=M"));
    let (rate, burst) = match raw.split_once(',') {
        Some((r, b)) => (r, Some(b.strip_prefix("burst=").ok_or_else(bad)?)),
        None => (raw, None),
    };
    let per_second: f64 = rate
        .strip_suffix("/s")
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    let burst: u32 = match burst {
        Some(b) => b.parse().map_err(|_| bad())?,
        None => per_second.ceil().max(1.0) as u32,
    };
    Ok(json!({"per_second": per_second, "burst": burst}))
}

fn show_endpoint(e: &Value) {
    let mut rows = Vec::new();
    for (k, v) in e.as_object().into_iter().flatten() {
        match k.as_str() {
            "stats" => {}
            "secret" => {}
            _ => rows.push(vec![k.clone(), s(v)]),
        }
    }
    print_table(&["SETTING", "VALUE"], &rows);
    if let Some(stats) = e["stats"].as_object() {
        println!();
        let rows: Vec<Vec<String>> = stats.iter().map(|(k, v)| vec![k.clone(), s(v)]).collect();
        print_table(&["STAT", "VALUE"], &rows);
    }
}

fn endpoints(api: &Api, c: &EndpointsCommand, json: bool) -> Result<(), CtlError> {
    let path = |id: &str, tail: &str| format!("/v1/endpoints/{}{tail}", q(id));
    match c {
        EndpointsCommand::List { tenant } => {
            let query = tenant
                .as_ref()
                .map_or(String::new(), |t| format!("?tenant={}", q(t)));
            let v = api.get(&format!("/v1/endpoints{query}"))?;
            emit(json, &v, || {
                let rows: Vec<_> = v["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(endpoint_row)
                    .collect();
                print_table(&["ID", "TENANT", "STATUS", "URL", "TYPES"], &rows);
            });
        }
        EndpointsCommand::Show { id } => {
            let v = api.get(&path(id, ""))?;
            emit(json, &v, || show_endpoint(&v));
        }
        EndpointsCommand::Create { tenant, flags } => {
            let mut body = endpoint_body(flags)?;
            body.insert("tenant".into(), Value::from(tenant.clone()));
            let v = api.post("/v1/endpoints", Some(&Value::Object(body)))?;
            emit(json, &v, || {
                show_endpoint(&v);
                match v["public_key"].as_str() {
                    Some(public) => println!("\npublic key (receivers verify with it): {public}"),
                    None => println!("\nsecret (shown once, keep it now): {}", s(&v["secret"])),
                }
            });
        }
        EndpointsCommand::Update { id, flags } => {
            let body = endpoint_body(flags)?;
            if body.is_empty() {
                return Err(CtlError::Usage(
                    "nothing to update: give at least one setting".into(),
                ));
            }
            let v = api.call(
                reqwest::Method::PATCH,
                &path(id, ""),
                Some(&Value::Object(body)),
            )?;
            emit(json, &v, || show_endpoint(&v));
        }
        EndpointsCommand::Delete { id } => {
            api.call(reqwest::Method::DELETE, &path(id, ""), None)?;
            emit(json, &json!({"deleted": id}), || {
                println!("endpoint {id} deleted")
            });
        }
        EndpointsCommand::Pause { id } | EndpointsCommand::Resume { id } => {
            let action = if matches!(c, EndpointsCommand::Pause { .. }) {
                "/pause"
            } else {
                "/resume"
            };
            let v = api.post(&path(id, action), None)?;
            emit(json, &v, || {
                println!("endpoint {id} is {}", s(&v["status"]))
            });
        }
        EndpointsCommand::Test { id, event_type } => {
            let body = event_type.as_ref().map(|t| json!({"type": t}));
            let v = api.post(&path(id, "/test"), body.as_ref())?;
            emit(json, &v, || {
                let outcome = if v["success"] == true {
                    "succeeded"
                } else {
                    "failed"
                };
                println!(
                    "test {outcome}: status {}, {} ms{}  (delivery {})",
                    s(&v["status_code"]),
                    s(&v["duration_ms"]),
                    v["error"]
                        .as_str()
                        .map_or(String::new(), |e| format!(", {e}")),
                    s(&v["delivery_id"])
                );
            });
            if v["success"] != true {
                return Err(CtlError::Other("the test send failed".into()));
            }
        }
        EndpointsCommand::RotateSecret { id } => {
            let v = api.post(&path(id, "/rotate-secret"), None)?;
            emit(json, &v, || match v["public_key"].as_str() {
                Some(public) => println!("new public key: {public}"),
                None => println!("new secret (shown once, keep it now): {}", s(&v["secret"])),
            });
        }
    }
    Ok(())
}

fn delivery_rows(v: &Value) -> Vec<Vec<String>> {
    v["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let attempts = d["attempts"].as_array().map_or(0, Vec::len);
            let last = d["attempts"].as_array().and_then(|a| a.last());
            vec![
                s(&d["id"]),
                s(&d["event_type"]),
                s(&d["status"]),
                attempts.to_string(),
                last.map_or("-".into(), |a| s(&a["error"])),
                s(&d["created_at"]),
            ]
        })
        .collect()
}

fn deliveries(api: &Api, c: &DeliveriesCommand, json: bool) -> Result<(), CtlError> {
    match c {
        DeliveriesCommand::List {
            endpoint,
            status,
            limit,
            all,
        } => {
            let mut query = Vec::new();
            if let Some(st) = status {
                query.push(format!("status={}", q(st)));
            }
            if let Some(l) = limit {
                query.push(format!("limit={l}"));
            }
            let mut pages = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut qs = query.clone();
                if let Some(c) = &cursor {
                    qs.push(format!("cursor={}", q(c)));
                }
                let sep = if qs.is_empty() { "" } else { "?" };
                let page = api.get(&format!(
                    "/v1/endpoints/{}/deliveries{sep}{}",
                    q(endpoint),
                    qs.join("&")
                ))?;
                cursor = page["next_cursor"].as_str().map(str::to_string);
                pages.push(page);
                if !*all || cursor.is_none() {
                    break;
                }
            }
            let v = if *all {
                let every: Vec<Value> = pages
                    .iter()
                    .flat_map(|p| p["deliveries"].as_array().cloned().unwrap_or_default())
                    .collect();
                json!({"deliveries": every, "next_cursor": null})
            } else {
                pages.pop().unwrap_or(Value::Null)
            };
            emit(json, &v, || {
                print_table(
                    &[
                        "DELIVERY",
                        "TYPE",
                        "STATUS",
                        "ATTEMPTS",
                        "LAST ERROR",
                        "CREATED",
                    ],
                    &delivery_rows(&v),
                );
                if let Some(c) = v["next_cursor"].as_str() {
                    println!("more: --all, or the API's cursor={c}");
                }
            });
        }
        DeliveriesCommand::Show { id } => {
            let v = api.get(&format!("/v1/deliveries/{}", q(id)))?;
            emit(json, &v, || {
                println!(
                    "delivery {}  {}  event {} ({})  endpoint {}  next attempt {}",
                    s(&v["id"]),
                    s(&v["status"]),
                    s(&v["event_id"]),
                    s(&v["event_type"]),
                    s(&v["endpoint_id"]),
                    s(&v["next_attempt_at"])
                );
                let rows: Vec<Vec<String>> = v["attempts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        vec![
                            s(&a["n"]),
                            s(&a["at"]),
                            s(&a["status_code"]),
                            format!("{} ms", s(&a["duration_ms"])),
                            s(&a["error"]),
                            a["response_body"].as_str().map_or("-".into(), |b| {
                                b.chars().take(60).collect::<String>().replace('\n', " ")
                            }),
                        ]
                    })
                    .collect();
                print_table(
                    &["N", "AT", "STATUS", "DURATION", "ERROR", "RESPONSE"],
                    &rows,
                );
            });
        }
        DeliveriesCommand::Retry { id } => {
            let v = api.post(&format!("/v1/deliveries/{}/retry", q(id)), None)?;
            emit(json, &v, || {
                println!("delivery {id} is pending again, due now")
            });
        }
    }
    Ok(())
}

fn events(api: &Api, c: &EventsCommand, json: bool) -> Result<(), CtlError> {
    match c {
        EventsCommand::Show { id, tenant } => {
            let v = api.get(&format!("/v1/events/{}?tenant={}", q(id), q(tenant)))?;
            emit(json, &v, || {
                println!(
                    "event {} ({}) of {} received {}",
                    s(&v["id"]),
                    s(&v["type"]),
                    s(&v["tenant"]),
                    s(&v["received_at"])
                );
                println!("payload: {}", v["payload"]);
                let rows: Vec<Vec<String>> = v["deliveries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| vec![s(&d["id"]), s(&d["endpoint_id"]), s(&d["status"])])
                    .collect();
                print_table(&["DELIVERY", "ENDPOINT", "STATUS"], &rows);
            });
        }
        EventsCommand::Send {
            tenant,
            event_type,
            payload,
            payload_file,
            id,
        } => {
            let raw = match (payload, payload_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| CtlError::Other(format!("{}: {e}", f.display())))?,
                (None, None) => {
                    return Err(CtlError::Usage("give --payload or --payload-file".into()))
                }
            };
            let payload: Value = serde_json::from_str(&raw)
                .map_err(|e| CtlError::Usage(format!("payload: not JSON ({e})")))?;
            let mut body = json!({"tenant": tenant, "type": event_type, "payload": payload});
            if let Some(id) = id {
                body["id"] = Value::from(id.clone());
            }
            let v = api.post("/v1/events", Some(&body))?;
            emit(json, &v, || {
                let what = if v["duplicate"] == true {
                    "duplicate (stored before)"
                } else {
                    "stored"
                };
                println!(
                    "event {} {what}: {} deliveries",
                    s(&v["id"]),
                    s(&v["deliveries"])
                );
            });
        }
    }
    Ok(())
}
