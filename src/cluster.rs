//! Several nodes sharing one Redis (`[cluster]`, SPEC §9): every request a node accepts reaches
//! the matching clients of every node.
//!
//! A node delivers an accepted request to its own clients at once ([`Shared::accept_request`]),
//! then hands an [envelope](#the-envelope) to [`Cluster::share`], which never waits: it pushes
//! the envelope into a bounded queue and returns. One publisher task drains that queue and
//! publishes whatever has piled up as one Redis pipeline, so a busy node pays one round trip per
//! batch, not per request. One subscriber task reads the channel and routes every envelope from
//! another node through [`Shared::route`]; its own (same node id) it skips, since its clients had
//! them already. One publishing connection and one subscription keep each sender's order.
//!
//! Redis being down never stops local delivery. The outage is logged once, shown by
//! [`Cluster::connected`], and both tasks reconnect with a capped backoff. While down, requests
//! are delivered locally only: they are not queued for later (a late copy would arrive after
//! newer messages). A full queue (Redis slower than the clients) drops envelopes the same way,
//! counted by [`Cluster::dropped`] and logged at most every few seconds.
//!
//! # The envelope
//! One JSON object per Redis message, `v` first:
//! `{"v":1,"node":"9f2c01d4e5a6b7c8","tags":{"language":"FR"},"message":"Bonjour !"}`.
//! `message` is the accepting node's parser output, verbatim: the receiving node checks that it
//! is JSON and builds the frame from it, without parsing the message again. Auth and the message
//! parser apply on the accepting node only. Unknown fields are ignored; a change old nodes could
//! not ignore gets a new `v`. An envelope a node cannot read is logged (at most every few
//! seconds) and dropped.
//!
//! [`Shared::accept_request`]: crate::net::server::Shared::accept_request
//! [`Shared::route`]: crate::net::server::Shared::route

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::net::server::Shared;
use crate::ops::config::ClusterConfig;
use crate::ops::metrics::{Metrics, Source};
use crate::routing::outbox::Wakeups;
use crate::tags::{TagLimits, Tags, TagsError};

/// The envelope version this node writes and reads.
pub const ENVELOPE_VERSION: u64 = 1;
/// Envelopes waiting for the publisher; beyond this, Redis is too slow and envelopes are dropped.
const QUEUE: usize = 8192;
/// Most envelopes published in one pipeline: all that can be queued. A round trip to Redis
/// costs about the same for 10 or 3000 publishes (measured: mostly waiting for a turn on a busy
/// machine), so the publisher keeps up by taking everything that piled up meanwhile.
const BATCH: usize = QUEUE;
/// The first wait before reconnecting; it doubles after each failure, up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between two connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// An idle connection is pinged this often, so that an outage is noticed without traffic.
const PING_EVERY: Duration = Duration::from_secs(1);
/// How long a connection attempt or a Redis answer may take before the link counts as down.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one warning per this long for each kind of dropped envelope.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A `[cluster]` section that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `cluster.redis` is not a Redis URL.
    #[error("cluster.redis: not a usable redis:// or rediss:// URL: {0}")]
    Url(RedisError),
    /// `cluster.channel` is empty.
    #[error("cluster.channel: must not be empty")]
    Channel,
}

/// This node's link to the other nodes.
pub struct Cluster {
    /// This node's id, in every envelope it publishes, so that it can skip its own.
    node: String,
    /// The Redis pub/sub channel the nodes share.
    channel: String,
    /// Opens connections to Redis (parsed from `cluster.redis`, password included).
    client: redis::Client,
    /// `{"v":1,"node":"<id>","tags":` — the start of every envelope, encoded once.
    prefix: String,
    /// Envelopes on their way to the publisher task.
    queue: mpsc::Sender<Vec<u8>>,
    /// True while both the publishing connection and the subscription are up.
    connected: AtomicBool,
    /// Which connection is up, and whether the current outage was logged.
    link: Mutex<Link>,
    /// Envelopes dropped because the queue was full.
    dropped: AtomicU64,
    /// Rate limit of the "queue full" warning.
    full_warning: Throttle,
    /// Rate limit of the "malformed envelope" warning.
    malformed_warning: Throttle,
}

/// The receiving end of [`Cluster::share`]'s queue, for [`Cluster::run`].
pub struct Outgoing(mpsc::Receiver<Vec<u8>>);

impl Cluster {
    /// The cluster link `config` asks for; `None` when `cluster.redis` is empty. Connects to
    /// nothing yet: [`Cluster::run`] does, in the background.
    pub fn from_config(
        config: &ClusterConfig,
    ) -> Result<Option<(Arc<Cluster>, Outgoing)>, ClusterError> {
        if config.redis.is_empty() {
            return Ok(None);
        }
        if config.channel.is_empty() {
            return Err(ClusterError::Channel);
        }
        let client = redis::Client::open(config.redis.as_str()).map_err(ClusterError::Url)?;
        let node = format!("{:016x}", rand::random::<u64>());
        let prefix = format!(
            r#"{{"v":{ENVELOPE_VERSION},"node":{},"tags":"#,
            serde_json::Value::String(node.clone())
        );
        let (queue, outgoing) = mpsc::channel(QUEUE);
        let cluster = Cluster {
            node,
            channel: config.channel.clone(),
            client,
            prefix,
            queue,
            connected: AtomicBool::new(false),
            link: Mutex::new(Link::default()),
            dropped: AtomicU64::new(0),
            full_warning: Throttle::default(),
            malformed_warning: Throttle::default(),
        };
        Ok(Some((Arc::new(cluster), Outgoing(outgoing))))
    }

    /// This node's id, as written in its envelopes.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// True while this node publishes to and listens on Redis (`STATUS=`; the
    /// `tagcast_cluster_connected` gauge follows it).
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Envelopes dropped because Redis did not keep up (the queue was full).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Hands an accepted request (its tags and its parser output) to the publisher; never waits.
    /// While Redis is down it does nothing: the request was delivered locally, and the outage
    /// is logged and shown elsewhere.
    pub fn share(&self, tags: &Tags, payload: &str) {
        if !self.connected() {
            return;
        }
        match self.queue.try_send(self.envelope(tags, payload)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(suppressed) = self.full_warning.allow() {
                    warn!(
                        node = %self.node,
                        dropped,
                        suppressed,
                        "redis is not keeping up: a request was not shared with the other nodes"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {} // shutting down
        }
    }

    /// The envelope of a request accepted here.
    fn envelope(&self, tags: &Tags, payload: &str) -> Vec<u8> {
        let mut envelope = Vec::with_capacity(self.prefix.len() + payload.len() + 64);
        envelope.extend_from_slice(self.prefix.as_bytes());
        serde_json::to_writer(&mut envelope, tags).expect("tags serialize to memory");
        envelope.extend_from_slice(br#","message":"#);
        envelope.extend_from_slice(payload.as_bytes());
        envelope.push(b'}');
        envelope
    }

    /// Publishes and subscribes until shutdown, reconnecting whenever Redis goes away.
    pub async fn run(self: Arc<Self>, outgoing: Outgoing, shared: Arc<Shared>) {
        info!(node = %self.node, channel = %self.channel, "sharing deliveries with other nodes through redis");
        let shutdown = shared.shutdown.clone();
        let publisher = self.publish(outgoing.0, &shared.metrics);
        let subscriber = self.subscribe(&shared);
        tokio::select! {
            _ = publisher => {}
            _ = subscriber => {}
            _ = shutdown.cancelled() => {}
        }
    }

    /// The publisher: connects, then publishes queued envelopes in pipelines until the link
    /// breaks; again, after a backoff.
    async fn publish(&self, mut queue: mpsc::Receiver<Vec<u8>>, metrics: &Metrics) {
        let mut backoff = Backoff::default();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        loop {
            let error = match self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(mut connection) => {
                    backoff.reset();
                    // Queued before the link broke: delivered locally long ago, too late now.
                    while queue.try_recv().is_ok() {}
                    self.link_up(Side::Publisher, metrics);
                    match self.publish_batches(&mut connection, &mut queue).await {
                        Some(error) => error,
                        None => return,
                    }
                }
                Err(error) => LinkError::Redis(error),
            };
            self.link_down(Side::Publisher, &error, metrics);
            backoff.wait().await;
        }
    }

    /// Publishes until an error (returned) or until the queue is closed (`None`).
    async fn publish_batches(
        &self,
        connection: &mut MultiplexedConnection,
        queue: &mut mpsc::Receiver<Vec<u8>>,
    ) -> Option<LinkError> {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let received = tokio::select! {
                received = queue.recv_many(&mut batch, BATCH) => received,
                _ = tokio::time::sleep(PING_EVERY) => {
                    match redis::cmd("PING").query_async::<()>(connection).await {
                        Ok(()) => continue,
                        Err(error) => return Some(LinkError::Redis(error)),
                    }
                }
            };
            if received == 0 {
                return None;
            }
            let mut pipeline = redis::pipe();
            for envelope in batch.drain(..) {
                pipeline
                    .cmd("PUBLISH")
                    .arg(&self.channel)
                    .arg(envelope)
                    .ignore();
            }
            if let Err(error) = pipeline.query_async::<()>(connection).await {
                return Some(LinkError::Redis(error));
            }
        }
    }

    /// The subscriber: listens on the channel and delivers other nodes' envelopes until the
    /// link breaks; again, after a backoff.
    async fn subscribe(&self, shared: &Shared) {
        let mut backoff = Backoff::default();
        loop {
            let error = self.listen(shared, &mut backoff).await;
            self.link_down(Side::Subscriber, &error, &shared.metrics);
            backoff.wait().await;
        }
    }

    /// Subscribes, then delivers envelopes until the subscription ends; returns why it ended.
    async fn listen(&self, shared: &Shared, backoff: &mut Backoff) -> LinkError {
        let pubsub = match within(self.client.get_async_pubsub()).await {
            Ok(pubsub) => pubsub,
            Err(error) => return error,
        };
        let (mut sink, mut messages) = pubsub.split();
        if let Err(error) = within(sink.subscribe(&self.channel)).await {
            return error;
        }
        backoff.reset();
        self.link_up(Side::Subscriber, &shared.metrics);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => self.deliver(shared, message.get_payload_bytes()),
                    None => return LinkError::Closed,
                },
                _ = ping.tick() => {
                    if let Err(error) = within(sink.ping::<()>()).await {
                        return error;
                    }
                }
            }
        }
    }

    /// Routes one envelope read from the channel, unless this node sent it.
    fn deliver(&self, shared: &Shared, bytes: &[u8]) {
        if bytes.starts_with(self.prefix.as_bytes()) {
            return; // this node's own, as it wrote it: no need to parse it
        }
        match Envelope::parse(bytes, shared.config.limits.tag_limits()) {
            Ok(envelope) if envelope.node == self.node => {}
            Ok(envelope) => {
                shared.metrics.request(Source::Cluster);
                let delivery =
                    shared.route(&envelope.tags, envelope.message, &mut Wakeups::default());
                debug!(
                    from = %envelope.node,
                    delivered = delivery.delivered,
                    "request from another node routed"
                );
            }
            Err(error) => {
                if let Some(suppressed) = self.malformed_warning.allow() {
                    warn!(
                        node = %self.node,
                        channel = %self.channel,
                        suppressed,
                        "dropped a message from redis that is not a tagcast envelope: {error}"
                    );
                }
            }
        }
    }

    /// Records a working connection; the link is up once both are.
    fn link_up(&self, side: Side, metrics: &Metrics) {
        let mut link = lock(&self.link);
        link.up[side as usize] = true;
        if link.up.iter().all(|&up| up) {
            self.connected.store(true, Ordering::Relaxed);
            metrics.set_cluster_connected(true);
            match std::mem::take(&mut link.outage_logged) {
                true => info!(node = %self.node, channel = %self.channel,
                    "redis reachable again: sharing deliveries with other nodes"),
                false => info!(node = %self.node, channel = %self.channel, "connected to redis"),
            }
        }
    }

    /// Records a broken connection; only the first failure of an outage is a warning.
    fn link_down(&self, side: Side, error: &LinkError, metrics: &Metrics) {
        let mut link = lock(&self.link);
        link.up[side as usize] = false;
        self.connected.store(false, Ordering::Relaxed);
        metrics.set_cluster_connected(false);
        match std::mem::replace(&mut link.outage_logged, true) {
            false => warn!(
                node = %self.node, channel = %self.channel,
                "redis unreachable ({}: {error}): delivering to this node's clients only; reconnecting",
                side.as_str()
            ),
            true => debug!("redis still unreachable ({}: {error})", side.as_str()),
        }
    }
}

/// One of the two Redis connections.
#[derive(Clone, Copy)]
enum Side {
    Publisher = 0,
    Subscriber = 1,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Publisher => "publishing",
            Side::Subscriber => "subscription",
        }
    }
}

/// The state of the two connections.
#[derive(Default)]
struct Link {
    /// Indexed by [`Side`].
    up: [bool; 2],
    /// True once the current outage has been logged, until the link is whole again.
    outage_logged: bool,
}

/// Why a connection to Redis ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Redis(RedisError),
    #[error("no answer within {} s", REDIS_TIMEOUT.as_secs())]
    TimedOut,
    #[error("connection closed")]
    Closed,
}

/// `request`'s answer, unless Redis takes longer than [`REDIS_TIMEOUT`] (the pub/sub connection
/// has no timeout of its own).
async fn within<T>(request: impl Future<Output = Result<T, RedisError>>) -> Result<T, LinkError> {
    match tokio::time::timeout(REDIS_TIMEOUT, request).await {
        Ok(answer) => answer.map_err(LinkError::Redis),
        Err(_) => Err(LinkError::TimedOut),
    }
}

/// An envelope read from the channel.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// The id of the node that accepted the request.
    pub node: Cow<'a, str>,
    /// The request's tags.
    pub tags: Tags,
    /// The accepting node's parser output: the text of the frame to deliver.
    pub message: &'a str,
}

/// Why a message on the channel is not an envelope this node can deliver.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not UTF-8 text.
    #[error("not UTF-8")]
    NotUtf8,
    /// Not JSON, or a field is missing or of the wrong type.
    #[error("{0}")]
    Json(serde_json::Error),
    /// Written by a node that speaks another version.
    #[error("envelope version {0}, this node reads version {ENVELOPE_VERSION}")]
    Version(u64),
    /// The tags break this node's limits.
    #[error(transparent)]
    Tags(TagsError),
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    v: u64,
    #[serde(borrow)]
    node: Cow<'a, str>,
    tags: serde_json::Value,
    #[serde(borrow)]
    message: &'a RawValue,
}

impl<'a> Envelope<'a> {
    /// Reads an envelope; its tags must fit `limits`.
    pub fn parse(bytes: &'a [u8], limits: TagLimits) -> Result<Envelope<'a>, EnvelopeError> {
        #[derive(Deserialize)]
        struct Version {
            v: u64,
        }
        let text = std::str::from_utf8(bytes).map_err(|_| EnvelopeError::NotUtf8)?;
        let raw: RawEnvelope<'a> = serde_json::from_str(text).map_err(|error| {
            match serde_json::from_str::<Version>(text) {
                Ok(Version { v }) if v != ENVELOPE_VERSION => EnvelopeError::Version(v),
                _ => EnvelopeError::Json(error),
            }
        })?;
        if raw.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(raw.v));
        }
        Ok(Envelope {
            node: raw.node,
            tags: Tags::from_json(&raw.tags, limits).map_err(EnvelopeError::Tags)?,
            message: raw.message.get(),
        })
    }
}

/// Waits between connection attempts: 100 ms, doubling up to 5 s, back to 100 ms after a
/// success.
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// The wait before the next attempt; the one after it is longer.
    fn advance(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        wait
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.advance()).await;
    }
}

/// Lets a repeated warning through at most once per [`WARN_EVERY`], counting the ones held back.
#[derive(Default)]
struct Throttle {
    /// When the last warning went out, and how many were held back since.
    state: Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    /// `Some(held back since the last one)` when a warning may go out now.
    fn allow(&self) -> Option<u64> {
        let mut state = lock(&self.state);
        let now = std::time::Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < WARN_EVERY => {
                state.1 += 1;
                None
            }
            _ => {
                state.0 = Some(now);
                Some(std::mem::take(&mut state.1))
            }
        }
    }
}

/// The mutex's value; a panic elsewhere while it was held left it consistent (every update
/// here is a single assignment).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> (Arc<Cluster>, Outgoing) {
        let config = ClusterConfig {
            redis: "redis://127.0.0.1:1/".into(),
            channel: "tagcast".into(),
        };
        match Cluster::from_config(&config) {
            Ok(Some(cluster)) => cluster,
            _ => panic!("a valid cluster config"),
        }
    }

    #[test]
    fn requests_are_shared_only_while_connected_and_a_full_queue_drops_them() {
        let (cluster, mut outgoing) = cluster();
        let tags = Tags::default();
        cluster.share(&tags, r#""while down""#);
        assert!(outgoing.0.try_recv().is_err(), "not queued while down");
        let limits =
            crate::routing::outbox::SendLimits::new(1, std::time::Duration::from_secs(1), 1);
        let metrics = Metrics::new(true, limits);
        let gauge = |metrics: &Metrics| {
            let text = metrics.encode();
            text.lines()
                .find(|line| line.starts_with("tagcast_cluster_connected "))
                .map(str::to_owned)
        };
        cluster.link_up(Side::Publisher, &metrics);
        assert!(!cluster.connected(), "the subscription is not up yet");
        assert_eq!(
            gauge(&metrics).as_deref(),
            Some("tagcast_cluster_connected 0")
        );
        cluster.link_up(Side::Subscriber, &metrics);
        assert!(cluster.connected());
        assert_eq!(
            gauge(&metrics).as_deref(),
            Some("tagcast_cluster_connected 1")
        );
        for _ in 0..QUEUE + 3 {
            cluster.share(&tags, r#""up""#);
        }
        assert_eq!(cluster.dropped(), 3);
        cluster.link_down(Side::Subscriber, &LinkError::Closed, &metrics);
        assert!(!cluster.connected());
        assert_eq!(
            gauge(&metrics).as_deref(),
            Some("tagcast_cluster_connected 0")
        );
    }

    #[test]
    fn an_envelope_reads_back_as_written() {
        let (cluster, _) = cluster();
        let tags: Tags = [("language", "FR"), ("userId", "42")].into_iter().collect();
        let payload = r#"{"type":"news","metadata":{"a":"é \" \\"}}"#;
        let bytes = cluster.envelope(&tags, payload);
        let envelope = Envelope::parse(&bytes, TagLimits::UNLIMITED).expect("an envelope");
        assert_eq!(envelope.node, cluster.node());
        assert_eq!(envelope.tags, tags);
        assert_eq!(envelope.message, payload);
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(
            text.starts_with(&format!(
                r#"{{"v":1,"node":"{}","tags":{{"language":"FR","userId":"42"}},"message":"#,
                cluster.node()
            )),
            "{text}"
        );
    }

    #[test]
    fn what_is_not_an_envelope_is_refused_with_a_reason() {
        let limits = TagLimits {
            max_tags: 1,
            max_tag_length: 8,
        };
        let refused = |text: &[u8]| match Envelope::parse(text, limits) {
            Ok(envelope) => panic!("accepted {envelope:?}"),
            Err(error) => error.to_string(),
        };
        assert_eq!(refused(b"\xff"), "not UTF-8");
        assert!(refused(b"hello").contains("expected value"));
        assert!(refused(br#"{"v":1,"node":"a","tags":{}}"#).contains("missing field `message`"));
        assert_eq!(
            refused(br#"{"v":2,"node":"a","other":"shape"}"#),
            "envelope version 2, this node reads version 1"
        );
        assert_eq!(
            refused(br#"{"v":1,"node":"a","tags":{"a":"1","b":"2"},"message":"x"}"#),
            "too many tags: at most 1"
        );
        assert!(refused(br#"{"v":1,"node":"a","tags":{},"message":nope}"#).contains("expected"));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let text = br#"{"v":1,"node":"a","tags":{},"message":[1, 2],"trace":"x"}"#;
        let envelope = Envelope::parse(text, TagLimits::UNLIMITED).expect("an envelope");
        assert_eq!(envelope.message, "[1, 2]");
    }

    #[test]
    fn a_bad_url_or_an_empty_channel_is_a_config_error() {
        let config = |redis: &str, channel: &str| ClusterConfig {
            redis: redis.into(),
            channel: channel.into(),
        };
        assert!(matches!(Cluster::from_config(&config("", "x")), Ok(None)));
        let error = |config| match Cluster::from_config(&config) {
            Err(error) => error.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert!(error(config("http://example.org/", "x")).starts_with("cluster.redis: "));
        let bad_port = error(config("redis://:pa55word@127.0.0.1:port/", "x"));
        assert!(bad_port.starts_with("cluster.redis: "), "{bad_port}");
        assert!(!bad_port.contains("pa55word"), "{bad_port}");
        assert_eq!(
            error(config("redis://127.0.0.1/", "")),
            "cluster.channel: must not be empty"
        );
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        let waits: Vec<u128> = (0..8).map(|_| backoff.advance().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.advance(), BACKOFF_MIN);
    }

    #[test]
    fn the_throttle_lets_one_warning_through_and_counts_the_rest() {
        let throttle = Throttle::default();
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        lock(&throttle.state).0 = std::time::Instant::now().checked_sub(WARN_EVERY);
        assert_eq!(throttle.allow(), Some(2));
    }
}
