//! What travels on the wire, as pure formats: nothing here does IO or waits.
//!
//! - [`handshake`]: the HTTP request head: upgrade, rejection, responses.
//! - [`deflate`]: permessage-deflate, each message compressed once for all its recipients.
//! - [`frame`]: RFC 6455 frames: server frames built once, client frames reassembled.
//! - [`request`]: a client's request (`message`, `tags`, `metadata`) parsed from JSON.
//! - [`parser`]: the [`MessageParser`](parser::MessageParser) trait and the built-in parsers.

//!
//! [`deflate`] and [`frame`] serve the client library too (feature `client`).

pub mod deflate;
pub mod frame;
#[cfg(feature = "server")]
pub mod handshake;
#[cfg(feature = "server")]
pub mod parser;
#[cfg(feature = "server")]
pub mod request;
