//! Where events come from besides the HTTP API. Each source feeds the same intake
//! ([`crate::intake`]) and the same group commit (`Store::ingest`) as `POST /v1/events`, and
//! acknowledges a message only once `Store::ingest` has answered for it, that is once its
//! event is in the fsync'd WAL.
//!
//! A source runs on its own thread and runtime: a slow or unreachable broker never holds up
//! the HTTP API, the endpoint actors or the writers, and its CPU work (parsing, validation)
//! does not queue behind theirs.

pub mod nats;

use serde::Serialize;

/// Whether a source is taking messages now (`/readyz`'s `sources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    Up,
    Down,
}

/// One source as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SourceView {
    pub state: SourceState,
    /// Why it is down (the last error), absent while up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The kinds of source, as `hookd_source_up` labels them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Nats,
}

impl SourceKind {
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::Nats => "nats",
        }
    }
}

/// A source's health, written by the source (and its client's connection events) and read by
/// `/readyz`; `hookd_source_up` follows every change.
///
/// Invariant: up exactly when the connection is established and a consumer is taking
/// messages over it; a fault clears `consuming` until the consumer has been set up again.
#[derive(Debug)]
pub struct SourceStatus {
    kind: SourceKind,
    inner: parking_lot::Mutex<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    connected: bool,
    consuming: bool,
    error: Option<String>,
}

impl SourceStatus {
    /// Down until the source reports otherwise.
    pub fn new(kind: SourceKind) -> SourceStatus {
        let status = SourceStatus {
            kind,
            inner: parking_lot::Mutex::new(StatusInner::default()),
        };
        status.publish(&status.inner.lock());
        status
    }

    fn publish(&self, s: &StatusInner) {
        crate::metrics::METRICS
            .source_up
            .with_label_values(&[self.kind.label()])
            .set(i64::from(s.connected && s.consuming));
    }

    pub fn view(&self) -> SourceView {
        let s = self.inner.lock();
        if s.connected && s.consuming {
            SourceView {
                state: SourceState::Up,
                error: None,
            }
        } else {
            SourceView {
                state: SourceState::Down,
                error: Some(
                    s.error
                        .clone()
                        .unwrap_or_else(|| "not connected yet".to_string()),
                ),
            }
        }
    }

    pub fn is_up(&self) -> bool {
        let s = self.inner.lock();
        s.connected && s.consuming
    }

    fn set_connected(&self, connected: bool, error: Option<String>) {
        let mut s = self.inner.lock();
        s.connected = connected;
        if error.is_some() {
            s.error = error;
        }
        self.publish(&s);
    }

    fn set_consuming(&self) {
        let mut s = self.inner.lock();
        s.consuming = true;
        s.connected = true;
        s.error = None;
        self.publish(&s);
    }

    fn fault(&self, error: String) {
        let mut s = self.inner.lock();
        s.consuming = false;
        s.error = Some(error);
        self.publish(&s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_only_while_connected_and_consuming() {
        let s = SourceStatus::new(SourceKind::Nats);
        assert_eq!(s.view().state, SourceState::Down);
        assert_eq!(s.view().error.as_deref(), Some("not connected yet"));
        s.set_consuming();
        assert_eq!(
            s.view(),
            SourceView {
                state: SourceState::Up,
                error: None
            }
        );
        s.set_connected(false, Some("disconnected".into()));
        assert_eq!(s.view().error.as_deref(), Some("disconnected"));
        // The connection back is not enough while the consumer is not set up again.
        s.fault("stream EVENTS: not found".into());
        s.set_connected(true, None);
        assert_eq!(s.view().state, SourceState::Down);
        assert_eq!(s.view().error.as_deref(), Some("stream EVENTS: not found"));
        s.set_consuming();
        assert!(s.is_up());
        let up = crate::metrics::METRICS
            .source_up
            .with_label_values(&["nats"]);
        assert_eq!(up.get(), 1);
        s.fault("gone".into());
        assert_eq!(up.get(), 0);
    }
}
