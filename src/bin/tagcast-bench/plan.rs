//! What a scenario sends, decided up front and identical in every worker process: which room
//! each message goes to, which subscriber is in which room, and so how many messages each
//! subscriber must receive from each publisher, in what order.

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::client::Compression;

/// The scenarios of `tagcast bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Subscribers spread over rooms; each message to one random room, as fast as possible.
    Fanout,
    /// No tags: every message to every subscriber, as fast as possible.
    Broadcast,
    /// Like fanout at a fixed publish rate; latency counted from each message's scheduled time.
    Latency,
    /// Idle tagged connections: the server's memory per connection.
    Conns,
}

impl Scenario {
    /// The name used on the command line and in the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Broadcast => "broadcast",
            Scenario::Latency => "latency",
            Scenario::Conns => "conns",
        }
    }
}

/// What each message says after its index and stamp: `--content` of `tagcast bench`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Content {
    /// `x` up to `--size` bytes: the fewest bytes to route, and nothing like real text (it
    /// compresses to almost nothing).
    #[default]
    Filler,
    /// A JSON notification of about 600 bytes (an order list, as benches/compression.rs
    /// measures), in the message string as the `string` parser carries JSON: `--size` is not
    /// used.
    Notification,
}

impl Content {
    /// The name on the command line and in the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            Content::Filler => "filler",
            Content::Notification => "notification",
        }
    }
}

/// The notification of [`Content::Notification`], escaped for a JSON string.
fn escaped_notification() -> String {
    let items: Vec<String> = (0..6)
        .map(|i| {
            format!(
                r#"{{"id":{i},"title":"Order {i} shipped","url":"https://shop.example.com/orders/{i}","status":"shipped"}}"#
            )
        })
        .collect();
    let notification = format!(
        r#"{{"type":"notification","user":"42","items":[{}]}}"#,
        items.join(",")
    );
    let quoted = serde_json::Value::from(notification).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// One scenario's resolved parameters: what the parent sends to its worker processes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// The server, `ws://` or `wss://`.
    pub url: String,
    /// What to run.
    pub scenario: Scenario,
    /// Subscribing connections.
    pub subscribers: usize,
    /// Rooms the subscribers are spread over (1 for broadcast).
    pub rooms: usize,
    /// Publishing connections.
    pub publishers: usize,
    /// Messages published in all.
    pub messages: usize,
    /// Bytes of each message string (filler content).
    pub size: usize,
    /// What the messages say.
    pub content: Content,
    /// Whether connections offer permessage-deflate.
    pub compression: Compression,
    /// Messages per second (latency scenario only).
    pub rate: u32,
    /// Most messages a publisher keeps unfinished per room (sent but not yet received by every
    /// subscriber of the room).
    pub window: usize,
    /// Seed of the room each message goes to.
    pub seed: u64,
    /// Loopback source addresses to spread connections over.
    pub sources: u8,
    /// CA file trusted for `wss://`.
    pub ca: Option<PathBuf>,
    /// Accept any certificate on `wss://`.
    pub insecure: bool,
    /// Give up waiting after this many seconds without a delivery.
    pub timeout_s: f64,
    /// Seconds to wait once the subscribers closed before the server's memory is sampled again.
    pub settle_s: f64,
}

/// The schedule of one scenario.
pub struct Plan {
    /// The parameters.
    pub settings: Settings,
    /// For each (room, publisher), the indices of the messages it sends there, ascending.
    lists: Vec<Vec<u32>>,
    /// The room of each message.
    room_of_message: Vec<u32>,
    /// Subscribers per room.
    room_sizes: Vec<usize>,
    /// What each message says after its index and stamp, escaped for a JSON string
    /// (notification content only).
    text: String,
}

/// splitmix64: a fast, well-mixed hash of the seed and the message index.
fn mix(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

impl Plan {
    /// Draws the schedule. Message `i` is sent by publisher `i % publishers`.
    pub fn new(settings: Settings) -> Plan {
        let rooms = settings.rooms.max(1);
        let publishers = settings.publishers.max(1);
        let mut lists = vec![Vec::new(); rooms * publishers];
        let mut room_of_message = Vec::with_capacity(settings.messages);
        for index in 0..settings.messages {
            let room = (mix(settings.seed ^ mix(index as u64)) % rooms as u64) as usize;
            lists[room * publishers + index % publishers].push(index as u32);
            room_of_message.push(room as u32);
        }
        let room_sizes = (0..rooms)
            .map(|room| {
                settings.subscribers / rooms + usize::from(room < settings.subscribers % rooms)
            })
            .collect();
        let text = match settings.content {
            Content::Filler => String::new(),
            Content::Notification => escaped_notification(),
        };
        Plan {
            settings,
            lists,
            room_of_message,
            room_sizes,
            text,
        }
    }

    /// Number of rooms.
    pub fn rooms(&self) -> usize {
        self.room_sizes.len()
    }

    /// Number of publishers.
    pub fn publishers(&self) -> usize {
        self.settings.publishers.max(1)
    }

    /// The room of subscriber `subscriber`.
    pub fn room_of(&self, subscriber: usize) -> usize {
        subscriber % self.rooms()
    }

    /// The tags subscriber `subscriber` opens with; none for broadcast.
    pub fn subscriber_tags(&self, subscriber: usize) -> Option<String> {
        match self.settings.scenario {
            Scenario::Broadcast => None,
            _ => Some(format!(r#"{{"room":"r{}"}}"#, self.room_of(subscriber))),
        }
    }

    /// The messages publisher `publisher` sends to `room`, in order.
    pub fn list(&self, room: usize, publisher: usize) -> &[u32] {
        &self.lists[room * self.publishers() + publisher]
    }

    /// Messages a subscriber of `room` must receive.
    pub fn expected_in_room(&self, room: usize) -> u64 {
        (0..self.publishers())
            .map(|publisher| self.list(room, publisher).len() as u64)
            .sum()
    }

    /// Deliveries to all subscribers.
    pub fn expected_total(&self) -> u64 {
        (0..self.rooms())
            .map(|room| self.room_sizes[room] as u64 * self.expected_in_room(room))
            .sum()
    }

    /// The room message `index` goes to.
    pub fn room_of_message(&self, index: usize) -> usize {
        self.room_of_message[index] as usize
    }

    /// A subscriber of `room` that received `count` messages from `publisher` has every one of
    /// that publisher's messages with an index below the returned one.
    pub fn received_below(&self, room: usize, publisher: usize, count: usize) -> u64 {
        self.list(room, publisher)
            .get(count)
            .map_or(u64::MAX, |&next| u64::from(next))
    }

    /// How many of `publisher`'s messages to `room` have an index below `below`: those a
    /// subscriber of the room whose progress is `below` (see [`Plan::received_below`]) has.
    pub fn received_count(&self, room: usize, publisher: usize, below: u64) -> usize {
        self.list(room, publisher)
            .partition_point(|&index| u64::from(index) < below)
    }

    /// Appends the request that publishes message `index`, stamped `stamp_ns`, to `out`.
    pub fn write_request(&self, index: usize, stamp_ns: u64, room: usize, out: &mut Vec<u8>) {
        let start = out.len();
        let _ = write!(out, r#"{{"message":"{index} {stamp_ns} "#);
        match self.settings.content {
            Content::Filler => {
                let written = out.len() - start - r#"{"message":""#.len();
                out.resize(out.len() + self.settings.size.saturating_sub(written), b'x');
            }
            Content::Notification => out.extend_from_slice(self.text.as_bytes()),
        }
        match self.settings.scenario {
            Scenario::Broadcast => out.extend_from_slice(br#"","tags":{},"metadata":{}}"#),
            _ => {
                let _ = write!(out, r#"","tags":{{"room":"r{room}"}},"metadata":{{}}}}"#);
            }
        }
    }

    /// Appends the warm-up request for `room`: every subscriber must receive one before the
    /// measurement starts, which proves the server has registered it.
    pub fn write_warm_up(&self, room: usize, out: &mut Vec<u8>) {
        match self.settings.scenario {
            Scenario::Broadcast => {
                out.extend_from_slice(br#"{"message":"w","tags":{},"metadata":{}}"#)
            }
            _ => {
                let _ = write!(
                    out,
                    r#"{{"message":"w","tags":{{"room":"r{room}"}},"metadata":{{}}}}"#
                );
            }
        }
    }
}

/// What a subscriber found in a text frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload {
    /// A warm-up message.
    WarmUp,
    /// Message `index`, stamped `stamp_ns`.
    Message {
        /// Its index.
        index: usize,
        /// When it was sent (or scheduled), in nanoseconds since the Unix epoch.
        stamp_ns: u64,
    },
}

/// Reads only the start of a delivered frame: `"INDEX STAMP ...` or `"w"`.
pub fn parse_payload(payload: &[u8]) -> Option<Payload> {
    let rest = payload.strip_prefix(b"\"")?;
    if rest.first() == Some(&b'w') {
        return Some(Payload::WarmUp);
    }
    let (index, rest) = parse_number(rest)?;
    let (stamp_ns, _) = parse_number(rest.strip_prefix(b" ")?)?;
    Some(Payload::Message {
        index: usize::try_from(index).ok()?,
        stamp_ns,
    })
}

fn parse_number(text: &[u8]) -> Option<(u64, &[u8])> {
    let digits = text.iter().take_while(|byte| byte.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let value = text[..digits]
        .iter()
        .fold(0u64, |value, digit| value * 10 + u64::from(digit - b'0'));
    Some((value, &text[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(scenario: Scenario) -> Settings {
        Settings {
            url: "ws://127.0.0.1:1".into(),
            scenario,
            subscribers: 10,
            rooms: 3,
            publishers: 2,
            messages: 100,
            size: 64,
            content: Content::Filler,
            compression: Compression::Off,
            rate: 0,
            window: 8,
            seed: 7,
            sources: 1,
            ca: None,
            insecure: false,
            timeout_s: 1.0,
            settle_s: 0.0,
        }
    }

    #[test]
    fn every_message_goes_to_exactly_one_room_and_every_subscriber_is_counted() {
        let plan = Plan::new(settings(Scenario::Fanout));
        let total: usize = (0..3)
            .map(|room| plan.expected_in_room(room) as usize)
            .sum();
        assert_eq!(total, 100);
        // Rooms hold 4, 3 and 3 subscribers.
        let by_subscriber: u64 = (0..10)
            .map(|subscriber| plan.expected_in_room(plan.room_of(subscriber)))
            .sum();
        assert_eq!(by_subscriber, plan.expected_total());
        for index in 0..100 {
            let room = plan.room_of_message(index);
            assert!(plan.list(room, index % 2).contains(&(index as u32)));
        }
    }

    #[test]
    fn received_count_reads_back_a_subscribers_progress() {
        let plan = Plan::new(settings(Scenario::Fanout));
        for room in 0..3 {
            for publisher in 0..2 {
                for count in 0..=plan.list(room, publisher).len() {
                    let below = plan.received_below(room, publisher, count);
                    assert_eq!(plan.received_count(room, publisher, below), count);
                }
            }
        }
    }

    #[test]
    fn requests_carry_index_stamp_and_size_and_read_back() {
        let plan = Plan::new(settings(Scenario::Fanout));
        let mut out = Vec::new();
        plan.write_request(42, 1_700_000_000_123_456_789, 2, &mut out);
        let request: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let message = request["message"].as_str().unwrap();
        assert_eq!(message.len(), 64);
        assert_eq!(request["tags"]["room"], "r2");
        let delivered = serde_json::to_string(message).unwrap();
        assert_eq!(
            parse_payload(delivered.as_bytes()),
            Some(Payload::Message {
                index: 42,
                stamp_ns: 1_700_000_000_123_456_789
            })
        );
        assert_eq!(parse_payload(br#""w""#), Some(Payload::WarmUp));
        assert_eq!(parse_payload(br#""x""#), None);
    }

    #[test]
    fn notification_requests_carry_the_notification_as_a_string() {
        let plan = Plan::new(Settings {
            content: Content::Notification,
            ..settings(Scenario::Fanout)
        });
        let mut out = Vec::new();
        plan.write_request(7, 123, 1, &mut out);
        let request: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let message = request["message"].as_str().unwrap();
        let notification: serde_json::Value =
            serde_json::from_str(message.strip_prefix("7 123 ").unwrap()).unwrap();
        assert_eq!(notification["items"][5]["status"], "shipped");
        assert!((550..700).contains(&message.len()), "{}", message.len());
        let delivered = serde_json::to_string(message).unwrap();
        assert_eq!(
            parse_payload(delivered.as_bytes()),
            Some(Payload::Message {
                index: 7,
                stamp_ns: 123
            })
        );
    }

    #[test]
    fn broadcast_requests_have_no_tags() {
        let plan = Plan::new(Settings {
            rooms: 1,
            ..settings(Scenario::Broadcast)
        });
        let mut out = Vec::new();
        plan.write_request(1, 2, 0, &mut out);
        plan.write_warm_up(0, &mut out);
        assert!(!String::from_utf8(out).unwrap().contains("room"));
        assert_eq!(plan.subscriber_tags(3), None);
        assert_eq!(plan.expected_total(), 1000);
    }
}
