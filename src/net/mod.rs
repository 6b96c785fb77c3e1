//! The network edges: sockets in, frames and HTTP answers out. They call down into the router
//! ([`crate::routing::router`]) with a request's text; nothing below them calls back up.
//!
//! - [`server`]: listeners, accept loops, connection cap, shutdown.
//! - [`shared`]: what every connection task shares (the router and a few pieces), and reloads.
//! - [`connection`]: one client's task: handshake, registration, the request path's WebSocket
//!   edge.
//! - [`websocket`]: an upgraded connection's reader and writer, over any `AsyncRead +
//!   AsyncWrite` stream.
//! - [`http`]: plain HTTP requests: `POST /publish`, `GET /healthz`, `GET /metrics`.
//! - [`head`]: the request head every connection starts with, and the handshake deadline.
//! - [`tls`]: the wss certificate: rustls config from PEM files, swapped on reload.

pub mod connection;
pub mod head;
pub mod http;
pub mod server;
pub mod shared;
pub mod tls;
pub mod websocket;
