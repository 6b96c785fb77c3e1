//! The server: listeners, accept loops, the connection cap and shutdown.
//!
//! The caller binds ([`Server::bind`]) and hands the sockets over, so tests bind port 0 and
//! read the address back. [`Server::run`] accepts until the shutdown token is cancelled, then
//! sends close 1001 to every client and waits up to `limits.shutdown_grace_ms` for them. The ws
//! and wss listeners feed the same hub; a wss connection's TLS handshake runs in its own task.
//! The admin listener (`http.admin_address`: `/metrics`, `/healthz`) keeps answering until the
//! drain is over, so that `/healthz` says 503 meanwhile.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

#[cfg(feature = "cluster")]
use crate::cluster::{Cluster, ClusterError, Outgoing};
use crate::net::head::handshake_deadline;
use crate::net::shared::Shared;
use crate::net::tls::{TlsAcceptor, TlsError, WssListener};
use crate::net::{connection, http, websocket};
use crate::ops::auth::{Auth, AuthError};
use crate::ops::config::Config;
use crate::ops::metrics::Metrics;
use crate::ops::watch;
use crate::routing::history::History;
use crate::routing::hub::{Hub, Listener};
use crate::routing::outbox::SendLimits;
use crate::routing::router::Router;
#[cfg(feature = "cluster")]
use crate::routing::router::Sharing;
use crate::wire::frame::{CloseReason, close_code};
use crate::wire::parser::{self, MessageParser};

/// A server that cannot start. The message names the file or address at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The JSON Schema of the `json-schema` parser is unusable.
    #[error(transparent)]
    Schema(#[from] parser::SchemaError),
    /// The auth file is missing, unreadable or invalid.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The `[tls]` certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The `[cluster]` section cannot be used.
    #[cfg(feature = "cluster")]
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A listener cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// A reload a watched file's change triggers.
type Reload = fn(&Shared);

/// The bound listening sockets.
pub struct Listeners {
    /// The plain ws listener, unless `server.plain = false`.
    pub plain: Option<TcpListener>,
    /// The wss listener with its certificate, when `[tls]` is set.
    pub wss: Option<WssListener>,
    /// The `/metrics` and `/healthz` listener, unless `http.admin_address` is empty.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// The plain ws listener's address.
    pub fn plain_address(&self) -> Option<SocketAddr> {
        local_address(&self.plain)
    }

    /// The wss listener's address.
    pub fn tls_address(&self) -> Option<SocketAddr> {
        self.wss
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The admin listener's address.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        local_address(&self.admin)
    }
}

fn local_address(listener: &Option<TcpListener>) -> Option<SocketAddr> {
    listener
        .as_ref()
        .and_then(|listener| listener.local_addr().ok())
}

async fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind { address, source })
}

/// A configured server, ready to run on bound listeners.
pub struct Server {
    shared: Arc<Shared>,
    tracker: TaskTracker,
    /// What the cluster link publishes, taken by `run`.
    #[cfg(feature = "cluster")]
    cluster_queue: Option<Outgoing>,
}

impl Server {
    /// Prepares a server: loads the message parser, the auth file and the TLS certificate the
    /// config names.
    pub fn new(config: Config) -> Result<Server, StartError> {
        let parser = parser::from_config(&config.messages)?;
        Server::with_parser(config, parser)
    }

    /// Prepares a server that checks messages with a parser of the caller's own; loads the
    /// auth file the config names.
    pub fn with_parser(
        config: Config,
        parser: Arc<dyn MessageParser>,
    ) -> Result<Server, StartError> {
        let tls = config
            .tls
            .as_ref()
            .map(|tls| TlsAcceptor::load(tls.socket_address(&config.server), tls))
            .transpose()?;
        let history = History::from_config(&config.history);
        #[cfg(feature = "cluster")]
        let (cluster, cluster_queue) =
            Cluster::from_config(&config.cluster, &config.history)?.unzip();
        #[cfg(feature = "cluster")]
        if let (Some(history), Some(_)) = (&history, &cluster) {
            // Until its reader has caught up with the cluster's stream.
            history.set_blind(true);
        }
        // Without the feature, Config::parse refuses `cluster.redis`: nothing to share with.
        #[cfg(not(feature = "cluster"))]
        let sharing = None;
        let limits = SendLimits::new(
            config.limits.send_queue_bytes.get(),
            Duration::from_millis(config.limits.write_timeout_ms.get()),
            config.limits.max_queued_bytes.get(),
        );
        #[cfg(feature = "cluster")]
        let sharing = cluster.clone().map(|cluster| cluster as Arc<dyn Sharing>);
        let router = Router::new(
            &config,
            Arc::new(Hub::new(limits.clone())),
            Auth::from_config(&config.auth)?,
            parser,
            history,
            sharing,
            Metrics::new(config.cluster.redis.is_some(), limits),
        );
        let shared = Shared {
            connection_slots: Arc::new(Semaphore::new(config.limits.max_connections.get())),
            router: Arc::new(router),
            shutdown: CancellationToken::new(),
            tls: tls.map(Arc::new),
            #[cfg(feature = "cluster")]
            cluster,
            config,
        };
        Ok(Server {
            shared: Arc::new(shared),
            tracker: TaskTracker::new(),
            #[cfg(feature = "cluster")]
            cluster_queue,
        })
    }

    /// Binds the listeners the config asks for; the wss one serves the server's certificate.
    pub async fn bind(&self) -> Result<Listeners, StartError> {
        let config = &self.shared.config;
        let plain = match config.server.plain {
            true => Some(bind(config.plain_address()).await?),
            false => None,
        };
        let wss = match &self.shared.tls {
            Some(acceptor) => Some(WssListener::bind(acceptor.clone()).await.map_err(
                |source| StartError::Bind {
                    address: acceptor.address(),
                    source,
                },
            )?),
            None => None,
        };
        let admin = match config.http.admin_address {
            Some(address) => Some(bind(address).await?),
            None => None, // served on the main listeners
        };
        Ok(Listeners { plain, wss, admin })
    }

    /// Cancel this token to shut the server down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// The hub of open connections.
    pub fn hub(&self) -> Arc<Hub> {
        self.shared.router.hub().clone()
    }

    /// What every connection shares (for reloads and tests).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until the shutdown token is cancelled, then closes every client with 1001 and
    /// waits for them (at most `limits.shutdown_grace_ms`).
    pub async fn run(self, listeners: Listeners) {
        if let Some(listener) = listeners.plain {
            let shared = self.shared.clone();
            self.tracker.spawn(accept_loop(
                self.shared.shutdown.clone(),
                self.tracker.clone(),
                listener,
                move |stream, address| serve_ws(shared.clone(), stream, address),
            ));
        }
        // Not in `tracker`: it answers `/healthz` (503) until the drain below is over.
        let admin_stop = CancellationToken::new();
        let _stop_admin = admin_stop.clone().drop_guard();
        if let Some(listener) = listeners.admin {
            let shared = self.shared.clone();
            tokio::spawn(accept_loop(
                admin_stop,
                TaskTracker::new(),
                listener,
                move |stream, address| http::serve_admin(shared.clone(), stream, address),
            ));
        }
        if let Some(wss) = listeners.wss {
            let shared = self.shared.clone();
            let (listener, tls) = wss.into_parts();
            self.tracker.spawn(accept_loop(
                self.shared.shutdown.clone(),
                self.tracker.clone(),
                listener,
                move |stream, address| serve_wss(shared.clone(), tls.clone(), stream, address),
            ));
        }
        #[cfg(feature = "cluster")]
        if let (Some(cluster), Some(queue)) = (&self.shared.cluster, self.cluster_queue) {
            self.tracker.spawn(cluster.clone().run(
                queue,
                self.shared.router.clone(),
                self.shared.shutdown.clone(),
            ));
        }
        // The files applied live, each with the reload its change triggers.
        let mut watched: Vec<(PathBuf, &'static str, Reload)> = Vec::new();
        if let Some(path) = self.shared.router.auth().path() {
            watched.push((path.to_owned(), "auth file", |shared| {
                shared.reload_auth();
            }));
        }
        if let Some(tls) = &self.shared.tls {
            let reload_tls: Reload = |shared| {
                shared.reload_tls();
            };
            watched.push((tls.cert_path().to_owned(), "tls certificate", reload_tls));
            watched.push((tls.key_path().to_owned(), "tls key", reload_tls));
        }
        for (path, what, reload) in watched {
            let shared = self.shared.clone();
            self.tracker.spawn(watch::watch_file(
                path,
                what,
                self.shared.shutdown.clone(),
                move || reload(&shared),
            ));
        }
        self.shared.shutdown.cancelled().await;
        info!(
            connections = self.shared.router.hub().len(),
            "shutting down"
        );
        self.shared.router.hub().close_all(&CloseReason::new(
            close_code::GOING_AWAY,
            "server shutting down",
        ));
        self.tracker.close();
        let grace = Duration::from_millis(self.shared.config.limits.shutdown_grace_ms.get());
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                connections = self.shared.router.hub().len(),
                "shutdown grace period over; dropping the remaining connections"
            );
        }
    }
}

/// Accepts connections until `stop` is cancelled; each one is served by `serve` in its own task.
async fn accept_loop<F, Served>(
    stop: CancellationToken,
    tracker: TaskTracker,
    listener: TcpListener,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Served,
    Served: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, address)) => {
                tracker.spawn(serve(stream, address));
            }
            Err(error) => {
                // Out of file descriptors and the like: never end the server for it.
                warn!(%error, "accept failed; retrying in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// Serves one connection accepted on the ws listener.
///
/// ws and wss connections are served by two functions, hence two task types: a task holds its
/// future inline, so one function for both would make every ws connection pay for the size of
/// the TLS stream and handshake. Not an `async fn`: the task is `connection::serve`'s future
/// itself, without a wrapper keeping a second copy of its arguments.
fn serve_ws(
    shared: Arc<Shared>,
    stream: TcpStream,
    address: SocketAddr,
) -> impl Future<Output = ()> + Send {
    let _ = stream.set_nodelay(true);
    let deadline = handshake_deadline(&shared.config);
    connection::serve(
        shared,
        stream,
        websocket::split_tcp,
        address,
        Listener::Ws,
        deadline,
    )
}

/// Serves one connection accepted on the wss listener: decrypted first, its TLS handshake
/// bounded by the same deadline as the WebSocket handshake.
async fn serve_wss(
    shared: Arc<Shared>,
    tls: Arc<TlsAcceptor>,
    stream: TcpStream,
    address: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let deadline = handshake_deadline(&shared.config);
    let stream = tokio::select! {
        accepted = tokio::time::timeout_at(deadline, tls.accept(stream)) => match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                debug!(peer = %address, %error, "tls handshake failed");
                return;
            }
            Err(_) => {
                debug!(peer = %address, "tls handshake timed out");
                return;
            }
        },
        _ = shared.shutdown.cancelled() => return,
    };
    drop(tls);
    connection::serve(
        shared,
        stream,
        websocket::split,
        address,
        Listener::Wss,
        deadline,
    )
    .await;
}
