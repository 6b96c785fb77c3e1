//! One client connection, from its first byte to its close, generic over the stream (TCP or TLS).
//!
//! The task reads the request head and answers HTTP or upgrades to WebSocket. An upgraded
//! connection runs two halves in the same task: the reader turns frames into requests and routes
//! them through the hub; the writer drains the connection's [`Outbox`] into vectored writes. Over
//! plain TCP the router may also write to the socket itself ([`Transport`]). Every error closes
//! this connection only, with the close code and reason of SPEC §1.

use std::future::poll_fn;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::net::server::Shared;
use crate::ops::auth::OpenRefusal;
use crate::ops::config::CompressionMode;
use crate::ops::logging::message_id;
use crate::ops::metrics::{Rejected, Source};
use crate::routing::hub::{Listener, Peer};
use crate::routing::outbox::{
    Batch, Interrupted, Next, Outbox, Outgoing, Slow, TAKE_AT_MOST, Wakeups,
};
use crate::token;
use crate::wire::deflate;
use crate::wire::frame::{self, CloseReason, Incoming, MessageReader, close_code};
use crate::wire::handshake::{self, Head, Rejection, Upgrade};

/// Serves one accepted stream until it closes. `deadline` bounds the handshake.
pub async fn serve<S>(
    shared: Arc<Shared>,
    mut stream: S,
    address: SocketAddr,
    listener: Listener,
    deadline: Instant,
) where
    S: Transport,
{
    // Boxed: the handshake's state is freed once it is over, so an open connection's task
    // carries only what the WebSocket needs. In a block, so that the task keeps no room for
    // the handshake's results once they are taken apart.
    let (peer, registration, slot, buffer, switching, deflate) = {
        let Some(opened) = Box::pin(open(&shared, &mut stream, address, deadline)).await else {
            return;
        };
        let Opened {
            upgrade,
            deflate,
            leftover,
            slot,
        } = opened;
        let peer = Arc::new(Peer {
            id: shared.hub.next_id(),
            address,
            listener,
            deflate: deflate
                .as_ref()
                .is_some_and(|agreement| agreement.compressed_frames),
            credentials: upgrade.credentials,
            token: upgrade.token.map(String::into_boxed_str),
            outbox: shared.hub.outbox(),
            wants_ids: upgrade.since.is_some(),
        });
        debug!(conn = peer.id, peer = %address, tags = %upgrade.tags, listener = listener.as_str(), "connection opened");
        let registration = match (&shared.history, &upgrade.since) {
            (Some(history), Some(since)) => {
                // What it missed waits in its outbox ahead of anything routed to it later.
                let mut wakeups = Wakeups::default();
                let (registration, recovered) = history.recover(
                    since,
                    &upgrade.tags,
                    SystemTime::now(),
                    || shared.hub.register(upgrade.tags.clone(), peer.clone()),
                    |frame| {
                        peer.outbox.push(&Outgoing::new(frame), &mut wakeups);
                    },
                );
                debug!(
                    conn = peer.id,
                    gap = recovered.gap,
                    replayed = recovered.replayed,
                    "recovery"
                );
                registration
            }
            _ => shared.hub.register(upgrade.tags, peer.clone()),
        };
        let extensions = deflate
            .as_ref()
            .map(|agreement| agreement.response.as_str());
        let switching = handshake::switching_protocols(&upgrade.accept, extensions);
        let deflate = deflate.is_some();
        (peer, registration, slot, leftover, switching, deflate)
    };
    let counted = shared.metrics.connection_opened(listener);
    // An auth reload between the open check and the registration did not see this connection.
    shared.auth.judge_again(&peer);
    // In the hub before the client learns it is connected: a request sent as soon as the
    // client sees the 101 reaches it. What is routed to it meanwhile waits in its outbox.
    if stream.write_all(&switching).await.is_err() {
        // Counted opened: counted closed too, as a peer that vanished, so that the metrics
        // add up (opened - closed = open connections).
        drop(counted);
        shared.metrics.connection_closed(close_code::ABNORMAL);
        return;
    }
    drop(switching);
    let messages =
        MessageReader::new(shared.config.messages.max_size.get(), buffer).with_deflate(deflate);
    let grace = Duration::from_millis(shared.config.limits.shutdown_grace_ms.get());
    let mut rate = RateLimit::new(shared.config.limits.max_requests_per_s);
    let on_message = |message, wakeups: &mut Wakeups| match message {
        Incoming::Text(text) => rate
            .admit()
            .inspect_err(|reason| {
                shared.metrics.request(Source::Ws);
                shared.metrics.rejected(Rejected::RateLimited);
                peer.outbox
                    .close_slow(Slow::Rate, reason.reason.to_string());
            })
            .and_then(|()| handle_text(&shared, &peer, &text, wakeups)),
        _ => Ok(()),
    };
    // Every refusal, of a request or of a frame (1002, 1003, 1007, 1009): a client's mistake,
    // not the server's, so a notice, never an error; once, with the connection's fields.
    let on_refusal = |reason: &CloseReason| {
        peer_span(&shared, &peer).in_scope(|| {
            info!(
                code = reason.code,
                "request refused with {}: {}", reason.code, reason.reason
            )
        });
    };
    let closed = run_websocket(
        stream,
        &peer.outbox,
        messages,
        grace,
        on_message,
        on_refusal,
    )
    .await;
    if let Some(reason) = closed
        .as_ref()
        .filter(|_| peer.outbox.slow().is_some_and(|slow| slow != Slow::Rate))
    {
        // Logged while the connection's tags are still in the hub, for the span's TAGS.
        peer_span(&shared, &peer).in_scope(|| {
            info!(
                message_id = message_id::SLOW_CLIENT_CLOSED,
                code = reason.code,
                "slow client closed with {}: {}",
                reason.code,
                reason.reason
            )
        });
    }
    // Free the slot before leaving the hub: once a connection is gone from the hub, a new one fits.
    drop(slot);
    drop(registration);
    drop(counted);
    let code = closed
        .as_ref()
        .map_or(close_code::ABNORMAL, |reason| reason.code);
    if code == close_code::MESSAGE_TOO_BIG {
        shared.metrics.request(Source::Ws);
        shared.metrics.rejected(Rejected::TooLarge);
    }
    shared.metrics.connection_closed(code);
    if let Some(slow) = peer.outbox.slow() {
        shared.metrics.slow_client_closed(slow);
    }
    match closed {
        Some(reason) => {
            debug!(conn = peer.id, code = reason.code, reason = %reason.reason, "connection closed")
        }
        None => debug!(conn = peer.id, "connection closed"),
    }
}

/// The span of an event about `peer`: the journal fields CONN, PEER, TAGS and APP.
///
/// Made for the event, not kept for the connection's life: a live span would cost every idle
/// connection its formatted fields (about 450 bytes each, measured).
fn peer_span(shared: &Shared, peer: &Peer) -> tracing::Span {
    let tags = shared.hub.tags_of(peer.id).unwrap_or_default();
    let span = tracing::info_span!("conn", conn = peer.id, peer = %peer.address, tags = %tags,
        app = tracing::field::Empty);
    let kid = peer.token.as_deref().and_then(token::key_id);
    if let Some(app) = peer.credentials.key.as_deref().or(kid.as_deref()) {
        span.record("app", app);
    }
    span
}

/// A handshake that succeeded: what the connection opens with.
struct Opened {
    /// Tags, credentials and the accept key of the upgrade request.
    upgrade: Upgrade,
    /// permessage-deflate, when `messages.compression` is on and the client offered it.
    deflate: Option<deflate::Agreement>,
    /// Bytes the client sent after its request head (the first frames).
    leftover: BytesMut,
    /// The connection's place under `limits.max_connections`.
    slot: OwnedSemaphorePermit,
}

/// Reads the request head and decides: a plain HTTP request is answered here, a refused upgrade
/// gets its HTTP error; an accepted upgrade is returned, not yet answered.
async fn open<S>(
    shared: &Arc<Shared>,
    stream: &mut S,
    address: SocketAddr,
    deadline: Instant,
) -> Option<Opened>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffer = BytesMut::with_capacity(1024);
    let head = tokio::select! {
        head = read_head(stream, &mut buffer) => head,
        _ = tokio::time::sleep_until(deadline) => {
            debug!(peer = %address, "handshake timed out");
            return None;
        }
        _ = shared.shutdown.cancelled() => return None,
    };
    let head = match head {
        Ok(Some(head)) => head,
        Ok(None) => return None,
        Err(rejection) => {
            info!(peer = %address, status = rejection.status, reason = %rejection.reason, "bad request head refused");
            let _ = stream.write_all(&rejection.to_response()).await;
            return None;
        }
    };
    if !head.wants_websocket() {
        let endpoints = crate::net::http::Endpoints::main(&shared.config);
        crate::net::http::respond(shared, &head, stream, address, buffer, endpoints, deadline)
            .await;
        return None;
    }
    let limits = shared.config.limits.tag_limits();
    let opening = handshake::check_upgrade(&head, limits, &shared.config.server.allowed_origins)
        .and_then(|upgrade| match (&upgrade.since, &shared.history) {
            (Some(_), None) => Err(Rejection::new(
                400,
                "since: this server keeps no history ([history] size = 0)",
            )),
            _ => Ok(upgrade),
        })
        .map_err(OpenRefusal::of_upgrade)
        .and_then(|upgrade| {
            let tags = shared.auth.check_open(
                &upgrade.tags,
                &upgrade.credentials,
                upgrade.token.as_deref(),
                limits,
            )?;
            Ok(Upgrade { tags, ..upgrade })
        })
        .and_then(|upgrade| {
            let slot = shared.connection_slots.clone().try_acquire_owned();
            slot.map(|slot| (upgrade, slot))
                .map_err(|_| OpenRefusal::full())
        });
    let (upgrade, slot) = match opening {
        Ok(opening) => opening,
        Err(refusal) => {
            shared.metrics.open_refused(refusal.reason);
            let OpenRefusal { rejection, kid, .. } = refusal;
            // A client's mistake (or a full server), not the server's fault: notice, never an
            // error. The token itself is never logged: only its application's key.
            info!(peer = %address, status = rejection.status, reason = %rejection.reason,
                app = kid.as_deref().unwrap_or(""), "handshake refused");
            let _ = stream.write_all(&rejection.to_response()).await;
            return None;
        }
    };
    let deflate = (shared.config.messages.compression == CompressionMode::Shared)
        .then(|| deflate::negotiate(head.header_values("sec-websocket-extensions")))
        .flatten();
    Some(Opened {
        upgrade,
        deflate,
        leftover: buffer,
        slot,
    })
}

/// Reads until a whole request head is in `buffer`, leaving the bytes after it there. `Ok(None)`:
/// the stream ended or failed first.
pub async fn read_head<S: AsyncRead + Unpin>(
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
///
/// The reader reassembles what the client sends with `messages`, answers pings and closes, and
/// hands every whole data message ([`Incoming::Text`], or [`Incoming::Binary`] when `messages`
/// accepts it) to `on_message`; an error from it closes the connection with its reason, and so
/// does a frame that breaks the protocol; `on_refusal` hears of each such reason first. The
/// writers `on_message` queues frames to are woken once everything one read brought is handled
/// (see [`Wakeups`]). The writer drains `outbox`. Once closing started, the client has `grace`
/// to finish the closing handshake. The daemon routes requests here; the Autobahn echo server
/// (examples/) echoes.
///
/// Not an `async fn`: the halves are made here and only they are kept in the future, not a
/// second copy of the arguments they were made from (every idle connection carries it).
pub fn run_websocket<'a, S, F, R>(
    stream: S,
    outbox: &'a Outbox,
    messages: MessageReader,
    grace: Duration,
    on_message: F,
    on_refusal: R,
) -> impl Future<Output = Option<CloseReason>> + 'a
where
    S: Transport + 'a,
    F: FnMut(Incoming, &mut Wakeups) -> Result<(), CloseReason> + 'a,
    R: FnMut(&CloseReason) + 'a,
{
    let (read_half, write_half) = stream.split_for(outbox);
    let reader = read_loop(read_half, outbox, messages, on_message, on_refusal);
    let writer = write_loop(write_half, outbox);
    let closing_deadline = async move {
        outbox.closing_started().await;
        // Boxed: the timer exists only while closing, not in every idle connection.
        Box::pin(tokio::time::sleep(grace)).await;
    };
    Halves {
        outbox,
        reader,
        writer,
        closing_deadline,
        reader_done: false,
        writer_done: false,
    }
}

/// A stream a connection splits into its reader's and its writer's halves.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// What the reader reads from.
    type Reader: AsyncRead + Unpin;
    /// What the writer writes to.
    type Writer: AsyncWrite + Unpin;

    /// Splits the stream; a socket that pushes may write to at once is also handed to `outbox`
    /// ([`Outbox::write_through`]).
    fn split_for(self, outbox: &Outbox) -> (Self::Reader, Self::Writer);
}

/// Plain TCP: the router writes the last request of a read to idle clients' sockets itself.
impl Transport for TcpStream {
    type Reader = OwnedReadHalf;
    type Writer = SharedWriteHalf;

    fn split_for(self, outbox: &Outbox) -> (OwnedReadHalf, SharedWriteHalf) {
        let (read_half, write_half) = self.into_split();
        let write_half = Arc::new(write_half);
        outbox.write_through(write_half.clone());
        (read_half, SharedWriteHalf(write_half))
    }
}

/// TLS: records are sealed by the stream's one session, so only the writer writes.
impl<S: AsyncRead + AsyncWrite + Unpin> Transport for tokio_rustls::server::TlsStream<S> {
    type Reader = ReadHalf<Self>;
    type Writer = WriteHalf<Self>;

    fn split_for(self, _: &Outbox) -> (ReadHalf<Self>, WriteHalf<Self>) {
        tokio::io::split(self)
    }
}

/// The writer's half of a TCP socket that the outbox shares ([`Outbox::write_through`]).
pub struct SharedWriteHalf(Arc<OwnedWriteHalf>);

impl AsyncWrite for SharedWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let socket: &TcpStream = (*self.0).as_ref();
        loop {
            ready!(socket.poll_write_ready(cx))?;
            match socket.try_write_vectored(slices) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                written => return Poll::Ready(written),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shuts the write side down once the outbox let go of the socket (it does when closing);
    /// otherwise the last of them to go does, when dropped.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Arc::get_mut(&mut self.0) {
            Some(write_half) => Pin::new(write_half).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`run_websocket`]: its reader, writer and closing deadline, polled together
    /// until both halves are done, the write failed or the deadline passed.
    struct Halves<'a, R, W, C> {
        outbox: &'a Outbox,
        #[pin]
        reader: R,
        #[pin]
        writer: W,
        #[pin]
        closing_deadline: C,
        reader_done: bool,
        writer_done: bool,
    }
}

impl<R, W, C> Future for Halves<'_, R, W, C>
where
    R: Future<Output = ()>,
    W: Future<Output = std::io::Result<()>>,
    C: Future<Output = ()>,
{
    type Output = Option<CloseReason>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if !*this.reader_done && this.reader.as_mut().poll(cx).is_ready() {
            *this.reader_done = true;
        }
        if !*this.writer_done
            && let Poll::Ready(written) = this.writer.as_mut().poll(cx)
        {
            *this.writer_done = true;
            if written.is_err() {
                return Poll::Ready(this.outbox.closing());
            }
        }
        if (*this.reader_done && *this.writer_done) || this.closing_deadline.poll(cx).is_ready() {
            return Poll::Ready(this.outbox.closing());
        }
        Poll::Pending
    }
}

/// Reads frames until the client closes (or breaks the protocol, or the stream ends); hands data
/// messages to `on_message`; queues pongs and close frames; tells `on_refusal` why it closes
/// for the client's fault.
async fn read_loop<R, F, N>(
    mut stream: R,
    outbox: &Outbox,
    mut messages: MessageReader,
    mut on_message: F,
    mut on_refusal: N,
) where
    R: AsyncRead + Unpin,
    F: FnMut(Incoming, &mut Wakeups) -> Result<(), CloseReason>,
    N: FnMut(&CloseReason),
{
    let mut wakeups = Wakeups::default();
    loop {
        loop {
            let incoming = match messages.next_message() {
                Ok(Some(incoming)) => incoming,
                Ok(None) => break,
                Err(reason) => {
                    on_refusal(&reason);
                    outbox.close(reason);
                    // The client's bytes can no longer be framed: stop reading.
                    return;
                }
            };
            // The last request of what a read brought may be written at once to clients that
            // wait for nothing; those before it are left to the writers, to write as one.
            wakeups.set_write_through(!messages.has_unread());
            match incoming {
                Incoming::Text(_) | Incoming::Binary(_) => {
                    if outbox.closing().is_some() {
                        continue; // closing: data is ignored until the client's close
                    }
                    if let Err(reason) = on_message(incoming, &mut wakeups) {
                        on_refusal(&reason);
                        outbox.close(reason);
                    }
                }
                Incoming::Ping(payload) => {
                    outbox.push(&Outgoing::new(&frame::pong_frame(&payload)), &mut wakeups);
                }
                Incoming::Pong => {}
                Incoming::Close(reason) => {
                    let echo = reason.map_or(close_code::NORMAL, |reason| reason.code);
                    outbox.close(CloseReason::new(echo, ""));
                    return;
                }
            }
        }
        wakeups.wake_all();
        match stream.read_buf(messages.read_buffer()).await {
            Ok(0) | Err(_) => {
                outbox.abort();
                return;
            }
            Ok(read) => messages.note_read(read),
        }
    }
}

/// Parses, authorizes and routes one text message.
fn handle_text(
    shared: &Shared,
    peer: &Peer,
    text: &[u8],
    wakeups: &mut Wakeups,
) -> Result<(), CloseReason> {
    let text = std::str::from_utf8(text)
        .map_err(|_| CloseReason::new(close_code::INVALID_PAYLOAD, "text is not valid UTF-8"))?;
    let delivery = shared.handle_request(text, Source::Ws, None, wakeups)?;
    debug!(
        conn = peer.id,
        delivered = delivery.delivered,
        "request routed"
    );
    Ok(())
}

/// Writes what the outbox holds until the close frame is written or the connection aborts.
///
/// A socket that takes no byte for `limits.write_timeout_ms` while frames wait closes the
/// connection with 4429 ([`Slow::Timeout`]) and ends it at once: nothing more can reach the
/// client. When the client is closed for being slow meanwhile, what was taken is dropped (its
/// memory counts in the budget) but the rest of a frame partly written; the close frame follows.
async fn write_loop<W: AsyncWrite + Unpin>(mut stream: W, outbox: &Outbox) -> std::io::Result<()> {
    let mut batch = Batch::new();
    let timeout = outbox.limits().write_timeout;
    loop {
        match outbox.take(&mut batch).await {
            Next::Write => loop {
                tokio::select! {
                    written = write_batch(&mut stream, &mut batch, timeout) => {
                        if let Err(error) = written {
                            if error.kind() == std::io::ErrorKind::TimedOut {
                                outbox.close_slow(Slow::Timeout, Slow::Timeout.reason().into());
                            }
                            return Err(error);
                        }
                        break;
                    }
                    interrupted = outbox.interrupted() => match interrupted {
                        Interrupted::Abort => return Ok(()),
                        Interrupted::Discard => batch.drop_unstarted(),
                    },
                }
            },
            Next::Finished => {
                let _ = stream.shutdown().await;
                return Ok(());
            }
            Next::Abort => return Ok(()),
        }
    }
}

/// Writes every frame of `batch` with as few vectored writes as the stream allows; fails with
/// `TimedOut` when the stream takes no byte for `timeout`.
async fn write_batch<W: AsyncWrite + Unpin>(
    stream: &mut W,
    batch: &mut Batch,
    timeout: Duration,
) -> std::io::Result<()> {
    while !batch.is_done() {
        // The slices are made on each poll, on the stack: nothing is allocated per write and
        // no idle connection's task carries them. The timer exists only once the socket is
        // full, not for every write.
        let mut stalled: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let written = poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); TAKE_AT_MOST + 1];
            let count = batch.slices(&mut slices);
            if let Poll::Ready(written) =
                Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..count])
            {
                return Poll::Ready(written);
            }
            let timer = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            ready!(timer.as_mut().poll(cx));
            Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
        })
        .await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        batch.advance(written);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Admits until the bucket is empty, counting the requests it took.
    fn admitted_in_a_row(limit: &mut RateLimit) -> u32 {
        let mut admitted = 0;
        while limit.admit().is_ok() {
            admitted += 1;
        }
        admitted
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_admits_one_second_of_requests_then_refuses_with_4429() {
        let mut limit = RateLimit::new(5);
        assert_eq!(admitted_in_a_row(&mut limit), 5);
        let refused = limit.admit().unwrap_err();
        assert_eq!(refused.code, close_code::TOO_MANY);
        assert_eq!(refused.reason, "too many requests: at most 5 per second");
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_refills_with_time_and_never_beyond_one_second() {
        let mut limit = RateLimit::new(10);
        assert_eq!(admitted_in_a_row(&mut limit), 10);
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(admitted_in_a_row(&mut limit), 3);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(admitted_in_a_row(&mut limit), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_means_no_limit() {
        let mut limit = RateLimit::new(0);
        for _ in 0..100_000 {
            assert!(limit.admit().is_ok());
        }
    }
}
