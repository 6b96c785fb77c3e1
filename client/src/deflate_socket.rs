//! permessage-deflate (RFC 7692) for the client's connections, under tungstenite, which has no
//! extension support and fails any frame with RSV1 set.
//!
//! [`DeflateSocket`] sits between the socket (TCP or TLS) and tungstenite. The client offers
//! [`OFFER`]: no context takeover either way, so no compressor or inflater outlives a message
//! and a connection holds no deflate state. When the server's 101 answer accepts it:
//! - each compressed message the server sends is inflated (by [`crate::wire::deflate`], within
//!   the same limit as a plain message) and handed to tungstenite as the plain frame it stands
//!   for;
//! - each text frame tungstenite writes whose payload is at least
//!   [`deflate::DEFAULT_MIN_SIZE`] bytes (a request: tungstenite sends a message as one frame)
//!   is compressed on its own, by the code that compresses the server's shared frames, and
//!   goes out with RSV1 set, masked with the key tungstenite drew for it. Shorter frames, control
//!   frames and anything fragmented go plain, which RFC 7692 allows for any message.
//!
//! Every other byte goes through untouched, both ways.

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

/// Compressed bytes waiting for the socket past which a write waits for the socket to take
/// some, rather than taking more from tungstenite.
const MAX_PENDING: usize = 64 * 1024;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;

/// A socket whose compressed server messages reach the reader inflated, and whose long
/// requests leave compressed.
#[derive(Debug)]
pub struct DeflateSocket<S> {
    inner: S,
    /// Largest message, compressed or inflated: tungstenite's limit for plain ones.
    max_size: usize,
    /// Bytes read from the socket, not yet looked at.
    raw: BytesMut,
    /// Bytes ready for the reader.
    ready: BytesMut,
    state: State,
    /// The server accepted the offer with a window our compressor honours: requests of at
    /// least [`deflate::DEFAULT_MIN_SIZE`] bytes go compressed.
    compress_requests: bool,
    /// Bytes tungstenite wrote that do not make a whole frame yet (with `compress_requests`).
    written: BytesMut,
    /// Frames, compressed or as written, waiting for the socket.
    sending: BytesMut,
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

impl<S> DeflateSocket<S> {
    /// Wraps `inner`, which has not read the 101 answer yet; messages above `max_size` bytes
    /// (compressed or once inflated) fail the connection.
    pub fn new(inner: S, max_size: usize) -> DeflateSocket<S> {
        DeflateSocket {
            inner,
            max_size,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            state: State::Head,
            compress_requests: false,
            written: BytesMut::new(),
            sending: BytesMut::new(),
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
                let accepted = accepted_extension(&head);
                self.compress_requests = accepted.as_deref().is_some_and(compresses_requests);
                self.state = State::Frames {
                    deflate: accepted.is_some(),
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

/// The parameters of the permessage-deflate extension the 101 answer `head` accepts (what
/// follows its name in `Sec-WebSocket-Extensions`), or `None` when it accepts none.
fn accepted_extension(head: &[u8]) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("sec-websocket-extensions") {
            return None;
        }
        let (extension, parameters) = value.split_once(';').unwrap_or((value, ""));
        extension
            .trim()
            .eq_ignore_ascii_case("permessage-deflate")
            .then(|| parameters.to_owned())
    })
}

/// True when the accepted `parameters` let the client compress with the full window that
/// [`deflate::compress`] uses: no `client_max_window_bits` below 15 (which a server may only
/// answer to an offer naming it, and [`OFFER`] does not). Whether the server keeps its context
/// does not matter: each request is compressed on its own, which any inflater reads.
fn compresses_requests(parameters: &str) -> bool {
    parameters.split(';').all(|parameter| {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, "15"));
        !name.trim().eq_ignore_ascii_case("client_max_window_bits")
            || value.trim().trim_matches('"') == "15"
    })
}

/// Compresses each whole text frame of at least [`deflate::DEFAULT_MIN_SIZE`] bytes in
/// `written` into `sending`, and moves every other whole frame there as it is; leaves a frame
/// not written whole yet in `written`.
fn compress_frames(written: &mut BytesMut, sending: &mut BytesMut) {
    while let Some(header) = Header::parse(written) {
        let Some(length) = usize::try_from(header.payload)
            .ok()
            .and_then(|payload| payload.checked_add(header.length))
            .filter(|length| *length <= written.len())
        else {
            return;
        };
        let mut whole = written.split_to(length);
        let compressible = header.fin
            && !header.rsv1
            && header.opcode == OP_TEXT
            && header.masked
            && header.payload >= deflate::DEFAULT_MIN_SIZE as u64;
        if !compressible {
            sending.extend_from_slice(&whole);
            continue;
        }
        let mask: [u8; 4] = whole[header.length - 4..header.length]
            .try_into()
            .expect("a masked frame's header ends with its 4-byte key");
        let payload = &mut whole[header.length..];
        frame::unmask(payload, mask);
        let mut compressed = Vec::with_capacity(payload.len() / 2 + 16);
        frame::push_masked_frame(
            &mut compressed,
            frame::COMPRESSED_TEXT,
            &deflate::compress(payload),
            mask,
        );
        sending.extend_from_slice(&compressed);
    }
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

impl<S: AsyncRead + Unpin> AsyncRead for DeflateSocket<S> {
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

impl<S: AsyncWrite + Unpin> DeflateSocket<S> {
    /// Writes `sending` to the socket until it is empty.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.sending.is_empty() {
            let count = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.sending))?;
            if count == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sending.advance(count);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeflateSocket<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.compress_requests {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if this.sending.len() >= MAX_PENDING {
            ready!(this.poll_send(cx))?;
        }
        this.written.extend_from_slice(buf);
        compress_frames(&mut this.written, &mut this.sending);
        // As much as the socket takes now; the rest goes on the next write or flush.
        if let Poll::Ready(Err(error)) = this.poll_send(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
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
        let mut reader = DeflateSocket::new(client, max_size);
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
        let mut reader = DeflateSocket::new(client, 65_536);
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

    /// What the server reads when the client, after the 101 answer `head`, writes `written`
    /// `chunk` bytes at a time (as tungstenite may) and flushes.
    async fn written_through(head: &[u8], written: &[u8], chunk: usize) -> Vec<u8> {
        use tokio::io::AsyncWriteExt;
        let (mut server, client) = tokio::io::duplex(1024);
        server.write_all(head).await.unwrap();
        let mut socket = DeflateSocket::new(client, 65_536);
        let mut head_read = vec![0u8; head.len()];
        socket.read_exact(&mut head_read).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            server.read_to_end(&mut seen).await.unwrap();
            seen
        });
        for piece in written.chunks(chunk) {
            socket.write_all(piece).await.unwrap();
        }
        socket.flush().await.unwrap();
        socket.shutdown().await.unwrap();
        drop(socket);
        reader.await.unwrap()
    }

    fn masked(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut frame = Vec::new();
        frame::push_masked_frame(&mut frame, first, payload, mask);
        frame
    }

    #[tokio::test]
    async fn long_text_frames_leave_compressed_and_the_rest_as_written() {
        let request = format!(r#"{{"message":"{}"}}"#, "notification ".repeat(40));
        let short = r#"{"message":"hi"}"#;
        let ping = masked(0x89, b"ping", [5, 6, 7, 8]);
        let mut written = masked(frame::TEXT, request.as_bytes(), [1, 2, 3, 4]);
        written.extend_from_slice(&ping);
        written.extend_from_slice(&masked(frame::TEXT, short.as_bytes(), [9, 9, 9, 9]));
        let mut expected = masked(
            frame::COMPRESSED_TEXT,
            &deflate::compress(request.as_bytes()),
            [1, 2, 3, 4],
        );
        expected.extend_from_slice(&ping);
        expected.extend_from_slice(&masked(frame::TEXT, short.as_bytes(), [9, 9, 9, 9]));
        assert!(expected.len() * 3 < written.len());
        for chunk in [1, 3, 4096] {
            assert_eq!(written_through(ACCEPTED, &written, chunk).await, expected);
        }
    }

    #[tokio::test]
    async fn the_minimum_size_is_counted_on_the_payload() {
        let at = "a".repeat(deflate::DEFAULT_MIN_SIZE);
        let under = &at[1..];
        let sent = written_through(ACCEPTED, &masked(frame::TEXT, at.as_bytes(), [1; 4]), 64).await;
        assert_eq!(sent[0], frame::COMPRESSED_TEXT);
        let plain = masked(frame::TEXT, under.as_bytes(), [1; 4]);
        assert_eq!(written_through(ACCEPTED, &plain, 64).await, plain);
    }

    #[tokio::test]
    async fn requests_go_plain_when_the_server_declined_or_limits_the_clients_window() {
        let request = masked(frame::TEXT, "x".repeat(1000).as_bytes(), [1, 2, 3, 4]);
        let declined = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(written_through(declined, &request, 100).await, request);
        let limited = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n\r\n";
        assert_eq!(written_through(limited, &request, 100).await, request);
    }

    #[test]
    fn only_a_client_window_under_15_bits_stops_compressed_requests() {
        for (parameters, compress) in [
            ("", true),
            (
                " server_no_context_takeover; client_no_context_takeover",
                true,
            ),
            (" server_max_window_bits=12", true),
            (" client_max_window_bits=15", true),
            (" client_max_window_bits=\"15\"", true),
            (" client_max_window_bits=9", false),
            (" Client_Max_Window_Bits = 12", false),
        ] {
            assert_eq!(compresses_requests(parameters), compress, "{parameters}");
        }
        assert_eq!(
            accepted_extension(ACCEPTED).as_deref(),
            Some(" server_no_context_takeover")
        );
        assert_eq!(accepted_extension(b"HTTP/1.1 101 OK\r\n\r\n"), None);
    }
}
