//! The control API as `hookd ctl` calls it: a blocking client with the bearer token, and one
//! error type whose message is what the operator reads on stderr.

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::Method;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The API answered with its error object.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach hookd at {url}: {source}")]
    Connect { url: String, source: reqwest::Error },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Other(String),
}

pub struct Api {
    base: String,
    token: Option<String>,
    client: Client,
    /// Tail and receive wait as long as they are left running.
    streaming: Client,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Result<Api, CtlError> {
        let build = |timeout: Option<Duration>| {
            Client::builder()
                .timeout(timeout)
                .user_agent(concat!("hookd-ctl/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| CtlError::Other(format!("HTTP client: {e}")))
        };
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            token,
            // A test send waits for the receiver, up to its endpoint's timeout (≤ 5 min).
            client: build(Some(Duration::from_secs(330)))?,
            streaming: build(None)?,
        })
    }

    fn request(&self, client: &Client, method: Method, path: &str) -> RequestBuilder {
        let mut req = client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    fn send(&self, req: RequestBuilder) -> Result<Response, CtlError> {
        let response = req.send().map_err(|source| CtlError::Connect {
            url: self.base.clone(),
            source,
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let field = |k: &str| {
            parsed
                .as_ref()
                .and_then(|v| v["error"][k].as_str())
                .map(str::to_string)
        };
        Err(CtlError::Api {
            status,
            code: field("code").unwrap_or_else(|| "http_error".into()),
            message: field("message").unwrap_or(text),
        })
    }

    /// Calls `method path` with an optional JSON body; the JSON answer (null for 204).
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CtlError> {
        let mut req = self.request(&self.client, method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let response = self.send(req)?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        response
            .json()
            .map_err(|e| CtlError::Other(format!("unreadable answer from hookd: {e}")))
    }

    pub fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.call(Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, CtlError> {
        self.call(Method::POST, path, body)
    }

    /// A plain-text GET (`/metrics`).
    pub fn text(&self, path: &str) -> Result<String, CtlError> {
        self.send(self.request(&self.client, Method::GET, path))?
            .text()
            .map_err(|e| CtlError::Other(format!("unreadable answer from hookd: {e}")))
    }

    /// An open `GET path` whose body is read as it comes (Server-Sent Events).
    pub fn stream(&self, path: &str) -> Result<Response, CtlError> {
        self.send(
            self.request(&self.streaming, Method::GET, path)
                .header(reqwest::header::ACCEPT, "text/event-stream"),
        )
    }
}

/// Percent-encodes a query value.
pub fn q(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
