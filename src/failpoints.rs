//! Faults the integration tests cause on purpose, compiled only with the `failpoints` feature
//! (never in a release build). Each is armed by an environment variable read once.

use std::sync::OnceLock;

/// `FAILPOINT_PANIC_EVENT_TYPE=T`: an endpoint actor panics when an attempt for an event
/// of type `T` comes back, as a bug in the actor would.
pub fn panic_on_event_type(event_type: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("FAILPOINT_PANIC_EVENT_TYPE").ok());
    if armed.as_deref() == Some(event_type) {
        panic!("failpoint: endpoint actor panics on an attempt result for {event_type:?}");
    }
}

/// `FAILPOINT_RELAY_DELAY_MS=N`: the operator-event relay waits N ms before ingesting what it
/// was given, widening the window in which a transition is stored and its event is not yet.
pub fn relay_delay() -> Option<std::time::Duration> {
    static ARMED: OnceLock<Option<u64>> = OnceLock::new();
    armed_millis(&ARMED, "FAILPOINT_RELAY_DELAY_MS")
}

/// A delay in milliseconds from `var`, read once into `cell`.
fn armed_millis(cell: &'static OnceLock<Option<u64>>, var: &str) -> Option<std::time::Duration> {
    cell.get_or_init(|| std::env::var(var).ok().and_then(|v| v.parse().ok()))
        .map(std::time::Duration::from_millis)
}

/// `FAILPOINT_SOURCE_STORE_DELAY_MS=N`: a source waits N ms between taking a chunk of messages
/// and storing it, widening the window in which messages are received and not yet stored (a
/// kill then must leave them unacknowledged).
pub fn source_store_delay() -> Option<std::time::Duration> {
    static ARMED: OnceLock<Option<u64>> = OnceLock::new();
    armed_millis(&ARMED, "FAILPOINT_SOURCE_STORE_DELAY_MS")
}
