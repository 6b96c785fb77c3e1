//! tagcast: a WebSocket server that routes each message to the clients whose tags match it,
//! compatible with the Gomoob WebSocket server's protocol — and the Rust client library that sends
//! to it.
//!
//! # Sending from a Rust backend, and testing it
//! Write the code that sends against [`RequestSender`](client::RequestSender); give it a
//! [`WebSocketClient`](client::WebSocketClient) in production and a
//! [`WebSocketClientMock`](mock::WebSocketClientMock) in its tests:
//!
//! ```
//! use serde::Serialize;
//! use tagcast::client::{ClientError, RequestSender, WebSocketClient, WebSocketRequest};
//!
//! #[derive(Serialize)]
//! struct Shipped {
//!     order: u64,
//! }
//!
//! /// Tells the customer's open pages that the order shipped.
//! async fn order_shipped(
//!     sender: &mut impl RequestSender,
//!     customer: u64,
//!     order: u64,
//! ) -> Result<(), ClientError> {
//!     let request = WebSocketRequest::create(Shipped { order })
//!         .tags([("customer", customer.to_string())]);
//!     sender.send(&request).await
//! }
//!
//! /// In production: a real connection, with the application's credentials in every request.
//! async fn production() -> Result<(), ClientError> {
//!     let mut client = WebSocketClient::connect("ws://127.0.0.1:8080").await?;
//!     client.set_default_metadata([("key", "application1"), ("secret", "B4ajW3P7")]);
//!     order_shipped(&mut client, 7, 42).await
//! }
//!
//! /// Its unit test (`#[tokio::test]` in your crate): the mock records what would have been sent.
//! async fn order_shipped_tells_the_customer_only() {
//!     use tagcast::mock::WebSocketClientMock;
//!     let mut mock = WebSocketClientMock::new();
//!     order_shipped(&mut mock, 7, 42).await.unwrap();
//!     assert_eq!(mock.count(), 1);
//!     assert_eq!(mock.find_by_tags([("customer", "7")]).len(), 1);
//!     assert!(mock.find_by_tags([("customer", "8")]).is_empty());
//!     assert!(mock.contains(
//!         &WebSocketRequest::create(Shipped { order: 42 }).tags([("customer", "7")])
//!     ));
//! }
//! # let _ = production;
//! # tokio::runtime::Builder::new_current_thread().build().unwrap()
//! #     .block_on(order_shipped_tells_the_customer_only());
//! ```
//!
//! Build with `default-features = false, features = ["client", "mock"]` to get only the client
//! and the mock, without the daemon's dependencies.
//!
//! # Layout
//! The folders follow a message's path, from the socket it arrives on to the sockets it leaves by:
//! - [`net`]: the edges — listeners, one task per connection, HTTP endpoints, TLS.
//! - [`wire`]: the formats read and written there — the upgrade head, RFC 6455 frames, the
//!   Gomoob request and the message parsers. Pure: no IO.
//! - [`tags`]: tags and the tag index — the matching rule everything else relies on (shared with
//!   the client library).
//! - [`routing`]: an accepted request's way to every matching connection — the hub and each
//!   client's outbox.
//! - [`cluster`]: several nodes sharing one Redis: publishing and receiving accepted requests.
//! - [`ops`]: running the daemon — config, the auth file and its watcher, systemd, logging,
//!   metrics.
//! - [`token`]: signed tags' tokens (JWT): verified at open, made by `tagcast token` and clients
//!   (shared with the client library).
//! - [`client`]: the Rust client library: requests, [`RequestSender`](client::RequestSender),
//!   `WebSocketClient`, `Listener` (features `client`, `mock`).
//! - [`mock`]: `WebSocketClientMock` for users' unit tests (feature `mock`).
//! - [`strict`]: JSON and TOML read without serde's leniencies (no struct from an array, no
//!   repeated key).
//! - [`bench`]: `tagcast bench`, the load tool for any server speaking this protocol.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod strict;
pub mod tags;
#[cfg(any(feature = "server", feature = "client"))]
pub mod token;

#[cfg(any(feature = "client", feature = "mock"))]
pub mod client;
#[cfg(feature = "mock")]
pub mod mock;

#[cfg(feature = "server")]
pub mod bench;
#[cfg(feature = "server")]
pub mod cluster;
#[cfg(feature = "server")]
pub mod net;
#[cfg(feature = "server")]
pub mod ops;
#[cfg(feature = "server")]
pub mod routing;
#[cfg(any(feature = "server", feature = "client"))]
pub mod wire;
