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
pub(crate) mod tests {
    use std::cell::RefCell;

    use bytes::{Bytes, BytesMut};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::routing::outbox::SendLimits;

    /// A client's frame: FIN set, masked (as RFC 6455 wants from a client), with `opcode`.
    pub(crate) fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        frame::push_masked_frame(&mut frame, 0x80 | opcode, payload, [0x12, 0x34, 0x56, 0x78]);
        frame
    }

    /// Reads one server frame (unmasked, not fragmented): its opcode and payload; `None` at
    /// the end of the stream. Fails the test when nothing comes for 10 s (at once under paused
    /// time: the streams are in memory, so an idle runtime means nothing will come).
    pub(crate) async fn server_frame(client: &mut DuplexStream) -> Option<(u8, Vec<u8>)> {
        let frame = async {
            let mut head = [0u8; 2];
            client.read_exact(&mut head).await.ok()?;
            assert_eq!(head[0] & 0x80, 0x80, "FIN");
            assert_eq!(head[1] & 0x80, 0, "a server's frame is not masked");
            let length = match head[1] & 0x7f {
                126 => client.read_u16().await.ok()? as usize,
                127 => client.read_u64().await.ok()? as usize,
                length => length as usize,
            };
            let mut payload = vec![0; length];
            client.read_exact(&mut payload).await.ok()?;
            Some((head[0] & 0x0f, payload))
        };
        tokio::time::timeout(Duration::from_secs(10), frame)
            .await
            .expect("a frame, or the end of the stream, within 10 s")
    }

    /// The code of a close frame's payload.
    pub(crate) fn close_code_of(payload: &[u8]) -> u16 {
        u16::from_be_bytes([payload[0], payload[1]])
    }

    fn outbox() -> Outbox {
        Outbox::new(SendLimits::new(
            1 << 20,
            Duration::from_secs(10),
            usize::MAX,
        ))
    }

    fn reader() -> MessageReader {
        MessageReader::new(64 * 1024, BytesMut::new())
    }

    #[tokio::test]
    async fn the_reader_hands_over_each_text_message_and_answers_a_ping() {
        let (mut client, served) = tokio::io::duplex(4096);
        let outbox = outbox();
        let received = RefCell::new(Vec::new());
        let on_message = |message, _: &mut Wakeups| {
            if let Incoming::Text(text) = message {
                received
                    .borrow_mut()
                    .push(String::from_utf8(text.to_vec()).unwrap());
            }
            Ok(())
        };
        let connection = run_websocket(
            served,
            split,
            &outbox,
            reader(),
            Duration::from_secs(1),
            on_message,
            |_: &CloseReason| {},
        );
        let client_side = async {
            let mut sent = client_frame(0x1, b"first");
            sent.extend(client_frame(0x9, b"are you there"));
            sent.extend(client_frame(0x1, b"second"));
            client.write_all(&sent).await.unwrap();
            assert_eq!(
                server_frame(&mut client).await,
                Some((0xA, b"are you there".to_vec()))
            );
            client
                .write_all(&client_frame(0x8, &1000u16.to_be_bytes()))
                .await
                .unwrap();
            let (opcode, payload) = server_frame(&mut client).await.unwrap();
            assert_eq!((opcode, close_code_of(&payload)), (0x8, close_code::NORMAL));
            assert_eq!(
                server_frame(&mut client).await,
                None,
                "the stream ends after the close"
            );
        };
        let (closed, ()) = tokio::join!(connection, client_side);
        assert_eq!(closed.unwrap().code, close_code::NORMAL);
        assert_eq!(*received.borrow(), ["first", "second"]);
    }

    #[tokio::test]
    async fn a_refused_message_and_a_broken_frame_close_with_their_codes() {
        for (sent, code) in [
            // The caller refuses the message (the daemon: an invalid request).
            (client_frame(0x1, b"refused"), close_code::INVALID_REQUEST),
            // Not masked: the client broke the protocol.
            (vec![0x81, 0x02, b'h', b'i'], close_code::PROTOCOL_ERROR),
        ] {
            let (mut client, served) = tokio::io::duplex(4096);
            let outbox = outbox();
            let refusals = RefCell::new(Vec::new());
            let refuse =
                |_, _: &mut Wakeups| Err(CloseReason::new(close_code::INVALID_REQUEST, "no"));
            let on_refusal = |reason: &CloseReason| refusals.borrow_mut().push(reason.code);
            let connection = run_websocket(
                served,
                split,
                &outbox,
                reader(),
                Duration::from_secs(1),
                refuse,
                on_refusal,
            );
            let client_side = async {
                client.write_all(&sent).await.unwrap();
                let (opcode, payload) = server_frame(&mut client).await.unwrap();
                assert_eq!((opcode, close_code_of(&payload)), (0x8, code));
                // The reader stopped at a broken frame: the stream may be gone already.
                let _ = client
                    .write_all(&client_frame(0x8, &code.to_be_bytes()))
                    .await;
            };
            let (closed, ()) = tokio::join!(connection, client_side);
            assert_eq!(closed.unwrap().code, code);
            assert_eq!(*refusals.borrow(), [code]);
        }
    }

    #[tokio::test]
    async fn the_writer_writes_queued_frames_in_order_then_the_close_frame_last() {
        let (mut client, served) = tokio::io::duplex(64);
        let outbox = outbox();
        let mut wakeups = Wakeups::default();
        let frames: Vec<Bytes> = (0..50)
            .map(|n| frame::text_frame(&format!("\"{n}\"")))
            .collect();
        for frame in &frames {
            outbox.push(&Outgoing::new(frame), &mut wakeups);
        }
        wakeups.wake_all();
        let (_, write_half) = split(served, &outbox);
        let client_side = async {
            let mut received = Vec::new();
            for _ in &frames {
                received.push(server_frame(&mut client).await.unwrap());
            }
            // Closing drops what still waits: closed once all was read, the close comes last.
            outbox.close(CloseReason::new(close_code::GOING_AWAY, "bye"));
            while let Some(frame) = server_frame(&mut client).await {
                received.push(frame);
            }
            received
        };
        let (written, received) = tokio::join!(write_loop(write_half, &outbox), client_side);
        written.unwrap();
        let (close, texts) = received.split_last().unwrap();
        assert_eq!(
            (close.0, close_code_of(&close.1)),
            (0x8, close_code::GOING_AWAY)
        );
        let expected: Vec<_> = (0..50)
            .map(|n| (0x1, format!("\"{n}\"").into_bytes()))
            .collect();
        assert_eq!(texts, expected);
    }

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
