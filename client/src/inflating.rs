//! permessage-deflate (RFC 7692) for the client's connections, under tungstenite, which has no
//! extension support and fails any frame with RSV1 set.
//!
//! [`Inflating`] sits between the socket (TCP or TLS) and tungstenite. The client offers
//! [`OFFER`]: no context takeover either way, so no compressor or inflater outlives a message
//! and a connection holds no deflate state. When the server's 101 answer accepts it, each
//! compressed message the server sends is inflated (by [`crate::wire::deflate`], within the
//! same limit as a plain message) and handed to tungstenite as the plain frame it stands for;
//! every other byte goes through untouched. Requests are sent plain, which RFC 7692 allows for
//! any message: compressing them would mean rewriting tungstenite's masked frames on the way
//! out, for requests a backend sends one at a time.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::wire::{deflate, frame};

/// The `Sec-WebSocket-Extensions` offer of every connection.
pub const OFFER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Longest 101 answer head read before giving up on finding its end (tungstenite then reports
/// the bad answer).
const MAX_HEAD: usize = 16 * 1024;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;

/// A socket whose compressed server messages reach the reader inflated.
#[derive(Debug)]
pub struct Inflating<S> {
    inner: S,
    /// Largest message, compressed or inflated: tungstenite's limit for plain ones.
    max_size: usize,
    /// Bytes read from the socket, not yet looked at.
    raw: BytesMut,
    /// Bytes ready for the reader.
    ready: BytesMut,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Before the end of the 101 answer.
    Head,
    /// Frames; `deflate` when the server accepted the offer.
    Frames {
        deflate: bool,
        /// Bytes left of a frame going through as is.
        passing: usize,
        /// The opcode and payload so far of a compressed message split over frames.
        message: Option<(u8, Vec<u8>)>,
    },
}

impl<S> Inflating<S> {
    /// Wraps `inner`, which has not read the 101 answer yet; messages above `max_size` bytes
    /// (compressed or once inflated) fail the connection.
    pub fn new(inner: S, max_size: usize) -> Inflating<S> {
        Inflating {
            inner,
            max_size,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            state: State::Head,
        }
    }

    /// True once the 101 answer accepted permessage-deflate.
    pub fn deflate(&self) -> bool {
        matches!(self.state, State::Frames { deflate: true, .. })
    }

    /// Moves what can be handled in `raw` to `ready`; false when more bytes are needed.
    fn advance(&mut self) -> io::Result<bool> {
        match &mut self.state {
            State::Head => {
                let Some(end) = self.raw.windows(4).position(|window| window == b"\r\n\r\n") else {
                    if self.raw.len() > MAX_HEAD {
                        self.state = State::Frames {
                            deflate: false,
                            passing: usize::MAX,
                            message: None,
                        };
                        return Ok(true);
                    }
                    return Ok(false);
                };
                let head = self.raw.split_to(end + 4);
                self.state = State::Frames {
                    deflate: accepts_deflate(&head),
                    passing: 0,
                    message: None,
                };
                self.ready.extend_from_slice(&head);
                Ok(true)
            }
            State::Frames {
                deflate,
                passing,
                message,
            } => {
                if *passing > 0 {
                    let count = (*passing).min(self.raw.len());
                    self.ready.extend_from_slice(&self.raw.split_to(count));
                    *passing -= count;
                    return Ok(count > 0);
                }
                let Some(header) = Header::parse(&self.raw) else {
                    return Ok(false);
                };
                let data = header.opcode & 0x8 == 0;
                let first_compressed = header.rsv1 && matches!(header.opcode, OP_TEXT | OP_BINARY);
                let continued = header.opcode == OP_CONTINUATION && message.is_some();
                let length = usize::try_from(header.payload)
                    .ok()
                    .and_then(|payload| payload.checked_add(header.length));
                let Some(length) = length.filter(|_| {
                    *deflate && !header.masked && data && (first_compressed || continued)
                }) else {
                    // Not ours to change: tungstenite reads it, and fails it if it is wrong.
                    *passing = length.unwrap_or(usize::MAX);
                    return Ok(true);
                };
                if header.payload > self.max_size as u64 {
                    return Err(invalid(format!(
                        "a compressed frame larger than {} bytes",
                        self.max_size
                    )));
                }
                if self.raw.len() < length {
                    self.raw.reserve(length - self.raw.len());
                    return Ok(false);
                }
                let mut bytes = self.raw.split_to(length);
                bytes.advance(header.length);
                let (opcode, payload) = message.get_or_insert_with(|| (header.opcode, Vec::new()));
                if payload.len() + bytes.len() > self.max_size {
                    return Err(invalid(format!(
                        "a compressed message larger than {} bytes",
                        self.max_size
                    )));
                }
                payload.extend_from_slice(&bytes);
                if header.fin {
                    let inflated = deflate::decompress(payload, self.max_size)
                        .map_err(|close| invalid(close.reason.into_owned()))?;
                    let plain = match *opcode {
                        OP_TEXT => frame::text_frame(
                            std::str::from_utf8(&inflated)
                                .map_err(|_| invalid("a text message that is not UTF-8".into()))?,
                        ),
                        _ => frame::binary_frame(&inflated),
                    };
                    self.ready.extend_from_slice(&plain);
                    *message = None;
                }
                Ok(true)
            }
        }
    }
}

/// True when the 101 answer `head` accepts permessage-deflate.
fn accepts_deflate(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-extensions")
                && value
                    .split(';')
                    .next()
                    .is_some_and(|name| name.trim().eq_ignore_ascii_case("permessage-deflate"))
        })
    })
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// A frame header found at the start of a buffer.
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    masked: bool,
    /// Header bytes, the masking key included.
    length: usize,
    payload: u64,
}

impl Header {
    fn parse(buffer: &[u8]) -> Option<Header> {
        let (&first, &second) = (buffer.first()?, buffer.get(1)?);
        let (payload, length) = match second & 0x7F {
            126 => (
                u64::from(u16::from_be_bytes([*buffer.get(2)?, *buffer.get(3)?])),
                4,
            ),
            127 => (u64::from_be_bytes(buffer.get(2..10)?.try_into().ok()?), 10),
            short => (u64::from(short), 2),
        };
        let masked = second & 0x80 != 0;
        Some(Header {
            fin: first & 0x80 != 0,
            rsv1: first & 0x40 != 0,
            opcode: first & 0x0F,
            masked,
            length: length + if masked { 4 } else { 0 },
            payload,
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            // Everything that can be handled first: a refused upgrade's body reaches tungstenite
            // in the same read as its head, which is where it looks for it.
            while this.advance()? {}
            if !this.ready.is_empty() {
                let count = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready.split_to(count));
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The end: what is left goes as is, for tungstenite to call it truncated.
                let rest = this.raw.split();
                this.ready.extend_from_slice(&rest);
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.raw.extend_from_slice(read.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflating<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const ACCEPTED: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n";

    /// What the reader sees when the server sends `sent`, fed `chunk` bytes at a time.
    async fn read_through(sent: &[u8], chunk: usize, max_size: usize) -> io::Result<Vec<u8>> {
        let (mut server, client) = tokio::io::duplex(chunk);
        let sent = sent.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in sent.chunks(chunk) {
                server.write_all(piece).await.unwrap();
            }
        });
        let mut reader = Inflating::new(client, max_size);
        let mut seen = Vec::new();
        let result = reader.read_to_end(&mut seen).await;
        writer.await.unwrap();
        result.map(|_| seen)
    }

    #[tokio::test]
    async fn compressed_messages_reach_the_reader_as_plain_frames() {
        let message = "{\"type\":\"notification\"}".repeat(30);
        let compressed = frame::MessageFrames::text(&message, true);
        let mut sent = ACCEPTED.to_vec();
        sent.extend_from_slice(compressed.compressed().unwrap());
        sent.extend_from_slice(&frame::text_frame("plain"));
        let mut expected = ACCEPTED.to_vec();
        expected.extend_from_slice(compressed.plain());
        expected.extend_from_slice(&frame::text_frame("plain"));
        for chunk in [1, 7, 4096] {
            assert_eq!(read_through(&sent, chunk, 65_536).await.unwrap(), expected);
        }
    }

    #[tokio::test]
    async fn a_message_split_over_frames_is_inflated_whole() {
        let message = "abcdefgh".repeat(100);
        let deflated = deflate::compress(message.as_bytes());
        let (first, rest) = deflated.split_at(deflated.len() / 2);
        let mut sent = ACCEPTED.to_vec();
        sent.extend_from_slice(&[0x41, first.len() as u8]); // RSV1 | text, no FIN
        sent.extend_from_slice(first);
        sent.extend_from_slice(&frame::pong_frame(b"between"));
        sent.extend_from_slice(&[0x80, rest.len() as u8]); // FIN | continuation
        sent.extend_from_slice(rest);
        let mut expected = ACCEPTED.to_vec();
        expected.extend_from_slice(&frame::pong_frame(b"between"));
        expected.extend_from_slice(&frame::text_frame(&message));
        assert_eq!(read_through(&sent, 5, 65_536).await.unwrap(), expected);
    }

    #[tokio::test]
    async fn without_the_agreement_frames_go_through_untouched() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        let mut sent = head.to_vec();
        let compressed = frame::MessageFrames::text(&"x".repeat(300), true);
        sent.extend_from_slice(compressed.compressed().unwrap());
        assert_eq!(read_through(&sent, 64, 65_536).await.unwrap(), sent);
    }

    #[tokio::test]
    async fn a_refused_upgrade_reaches_the_reader_with_its_body_in_one_read() {
        let refusal = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 9\r\n\r\nbad tags\n";
        let (mut server, client) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut server, refusal)
            .await
            .unwrap();
        let mut reader = Inflating::new(client, 65_536);
        let mut first = [0u8; 256];
        let read = reader.read(&mut first).await.unwrap();
        assert_eq!(&first[..read], refusal);
    }

    #[tokio::test]
    async fn a_bomb_fails_the_connection_at_the_limit() {
        let mut sent = ACCEPTED.to_vec();
        let bomb = frame::MessageFrames::text(&"a".repeat(1_000_000), true);
        sent.extend_from_slice(bomb.compressed().unwrap());
        let error = read_through(&sent, 4096, 65_536).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("65536"), "{error}");
    }
}
