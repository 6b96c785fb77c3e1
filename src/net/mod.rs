//! The network edges: sockets in, frames and HTTP answers out.
//!
//! - [`server`]: listeners, accept loops, connection cap, shutdown.
//! - [`connection`]: one client's task: handshake, reader, writer.
//! - [`http`]: plain HTTP requests: `POST /publish`, `GET /healthz`, `GET /metrics`.
//! - [`tls`]: the wss certificate: rustls config from PEM files, swapped on reload.

pub mod connection;
pub mod http;
pub mod server;
pub mod tls;
