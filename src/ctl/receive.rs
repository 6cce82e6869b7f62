//! `hookd ctl tail` (follows `GET /v1/stream`) and `hookd ctl receive` (a receiver for trying
//! hookd, which checks both signatures of every request it gets).

use std::io::{BufRead, Write};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::client::{q, Api, CtlError};
use crate::delivery::signing;
use crate::model::Secret;

/// Prints one line per attempt and per endpoint state change until the stream ends.
pub fn tail(
    api: &Api,
    endpoint: Option<&str>,
    tenant: Option<&str>,
    json: bool,
) -> Result<(), CtlError> {
    let mut query = Vec::new();
    if let Some(e) = endpoint {
        query.push(format!("endpoint={}", q(e)));
    }
    if let Some(t) = tenant {
        query.push(format!("tenant={}", q(t)));
    }
    let sep = if query.is_empty() { "" } else { "?" };
    let response = api.stream(&format!("/v1/stream{sep}{}", query.join("&")))?;
    let reader = std::io::BufReader::new(response);
    let mut event = String::new();
    let mut out = std::io::stdout().lock();
    for line in reader.lines() {
        let line = line.map_err(|e| CtlError::Other(format!("stream: {e}")))?;
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            let text = if json {
                let mut v = v;
                v["event"] = Value::from(event.clone());
                v.to_string()
            } else {
                human_line(&event, &v)
            };
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }
    Err(CtlError::Other("the stream ended (hookd stopped?)".into()))
}

fn human_line(event: &str, v: &Value) -> String {
    let s = |k: &str| match &v[k] {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match event {
        "attempt" => format!(
            "{}  {}  {}  attempt {}  {}  {}  {} ms{}",
            s("at"),
            s("endpoint_id"),
            s("delivery_id"),
            s("n"),
            s("result"),
            s("status_code"),
            s("duration_ms"),
            v["error"]
                .as_str()
                .map_or(String::new(), |e| format!("  {e}")),
        ),
        "endpoint" => format!(
            "{}  {}  is now {}{}",
            crate::model::rfc3339(crate::clock::wall_millis()),
            s("endpoint_id"),
            s("state"),
            v["reason"]
                .as_str()
                .map_or(String::new(), |r| format!(" ({r})")),
        ),
        "overflow" => format!("(fell behind: {} lines lost)", s("lost")),
        other => format!("{other}: {v}"),
    }
}

struct Receiver {
    secret: Option<Secret>,
    status: u16,
    json: bool,
}

/// Whether a signature was checked and held: `ok`, `BAD`, or absent.
fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "ok",
        Some(false) => "BAD",
        None => "absent",
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, r: web::Data<Receiver>) -> HttpResponse {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let (hex, standard) = match &r.secret {
        None => (None, None),
        Some(secret) => {
            let expected_hex = signing::hex_signature(secret, &body);
            // The hex header's name is the endpoint's choice: any header carrying it counts.
            let hex_headers: Vec<(String, bool)> = req
                .headers()
                .iter()
                .filter_map(|(n, v)| {
                    let v = v.to_str().ok()?;
                    (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
                        .then(|| (n.to_string(), v.eq_ignore_ascii_case(&expected_hex)))
                })
                .collect();
            let hex = (!hex_headers.is_empty()).then(|| hex_headers.iter().any(|(_, ok)| *ok));
            let standard = match (
                header("webhook-id"),
                header("webhook-timestamp").and_then(|t| t.parse::<i64>().ok()),
                header("webhook-signature"),
            ) {
                (Some(id), Some(ts), Some(sigs)) => {
                    let want = signing::standard_signature(secret, id, ts, &body);
                    Some(sigs.split(' ').any(|s| s == want))
                }
                _ => None,
            };
            (hex, standard)
        }
    };
    let text = String::from_utf8_lossy(&body);
    let mut out = std::io::stdout().lock();
    if r.json {
        let line = json!({
            "method": req.method().as_str(),
            "path": req.uri().to_string(),
            "webhook_id": header("webhook-id"),
            "event": header("x-webhook-event"),
            "attempt": header("x-webhook-attempt"),
            "hex_signature": r.secret.as_ref().map(|_| verdict(hex)),
            "standard_signature": r.secret.as_ref().map(|_| verdict(standard)),
            "body": text,
            "answered": r.status,
        });
        let _ = writeln!(out, "{line}");
    } else {
        let _ = writeln!(
            out,
            "{} {}  {} {} attempt {}",
            req.method(),
            req.uri(),
            header("webhook-id").unwrap_or("-"),
            header("x-webhook-event").unwrap_or("-"),
            header("x-webhook-attempt").unwrap_or("-"),
        );
        if r.secret.is_some() {
            let _ = writeln!(
                out,
                "  hex signature: {}  webhook-signature: {}",
                verdict(hex),
                verdict(standard)
            );
        }
        let _ = writeln!(out, "  {text}");
        let _ = writeln!(out, "  -> {}", r.status);
    }
    let _ = out.flush();
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(r.status).unwrap_or(actix_web::http::StatusCode::OK),
    )
    .finish()
}

/// Serves until interrupted.
pub fn run(listen: &str, secret: Option<&str>, status: u16, json: bool) -> Result<(), CtlError> {
    if let Some(s) = secret {
        if !s.starts_with("whsec_") {
            return Err(CtlError::Usage(
                "--secret: expected the endpoint's whsec_… secret".into(),
            ));
        }
    }
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| CtlError::Other(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CtlError::Other(e.to_string()))?;
    println!("listening on {addr}; answering {status}");
    let _ = std::io::stdout().flush();
    let state = web::Data::new(Receiver {
        secret: secret.map(|s| Secret::given(s.to_string())),
        status,
        json,
    });
    actix_rt::System::new()
        .block_on(async move {
            HttpServer::new(move || {
                App::new()
                    .app_data(state.clone())
                    .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                    .default_service(web::to(receive))
            })
            .workers(1)
            .listen(listener)?
            .run()
            .await
        })
        .map_err(|e| CtlError::Other(format!("receiver: {e}")))
}
