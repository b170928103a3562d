//! The systemd notify protocol (`Type=notify`): `READY=1` once the store,
//! the pipelines and the listener are up; `RELOADING=1` + `MONOTONIC_USEC`
//! then `READY=1` around a SIGHUP reload (systemd ≥ 253 wants the timestamp);
//! `STOPPING=1` when shutdown begins; `WATCHDOG=1` every half
//! `WATCHDOG_USEC` while the async runtime is responsive.
//!
//! Without `NOTIFY_SOCKET` every call is a no-op. Steps never see the
//! socket: they start from an explicit environment (see `runner`).

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot send a notification to systemd");
    }
}

/// The daemon is up (also after a reload); `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the monotonic clock for systemd");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// Shutdown begins.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// The watchdog interval systemd asked for, if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Pings the watchdog every half `interval` until `stop` fires.
pub async fn watchdog(interval: Duration, stop: CancellationToken) {
    let period = (interval / 2).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => send(&[NotifyState::Watchdog]),
            _ = stop.cancelled() => return,
        }
    }
}
