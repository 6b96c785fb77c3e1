//! tagcast: a WebSocket server that routes each message to the clients whose tags match it,
//! compatible with the Gomoob WebSocket server's protocol.
//!
//! # Layout
//! - [`tags`]: tags and the tag index — the matching rule everything else relies on.
//! - [`request`]: a client's request (`message`, `tags`, `metadata`) parsed from JSON.
//! - [`parser`]: the [`MessageParser`](parser::MessageParser) trait and the built-in parsers.
//! - [`frame`]: RFC 6455 frames: server frames built once, client frames reassembled.
//! - [`outbox`]: one client's bounded queue of frames to write.
//! - [`hub`]: every open connection, and routing a request to the matching ones.
//! - [`handshake`]: the HTTP request head: upgrade, rejection, responses.
//! - [`connection`]: one client's task: handshake, reader, writer.
//! - [`server`]: listeners, accept loops, connection cap, shutdown.
//! - [`config`]: `tagcast.toml`, validated.
//! - [`auth`]: who may open and send.
//! - [`http`]: plain HTTP requests on the WebSocket listeners.
//! - [`bench`]: `tagcast bench`, the load tool for any server speaking this protocol.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod tags;

#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod bench;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod connection;
#[cfg(feature = "server")]
pub mod frame;
#[cfg(feature = "server")]
pub mod handshake;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod hub;
#[cfg(feature = "server")]
pub mod outbox;
#[cfg(feature = "server")]
pub mod parser;
#[cfg(feature = "server")]
pub mod request;
#[cfg(feature = "server")]
pub mod server;
