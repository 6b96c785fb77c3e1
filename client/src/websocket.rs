//! The network side of the client: [`Endpoint`] (URL, trusted certificates, open credentials),
//! [`WebSocketClient`] that sends requests, and [`Listener`] that receives messages.
//!
//! A sending connection also receives what the server routes to it (an untagged connection gets
//! every untagged request): a reader task drains it, answers pings, and notices when the server
//! closes the connection, so that the next [`WebSocketClient::send`] reconnects.
//!
//! Every connection offers permessage-deflate and reads compressed messages when the server
//! accepts it, and sends long requests compressed (see [`super::deflate_socket`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{TlsError, UrlError};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::deflate_socket::{self, DeflateSocket};
use super::{ClientError, Defaults, RequestSender, WebSocketRequest};
use crate::tags::Tags;

/// How long connecting (TCP, TLS, WebSocket handshake) may take before the server counts as
/// unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`WebSocketClient::close`] waits for the server's answer to its close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

type Socket = WebSocketStream<DeflateSocket<MaybeTlsStream<TcpStream>>>;

/// Where to connect: a `ws://` or `wss://` URL, the certificate authorities trusted for `wss://`
/// (the webpki roots unless [`trust_ca_pem`](Endpoint::trust_ca_pem) says otherwise), and the
/// credentials to open with.
///
/// ```no_run
/// # async fn run() -> Result<(), tagcast_client::ClientError> {
/// use tagcast_client::Endpoint;
/// let ca = std::fs::read("/etc/tagcast/tls/ca.pem").unwrap_or_default();
/// let client = Endpoint::new("wss://tagcast.internal:8443")?
///     .trust_ca_pem(&ca)?
///     .credentials("application1", Some("B4ajW3P7"))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Endpoint {
    url: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Endpoint {
    /// Checks that `url` is a `ws://` or `wss://` URL; `wss://` trusts the webpki roots (the
    /// Mozilla list).
    pub fn new(url: &str) -> Result<Endpoint, ClientError> {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("ws" | "wss")) {
            return Err(ClientError::Url {
                url: url.to_owned(),
                reason: "it must start with ws:// or wss://".into(),
            });
        }
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Ok(Endpoint {
            url: url.to_owned(),
            tls: tls_config(roots)?,
        })
    }

    /// Trusts only the certificate authorities (or self-signed certificates) in `pem` for
    /// `wss://`, instead of the webpki roots: for a server with a private or self-signed
    /// certificate.
    pub fn trust_ca_pem(mut self, pem: &[u8]) -> Result<Endpoint, ClientError> {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|error| ClientError::Tls(error.to_string()))?;
            roots
                .add(certificate)
                .map_err(|error| ClientError::Tls(error.to_string()))?;
        }
        if roots.is_empty() {
            return Err(ClientError::Tls("the PEM holds no certificate".into()));
        }
        self.tls = tls_config(roots)?;
        Ok(self)
    }

    /// Uses `config` for `wss://` instead of the roots this endpoint trusts: e.g. one that
    /// presents a client certificate, or that `tagcast --insecure` builds to accept any
    /// certificate.
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Endpoint {
        self.tls = config;
        self
    }

    /// Opens connections with an application key and secret (URL parameters `key` and `secret`),
    /// for a server that does not let anyone open (`auth.authorize_open = false`); the key alone
    /// is enough for an application whose `authorizeOpen` is true. This is not the metadata a
    /// request is sent with: see [`WebSocketClient::set_default_metadata`].
    pub fn credentials(mut self, key: &str, secret: Option<&str>) -> Endpoint {
        self.url = with_query_param(&self.url, "key", key);
        if let Some(secret) = secret {
            self.url = with_query_param(&self.url, "secret", secret);
        }
        self
    }

    /// Opens connections with a signed tags' token (URL parameter `token`, SPEC §3 "Signed
    /// tags"), e.g. one made by [`crate::token::mint`]: the connection holds the token's tags
    /// besides its own, and the token opens when `auth.authorize_open` is false.
    pub fn token(mut self, token: &str) -> Endpoint {
        self.url = with_query_param(&self.url, "token", token);
        self
    }

    /// Connects a client that sends requests.
    pub async fn connect(&self) -> Result<WebSocketClient, ClientError> {
        let connection = Connection::open(self).await?;
        Ok(WebSocketClient {
            endpoint: self.clone(),
            defaults: Defaults::default(),
            connection: Some(connection),
        })
    }

    /// Connects with `tags` to receive the messages of the requests whose tags they all have.
    pub async fn connect_with_tags<N: Into<String>, V: Into<String>>(
        &self,
        tags: impl IntoIterator<Item = (N, V)>,
    ) -> Result<Listener, ClientError> {
        let tags: Tags = tags.into_iter().collect();
        let url = if tags.is_empty() {
            self.url.clone()
        } else {
            with_query_param(&self.url, "tags", &tags.to_string())
        };
        Ok(Listener {
            socket: open(&url, &self.tls).await?,
        })
    }
}

/// Shows the URL without its query, which may hold a secret.
impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (base, _) = self.url.split_once('?').unwrap_or((&self.url, ""));
        f.debug_struct("Endpoint").field("url", &base).finish()
    }
}

/// A client configuration trusting `roots`, with the aws-lc-rs provider named explicitly so that
/// another provider compiled into the program cannot make the choice ambiguous.
fn tls_config(roots: RootCertStore) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Tls(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `url` with the query parameter `name=value` appended, URL-encoded.
fn with_query_param(url: &str, name: &str, value: &str) -> String {
    let mut url = url.to_owned();
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(name);
    url.push('=');
    url.extend(form_urlencoded::byte_serialize(value.as_bytes()));
    url
}

/// Opens a WebSocket connection offering permessage-deflate, bounded by [`CONNECT_TIMEOUT`].
async fn open(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<Socket, ClientError> {
    let unreachable = |error| ClientError::Unreachable {
        url: url.split_once('?').map_or(url, |(base, _)| base).to_owned(),
        error,
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake(url, tls)).await {
        Ok(Ok(socket)) => Ok(socket),
        Ok(Err(error)) => Err(unreachable(error)),
        Err(_) => Err(unreachable(tungstenite::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection within {CONNECT_TIMEOUT:?}"),
        )))),
    }
}

/// Connects to `url` (TCP, then TLS for `wss://`) and completes the WebSocket handshake,
/// offering permessage-deflate.
async fn handshake(
    url: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Socket, tungstenite::Error> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Extensions",
        HeaderValue::from_static(deflate_socket::OFFER),
    );
    let uri = request.uri();
    let secure = uri.scheme_str() == Some("wss");
    let host = uri
        .host()
        .ok_or(tungstenite::Error::Url(UrlError::NoHostName))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    let stream = if secure {
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|_| tungstenite::Error::Tls(TlsError::InvalidDnsName))?;
        MaybeTlsStream::Rustls(TlsConnector::from(tls.clone()).connect(name, tcp).await?)
    } else {
        MaybeTlsStream::Plain(tcp)
    };
    let config = WebSocketConfig::default();
    let max_size = config.max_message_size.unwrap_or(usize::MAX);
    let socket = DeflateSocket::new(stream, max_size);
    let (socket, _response) =
        tokio_tungstenite::client_async_with_config(request, socket, Some(config)).await?;
    Ok(socket)
}

/// `error` in one line: the OS error, the certificate problem in words, or the HTTP status and
/// the server's plain-text reason for refusing the upgrade. tungstenite's own message repeats
/// its cause ("IO error: X" whose source is X) and shows rustls' errors as Rust values.
pub(super) fn describe(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Io(error) => describe_io(error),
        tungstenite::Error::Tls(tungstenite::error::TlsError::Rustls(error)) => describe_tls(error),
        tungstenite::Error::Http(response) => {
            let body = response.body().as_deref().unwrap_or_default();
            let reason = String::from_utf8_lossy(body);
            let status = response.status();
            match reason.trim() {
                "" => format!("the server refused the upgrade with HTTP {status}"),
                reason => format!("the server refused the upgrade with HTTP {status}: {reason}"),
            }
        }
        other => other.to_string(),
    }
}

/// An IO error, or the TLS error it carries (tokio-rustls reports a refused certificate so).
fn describe_io(error: &std::io::Error) -> String {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => describe_tls(tls),
        None => error.to_string(),
    }
}

/// A TLS error in words, the certificate problems first: they are what a newcomer meets.
fn describe_tls(error: &rustls::Error) -> String {
    use rustls::CertificateError as Problem;
    let rustls::Error::InvalidCertificate(problem) = error else {
        return format!("TLS: {error}");
    };
    let problem = match problem {
        Problem::UnknownIssuer => "is not signed by a certificate authority this client trusts",
        Problem::NotValidForName | Problem::NotValidForNameContext { .. } => {
            "is not valid for this host name"
        }
        Problem::Expired | Problem::ExpiredContext { .. } => "has expired",
        Problem::NotValidYet | Problem::NotValidYetContext { .. } => "is not valid yet",
        Problem::Revoked => "is revoked",
        Problem::BadSignature | Problem::BadEncoding => "is malformed or badly signed",
        Problem::Other(other)
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) =>
        {
            "is a CA certificate (basicConstraints CA:TRUE), not a server certificate"
        }
        other => return format!("the server's certificate is refused: {other:?}"),
    };
    format!("the server's certificate {problem}")
}

/// The close code and reason the server closed a connection with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerClose {
    /// The close code, e.g. 4400 (invalid request) or 4401 (send not authorized).
    pub code: u16,
    /// The server's reason, for people.
    pub reason: String,
}

impl ServerClose {
    fn from_frame(frame: &CloseFrame) -> ServerClose {
        ServerClose {
            code: frame.code.into(),
            reason: frame.reason.to_string(),
        }
    }

    /// True for a normal close (1000): nothing was refused.
    fn is_normal(&self) -> bool {
        self.code == u16::from(CloseCode::Normal)
    }
}

impl fmt::Display for ServerClose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

/// Sends requests to a tagcast server over one WebSocket connection, reconnecting when it broke.
///
/// [`send`](WebSocketClient::send) returns once the request is written: the protocol has no
/// acknowledgement. A request the server refuses makes it close the connection with a code
/// (4400 invalid, 4401 not authorized); that close is logged as a warning and the next send
/// reconnects. To know whether the server took what was sent, end with
/// [`close`](WebSocketClient::close): the server handles frames in order, so a refusal arrives
/// before the answer to the close.
#[derive(Debug)]
pub struct WebSocketClient {
    endpoint: Endpoint,
    defaults: Defaults,
    /// `None` after a failed write: the next send connects again.
    connection: Option<Connection>,
}

impl WebSocketClient {
    /// Connects to `url` (`ws://` or `wss://` with the webpki roots). For a private CA or open
    /// credentials, use [`Endpoint`].
    pub async fn connect(url: &str) -> Result<WebSocketClient, ClientError> {
        Endpoint::new(url)?.connect().await
    }

    /// Sets tags merged into every request sent; a request's own value for a name wins.
    pub fn set_default_tags<N: Into<String>, V: Into<String>>(
        &mut self,
        tags: impl IntoIterator<Item = (N, V)>,
    ) -> &mut WebSocketClient {
        self.defaults.set_tags(tags);
        self
    }

    /// Sets metadata merged into every request sent (typically the application's `key` and
    /// `secret`); a request's own value for a key wins.
    pub fn set_default_metadata<K: Into<String>, V: Into<Value>>(
        &mut self,
        metadata: impl IntoIterator<Item = (K, V)>,
    ) -> &mut WebSocketClient {
        self.defaults.set_metadata(metadata);
        self
    }

    /// True while the current connection is open, as far as this client knows.
    pub fn is_connected(&self) -> bool {
        self.connection
            .as_ref()
            .is_some_and(|connection| !connection.reader.is_finished())
    }

    /// Sends `request` with the defaults merged in, and waits until it is written. Connects
    /// again first when the server had closed the connection; fails with
    /// [`ClientError::Unreachable`] when it cannot, with [`ClientError::NoMessage`] (nothing sent)
    /// when the request has no message.
    pub async fn send(&mut self, request: &WebSocketRequest) -> Result<(), ClientError> {
        let text = self.defaults.apply(request)?.to_json()?;
        let connection = match self.connection.take() {
            Some(connection) if !connection.reader.is_finished() => connection,
            ended => {
                if let Some(ended) = ended {
                    ended.log_end().await;
                }
                Connection::open(&self.endpoint).await?
            }
        };
        let connection = self.connection.insert(connection);
        if let Err(error) = connection.sink.send(Message::text(text)).await {
            self.connection = None;
            return Err(ClientError::Connection(error));
        }
        Ok(())
    }

    /// Closes the connection normally and waits for the server's answer: `Ok` when it answers
    /// with a normal close, [`ClientError::Closed`] with its code and reason when it had refused
    /// a request sent on this connection.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(());
        };
        // When the server has already closed, this fails and its close is what the reader holds.
        let _ = connection
            .sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        match tokio::time::timeout(CLOSE_TIMEOUT, &mut connection.reader).await {
            Err(_) => Err(ClientError::CloseTimeout(CLOSE_TIMEOUT)),
            Ok(Ok(Some(close))) if !close.is_normal() => Err(ClientError::Closed(close)),
            Ok(_) => Ok(()),
        }
    }
}

impl RequestSender for WebSocketClient {
    fn send(
        &mut self,
        request: &WebSocketRequest,
    ) -> impl Future<Output = Result<(), ClientError>> + Send {
        WebSocketClient::send(self, request)
    }
}

/// One open connection of a [`WebSocketClient`]: the write half, and the task reading the other.
#[derive(Debug)]
struct Connection {
    sink: SplitSink<Socket, Message>,
    /// Drains what the server sends; ends with the server's close, if it sent one.
    reader: JoinHandle<Option<ServerClose>>,
}

impl Connection {
    async fn open(endpoint: &Endpoint) -> Result<Connection, ClientError> {
        let (sink, stream) = open(&endpoint.url, &endpoint.tls).await?.split();
        Ok(Connection {
            sink,
            reader: tokio::spawn(read_until_closed(stream)),
        })
    }

    /// Logs how a connection the server ended, ended: a refusal is worth a warning.
    async fn log_end(mut self) {
        match (&mut self.reader).await {
            Ok(Some(close)) if !close.is_normal() => {
                tracing::warn!(code = close.code, reason = %close.reason, "the server closed the connection; reconnecting");
            }
            _ => tracing::debug!("the connection ended; reconnecting"),
        }
    }
}

/// Dropping the client drops the connection without a closing handshake.
impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Reads (and drops) every message until the connection ends; returns the server's close.
async fn read_until_closed(mut stream: SplitStream<Socket>) -> Option<ServerClose> {
    let mut close = None;
    while let Some(frame) = stream.next().await {
        match frame {
            // Keep reading: tungstenite answers the close, then the server ends the TCP stream.
            Ok(Message::Close(Some(frame))) => close = Some(ServerClose::from_frame(&frame)),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    close
}

/// A connection opened with tags, receiving the messages routed to them.
///
/// ```no_run
/// # async fn run() -> Result<(), tagcast_client::ClientError> {
/// let mut listener = tagcast_client::connect_with_tags("ws://127.0.0.1:8080", [("language", "FR")]).await?;
/// while let Some(message) = listener.next::<String>().await? {
///     println!("{message}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
}

impl Listener {
    /// True when the server agreed to permessage-deflate: its long messages come compressed.
    pub fn compressed(&self) -> bool {
        self.socket.get_ref().deflate()
    }

    /// The next message, decoded as `T` (`String` for the `string` parser, your own type for
    /// JSON messages, `Box<serde_json::value::RawValue>` for the text as is). `Ok(None)` when the
    /// server closed normally; [`ClientError::Closed`] when it closed with an error code.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ClientError> {
        while let Some(frame) = self.socket.next().await {
            match frame.map_err(ClientError::Connection)? {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str())
                        .map(Some)
                        .map_err(ClientError::Decode);
                }
                Message::Close(Some(frame)) => {
                    let close = ServerClose::from_frame(&frame);
                    if !close.is_normal() {
                        return Err(ClientError::Closed(close));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

/// Connects to `url` with `tags` (see [`Endpoint::connect_with_tags`]).
pub async fn connect_with_tags<N: Into<String>, V: Into<String>>(
    url: &str,
    tags: impl IntoIterator<Item = (N, V)>,
) -> Result<Listener, ClientError> {
    Endpoint::new(url)?.connect_with_tags(tags).await
}

/// What a [`ResumingListener`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<T> {
    /// A message, with the id the server gave it.
    Message {
        /// The message's id: where a reconnection resumes from.
        id: String,
        /// The message, decoded.
        message: T,
    },
    /// The server cannot vouch that nothing was missed before what follows (its history did
    /// not reach back far enough, it restarted, or it was cut off from its cluster): reload
    /// what the messages keep up to date by other means.
    Gap,
}

/// The first wait before reconnecting; it doubles after each failure, up to [`RESUME_BACKOFF_MAX`].
const RESUME_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between two reconnection attempts.
const RESUME_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A connection opened with tags and `since` (a server with `[history]` on) that reconnects
/// by itself, with a jittered backoff, and resumes after the last message it yielded: the
/// application sees every message once, in order, or an [`Event::Gap`] where some may be
/// missing.
///
/// ```no_run
/// # async fn run() -> Result<(), tagcast_client::ClientError> {
/// use tagcast_client::{Endpoint, Event};
/// let mut listener = Endpoint::new("ws://127.0.0.1:8080")?.resume_with_tags([("room", "a")], None);
/// loop {
///     match listener.next::<String>().await? {
///         Event::Message { id, message } => println!("{id}: {message}"),
///         Event::Gap => println!("some messages may be missing: reload"),
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct ResumingListener {
    endpoint: Endpoint,
    tags: Tags,
    last_id: Option<String>,
    socket: Option<Socket>,
    backoff: Duration,
}

/// A frame of a connection opened with `since`.
#[derive(serde::Deserialize)]
struct SinceFrame {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    message: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    gap: bool,
}

impl Endpoint {
    /// A [`ResumingListener`] with `tags`, resuming after `since` (a message id kept from an
    /// earlier run), or from now on. It connects at its first [`next`](ResumingListener::next).
    pub fn resume_with_tags<N: Into<String>, V: Into<String>>(
        &self,
        tags: impl IntoIterator<Item = (N, V)>,
        since: Option<String>,
    ) -> ResumingListener {
        ResumingListener {
            endpoint: self.clone(),
            tags: tags.into_iter().collect(),
            last_id: since,
            socket: None,
            backoff: RESUME_BACKOFF_MIN,
        }
    }
}

impl ResumingListener {
    /// The id of the last message yielded (or the `since` it started with).
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The next message or gap, decoded as `T` (see [`Listener::next`]). Reconnects whenever
    /// the connection breaks or the server closes it (shutting down, a slow client closed with
    /// 4429), waiting 100 ms, doubling up to 10 s, each wait jittered. Errors only when the
    /// server refuses it for good: the handshake refused with 4xx (no history, bad tags, not
    /// authorized), a close with 4400, 4401 or 4403, or a message that is not a `T`.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Event<T>, ClientError> {
        loop {
            let Some(socket) = &mut self.socket else {
                self.connect().await?;
                continue;
            };
            let frame = match socket.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    tracing::debug!(%error, "the connection broke; reconnecting");
                    self.socket = None;
                    continue;
                }
                None => {
                    self.socket = None;
                    continue;
                }
            };
            match frame {
                Message::Text(text) => {
                    let frame: SinceFrame =
                        serde_json::from_str(text.as_str()).map_err(ClientError::Decode)?;
                    if frame.gap {
                        return Ok(Event::Gap);
                    }
                    let (Some(id), Some(message)) = (frame.id, frame.message) else {
                        return Err(ClientError::Decode(serde::de::Error::custom(
                            "a frame without id and message: was `since` ignored by the server?",
                        )));
                    };
                    let message =
                        serde_json::from_str(message.get()).map_err(ClientError::Decode)?;
                    self.last_id = Some(id.clone());
                    return Ok(Event::Message { id, message });
                }
                Message::Close(Some(frame)) => {
                    let close = ServerClose::from_frame(&frame);
                    if matches!(close.code, 4400 | 4401 | 4403) {
                        self.socket = None;
                        return Err(ClientError::Closed(close));
                    }
                    tracing::debug!(
                        code = close.code,
                        "the server closed the connection; reconnecting"
                    );
                }
                _ => {}
            }
        }
    }

    /// Connects with `since`, waiting out the backoff after a failure.
    async fn connect(&mut self) -> Result<(), ClientError> {
        let mut url = self.endpoint.url.clone();
        if !self.tags.is_empty() {
            url = with_query_param(&url, "tags", &self.tags.to_string());
        }
        url = with_query_param(&url, "since", self.last_id.as_deref().unwrap_or(""));
        match open(&url, &self.endpoint.tls).await {
            Ok(socket) => {
                self.socket = Some(socket);
                self.backoff = RESUME_BACKOFF_MIN;
                Ok(())
            }
            Err(ClientError::Unreachable {
                error: tungstenite::Error::Http(response),
                url,
            }) if response.status().is_client_error() => Err(ClientError::Unreachable {
                error: tungstenite::Error::Http(response),
                url,
            }),
            Err(error) => {
                let wait = jittered(self.backoff);
                tracing::debug!(%error, ?wait, "cannot reconnect yet");
                self.backoff = (self.backoff * 2).min(RESUME_BACKOFF_MAX);
                tokio::time::sleep(wait).await;
                Ok(())
            }
        }
    }
}

/// `wait` scaled by a random factor between 0.5 and 1, so that clients dropped together do not
/// all come back at the same moment.
fn jittered(wait: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A randomly seeded hasher: randomness without a dependency.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    wait.mul_f64(0.5 + (random % 1000) as f64 / 2000.0)
}
