//! Plain HTTP requests (a request without `Upgrade: websocket`), SPEC §8.
//!
//! - `POST /publish` on the ws/wss listeners: the body is a request as a WebSocket client sends
//!   it, judged by the same code ([`Router::handle_request`]); credentials come from its
//!   `metadata` or from `Authorization: Bearer KEY:SECRET`. It answers `{"delivered": N}`, or a
//!   4xx status with `{"error": "..."}`.
//! - `GET /healthz` (200, or 503 once shutdown began) and `GET /metrics` (Prometheus text), on
//!   the admin listener (`http.admin_address`), or on the main listeners when that is empty.
//!
//! A `GET` of any other path on the ws/wss listeners answers 426 (every path is a WebSocket
//! endpoint); anything else answers 404. Every answer closes the connection. The body is read only up to `messages.max_size` bytes and
//! only until the handshake deadline; after answering, the server reads and discards what the
//! client still sends for a moment (a lingering close), so that a client whose body was refused
//! reads the answer instead of a connection reset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::net::head::{handshake_deadline, read_head};
use crate::net::shared::Shared;
use crate::ops::config::Config;
use crate::ops::metrics::{self, Rejected, Source};
use crate::routing::outbox::Wakeups;
use crate::routing::router::Router;
use crate::wire::frame::close_code;
use crate::wire::handshake::{self, Head};
use crate::wire::request::Credentials;

/// Longest time spent writing an answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long, and how many bytes, the lingering close reads and discards.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// `POST /publish`.
    pub publish: bool,
    /// `GET /healthz` and `GET /metrics`.
    pub admin: bool,
    /// Every other path is a WebSocket endpoint: a `GET` without `Upgrade` answers 426.
    pub websocket: bool,
}

impl Endpoints {
    /// The admin listener's: health and metrics only.
    pub const ADMIN: Endpoints = Endpoints {
        publish: false,
        admin: true,
        websocket: false,
    };

    /// The ws/wss listeners': publish unless `http.publish = false`; health and metrics when
    /// `http.admin_address` is empty.
    pub fn main(config: &Config) -> Endpoints {
        Endpoints {
            publish: config.http.publish,
            admin: config.http.admin_address.is_none(),
            websocket: true,
        }
    }
}

/// Serves one connection of the admin listener.
pub async fn serve_admin(shared: Arc<Shared>, mut stream: TcpStream, address: SocketAddr) {
    let deadline = handshake_deadline(&shared.config);
    let mut buffer = BytesMut::with_capacity(1024);
    let head = tokio::select! {
        head = read_head(&mut stream, &mut buffer) => head,
        _ = tokio::time::sleep_until(deadline) => return,
    };
    match head {
        Ok(Some(head)) => {
            respond(
                &shared,
                &head,
                &mut stream,
                address,
                buffer,
                Endpoints::ADMIN,
                deadline,
            )
            .await
        }
        Ok(None) => {}
        Err(rejection) => {
            info!(peer = %address, status = rejection.status, reason = %rejection.reason, "bad request head refused");
            let _ = stream.write_all(&rejection.to_response()).await;
        }
    }
}

/// Answers the plain HTTP request `head` from `address` (whose body starts in `buffer`), then
/// closes. A refusal (4xx) is logged as a notice, as a refused WebSocket request is.
pub async fn respond<S>(
    shared: &Shared,
    head: &Head,
    stream: &mut S,
    address: SocketAddr,
    mut buffer: BytesMut,
    endpoints: Endpoints,
    deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reply = tokio::select! {
        reply = answer(shared, head, stream, &mut buffer, endpoints) => reply,
        _ = tokio::time::sleep_until(deadline) => {
            Reply::error(408, "the request body did not arrive in time")
        }
    };
    match reply.status {
        400..500 => {
            info!(peer = %address, method = %head.method, path = %head.path, status = reply.status,
                reason = %reply.body.trim(), "http request refused with {}", reply.status)
        }
        _ => {
            debug!(peer = %address, method = %head.method, path = %head.path, status = reply.status, "http request")
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&reply.to_bytes())).await;
    let _ = tokio::time::timeout(LINGER, linger(stream)).await;
}

/// Shuts the sending side and discards what the client still sends, up to [`LINGER_BYTES`].
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(read) => discarded += read,
        }
    }
}

/// An HTTP answer.
struct Reply {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
}

impl Reply {
    fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: format!("{body}\n"),
        }
    }

    /// `{"error": message}`.
    fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, serde_json::json!({ "error": message.into() }))
    }

    fn text(status: u16, content_type: &'static str, body: String) -> Reply {
        Reply {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    fn with_header(mut self, name: &'static str, value: &'static str) -> Reply {
        self.headers.push((name, value));
        self
    }

    fn to_bytes(&self) -> Vec<u8> {
        handshake::response(
            self.status,
            self.content_type,
            &self.headers,
            self.body.as_bytes(),
        )
    }
}

/// Only `allowed` is served at this path.
fn method_not_allowed(head: &Head, allowed: &'static str) -> Reply {
    Reply::error(405, format!("{} {}: use {allowed}", head.method, head.path))
        .with_header("Allow", allowed)
}

async fn answer<S>(
    shared: &Shared,
    head: &Head,
    stream: &mut S,
    buffer: &mut BytesMut,
    endpoints: Endpoints,
) -> Reply
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match head.path.as_str() {
        "/publish" if endpoints.publish => match head.method.as_str() {
            "POST" => {
                let max_size = shared.config.messages.max_size;
                publish(&shared.router, max_size.get(), head, stream, buffer).await
            }
            _ => method_not_allowed(head, "POST"),
        },
        "/healthz" if endpoints.admin => match head.method.as_str() {
            "GET" if shared.shutdown.is_cancelled() => {
                Reply::text(503, "text/plain; charset=utf-8", "shutting down\n".into())
            }
            "GET" => Reply::text(200, "text/plain; charset=utf-8", "ok\n".into()),
            _ => method_not_allowed(head, "GET"),
        },
        "/metrics" if endpoints.admin => match head.method.as_str() {
            "GET" => Reply::text(200, metrics::CONTENT_TYPE, shared.router.metrics().encode()),
            _ => method_not_allowed(head, "GET"),
        },
        path if endpoints.websocket && head.method == "GET" => Reply::text(
            426,
            "text/plain; charset=utf-8",
            format!(
                "{path} is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)\n"
            ),
        ),
        path => Reply::error(404, format!("no such endpoint: {} {path}", head.method)),
    }
}

/// `POST /publish`: reads the body (up to `max_size` bytes) and hands it to
/// [`Router::handle_request_waiting`].
async fn publish<S>(
    router: &Router,
    max_size: usize,
    head: &Head,
    stream: &mut S,
    buffer: &mut BytesMut,
) -> Reply
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Refused before `handle_request`, which counts the requests it sees.
    let refuse = |reason: Rejected, status: u16, message: String| {
        router.metrics().request(Source::Http);
        router.metrics().rejected(reason);
        Reply::error(status, message)
    };
    let length = match content_length(head) {
        Ok(length) => length,
        Err((status, message)) => return refuse(Rejected::Invalid, status, message.into()),
    };
    if length > max_size {
        return refuse(
            Rejected::TooLarge,
            413,
            format!("the request is larger than {max_size} bytes (messages.max_size)"),
        );
    }
    if head
        .header("expect")
        .is_some_and(|expect| expect.eq_ignore_ascii_case("100-continue"))
    {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    }
    while buffer.len() < length {
        match stream.read_buf(buffer).await {
            Ok(0) | Err(_) => {
                return refuse(
                    Rejected::Invalid,
                    400,
                    "the body is shorter than Content-Length".into(),
                );
            }
            Ok(_) => {}
        }
    }
    let Ok(text) = std::str::from_utf8(&buffer[..length]) else {
        return refuse(Rejected::Invalid, 400, "the body is not UTF-8".into());
    };
    let credentials = match bearer(head) {
        Ok(credentials) => credentials,
        Err(message) => {
            return refuse(Rejected::Unauthorized, 401, message.into())
                .with_header("WWW-Authenticate", "Bearer");
        }
    };
    // One request: its recipients' sockets may be written to at once.
    let mut wakeups = Wakeups::default();
    wakeups.set_write_through(true);
    let handled = router
        .handle_request_waiting(text, Source::Http, credentials.as_ref(), &mut wakeups)
        .await;
    match handled {
        Ok(delivery) => Reply::json(
            200,
            match delivery.id {
                Some(id) => {
                    serde_json::json!({ "delivered": delivery.delivered, "id": id.to_string() })
                }
                None => serde_json::json!({ "delivered": delivery.delivered }),
            },
        ),
        Err(reason) if reason.code == close_code::UNAUTHORIZED => {
            Reply::error(401, reason.reason).with_header("WWW-Authenticate", "Bearer")
        }
        Err(reason) if reason.code == close_code::INTERNAL_ERROR => {
            Reply::error(504, reason.reason)
        }
        Err(reason) => Reply::error(400, reason.reason),
    }
}

/// The body's length from `Content-Length`, or the status and reason to refuse it with.
fn content_length(head: &Head) -> Result<usize, (u16, &'static str)> {
    if head.header("transfer-encoding").is_some() {
        return Err((411, "chunked bodies are not accepted: send Content-Length"));
    }
    let mut values = head
        .headers
        .iter()
        .filter(|(name, _)| name == "content-length")
        .map(|(_, value)| value);
    match (values.next(), values.next()) {
        (None, _) => Err((411, "Content-Length is required")),
        (Some(value), None) => value
            .parse()
            .map_err(|_| (400, "Content-Length is not a number")),
        (Some(_), Some(_)) => Err((400, "more than one Content-Length")),
    }
}

/// The credentials of an `Authorization: Bearer KEY:SECRET` header, if there is one.
fn bearer(head: &Head) -> Result<Option<Credentials>, &'static str> {
    let Some(value) = head.header("authorization") else {
        return Ok(None);
    };
    let malformed = "Authorization must be `Bearer KEY:SECRET`";
    let (scheme, token) = value.split_once(' ').ok_or(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed);
    }
    let (key, secret) = token.trim().split_once(':').ok_or(malformed)?;
    if key.is_empty() {
        return Err(malformed);
    }
    Ok(Some(Credentials {
        key: Some(key.to_owned()),
        secret: Some(secret.to_owned()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &str) -> Head {
        let text = format!("POST /publish HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        handshake::parse_head(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn bearer_credentials() {
        assert_eq!(bearer(&head("")), Ok(None));
        let credentials = bearer(&head("Authorization: Bearer app1:s3:cr:et\r\n"))
            .unwrap()
            .unwrap();
        assert_eq!(credentials.key.as_deref(), Some("app1"));
        assert_eq!(credentials.secret.as_deref(), Some("s3:cr:et"));
        assert!(bearer(&head("Authorization: bearer k:\r\n")).is_ok());
        for bad in [
            "Basic a2V5OnNlY3JldA==",
            "Bearer nocolon",
            "Bearer :secret",
            "Bearer",
        ] {
            assert!(
                bearer(&head(&format!("Authorization: {bad}\r\n"))).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn content_lengths() {
        assert_eq!(content_length(&head("Content-Length: 12\r\n")), Ok(12));
        assert_eq!(content_length(&head("")).unwrap_err().0, 411);
        assert_eq!(
            content_length(&head("Transfer-Encoding: chunked\r\n"))
                .unwrap_err()
                .0,
            411
        );
        assert_eq!(
            content_length(&head("Content-Length: -1\r\n"))
                .unwrap_err()
                .0,
            400
        );
        assert_eq!(
            content_length(&head("Content-Length: 1\r\nContent-Length: 1\r\n"))
                .unwrap_err()
                .0,
            400
        );
    }
}
