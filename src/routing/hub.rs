//! The hub: every open connection, found by tags, and the routing of a request to them.
//!
//! One [`Hub`] is shared by all listeners (ws and wss) and by every source of requests. Routing
//! takes the index's read lock, pushes the already-encoded frame into each matching connection's
//! [`Outbox`] (which never waits) and releases the lock: nothing here awaits, so no lock is ever
//! held across an `.await`. The few pushes that may write to a client's socket at once
//! ([`Outbox::write_through`]) are collected during the walk and made after the lock is
//! released. When the frames waiting in all outboxes then hold more than
//! `limits.max_queued_bytes`, the connections with the largest backlogs are closed (4429) until
//! they hold less.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use crate::routing::history::MessageId;
use crate::routing::outbox::{Outbox, Outgoing, Pushed, SendLimits, Slow, Wakeups};
use crate::tags::{TagIndex, Tags};
use crate::wire::frame::{CloseReason, MessageFrames};
use crate::wire::request::Credentials;

/// A connection's number, unique for the life of the process (shown in logs as `conn`).
pub type ConnectionId = u64;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// Plain `ws://`.
    Ws,
    /// `wss://`.
    Wss,
}

impl Listener {
    /// `ws` or `wss`, as in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Ws => "ws",
            Listener::Wss => "wss",
        }
    }
}

/// What the hub knows of one open connection.
pub struct Peer {
    /// The connection's number.
    pub id: ConnectionId,
    /// The client's address.
    pub address: SocketAddr,
    /// It negotiated permessage-deflate: it gets a message's compressed frame when there is one.
    pub deflate: bool,
    /// The credentials from its URL, judged again when the auth file changes.
    pub credentials: Credentials,
    /// The signed tags' token from its URL, judged again (but for its time) with them.
    pub token: Option<Box<str>>,
    /// Its queue of frames to write.
    pub outbox: Outbox,
    /// It opened with `since`: it gets `{"id":"ID","message":MESSAGE}` frames (SPEC §10).
    pub wants_ids: bool,
}

/// What one routing did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Connections the frame was queued to.
    pub delivered: usize,
    /// Connections closed with 4429 because their queue was full, or because theirs were the
    /// largest backlogs when all queues together held more than the budget.
    pub overflowed: usize,
    /// The message's id, when the history is on.
    pub id: Option<MessageId>,
}

/// All open connections, indexed by tags.
pub struct Hub {
    index: RwLock<TagIndex<ConnectionId, Arc<Peer>>>,
    next_id: AtomicU64,
    /// The send limits every connection's outbox shares.
    limits: Arc<SendLimits>,
    /// Open connections that negotiated permessage-deflate: while there are none, no message
    /// is compressed.
    deflate_peers: AtomicUsize,
}

impl Hub {
    /// An empty hub whose connections' outboxes share `limits`.
    pub fn new(limits: Arc<SendLimits>) -> Hub {
        Hub {
            index: RwLock::default(),
            next_id: AtomicU64::default(),
            limits,
            deflate_peers: AtomicUsize::default(),
        }
    }

    /// An empty outbox under the hub's limits, for a new connection.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.limits.clone())
    }

    /// The limits the outboxes share, and the memory their frames hold.
    pub fn limits(&self) -> &SendLimits {
        &self.limits
    }

    fn read(&self) -> RwLockReadGuard<'_, TagIndex<ConnectionId, Arc<Peer>>> {
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, TagIndex<ConnectionId, Arc<Peer>>> {
        self.index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh connection number.
    pub fn next_id(&self) -> ConnectionId {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Adds a connection; it is removed when the returned guard is dropped.
    pub fn register(self: &Arc<Self>, tags: Tags, peer: Arc<Peer>) -> Registration {
        let (id, deflate) = (peer.id, peer.deflate);
        if deflate {
            self.deflate_peers.fetch_add(1, Ordering::Relaxed);
        }
        self.write().insert(id, tags, peer);
        Registration {
            hub: self.clone(),
            id,
            deflate,
        }
    }

    /// True when some open connection negotiated permessage-deflate.
    pub fn has_deflate_peers(&self) -> bool {
        self.deflate_peers.load(Ordering::Relaxed) > 0
    }

    /// Queues a message's frame to every connection whose tags contain all of `tags`: the id
    /// frame (`id_frame`, when given) to those that want ids, the compressed one to those that
    /// negotiated it, the plain one to the others. Their writers join `wakeups`. Then, when all
    /// queues hold more than the budget, closes the largest backlogs.
    ///
    /// The pushes that may write to a socket at once (the first recipients, while `wakeups`
    /// allows write-through) are made after the walk, once the index's lock is released: no
    /// `send()` is made under it. The others only queue, under it.
    pub fn route(
        &self,
        tags: &Tags,
        frames: &MessageFrames,
        id_frame: Option<&Bytes>,
        wakeups: &mut Wakeups,
    ) -> Delivery {
        let mut delivery = Delivery::default();
        let plain = Outgoing::new(frames.plain());
        let compressed = frames.compressed().map(Outgoing::new);
        let with_id = id_frame.map(Outgoing::new);
        let frame_for = |peer: &Peer| match (&with_id, &compressed) {
            (Some(with_id), _) if peer.wants_ids => with_id,
            (_, Some(compressed)) if peer.deflate => compressed,
            _ => &plain,
        };
        let mut count = |pushed| match pushed {
            Pushed::Accepted => delivery.delivered += 1,
            Pushed::Overflowed => delivery.overflowed += 1,
            Pushed::Closed => {}
        };
        let mut write_through = Vec::new();
        let mut write_through_left = wakeups.write_through_left();
        self.read().for_each_match(tags, |_, peer| {
            if write_through_left > 0 {
                write_through_left -= 1;
                write_through.push(peer.clone());
            } else {
                count(peer.outbox.push(frame_for(peer), wakeups));
            }
        });
        for peer in write_through {
            count(peer.outbox.push(frame_for(&peer), wakeups));
        }
        drop((plain, compressed, with_id));
        wakeups.settle();
        if self.limits.over_budget() {
            delivery.overflowed += self.close_largest_backlogs();
        }
        delivery
    }

    /// Closes the connections with the largest backlogs, largest first, until the frames
    /// waiting hold no more than `limits.max_queued_bytes`; returns how many it closed.
    fn close_largest_backlogs(&self) -> usize {
        let mut backlogs = Vec::new();
        self.read().for_each(|_, _, peer| {
            let backlog = peer.outbox.backlog();
            if backlog > 0 {
                backlogs.push((backlog, peer.clone()));
            }
        });
        backlogs.sort_unstable_by_key(|(backlog, _)| std::cmp::Reverse(*backlog));
        let mut closed = 0;
        for (_, peer) in backlogs {
            if !self.limits.over_budget() {
                break;
            }
            if peer
                .outbox
                .close_slow(Slow::Budget, Slow::Budget.reason().into())
            {
                closed += 1;
            }
        }
        closed
    }

    /// Starts closing every connection with `reason` (shutdown).
    pub fn close_all(&self, reason: &CloseReason) {
        self.read().for_each(|_, _, peer| {
            peer.outbox.close(reason.clone());
        });
    }

    /// Every open connection, for judging them again (auth reload).
    pub fn peers(&self) -> Vec<Arc<Peer>> {
        let mut peers = Vec::new();
        self.read().for_each(|_, _, peer| peers.push(peer.clone()));
        peers
    }

    /// The tags connection `id` opened with, while it is open.
    pub fn tags_of(&self, id: ConnectionId) -> Option<Tags> {
        self.read().tags_of(id).cloned()
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps a connection in the hub; removes it when dropped.
pub struct Registration {
    hub: Arc<Hub>,
    id: ConnectionId,
    deflate: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.write().remove(self.id);
        if self.deflate {
            self.hub.deflate_peers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
