//! Where a request's message goes: from its text to the queues of the connections whose tags
//! match it, and on to the other nodes.
//!
//! - [`router`]: the request path, the one entry of every edge: parse, authorize, encode once,
//!   match, enqueue, share.
//! - [`hub`]: every open connection, and routing a request to the matching ones through the tag
//!   index ([`crate::tags::TagIndex`]).
//! - [`outbox`]: one client's bounded queue of frames to write.
//! - [`frame_log`]: the frames the queues share, kept once in segments the queues index into.
//! - [`history`]: the kept messages a reconnecting client recovers (`?since=`), routed and
//!   replayed under one lock.

pub mod frame_log;
pub mod history;
pub mod hub;
pub mod outbox;
pub mod router;
