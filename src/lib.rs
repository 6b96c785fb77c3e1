//! tagcast: a WebSocket server that routes each message to the clients whose tags match it,
//! compatible with the Gomoob WebSocket server's protocol — and the Rust client library that sends
//! to it.
//!
//! # The client library
//! The Rust client that backends use is its own crate, `tagcast-client` (client/): it brings none
//! of the daemon's dependencies. This crate re-exports it as [`client`] (with [`mock`], [`tags`],
//! [`token`] and [`strict`], which the server shares) for `tagcast send`, `listen` and the tests.
//!
//! # Layout
//! The folders follow a message's path, from the socket it arrives on to the sockets it leaves by:
//! - [`net`]: the edges — listeners, one task per connection and its reader and writer, HTTP
//!   endpoints, TLS. They call down into the router; nothing below them calls back up.
//! - [`wire`]: the formats read and written there — the upgrade head, RFC 6455 frames, the
//!   Gomoob request and the message parsers. Pure: no IO.
//! - [`tags`]: tags and the tag index — the matching rule everything else relies on (shared with
//!   the client library).
//! - [`routing`]: the request path — the router ([`routing::router`]: parse, authorize, encode
//!   once, match, enqueue, share), the hub, each client's outbox and the history.
//! - [`cluster`]: several nodes sharing one Redis: publishing and receiving accepted requests.
//! - [`ops`]: running the daemon — config, the auth file and its watcher, systemd, logging,
//!   metrics.
//! - [`token`]: signed tags' tokens (JWT): verified at open, made by `tagcast token` and clients
//!   (shared with the client library).
//! - [`client`]: the Rust client library (the `tagcast-client` crate): requests,
//!   [`RequestSender`](client::RequestSender), `WebSocketClient`, `Listener`.
//! - [`mock`]: `WebSocketClientMock` for users' unit tests.
//! - [`strict`]: JSON and TOML read without serde's leniencies (no struct from an array, no
//!   repeated key).
//!
//! The load tool, `tagcast bench`, is a binary of its own (`src/bin/tagcast-bench/`), built on
//! [`wire::frame`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use tagcast_client as client;
pub use tagcast_client::{mock, strict, tags, token};

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod net;
pub mod ops;
pub mod routing;
pub mod wire;
