//! What travels on the wire, as pure formats: nothing here does IO or waits.
//!
//! - [`handshake`]: the HTTP request head: upgrade, rejection, responses.
//! - [`deflate`]: permessage-deflate, each message compressed once for all its recipients.
//! - [`frame`]: RFC 6455 frames: server frames built once, client frames reassembled.
//! - [`request`]: a client's request (`message`, `tags`, `metadata`) parsed from JSON.
//! - [`parser`]: the [`MessageParser`](parser::MessageParser) trait and the built-in parsers.
//!
//! [`deflate`] and [`frame`] live in the client library's crate (`tagcast_client::wire`), which
//! reads the same frames; the server re-exports them here.

pub use tagcast_client::wire::{deflate, frame};
pub mod handshake;
pub mod parser;
pub mod request;
