//! tagcast-client: the Rust client library of tagcast, a WebSocket server that routes each
//! message to the clients whose tags match it (and of the Gomoob WebSocket server it replaces).
//! Build requests and send them, receive messages, make signed tags' tokens — without the
//! daemon's dependencies: a backend that adds this crate needs no feature to choose.
//!
//! What the Gomoob PHP library gives PHP backends, for Rust backends:
//! - [`WebSocketRequest`]: a message (any [`serde::Serialize`]), the tags saying who gets it, and
//!   metadata (the application `key` and `secret` when the server checks them).
//! - [`RequestSender`]: what sends a request. [`WebSocketClient`] sends it to a server;
//!   [`WebSocketClientMock`](crate::mock::WebSocketClientMock) records it for tests. Write your
//!   code against the trait and test it with the mock.
//! - [`Listener`]: a connection opened with tags that receives the messages addressed to them.
//! - [`ResumingListener`]: the same for a server with a history (`[history]`): it reconnects by
//!   itself and resumes after the last message, yielding [`Event::Gap`] where some may be missing.
//!
//! Default tags and default metadata set on a sender are merged into every request it sends; a
//! request's own values win over the defaults. A request whose message is JSON `null` (or cannot
//! be encoded) is refused locally with [`ClientError::NoMessage`] (or [`ClientError::Message`])
//! before anything goes on the wire.
//!
//! # Sending from a Rust backend, and testing it
//! Write the code that sends against [`RequestSender`]; give it a [`WebSocketClient`] in
//! production and a [`WebSocketClientMock`](mock::WebSocketClientMock) in its tests:
//!
//! ```
//! use serde::Serialize;
//! use tagcast_client::{ClientError, RequestSender, WebSocketClient, WebSocketRequest};
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
//!     use tagcast_client::mock::WebSocketClientMock;
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
//! # Layout
//! The crate root holds the requests and the network client; beside them:
//! - [`mock`]: `WebSocketClientMock` for users' unit tests.
//! - [`tags`]: tags and the tag index — the matching rule, shared with the server (which
//!   re-exports this module as `tagcast::tags`).
//! - [`token`]: signed tags' tokens (JWT): made here and by `tagcast token`, verified by the
//!   server at open.
//! - [`strict`]: JSON and TOML read without serde's leniencies (no struct from an array, no
//!   repeated key), shared with the server's config.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod mock;
pub mod strict;
pub mod tags;
pub mod token;
pub mod wire;

use std::fmt;
use std::future::Future;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::tags::Tags;

mod deflate_socket;
mod websocket;

pub use websocket::{
    Endpoint, Event, Listener, ResumingListener, ServerClose, WebSocketClient, connect_with_tags,
};

/// One request: a message, the tags of the connections it is for, and metadata.
///
/// ```
/// use tagcast_client::WebSocketRequest;
/// let request = WebSocketRequest::create("Bonjour !")
///     .tags([("language", "FR")])
///     .metadata([("key", "application1"), ("secret", "B4ajW3P7")]);
/// assert_eq!(
///     request.to_json().unwrap(),
///     r#"{"message":"Bonjour !","tags":{"language":"FR"},"metadata":{"key":"application1","secret":"B4ajW3P7"}}"#
/// );
/// ```
#[derive(Clone, PartialEq)]
pub struct WebSocketRequest {
    /// The message as JSON, or why it could not be encoded (reported when the request is sent,
    /// so that building a request stays infallible).
    message: Result<Value, String>,
    tags: Tags,
    metadata: Map<String, Value>,
}

impl WebSocketRequest {
    /// A request carrying `message`: a string, a number, or any type of yours that implements
    /// [`serde::Serialize`]. No tags (it goes to every connection) and no metadata.
    pub fn create(message: impl Serialize) -> WebSocketRequest {
        WebSocketRequest {
            message: serde_json::to_value(message).map_err(|error| error.to_string()),
            tags: Tags::default(),
            metadata: Map::new(),
        }
    }

    /// Sets the tags: only the connections that have all of them receive the message. Values are
    /// strings; the server compares `"42"` and `42` as equal.
    pub fn tags<N: Into<String>, V: Into<String>>(
        mut self,
        tags: impl IntoIterator<Item = (N, V)>,
    ) -> WebSocketRequest {
        self.tags = tags.into_iter().collect();
        self
    }

    /// Sets the metadata, e.g. `[("key", "application1"), ("secret", "...")]`. The server reads
    /// it and never forwards it.
    pub fn metadata<K: Into<String>, V: Into<Value>>(
        mut self,
        metadata: impl IntoIterator<Item = (K, V)>,
    ) -> WebSocketRequest {
        self.metadata = metadata
            .into_iter()
            .map(|(key, value)| (key.into(), value.into()))
            .collect();
        self
    }

    /// The message as JSON; `None` when it is `null` or could not be encoded.
    pub fn get_message(&self) -> Option<&Value> {
        self.message
            .as_ref()
            .ok()
            .filter(|message| !message.is_null())
    }

    /// The tags.
    pub fn get_tags(&self) -> &Tags {
        &self.tags
    }

    /// The metadata.
    pub fn get_metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// The request as the server reads it: `{"message":...,"tags":{...},"metadata":{...}}` (all
    /// three keys, as the Gomoob PHP client writes them).
    pub fn to_json(&self) -> Result<String, ClientError> {
        #[derive(Serialize)]
        struct Wire<'a> {
            message: &'a Value,
            tags: &'a Tags,
            metadata: &'a Map<String, Value>,
        }
        let wire = Wire {
            message: self.checked_message()?,
            tags: &self.tags,
            metadata: &self.metadata,
        };
        serde_json::to_string(&wire).map_err(|error| ClientError::Message(error.to_string()))
    }

    /// The message, or why the server would refuse this request for want of one.
    fn checked_message(&self) -> Result<&Value, ClientError> {
        match &self.message {
            Err(error) => Err(ClientError::Message(error.clone())),
            Ok(Value::Null) => Err(ClientError::NoMessage),
            Ok(message) => Ok(message),
        }
    }
}

/// Default tags and metadata that a sender merges into every request it sends.
#[derive(Clone, Default)]
pub(crate) struct Defaults {
    tags: Tags,
    metadata: Map<String, Value>,
}

impl Defaults {
    /// Replaces the default tags.
    pub(crate) fn set_tags<N: Into<String>, V: Into<String>>(
        &mut self,
        tags: impl IntoIterator<Item = (N, V)>,
    ) {
        self.tags = tags.into_iter().collect();
    }

    /// Replaces the default metadata.
    pub(crate) fn set_metadata<K: Into<String>, V: Into<Value>>(
        &mut self,
        metadata: impl IntoIterator<Item = (K, V)>,
    ) {
        self.metadata = metadata
            .into_iter()
            .map(|(key, value)| (key.into(), value.into()))
            .collect();
    }

    /// `request` with the defaults merged in (the request's own tags and metadata win), checked
    /// as the server would check its message.
    pub(crate) fn apply(
        &self,
        request: &WebSocketRequest,
    ) -> Result<WebSocketRequest, ClientError> {
        request.checked_message()?;
        // `Tags` keeps the last value of a repeated name: the request's come last.
        let tags = self.tags.iter().chain(request.tags.iter()).collect();
        let mut metadata = self.metadata.clone();
        metadata.extend(request.metadata.clone());
        Ok(WebSocketRequest {
            message: request.message.clone(),
            tags,
            metadata,
        })
    }
}

/// Never prints the metadata's `secret`.
impl fmt::Debug for WebSocketRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketRequest")
            .field("message", &self.message)
            .field("tags", &self.tags)
            .field("metadata", &HiddenSecret(&self.metadata))
            .finish()
    }
}

/// Never prints the metadata's `secret`.
impl fmt::Debug for Defaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Defaults")
            .field("tags", &self.tags)
            .field("metadata", &HiddenSecret(&self.metadata))
            .finish()
    }
}

/// Metadata for `Debug` output (logs, test failures): the value of `secret` is not shown.
struct HiddenSecret<'a>(&'a Map<String, Value>);

impl fmt::Debug for HiddenSecret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(key, value)| {
                let value: &dyn fmt::Debug = if key == "secret" { &"<hidden>" } else { value };
                (key, value)
            }))
            .finish()
    }
}

/// Something that sends requests: the real [`WebSocketClient`] or the
/// [`WebSocketClientMock`](crate::mock::WebSocketClientMock). Write code that sends against this
/// trait, and its tests can use the mock.
pub trait RequestSender {
    /// Sends one request, with the sender's default tags and metadata merged in. Refused with
    /// [`ClientError::NoMessage`] when the request has no message.
    fn send(
        &mut self,
        request: &WebSocketRequest,
    ) -> impl Future<Output = Result<(), ClientError>> + Send;
}

/// Why a request could not be sent or a connection could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request's message is `null` (or missing); the server would refuse it.
    #[error("the request has no message")]
    NoMessage,
    /// The request's message could not be encoded as JSON.
    #[error("the request's message cannot be encoded as JSON: {0}")]
    Message(String),
    /// The URL is not a `ws://` or `wss://` URL.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS setup failed: the PEM given to trust a certificate authority holds no usable
    /// certificate.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The server could not be reached, or refused the WebSocket handshake. The message says
    /// why in one line (the OS error, the certificate problem, or the HTTP status and the
    /// server's reason); `error` is not also given as the [`source`](std::error::Error::source),
    /// so that printing the chain does not say it twice.
    #[error("cannot connect to {url}: {}", websocket::describe(error))]
    Unreachable {
        /// The URL connected to, without its query (which may hold a secret).
        url: String,
        /// What failed: DNS, TCP, TLS, or the HTTP answer to the upgrade.
        error: tokio_tungstenite::tungstenite::Error,
    },
    /// The connection broke while writing or reading; the next send reconnects.
    #[error("the connection to the server broke: {}", websocket::describe(.0))]
    Connection(tokio_tungstenite::tungstenite::Error),
    /// The server closed the connection with an error code (e.g. 4400 invalid request, 4401 send
    /// not authorized).
    #[error("the server closed the connection: {0}")]
    Closed(ServerClose),
    /// A received message does not have the type asked for.
    #[error("cannot decode a received message: {0}")]
    Decode(serde_json::Error),
    /// The server did not answer the closing handshake in time.
    #[error("the server did not answer the close within {0:?}")]
    CloseTimeout(std::time::Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_values_win_over_defaults() {
        let mut defaults = Defaults::default();
        defaults.set_tags([("language", "FR"), ("team", "ops")]);
        defaults.set_metadata([("key", "app1"), ("secret", "s1")]);
        let request = WebSocketRequest::create("x")
            .tags([("language", "EN")])
            .metadata([("secret", "s2")]);
        let merged = defaults.apply(&request).unwrap();
        assert_eq!(
            merged.to_json().unwrap(),
            r#"{"message":"x","tags":{"language":"EN","team":"ops"},"metadata":{"key":"app1","secret":"s2"}}"#
        );
    }

    #[test]
    fn a_request_without_a_message_is_refused() {
        let defaults = Defaults::default();
        let none: Option<String> = None;
        assert!(matches!(
            defaults.apply(&WebSocketRequest::create(none)),
            Err(ClientError::NoMessage)
        ));
        assert!(matches!(
            WebSocketRequest::create(()).to_json(),
            Err(ClientError::NoMessage)
        ));
    }

    #[test]
    fn a_message_that_cannot_be_json_is_refused() {
        // JSON object keys must be strings.
        let map: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let request = WebSocketRequest::create(map);
        assert_eq!(request.get_message(), None);
        assert!(matches!(request.to_json(), Err(ClientError::Message(_))));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let request =
            WebSocketRequest::create("x").metadata([("key", "app1"), ("secret", "s3cr3t")]);
        let mut defaults = Defaults::default();
        defaults.set_metadata([("secret", "s3cr3t")]);
        for shown in [format!("{request:?}"), format!("{defaults:?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("<hidden>"), "{shown}");
        }
        assert!(format!("{request:?}").contains("app1"));
    }

    #[test]
    fn user_types_are_messages() {
        #[derive(Serialize)]
        struct Shipped {
            order: u64,
        }
        let request = WebSocketRequest::create(Shipped { order: 42 });
        assert_eq!(
            request.to_json().unwrap(),
            r#"{"message":{"order":42},"tags":{},"metadata":{}}"#
        );
    }
}
