//! One client connection, from its first byte to its close, generic over the stream (TCP or TLS).
//!
//! The task reads the request head and answers HTTP or upgrades to WebSocket. An upgraded
//! connection runs two halves in the same task: the reader turns frames into requests and routes
//! them through the hub; the writer drains the connection's [`Outbox`] into vectored writes. Every
//! error closes this connection only, with the close code and reason of SPEC §1.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{Instrument, debug, info};

use crate::frame::{self, CloseReason, Incoming, MessageReader, close_code};
use crate::handshake::{self, Head, Rejection};
use crate::hub::{Listener, Peer};
use crate::metrics::{Rejected, Source};
use crate::outbox::{Next, Outbox};
use crate::server::Shared;

/// Serves one accepted stream until it closes. `deadline` bounds the handshake.
pub async fn serve<S>(
    shared: Arc<Shared>,
    mut stream: S,
    address: SocketAddr,
    listener: Listener,
    deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffer = BytesMut::with_capacity(1024);
    let head = tokio::select! {
        head = read_head(&mut stream, &mut buffer) => head,
        _ = tokio::time::sleep_until(deadline) => {
            debug!(peer = %address, "handshake timed out");
            return;
        }
        _ = shared.shutdown.cancelled() => return,
    };
    let head = match head {
        Ok(Some(head)) => head,
        Ok(None) => return,
        Err(rejection) => {
            debug!(peer = %address, status = rejection.status, reason = %rejection.reason, "bad request head");
            let _ = stream.write_all(&rejection.to_response()).await;
            return;
        }
    };
    if !head.wants_websocket() {
        // Boxed: an idle WebSocket connection's task must not carry the HTTP state's size.
        let endpoints = crate::http::Endpoints::main(&shared.config);
        Box::pin(crate::http::respond(
            &shared,
            &head,
            &mut stream,
            buffer,
            endpoints,
            deadline,
        ))
        .await;
        return;
    }
    let upgrade = handshake::check_upgrade(
        &head,
        shared.config.limits.tag_limits(),
        &shared.config.server.allowed_origins,
    )
    .and_then(|upgrade| {
        shared
            .auth
            .check_open(&upgrade.credentials)
            .map(|()| upgrade)
    });
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            info!(peer = %address, status = rejection.status, reason = %rejection.reason, "handshake refused");
            let _ = stream.write_all(&rejection.to_response()).await;
            return;
        }
    };
    // The head is not needed past the handshake: free it rather than keep it for the
    // connection's whole life.
    drop(head);
    let Ok(slot) = shared.connection_slots.clone().try_acquire_owned() else {
        info!(peer = %address, "connection limit reached");
        let refusal = Rejection::new(503, "connection limit reached, try again later");
        let _ = stream.write_all(&refusal.to_response()).await;
        return;
    };
    let peer = Arc::new(Peer {
        id: shared.hub.next_id(),
        address,
        listener,
        credentials: upgrade.credentials,
        outbox: Outbox::new(shared.config.limits.send_queue),
    });
    // The fields of every line about this connection (journal fields CONN, PEER, TAGS, APP).
    let span = tracing::info_span!("conn", conn = peer.id, peer = %address, tags = %upgrade.tags,
        app = tracing::field::Empty);
    if let Some(key) = &peer.credentials.key {
        span.record("app", key.as_str());
    }
    let registration = shared.hub.register(upgrade.tags, peer.clone());
    let counted = shared.metrics.connection_opened(listener);
    // An auth reload between the open check and the registration did not see this connection.
    shared.auth.judge_again(&peer);
    // In the hub before the client learns it is connected: a request sent as soon as the
    // client sees the 101 reaches it. What is routed to it meanwhile waits in its outbox.
    if stream
        .write_all(&handshake::switching_protocols(&upgrade.accept))
        .await
        .is_err()
    {
        return;
    }
    span.in_scope(|| debug!(listener = listener.as_str(), "connection opened"));
    let closed = run_websocket(&shared, stream, &peer, buffer)
        .instrument(span.clone())
        .await;
    // Free the slot before leaving the hub: once a connection is gone from the hub, a new one fits.
    drop(slot);
    drop(registration);
    drop(counted);
    let code = closed
        .as_ref()
        .map_or(close_code::ABNORMAL, |reason| reason.code);
    shared.metrics.connection_closed(code);
    span.in_scope(|| match closed {
        Some(reason) => debug!(code = reason.code, reason = %reason.reason, "connection closed"),
        None => debug!("connection closed"),
    });
}

/// Reads until a whole request head is in `buffer`, leaving the bytes after it there.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
) -> Result<Option<Head>, Rejection> {
    loop {
        if let Some((head, length)) = handshake::parse_head(buffer)? {
            buffer.advance(length);
            return Ok(Some(head));
        }
        if buffer.capacity() == buffer.len() {
            buffer.reserve(buffer.len().max(1024));
        }
        match stream.read_buf(buffer).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// Runs an upgraded connection until both sides are done; returns why it closed.
async fn run_websocket<S>(
    shared: &Shared,
    stream: S,
    peer: &Peer,
    leftover: BytesMut,
) -> Option<CloseReason>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let reader = read_loop(shared, read_half, peer, leftover);
    let writer = write_loop(write_half, &peer.outbox);
    let closing_deadline = async {
        peer.outbox.closing_started().await;
        tokio::time::sleep(Duration::from_millis(
            shared.config.limits.shutdown_grace_ms,
        ))
        .await;
    };
    tokio::pin!(reader, writer, closing_deadline);
    let (mut reader_done, mut writer_done) = (false, false);
    while !(reader_done && writer_done) {
        tokio::select! {
            _ = &mut reader, if !reader_done => {
                reader_done = true;
            }
            written = &mut writer, if !writer_done => {
                writer_done = true;
                if written.is_err() {
                    break;
                }
            }
            _ = &mut closing_deadline => break,
        }
    }
    peer.outbox.closing()
}

/// Reads frames until the client closes (or breaks the protocol, or the stream ends); routes
/// requests; queues pongs and close frames.
async fn read_loop<R: AsyncRead + Unpin>(
    shared: &Shared,
    mut stream: R,
    peer: &Peer,
    leftover: BytesMut,
) {
    let mut messages = MessageReader::new(shared.config.messages.max_size, leftover);
    let mut rate = RateLimit::new(shared.config.limits.max_requests_per_s);
    loop {
        loop {
            let incoming = match messages.next_message() {
                Ok(Some(incoming)) => incoming,
                Ok(None) => break,
                Err(reason) => {
                    if reason.code == close_code::MESSAGE_TOO_BIG {
                        shared.metrics.request(Source::Ws);
                        shared.metrics.rejected(Rejected::TooLarge);
                    }
                    debug!(code = reason.code, reason = %reason.reason, "protocol error");
                    peer.outbox.close(reason);
                    // The client's bytes can no longer be framed: stop reading.
                    return;
                }
            };
            match incoming {
                Incoming::Text(text) => {
                    if peer.outbox.closing().is_some() {
                        continue; // closing: data is ignored until the client's close
                    }
                    let admitted = rate.admit().inspect_err(|_| {
                        shared.metrics.request(Source::Ws);
                        shared.metrics.rejected(Rejected::RateLimited);
                    });
                    if let Err(reason) = admitted.and_then(|()| handle_text(shared, peer, &text)) {
                        // A client's mistake, not the server's: notice, never an error.
                        info!(
                            code = reason.code,
                            "request refused with {}: {}", reason.code, reason.reason
                        );
                        peer.outbox.close(reason);
                    }
                }
                Incoming::Ping(payload) => {
                    peer.outbox.push(frame::pong_frame(&payload));
                }
                Incoming::Pong => {}
                Incoming::Close(reason) => {
                    let echo = reason.map_or(close_code::NORMAL, |reason| reason.code);
                    peer.outbox.close(CloseReason::new(echo, ""));
                    return;
                }
            }
        }
        match stream.read_buf(messages.read_buffer()).await {
            Ok(0) | Err(_) => {
                peer.outbox.abort();
                return;
            }
            Ok(read) => messages.note_read(read),
        }
    }
}

/// Parses, authorizes and routes one text message.
fn handle_text(shared: &Shared, peer: &Peer, text: &[u8]) -> Result<(), CloseReason> {
    let text = std::str::from_utf8(text).expect("the frame reader validated UTF-8");
    let delivery = shared.handle_request(text, Source::Ws, None)?;
    debug!(
        conn = peer.id,
        delivered = delivery.delivered,
        "request routed"
    );
    Ok(())
}

/// Writes what the outbox holds until the close frame is written or the connection aborts.
async fn write_loop<W: AsyncWrite + Unpin>(mut stream: W, outbox: &Outbox) -> std::io::Result<()> {
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        match outbox.take(&mut batch).await {
            Next::Write => {
                tokio::select! {
                    written = write_batch(&mut stream, &mut batch) => written?,
                    _ = outbox.aborted() => return Ok(()),
                }
                batch.clear();
                if batch.capacity() > 64 {
                    batch.shrink_to(8);
                }
            }
            Next::Finished => {
                let _ = stream.shutdown().await;
                return Ok(());
            }
            Next::Abort => return Ok(()),
        }
    }
}

/// Writes every frame of `batch` with as few vectored writes as the stream allows.
async fn write_batch<W: AsyncWrite + Unpin>(
    stream: &mut W,
    batch: &mut [Bytes],
) -> std::io::Result<()> {
    const MAX_SLICES: usize = 64;
    let mut first = 0;
    while first < batch.len() {
        let slices: Vec<IoSlice<'_>> = batch[first..]
            .iter()
            .take(MAX_SLICES)
            .map(|frame| IoSlice::new(frame))
            .collect();
        let mut written = stream.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while first < batch.len() && written >= batch[first].len() {
            written -= batch[first].len();
            first += 1;
        }
        if written > 0 {
            batch[first].advance(written);
        }
    }
    stream.flush().await
}

/// `limits.max_requests_per_s`: a token bucket refilled continuously, one second deep.
struct RateLimit {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_second: u32) -> RateLimit {
        RateLimit {
            per_second: per_second as f64,
            tokens: per_second as f64,
            last: Instant::now(),
        }
    }

    fn admit(&mut self) -> Result<(), CloseReason> {
        if self.per_second == 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.per_second);
        self.last = now;
        if self.tokens < 1.0 {
            return Err(CloseReason::new(
                close_code::TOO_MANY,
                format!("too many requests: at most {} per second", self.per_second),
            ));
        }
        self.tokens -= 1.0;
        Ok(())
    }
}
