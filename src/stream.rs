//! The live feed behind `GET /v1/stream`: endpoint actors publish one line per attempt and per
//! endpoint state change; each subscriber reads them as Server-Sent Events.
//!
//! Invariants:
//! - Publishing never waits and never fails: the lines go into a bounded ring
//!   ([`tokio::sync::broadcast`]) shared by the subscribers, and a subscriber that falls more
//!   than [`BUFFER`] lines behind loses the oldest ones and is told so (`event: overflow`). A
//!   slow reader costs stream lines, never a delivery or an actor's time.
//! - With no subscriber, an actor builds no line at all ([`Feed::publish`] takes a closure).
//! - At most [`MAX_SUBSCRIBERS`] streams are open at once; a [`Subscription`] frees its place
//!   when it is dropped (the client went away, or hookd is stopping).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{broadcast, watch};

/// Lines a subscriber may fall behind before it loses some.
pub const BUFFER: usize = 1024;
/// Open streams at most (API.md §10: 429 beyond).
pub const MAX_SUBSCRIBERS: usize = 64;

/// One attempt's result, as `event: attempt` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptLine {
    pub delivery_id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub tenant: String,
    pub n: u32,
    pub at: String,
    pub result: &'static str,
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    /// Why it failed (`timeout`, `status 500`…); null on success.
    pub error: Option<String>,
}

/// An endpoint's new state, as `event: endpoint` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointLine {
    pub endpoint_id: String,
    pub tenant: String,
    /// `active`, `paused`, `failing` or `deleted`.
    pub state: &'static str,
    /// Paused: who paused it (`operator`); failing: the last attempt's error; else null.
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Line {
    Attempt(AttemptLine),
    Endpoint(EndpointLine),
}

impl Line {
    fn endpoint_id(&self) -> &str {
        match self {
            Line::Attempt(a) => &a.endpoint_id,
            Line::Endpoint(e) => &e.endpoint_id,
        }
    }

    fn tenant(&self) -> &str {
        match self {
            Line::Attempt(a) => &a.tenant,
            Line::Endpoint(e) => &e.tenant,
        }
    }

    /// The line as one Server-Sent Event.
    pub fn to_sse(&self) -> String {
        let (event, data) = match self {
            Line::Attempt(a) => ("attempt", serde_json::to_string(a)),
            Line::Endpoint(e) => ("endpoint", serde_json::to_string(e)),
        };
        // invariant: both are plain structs of strings and numbers.
        let data = data.unwrap_or_else(|_| "{}".into());
        format!("event: {event}\ndata: {data}\n\n")
    }
}

/// What a subscriber asked to see (`?endpoint=`, `?tenant=`).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub endpoint: Option<String>,
    pub tenant: Option<String>,
}

impl Filter {
    pub fn admits(&self, line: &Line) -> bool {
        self.endpoint
            .as_deref()
            .is_none_or(|e| e == line.endpoint_id())
            && self.tenant.as_deref().is_none_or(|t| t == line.tenant())
    }
}

pub struct Feed {
    lines: broadcast::Sender<Arc<Line>>,
    subscribers: Arc<AtomicUsize>,
    closed: watch::Sender<bool>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            lines: broadcast::channel(BUFFER).0,
            subscribers: Arc::new(AtomicUsize::new(0)),
            closed: watch::channel(false).0,
        }
    }
}

impl Feed {
    /// Publishes the line `make` builds, if anyone is listening.
    pub fn publish(&self, make: impl FnOnce() -> Line) {
        // An atomic load: `receiver_count` would take the channel's lock on every attempt.
        if self.subscribers.load(Ordering::Relaxed) > 0 {
            let _ = self.lines.send(Arc::new(make()));
        }
    }

    /// A new subscription, or `None` when [`MAX_SUBSCRIBERS`] are open.
    pub fn subscribe(&self) -> Option<Subscription> {
        let taken = self
            .subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SUBSCRIBERS).then_some(n + 1)
            });
        taken.ok()?;
        Some(Subscription {
            lines: self.lines.subscribe(),
            closed: self.closed.subscribe(),
            _place: Place(self.subscribers.clone()),
        })
    }

    /// Ends every open stream (hookd is stopping: open streams would hold the server's
    /// graceful stop for its whole timeout).
    pub fn close(&self) {
        let _ = self.closed.send(true);
    }
}

/// Frees a subscriber's place when dropped.
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Subscription {
    lines: broadcast::Receiver<Arc<Line>>,
    closed: watch::Receiver<bool>,
    /// Held for its drop only.
    _place: Place,
}

/// What a subscriber reads next.
pub enum Next {
    Line(Arc<Line>),
    /// This many lines were lost: the subscriber fell behind.
    Overflow(u64),
    /// Nothing within the keep-alive interval.
    Idle,
    /// hookd is stopping.
    Closed,
}

impl Subscription {
    /// The next line, waiting at most `idle` for one.
    pub async fn next(&mut self, idle: std::time::Duration) -> Next {
        if *self.closed.borrow() {
            return Next::Closed;
        }
        tokio::select! {
            received = self.lines.recv() => match received {
                Ok(line) => Next::Line(line),
                Err(broadcast::error::RecvError::Lagged(n)) => Next::Overflow(n),
                Err(broadcast::error::RecvError::Closed) => Next::Closed,
            },
            _ = self.closed.changed() => Next::Closed,
            () = tokio::time::sleep(idle) => Next::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line(endpoint: &str, tenant: &str) -> Line {
        Line::Endpoint(EndpointLine {
            endpoint_id: endpoint.into(),
            tenant: tenant.into(),
            state: "paused",
            reason: Some("operator".into()),
        })
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_what_it_lost_and_reads_on() {
        let feed = Feed::default();
        let mut sub = feed.subscribe().expect("a place");
        for _ in 0..BUFFER + 10 {
            feed.publish(|| line("ep_1", "t"));
        }
        match sub.next(Duration::from_millis(10)).await {
            Next::Overflow(n) => assert_eq!(n, 10),
            _ => panic!("expected an overflow first"),
        }
        assert!(matches!(
            sub.next(Duration::from_millis(10)).await,
            Next::Line(_)
        ));
    }

    #[test]
    fn places_are_bounded_and_freed_on_drop() {
        let feed = Feed::default();
        let subs: Vec<_> = (0..MAX_SUBSCRIBERS)
            .map(|_| feed.subscribe().expect("a place"))
            .collect();
        assert!(feed.subscribe().is_none());
        drop(subs);
        assert!(feed.subscribe().is_some());
    }

    #[test]
    fn nothing_is_built_without_a_subscriber() {
        let feed = Feed::default();
        feed.publish(|| panic!("built a line nobody reads"));
    }

    #[test]
    fn filters_match_endpoint_and_tenant() {
        let f = Filter {
            endpoint: None,
            tenant: Some("a".into()),
        };
        assert!(f.admits(&line("ep_1", "a")));
        assert!(!f.admits(&line("ep_1", "b")));
        let f = Filter {
            endpoint: Some("ep_2".into()),
            tenant: None,
        };
        assert!(!f.admits(&line("ep_1", "a")));
        assert!(line("ep_1", "a")
            .to_sse()
            .starts_with("event: endpoint\ndata: {"));
    }
}
