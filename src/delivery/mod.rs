//! Sending one attempt: the shared HTTP client (rustls, no redirects, per-attempt timeout,
//! bounded response reads), the request exactly as API.md §6 describes it, and the
//! classification of what came back into an [`AttemptOutcome`] before anyone decides on retries.

pub mod guard;
pub mod oauth;
pub mod proxy;
pub mod signing;
pub mod tls;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};

use crate::model::{Secret, Signing};

/// Most response bytes read from a receiver; the rest is never read.
pub const MAX_RESPONSE_READ: usize = 64 * 1024;
/// Most response bytes kept in the attempt record.
pub const MAX_RESPONSE_KEPT: usize = 1024;
/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What one attempt came to, decided before any retry logic looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx within the timeout.
    Success {
        status: u16,
    },
    /// Any other status, 3xx included: redirects are not followed.
    HttpStatus {
        status: u16,
    },
    Timeout,
    Connect(String),
    /// Refused by the SSRF guard before connecting.
    Blocked(guard::Blocked),
    /// The receiver could not be asked: its token endpoint failed (`auth_error`).
    AuthError(String),
    /// The egress proxy could not be reached or would not open the tunnel (`proxy_error`).
    ProxyError(String),
    Other(String),
}

pub use crate::model::AttemptResult;

/// An error and its causes, innermost last, as one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    cause
}

impl AttemptOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, AttemptOutcome::Success { .. })
    }

    pub fn status_code(&self) -> Option<u16> {
        match self {
            AttemptOutcome::Success { status } | AttemptOutcome::HttpStatus { status } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The attempt record's `error`: `None` on success, else `status 500`, `timeout`,
    /// `connect: …`.
    pub fn error(&self) -> Option<String> {
        match self {
            AttemptOutcome::Success { .. } => None,
            AttemptOutcome::HttpStatus { status } if (300..400).contains(status) => {
                Some(format!("status {status} (redirects are not followed)"))
            }
            AttemptOutcome::HttpStatus { status } => Some(format!("status {status}")),
            AttemptOutcome::Timeout => Some("timeout".into()),
            AttemptOutcome::Connect(m) => Some(format!("connect: {m}")),
            AttemptOutcome::Blocked(b) => Some(b.to_string()),
            AttemptOutcome::AuthError(m) => Some(format!("auth: {m}")),
            AttemptOutcome::ProxyError(m) => Some(format!("proxy_error: {m}")),
            AttemptOutcome::Other(m) => Some(m.clone()),
        }
    }

    /// The receiver answered `410 Gone`: it wants no more deliveries.
    pub fn is_gone(&self) -> bool {
        matches!(self, AttemptOutcome::HttpStatus { status: 410 })
    }

    pub fn result(&self) -> AttemptResult {
        match self {
            AttemptOutcome::Success { .. } => AttemptResult::Success,
            AttemptOutcome::HttpStatus { status } if (400..500).contains(status) => {
                AttemptResult::Http4xx
            }
            AttemptOutcome::HttpStatus { status } if (500..600).contains(status) => {
                AttemptResult::Http5xx
            }
            AttemptOutcome::HttpStatus { .. } => AttemptResult::Other,
            AttemptOutcome::Timeout => AttemptResult::Timeout,
            AttemptOutcome::Connect(_) | AttemptOutcome::Blocked(_) => AttemptResult::ConnectError,
            AttemptOutcome::AuthError(_) => AttemptResult::AuthError,
            AttemptOutcome::ProxyError(_) => AttemptResult::ProxyError,
            AttemptOutcome::Other(_) => AttemptResult::Other,
        }
    }

    /// The `result` label of `hookd_attempts_total`.
    pub fn result_label(&self) -> &'static str {
        self.result().label()
    }
}

/// One attempt's result with what the attempt record keeps.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub outcome: AttemptOutcome,
    pub duration: Duration,
    pub response_body: Option<String>,
    /// From a 429 or 503 `Retry-After`, capped at [`MAX_RETRY_AFTER`].
    pub retry_after: Option<Duration>,
}

impl AttemptReport {
    /// The stored record of this attempt, the `n`th of its delivery, started at `at`.
    pub fn to_attempt(&self, n: u32, at: crate::model::UnixMillis) -> crate::model::Attempt {
        crate::model::Attempt {
            n,
            at,
            status_code: self.outcome.status_code(),
            result: Some(self.outcome.result()),
            duration_ms: self.duration.as_millis() as u64,
            error: self.outcome.error(),
            response_body: self.response_body.clone(),
        }
    }
}

/// Everything one request needs; borrowed from the endpoint and the delivery.
pub struct WebhookRequest<'a> {
    /// Parsed once per endpoint change, not per request.
    pub url: &'a reqwest::Url,
    /// Parsed once per endpoint change; `None` leaves the hex signature out.
    pub signature_header: Option<&'a HeaderName>,
    pub signing: Signing,
    pub secrets: Vec<&'a Secret>,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub attempt: u32,
    /// Shared by every attempt of one event; cloning it is a reference count.
    pub body: bytes::Bytes,
    pub static_headers: Option<&'a BTreeMap<String, String>>,
    pub timeout: Duration,
    /// Unix seconds for `webhook-timestamp`.
    pub timestamp: i64,
    /// An ordered delivery's key and sequence number.
    pub ordering: Option<(&'a str, u64)>,
    /// `Authorization: Bearer …` (OAuth 2.0 client credentials).
    pub bearer: Option<&'a str>,
}

/// The HTTP clients of the process, one per TLS identity ([`tls::identity`]); cheap to clone.
#[derive(Clone)]
pub struct Sender {
    inner: std::sync::Arc<SenderInner>,
}

struct SenderInner {
    allow_private_networks: bool,
    /// The system's roots and `delivery.ca_file`, which every identity starts from.
    roots: rustls::RootCertStore,
    clients: parking_lot::Mutex<std::collections::HashMap<[u8; 32], Identity>>,
}

/// One TLS identity's client, and its rustls configuration for tunnels through a proxy.
#[derive(Clone)]
pub struct Identity {
    pub client: reqwest::Client,
    pub tls: std::sync::Arc<rustls::ClientConfig>,
}

/// Distinct identities kept; beyond it the cache starts over (endpoints keep their clients).
const MAX_CLIENTS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl Sender {
    /// Unless `allow_private_networks`, every connection goes through the SSRF guard. Proxy
    /// settings from the environment are ignored: a proxy would connect on hookd's behalf,
    /// out of the guard's sight.
    pub fn new(config: &crate::config::DeliveryConfig) -> Result<Sender, SenderError> {
        let roots = tls::base_roots(config.ca_file())?;
        let sender = Sender {
            inner: std::sync::Arc::new(SenderInner {
                allow_private_networks: config.allow_private_networks,
                roots,
                clients: Default::default(),
            }),
        };
        // The shared identity is built now, so a start-up problem shows at start-up.
        sender.client_for(None)?;
        Ok(sender)
    }

    /// Whether the SSRF guard is off (`delivery.allow_private_networks`).
    pub fn allows_private_networks(&self) -> bool {
        self.inner.allow_private_networks
    }

    /// The client for an endpoint's `tls` (shared with every endpoint of the same identity).
    pub fn client_for(
        &self,
        endpoint_tls: Option<&crate::model::EndpointTls>,
    ) -> Result<Identity, SenderError> {
        let key = tls::identity(endpoint_tls);
        if let Some(c) = self.inner.clients.lock().get(&key) {
            return Ok(c.clone());
        }
        let config = tls::client_config(&self.inner.roots, endpoint_tls)?;
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .use_preconfigured_tls(config.clone());
        if !self.inner.allow_private_networks {
            builder = builder.dns_resolver(std::sync::Arc::new(guard::GuardedResolver));
        }
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookd/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        let identity = Identity {
            client,
            tls: std::sync::Arc::new(config),
        };
        let mut clients = self.inner.clients.lock();
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(key, identity.clone());
        Ok(identity)
    }

    pub fn headers(req: &WebhookRequest<'_>) -> HeaderMap {
        // hookd's own names are constants and the endpoint's signature header is parsed
        // with its settings: only static headers are still checked here.
        const ID: HeaderName = HeaderName::from_static("x-webhook-id");
        const EVENT: HeaderName = HeaderName::from_static("x-webhook-event");
        const ATTEMPT: HeaderName = HeaderName::from_static("x-webhook-attempt");
        const ORDERING_KEY: HeaderName = HeaderName::from_static("x-webhook-ordering-key");
        const SEQUENCE: HeaderName = HeaderName::from_static("x-webhook-sequence");
        const SW_ID: HeaderName = HeaderName::from_static("webhook-id");
        const SW_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
        const SW_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
        let mut h = HeaderMap::with_capacity(12 + req.static_headers.map_or(0, BTreeMap::len));
        if let Some(extra) = req.static_headers {
            for (k, v) in extra {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    h.insert(k, v);
                }
            }
        }
        let body = &req.body[..];
        // Values that are not valid header text (never for ids and types hookd accepted) are
        // left out rather than failing the attempt.
        let text = |value: &str| HeaderValue::from_str(value).ok();
        // With ed25519 only the asymmetric signature goes out: an HMAC header would need a
        // shared secret the receiver does not have.
        if let (Some(current), Signing::Hmac, Some(name)) =
            (req.secrets.first(), req.signing, req.signature_header)
        {
            if let Some(v) = text(&signing::hex_signature(current, body)) {
                h.insert(name.clone(), v);
            }
        }
        if let Some(id) = text(req.event_id) {
            h.insert(ID, id.clone());
            h.insert(SW_ID, id);
        }
        if let Some(v) = text(req.event_type) {
            h.insert(EVENT, v);
        }
        h.insert(ATTEMPT, HeaderValue::from(req.attempt));
        if let Some((key, seq)) = req.ordering {
            if let Some(v) = text(key) {
                h.insert(ORDERING_KEY, v);
            }
            h.insert(SEQUENCE, HeaderValue::from(seq));
        }
        h.insert(SW_TIMESTAMP, HeaderValue::from(req.timestamp));
        let secrets = req.secrets.iter().copied();
        let signature = match req.signing {
            Signing::Hmac => signing::standard_header(secrets, req.event_id, req.timestamp, body),
            Signing::Ed25519 => signing::ed25519_header(secrets, req.event_id, req.timestamp, body),
        };
        if let Some(v) = text(&signature) {
            h.insert(SW_SIGNATURE, v);
        }
        if let Some(token) = req.bearer {
            if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                v.set_sensitive(true);
                h.insert(reqwest::header::AUTHORIZATION, v);
            }
        }
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("hookd/", env!("CARGO_PKG_VERSION"))),
        );
        h
    }

    /// Sends one attempt; never fails, every problem is an [`AttemptOutcome`].
    pub async fn send(&self, client: &reqwest::Client, req: WebhookRequest<'_>) -> AttemptReport {
        let started = Instant::now();
        if !self.inner.allow_private_networks {
            if let Err(blocked) = guard::check_url(req.url) {
                return AttemptReport {
                    outcome: AttemptOutcome::Blocked(blocked),
                    duration: started.elapsed(),
                    response_body: None,
                    retry_after: None,
                };
            }
        }
        // The request is built whole rather than through `RequestBuilder`, which would merge
        // the header map into an empty one entry by entry.
        let mut request = reqwest::Request::new(reqwest::Method::POST, req.url.clone());
        *request.headers_mut() = Self::headers(&req);
        *request.timeout_mut() = Some(req.timeout);
        *request.body_mut() = Some(req.body.clone().into());
        let result = client.execute(request).await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                return AttemptReport {
                    outcome: classify_error(&e),
                    duration: started.elapsed(),
                    response_body: None,
                    retry_after: None,
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = if status == 429 || status == 503 {
            response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after)
        } else {
            None
        };
        let (body, read_error) = read_limited(response).await;
        let outcome = match read_error {
            Some(e) => classify_error(&e),
            None if (200..300).contains(&status) => AttemptOutcome::Success { status },
            None => AttemptOutcome::HttpStatus { status },
        };
        AttemptReport {
            outcome,
            duration: started.elapsed(),
            response_body: (!body.is_empty()).then_some(body),
            retry_after,
        }
    }
}

/// Reads at most [`MAX_RESPONSE_READ`] bytes and keeps the first [`MAX_RESPONSE_KEPT`] as text.
async fn read_limited(mut response: reqwest::Response) -> (String, Option<reqwest::Error>) {
    let mut kept: Vec<u8> = Vec::new();
    let mut read = 0usize;
    while read < MAX_RESPONSE_READ {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                let room = MAX_RESPONSE_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            Err(e) => return (lossy_prefix(&kept), Some(e)),
        }
    }
    (lossy_prefix(&kept), None)
}

/// Text of at most [`MAX_RESPONSE_KEPT`] bytes, never cutting a UTF-8 character in two.
fn lossy_prefix(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut end = text.len().min(MAX_RESPONSE_KEPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn classify_error(e: &reqwest::Error) -> AttemptOutcome {
    if e.is_timeout() {
        return AttemptOutcome::Timeout;
    }
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(blocked) = s.downcast_ref::<guard::Blocked>() {
            return AttemptOutcome::Blocked(*blocked);
        }
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        cause = e.to_string();
    }
    if e.is_connect() {
        AttemptOutcome::Connect(cause)
    } else {
        AttemptOutcome::Other(format!("request: {cause}"))
    }
}

/// `Retry-After` as delay-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate_parse(value)?;
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

fn httpdate_parse(value: &str) -> Option<std::time::SystemTime> {
    // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is the only form senders must use.
    let rest = value.split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day = parts.next()?;
    let month = parts.next()?;
    let year = parts.next()?;
    let time = parts.next()?;
    if parts.next()? != "GMT" {
        return None;
    }
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| *x == month)? + 1;
    let iso = format!("{year}-{m:02}-{day:0>2}T{time}Z");
    humantime::parse_rfc3339(&iso).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_classify() {
        assert_eq!(
            AttemptOutcome::HttpStatus { status: 500 }.error().unwrap(),
            "status 500"
        );
        assert_eq!(
            AttemptOutcome::HttpStatus { status: 404 }.result_label(),
            "http_4xx"
        );
        assert_eq!(
            AttemptOutcome::HttpStatus { status: 302 }.result_label(),
            "other"
        );
        assert!(AttemptOutcome::HttpStatus { status: 302 }
            .error()
            .unwrap()
            .contains("redirect"));
        assert_eq!(AttemptOutcome::Timeout.error().unwrap(), "timeout");
        assert_eq!(AttemptOutcome::Success { status: 204 }.error(), None);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn kept_body_never_splits_a_character() {
        let s = "é".repeat(600);
        let kept = lossy_prefix(s.as_bytes());
        assert!(kept.len() <= MAX_RESPONSE_KEPT);
        assert!(kept.chars().all(|c| c == 'é'));
    }
}
