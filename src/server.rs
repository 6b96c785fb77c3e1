//! The server: listeners, accept loops, the connection cap and shutdown.
//!
//! The caller binds ([`Listeners::bind`]) and hands the sockets over, so tests bind port 0 and
//! read the address back. [`Server::run`] accepts until the shutdown token is cancelled, then
//! sends close 1001 to every client and waits up to `limits.shutdown_grace_ms` for them. The
//! admin listener (`http.admin_address`: `/metrics`, `/healthz`) keeps answering until then, so
//! that `/healthz` says 503 while the server drains.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::Auth;
use crate::config::Config;
use crate::frame::{self, CloseReason, close_code};
use crate::hub::{Delivery, Hub, Listener};
use crate::metrics::{Metrics, Rejected, Source};
use crate::parser::{self, MessageParser};
use crate::request::{Credentials, Request};
use crate::tags::Tags;
use crate::{connection, http};

/// A server that cannot start. The message names the file or address at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The JSON Schema of the `json-schema` parser is unusable.
    #[error(transparent)]
    Schema(#[from] parser::SchemaError),
    /// A listener cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: io::Error,
    },
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
    /// What `GET /metrics` reports.
    pub metrics: Metrics,
}

impl Shared {
    /// Delivers an accepted request's encoded message (`payload`, from the message parser) to
    /// every local connection whose tags contain all of `tags`. Every source of requests
    /// (WebSocket, HTTP, other nodes) ends here; the frame is built once for all recipients.
    pub fn route(&self, tags: &Tags, payload: &str) -> Delivery {
        let delivery = self.hub.route(tags, &frame::text_frame(payload));
        self.metrics.routed(delivery.delivered, delivery.overflowed);
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
    ) -> Result<Delivery, CloseReason> {
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
        Ok(self.route(&request.tags, &payload))
    }

    /// Re-reads what can change without a restart (SIGHUP, `systemctl reload`).
    pub fn reload(&self) {
        info!("reload requested");
    }
}

/// The bound listening sockets.
pub struct Listeners {
    /// The plain ws listener, unless `server.plain = false`.
    pub plain: Option<TcpListener>,
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
        let admin = match config.http.admin_address.parse::<SocketAddr>() {
            Ok(address) => Some(bind(address).await?),
            Err(_) => None, // "": served on the main listeners (validated by the config)
        };
        Ok(Listeners { plain, admin })
    }

    /// The plain ws listener's address.
    pub fn plain_address(&self) -> Option<SocketAddr> {
        self.plain
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The admin listener's address.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }
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
}

impl Server {
    /// Prepares a server: loads the message parser and the auth file the config names.
    pub fn new(config: Config) -> Result<Server, StartError> {
        let parser = parser::from_config(&config.messages)?;
        Ok(Server::with_parser(config, parser))
    }

    /// Prepares a server that checks messages with a parser of the caller's own.
    pub fn with_parser(config: Config, parser: Arc<dyn MessageParser>) -> Server {
        let shared = Shared {
            connection_slots: Arc::new(Semaphore::new(config.limits.max_connections)),
            hub: Arc::new(Hub::new()),
            auth: Auth::open_to_all(),
            parser,
            shutdown: CancellationToken::new(),
            metrics: Metrics::new(!config.cluster.redis.is_empty()),
            config,
        };
        Server {
            shared: Arc::new(shared),
            tracker: TaskTracker::new(),
        }
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
                move |stream, address| serve_tcp(shared.clone(), stream, address, Listener::Ws),
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
        self.shared.shutdown.cancelled().await;
        info!(connections = self.shared.hub.len(), "shutting down");
        self.shared.hub.close_all(&CloseReason::new(
            close_code::GOING_AWAY,
            "server shutting down",
        ));
        self.tracker.close();
        let grace = Duration::from_millis(self.shared.config.limits.shutdown_grace_ms);
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
    Instant::now() + Duration::from_millis(config.limits.handshake_timeout_ms)
}

async fn serve_tcp(shared: Arc<Shared>, stream: TcpStream, address: SocketAddr, kind: Listener) {
    let _ = stream.set_nodelay(true);
    let deadline = handshake_deadline(&shared.config);
    connection::serve(shared, stream, address, kind, deadline).await;
}
