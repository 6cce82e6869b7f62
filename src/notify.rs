//! The systemd notification protocol (`Type=notify`): READY=1 once recovery is done,
//! STOPPING=1 on shutdown, WATCHDOG=1 pings at half of `WatchdogSec`. Without `NOTIFY_SOCKET`
//! (not under systemd) every call does nothing. The variables are systemd's, set for this
//! process alone, so they are read here rather than through the configuration.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one state line to systemd, if it is listening.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)
        } else {
            socket.send_to(state.as_bytes(), &path)
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "cannot notify systemd");
    }
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, when systemd asked for pings.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
