//! An upgraded WebSocket connection's two halves, over any `AsyncRead + AsyncWrite` stream.
//!
//! The reader turns frames into messages and hands them to the caller (the daemon routes them,
//! the Autobahn echo server echoes them); the writer drains the connection's [`Outbox`] into
//! vectored writes. Both are generic over the stream, so a unit test drives them through
//! [`tokio::io::duplex`]. How the stream is split is the caller's: [`split`] for any stream
//! (TLS: records are sealed by the stream's one session, so only the writer writes), or
//! [`split_tcp`] for plain TCP, whose socket the outbox may also write to at once
//! ([`Outbox::write_through`]).

use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

use crate::routing::outbox::{
    Batch, Interrupted, Next, Outbox, Outgoing, Slow, TAKE_AT_MOST, Wakeups,
};
use crate::wire::frame::{self, CloseReason, Incoming, MessageReader, close_code};

/// Runs an upgraded connection until both sides are done; returns why it closed.
///
/// `split` makes the reader's and the writer's halves of `stream` ([`split`], [`split_tcp`]).
/// The reader reassembles what the client sends with `messages`, answers pings and closes, and
/// hands every whole data message ([`Incoming::Text`], or [`Incoming::Binary`] when `messages`
/// accepts it) to `on_message`; an error from it closes the connection with its reason, and so
/// does a frame that breaks the protocol; `on_refusal` hears of each such reason first. The
/// writers `on_message` queues frames to are woken once everything one read brought is handled
/// (see [`Wakeups`]). The writer drains `outbox`. Once closing started, the client has `grace`
/// to finish the closing handshake.
///
/// Not an `async fn`: the halves are made here and only they are kept in the future, not a
/// second copy of the arguments they were made from (every idle connection carries it).
pub fn run_websocket<'a, S, P, R, W, F, N>(
    stream: S,
    split: P,
    outbox: &'a Outbox,
    messages: MessageReader,
    grace: Duration,
    on_message: F,
    on_refusal: N,
) -> impl Future<Output = Option<CloseReason>> + 'a
where
    P: FnOnce(S, &Outbox) -> (R, W),
    R: AsyncRead + Unpin + 'a,
    W: AsyncWrite + Unpin + 'a,
    F: FnMut(Incoming, &mut Wakeups) -> Result<(), CloseReason> + 'a,
    N: FnMut(&CloseReason) + 'a,
{
    let (read_half, write_half) = split(stream, outbox);
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

/// Splits any stream: only the writer writes to it.
pub fn split<S: AsyncRead + AsyncWrite>(stream: S, _: &Outbox) -> (ReadHalf<S>, WriteHalf<S>) {
    tokio::io::split(stream)
}

/// Splits a plain TCP socket and hands its writing side to `outbox` too: the router may write
/// the last request of a read to an idle client's socket itself ([`Outbox::write_through`]).
pub fn split_tcp(stream: TcpStream, outbox: &Outbox) -> (OwnedReadHalf, SharedWriteHalf) {
    let (read_half, write_half) = stream.into_split();
    let write_half = Arc::new(write_half);
    outbox.write_through(write_half.clone());
    (read_half, SharedWriteHalf(write_half))
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
pub(crate) struct RateLimit {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(per_second: u32) -> RateLimit {
        RateLimit {
            per_second: per_second as f64,
            tokens: per_second as f64,
            last: Instant::now(),
        }
    }

    pub(crate) fn admit(&mut self) -> Result<(), CloseReason> {
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
