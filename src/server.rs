//! The server: listeners, accept loops, the connection cap and shutdown.
//!
//! The caller binds ([`Listeners::bind`]) and hands the sockets over, so tests bind port 0 and
//! read the address back. [`Server::run`] accepts until the shutdown token is cancelled, then
//! sends close 1001 to every client and waits up to `limits.shutdown_grace_ms` for them.

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
use crate::connection;
use crate::frame::{self, CloseReason, close_code};
use crate::hub::{Delivery, Hub, Listener};
use crate::parser::{self, MessageParser};
use crate::tags::Tags;

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

/// What a reload could not apply; everything it names stays as it was.
#[derive(Debug, thiserror::Error)]
#[error("{}", .failures.join("; "))]
pub struct ReloadError {
    /// One message per failure, each naming its file.
    pub failures: Vec<String>,
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
}

impl Shared {
    /// Delivers an accepted request's encoded message (`payload`, from the message parser) to
    /// every local connection whose tags contain all of `tags`. Every source of requests
    /// (WebSocket, HTTP, other nodes) ends here; the frame is built once for all recipients.
    pub fn route(&self, tags: &Tags, payload: &str) -> Delivery {
        self.hub.route(tags, &frame::text_frame(payload))
    }

    /// Re-reads what can change without a restart (SIGHUP, `systemctl reload`). What fails to
    /// reload stays as it was; the error names each failure.
    ///
    /// `tagcast.toml` itself is re-read only to check it: a broken file is a failed reload (so
    /// the admin learns of it before the next restart), a changed one is logged with a hint
    /// that its changes apply at the next restart.
    pub fn reload(&self) -> Result<(), ReloadError> {
        info!("reload requested");
        let mut failures = Vec::new();
        if let Some(path) = &self.config.source {
            match Config::load(path) {
                Ok(config) if config != self.config => warn!(
                    "{} changed; its changes apply at the next restart",
                    path.display()
                ),
                Ok(_) => {}
                Err(error) => failures.push(error.to_string()),
            }
        }
        match failures.is_empty() {
            true => Ok(()),
            false => Err(ReloadError { failures }),
        }
    }
}

/// The bound listening sockets.
pub struct Listeners {
    /// The plain ws listener, unless `server.plain = false`.
    pub plain: Option<TcpListener>,
}

impl Listeners {
    /// Binds the listeners the config asks for.
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        let plain = match config.server.plain {
            true => Some(bind(config.plain_address()).await?),
            false => None,
        };
        Ok(Listeners { plain })
    }

    /// The plain ws listener's address.
    pub fn plain_address(&self) -> Option<SocketAddr> {
        self.plain
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
            self.tracker.spawn(accept_loop(
                self.shared.clone(),
                self.tracker.clone(),
                listener,
                Listener::Ws,
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

/// Accepts connections until shutdown; each one is served in its own task.
async fn accept_loop(
    shared: Arc<Shared>,
    tracker: TaskTracker,
    listener: TcpListener,
    kind: Listener,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shared.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, address)) => {
                let deadline = Instant::now()
                    + Duration::from_millis(shared.config.limits.handshake_timeout_ms);
                tracker.spawn(serve_tcp(shared.clone(), stream, address, kind, deadline));
            }
            Err(error) => {
                // Out of file descriptors and the like: never end the server for it.
                warn!(%error, "accept failed; retrying in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shared.shutdown.cancelled() => return,
                }
            }
        }
    }
}

async fn serve_tcp(
    shared: Arc<Shared>,
    stream: TcpStream,
    address: SocketAddr,
    kind: Listener,
    deadline: Instant,
) {
    let _ = stream.set_nodelay(true);
    connection::serve(shared, stream, address, kind, deadline).await;
}
