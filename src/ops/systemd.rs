//! What systemd knows of the daemon (sd_notify(3), `Type=notify`): readiness, a one-line status,
//! reloads, stopping, and the watchdog.
//!
//! Every message is a datagram to `NOTIFY_SOCKET`; without that variable (not run by systemd)
//! nothing is sent and nothing is computed. The sequence the unit relies on:
//! - `READY=1` once every listener is bound and the auth file is loaded ([`Service::ready`]);
//! - `STATUS=` kept current, checked every second and sent only when its text changed
//!   ([`Service::keep_status`]): "3 connections, auth: 2 applications", plus
//!   ", cluster: connected" or ", cluster: redis unreachable" when `[cluster]` is set;
//! - `RELOADING=1` + `MONOTONIC_USEC=` before a reload (SIGHUP or `tagcast reload`),
//!   `READY=1` after it even when it failed; a failure stays in `STATUS=` until a reload
//!   succeeds ([`Service::reload`]);
//! - `STOPPING=1` before clients get close 1001 ([`Service::stopping`]);
//! - `WATCHDOG=1` at half of `WATCHDOG_USEC`, from a runtime task, so a wedged runtime is
//!   noticed ([`watchdog`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, info, warn};

use crate::net::shared::{ReloadOutcome, Shared};
use crate::ops::logging::message_id;

/// How often the status line is recomputed (SPEC §6: within 5 s of a change).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The daemon's side of the conversation with systemd.
pub struct Service {
    /// False outside systemd: every method returns at once.
    enabled: bool,
    /// The server whose state `STATUS=` shows.
    shared: Arc<Shared>,
    /// The last reload's failure, shown in `STATUS=` until a reload succeeds.
    reload_failure: Mutex<Option<String>>,
    /// The `STATUS=` text last sent, so that an unchanged status is not sent again.
    sent_status: Mutex<String>,
}

impl Service {
    /// The notifier for `shared`; inert when `NOTIFY_SOCKET` is not set.
    pub fn new(shared: Arc<Shared>) -> Arc<Service> {
        Arc::new(Service {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            shared,
            reload_failure: Mutex::new(None),
            sent_status: Mutex::new(String::new()),
        })
    }

    /// `READY=1`: call once the listeners are bound and the auth file is loaded.
    pub fn ready(&self) {
        if self.enabled {
            let status = self.remember_status();
            send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        }
    }

    /// Runs `reload` between `RELOADING=1` and `READY=1` and returns how it went (for
    /// `tagcast reload`); a failure is logged and stays in `STATUS=` until a reload succeeds.
    pub fn reload(&self, reload: impl FnOnce() -> ReloadOutcome) -> ReloadOutcome {
        if self.enabled {
            match NotifyState::monotonic_usec_now() {
                Ok(now) => send(&[NotifyState::Reloading, now]),
                Err(error) => warn!("cannot read the monotonic clock for systemd: {error}"),
            }
        }
        let outcome = reload();
        let failure = match outcome.succeeded() {
            true => {
                info!(message_id = message_id::RELOAD_DONE, "reload done");
                None
            }
            false => {
                let failures = outcome.failures.join("; ");
                warn!(
                    message_id = message_id::RELOAD_FAILED,
                    "reload failed, the previous settings stay in force: {failures}"
                );
                Some(failures)
            }
        };
        *lock(&self.reload_failure) = failure;
        self.ready();
        outcome
    }

    /// `STOPPING=1`: call before the clients are told the server is going away.
    pub fn stopping(&self) {
        if self.enabled {
            let status = format!(
                "stopping: closing {}",
                connections(self.shared.router.hub().len())
            );
            send(&[NotifyState::Stopping, NotifyState::Status(&status)]);
        }
    }

    /// Keeps `STATUS=` current until shutdown: recomputed every second, sent when it changed.
    pub async fn keep_status(self: Arc<Self>) {
        if !self.enabled {
            return;
        }
        let mut ticker = tokio::time::interval(STATUS_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.shared.shutdown.cancelled() => return,
            }
            let status = self.status();
            let changed = {
                let mut sent = lock(&self.sent_status);
                let changed = *sent != status;
                if changed {
                    sent.clone_from(&status);
                }
                changed
            };
            if changed {
                send(&[NotifyState::Status(&status)]);
            }
        }
    }

    /// Computes the status line and records it as sent.
    fn remember_status(&self) -> String {
        let status = self.status();
        lock(&self.sent_status).clone_from(&status);
        status
    }

    /// "3 connections, auth: 2 applications", the cluster link when clustered, plus the last
    /// reload's failure if any.
    fn status(&self) -> String {
        let applications = self.shared.router.auth().applications();
        #[cfg(feature = "cluster")]
        let cluster = self
            .shared
            .cluster
            .as_ref()
            .map(|cluster| cluster.connected());
        #[cfg(not(feature = "cluster"))]
        let cluster = None;
        let failure = lock(&self.reload_failure).clone();
        status_line(
            self.shared.router.hub().len(),
            applications,
            cluster,
            failure.as_deref(),
        )
    }
}

/// Sends `WATCHDOG=1` at half of `WATCHDOG_USEC` for as long as the runtime runs; returns at
/// once when systemd set no watchdog.
pub async fn watchdog() {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut ticker = tokio::time::interval(timeout / 2);
    loop {
        ticker.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}

fn status_line(
    connection_count: usize,
    applications: Option<usize>,
    cluster_connected: Option<bool>,
    failure: Option<&str>,
) -> String {
    let auth = match applications {
        None => "off".to_owned(),
        Some(1) => "1 application".to_owned(),
        Some(count) => format!("{count} applications"),
    };
    let mut status = format!("{}, auth: {auth}", connections(connection_count));
    match cluster_connected {
        Some(true) => status.push_str(", cluster: connected"),
        Some(false) => status.push_str(", cluster: redis unreachable"),
        None => {}
    }
    if let Some(failure) = failure {
        status.push_str("; last reload failed: ");
        status.push_str(failure);
    }
    status
}

fn connections(count: usize) -> String {
    match count {
        1 => "1 connection".to_owned(),
        count => format!("{count} connections"),
    }
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        debug!(%error, "cannot notify systemd");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_counts_connections_and_applications() {
        assert_eq!(status_line(0, None, None, None), "0 connections, auth: off");
        assert_eq!(
            status_line(1, Some(1), None, None),
            "1 connection, auth: 1 application"
        );
        assert_eq!(
            status_line(2, None, Some(true), None),
            "2 connections, auth: off, cluster: connected"
        );
        assert_eq!(
            status_line(2, None, Some(false), None),
            "2 connections, auth: off, cluster: redis unreachable"
        );
        assert_eq!(
            status_line(
                1234,
                Some(3),
                None,
                Some("auth.yml: line 2: missing `secret`")
            ),
            "1234 connections, auth: 3 applications; \
             last reload failed: auth.yml: line 2: missing `secret`"
        );
    }
}
