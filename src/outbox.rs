//! The bounded queue of frames waiting to be written to one client.
//!
//! The router pushes with [`Outbox::push`], which never waits: when a client already has
//! `limits.send_queue` frames waiting, it is too slow to read, and its queue is replaced by a
//! close frame (4429). The connection's writer takes everything queued at once
//! ([`Outbox::take`]) and writes it in one vectored write. An idle outbox holds no allocation.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::frame::{self, CloseReason, close_code};

/// One client's queue of outgoing frames.
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer and the connection when frames arrive or the outbox closes or aborts.
    changed: Notify,
    /// Frames a client may have waiting before it counts as too slow.
    capacity: usize,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Bytes>,
    /// Set once the connection is closing: the close frame to write after `frames`, until taken.
    close_frame: Option<Bytes>,
    /// Why the connection is closing, once it is.
    closing: Option<CloseReason>,
    /// The writer must stop at once, without writing anything more.
    aborted: bool,
}

/// What [`Outbox::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for writing.
    Queued,
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
            changed: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame without waiting; see [`Pushed`].
    pub fn push(&self, frame: Bytes) -> Pushed {
        let mut state = self.lock();
        if state.closing.is_some() {
            return Pushed::Closed;
        }
        if state.frames.len() >= self.capacity {
            drop(state);
            self.close(CloseReason::new(
                close_code::TOO_MANY,
                "send queue overflow: the client reads too slowly",
            ));
            return Pushed::Overflowed;
        }
        let was_empty = state.frames.is_empty();
        state.frames.push_back(frame);
        drop(state);
        if was_empty {
            self.changed.notify_waiters();
        }
        Pushed::Queued
    }

    /// Starts closing with `reason`: frames still queued are dropped and the close frame is
    /// written next. Returns false when the outbox was already closing (the first reason wins).
    pub fn close(&self, reason: CloseReason) -> bool {
        let mut state = self.lock();
        if state.closing.is_some() {
            return false;
        }
        state.frames.clear();
        state.frames.shrink_to_fit();
        state.close_frame = Some(frame::close_frame(&reason));
        state.closing = Some(reason);
        drop(state);
        self.changed.notify_waiters();
        true
    }

    /// Makes the writer stop without writing anything more (the peer is gone).
    pub fn abort(&self) {
        let mut state = self.lock();
        state.aborted = true;
        if state.closing.is_none() {
            state.closing = Some(CloseReason::new(close_code::ABNORMAL, "aborted"));
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Why the connection is closing, once it is.
    pub fn closing(&self) -> Option<CloseReason> {
        self.lock().closing.clone()
    }

    /// Number of frames waiting.
    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until there is something to do, then moves every waiting frame into `batch`.
    pub async fn take(&self, batch: &mut Vec<Bytes>) -> Next {
        loop {
            let notified = self.changed.notified();
            {
                let mut state = self.lock();
                if state.aborted {
                    return Next::Abort;
                }
                if !state.frames.is_empty() || state.close_frame.is_some() {
                    batch.extend(state.frames.drain(..));
                    if state.frames.capacity() > 64 {
                        state.frames.shrink_to_fit();
                    }
                    batch.extend(state.close_frame.take());
                    return Next::Write;
                }
                if state.closing.is_some() {
                    return Next::Finished;
                }
            }
            notified.await;
        }
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
        loop {
            // Created before the check, so a change between the check and the await wakes it.
            let notified = self.changed.notified();
            if condition(&self.lock()) {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_replaces_the_queue_with_a_close_frame() {
        let outbox = Outbox::new(2);
        assert_eq!(outbox.push(Bytes::from_static(b"1")), Pushed::Queued);
        assert_eq!(outbox.push(Bytes::from_static(b"2")), Pushed::Queued);
        assert_eq!(outbox.push(Bytes::from_static(b"3")), Pushed::Overflowed);
        assert_eq!(outbox.push(Bytes::from_static(b"4")), Pushed::Closed);
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
        outbox.push(Bytes::from_static(b"1"));
        outbox.push(Bytes::from_static(b"2"));
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch).await, Next::Write);
        assert_eq!(batch.len(), 2);
        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.take(&mut Vec::new()).await })
        };
        outbox.abort();
        assert_eq!(waiting.await.unwrap(), Next::Abort);
    }
}
