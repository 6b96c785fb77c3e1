//! What every connection task shares: the router and the few pieces the edges need besides
//! it (the config they started with, the connection slots, the shutdown token, the wss
//! certificate), and the reload of what can change without a restart.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

#[cfg(feature = "cluster")]
use crate::cluster::Cluster;
use crate::net::tls::{TlsAcceptor, TlsError};
use crate::ops::auth::AuthReload;
use crate::ops::config::{Config, ConfigError};
use crate::routing::router::Router;

/// How a reload went, as `tagcast reload` reports it: what could not be reloaded (the
/// previous one stays in force) and the `tagcast.toml` keys whose changes wait for a restart.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReloadOutcome {
    /// One message per failure, each naming its file.
    pub failures: Vec<String>,
    /// The changed `tagcast.toml` keys that apply at the next restart.
    pub needs_restart: Vec<String>,
}

impl ReloadOutcome {
    /// True when nothing failed (keys may still wait for a restart).
    pub fn succeeded(&self) -> bool {
        self.failures.is_empty()
    }
}

/// What every connection task shares: a plain holder of the pieces.
pub struct Shared {
    /// The configuration the server started with.
    pub config: Config,
    /// The request path: parse, authorize, encode, match, enqueue, share.
    pub router: Arc<Router>,
    /// One permit per open WebSocket connection (`limits.max_connections`).
    pub connection_slots: Arc<Semaphore>,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// The wss certificate, when `[tls]` is set.
    pub tls: Option<Arc<TlsAcceptor>>,
    /// The link to the other nodes, when `[cluster] redis` is set.
    #[cfg(feature = "cluster")]
    pub cluster: Option<Arc<Cluster>>,
}

impl Shared {
    /// Re-reads what can change without a restart (SIGHUP, `systemctl reload`): the auth file
    /// and the wss certificate, each checked before it replaces the one in force. Says how it
    /// went, for logs, metrics, systemd's `RELOADING=1`/`READY=1` and `tagcast reload`.
    ///
    /// Every key of `tagcast.toml` needs a restart (listeners, limits and parsers are set up
    /// once): the file is re-read to check it, so that a broken one fails the reload (the admin
    /// learns of it before the next restart), and the keys whose values changed are named as
    /// needing a restart.
    pub fn reload(&self) -> Reloaded {
        info!("reload requested");
        let config = match &self.config.source {
            Some(path) => Config::load(path).map(|config| {
                let changed = self.config.changed_keys(&config);
                if !changed.is_empty() {
                    warn!(
                        "{}: needs restart: {} (changed; the running values stay until the \
                         next restart)",
                        path.display(),
                        changed.join(", ")
                    );
                }
                changed
            }),
            None => Ok(Vec::new()),
        };
        Reloaded {
            config,
            auth: self.reload_auth(),
            tls: self.reload_tls(),
        }
    }

    /// Re-reads the wss certificate and key (a renewal): the one path for SIGHUP and the file
    /// watcher. A pair that cannot be used is logged and the one in force stays. `None` when
    /// wss is not served.
    pub fn reload_tls(&self) -> Option<Result<(), TlsError>> {
        let tls = self.tls.as_ref()?;
        let result = tls.reload();
        self.router.metrics().tls_reloaded(result.is_ok());
        match &result {
            Ok(()) => info!(cert = %tls.cert_path().display(), "tls certificate reloaded"),
            Err(error) => error!("tls certificate not reloaded, the previous one stays: {error}"),
        }
        Some(result)
    }

    /// Re-reads the auth file: the one path for SIGHUP and the file watcher. See
    /// [`Auth::reload`](crate::ops::auth::Auth::reload).
    pub fn reload_auth(&self) -> AuthReload {
        let reload = self.router.auth().reload(self.router.hub());
        match &reload {
            AuthReload::Loaded { .. } => self.router.metrics().auth_reloaded(true),
            AuthReload::Failed(_) => self.router.metrics().auth_reloaded(false),
            AuthReload::NoFile => {}
        }
        reload
    }
}

/// What one [`Shared::reload`] did.
#[derive(Debug)]
pub struct Reloaded {
    /// The check of `tagcast.toml`: the changed keys, which need a restart.
    pub config: Result<Vec<String>, ConfigError>,
    /// The auth file's reload.
    pub auth: AuthReload,
    /// The certificate's reload, when wss is served.
    pub tls: Option<Result<(), TlsError>>,
}

impl Reloaded {
    /// Every failure, each naming its file, and the keys waiting for a restart.
    pub fn outcome(self) -> ReloadOutcome {
        let mut outcome = ReloadOutcome::default();
        match self.config {
            Ok(changed) => outcome.needs_restart = changed,
            Err(error) => outcome.failures.push(error.to_string()),
        }
        if let AuthReload::Failed(error) = self.auth {
            outcome.failures.push(error.to_string());
        }
        if let Some(Err(error)) = self.tls {
            outcome.failures.push(error.to_string());
        }
        outcome
    }
}
