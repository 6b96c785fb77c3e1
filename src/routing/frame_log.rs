//! Frames shared by many queues, kept in segments in the order they are first queued, so that a
//! queued delivery costs a 2-byte index into a segment rather than a pointer of its own.
//!
//! A burst queues millions of deliveries at once (issue #22: 10,000 clients falling behind 200,000
//! messages). Were each delivery a pointer to its frame, the pointers alone would weigh more than
//! the messages. Instead, the first queue that keeps a frame appends it to the current
//! [`Segment`] of the server's [`FrameLog`], and every queue that keeps it holds its index
//! there; a queue holds one handle per segment it has frames waiting in, however many frames
//! that is (see [`crate::routing::outbox`]). A segment is freed when the last queue lets go of it.
//!
//! A segment takes frames until it holds `SEGMENT_FRAMES` of them or `SEGMENT_BYTES` of bytes;
//! a new one is then started. A segment nobody holds any more is not kept for later frames: the
//! next one starts at twice the number of frames its predecessor took (at least `MIN_FRAMES`),
//! so quiet traffic allocates a few slots per frame queued and a burst gets the largest
//! segments. What a segment holds (its slots, and its frames' bytes) counts in
//! [`QueuedMemory`], the count of what all queues hold (`tagcast_queued_bytes`), until it is
//! freed.

use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;

/// Frames a segment takes at most: what a 2-byte index reaches, and few enough that a queue
/// holding one frame of it keeps little.
const SEGMENT_FRAMES: usize = 4096;
/// Bytes of frames after which a segment takes no more.
const SEGMENT_BYTES: usize = 256 * 1024;
/// Frames of the smallest segment.
const MIN_FRAMES: usize = 16;
/// What one slot of a segment costs, taken or not.
const SLOT_BYTES: usize = size_of::<OnceLock<Bytes>>();

/// The memory the queues of a server hold together, frames and bookkeeping.
#[derive(Debug, Default)]
pub struct QueuedMemory {
    /// May dip below 0 for a moment (a release seen before its count).
    held: AtomicIsize,
}

impl QueuedMemory {
    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed).max(0) as usize
    }

    /// Counts `bytes` more.
    pub fn hold(&self, bytes: usize) {
        if bytes > 0 {
            self.held.fetch_add(bytes as isize, Ordering::Relaxed);
        }
    }

    /// Counts `bytes` less.
    pub fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.held.fetch_sub(bytes as isize, Ordering::Relaxed);
        }
    }
}

/// Frames appended one after the other, each readable by index once appended.
pub struct Segment {
    frames: Box<[OnceLock<Bytes>]>,
    /// Bytes of the frames appended so far.
    bytes: AtomicUsize,
    memory: Arc<QueuedMemory>,
}

impl Segment {
    fn new(capacity: usize, memory: &Arc<QueuedMemory>) -> Segment {
        memory.hold(capacity * SLOT_BYTES);
        Segment {
            frames: (0..capacity).map(|_| OnceLock::new()).collect(),
            bytes: AtomicUsize::new(0),
            memory: memory.clone(),
        }
    }

    /// The frame at `index`, which [`FrameLog::append`] returned.
    pub fn frame(&self, index: u16) -> &[u8] {
        self.frames[usize::from(index)]
            .get()
            .expect("an index is handed out once its frame is set")
    }

    /// What it holds: its slots and its frames' bytes.
    pub fn held_bytes(&self) -> usize {
        self.frames.len() * SLOT_BYTES + self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.memory.release(self.held_bytes());
    }
}

/// The segment frames are appended to now.
#[derive(Default)]
struct Appending {
    /// Not kept alive by the log: it goes once no queue and no message being routed holds it.
    current: Weak<Segment>,
    /// Frames appended to `current` (or to the last segment, if it is gone).
    frames: usize,
}

/// Where shared frames are appended, one server's queues together.
#[derive(Default)]
pub struct FrameLog {
    appending: Mutex<Appending>,
}

impl std::fmt::Debug for FrameLog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("FrameLog")
    }
}

impl FrameLog {
    /// Appends `frame`, counting its bytes in `memory`; returns its segment and its index there.
    pub fn append(&self, frame: &Bytes, memory: &Arc<QueuedMemory>) -> (Arc<Segment>, u16) {
        let mut appending = self
            .appending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let segment = match appending.current.upgrade() {
            Some(segment)
                if appending.frames < segment.frames.len()
                    && segment.bytes.load(Ordering::Relaxed) < SEGMENT_BYTES =>
            {
                segment
            }
            _ => {
                let capacity = (2 * appending.frames).clamp(MIN_FRAMES, SEGMENT_FRAMES);
                let segment = Arc::new(Segment::new(capacity, memory));
                *appending = Appending {
                    current: Arc::downgrade(&segment),
                    frames: 0,
                };
                segment
            }
        };
        let index = appending.frames;
        // Only this lock's holder appends, each slot once.
        let _ = segment.frames[index].set(frame.clone());
        appending.frames += 1;
        segment.bytes.fetch_add(frame.len(), Ordering::Relaxed);
        memory.hold(frame.len());
        let index = u16::try_from(index).expect("SEGMENT_FRAMES fits in a u16");
        (segment, index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_back_by_index_in_one_segment_while_it_is_held() {
        let (log, memory) = (FrameLog::default(), Arc::default());
        let frames: Vec<Bytes> = (0..10u8).map(|n| Bytes::from(vec![n; 3])).collect();
        let appended: Vec<_> = frames
            .iter()
            .map(|frame| log.append(frame, &memory))
            .collect();
        for ((segment, index), frame) in appended.iter().zip(&frames) {
            assert!(Arc::ptr_eq(segment, &appended[0].0), "one segment");
            assert_eq!(segment.frame(*index), &frame[..]);
        }
        assert_eq!(
            memory.bytes(),
            MIN_FRAMES * SLOT_BYTES + 30,
            "its slots and its frames"
        );
        drop(appended);
        assert_eq!(memory.bytes(), 0, "freed with its last holder");
    }

    #[test]
    fn a_full_segment_is_followed_by_a_larger_one_and_a_dropped_one_by_a_small_one() {
        let (log, memory) = (FrameLog::default(), Arc::default());
        let frame = Bytes::from_static(b"f");
        let mut held = Vec::new();
        for _ in 0..MIN_FRAMES + 1 {
            held.push(log.append(&frame, &memory));
        }
        let (first, last) = (&held[0].0, &held[MIN_FRAMES].0);
        assert!(!Arc::ptr_eq(first, last), "the first one is full");
        assert_eq!(last.frames.len(), 2 * MIN_FRAMES);
        assert_eq!(held[MIN_FRAMES].1, 0);
        drop(held);
        let (segment, index) = log.append(&frame, &memory);
        assert_eq!(
            (segment.frames.len(), index),
            (MIN_FRAMES, 0),
            "its predecessor took one frame before it was let go"
        );
    }

    #[test]
    fn a_segment_takes_no_more_frames_past_its_bytes() {
        let (log, memory) = (FrameLog::default(), Arc::default());
        let large = Bytes::from(vec![0; SEGMENT_BYTES / 2]);
        let held: Vec<_> = (0..3).map(|_| log.append(&large, &memory)).collect();
        assert!(Arc::ptr_eq(&held[0].0, &held[1].0));
        assert!(!Arc::ptr_eq(&held[1].0, &held[2].0));
    }
}
