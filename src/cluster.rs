//! Several nodes sharing one Redis (`[cluster]`, SPEC §9): every request a node accepts reaches
//! the matching clients of every node.
//!
//! A node delivers an accepted request to its own clients at once ([`Router::handle_request`]),
//! then hands an [envelope](#the-envelope) to [`Cluster::share`], which never waits: it pushes
//! the envelope into a bounded queue and returns. One publisher task drains that queue and
//! publishes whatever has piled up as one Redis pipeline, so a busy node pays one round trip per
//! batch, not per request. One subscriber task reads the channel and routes every envelope from
//! another node through [`Router::route`]; its own (same node id) it skips, since its clients had
//! them already. One publishing connection and one subscription keep each sender's order.
//!
//! Redis being down never stops local delivery. The outage is logged once, shown by
//! [`Cluster::connected`], and both tasks reconnect with a capped backoff. While down, requests
//! are delivered locally only: they are not queued for later (a late copy would arrive after
//! newer messages). A full queue (Redis slower than the clients) drops envelopes the same way,
//! counted by [`Cluster::dropped`] and logged at most every few seconds.
//!
//! # With the history (`[history] size > 0`): a Redis stream instead of pub/sub
//! Ids must be shared by the nodes and a client must recover from any node, so requests go
//! through one Redis stream, `CHANNEL:history`, instead of the channel: the publisher adds each
//! envelope with `XADD ... MAXLEN ~ size * e ENVELOPE` (Redis issues the id), and every node,
//! the accepting one included, follows the stream with `XREAD BLOCK` and routes each entry with
//! its stream id, in the stream's order, keeping it in its [`History`] for recoveries. A node
//! that starts reads the newest `size` entries (`XREVRANGE`) to recover clients from. Serving
//! recoveries from that local copy rather than with an `XRANGE` per reconnect keeps the replay
//! and the live messages in one order without waiting on Redis while a connection opens.
//!
//! A node that cannot vouch says gap: while its link is down every recovery starts with
//! `{"gap":true}`; requests accepted meanwhile reach its own clients only, with `local-` ids no
//! recovery vouches for, and once the link is back the node adds a gap marker entry
//! (`gap NODE`) that makes every node forget its kept messages and send `{"gap":true}` to its
//! connections with ids. A node whose last read entry is gone from the stream when it
//! reconnects (trimmed meanwhile, or Redis restarted without it) does the same. Envelopes that
//! could not be added are delivered locally; an HTTP publish waits for its request to come back
//! from the stream (the `ref` field) to answer with its id and this node's count.
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
//! [`History`]: crate::routing::history::History

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::ops::config::{ClusterConfig, HistoryConfig};
use crate::ops::metrics::{Metrics, Source};
use crate::routing::history::{History, MessageId};
use crate::routing::hub::Delivery;
use crate::routing::outbox::{self, Wakeups};
use crate::routing::router::{Router, Sharing};
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
/// The field of a stream entry holding an envelope.
const ENTRY_FIELD: &str = "e";
/// The field of a stream entry that is a gap marker, holding the id of the node that wrote it.
const GAP_FIELD: &str = "gap";
/// Most entries one `XREAD` returns.
const READ_COUNT: usize = 1024;
/// How long one `XREAD` waits for new entries (then it asks again: it doubles as a ping).
const READ_BLOCK: Duration = Duration::from_secs(1);

/// A `[cluster]` section that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `cluster.redis` is not a Redis URL.
    #[error("cluster.redis: not a usable redis:// or rediss:// URL: {0}")]
    Url(RedisError),
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
    /// The shared history, when `[history]` is on: requests go through a Redis stream.
    stream: Option<Stream>,
    /// HTTP publishes waiting for their message to be read back from the stream and routed
    /// here, by the `ref` of their envelope.
    pending: Mutex<HashMap<u64, oneshot::Sender<Delivery>>>,
    /// The last `ref` given.
    next_ref: AtomicU64,
    /// Requests delivered to this node's clients only, the link being down (their ids).
    unshared: AtomicU64,
    /// Requests delivered to this node's clients only since the link was last up: the other
    /// nodes must be told, with a gap marker, when it is up again.
    unshared_since_up: AtomicBool,
}

/// The Redis stream holding the cluster's history (`[history]` on with `[cluster]`).
struct Stream {
    /// `CHANNEL:history`.
    key: String,
    /// `history.size`: `XADD ... MAXLEN ~ size`, and what a node reads back at start.
    size: usize,
}

/// The receiving end of [`Cluster::share`]'s queue, for [`Cluster::run`].
pub struct Outgoing(mpsc::Receiver<Vec<u8>>);

impl Cluster {
    /// The cluster link `config` asks for; `None` when `cluster.redis` is empty. Connects to
    /// nothing yet: [`Cluster::run`] does, in the background.
    pub fn from_config(
        config: &ClusterConfig,
        history: &HistoryConfig,
    ) -> Result<Option<(Arc<Cluster>, Outgoing)>, ClusterError> {
        let Some(url) = &config.redis else {
            return Ok(None);
        };
        let client = redis::Client::open(url.expose()).map_err(ClusterError::Url)?;
        let node = format!("{:016x}", rand::random::<u64>());
        let prefix = format!(
            r#"{{"v":{ENVELOPE_VERSION},"node":{},"tags":"#,
            serde_json::Value::String(node.clone())
        );
        let (queue, outgoing) = mpsc::channel(QUEUE);
        let cluster = Cluster {
            node,
            channel: config.channel.to_string(),
            client,
            prefix,
            queue,
            connected: AtomicBool::new(false),
            link: Mutex::new(Link::default()),
            dropped: AtomicU64::new(0),
            full_warning: Throttle::default(),
            malformed_warning: Throttle::default(),
            stream: (history.size > 0).then(|| Stream {
                key: format!("{}:history", config.channel),
                size: history.size,
            }),
            pending: Mutex::new(HashMap::new()),
            next_ref: AtomicU64::new(0),
            unshared: AtomicU64::new(0),
            unshared_since_up: AtomicBool::new(false),
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

    /// Queues an envelope for the publisher; false when the queue is full (Redis too slow).
    fn enqueue(&self, envelope: Vec<u8>) -> bool {
        match self.queue.try_send(envelope) {
            Ok(()) => true,
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
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false, // shutting down
        }
    }

    /// The envelope of a request accepted here; `reference` names an HTTP publish waiting for it.
    fn envelope(&self, tags: &Tags, payload: &str, reference: Option<u64>) -> Vec<u8> {
        let mut envelope = Vec::with_capacity(self.prefix.len() + payload.len() + 64);
        envelope.extend_from_slice(self.prefix.as_bytes());
        serde_json::to_writer(&mut envelope, tags).expect("tags serialize to memory");
        envelope.extend_from_slice(br#","message":"#);
        envelope.extend_from_slice(payload.as_bytes());
        if let Some(reference) = reference {
            envelope.extend_from_slice(format!(r#","ref":{reference}"#).as_bytes());
        }
        envelope.push(b'}');
        envelope
    }

    /// Publishes and subscribes until shutdown, reconnecting whenever Redis goes away.
    pub async fn run(
        self: Arc<Self>,
        outgoing: Outgoing,
        router: Arc<Router>,
        shutdown: CancellationToken,
    ) {
        info!(node = %self.node, channel = %self.channel, "sharing deliveries with other nodes through redis");
        let publisher = self.publish(outgoing.0, &router);
        let subscriber = async {
            match &self.stream {
                Some(stream) => self.read_stream(&router, stream).await,
                None => self.subscribe(&router).await,
            }
        };
        tokio::select! {
            _ = publisher => {}
            _ = subscriber => {}
            _ = shutdown.cancelled() => {}
        }
    }

    /// The publisher: connects, then publishes queued envelopes in pipelines until the link
    /// breaks; again, after a backoff.
    async fn publish(&self, mut queue: mpsc::Receiver<Vec<u8>>, router: &Router) {
        let metrics = router.metrics();
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
                    // Queued before the link broke: delivered locally long ago, too late now;
                    // with the history, not delivered yet: now, locally.
                    while let Ok(envelope) = queue.try_recv() {
                        self.deliver_unshared(router, &envelope);
                    }
                    match self.tell_unshared(&mut connection).await {
                        Ok(()) => {
                            self.link_up(Side::Publisher, metrics);
                            match self
                                .publish_batches(&mut connection, &mut queue, router)
                                .await
                            {
                                Some(error) => error,
                                None => return,
                            }
                        }
                        Err(error) => LinkError::Redis(error),
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
        router: &Router,
    ) -> Option<LinkError> {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            // Requests this node could not share while this connection is up (the queue was
            // full, the reader was down) are announced before the next ones.
            if let Err(error) = self.tell_unshared(connection).await {
                return Some(LinkError::Redis(error));
            }
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
            for envelope in &batch {
                match &self.stream {
                    Some(stream) => pipeline
                        .cmd("XADD")
                        .arg(&stream.key)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(stream.size)
                        .arg("*")
                        .arg(ENTRY_FIELD)
                        .arg(envelope),
                    None => pipeline.cmd("PUBLISH").arg(&self.channel).arg(envelope),
                }
                .ignore();
            }
            if let Err(error) = pipeline.query_async::<()>(connection).await {
                // Not in the stream (or not all): delivered here at least.
                for envelope in batch.drain(..) {
                    self.deliver_unshared(router, &envelope);
                }
                return Some(LinkError::Redis(error));
            }
            batch.clear();
        }
    }

    /// With the history: when this node delivered requests to its own clients only while cut
    /// off, adds a gap marker to the stream, so that every node tells its recovering clients
    /// that they may have missed messages.
    async fn tell_unshared(
        &self,
        connection: &mut MultiplexedConnection,
    ) -> Result<(), RedisError> {
        let Some(stream) = &self.stream else {
            return Ok(());
        };
        if !self.unshared_since_up.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let added = redis::cmd("XADD")
            .arg(&stream.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(stream.size)
            .arg("*")
            .arg(GAP_FIELD)
            .arg(&self.node)
            .query_async::<()>(connection)
            .await;
        if added.is_err() {
            self.unshared_since_up.store(true, Ordering::Relaxed);
        }
        added
    }

    /// Delivers an envelope of this node's that did not reach Redis to this node's clients
    /// only (with the history; without it, it was delivered when accepted).
    fn deliver_unshared(&self, router: &Router, bytes: &[u8]) {
        if self.stream.is_none() {
            return;
        }
        let Ok(envelope) = Envelope::parse(bytes, TagLimits::UNLIMITED) else {
            return; // written by this node: always an envelope
        };
        let delivery = router.route_unshared(
            &self.unshared_id(),
            &envelope.tags,
            envelope.message,
            &mut Wakeups::default(),
        );
        self.resolve(envelope.reference, delivery);
    }

    /// Answers the HTTP publish waiting for envelope `reference`, if any.
    fn resolve(&self, reference: Option<u64>, delivery: Delivery) {
        if let Some(sender) = reference.and_then(|reference| lock(&self.pending).remove(&reference))
        {
            let _ = sender.send(delivery);
        }
    }

    /// The history's reader (`[history]` on): follows the cluster's stream and routes every
    /// request in it, this node's own included, in the stream's order, with the stream's ids;
    /// again after a backoff when the link breaks.
    async fn read_stream(&self, router: &Router, stream: &Stream) {
        let mut backoff = Backoff::default();
        let mut last = None;
        loop {
            let error = self.follow(router, stream, &mut last, &mut backoff).await;
            self.link_down(Side::Subscriber, &error, router.metrics());
            if let Some(history) = router.history() {
                history.set_blind(true);
            }
            backoff.wait().await;
        }
    }

    /// Connects, makes sure the stream continues what this node read (`last`), then routes
    /// new entries until the link breaks; returns why it broke.
    async fn follow(
        &self,
        router: &Router,
        stream: &Stream,
        last: &mut Option<MessageId>,
        backoff: &mut Backoff,
    ) -> LinkError {
        let Some(history) = router.history() else {
            return LinkError::Closed; // the stream is used only with a history
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT + READ_BLOCK));
        let mut connection = match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(connection) => connection,
            Err(error) => return LinkError::Redis(error),
        };
        let resumed = match *last {
            None => self.prime(&mut connection, stream, history).await,
            Some(id) => self.continues(&mut connection, stream, id).await,
        };
        match resumed {
            Ok((id, true)) => *last = Some(id),
            Ok((id, false)) => {
                warn!(node = %self.node, key = %stream.key,
                    "the shared history lost messages this node did not read: recovering clients are told of a gap");
                *last = Some(id);
                self.lose_continuity(router, history);
            }
            Err(error) => return LinkError::Redis(error),
        }
        backoff.reset();
        // Still blind when requests delivered here only are not announced yet (its marker,
        // once read back, ends that).
        history.set_blind(self.unshared_since_up.load(Ordering::Relaxed));
        self.link_up(Side::Subscriber, router.metrics());
        loop {
            let after = last.expect("set above").to_string();
            let reply = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(READ_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&stream.key)
                .arg(&after)
                .query_async::<redis::Value>(&mut connection)
                .await;
            let entries = match reply {
                Ok(reply) => stream_entries(reply, true),
                Err(error) => return LinkError::Redis(error),
            };
            for entry in entries {
                *last = Some(entry.id);
                self.deliver_entry(router, history, entry);
            }
        }
    }

    /// At start: keeps the newest `history.size` entries of the stream, for recoveries; the id
    /// to read after (`0-0` for an empty stream).
    async fn prime(
        &self,
        connection: &mut MultiplexedConnection,
        stream: &Stream,
        history: &History,
    ) -> Result<(MessageId, bool), RedisError> {
        let newest = redis::cmd("XREVRANGE")
            .arg(&stream.key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(stream.size)
            .query_async::<redis::Value>(connection)
            .await?;
        let mut entries = stream_entries(newest, false);
        entries.reverse();
        let last = entries
            .last()
            .map_or(MessageId { ms: 0, seq: 0 }, |entry| entry.id);
        // What follows a gap marker is kept; what precedes it cannot be vouched for.
        let after_gap = entries
            .iter()
            .rposition(|entry| entry.gap_from.is_some())
            .map_or(0, |marker| marker + 1);
        let limits = TagLimits::UNLIMITED;
        history.prime(entries[after_gap..].iter().filter_map(|entry| {
            let envelope = Envelope::parse(entry.envelope.as_deref()?, limits).ok()?;
            Some((entry.id, envelope.tags, envelope.message.to_owned()))
        }));
        Ok((last, true))
    }

    /// After an outage: true when the entry `last` is still in the stream (nothing after it
    /// was trimmed, the stream was not lost); an empty start (`0-0`) continues while the stream
    /// is shorter than its `MAXLEN` (never trimmed).
    async fn continues(
        &self,
        connection: &mut MultiplexedConnection,
        stream: &Stream,
        last: MessageId,
    ) -> Result<(MessageId, bool), RedisError> {
        if last == (MessageId { ms: 0, seq: 0 }) {
            let length: usize = redis::cmd("XLEN")
                .arg(&stream.key)
                .query_async(connection)
                .await?;
            return Ok((last, length < stream.size));
        }
        let found = redis::cmd("XRANGE")
            .arg(&stream.key)
            .arg(last.to_string())
            .arg(last.to_string())
            .query_async::<redis::Value>(connection)
            .await?;
        Ok((last, !stream_entries(found, false).is_empty()))
    }

    /// Routes one stream entry (a request, or another node's gap marker).
    fn deliver_entry(&self, router: &Router, history: &History, entry: StreamEntry) {
        if let Some(node) = &entry.gap_from {
            info!(node = %self.node, from = %node,
                "a node delivered requests to its own clients only while cut off: recovering clients are told of a gap");
            self.lose_continuity(router, history);
            if *node == self.node {
                history.set_blind(self.unshared_since_up.load(Ordering::Relaxed));
            }
            return;
        }
        let Some(bytes) = &entry.envelope else {
            return;
        };
        match Envelope::parse(bytes, router.tag_limits()) {
            Ok(envelope) => {
                let own = envelope.node == self.node;
                if !own {
                    router.metrics().request(Source::Cluster);
                }
                let delivery = router.route_issued(
                    entry.id,
                    &envelope.tags,
                    envelope.message,
                    &mut Wakeups::default(),
                );
                if own && let Some(delivery) = delivery {
                    self.resolve(envelope.reference, delivery);
                }
            }
            Err(error) => self.malformed(&error),
        }
    }

    /// Forgets this node's kept messages and tells its recovering clients of a gap.
    fn lose_continuity(&self, router: &Router, history: &History) {
        history.lose_continuity(|gap| {
            let mut wakeups = Wakeups::default();
            for peer in router.hub().peers() {
                if peer.wants_ids {
                    peer.outbox.push(&outbox::Outgoing::new(gap), &mut wakeups);
                }
            }
        });
    }

    /// The subscriber: listens on the channel and delivers other nodes' envelopes until the
    /// link breaks; again, after a backoff.
    async fn subscribe(&self, router: &Router) {
        let mut backoff = Backoff::default();
        loop {
            let error = self.listen(router, &mut backoff).await;
            self.link_down(Side::Subscriber, &error, router.metrics());
            backoff.wait().await;
        }
    }

    /// Subscribes, then delivers envelopes until the subscription ends; returns why it ended.
    async fn listen(&self, router: &Router, backoff: &mut Backoff) -> LinkError {
        let pubsub = match within(self.client.get_async_pubsub()).await {
            Ok(pubsub) => pubsub,
            Err(error) => return error,
        };
        let (mut sink, mut messages) = pubsub.split();
        if let Err(error) = within(sink.subscribe(&self.channel)).await {
            return error;
        }
        backoff.reset();
        self.link_up(Side::Subscriber, router.metrics());
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => self.deliver(router, message.get_payload_bytes()),
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
    fn deliver(&self, router: &Router, bytes: &[u8]) {
        if bytes.starts_with(self.prefix.as_bytes()) {
            return; // this node's own, as it wrote it: no need to parse it
        }
        match Envelope::parse(bytes, router.tag_limits()) {
            Ok(envelope) if envelope.node == self.node => {}
            Ok(envelope) => {
                router.metrics().request(Source::Cluster);
                let delivery =
                    router.route(&envelope.tags, envelope.message, &mut Wakeups::default());
                debug!(
                    from = %envelope.node,
                    delivered = delivery.delivered,
                    "request from another node routed"
                );
            }
            Err(error) => self.malformed(&error),
        }
    }

    /// Logs, at most every few seconds, a message from Redis that is not an envelope.
    fn malformed(&self, error: &EnvelopeError) {
        if let Some(suppressed) = self.malformed_warning.allow() {
            warn!(
                node = %self.node,
                channel = %self.channel,
                suppressed,
                "dropped a message from redis that is not a tagcast envelope: {error}"
            );
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

/// The router hands accepted requests to the other nodes through the cluster link.
impl Sharing for Cluster {
    /// True when requests go through the cluster's Redis stream (`[history]` on): every node,
    /// the accepting one included, routes them as it reads them back, in the stream's order.
    fn keeps_history(&self) -> bool {
        self.stream.is_some()
    }

    /// Hands an accepted request (its tags and its parser output) to the publisher; never waits.
    /// While Redis is down it does nothing and returns false: the request is delivered locally
    /// only (by the caller), and the outage is logged and shown elsewhere.
    fn share(&self, tags: &Tags, payload: &str) -> bool {
        self.connected() && self.enqueue(self.envelope(tags, payload, None))
    }

    /// [`Sharing::share`] for a caller that waits for the message to be routed here (HTTP
    /// publish with the history on): resolves once this node read it back from the stream.
    fn share_waiting(&self, tags: &Tags, payload: &str) -> Option<oneshot::Receiver<Delivery>> {
        if !self.connected() {
            return None;
        }
        let reference = self.next_ref.fetch_add(1, Ordering::Relaxed) + 1;
        let (sender, receiver) = oneshot::channel();
        lock(&self.pending).insert(reference, sender);
        match self.enqueue(self.envelope(tags, payload, Some(reference))) {
            true => Some(receiver),
            false => {
                lock(&self.pending).remove(&reference);
                None
            }
        }
    }

    /// The id of a request delivered to this node's clients only (the link is down): no
    /// recovery vouches for it. Notes that the other nodes must be told of a gap.
    fn unshared_id(&self) -> String {
        self.unshared_since_up.store(true, Ordering::Relaxed);
        let number = self.unshared.fetch_add(1, Ordering::Relaxed) + 1;
        format!("local-{}-{number}", self.node)
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
    /// Names the accepting node's HTTP publish waiting for it (history on).
    pub reference: Option<u64>,
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
    #[serde(default, rename = "ref")]
    reference: Option<u64>,
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
            reference: raw.reference,
        })
    }
}

/// One entry of the cluster's stream.
#[derive(Debug, PartialEq)]
struct StreamEntry {
    id: MessageId,
    /// The envelope, for a request.
    envelope: Option<Vec<u8>>,
    /// The node that wrote it, for a gap marker.
    gap_from: Option<String>,
}

/// The entries of an `XRANGE`/`XREVRANGE` reply, or of an `XREAD` reply of one stream
/// (`read`); what does not have their shape is skipped.
fn stream_entries(reply: redis::Value, read: bool) -> Vec<StreamEntry> {
    use redis::Value;
    let entries = match (reply, read) {
        (Value::Array(streams), true) => streams.into_iter().find_map(|stream| match stream {
            Value::Array(mut pair) if pair.len() == 2 => match pair.pop() {
                Some(Value::Array(entries)) => Some(entries),
                _ => None,
            },
            _ => None,
        }),
        // RESP3 answers XREAD with a map of stream to entries.
        (Value::Map(streams), true) => streams.into_iter().find_map(|(_, entries)| match entries {
            Value::Array(entries) => Some(entries),
            _ => None,
        }),
        (Value::Array(entries), false) => Some(entries),
        _ => None,
    };
    let bytes = |value: Value| match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    };
    entries
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let Value::Array(mut pair) = entry else {
                return None;
            };
            let Some(Value::Array(fields)) = pair.pop() else {
                return None;
            };
            let id = String::from_utf8(bytes(pair.pop()?)?).ok()?.parse().ok()?;
            let mut entry = StreamEntry {
                id,
                envelope: None,
                gap_from: None,
            };
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                match bytes(name).as_deref() {
                    Some(name) if name == ENTRY_FIELD.as_bytes() => entry.envelope = bytes(value),
                    Some(name) if name == GAP_FIELD.as_bytes() => {
                        entry.gap_from =
                            bytes(value).map(|node| String::from_utf8_lossy(&node).into_owned())
                    }
                    _ => {}
                }
            }
            Some(entry)
        })
        .collect()
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
    use crate::ops::config::Config;

    /// The `[cluster]` section of a config file holding `text`.
    fn config(text: &str) -> ClusterConfig {
        Config::parse(&format!("[cluster]\n{text}"), None)
            .expect("a valid [cluster]")
            .cluster
    }

    fn cluster() -> (Arc<Cluster>, Outgoing) {
        let config = config("redis = \"redis://127.0.0.1:1/\"\n");
        match Cluster::from_config(&config, &HistoryConfig::default()) {
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
        let bytes = cluster.envelope(&tags, payload, None);
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

    /// The scheme and the channel are the config's to check (`Config::parse`); the rest of the
    /// URL is Redis's.
    #[test]
    fn a_url_redis_cannot_use_is_a_config_error() {
        let history = HistoryConfig::default();
        assert!(matches!(
            Cluster::from_config(&config("redis = \"\"\n"), &history),
            Ok(None)
        ));
        let bad_port = match Cluster::from_config(
            &config("redis = \"redis://:pa55word@127.0.0.1:port/\"\n"),
            &history,
        ) {
            Err(error) => error.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert!(bad_port.starts_with("cluster.redis: "), "{bad_port}");
        assert!(!bad_port.contains("pa55word"), "{bad_port}");
    }

    #[test]
    fn stream_replies_read_as_entries_and_gap_markers() {
        use redis::Value;
        let text = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        let entry = |id: &str, field: &str, value: &str| {
            Value::Array(vec![text(id), Value::Array(vec![text(field), text(value)])])
        };
        let range = Value::Array(vec![
            entry("5-0", ENTRY_FIELD, "{}"),
            entry("6-1", GAP_FIELD, "node"),
            entry("not an id", ENTRY_FIELD, "{}"),
        ]);
        let entries = stream_entries(range.clone(), false);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, MessageId { ms: 5, seq: 0 });
        assert_eq!(entries[0].envelope.as_deref(), Some(&b"{}"[..]));
        assert_eq!(entries[1].gap_from.as_deref(), Some("node"));
        let read = Value::Array(vec![Value::Array(vec![text("key"), range])]);
        assert_eq!(stream_entries(read, true), entries);
        assert!(stream_entries(Value::Nil, true).is_empty());
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
