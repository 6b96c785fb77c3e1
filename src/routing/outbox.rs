//! The queue of frames waiting to be written to one client, and the limits all queues share.
//!
//! The router pushes with [`Outbox::push`], which never waits, so a publisher is never slowed
//! down by a recipient. A client is judged slow by bytes and time, never by a count of messages
//! (SPEC §1 "Slow clients"): it is closed with 4429 when the frames waiting for it would pass
//! `limits.send_queue_bytes` ([`Slow::Bytes`]), when its socket took no byte for
//! `limits.write_timeout_ms` while frames waited ([`Slow::Timeout`], judged by the writer), or
//! when all queues together hold more than `limits.max_queued_bytes` and its backlog is among the
//! largest ([`Slow::Budget`], judged by the hub after routing). Closing a slow client drops what
//! waits for it at once, including what its writer took and has not started writing: its memory
//! is back before the next request is routed.
//!
//! A queued delivery costs two bytes: a frame is made shared once, by the first queue that keeps
//! it, by appending it to the server's [`FrameLog`]; each queue keeps its index in the log's
//! segment, and one handle per segment it has frames waiting in, however many they are. A
//! segment is freed when the last queue lets go of it. Frames larger than `LOG_UP_TO` are
//! shared one by one instead ([`Waiting`], a pointer per delivery, small beside such a frame).
//! The memory [`SendLimits::queued_bytes`] counts is what the queues really hold: each segment
//! and shared frame once, each client's private copies, its indices and handles.
//!
//! The connection's writer takes what is queued ([`Outbox::take`], a bounded number of entries
//! at a time) and writes it in one vectored write. An idle outbox holds no allocation.
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
//! `COPY_BUDGET` bytes are copied per queue between two takes: past that (a client that reads
//! less than it is sent), frames are shared, so a backlog costs a pointer per frame, not a copy.

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::tcp::OwnedWriteHalf;

use crate::routing::frame_log::{FrameLog, QueuedMemory, Segment};
use crate::wire::frame::{self, CloseReason, close_code};

/// The reason of the close (4429) of a client whose queue overflowed: too slow to read.
pub const SLOW_CLIENT: &str = "send queue overflow: the client reads too slowly";

/// Frames up to this size are copied into the queue; larger ones are shared.
const COPY_UP_TO: usize = 1024;
/// Bytes a queue copies at most before it shares frames again (until the writer takes them).
const COPY_BUDGET: usize = 4 * 1024;
/// Recipients of one request that the router writes to itself, at most.
const WRITE_THROUGH_PER_REQUEST: usize = 128;
/// Frames up to this size may be written through; larger ones are left to the writer.
const WRITE_THROUGH_UP_TO: usize = 16 * 1024;
/// Frames up to this size are shared through the [`FrameLog`]; larger ones one by one.
const LOG_UP_TO: usize = 16 * 1024;
/// Frames the writer takes at once: what one vectored write takes at most (Linux takes up to
/// 1,024 slices a call). A burst of small frames leaves in calls of this many: with 64, the
/// #22 burst (64-byte messages) took 2 to 9 times the write calls of the code before the frame
/// log, which copied them into one buffer (PERFORMANCE.md § Memory through the #22 burst).
pub const TAKE_AT_MOST: usize = 512;
/// The batch's room for frames kept between two takes; a larger take's room is given back.
const BATCH_KEPT: usize = 64;
/// Bytes the writer takes at once (or one frame, when larger): about what a socket takes in one
/// write, and a bound on what a writer stuck on a full socket holds besides its queue.
const TAKE_BYTES: usize = 64 * 1024;
/// What an entry of a queue costs: a frame of its own, or a run of frames of one segment.
const ENTRY_BYTES: usize = size_of::<Entry>();
/// What a queued delivery of a frame in the log costs besides its frame: its index.
const INDEX_BYTES: usize = size_of::<u16>();
/// What a shared frame costs besides its bytes: its shared header and the [`Waiting`].
const WAITING_OVERHEAD: usize = size_of::<Waiting>() + 2 * size_of::<usize>();

/// Why a client was closed with 4429 (the `reason` of `tagcast_slow_clients_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slow {
    /// The frames waiting for it would pass `limits.send_queue_bytes`.
    Bytes,
    /// Frames waited and its socket took no byte for `limits.write_timeout_ms`.
    Timeout,
    /// All queues together passed `limits.max_queued_bytes` and its backlog was among the largest.
    Budget,
    /// It sent more than `limits.max_requests_per_s`.
    Rate,
}

impl Slow {
    /// Every reason, in the order of their metrics series.
    pub const ALL: [Slow; 4] = [Slow::Bytes, Slow::Timeout, Slow::Budget, Slow::Rate];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Slow::Bytes => "bytes",
            Slow::Timeout => "timeout",
            Slow::Budget => "budget",
            Slow::Rate => "rate",
        }
    }

    /// The close reason told to the client, for the reasons the outbox judges.
    pub fn reason(self) -> &'static str {
        match self {
            Slow::Bytes => SLOW_CLIENT,
            Slow::Timeout => "write timeout: the client reads too slowly",
            Slow::Budget => "server send budget exceeded: the client reads too slowly",
            Slow::Rate => "too many requests",
        }
    }
}

/// The limits every outbox of a server shares (`[limits]`), and the memory all their waiting
/// frames hold.
#[derive(Debug)]
pub struct SendLimits {
    /// `limits.send_queue_bytes`: bytes of frames one client may have waiting.
    pub send_queue_bytes: usize,
    /// `limits.write_timeout_ms`: how long frames may wait on a socket that takes no byte.
    pub write_timeout: Duration,
    /// `limits.max_queued_bytes`: memory all waiting frames may hold together.
    pub max_queued_bytes: usize,
    /// What they hold now.
    held: Arc<QueuedMemory>,
    /// Where frames shared by the queues are kept.
    log: FrameLog,
}

impl SendLimits {
    /// Limits with nothing held yet.
    pub fn new(
        send_queue_bytes: usize,
        write_timeout: Duration,
        max_queued_bytes: usize,
    ) -> Arc<SendLimits> {
        Arc::new(SendLimits {
            send_queue_bytes,
            write_timeout,
            max_queued_bytes,
            held: Arc::default(),
            log: FrameLog::default(),
        })
    }

    /// Memory held by waiting frames, all clients together (`tagcast_queued_bytes`).
    pub fn queued_bytes(&self) -> usize {
        self.held.bytes()
    }

    /// True when waiting frames hold more than `max_queued_bytes`.
    pub fn over_budget(&self) -> bool {
        self.queued_bytes() > self.max_queued_bytes
    }

    fn hold(&self, bytes: usize) {
        self.held.hold(bytes);
    }

    fn release(&self, bytes: usize) {
        self.held.release(bytes);
    }
}

/// A frame larger than `LOG_UP_TO` waiting in one or more queues, or a frame of one queue's
/// own (a run of small frames copied end to end, the rest of a frame partly written, the close
/// frame). What it holds counts in [`SendLimits::queued_bytes`] until it is freed.
struct Waiting {
    frame: Bytes,
    limits: Arc<SendLimits>,
}

impl Waiting {
    /// Wraps `frame`, whose bytes are already counted as held, and counts its overhead.
    fn counted(frame: Bytes, limits: &Arc<SendLimits>) -> Arc<Waiting> {
        limits.hold(WAITING_OVERHEAD);
        Arc::new(Waiting {
            frame,
            limits: limits.clone(),
        })
    }

    /// Wraps `frame` and counts it as held.
    fn new(frame: Bytes, limits: &Arc<SendLimits>) -> Arc<Waiting> {
        limits.hold(frame.len());
        Waiting::counted(frame, limits)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.limits.release(self.frame.len() + WAITING_OVERHEAD);
    }
}

/// A frame being routed to its recipients: shared, when a queue keeps it, by every queue that
/// does, and made shared only once.
pub struct Outgoing<'a> {
    frame: &'a Bytes,
    /// Where it is in the log, once a queue kept it (frames up to `LOG_UP_TO`).
    logged: OnceCell<(Arc<Segment>, u16)>,
    /// The frame shared alone, once a queue kept it (larger frames).
    whole: OnceCell<Arc<Waiting>>,
}

impl<'a> Outgoing<'a> {
    /// `frame`, not yet kept by any queue.
    pub fn new(frame: &'a Bytes) -> Outgoing<'a> {
        Outgoing {
            frame,
            logged: OnceCell::new(),
            whole: OnceCell::new(),
        }
    }

    fn logged(&self, limits: &Arc<SendLimits>) -> &(Arc<Segment>, u16) {
        self.logged
            .get_or_init(|| limits.log.append(self.frame, &limits.held))
    }

    fn whole(&self, limits: &Arc<SendLimits>) -> Arc<Waiting> {
        self.whole
            .get_or_init(|| Waiting::new(self.frame.clone(), limits))
            .clone()
    }
}

/// A part of a queue, in order.
enum Entry {
    /// A frame of this queue's own (copied small frames, the rest of one partly written) or a
    /// large frame shared alone.
    Own(Arc<Waiting>),
    /// The next `count` frames of the queue's `indices`, all in `segment`.
    Logged { segment: Arc<Segment>, count: u32 },
}

/// The frames waiting, in order: runs of small frames copied end to end, frames in the log,
/// and large frames shared alone.
#[derive(Default)]
struct Queue {
    /// The first entry is the rest of a frame whose start was written through: kept when
    /// closing drops the rest of the queue (the client is in the middle of it).
    started: bool,
    entries: VecDeque<Entry>,
    /// The index of every frame of the `Logged` entries, in order.
    indices: VecDeque<u16>,
    /// Small frames copied after the last entry.
    tail: BytesMut,
    /// Bytes copied since the writer last took from the queue.
    copied: usize,
    /// Bytes of the frames waiting, a shared frame counted fully (`send_queue_bytes`).
    backlog: usize,
}

impl Queue {
    /// Queues `frame`; returns the memory this adds to what queues hold.
    fn push(&mut self, frame: &Outgoing<'_>, limits: &Arc<SendLimits>) -> usize {
        let length = frame.frame.len();
        self.backlog += length;
        if length <= COPY_UP_TO && self.copied + length <= COPY_BUDGET {
            self.copied += length;
            // Starts small and doubles as frames arrive: a message to every idle connection
            // allocates little for each.
            self.tail.extend_from_slice(frame.frame);
            return length;
        }
        let sealed = self.seal_tail(limits);
        if length > LOG_UP_TO {
            self.entries.push_back(Entry::Own(frame.whole(limits)));
            return sealed + ENTRY_BYTES;
        }
        let (segment, index) = frame.logged(limits);
        self.indices.push_back(*index);
        match self.entries.back_mut() {
            Some(Entry::Logged {
                segment: last,
                count,
            }) if Arc::ptr_eq(last, segment) => {
                *count += 1;
                sealed + INDEX_BYTES
            }
            _ => {
                self.entries.push_back(Entry::Logged {
                    segment: segment.clone(),
                    count: 1,
                });
                sealed + ENTRY_BYTES + INDEX_BYTES
            }
        }
    }

    /// Queues what a write through left of a frame; the queue is empty.
    fn push_started(&mut self, rest: &[u8], limits: &Arc<SendLimits>) -> usize {
        self.started = true;
        self.backlog += rest.len();
        self.entries.push_back(Entry::Own(Waiting::new(
            Bytes::copy_from_slice(rest),
            limits,
        )));
        ENTRY_BYTES
    }

    /// Makes the copied frames an entry; returns the memory this adds (the entry).
    fn seal_tail(&mut self, limits: &Arc<SendLimits>) -> usize {
        if self.tail.is_empty() {
            return 0;
        }
        let run = std::mem::take(&mut self.tail).freeze();
        self.entries
            .push_back(Entry::Own(Waiting::counted(run, limits)));
        ENTRY_BYTES
    }

    /// Moves up to [`TAKE_AT_MOST`] frames or `TAKE_BYTES` bytes, whichever comes first (but
    /// always one frame), into `batch`; returns the memory they held in the queue and their
    /// bytes.
    fn take(&mut self, batch: &mut Batch) -> (usize, usize) {
        let (mut memory, mut bytes) = (0, 0);
        let room = |batch: &Batch, bytes: usize, length: usize| {
            batch.frames.len() < TAKE_AT_MOST
                && (batch.frames.is_empty() || bytes + length <= TAKE_BYTES)
        };
        while let Some(entry) = self.entries.front_mut() {
            match entry {
                Entry::Own(waiting) => {
                    if !room(batch, bytes, waiting.frame.len()) {
                        break;
                    }
                    bytes += waiting.frame.len();
                    memory += ENTRY_BYTES;
                    if let Some(Entry::Own(waiting)) = self.entries.pop_front() {
                        batch.frames.push(Taken::Own(waiting));
                    }
                }
                Entry::Logged { segment, count } => {
                    let taken_from = batch.segments.len();
                    let mut taken = 0;
                    while let Some(&index) = self.indices.front()
                        && *count > 0
                    {
                        let length = segment.frame(index).len();
                        if !room(batch, bytes, length) {
                            break;
                        }
                        bytes += length;
                        memory += INDEX_BYTES;
                        self.indices.pop_front();
                        *count -= 1;
                        taken += 1;
                        batch.frames.push(Taken::Logged {
                            segment: taken_from,
                            index,
                        });
                    }
                    if taken == 0 {
                        break;
                    }
                    if *count > 0 {
                        batch.segments.push(segment.clone());
                        break;
                    }
                    memory += ENTRY_BYTES;
                    if let Some(Entry::Logged { segment, .. }) = self.entries.pop_front() {
                        batch.segments.push(segment);
                    }
                }
            }
        }
        self.backlog -= bytes;
        self.started = false;
        self.copied = 0;
        if self.entries.capacity() > 64 && self.entries.len() < 16 {
            self.entries.shrink_to(16);
        }
        if self.indices.capacity() > 1024 && self.indices.len() < 256 {
            self.indices.shrink_to(256);
        }
        (memory, bytes)
    }

    /// Drops every frame but the rest of a started one; returns the memory this lets go of
    /// (besides shared frames and segments, which let go of theirs when freed).
    fn drop_unstarted(&mut self) -> usize {
        let kept = if self.started {
            self.entries.pop_front()
        } else {
            None
        };
        let released =
            self.entries.len() * ENTRY_BYTES + self.indices.len() * INDEX_BYTES + self.tail.len();
        self.backlog = match &kept {
            Some(Entry::Own(rest)) => rest.frame.len(),
            _ => 0,
        };
        self.entries = kept.into_iter().collect();
        self.indices = VecDeque::new();
        self.tail = BytesMut::new();
        self.copied = 0;
        released
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.tail.is_empty()
    }
}
#[derive(Default)]
struct State {
    queue: Queue,
    /// What the writer took last: the memory it held in the queue, and its bytes. Counted as
    /// waiting until the writer comes back for more (it wrote them) or closing discards them.
    in_flight: (usize, usize),
    /// Set once the connection is closing: the close frame to write after `queue`, until taken.
    close_frame: Option<Arc<Waiting>>,
    /// Why the connection is closing, once it is.
    closing: Option<CloseReason>,
    /// Why it was closed with 4429, when it was for being slow.
    slow: Option<Slow>,
    /// The writer must drop what it took and has not started writing (the client was closed
    /// for being slow).
    discard: bool,
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

    /// The writer is done with what it took: it no longer waits.
    fn settle_in_flight(&mut self, limits: &SendLimits) {
        let (memory, _) = std::mem::take(&mut self.in_flight);
        limits.release(memory);
    }

    /// Bytes waiting for the client, with those the writer took and has not written.
    fn backlog(&self) -> usize {
        self.queue.backlog + self.in_flight.1
    }
}

/// One client's queue of outgoing frames.
///
/// One task waits on it: the connection's, whose writer and closing timer share its waker.
/// It keeps one waker, so a second task waiting on the same outbox would not be woken.
pub struct Outbox {
    state: Mutex<State>,
    limits: Arc<SendLimits>,
}

/// What [`Outbox::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Written to the socket at once, or queued for the writer.
    Accepted,
    /// The queue was full: this push closed the connection with 4429 and the frame was dropped.
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

/// What interrupted a write, from [`Outbox::interrupted`].
#[derive(Debug, PartialEq, Eq)]
pub enum Interrupted {
    /// Stop without writing anything more (the peer is gone).
    Abort,
    /// The client was closed for being slow: drop what was taken but the rest of a frame
    /// partly written ([`Batch::drop_unstarted`]).
    Discard,
}

impl Outbox {
    /// An empty outbox under `limits`.
    pub fn new(limits: Arc<SendLimits>) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            limits,
        }
    }

    /// The limits this outbox is judged by.
    pub fn limits(&self) -> &SendLimits {
        &self.limits
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
    pub fn push(&self, frame: &Outgoing<'_>, wakeups: &mut Wakeups) -> Pushed {
        let mut state = self.lock();
        if state.closing.is_some() {
            return Pushed::Closed;
        }
        let length = frame.frame.len();
        let backlog = state.backlog();
        if backlog > 0 && backlog + length > self.limits.send_queue_bytes {
            drop(state);
            // Another close may win once the lock is let go (a second router finding the
            // queue full, the client's own close): only the close that wins is an overflow.
            return if self.close_slow(Slow::Bytes, Slow::Bytes.reason().into()) {
                Pushed::Overflowed
            } else {
                Pushed::Closed
            };
        }
        let was_empty = state.queue.is_empty();
        let held = match &state.socket {
            Some(socket)
                if was_empty
                    && wakeups.write_through > 0
                    && !state.writing
                    && length <= WRITE_THROUGH_UP_TO =>
            {
                wakeups.write_through -= 1;
                match socket.try_write(frame.frame) {
                    Ok(written) if written == length => return Pushed::Accepted,
                    Ok(written) => state
                        .queue
                        .push_started(&frame.frame[written..], &self.limits),
                    // The socket's buffer is full (the writer waits for room) or the write
                    // failed (the writer fails the same way and ends the connection).
                    Err(_) => state.queue.push(frame, &self.limits),
                }
            }
            _ => state.queue.push(frame, &self.limits),
        };
        wakeups.hold(held, &self.limits);
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
        self.close_with(reason, None)
    }

    /// Closes with 4429 because the client is `slow`, with `reason` for the client; what the
    /// writer took and has not started writing is dropped too. Returns false when the outbox
    /// was already closing.
    pub fn close_slow(&self, slow: Slow, reason: String) -> bool {
        self.close_with(CloseReason::new(close_code::TOO_MANY, reason), Some(slow))
    }

    fn close_with(&self, reason: CloseReason, slow: Option<Slow>) -> bool {
        let mut state = self.lock();
        if state.closing.is_some() {
            return false;
        }
        let released = state.queue.drop_unstarted();
        self.limits.release(released);
        state.socket = None;
        state.close_frame = Some(Waiting::new(frame::close_frame(&reason), &self.limits));
        state.closing = Some(reason);
        state.slow = slow;
        state.discard = slow.is_some() && state.in_flight.0 > 0;
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

    /// Why the connection was closed with 4429 for being slow, when it was.
    pub fn slow(&self) -> Option<Slow> {
        self.lock().slow
    }

    /// Bytes of the frames waiting for this client (a shared frame counted fully), with those
    /// its writer took and has not finished writing.
    pub fn backlog(&self) -> usize {
        self.lock().backlog()
    }

    /// True when nothing is waiting (but perhaps what the writer took).
    pub fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    /// Waits until there is something to do, then moves up to [`TAKE_AT_MOST`] frames or
    /// `TAKE_BYTES` bytes, whichever comes first (and the close frame after the last of them)
    /// into `batch`. What the last call took is
    /// written, or discarded: it is cleared.
    pub async fn take(&self, batch: &mut Batch) -> Next {
        batch.clear();
        poll_fn(|cx| {
            let mut state = self.lock();
            // Called again: what the last call took is written.
            state.writing = false;
            state.discard = false;
            state.settle_in_flight(&self.limits);
            if state.aborted {
                return Poll::Ready(Next::Abort);
            }
            let sealed = state.queue.seal_tail(&self.limits);
            self.limits.hold(sealed);
            if !state.queue.entries.is_empty() {
                state.in_flight = state.queue.take(batch);
                if state.queue.entries.is_empty() {
                    batch
                        .frames
                        .extend(state.close_frame.take().map(Taken::Own));
                }
                state.writing = true;
                return Poll::Ready(Next::Write);
            }
            if let Some(close_frame) = state.close_frame.take() {
                batch.frames.push(Taken::Own(close_frame));
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

    /// Resolves once the writer must stop writing what it took: the outbox is aborted, or the
    /// client was closed for being slow.
    pub async fn interrupted(&self) -> Interrupted {
        poll_fn(|cx| {
            let mut state = self.lock();
            if state.aborted {
                return Poll::Ready(Interrupted::Abort);
            }
            if state.discard {
                state.discard = false;
                return Poll::Ready(Interrupted::Discard);
            }
            state.wait(cx);
            Poll::Pending
        })
        .await
    }

    /// Resolves once the connection started closing.
    pub async fn closing_started(&self) {
        poll_fn(|cx| {
            let mut state = self.lock();
            if state.closing.is_some() {
                return Poll::Ready(());
            }
            state.wait(cx);
            Poll::Pending
        })
        .await
    }
}

impl Drop for Outbox {
    /// Lets go of what is still waiting: the connection ended without writing it.
    fn drop(&mut self) {
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.settle_in_flight(&self.limits);
        state.queue.started = false;
        let released = state.queue.drop_unstarted();
        self.limits.release(released);
    }
}

/// A frame the writer took.
enum Taken {
    /// A frame of the client's own, or a large one shared alone.
    Own(Arc<Waiting>),
    /// The frame at `index` in the batch's `segment`th segment.
    Logged { segment: usize, index: u16 },
}

/// What the writer took from an outbox, and how much of it is written.
#[derive(Default)]
pub struct Batch {
    frames: Vec<Taken>,
    /// The segments the `Logged` frames are in, each once.
    segments: Vec<Arc<Segment>>,
    /// The first frame not completely written.
    first: usize,
    /// Bytes of it written.
    offset: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// The bytes of the `index`th frame taken.
    fn frame(&self, index: usize) -> &[u8] {
        match &self.frames[index] {
            Taken::Own(waiting) => &waiting.frame,
            Taken::Logged { segment, index } => self.segments[*segment].frame(*index),
        }
    }

    /// True when every frame taken is written.
    pub fn is_done(&self) -> bool {
        self.first == self.frames.len()
    }

    /// Drops the frames not started: what is left to write is the rest of a frame partly
    /// written, if any (the client would otherwise see a broken frame instead of the close).
    /// The segments they were in are let go of with the batch's next [`Batch::clear`].
    pub fn drop_unstarted(&mut self) {
        self.frames
            .truncate(self.first + usize::from(self.offset > 0));
    }

    /// Drops every frame taken.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.segments.clear();
        self.first = 0;
        self.offset = 0;
        if self.frames.capacity() > BATCH_KEPT {
            self.frames.shrink_to(BATCH_KEPT);
        }
    }

    /// Fills `slices` with what is left to write; returns how many it filled.
    pub fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut count = 0;
        for (slice, index) in slices.iter_mut().zip(self.first..self.frames.len()) {
            let skip = if index == self.first { self.offset } else { 0 };
            *slice = IoSlice::new(&self.frame(index)[skip..]);
            count += 1;
        }
        count
    }

    /// Notes that `written` more bytes were written.
    pub fn advance(&mut self, mut written: usize) {
        while written > 0 && self.first < self.frames.len() {
            let left = self.frame(self.first).len() - self.offset;
            if written >= left {
                written -= left;
                self.first += 1;
                self.offset = 0;
            } else {
                self.offset += written;
                written = 0;
            }
        }
    }
}

/// The writers to wake once a router is done queuing a batch of frames; see the module docs.
/// Dropping it wakes whoever is still in it, so no wake-up is ever lost. It also gathers the
/// memory the pushes added to the queues, counted at once when the router settles it.
#[derive(Default)]
pub struct Wakeups {
    wakers: Vec<Waker>,
    /// How many more pushes may write to sockets at once (for the request being routed).
    write_through: usize,
    /// Memory the pushes added to the queues, not yet counted in `limits`.
    held: usize,
    limits: Option<Arc<SendLimits>>,
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

    /// How many more pushes may write to sockets at once (for the request being routed).
    pub fn write_through_left(&self) -> usize {
        self.write_through
    }

    fn hold(&mut self, bytes: usize, limits: &Arc<SendLimits>) {
        if self.limits.is_none() {
            self.limits = Some(limits.clone());
        }
        self.held += bytes;
    }

    /// Counts the memory the pushes so far added to the queues.
    pub fn settle(&mut self) {
        if let Some(limits) = &self.limits {
            limits.hold(std::mem::take(&mut self.held));
        }
    }

    /// Wakes every writer collected so far.
    pub fn wake_all(&mut self) {
        self.settle();
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

    fn limits(send_queue_bytes: usize) -> Arc<SendLimits> {
        SendLimits::new(send_queue_bytes, Duration::from_secs(10), usize::MAX)
    }

    fn outbox(send_queue_bytes: usize) -> Outbox {
        Outbox::new(limits(send_queue_bytes))
    }

    fn push(outbox: &Outbox, frame: &[u8], wakeups: &mut Wakeups) -> Pushed {
        outbox.push(&Outgoing::new(&Bytes::copy_from_slice(frame)), wakeups)
    }

    /// Polls `future` once.
    fn poll_once<F: Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        }
    }

    impl Batch {
        fn concat(&self) -> Vec<u8> {
            (0..self.frames.len())
                .flat_map(|index| self.frame(index).to_vec())
                .collect()
        }

        fn len(&self) -> usize {
            self.frames.len()
        }
    }

    #[tokio::test]
    async fn past_its_bytes_a_queue_is_replaced_by_a_close_frame() {
        let outbox = outbox(2);
        assert_eq!(
            push(&outbox, b"1", &mut Wakeups::default()),
            Pushed::Accepted
        );
        assert_eq!(
            push(&outbox, b"2", &mut Wakeups::default()),
            Pushed::Accepted
        );
        assert_eq!(
            push(&outbox, b"3", &mut Wakeups::default()),
            Pushed::Overflowed
        );
        assert_eq!(push(&outbox, b"4", &mut Wakeups::default()), Pushed::Closed);
        assert_eq!(outbox.slow(), Some(Slow::Bytes));
        let mut batch = Batch::new();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(batch.len(), 1);
        assert_eq!(&batch.frame(0)[2..4], &4429u16.to_be_bytes());
        assert_eq!(outbox.take(&mut batch).await, Next::Finished);
    }

    #[tokio::test]
    async fn a_frame_larger_than_the_limit_reaches_a_client_with_nothing_waiting() {
        let outbox = outbox(2);
        assert_eq!(
            push(&outbox, b"large", &mut Wakeups::default()),
            Pushed::Accepted
        );
        assert_eq!(outbox.backlog(), 5);
    }

    #[tokio::test]
    async fn take_drains_everything_then_waits() {
        let outbox = Arc::new(outbox(10));
        push(&outbox, b"1", &mut Wakeups::default());
        push(&outbox, b"2", &mut Wakeups::default());
        let mut batch = Batch::new();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(batch.concat(), b"12");
        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.take(&mut Batch::new()).await })
        };
        outbox.abort();
        assert_eq!(waiting.await.unwrap(), Next::Abort);
    }

    #[tokio::test]
    async fn small_frames_are_copied_end_to_end_large_ones_shared_in_order() {
        let outbox = outbox(1 << 20);
        let large = Bytes::from(vec![b'L'; COPY_UP_TO + 1]);
        let larger = Bytes::from(vec![b'X'; LOG_UP_TO + 1]);
        let mut wakeups = Wakeups::default();
        push(&outbox, b"ab", &mut wakeups);
        push(&outbox, b"c", &mut wakeups);
        outbox.push(&Outgoing::new(&large), &mut wakeups);
        push(&outbox, b"d", &mut wakeups);
        outbox.push(&Outgoing::new(&larger), &mut wakeups);
        outbox.push(&Outgoing::new(&large), &mut wakeups);
        assert_eq!(outbox.backlog(), 4 + 2 * large.len() + larger.len());
        let mut batch = Batch::new();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(batch.len(), 5, "copied runs and shared frames, in order");
        assert_eq!(batch.frame(0), b"abc");
        assert_eq!(batch.frame(1).as_ptr(), large.as_ptr(), "not copied");
        assert_eq!(batch.frame(2), b"d");
        assert_eq!(batch.frame(3).as_ptr(), larger.as_ptr(), "not copied");
        assert!(matches!(batch.frames[3], Taken::Own(_)), "shared alone");
        assert!(
            matches!(batch.frames[4], Taken::Logged { .. }),
            "in the log"
        );
        assert!(outbox.is_empty());
    }

    #[tokio::test]
    async fn a_queue_copies_at_most_its_budget_then_shares() {
        let frame = Bytes::from(vec![b'f'; COPY_UP_TO]);
        let frames = COPY_BUDGET / COPY_UP_TO + 3;
        let outbox = outbox(1 << 20);
        let mut wakeups = Wakeups::default();
        for _ in 0..frames {
            outbox.push(&Outgoing::new(&frame), &mut wakeups);
        }
        let mut batch = Batch::new();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(
            batch.frame(0).len(),
            COPY_BUDGET,
            "one copied run, as long as the budget"
        );
        assert_eq!(batch.len(), 4);
        assert!((1..batch.len()).all(|index| batch.frame(index).as_ptr() == frame.as_ptr()));
    }

    /// Pushes each frame to its recipients (`recipients(its number)`), as the router does;
    /// returns the segments of the log the frames went to, each once, and what they hold.
    fn route<'a, R>(frames: &[Bytes], recipients: impl Fn(usize) -> R) -> (Vec<Arc<Segment>>, usize)
    where
        R: Iterator<Item = &'a Outbox>,
    {
        let mut wakeups = Wakeups::default();
        let mut segments: Vec<Arc<Segment>> = Vec::new();
        for (number, frame) in frames.iter().enumerate() {
            let outgoing = Outgoing::new(frame);
            for outbox in recipients(number) {
                outbox.push(&outgoing, &mut wakeups);
            }
            if let Some((segment, _)) = outgoing.logged.get()
                && !segments.iter().any(|known| Arc::ptr_eq(known, segment))
            {
                segments.push(segment.clone());
            }
        }
        let held = segments.iter().map(|segment| segment.held_bytes()).sum();
        (segments, held)
    }

    /// Many recipients of many frames: each gets them in order, a frame is kept once for all
    /// (in the log: an index per delivery, a handle per segment and queue) and freed once the
    /// last recipient wrote it.
    #[tokio::test]
    async fn recipients_share_frames_and_each_gets_them_in_order() {
        let limits = limits(1 << 30);
        let recipients: Vec<Outbox> = (0..3).map(|_| Outbox::new(limits.clone())).collect();
        let frames: Vec<Bytes> = (0..200u8)
            .map(|n| Bytes::from(vec![n; COPY_UP_TO + 1]))
            .collect();
        let (segments, log) = route(&frames, |_| recipients.iter());
        assert!(segments.len() < 10, "a few segments for 200 frames");
        assert!(log >= frames.len() * (COPY_UP_TO + 1), "each frame once");
        let per_queue = frames.len() * INDEX_BYTES + segments.len() * ENTRY_BYTES;
        assert_eq!(limits.queued_bytes(), log + recipients.len() * per_queue);
        drop(segments);
        let mut batches: Vec<Batch> = recipients.iter().map(|_| Batch::new()).collect();
        let mut received = vec![Vec::new(); recipients.len()];
        // The recipients take turns: a frame stays while any cursor still needs it.
        let mut taking = true;
        while taking {
            taking = false;
            for ((outbox, batch), received) in
                recipients.iter().zip(&mut batches).zip(&mut received)
            {
                if poll_once(outbox.take(batch)) == Some(Next::Write) {
                    taking = true;
                    received.extend(batch.concat());
                    batch.advance(usize::MAX);
                }
            }
        }
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        for received in &received {
            assert_eq!(received, &expected);
        }
        drop(batches);
        for outbox in &recipients {
            outbox.close(CloseReason::new(close_code::NORMAL, ""));
            let mut batch = Batch::new();
            assert_eq!(outbox.take(&mut batch).await, Next::Write);
            assert_eq!(outbox.take(&mut batch).await, Next::Finished);
        }
        assert_eq!(limits.queued_bytes(), 0, "everything let go");
    }

    /// A burst as #22 describes it, scaled down: small messages to rooms of recipients that do
    /// not read meanwhile. Past the few frames each queue copies, a queued delivery costs its
    /// index and a share of its segment's handle: a few bytes, not a pointer and a copy.
    #[tokio::test]
    async fn a_queued_delivery_of_a_burst_costs_a_few_bytes_and_each_gets_its_room_in_order() {
        const ROOMS: usize = 10;
        let limits = limits(1 << 30);
        let recipients: Vec<Outbox> = (0..100).map(|_| Outbox::new(limits.clone())).collect();
        let frames: Vec<Bytes> = (0..20_000u32)
            .map(|n| Bytes::from(format!("{n:064}")))
            .collect();
        let room = |number: usize| recipients.iter().skip(number % ROOMS).step_by(ROOMS);
        let (segments, log) = route(&frames, room);
        drop(segments);
        let deliveries = frames.len() * recipients.len() / ROOMS;
        let copied = recipients.len() * COPY_BUDGET;
        let per_delivery = (limits.queued_bytes() - log - copied) as f64 / deliveries as f64;
        assert!(
            per_delivery < 3.0,
            "{per_delivery:.2} bytes per queued delivery, beside the frames"
        );
        for (number, outbox) in recipients.iter().enumerate() {
            let mut batch = Batch::new();
            let mut received = Vec::new();
            while poll_once(outbox.take(&mut batch)) == Some(Next::Write) {
                received.extend(batch.concat());
                batch.advance(usize::MAX);
            }
            let room = frames.iter().skip(number % ROOMS).step_by(ROOMS);
            assert!(received.iter().eq(room.flatten()), "recipient {number}");
        }
        assert_eq!(limits.queued_bytes(), 0, "everything let go");
    }

    #[tokio::test]
    async fn no_frame_is_freed_while_a_slow_reader_needs_it_and_its_share_goes_when_closed() {
        let limits = limits(1 << 30);
        let fast = Outbox::new(limits.clone());
        let slow = Outbox::new(limits.clone());
        let frame = Bytes::from(vec![b'x'; COPY_UP_TO + 1]);
        let (segments, log) = route(&vec![frame.clone(); 100], |_| [&fast, &slow].into_iter());
        let runs = segments.len();
        drop(segments);
        let mut batch = Batch::new();
        while poll_once(fast.take(&mut batch)) == Some(Next::Write) {
            batch.advance(usize::MAX);
        }
        assert_eq!(
            limits.queued_bytes(),
            log + 100 * INDEX_BYTES + runs * ENTRY_BYTES,
            "the fast reader wrote its share; the frames stay for the slow one"
        );
        assert_eq!(slow.backlog(), 100 * frame.len());
        // The slow reader's writer took some and is stuck writing them: closing drops them too.
        let mut stuck = Batch::new();
        assert_eq!(slow.take(&mut stuck).await, Next::Write);
        assert!(slow.close_slow(Slow::Budget, Slow::Budget.reason().into()));
        assert_eq!(poll_once(slow.interrupted()), Some(Interrupted::Discard));
        stuck.drop_unstarted();
        assert!(stuck.is_done(), "nothing of it was written");
        assert_eq!(slow.take(&mut stuck).await, Next::Write, "the close frame");
        stuck.advance(usize::MAX);
        assert_eq!(slow.take(&mut stuck).await, Next::Finished);
        assert_eq!(
            limits.queued_bytes(),
            0,
            "the slow reader's share is released"
        );
        assert_eq!(slow.slow(), Some(Slow::Budget));
    }

    /// A batch of three frames: `abc`, `de` and `f`.
    fn abc_de_f() -> Batch {
        let limits = limits(1 << 20);
        let mut batch = Batch::new();
        for frame in [&b"abc"[..], b"de", b"f"] {
            batch.frames.push(Taken::Own(Waiting::new(
                Bytes::copy_from_slice(frame),
                &limits,
            )));
        }
        batch
    }

    #[test]
    fn a_discarded_batch_keeps_only_the_rest_of_a_frame_partly_written() {
        let mut batch = abc_de_f();
        batch.advance(4);
        batch.drop_unstarted();
        assert_eq!(batch.frames.len(), 2);
        batch.advance(1);
        assert!(batch.is_done(), "the rest of \"de\", nothing after it");
    }

    #[test]
    fn a_batch_resumes_a_partial_write_where_it_stopped() {
        let mut batch = abc_de_f();
        let remaining = |batch: &Batch| {
            let mut slices = [IoSlice::new(&[]); 4];
            let count = batch.slices(&mut slices);
            slices[..count]
                .iter()
                .flat_map(|s| s.to_vec())
                .collect::<Vec<u8>>()
        };
        batch.advance(2);
        assert_eq!(remaining(&batch), b"cdef");
        batch.advance(3);
        assert_eq!(remaining(&batch), b"f");
        batch.advance(1);
        assert!(batch.is_done());
    }

    /// Counts how often its task was woken.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waiting_writer_is_woken_once_per_batch_of_pushes() {
        let counter = Arc::new(CountingWaker(Default::default()));
        let waker = Waker::from(counter.clone());
        let woken = || counter.0.load(std::sync::atomic::Ordering::SeqCst);
        let mut cx = Context::from_waker(&waker);
        let outbox = outbox(10);
        let mut batch = Batch::new();
        let mut take = Box::pin(outbox.take(&mut batch));
        assert!(take.as_mut().poll(&mut cx).is_pending());
        let mut wakeups = Wakeups::default();
        for frame in [&b"1"[..], b"2", b"3"] {
            assert_eq!(push(&outbox, frame, &mut wakeups), Pushed::Accepted);
        }
        assert_eq!(woken(), 0, "pushes alone wake nobody");
        wakeups.wake_all();
        assert_eq!(woken(), 1, "the batch wakes the writer once");
        assert_eq!(take.as_mut().poll(&mut cx), Poll::Ready(Next::Write));
        drop(take);
        assert_eq!(batch.concat(), b"123");
        batch.advance(usize::MAX);
        let mut take = Box::pin(outbox.take(&mut batch));
        assert!(take.as_mut().poll(&mut cx).is_pending());
        push(&outbox, b"4", &mut Wakeups::default());
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
        let outbox = outbox(1 << 20);
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
        assert_eq!(push(&outbox, b"1", &mut lone_request()), Pushed::Accepted);
        assert!(outbox.is_empty(), "written, not queued");
        client_reads(&mut client, b"1").await;

        // A batch is left to the writer; a lone request behind it waits its turn.
        push(&outbox, b"2", &mut Wakeups::default());
        push(&outbox, b"3", &mut lone_request());
        assert_eq!(outbox.backlog(), 2);
        let mut batch = Batch::new();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(batch.concat(), b"23");
        // The writer is writing what it took: what comes now waits behind it.
        push(&outbox, b"4", &mut lone_request());
        assert_eq!(outbox.backlog(), 2 + 1, "the two taken are not written yet");
        batch.clear();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(batch.concat(), b"4");

        // Back in `take` with nothing waiting, the writer is idle: written at once again.
        batch.clear();
        let mut take = Box::pin(outbox.take(&mut batch));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(take.as_mut().poll(&mut cx).is_pending());
        assert_eq!(push(&outbox, b"5", &mut lone_request()), Pushed::Accepted);
        assert!(outbox.is_empty());
        client_reads(&mut client, b"5").await;

        // Closing lets go of the socket: only the writer writes the close frame.
        outbox.close(CloseReason::new(close_code::NORMAL, ""));
        assert_eq!(push(&outbox, b"6", &mut lone_request()), Pushed::Closed);
        assert_eq!(take.as_mut().poll(&mut cx), Poll::Ready(Next::Write));
        assert!(outbox.lock().socket.is_none());
    }

    #[tokio::test]
    async fn a_lone_request_writes_through_to_a_bounded_number_of_recipients() {
        let (outbox, mut client) = written_through().await;
        let mut wakeups = lone_request();
        for _ in 0..WRITE_THROUGH_PER_REQUEST {
            assert_eq!(push(&outbox, b"w", &mut wakeups), Pushed::Accepted);
        }
        assert!(outbox.is_empty());
        client_reads(&mut client, &[b'w'; WRITE_THROUGH_PER_REQUEST]).await;
        push(&outbox, b"q", &mut wakeups);
        assert!(
            !outbox.is_empty(),
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
            assert_eq!(
                outbox.push(&Outgoing::new(&frame), &mut lone_request()),
                Pushed::Accepted
            );
            if outbox.is_empty() {
                written_through.extend_from_slice(&frame);
                continue;
            }
            // Closing drops what is queued, but not the end of a frame the client is reading.
            push(&outbox, b"dropped", &mut lone_request());
            outbox.close(CloseReason::new(close_code::TOO_MANY, "slow"));
            let mut batch = Batch::new();
            assert_eq!(outbox.take(&mut batch).await, Next::Write);
            assert_eq!(
                batch.len(),
                2,
                "the rest of the frame, then the close frame"
            );
            let written = frame.len() - batch.frame(0).len();
            assert!(written > 0, "a part of the frame was written through");
            assert_eq!(batch.frame(0), &frame[written..]);
            assert_eq!(&batch.frame(1)[2..4], &4429u16.to_be_bytes());
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
        outbox.push(&Outgoing::new(&large), &mut lone_request());
        let mut batch = Batch::new();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(batch.len(), 1);
        assert_eq!(
            batch.frame(0).as_ptr(),
            large.as_ptr(),
            "queued whole, nothing written through"
        );

        let closed = Outbox::new(limits(10));
        closed.close(CloseReason::new(close_code::NORMAL, ""));
        let (write_half, _client) = connection().await;
        closed.write_through(Arc::new(write_half));
        assert!(
            closed.lock().socket.is_none(),
            "closing: only the writer writes"
        );
    }
}
