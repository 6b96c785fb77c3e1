//! The server: listeners, accept loops, the connection cap and shutdown.
//!
//! The caller binds ([`Listeners::bind`]) and hands the sockets over, so tests bind port 0 and
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
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::cluster::{Cluster, ClusterError, Outgoing};
use crate::net::tls::{TlsAcceptor, TlsError};
use crate::net::{connection, http};
use crate::ops::auth::{Auth, AuthError, AuthReload};
use crate::ops::config::{CompressionMode, Config, ConfigError};
use crate::ops::metrics::{Metrics, Rejected, Source};
use crate::ops::watch;
use crate::routing::history::{History, MessageId};
use crate::routing::hub::{Delivery, Hub, Listener};
use crate::routing::outbox::{SendLimits, Wakeups};
use crate::tags::Tags;
use crate::wire::frame::{CloseReason, MessageFrames, close_code};
use crate::wire::parser::{self, MessageParser};
use crate::wire::request::{Credentials, Request};

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

/// What every connection task shares.
pub struct Shared {
    /// The configuration the server started with.
    pub config: Config,
    /// Every open connection.
    pub hub: Arc<Hub>,
    /// Who may open and send.
    pub auth: Auth,
    /// Checks and encodes messages.
    pub parser: Arc<dyn MessageParser>,
    /// One permit per open WebSocket connection (`limits.max_connections`).
    pub connection_slots: Arc<Semaphore>,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// The wss certificate, when `[tls]` is set; each wss connection task holds it too.
    pub tls: Option<Arc<TlsAcceptor>>,
    /// The link to the other nodes, when `[cluster] redis` is set.
    pub cluster: Option<Arc<Cluster>>,
    /// The kept messages, when `[history] size` is not 0.
    pub history: Option<History>,
    /// What `GET /metrics` reports.
    pub metrics: Metrics,
}

impl Shared {
    /// Delivers a request accepted on this node (checked by auth, encoded by the message
    /// parser) to the local clients at once, then hands it to the other nodes, when clustered,
    /// without waiting for them. Counts this node's deliveries only.
    ///
    /// With the history on, a clustered node routes nothing here: every node routes the
    /// requests as it reads them from the cluster's stream, with the stream's ids, and this one
    /// returns no delivery. While Redis is down, it delivers to the local clients only.
    pub fn accept_request(&self, tags: &Tags, payload: &str, wakeups: &mut Wakeups) -> Delivery {
        match &self.cluster {
            Some(cluster) if cluster.keeps_history() => match cluster.share(tags, payload) {
                true => Delivery::default(),
                false => self.route_unshared(cluster, tags, payload, wakeups),
            },
            Some(cluster) => {
                let delivery = self.route(tags, payload, wakeups);
                cluster.share(tags, payload);
                delivery
            }
            None => self.route(tags, payload, wakeups),
        }
    }

    /// Routes a request read from the cluster's stream (history on) with its id `id`, and
    /// keeps it; `None` when it was routed already.
    pub fn route_issued(
        &self,
        id: MessageId,
        tags: &Tags,
        payload: &str,
        wakeups: &mut Wakeups,
    ) -> Option<Delivery> {
        let history = self.history.as_ref()?;
        let frames = self.frames(payload);
        let delivery = history.record_issued(id, tags, payload, SystemTime::now(), |id_frame| {
            self.hub.route(tags, &frames, Some(id_frame), wakeups)
        })?;
        self.metrics.set_history_bytes(history.bytes());
        self.metrics.routed(delivery.delivered);
        Some(Delivery {
            id: Some(id),
            ..delivery
        })
    }

    /// The frames of a message, built once for all its recipients: the compressed one too when
    /// it is long enough and some connection negotiated compression.
    fn frames(&self, payload: &str) -> MessageFrames {
        let messages = &self.config.messages;
        let compress = messages.compression == CompressionMode::Shared
            && payload.len() >= messages.compression_min_size
            && self.hub.has_deflate_peers();
        MessageFrames::text(payload, compress)
    }

    /// Routes a request to this node's clients only, the cluster's stream being out of reach
    /// (history on): with an id no recovery vouches for, not kept.
    pub fn route_unshared(
        &self,
        cluster: &Cluster,
        tags: &Tags,
        payload: &str,
        wakeups: &mut Wakeups,
    ) -> Delivery {
        let frames = self.frames(payload);
        let delivery = match &self.history {
            Some(history) => {
                // A recovery here can no longer vouch for what it replays: this one is not in it.
                history.set_blind(true);
                history.route_unkept(&cluster.unshared_id(), payload, |id_frame| {
                    self.hub.route(tags, &frames, Some(id_frame), wakeups)
                })
            }
            None => self.hub.route(tags, &frames, None, wakeups),
        };
        self.metrics.routed(delivery.delivered);
        delivery
    }

    /// Delivers an accepted request's encoded message (`payload`, from the message parser) to
    /// every local connection whose tags contain all of `tags`. Every source of requests
    /// (WebSocket, HTTP, other nodes) ends here; the frame is built once for all recipients.
    /// The recipients' writers join `wakeups`: the caller wakes them when its batch is routed.
    /// With the history on, the message gets an id and is kept ([`History::record`]).
    pub fn route(&self, tags: &Tags, payload: &str, wakeups: &mut Wakeups) -> Delivery {
        let frames = self.frames(payload);
        let delivery = match &self.history {
            None => self.hub.route(tags, &frames, None, wakeups),
            Some(history) => {
                let (id, delivery) = history.record(tags, payload, SystemTime::now(), |id_frame| {
                    self.hub.route(tags, &frames, Some(id_frame), wakeups)
                });
                self.metrics.set_history_bytes(history.bytes());
                Delivery {
                    id: Some(id),
                    ..delivery
                }
            }
        };
        self.metrics.routed(delivery.delivered);
        delivery
    }

    /// Parses, authorizes and routes the text of one request from a client (a WebSocket frame
    /// or an HTTP publish): the same rules whatever it came through. `credentials`, when given
    /// (an HTTP `Authorization` header), stand in for the request's `metadata` ones. The error
    /// is the close code 4400 (invalid) or 4401 (not authorized) with the reason for the client.
    pub fn handle_request(
        &self,
        text: &str,
        source: Source,
        credentials: Option<&Credentials>,
        wakeups: &mut Wakeups,
    ) -> Result<Delivery, CloseReason> {
        let (tags, payload) = self.check_request(text, source, credentials)?;
        Ok(self.accept_request(&tags, &payload, wakeups))
    }

    /// The checks of [`Shared::handle_request`]: the request's tags and its message encoded
    /// by the parser, or the close code and reason to refuse it with.
    pub fn check_request(
        &self,
        text: &str,
        source: Source,
        credentials: Option<&Credentials>,
    ) -> Result<(Tags, String), CloseReason> {
        self.metrics.request(source);
        let invalid = |message: String| {
            self.metrics.rejected(Rejected::Invalid);
            CloseReason::new(close_code::INVALID_REQUEST, message)
        };
        let request = Request::parse(text, self.config.limits.tag_limits())
            .map_err(|error| invalid(error.to_string()))?;
        self.auth
            .check_send(credentials.unwrap_or(&request.credentials))
            .inspect_err(|_| self.metrics.rejected(Rejected::Unauthorized))?;
        let payload = self
            .parser
            .parse(request.message)
            .map_err(|rejected| invalid(format!("invalid message: {rejected}")))?;
        Ok((request.tags, payload))
    }

    /// [`Shared::handle_request`] for a caller that waits for the answer (HTTP publish): the
    /// same, but a clustered node with the history on waits until it has read the request back
    /// from the cluster's stream and routed it, so that the delivery has its count and id.
    pub async fn handle_request_waiting(
        &self,
        text: &str,
        source: Source,
        credentials: Option<&Credentials>,
        wakeups: &mut Wakeups,
    ) -> Result<Delivery, CloseReason> {
        let (tags, payload) = self.check_request(text, source, credentials)?;
        let waiting = match &self.cluster {
            Some(cluster) if cluster.keeps_history() => cluster.share_waiting(&tags, &payload),
            _ => None,
        };
        let Some(waiting) = waiting else {
            return Ok(self.accept_request(&tags, &payload, wakeups));
        };
        match tokio::time::timeout(SHARED_ANSWER_TIMEOUT, waiting).await {
            Ok(Ok(delivery)) => Ok(delivery),
            _ => Err(CloseReason::new(
                close_code::INTERNAL_ERROR,
                "accepted, but redis did not hand it back in time: it may or may not be delivered",
            )),
        }
    }

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
        self.metrics.tls_reloaded(result.is_ok());
        match &result {
            Ok(()) => info!(cert = %tls.cert_path().display(), "tls certificate reloaded"),
            Err(error) => error!("tls certificate not reloaded, the previous one stays: {error}"),
        }
        Some(result)
    }

    /// Re-reads the auth file: the one path for SIGHUP and the file watcher. See
    /// [`Auth::reload`].
    pub fn reload_auth(&self) -> AuthReload {
        let reload = self.auth.reload(&self.hub);
        match &reload {
            AuthReload::Loaded { .. } => self.metrics.auth_reloaded(true),
            AuthReload::Failed(_) => self.metrics.auth_reloaded(false),
            AuthReload::NoFile => {}
        }
        reload
    }
}

/// How long an HTTP publish waits for its request to come back from the cluster's stream.
const SHARED_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A reload a watched file's change triggers.
type Reload = fn(&Shared);

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

/// The bound listening sockets.
pub struct Listeners {
    /// The plain ws listener, unless `server.plain = false`.
    pub plain: Option<TcpListener>,
    /// The wss listener, when `[tls]` is set.
    pub tls: Option<TcpListener>,
    /// The `/metrics` and `/healthz` listener, unless `http.admin_address` is empty.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the listeners the config asks for.
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        let plain = match config.server.plain {
            true => Some(bind(config.plain_address()).await?),
            false => None,
        };
        let tls = match config.tls_socket_address() {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        let admin = match config.http.admin_address {
            Some(address) => Some(bind(address).await?),
            None => None, // served on the main listeners
        };
        Ok(Listeners { plain, tls, admin })
    }

    /// The plain ws listener's address.
    pub fn plain_address(&self) -> Option<SocketAddr> {
        local_address(&self.plain)
    }

    /// The wss listener's address.
    pub fn tls_address(&self) -> Option<SocketAddr> {
        local_address(&self.tls)
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
        let tls = match &config.tls {
            Some(tls) => Some(Arc::new(TlsAcceptor::load(tls)?)),
            None => None,
        };
        let (cluster, cluster_queue) =
            Cluster::from_config(&config.cluster, &config.history)?.unzip();
        let history = History::from_config(&config.history);
        if let (Some(history), Some(_)) = (&history, &cluster) {
            // Until its reader has caught up with the cluster's stream.
            history.set_blind(true);
        }
        let limits = SendLimits::new(
            config.limits.send_queue_bytes.get(),
            Duration::from_millis(config.limits.write_timeout_ms.get()),
            config.limits.max_queued_bytes.get(),
        );
        let shared = Shared {
            connection_slots: Arc::new(Semaphore::new(config.limits.max_connections.get())),
            hub: Arc::new(Hub::new(limits.clone())),
            auth: Auth::from_config(&config.auth)?,
            parser,
            shutdown: CancellationToken::new(),
            tls,
            cluster,
            history,
            metrics: Metrics::new(config.cluster.redis.is_some(), limits),
            config,
        };
        Ok(Server {
            shared: Arc::new(shared),
            tracker: TaskTracker::new(),
            cluster_queue,
        })
    }

    /// Cancel this token to shut the server down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// The hub of open connections.
    pub fn hub(&self) -> Arc<Hub> {
        self.shared.hub.clone()
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
        if let (Some(listener), Some(tls)) = (listeners.tls, &self.shared.tls) {
            let (shared, tls) = (self.shared.clone(), tls.clone());
            self.tracker.spawn(accept_loop(
                self.shared.shutdown.clone(),
                self.tracker.clone(),
                listener,
                move |stream, address| serve_wss(shared.clone(), tls.clone(), stream, address),
            ));
        }
        if let (Some(cluster), Some(queue)) = (&self.shared.cluster, self.cluster_queue) {
            self.tracker
                .spawn(cluster.clone().run(queue, self.shared.clone()));
        }
        // The files applied live, each with the reload its change triggers.
        let mut watched: Vec<(PathBuf, &'static str, Reload)> = Vec::new();
        if let Some(path) = self.shared.auth.path() {
            watched.push((path.to_owned(), "auth file", |shared| {
                shared.reload_auth();
            }));
        }
        if let Some(tls) = &self.shared.config.tls {
            let reload_tls: Reload = |shared| {
                shared.reload_tls();
            };
            watched.push((tls.cert.clone(), "tls certificate", reload_tls));
            watched.push((tls.key.clone(), "tls key", reload_tls));
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
        info!(connections = self.shared.hub.len(), "shutting down");
        self.shared.hub.close_all(&CloseReason::new(
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
                connections = self.shared.hub.len(),
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

/// When a connection accepted now must have sent its request head (and an HTTP body).
pub fn handshake_deadline(config: &Config) -> Instant {
    Instant::now() + Duration::from_millis(config.limits.handshake_timeout_ms.get())
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
    connection::serve(shared, stream, address, Listener::Ws, deadline)
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
    connection::serve(shared, stream, address, Listener::Wss, deadline).await;
}
