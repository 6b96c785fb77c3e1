//! Recovery after a reconnect (`[history]`, SPEC §10): the last accepted messages, kept so that
//! a client that opens with `?since=ID` gets what it missed, then the live ones.
//!
//! Every message routed while the history is on gets a [`MessageId`] and is kept here, with its
//! tags and its `{"id":"ID","message":MESSAGE}` frame, encoded once: the frame the router hands
//! to the connections that opened with `since`, and the one a replay queues again.
//!
//! # No gap and no duplicate between replay and live
//! [`History::record`] issues the id, routes the message and keeps it under one lock;
//! [`History::recover`] registers the connection in the hub and queues its replay under the same
//! lock. Every message is therefore either kept before the connection is registered (it is in
//! the replay, and the router did not see the connection) or routed after (it arrives live, and
//! is not in the replay), and ids reach every connection in the order they were issued. The
//! price: with the history on, routing is serialized (one message routed at a time); with it
//! off nothing here runs.
//!
//! # When the history cannot vouch
//! A recovery from `ID` is complete when `ID` is still kept, or is the last message dropped (by
//! `size` or `ttl_s`): then everything after it is kept. Otherwise (older messages were dropped,
//! the server restarted, an id it never issued) the replay starts with `{"gap":true}`.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::ops::config::HistoryConfig;
use crate::tags::Tags;
use crate::wire::frame;

/// The frame that tells a recovering client it may have missed messages.
pub const GAP: &str = r#"{"gap":true}"#;

/// Memory a kept message costs beyond its frame and its tags' text (the entry, the tags' boxes).
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>() + 16;

/// A message's id: milliseconds since the Unix epoch and a sequence number within that
/// millisecond, written `MS-SEQ` (the shape of a Redis stream id). Ids are issued in increasing
/// order; clients treat them as opaque strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    /// Milliseconds since the Unix epoch when it was issued.
    pub ms: u64,
    /// Order within that millisecond.
    pub seq: u64,
}

impl MessageId {
    /// The id issued after `last` at `now_ms`: later than `last` even when the clock went back.
    pub fn next(last: Option<MessageId>, now_ms: u64) -> MessageId {
        match last {
            Some(last) if last.ms >= now_ms => MessageId {
                ms: last.ms,
                seq: last.seq + 1,
            },
            _ => MessageId { ms: now_ms, seq: 0 },
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Text that is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a message id: {0:?}")]
pub struct BadMessageId(String);

impl FromStr for MessageId {
    type Err = BadMessageId;

    fn from_str(text: &str) -> Result<MessageId, BadMessageId> {
        let bad = || BadMessageId(text.to_owned());
        let (ms, seq) = text.split_once('-').ok_or_else(bad)?;
        let number = |digits: &str| match digits.bytes().all(|byte| byte.is_ascii_digit()) {
            true => digits.parse::<u64>().map_err(|_| bad()),
            false => Err(bad()),
        };
        Ok(MessageId {
            ms: number(ms)?,
            seq: number(seq)?,
        })
    }
}

/// Where a connection that opened with `since` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// `?since=` (empty): live messages only, with their ids.
    Now,
    /// `?since=ID`: the kept messages after this one first. Text that is no id this server
    /// could have issued is kept as it is: its recovery is a gap.
    After(String),
}

impl Since {
    /// The value of the `since` URL parameter.
    pub fn parse(value: &str) -> Since {
        match value {
            "" => Since::Now,
            id => Since::After(id.to_owned()),
        }
    }
}

/// The kept messages; see the module docs.
pub struct History {
    state: Mutex<State>,
    /// Most messages kept.
    size: usize,
    /// Age at which a message is dropped.
    ttl: Duration,
}

#[derive(Default)]
struct State {
    /// In id order.
    entries: VecDeque<Entry>,
    /// Memory the entries hold, estimated (`tagcast_history_bytes`).
    bytes: usize,
    /// The last id issued.
    last_issued: Option<MessageId>,
    /// The last id dropped by `size` or `ttl`: a recovery from it is complete.
    last_dropped: Option<MessageId>,
    /// True while messages may be going by unseen (a cluster node cut off from Redis): every
    /// recovery then starts with a gap.
    blind: bool,
}

struct Entry {
    id: MessageId,
    tags: Tags,
    /// `{"id":"ID","message":MESSAGE}`, as a text frame.
    frame: Bytes,
}

impl Entry {
    fn bytes(&self) -> usize {
        let tags: usize = self
            .tags
            .iter()
            .map(|(name, value)| name.len() + value.len() + 32)
            .sum();
        self.frame.len() + tags + ENTRY_OVERHEAD
    }
}

/// What [`History::recover`] queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// The replay started with `{"gap":true}`.
    pub gap: bool,
    /// Kept messages queued.
    pub replayed: usize,
}

impl History {
    /// The history `config` asks for; `None` when `history.size` is 0.
    pub fn from_config(config: &HistoryConfig) -> Option<History> {
        (config.size > 0).then(|| History {
            state: Mutex::new(State::default()),
            size: config.size,
            ttl: Duration::from_secs(config.ttl_s),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent before anything that could panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Issues the next id to a message (`payload`, the parser's output, to `tags`), hands its
    /// id frame to `route` and keeps it, all under the history's lock (see the module docs).
    pub fn record<R>(
        &self,
        tags: &Tags,
        payload: &str,
        now: SystemTime,
        route: impl FnOnce(&Bytes) -> R,
    ) -> (MessageId, R) {
        let now_ms = unix_ms(now);
        let mut state = self.lock();
        let id = MessageId::next(state.last_issued, now_ms);
        let frame = id_frame(&id.to_string(), payload);
        let routed = route(&frame);
        self.keep(&mut state, id, tags, frame, now_ms);
        (id, routed)
    }

    /// Like [`History::record`] for a message whose id was issued elsewhere (by the cluster's
    /// Redis stream, in order); `None`, and nothing routed, when that id is not after the last
    /// one (read twice).
    pub fn record_issued<R>(
        &self,
        id: MessageId,
        tags: &Tags,
        payload: &str,
        now: SystemTime,
        route: impl FnOnce(&Bytes) -> R,
    ) -> Option<R> {
        let mut state = self.lock();
        if state.last_issued.is_some_and(|last| last >= id) {
            return None;
        }
        let frame = id_frame(&id.to_string(), payload);
        let routed = route(&frame);
        self.keep(&mut state, id, tags, frame, unix_ms(now));
        Some(routed)
    }

    /// Routes a message that is not kept (accepted by a cluster node cut off from Redis) with
    /// `id`, an id no recovery vouches for, in turn with the kept ones.
    pub fn route_unkept<R>(&self, id: &str, payload: &str, route: impl FnOnce(&Bytes) -> R) -> R {
        let _state = self.lock();
        route(&id_frame(id, payload))
    }

    /// Keeps messages read back from the cluster's shared history (at start), without routing
    /// them; they must come after every kept one, in order.
    pub fn prime(&self, messages: impl IntoIterator<Item = (MessageId, Tags, String)>) {
        let now_ms = unix_ms(SystemTime::now());
        let mut state = self.lock();
        for (id, tags, payload) in messages {
            if state.last_issued.is_none_or(|last| last < id) {
                let frame = id_frame(&id.to_string(), &payload);
                self.keep(&mut state, id, &tags, frame, now_ms);
            }
        }
    }

    /// While `blind`, messages may go by unseen (a cluster node cut off from Redis): every
    /// recovery starts with a gap.
    pub fn set_blind(&self, blind: bool) {
        self.lock().blind = blind;
    }

    /// Forgets every kept message: the ones that follow may not continue them (the cluster's
    /// shared history was trimmed or lost while this node was cut off). `tell` is handed
    /// `{"gap":true}`, under the lock, for the open connections that get ids.
    pub fn lose_continuity(&self, tell: impl FnOnce(&Bytes)) {
        let mut state = self.lock();
        state.entries.clear();
        state.bytes = 0;
        state.last_dropped = None;
        tell(&gap_frame());
    }

    fn keep(&self, state: &mut State, id: MessageId, tags: &Tags, frame: Bytes, now_ms: u64) {
        state.last_issued = Some(id);
        let entry = Entry {
            id,
            tags: tags.clone(),
            frame,
        };
        state.bytes += entry.bytes();
        state.entries.push_back(entry);
        self.drop_old(state, now_ms);
    }

    /// Registers a connection that opened with `since` (`register` adds it to the hub), then
    /// hands `queue` what it missed: `{"gap":true}` first when the history cannot vouch for
    /// the rest, then every kept message after `since` whose tags `tags` contains, in order.
    /// Under the history's lock: no message is both replayed and routed live, none is lost.
    pub fn recover<R>(
        &self,
        since: &Since,
        tags: &Tags,
        now: SystemTime,
        register: impl FnOnce() -> R,
        mut queue: impl FnMut(&Bytes),
    ) -> (R, Recovered) {
        let mut state = self.lock();
        self.drop_old(&mut state, unix_ms(now));
        let registered = register();
        let mut recovered = Recovered {
            gap: false,
            replayed: 0,
        };
        let Since::After(text) = since else {
            return (registered, recovered);
        };
        let start = match text.parse::<MessageId>() {
            _ if state.blind => None,
            Ok(id) if state.last_dropped == Some(id) => Some(0),
            Ok(id) => state
                .entries
                .binary_search_by_key(&id, |entry| entry.id)
                .ok()
                .map(|found| found + 1),
            Err(_) => None,
        };
        if start.is_none() {
            recovered.gap = true;
            queue(&gap_frame());
        }
        for entry in state.entries.range(start.unwrap_or(0)..) {
            if tags.contains_all(&entry.tags) {
                queue(&entry.frame);
                recovered.replayed += 1;
            }
        }
        (registered, recovered)
    }

    /// Memory the kept messages hold, estimated: their frames, tags and bookkeeping.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Number of messages kept.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the messages beyond `size` and those older than `ttl`.
    fn drop_old(&self, state: &mut State, now_ms: u64) {
        let oldest_kept = now_ms.saturating_sub(self.ttl.as_millis() as u64);
        while let Some(first) = state.entries.front() {
            if state.entries.len() <= self.size && first.id.ms >= oldest_kept {
                break;
            }
            let bytes = first.bytes();
            state.last_dropped = Some(first.id);
            state.bytes -= bytes;
            state.entries.pop_front();
        }
    }
}

/// `{"id":"ID","message":MESSAGE}` as a text frame; `payload` is the parser's output (JSON),
/// `id` needs no JSON escaping.
pub fn id_frame(id: &str, payload: &str) -> Bytes {
    frame::text_frame(&format!(r#"{{"id":"{id}","message":{payload}}}"#))
}

/// `{"gap":true}` as a text frame.
pub fn gap_frame() -> Bytes {
    frame::text_frame(GAP)
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn history(size: usize, ttl_s: u64) -> History {
        History::from_config(&HistoryConfig { size, ttl_s }).expect("on")
    }

    fn tags(text: &str) -> Tags {
        Tags::parse(text, crate::tags::TagLimits::UNLIMITED).expect("tags")
    }

    /// Records `payload` to `tags` at `ms`; returns its id.
    fn record(history: &History, tags_text: &str, payload: &str, ms: u64) -> MessageId {
        history.record(&tags(tags_text), payload, at(ms), |_| ()).0
    }

    /// The frames' texts a recovery from `since` queues for a connection with `tags_text`.
    fn recover(history: &History, since: &str, tags_text: &str, ms: u64) -> Vec<String> {
        let mut texts = Vec::new();
        history.recover(
            &Since::parse(since),
            &tags(tags_text),
            at(ms),
            || (),
            |frame| texts.push(frame_text(frame)),
        );
        texts
    }

    fn frame_text(frame: &Bytes) -> String {
        // A server text frame of under 126 bytes: two header bytes.
        String::from_utf8(frame[2..].to_vec()).expect("utf-8")
    }

    #[test]
    fn ids_increase_even_within_a_millisecond_or_when_the_clock_goes_back() {
        let first = MessageId::next(None, T0);
        let second = MessageId::next(Some(first), T0);
        let third = MessageId::next(Some(second), T0 - 5);
        let fourth = MessageId::next(Some(third), T0 + 1);
        assert!(first < second && second < third && third < fourth);
        assert_eq!(third.to_string(), format!("{T0}-2"));
        assert_eq!(fourth.to_string().parse::<MessageId>(), Ok(fourth));
        for bad in [
            "",
            "12",
            "a-1",
            "1-",
            "-1",
            "1-2-3",
            "+1-2",
            "1-99999999999999999999",
        ] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_recovery_replays_what_matches_after_the_id_in_order() {
        let history = history(10, 300);
        let first = record(&history, r#"{"room":"a"}"#, r#""1""#, T0);
        let second = record(&history, r#"{"room":"b"}"#, r#""2""#, T0);
        record(&history, r#"{"room":"a"}"#, r#""3""#, T0 + 1);
        record(&history, "{}", r#""4""#, T0 + 2);
        assert_eq!(second.to_string(), format!("{T0}-1"));
        assert_eq!(
            recover(&history, &first.to_string(), r#"{"room":"a"}"#, T0 + 3),
            [
                format!(r#"{{"id":"{}-0","message":"3"}}"#, T0 + 1),
                format!(r#"{{"id":"{}-0","message":"4"}}"#, T0 + 2),
            ]
        );
        assert!(recover(&history, "", r#"{"room":"a"}"#, T0 + 3).is_empty());
    }

    #[test]
    fn gap_when_messages_after_the_id_were_dropped_by_size() {
        let history = history(2, 300);
        let ids: Vec<MessageId> = (0..4)
            .map(|n| record(&history, "{}", &format!("\"{n}\""), T0 + n))
            .collect();
        // 0 and 1 dropped: from 1 (the last dropped) nothing is missing; from 0, "1" is.
        assert_eq!(
            recover(&history, &ids[1].to_string(), "{}", T0 + 9).len(),
            2
        );
        let from_first = recover(&history, &ids[0].to_string(), "{}", T0 + 9);
        assert_eq!(from_first[0], GAP);
        assert_eq!(from_first.len(), 3);
        assert_eq!(history.len(), 2);
    }

    #[test]
    fn gap_when_messages_after_the_id_expired() {
        let history = history(10, 1);
        let first = record(&history, "{}", r#""old""#, T0);
        record(&history, "{}", r#""old too""#, T0 + 10);
        let last = record(&history, "{}", r#""new""#, T0 + 1_005);
        assert_eq!(
            recover(&history, &first.to_string(), "{}", T0 + 1_005),
            [
                format!(r#"{{"id":"{}-0","message":"old too"}}"#, T0 + 10),
                format!(r#"{{"id":"{last}","message":"new"}}"#)
            ]
        );
        assert_eq!(
            recover(&history, &first.to_string(), "{}", T0 + 1_011)[0],
            GAP
        );
        // Everything expired: from the last id, nothing is missing.
        assert!(recover(&history, &last.to_string(), "{}", T0 + 9_000).is_empty());
        assert_eq!((history.len(), history.bytes()), (0, 0));
    }

    #[test]
    fn gap_for_an_id_never_issued() {
        let history = history(10, 300);
        let first = record(&history, "{}", r#""1""#, T0);
        for unknown in [
            "nonsense".to_string(),
            MessageId { ms: T0 - 1, seq: 0 }.to_string(),
            MessageId { ms: T0 + 1, seq: 0 }.to_string(),
        ] {
            let texts = recover(&history, &unknown, "{}", T0 + 2);
            assert_eq!(texts[0], GAP, "{unknown}");
            assert_eq!(texts.len(), 2, "{unknown}");
        }
        assert!(recover(&history, &first.to_string(), "{}", T0 + 2).is_empty());
    }

    #[test]
    fn bytes_follow_what_is_kept() {
        let history = history(3, 300);
        assert_eq!(history.bytes(), 0);
        record(
            &history,
            r#"{"room":"a"}"#,
            &format!("\"{}\"", "x".repeat(1000)),
            T0,
        );
        let one = history.bytes();
        assert!(one > 1000, "{one}");
        for n in 1..10 {
            record(
                &history,
                r#"{"room":"a"}"#,
                &format!("\"{}\"", "x".repeat(1000)),
                T0 + n,
            );
        }
        assert_eq!(history.bytes(), 3 * one);
    }
}
