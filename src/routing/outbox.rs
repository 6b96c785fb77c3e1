//! The bounded queue of frames waiting to be written to one client.
//!
//! The router pushes with [`Outbox::push`], which never waits: when a client already has
//! `limits.send_queue` frames waiting, it is too slow to read, and its queue is replaced by a
//! close frame (4429). The connection's writer takes everything queued at once
//! ([`Outbox::take`]) and writes it in one vectored write. An idle outbox holds no allocation.
//!
//! A push does not wake the writer itself: it hands the writer's waker to the router's
//! [`Wakeups`], which wakes every recipient once the router is done with what it read. A
//! publisher whose one read brought a hundred requests thus wakes each recipient once, and the
//! recipient writes its hundred frames with one write instead of a hundred.
//!
//! When the reader hands the router the last request of what one read brought (at low load, the
//! only one), a push of a frame of up to 16 KiB to a client with nothing waiting and an idle
//! writer writes it to the client's socket at once (plain TCP only, see
//! [`Outbox::write_through`]): waking a writer task to write one frame costs as much as the
//! write. The requests before it are left to the writers, each writing its client's share of the
//! batch with one write; so are a request's recipients past the first
//! `WRITE_THROUGH_PER_REQUEST`, so that a message to thousands is not written to each in turn
//! by one task (the other runtime threads write their share, and the hub is not held as long).
//! What a socket does not take at once is queued for the writer; should the connection close
//! meanwhile, that rest of a frame is still written before the close frame.
//!
//! A small frame is copied into the end of the queue's current buffer rather than shared: for a
//! frame of a few dozen bytes the copy costs less than counting a shared reference up here and
//! down after the write (every recipient's core touching the same counter), and the writer then
//! hands the kernel one slice for many frames instead of one slice each. At most
//! 64 KiB (`COPY_BUDGET`) are copied per queue: past that (a client that stopped reading), frames
//! are shared again, so a slow reader holds no more than that of private copies.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::net::tcp::OwnedWriteHalf;

use crate::wire::frame::{self, CloseReason, close_code};

/// The reason of the close (4429) of a client whose queue overflowed: too slow to read.
pub const SLOW_CLIENT: &str = "send queue overflow: the client reads too slowly";

/// One client's queue of outgoing frames.
///
/// One task waits on it: the connection's, whose writer and closing timer share its waker.
/// It keeps one waker, so a second task waiting on the same outbox would not be woken.
pub struct Outbox {
    state: Mutex<State>,
    /// Frames a client may have waiting before it counts as too slow.
    capacity: usize,
}

/// Frames up to this size are copied into the queue; larger ones are shared.
const COPY_UP_TO: usize = 1024;
/// Bytes a queue copies at most before it shares frames again (until the writer takes them).
const COPY_BUDGET: usize = 64 * 1024;
/// Recipients of one request that the router writes to itself, at most.
const WRITE_THROUGH_PER_REQUEST: usize = 128;
/// Frames up to this size may be written through; larger ones are left to the writer.
const WRITE_THROUGH_UP_TO: usize = 16 * 1024;

/// The frames waiting, in order: runs of small frames copied end to end into one buffer, larger
/// frames as they are.
#[derive(Default)]
struct Queue {
    /// The rest of a frame whose start was written through: first out, and kept when closing
    /// drops the rest of the queue (the client is in the middle of it).
    started: Option<Bytes>,
    chunks: VecDeque<Bytes>,
    /// Small frames queued after the last chunk.
    tail: BytesMut,
    frames: usize,
    /// Bytes copied since the writer last took the queue.
    copied: usize,
}

impl Queue {
    fn push(&mut self, frame: &Bytes) {
        if frame.len() <= COPY_UP_TO && self.copied + frame.len() <= COPY_BUDGET {
            self.copied += frame.len();
            // Starts small and doubles as frames arrive: a message to every idle connection
            // allocates little for each (what malloc keeps after a burst stays in the RSS).
            self.tail.extend_from_slice(frame);
        } else {
            self.seal_tail();
            self.chunks.push_back(frame.clone());
        }
        self.frames += 1;
    }

    /// Queues what a write through left of `frame`; the queue is empty.
    fn push_started(&mut self, rest: Bytes) {
        self.started = Some(rest);
        self.frames += 1;
    }

    /// Drops every frame but the rest of a started one.
    fn drop_unstarted(&mut self) {
        let started = self.started.take();
        *self = Queue {
            frames: usize::from(started.is_some()),
            started,
            ..Queue::default()
        };
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.chunks
                .push_back(std::mem::take(&mut self.tail).freeze());
        }
    }

    /// Moves every frame into `batch`, as few slices as there are chunks.
    fn drain_into(&mut self, batch: &mut Vec<Bytes>) {
        self.seal_tail();
        batch.extend(self.started.take());
        batch.extend(self.chunks.drain(..));
        if self.chunks.capacity() > 64 {
            self.chunks.shrink_to_fit();
        }
        self.frames = 0;
        self.copied = 0;
    }
}

#[derive(Default)]
struct State {
    queue: Queue,
    /// Set once the connection is closing: the close frame to write after `queue`, until taken.
    close_frame: Option<Bytes>,
    /// Why the connection is closing, once it is.
    closing: Option<CloseReason>,
    /// The writer must stop at once, without writing anything more.
    aborted: bool,
    /// The connection task while it waits for a change; taken by the change that wakes it.
    waiter: Option<Waker>,
    /// The socket, while a push may write to it directly: plain TCP, until closing.
    socket: Option<Arc<OwnedWriteHalf>>,
    /// The writer took frames and has not finished writing them (stays set after a write that
    /// failed or was abandoned: the writer is done).
    writing: bool,
}

impl State {
    /// Remembers `cx`'s task as the one to wake on the next change.
    fn wait(&mut self, cx: &Context<'_>) {
        if !self
            .waiter
            .as_ref()
            .is_some_and(|waiter| waiter.will_wake(cx.waker()))
        {
            self.waiter = Some(cx.waker().clone());
        }
    }
}

/// What [`Outbox::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Written to the socket at once, or queued for the writer.
    Accepted,
    /// The queue was full: the connection is now closing with 4429 and the frame was dropped.
    Overflowed,
    /// The connection was already closing: the frame was dropped.
    Closed,
}

/// What the writer should do next, from [`Outbox::take`].
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Write these frames (the last one may be the close frame), then take again.
    Write,
    /// Everything including the close frame was written: shut the socket down.
    Finished,
    /// Stop without writing anything more.
    Abort,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` frames.
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Releases the lock, then wakes the waiting task, if any.
    fn wake_now(mut state: MutexGuard<'_, State>) {
        let waiter = state.waiter.take();
        drop(state);
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }

    /// Lets a push write to `socket` itself when `wakeups` allows it, nothing is waiting and
    /// the writer is idle; see the module docs. Until the connection starts closing (ignored
    /// when it already has: only the writer writes, and shuts the socket down).
    pub fn write_through(&self, socket: Arc<OwnedWriteHalf>) {
        let mut state = self.lock();
        if state.closing.is_none() {
            state.socket = Some(socket);
        }
    }

    /// Queues a frame, or writes it at once (see [`Outbox::write_through`]), without waiting;
    /// see [`Pushed`]. The writer, when this frame is the first one waiting, joins `wakeups`.
    pub fn push(&self, frame: &Bytes, wakeups: &mut Wakeups) -> Pushed {
        let mut state = self.lock();
        if state.closing.is_some() {
            return Pushed::Closed;
        }
        if state.queue.frames >= self.capacity {
            drop(state);
            self.close(CloseReason::new(close_code::TOO_MANY, SLOW_CLIENT));
            return Pushed::Overflowed;
        }
        let was_empty = state.queue.frames == 0;
        match &state.socket {
            Some(socket)
                if was_empty
                    && wakeups.write_through > 0
                    && !state.writing
                    && frame.len() <= WRITE_THROUGH_UP_TO =>
            {
                wakeups.write_through -= 1;
                match socket.try_write(frame) {
                    Ok(written) if written == frame.len() => return Pushed::Accepted,
                    Ok(written) => state.queue.push_started(frame.slice(written..)),
                    // The socket's buffer is full (the writer waits for room) or the write
                    // failed (the writer fails the same way and ends the connection).
                    Err(_) => state.queue.push(frame),
                }
            }
            _ => state.queue.push(frame),
        }
        if was_empty && let Some(waiter) = state.waiter.take() {
            drop(state);
            wakeups.wakers.push(waiter);
        }
        Pushed::Accepted
    }

    /// Starts closing with `reason`: frames still queued are dropped (but the rest of one
    /// partly written) and the close frame is written next. Returns false when the outbox was
    /// already closing (the first reason wins).
    pub fn close(&self, reason: CloseReason) -> bool {
        let mut state = self.lock();
        if state.closing.is_some() {
            return false;
        }
        state.queue.drop_unstarted();
        state.socket = None;
        state.close_frame = Some(frame::close_frame(&reason));
        state.closing = Some(reason);
        Outbox::wake_now(state);
        true
    }

    /// Makes the writer stop without writing anything more (the peer is gone).
    pub fn abort(&self) {
        let mut state = self.lock();
        state.aborted = true;
        state.socket = None;
        if state.closing.is_none() {
            state.closing = Some(CloseReason::new(close_code::ABNORMAL, "aborted"));
        }
        Outbox::wake_now(state);
    }

    /// Why the connection is closing, once it is.
    pub fn closing(&self) -> Option<CloseReason> {
        self.lock().closing.clone()
    }

    /// Number of frames waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.frames
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until there is something to do, then moves every waiting frame into `batch`.
    pub async fn take(&self, batch: &mut Vec<Bytes>) -> Next {
        poll_fn(|cx| {
            let mut state = self.lock();
            // Called again: what the last call took is written.
            state.writing = false;
            if state.aborted {
                return Poll::Ready(Next::Abort);
            }
            if state.queue.frames > 0 || state.close_frame.is_some() {
                state.queue.drain_into(batch);
                batch.extend(state.close_frame.take());
                state.writing = true;
                return Poll::Ready(Next::Write);
            }
            if state.closing.is_some() {
                return Poll::Ready(Next::Finished);
            }
            state.wait(cx);
            Poll::Pending
        })
        .await
    }

    /// Resolves once the outbox is aborted; lets the writer abandon a write that blocks.
    pub async fn aborted(&self) {
        self.wait_for(|state| state.aborted).await
    }

    /// Resolves once the connection started closing.
    pub async fn closing_started(&self) {
        self.wait_for(|state| state.closing.is_some()).await
    }

    async fn wait_for(&self, condition: impl Fn(&State) -> bool) {
        poll_fn(|cx| {
            let mut state = self.lock();
            if condition(&state) {
                return Poll::Ready(());
            }
            state.wait(cx);
            Poll::Pending
        })
        .await
    }
}

/// The writers to wake once a router is done queuing a batch of frames; see the module docs.
/// Dropping it wakes whoever is still in it, so no wake-up is ever lost.
#[derive(Default)]
pub struct Wakeups {
    wakers: Vec<Waker>,
    /// How many more pushes may write to sockets at once (for the request being routed).
    write_through: usize,
}

impl Wakeups {
    /// Lets the pushes that follow write frames to idle clients' sockets at once (`true`, for
    /// the last request of a read, nothing more to batch it with: up to
    /// `WRITE_THROUGH_PER_REQUEST` of them) or leaves every frame to the writers (`false`, the
    /// default: more requests are coming, and each writer will write its share with one write).
    pub fn set_write_through(&mut self, allowed: bool) {
        self.write_through = if allowed {
            WRITE_THROUGH_PER_REQUEST
        } else {
            0
        };
    }

    /// Wakes every writer collected so far.
    pub fn wake_all(&mut self) {
        for waker in self.wakers.drain(..) {
            waker.wake();
        }
        // A broadcast to thousands grew it: do not keep that in an idle connection.
        if self.wakers.capacity() > 1024 {
            self.wakers = Vec::new();
        }
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_replaces_the_queue_with_a_close_frame() {
        let outbox = Outbox::new(2);
        assert_eq!(
            outbox.push(&Bytes::from_static(b"1"), &mut Wakeups::default()),
            Pushed::Accepted
        );
        assert_eq!(
            outbox.push(&Bytes::from_static(b"2"), &mut Wakeups::default()),
            Pushed::Accepted
        );
        assert_eq!(
            outbox.push(&Bytes::from_static(b"3"), &mut Wakeups::default()),
            Pushed::Overflowed
        );
        assert_eq!(
            outbox.push(&Bytes::from_static(b"4"), &mut Wakeups::default()),
            Pushed::Closed
        );
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(batch.len(), 1);
        assert_eq!(&batch[0][2..4], &4429u16.to_be_bytes());
        batch.clear();
        assert_eq!(outbox.take(&mut batch).await, Next::Finished);
    }

    #[tokio::test]
    async fn take_drains_everything_then_waits() {
        let outbox = std::sync::Arc::new(Outbox::new(10));
        outbox.push(&Bytes::from_static(b"1"), &mut Wakeups::default());
        outbox.push(&Bytes::from_static(b"2"), &mut Wakeups::default());
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(batch.concat(), b"12");
        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.take(&mut Vec::new()).await })
        };
        outbox.abort();
        assert_eq!(waiting.await.unwrap(), Next::Abort);
    }

    #[tokio::test]
    async fn small_frames_are_copied_end_to_end_large_ones_shared_in_order() {
        let outbox = Outbox::new(10);
        let large = Bytes::from(vec![b'L'; COPY_UP_TO + 1]);
        let mut wakeups = Wakeups::default();
        for frame in [
            &Bytes::from_static(b"ab"),
            &Bytes::from_static(b"c"),
            &large,
        ] {
            outbox.push(frame, &mut wakeups);
        }
        outbox.push(&Bytes::from_static(b"d"), &mut wakeups);
        assert_eq!(outbox.len(), 4);
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(batch.len(), 3, "two copied runs around the shared frame");
        assert_eq!(batch[0], &b"abc"[..]);
        assert_eq!(
            batch[1].as_ptr(),
            large.as_ptr(),
            "the large frame is not copied"
        );
        assert_eq!(batch[2], &b"d"[..]);
        assert!(outbox.is_empty());
    }

    #[tokio::test]
    async fn a_queue_copies_at_most_its_budget_then_shares() {
        let frame = Bytes::from(vec![b'f'; COPY_UP_TO]);
        let frames = COPY_BUDGET / COPY_UP_TO + 3;
        let outbox = Outbox::new(frames);
        let mut wakeups = Wakeups::default();
        for _ in 0..frames {
            outbox.push(&frame, &mut wakeups);
        }
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(
            batch[0].len(),
            COPY_BUDGET,
            "one copied run, as long as the budget"
        );
        assert_eq!(batch.len(), 4);
        assert!(
            batch[1..]
                .iter()
                .all(|shared| shared.as_ptr() == frame.as_ptr())
        );
    }

    /// Counts how often its task was woken.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waiting_writer_is_woken_once_per_batch_of_pushes() {
        let counter = std::sync::Arc::new(CountingWaker(Default::default()));
        let waker = Waker::from(counter.clone());
        let woken = || counter.0.load(std::sync::atomic::Ordering::SeqCst);
        let mut cx = Context::from_waker(&waker);
        let outbox = Outbox::new(10);
        let mut batch = Vec::new();
        let mut take = Box::pin(outbox.take(&mut batch));
        assert!(take.as_mut().poll(&mut cx).is_pending());
        let mut wakeups = Wakeups::default();
        for frame in [&b"1"[..], b"2", b"3"] {
            assert_eq!(
                outbox.push(&Bytes::from_static(frame), &mut wakeups),
                Pushed::Accepted
            );
        }
        assert_eq!(woken(), 0, "pushes alone wake nobody");
        wakeups.wake_all();
        assert_eq!(woken(), 1, "the batch wakes the writer once");
        assert_eq!(take.as_mut().poll(&mut cx), Poll::Ready(Next::Write));
        drop(take);
        assert_eq!(batch.concat(), b"123");
        batch.clear();
        let mut take = Box::pin(outbox.take(&mut batch));
        assert!(take.as_mut().poll(&mut cx).is_pending());
        outbox.push(&Bytes::from_static(b"4"), &mut Wakeups::default());
        assert_eq!(woken(), 2, "dropping the wake-ups wakes whoever is in them");
        assert_eq!(take.as_mut().poll(&mut cx), Poll::Ready(Next::Write));
    }

    /// A real loopback connection: the server's write half and the client's end. Both ends
    /// have small socket buffers: a client that does not read soon blocks a write.
    async fn connection() -> (OwnedWriteHalf, tokio::net::TcpStream) {
        let listening = tokio::net::TcpSocket::new_v4().unwrap();
        listening.set_send_buffer_size(4096).unwrap(); // inherited by accepted sockets
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listening.listen(1).unwrap();
        let connecting = tokio::net::TcpSocket::new_v4().unwrap();
        connecting.set_recv_buffer_size(4096).unwrap();
        let client = connecting
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server.into_split().1, client)
    }

    /// An outbox writing through to a real loopback socket, and the client's end of it.
    async fn written_through() -> (Outbox, tokio::net::TcpStream) {
        let (write_half, client) = connection().await;
        let outbox = Outbox::new(1000);
        outbox.write_through(Arc::new(write_half));
        (outbox, client)
    }

    fn lone_request() -> Wakeups {
        let mut wakeups = Wakeups::default();
        wakeups.set_write_through(true);
        wakeups
    }

    /// Reads exactly `expected.len()` bytes from `client` (bounded) and compares them.
    async fn client_reads(client: &mut tokio::net::TcpStream, expected: &[u8]) {
        use tokio::io::AsyncReadExt;
        let mut read = vec![0; expected.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_exact(&mut read),
        )
        .await
        .expect("the bytes arrive")
        .unwrap();
        assert_eq!(read, expected);
    }

    #[tokio::test]
    async fn a_lone_request_is_written_at_once_only_to_an_idle_writer_with_nothing_waiting() {
        let (outbox, mut client) = written_through().await;
        let frame = |text: &'static str| Bytes::from_static(text.as_bytes());
        assert_eq!(
            outbox.push(&frame("1"), &mut lone_request()),
            Pushed::Accepted
        );
        assert!(outbox.is_empty(), "written, not queued");
        client_reads(&mut client, b"1").await;

        // A batch is left to the writer; a lone request behind it waits its turn.
        outbox.push(&frame("2"), &mut Wakeups::default());
        outbox.push(&frame("3"), &mut lone_request());
        assert_eq!(outbox.len(), 2);
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(batch.concat(), b"23");
        // The writer is writing what it took: what comes now waits behind it.
        outbox.push(&frame("4"), &mut lone_request());
        assert_eq!(outbox.len(), 1);
        batch.clear();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(batch.concat(), b"4");

        // Back in `take` with nothing waiting, the writer is idle: written at once again.
        batch.clear();
        let mut take = Box::pin(outbox.take(&mut batch));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(take.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            outbox.push(&frame("5"), &mut lone_request()),
            Pushed::Accepted
        );
        assert!(outbox.is_empty());
        client_reads(&mut client, b"5").await;

        // Closing lets go of the socket: only the writer writes the close frame.
        outbox.close(CloseReason::new(close_code::NORMAL, ""));
        assert_eq!(
            outbox.push(&frame("6"), &mut lone_request()),
            Pushed::Closed
        );
        assert_eq!(take.as_mut().poll(&mut cx), Poll::Ready(Next::Write));
        assert!(outbox.lock().socket.is_none());
    }

    #[tokio::test]
    async fn a_lone_request_writes_through_to_a_bounded_number_of_recipients() {
        let (outbox, mut client) = written_through().await;
        let mut wakeups = lone_request();
        for _ in 0..WRITE_THROUGH_PER_REQUEST {
            assert_eq!(
                outbox.push(&Bytes::from_static(b"w"), &mut wakeups),
                Pushed::Accepted
            );
        }
        assert!(outbox.is_empty());
        client_reads(&mut client, &[b'w'; WRITE_THROUGH_PER_REQUEST]).await;
        outbox.push(&Bytes::from_static(b"q"), &mut wakeups);
        assert_eq!(
            outbox.len(),
            1,
            "past the bound, frames are left to the writer"
        );
    }

    #[tokio::test]
    async fn the_rest_of_a_frame_partly_written_through_is_written_even_when_closing() {
        let (outbox, mut client) = written_through().await;
        let mut written_through = Vec::new();
        let mut rest = None;
        // The client does not read: within a few frames the socket takes only part of one.
        for fill in 0..64u8 {
            let frame = Bytes::from(vec![fill; WRITE_THROUGH_UP_TO]);
            assert_eq!(outbox.push(&frame, &mut lone_request()), Pushed::Accepted);
            if outbox.is_empty() {
                written_through.extend_from_slice(&frame);
                continue;
            }
            // Closing drops what is queued, but not the end of a frame the client is reading.
            outbox.push(&Bytes::from_static(b"dropped"), &mut lone_request());
            assert_eq!(outbox.len(), 2);
            outbox.close(CloseReason::new(close_code::TOO_MANY, "slow"));
            let mut batch = Vec::new();
            assert_eq!(outbox.take(&mut batch).await, Next::Write);
            assert_eq!(
                batch.len(),
                2,
                "the rest of the frame, then the close frame"
            );
            let written = frame.len() - batch[0].len();
            assert!(written > 0, "a part of the frame was written through");
            assert_eq!(batch[0], frame[written..]);
            assert_eq!(&batch[1][2..4], &4429u16.to_be_bytes());
            written_through.extend_from_slice(&frame[..written]);
            rest = Some(batch);
            break;
        }
        assert!(rest.is_some(), "the socket never refused a part of a frame");
        client_reads(&mut client, &written_through).await;
    }

    #[tokio::test]
    async fn large_frames_and_closed_connections_are_left_to_the_writer() {
        let (outbox, _client) = written_through().await;
        let large = Bytes::from(vec![b'L'; WRITE_THROUGH_UP_TO + 1]);
        outbox.push(&large, &mut lone_request());
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(batch.len(), 1);
        assert_eq!(
            batch[0].as_ptr(),
            large.as_ptr(),
            "queued whole, nothing written through"
        );

        let closed = Outbox::new(10);
        closed.close(CloseReason::new(close_code::NORMAL, ""));
        let (write_half, _client) = connection().await;
        closed.write_through(Arc::new(write_half));
        assert!(
            closed.lock().socket.is_none(),
            "closing: only the writer writes"
        );
    }
}
