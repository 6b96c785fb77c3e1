//! A lean WebSocket client for load: raw TCP (or TLS), a fixed handshake, masked frames written
//! in batches, server frames split without copying. It does only what the load tool needs, so
//! that thousands of subscribers cost the machine little next to the server they measure.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tagcast::ops::trust::{TlsTrust, TrustError, client_config};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use tagcast::wire::deflate::Inflater;

/// A connection could not be opened or broke.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `ws://HOST[:PORT][/PATH]` or `wss://...`.
    #[error("bad URL {0:?}: expected ws://HOST[:PORT][/PATH] or wss://...")]
    BadUrl(String),
    /// The host name does not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// `--ca` or `--insecure` cannot be followed.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// A socket call failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error (shown in the message, so not also its source).
        error: io::Error,
    },
    /// The server answered the upgrade with something other than 101.
    #[error("upgrade refused: {0}")]
    Refused(String),
}

fn io_error(what: &'static str) -> impl FnOnce(io::Error) -> ClientError {
    move |error| ClientError::Io { what, error }
}

/// Where and how to connect: the server from the URL, the TLS settings, the source addresses.
pub struct Target {
    address: SocketAddr,
    host: String,
    path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Number of loopback source addresses (127.0.0.1..=127.0.0.k) to spread connections over;
    /// 0 when the server is not on 127.0.0.0/8 (the kernel then picks the source).
    sources: u8,
    compression: Compression,
}

/// Whether connections offer permessage-deflate (RFC 7692): `--compression` of `tagcast bench`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Offer it as browsers do (`permessage-deflate; client_max_window_bits`); the server picks
    /// whether and how to compress what it sends.
    #[default]
    Offer,
    /// Offer nothing: every frame is plain.
    Off,
}

impl Compression {
    /// The name on the command line and in the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Offer => "offer",
            Compression::Off => "off",
        }
    }
}

/// How a connection's compressed frames are inflated, once the server accepted
/// permessage-deflate.
pub enum Deflate {
    /// The server agreed to `server_no_context_takeover`: each message inflates on its own, so
    /// connections share an inflater (tagcast).
    PerMessage,
    /// The server keeps its window from one message to the next (Node `ws` by default): this
    /// connection's own inflater keeps it too.
    Takeover(Box<Inflater>),
}

/// What Chromium and Firefox offer.
const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

impl Target {
    /// Resolves `url` once. `sources` loopback addresses are used when the server is on
    /// 127.0.0.0/8.
    pub async fn new(url: &str, trust: &TlsTrust, sources: u8) -> Result<Target, ClientError> {
        let bad = || ClientError::BadUrl(url.to_owned());
        let (secure, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || path.contains('#') {
            return Err(bad());
        }
        let default_port = if secure { 443 } else { 80 };
        let (host, port) = match authority.strip_prefix('[') {
            // [IPv6]:port
            Some(rest) => {
                let (host, port) = rest.split_once(']').ok_or_else(bad)?;
                (host, port.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(port) => port.parse::<u16>().map_err(|_| bad())?,
            None => default_port,
        };
        let address = tokio::net::lookup_host((host, port))
            .await
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| ClientError::Resolve(authority.to_owned()))?;
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let tls = match secure {
            true => {
                let name = ServerName::try_from(host.to_owned()).map_err(|_| bad())?;
                Some((TlsConnector::from(Arc::new(client_config(trust)?)), name))
            }
            false => None,
        };
        let sources = match address.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => sources.max(1),
            _ => 0,
        };
        Ok(Target {
            address,
            host: authority.to_owned(),
            path,
            tls,
            sources,
            compression: Compression::Off,
        })
    }

    /// Connections offer permessage-deflate, or not.
    pub fn with_compression(mut self, compression: Compression) -> Target {
        self.compression = compression;
        self
    }

    /// Opens connection number `index` (which picks its source address) with `tags` (a JSON
    /// object's text, or none) and completes the WebSocket handshake. Returns the stream, any
    /// bytes the server sent after its handshake answer, and how to inflate its compressed
    /// frames when it accepted permessage-deflate.
    pub async fn connect(
        &self,
        index: usize,
        tags: Option<&str>,
    ) -> Result<(Stream, Vec<u8>, Option<Deflate>), ClientError> {
        let socket = match self.address {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(io_error("socket"))?;
        if self.sources > 0 {
            // Let connect() pick the port, unique per 4-tuple, rather than bind() reserving
            // one per source address: more than 28 000 connections fit this way.
            nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::IpBindAddressNoPort,
                &true,
            )
            .map_err(|errno| io_error("IP_BIND_ADDRESS_NO_PORT")(errno.into()))?;
            let source = Ipv4Addr::new(127, 0, 0, 1 + (index % self.sources as usize) as u8);
            socket
                .bind(SocketAddr::new(IpAddr::V4(source), 0))
                .map_err(io_error("bind"))?;
        }
        let tcp = socket
            .connect(self.address)
            .await
            .map_err(io_error("connect"))?;
        tcp.set_nodelay(true).map_err(io_error("TCP_NODELAY"))?;
        let mut stream = match &self.tls {
            Some((connector, name)) => Stream::Tls(Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(io_error("TLS handshake"))?,
            )),
            None => Stream::Plain(tcp),
        };
        let request = self.upgrade_request(tags);
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(io_error("write"))?;
        let (leftover, inflater) = read_upgrade_answer(&mut stream).await?;
        Ok((stream, leftover, inflater))
    }

    fn upgrade_request(&self, tags: Option<&str>) -> String {
        let mut target = self.path.clone();
        if let Some(tags) = tags {
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str("tags=");
            target.extend(form_urlencoded::byte_serialize(tags.as_bytes()));
        }
        let offer = match self.compression {
            Compression::Offer => format!("Sec-WebSocket-Extensions: {BROWSER_OFFER}\r\n"),
            Compression::Off => String::new(),
        };
        format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{offer}\r\n",
            self.host
        )
    }
}

/// The handshake key every connection sends, and the answer RFC 6455 derives from it.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Reads the answer head; returns the bytes after it, and how to inflate when the server
/// accepted permessage-deflate.
async fn read_upgrade_answer(
    stream: &mut Stream,
) -> Result<(Vec<u8>, Option<Deflate>), ClientError> {
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let read = stream.read(&mut chunk).await.map_err(io_error("read"))?;
        if read == 0 {
            return Err(ClientError::Refused(
                "connection closed during the handshake".into(),
            ));
        }
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = head.windows(4).position(|window| window == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]);
            let status = text.lines().next().unwrap_or_default();
            let header = |wanted: &str| {
                text.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case(wanted).then(|| value.trim())
                })
            };
            if !status.starts_with("HTTP/1.1 101") || header("sec-websocket-accept") != Some(ACCEPT)
            {
                let body = String::from_utf8_lossy(&head[end + 4..]);
                return Err(ClientError::Refused(format!("{status} {}", body.trim())));
            }
            let deflate = header("sec-websocket-extensions")
                .filter(|agreed| agreed.starts_with("permessage-deflate"))
                .map(
                    |agreed| match agreed.contains("server_no_context_takeover") {
                        true => Deflate::PerMessage,
                        false => Deflate::Takeover(Box::new(Inflater::new(true))),
                    },
                );
            return Ok((head.split_off(end + 4), deflate));
        }
        if head.len() > 16 * 1024 {
            return Err(ClientError::Refused("answer head too long".into()));
        }
    }
}

/// A plain or TLS connection.
pub enum Stream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

impl Stream {
    /// Asks the kernel to stamp each arrival on a `ws://` stream (`SO_TIMESTAMPNS`), for
    /// [`Stream::read_stamped`]; true if it will. A `wss://` stream is read through TLS and
    /// gets no stamps.
    pub fn stamp_arrivals(&self) -> Result<bool, ClientError> {
        match self {
            Stream::Plain(stream) => nix::sys::socket::setsockopt(
                stream,
                nix::sys::socket::sockopt::ReceiveTimestampns,
                &true,
            )
            .map(|()| true)
            .map_err(|errno| ClientError::Io {
                what: "SO_TIMESTAMPNS",
                error: errno.into(),
            }),
            Stream::Tls(_) => Ok(false),
        }
    }

    /// Reads into `buffer`. With `stamped` (when [`Stream::stamp_arrivals`] said reads will
    /// be), also returns about when the last of the bytes read reached the socket (ns since
    /// the epoch: the kernel's stamp of the last segment the read touched, never later than
    /// the read).
    pub async fn read_stamped(
        &mut self,
        buffer: &mut [u8],
        stamped: bool,
    ) -> io::Result<(usize, Option<u64>)> {
        let stream = match self {
            Stream::Plain(stream) if stamped => stream,
            _ => return Ok((self.read(buffer).await?, None)),
        };
        loop {
            stream.readable().await?;
            let received = stream.try_io(tokio::io::Interest::READABLE, || {
                receive_stamped(stream.as_raw_fd(), buffer)
            });
            match received {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                received => return received,
            }
        }
    }
}

/// One `recvmsg` with the arrival stamp of the last bytes read, if the kernel gave one (the
/// bytes are read either way).
fn receive_stamped(socket: RawFd, buffer: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut parts = [io::IoSliceMut::new(buffer)];
    let mut control = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let message = recvmsg::<()>(socket, &mut parts, Some(&mut control), MsgFlags::empty())?;
    let stamp = message.cmsgs().ok().and_then(|mut controls| {
        controls.find_map(|control| match control {
            ControlMessageOwned::ScmTimestampns(time) => {
                Some(Duration::from(time).as_nanos() as u64)
            }
            _ => None,
        })
    });
    Ok((message.bytes, stamp))
}

use tagcast::wire::frame::declared_length;
pub use tagcast::wire::frame::{PONG, TEXT, push_masked_frame};

/// A server frame found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerFrame {
    /// The opcode (1 text, 8 close, 9 ping, ...).
    pub opcode: u8,
    /// RSV1: the payload is compressed (permessage-deflate).
    pub compressed: bool,
    /// Where the payload starts, from the start of the buffer.
    pub payload_start: usize,
    /// Header plus payload length.
    pub length: usize,
}

/// The first frame in `buffer`, `None` when it is not complete yet. Server frames are not
/// masked; a masked one is taken as is (the load tool only reads its own payload format).
pub fn split_server_frame(buffer: &[u8]) -> Option<ServerFrame> {
    let (length, header) = declared_length(buffer)?;
    let header = header + if buffer[1] & 0x80 != 0 { 4 } else { 0 };
    let length = header.checked_add(usize::try_from(length).ok()?)?;
    (buffer.len() >= length).then_some(ServerFrame {
        opcode: buffer[0] & 0x0F,
        compressed: buffer[0] & 0x40 != 0,
        payload_start: header,
        length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_split_at_every_length_form() {
        for size in [0, 5, 125, 126, 300, 70_000] {
            let payload = vec![b'a'; size];
            let frame = tagcast::wire::frame::text_frame(std::str::from_utf8(&payload).unwrap());
            let mut buffer = frame.to_vec();
            assert_eq!(split_server_frame(&buffer[..buffer.len() - 1]), None);
            buffer.extend_from_slice(b"\x88\x00");
            let found = split_server_frame(&buffer).unwrap();
            assert_eq!((found.opcode, found.length), (1, frame.len()));
            assert_eq!(&buffer[found.payload_start..found.length], &payload[..]);
        }
    }

    #[test]
    fn masked_frames_read_back_through_the_server_reader() {
        let mut out = Vec::new();
        push_masked_frame(&mut out, TEXT, b"hello", [9, 8, 7, 6]);
        let mut reader =
            tagcast::wire::frame::MessageReader::new(1024, bytes::BytesMut::from(&out[..]));
        assert_eq!(
            reader.next_message(),
            Ok(Some(tagcast::wire::frame::Incoming::Text(
                bytes::Bytes::from_static(b"hello")
            )))
        );
    }

    #[tokio::test]
    async fn urls_resolve_with_or_without_port_and_path() {
        let trust = TlsTrust::default();
        let target = Target::new("ws://127.0.0.1:9/x?a=1", &trust, 4)
            .await
            .unwrap();
        assert_eq!(target.address, "127.0.0.1:9".parse().unwrap());
        assert_eq!((target.path.as_str(), target.sources), ("/x?a=1", 4));
        assert!(
            target
                .upgrade_request(Some("{}"))
                .starts_with("GET /x?a=1&tags=%7B%7D HTTP/1.1")
        );
        let target = Target::new("ws://[::1]:9", &trust, 4).await.unwrap();
        assert_eq!(
            (target.address.port(), target.path.as_str(), target.sources),
            (9, "/", 0)
        );
        assert!(Target::new("http://127.0.0.1", &trust, 1).await.is_err());
    }
}
