//! Attempts through an egress proxy (API.md §13): HTTP CONNECT to the address the SSRF guard
//! checked, TLS to the receiver inside the tunnel, one HTTP/1.1 request.
//!
//! Why not reqwest's proxy support: it sends `CONNECT host:port` and lets the proxy resolve
//! the name, so the guard would check one resolution and the proxy connect to another (the
//! hole Hook0's proxy support has). Here the name is resolved and checked first, and the
//! CONNECT names the checked address; TLS still verifies the certificate for the URL's host.
//!
//! Failures before the tunnel is up (the proxy cannot be reached, refuses or cannot connect)
//! are [`AttemptOutcome::ProxyError`]: not the receiver's, so they do not move its circuit.
//! A tunnel carries one attempt: proxied endpoints have no connection pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{guard, AttemptOutcome, AttemptReport, WebhookRequest};

/// Largest CONNECT response head read.
const MAX_CONNECT_RESPONSE: usize = 8 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Addresses of one name tried in turn (the proxy can reach only some, say IPv4 but not IPv6).
const MAX_ADDRESSES: usize = 4;

/// A proxy as configured: `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
}

impl Proxy {
    /// Parses `http://host:port` (a path, credentials or another scheme are refused).
    pub fn parse(value: &str) -> Result<Proxy, String> {
        let url = reqwest::Url::parse(value).map_err(|e| format!("not a URL ({e})"))?;
        if url.scheme() != "http" {
            return Err("must be http://host:port (HTTP CONNECT)".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials".into());
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err("must be http://host:port, without a path".into());
        }
        let host = url.host_str().ok_or("has no host")?;
        Ok(Proxy {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: url.port_or_known_default().unwrap_or(80),
        })
    }
}

impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where the CONNECT may go: the target's addresses the guard allows (all of them when
/// `allow_private_networks`), at most [`MAX_ADDRESSES`].
async fn target_addresses(
    url: &reqwest::Url,
    allow_private_networks: bool,
) -> Result<Vec<SocketAddr>, AttemptOutcome> {
    let host = url
        .host_str()
        .ok_or_else(|| AttemptOutcome::Other("url has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(443);
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| AttemptOutcome::Connect(format!("resolve {host}: {e}")))?
        .collect();
    let allowed: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|a| allow_private_networks || !guard::is_forbidden(a.ip()))
        .take(MAX_ADDRESSES)
        .collect();
    if allowed.is_empty() {
        return Err(match resolved.first() {
            Some(first) => AttemptOutcome::Blocked(guard::Blocked(first.ip())),
            None => AttemptOutcome::Connect(format!("{host} has no address")),
        });
    }
    Ok(allowed)
}

/// Opens a tunnel to `target` through `proxy`.
async fn tunnel(proxy: &Proxy, target: SocketAddr) -> Result<tokio::net::TcpStream, String> {
    let mut stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((proxy.host.as_str(), proxy.port)),
    )
    .await
    .map_err(|_| format!("proxy {proxy}: connect timed out"))?
    .map_err(|e| format!("proxy {proxy}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("proxy {proxy}: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_RESPONSE {
            return Err(format!("proxy {proxy}: CONNECT response too long"));
        }
        // Byte by byte: nothing after the head may be consumed, it belongs to TLS.
        let n = stream
            .read(&mut byte)
            .await
            .map_err(|e| format!("proxy {proxy}: {e}"))?;
        if n == 0 {
            return Err(format!("proxy {proxy}: closed during CONNECT"));
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("proxy {proxy}: not an HTTP response to CONNECT"))?;
    if !(200..300).contains(&status) {
        return Err(format!("proxy {proxy} answered CONNECT with {status}"));
    }
    Ok(stream)
}

/// One attempt through `proxy`.
pub async fn send(
    proxy: &Proxy,
    tls: &Arc<rustls::ClientConfig>,
    allow_private_networks: bool,
    req: WebhookRequest<'_>,
) -> AttemptReport {
    let started = Instant::now();
    let timeout = req.timeout;
    let outcome = tokio::time::timeout(timeout, exchange(proxy, tls, allow_private_networks, req))
        .await
        .unwrap_or(Err(AttemptOutcome::Timeout));
    let (outcome, response_body, retry_after) = match outcome {
        Ok(done) => done,
        Err(outcome) => (outcome, None, None),
    };
    AttemptReport {
        outcome,
        duration: started.elapsed(),
        response_body,
        retry_after,
    }
}

type Exchanged = (AttemptOutcome, Option<String>, Option<Duration>);

async fn exchange(
    proxy: &Proxy,
    tls: &Arc<rustls::ClientConfig>,
    allow_private_networks: bool,
    req: WebhookRequest<'_>,
) -> Result<Exchanged, AttemptOutcome> {
    let mut stream = Err(String::new());
    for target in target_addresses(req.url, allow_private_networks).await? {
        stream = tunnel(proxy, target).await;
        if stream.is_ok() {
            break;
        }
    }
    let stream = stream.map_err(AttemptOutcome::ProxyError)?;
    let host = req.url.host_str().unwrap_or_default();
    let authority = match req.url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let mut path = req.url.path().to_string();
    if let Some(q) = req.url.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut headers = super::Sender::headers(&req);
    if let Ok(v) = reqwest::header::HeaderValue::from_str(&authority) {
        headers.insert(reqwest::header::HOST, v);
    }
    let mut request = hyper::Request::post(path)
        .body(http_body_util::Full::new(req.body.clone()))
        .map_err(|e| AttemptOutcome::Other(format!("request: {e}")))?;
    *request.headers_mut() = headers;
    let response = if req.url.scheme() == "https" {
        let name = rustls::pki_types::ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .map_err(|e| AttemptOutcome::Other(format!("tls name: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await
            .map_err(|e| AttemptOutcome::Connect(format!("tls: {e}")))?;
        round_trip(hyper_util::rt::TokioIo::new(stream), request).await?
    } else {
        round_trip(hyper_util::rt::TokioIo::new(stream), request).await?
    };
    let status = response.status().as_u16();
    let retry_after = if status == 429 || status == 503 {
        response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(super::parse_retry_after)
    } else {
        None
    };
    let mut body = response.into_body();
    let mut kept: Vec<u8> = Vec::new();
    let mut read = 0usize;
    while read < super::MAX_RESPONSE_READ {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(chunk) = frame.into_data() {
                    read += chunk.len();
                    let room = super::MAX_RESPONSE_KEPT.saturating_sub(kept.len());
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
            }
            Some(Err(e)) => {
                return Ok((
                    AttemptOutcome::Other(format!("request: {e}")),
                    None,
                    retry_after,
                ))
            }
            None => break,
        }
    }
    let text = super::lossy_prefix(&kept);
    let outcome = if (200..300).contains(&status) {
        AttemptOutcome::Success { status }
    } else {
        AttemptOutcome::HttpStatus { status }
    };
    Ok((outcome, (!text.is_empty()).then_some(text), retry_after))
}

async fn round_trip<S>(
    io: hyper_util::rt::TokioIo<S>,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, AttemptOutcome>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| AttemptOutcome::Connect(format!("{e}")))?;
    // The connection is driven until the response body is read; then it is dropped.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| AttemptOutcome::Other(format!("request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_are_host_and_port_over_http() {
        assert_eq!(
            Proxy::parse("http://127.0.0.1:3128").unwrap().to_string(),
            "127.0.0.1:3128"
        );
        assert_eq!(
            Proxy::parse("http://proxy.internal").unwrap().to_string(),
            "proxy.internal:80"
        );
        for bad in [
            "https://p:1",
            "socks5://p:1",
            "http://u:p@p:1",
            "http://p:1/x",
            "p:1",
        ] {
            assert!(Proxy::parse(bad).is_err(), "{bad}");
        }
    }
}
