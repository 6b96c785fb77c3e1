//! The request path: every request, whatever it came through, from its text to the queues of
//! the connections it is for, and on to the other nodes.
//!
//! [`Router`] is the one owner of that path: parse ([`Request::parse`]) → authorize
//! ([`Auth::check_send`]) → encode (the message parser) → build the frames once
//! ([`MessageFrames`]) → match and enqueue ([`Hub::route`], with the history's id when it is on)
//! → share with the other nodes ([`Sharing`]). The edges call down into it: a WebSocket
//! connection and `POST /publish` with a request's text ([`Router::handle_request`],
//! [`Router::handle_request_waiting`]), the cluster's receiver with what another node accepted
//! ([`Router::route`], [`Router::route_issued`], [`Router::route_unshared`]). Nothing here knows
//! of sockets, listeners or Redis: the cluster is reached through the narrow [`Sharing`] handle.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use crate::ops::auth::Auth;
use crate::ops::config::{CompressionMode, Config};
use crate::ops::metrics::{Metrics, Rejected, Source};
use crate::routing::history::{History, MessageId};
use crate::routing::hub::{Delivery, Hub};
use crate::routing::outbox::Wakeups;
use crate::tags::{TagLimits, Tags};
use crate::wire::frame::{CloseReason, MessageFrames, close_code};
use crate::wire::parser::MessageParser;
use crate::wire::request::{Credentials, Request};

/// How long an HTTP publish waits for its request to come back from the cluster's stream.
const SHARED_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The other nodes, as the router sees them: where an accepted request is handed on.
/// Implemented by the cluster link ([`crate::cluster::Cluster`]).
pub trait Sharing: Send + Sync {
    /// True when requests go through a shared stream that every node (this one too) routes
    /// from, with the stream's ids (the history is on).
    fn keeps_history(&self) -> bool;

    /// Hands an accepted request (its tags and its parser output) on; never waits. False when
    /// the other nodes are out of reach: the caller delivers locally only.
    fn share(&self, tags: &Tags, payload: &str) -> bool;

    /// [`Sharing::share`] for a caller that waits until this node has read the request back
    /// and routed it; `None` when the other nodes are out of reach.
    fn share_waiting(&self, tags: &Tags, payload: &str) -> Option<oneshot::Receiver<Delivery>>;

    /// An id for a request routed while the shared stream is out of reach.
    fn unshared_id(&self) -> String;
}

/// The rules a request's text must pass and what makes its frames, shared by every edge.
pub struct Router {
    hub: Arc<Hub>,
    auth: Auth,
    parser: Arc<dyn MessageParser>,
    history: Option<History>,
    sharing: Option<Arc<dyn Sharing>>,
    metrics: Metrics,
    tag_limits: TagLimits,
    /// Messages of at least this many bytes get a compressed frame too (`messages.compression
    /// = "shared"`, `messages.compression_min_size`); `None`: never.
    compress_from: Option<usize>,
}

impl Router {
    /// A router over `hub` with the rules of `config`: `auth` judges senders, `parser` checks
    /// and encodes messages, `history` keeps them, `sharing` hands them to the other nodes.
    pub fn new(
        config: &Config,
        hub: Arc<Hub>,
        auth: Auth,
        parser: Arc<dyn MessageParser>,
        history: Option<History>,
        sharing: Option<Arc<dyn Sharing>>,
        metrics: Metrics,
    ) -> Router {
        let messages = &config.messages;
        Router {
            hub,
            auth,
            parser,
            history,
            sharing,
            metrics,
            tag_limits: config.limits.tag_limits(),
            compress_from: (messages.compression == CompressionMode::Shared)
                .then_some(messages.compression_min_size),
        }
    }

    /// Every open connection.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Who may open and send.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The kept messages, when `[history] size` is not 0.
    pub fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    /// What `GET /metrics` reports.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The tag bounds requests must respect.
    pub fn tag_limits(&self) -> TagLimits {
        self.tag_limits
    }

    /// Parses, authorizes and routes the text of one request from a client (a WebSocket frame
    /// or an HTTP publish): the same rules whatever it came through. `credentials`, when given
    /// (an HTTP `Authorization` header), stand in for the request's `metadata` ones. The error
    /// is the close code 4400 (invalid) or 4401 (not authorized) with the reason for the client.
    pub fn handle_request(
        &self,
        text: &str,
        source: Source,
        credentials: Option<&Credentials>,
        wakeups: &mut Wakeups,
    ) -> Result<Delivery, CloseReason> {
        let (tags, payload) = self.check_request(text, source, credentials)?;
        Ok(self.accept_request(&tags, &payload, wakeups))
    }

    /// [`Router::handle_request`] for a caller that waits for the answer (HTTP publish): the
    /// same, but a clustered node with the history on waits until it has read the request back
    /// from the cluster's stream and routed it, so that the delivery has its count and id.
    pub async fn handle_request_waiting(
        &self,
        text: &str,
        source: Source,
        credentials: Option<&Credentials>,
        wakeups: &mut Wakeups,
    ) -> Result<Delivery, CloseReason> {
        let (tags, payload) = self.check_request(text, source, credentials)?;
        let waiting = match &self.sharing {
            Some(sharing) if sharing.keeps_history() => sharing.share_waiting(&tags, &payload),
            _ => None,
        };
        let Some(waiting) = waiting else {
            return Ok(self.accept_request(&tags, &payload, wakeups));
        };
        match tokio::time::timeout(SHARED_ANSWER_TIMEOUT, waiting).await {
            Ok(Ok(delivery)) => Ok(delivery),
            _ => Err(CloseReason::new(
                close_code::INTERNAL_ERROR,
                "accepted, but redis did not hand it back in time: it may or may not be delivered",
            )),
        }
    }

    /// The checks of [`Router::handle_request`]: the request's tags and its message encoded
    /// by the parser, or the close code and reason to refuse it with.
    fn check_request(
        &self,
        text: &str,
        source: Source,
        credentials: Option<&Credentials>,
    ) -> Result<(Tags, String), CloseReason> {
        self.metrics.request(source);
        let invalid = |message: String| {
            self.metrics.rejected(Rejected::Invalid);
            CloseReason::new(close_code::INVALID_REQUEST, message)
        };
        let request =
            Request::parse(text, self.tag_limits).map_err(|error| invalid(error.to_string()))?;
        self.auth
            .check_send(credentials.unwrap_or(&request.credentials))
            .inspect_err(|_| self.metrics.rejected(Rejected::Unauthorized))?;
        let payload = self
            .parser
            .parse(request.message)
            .map_err(|rejected| invalid(format!("invalid message: {rejected}")))?;
        Ok((request.tags, payload))
    }

    /// Delivers a request accepted on this node (checked by auth, encoded by the message
    /// parser) to the local clients at once, then hands it to the other nodes, when clustered,
    /// without waiting for them. Counts this node's deliveries only.
    ///
    /// With the history on, a clustered node routes nothing here: every node routes the
    /// requests as it reads them from the cluster's stream, with the stream's ids, and this one
    /// returns no delivery. While Redis is down, it delivers to the local clients only.
    fn accept_request(&self, tags: &Tags, payload: &str, wakeups: &mut Wakeups) -> Delivery {
        match &self.sharing {
            Some(sharing) if sharing.keeps_history() => match sharing.share(tags, payload) {
                true => Delivery::default(),
                false => self.route_unshared(&sharing.unshared_id(), tags, payload, wakeups),
            },
            Some(sharing) => {
                let delivery = self.route(tags, payload, wakeups);
                sharing.share(tags, payload);
                delivery
            }
            None => self.route(tags, payload, wakeups),
        }
    }

    /// Delivers an accepted request's encoded message (`payload`, from the message parser) to
    /// every local connection whose tags contain all of `tags`; the frame is built once for all
    /// recipients. The recipients' writers join `wakeups`: the caller wakes them when its batch
    /// is routed. With the history on, the message gets an id and is kept
    /// ([`History::record`]).
    pub fn route(&self, tags: &Tags, payload: &str, wakeups: &mut Wakeups) -> Delivery {
        let frames = self.frames(payload);
        let delivery = match &self.history {
            None => self.hub.route(tags, &frames, None, wakeups),
            Some(history) => {
                let (id, delivery) = history.record(tags, payload, SystemTime::now(), |id_frame| {
                    self.hub.route(tags, &frames, Some(id_frame), wakeups)
                });
                self.metrics.set_history_bytes(history.bytes());
                Delivery {
                    id: Some(id),
                    ..delivery
                }
            }
        };
        self.metrics.routed(delivery.delivered);
        delivery
    }

    /// Routes a request read from the cluster's stream (history on) with its id `id`, and
    /// keeps it; `None` when it was routed already (or the history is off).
    pub fn route_issued(
        &self,
        id: MessageId,
        tags: &Tags,
        payload: &str,
        wakeups: &mut Wakeups,
    ) -> Option<Delivery> {
        let history = self.history.as_ref()?;
        let frames = self.frames(payload);
        let delivery = history.record_issued(id, tags, payload, SystemTime::now(), |id_frame| {
            self.hub.route(tags, &frames, Some(id_frame), wakeups)
        })?;
        self.metrics.set_history_bytes(history.bytes());
        self.metrics.routed(delivery.delivered);
        Some(Delivery {
            id: Some(id),
            ..delivery
        })
    }

    /// Routes a request to this node's clients only, the cluster's stream being out of reach
    /// (history on): with `id` (from [`Sharing::unshared_id`]), which no recovery vouches for,
    /// not kept.
    pub fn route_unshared(
        &self,
        id: &str,
        tags: &Tags,
        payload: &str,
        wakeups: &mut Wakeups,
    ) -> Delivery {
        let frames = self.frames(payload);
        let delivery = match &self.history {
            Some(history) => {
                // A recovery here can no longer vouch for what it replays: this one is not in it.
                history.set_blind(true);
                history.route_unkept(id, payload, |id_frame| {
                    self.hub.route(tags, &frames, Some(id_frame), wakeups)
                })
            }
            None => self.hub.route(tags, &frames, None, wakeups),
        };
        self.metrics.routed(delivery.delivered);
        delivery
    }

    /// The frames of a message, built once for all its recipients: the compressed one too when
    /// it is long enough and some connection negotiated compression.
    fn frames(&self, payload: &str) -> MessageFrames {
        let compress = self.compress_from.is_some_and(|from| payload.len() >= from)
            && self.hub.has_deflate_peers();
        MessageFrames::text(payload, compress)
    }
}
