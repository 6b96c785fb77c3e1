//! One client connection, from its first byte to its close, generic over the stream.
//!
//! The task reads the request head and answers HTTP ([`crate::net::http`]) or upgrades to
//! WebSocket. An upgraded connection registers in the hub (after its recovery, with `since`),
//! then runs its reader and writer ([`crate::net::websocket`]); every text message goes down to
//! the router ([`Router::handle_request`]) after the rate limit. Every error closes this
//! connection only, with the close code and reason of SPEC §1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::net::head::read_head;
use crate::net::http;
use crate::net::shared::Shared;
use crate::net::websocket::{RateLimit, run_websocket};
use crate::ops::auth::OpenRefusal;
use crate::ops::config::CompressionMode;
use crate::ops::logging::message_id;
use crate::ops::metrics::{Rejected, Source};
use crate::routing::hub::{Hub, Listener, Peer};
use crate::routing::outbox::{Outbox, Outgoing, Slow, Wakeups};
use crate::routing::router::Router;
use crate::token;
use crate::wire::deflate;
use crate::wire::frame::{CloseReason, Incoming, MessageReader, close_code};
use crate::wire::handshake::{self, Rejection, Upgrade};

/// Serves one accepted stream until it closes. `deadline` bounds the handshake; `split` makes
/// an upgraded stream's halves ([`crate::net::websocket::split`], or `split_tcp`).
pub async fn serve<S, P, R, W>(
    shared: Arc<Shared>,
    mut stream: S,
    split: P,
    address: SocketAddr,
    listener: Listener,
    deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    P: FnOnce(S, &Outbox) -> (R, W),
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let router = &*shared.router;
    // Boxed: the handshake's state is freed once it is over, so an open connection's task
    // carries only what the WebSocket needs. In a block, so that the task keeps no room for
    // the handshake's results once they are taken apart.
    let (peer, registration, slot, buffer, switching, deflate) = {
        let Some(opened) = Box::pin(open(&shared, &mut stream, address, deadline)).await else {
            return;
        };
        let Opened {
            upgrade,
            deflate,
            leftover,
            slot,
        } = opened;
        let peer = Arc::new(Peer {
            id: router.hub().next_id(),
            address,
            deflate: deflate
                .as_ref()
                .is_some_and(|agreement| agreement.compressed_frames),
            credentials: upgrade.credentials,
            token: upgrade.token.map(String::into_boxed_str),
            outbox: router.hub().outbox(),
            wants_ids: upgrade.since.is_some(),
        });
        debug!(conn = peer.id, peer = %address, tags = %upgrade.tags, listener = listener.as_str(), "connection opened");
        let registration = match (router.history(), &upgrade.since) {
            (Some(history), Some(since)) => {
                // What it missed waits in its outbox ahead of anything routed to it later.
                let mut wakeups = Wakeups::default();
                let (registration, recovered) = history.recover(
                    since,
                    &upgrade.tags,
                    SystemTime::now(),
                    || router.hub().register(upgrade.tags.clone(), peer.clone()),
                    |frame| {
                        peer.outbox.push(&Outgoing::new(frame), &mut wakeups);
                    },
                );
                debug!(
                    conn = peer.id,
                    gap = recovered.gap,
                    replayed = recovered.replayed,
                    "recovery"
                );
                registration
            }
            _ => router.hub().register(upgrade.tags, peer.clone()),
        };
        let extensions = deflate
            .as_ref()
            .map(|agreement| agreement.response.as_str());
        let switching = handshake::switching_protocols(&upgrade.accept, extensions);
        let deflate = deflate.is_some();
        (peer, registration, slot, leftover, switching, deflate)
    };
    let counted = router.metrics().connection_opened(listener);
    // An auth reload between the open check and the registration did not see this connection.
    router.auth().judge_again(&peer);
    // In the hub before the client learns it is connected: a request sent as soon as the
    // client sees the 101 reaches it. What is routed to it meanwhile waits in its outbox.
    if stream.write_all(&switching).await.is_err() {
        // Counted opened: counted closed too, as a peer that vanished, so that the metrics
        // add up (opened - closed = open connections).
        drop(counted);
        router.metrics().connection_closed(close_code::ABNORMAL);
        return;
    }
    drop(switching);
    let messages =
        MessageReader::new(shared.config.messages.max_size.get(), buffer).with_deflate(deflate);
    let grace = Duration::from_millis(shared.config.limits.shutdown_grace_ms.get());
    let mut rate = RateLimit::new(shared.config.limits.max_requests_per_s);
    let on_message = |message, wakeups: &mut Wakeups| match message {
        Incoming::Text(text) => rate
            .admit()
            .inspect_err(|reason| {
                router.metrics().request(Source::Ws);
                router.metrics().rejected(Rejected::RateLimited);
                peer.outbox
                    .close_slow(Slow::Rate, reason.reason.to_string());
            })
            .and_then(|()| handle_text(router, &peer, &text, wakeups)),
        _ => Ok(()),
    };
    // Every refusal, of a request or of a frame (1002, 1003, 1007, 1009): a client's mistake,
    // not the server's, so a notice, never an error; once, with the connection's fields.
    let on_refusal = |reason: &CloseReason| {
        peer_span(router.hub(), &peer).in_scope(|| {
            info!(
                code = reason.code,
                "request refused with {}: {}", reason.code, reason.reason
            )
        });
    };
    let closed = run_websocket(
        stream,
        split,
        &peer.outbox,
        messages,
        grace,
        on_message,
        on_refusal,
    )
    .await;
    if let Some(reason) = closed
        .as_ref()
        .filter(|_| peer.outbox.slow().is_some_and(|slow| slow != Slow::Rate))
    {
        // Logged while the connection's tags are still in the hub, for the span's TAGS.
        peer_span(router.hub(), &peer).in_scope(|| {
            info!(
                message_id = message_id::SLOW_CLIENT_CLOSED,
                code = reason.code,
                "slow client closed with {}: {}",
                reason.code,
                reason.reason
            )
        });
    }
    // Free the slot before leaving the hub: once a connection is gone from the hub, a new one fits.
    drop(slot);
    drop(registration);
    drop(counted);
    let code = closed
        .as_ref()
        .map_or(close_code::ABNORMAL, |reason| reason.code);
    if code == close_code::MESSAGE_TOO_BIG {
        router.metrics().request(Source::Ws);
        router.metrics().rejected(Rejected::TooLarge);
    }
    router.metrics().connection_closed(code);
    if let Some(slow) = peer.outbox.slow() {
        router.metrics().slow_client_closed(slow);
    }
    match closed {
        Some(reason) => {
            debug!(conn = peer.id, code = reason.code, reason = %reason.reason, "connection closed")
        }
        None => debug!(conn = peer.id, "connection closed"),
    }
}

/// The span of an event about `peer`: the journal fields CONN, PEER, TAGS and APP.
///
/// Made for the event, not kept for the connection's life: a live span would cost every idle
/// connection its formatted fields (about 450 bytes each, measured).
fn peer_span(hub: &Hub, peer: &Peer) -> tracing::Span {
    let tags = hub.tags_of(peer.id).unwrap_or_default();
    let span = tracing::info_span!("conn", conn = peer.id, peer = %peer.address, tags = %tags,
        app = tracing::field::Empty);
    let kid = peer.token.as_deref().and_then(token::key_id);
    if let Some(app) = peer.credentials.key.as_deref().or(kid.as_deref()) {
        span.record("app", app);
    }
    span
}

/// A handshake that succeeded: what the connection opens with.
struct Opened {
    /// Tags, credentials and the accept key of the upgrade request.
    upgrade: Upgrade,
    /// permessage-deflate, when `messages.compression` is on and the client offered it.
    deflate: Option<deflate::Agreement>,
    /// Bytes the client sent after its request head (the first frames).
    leftover: BytesMut,
    /// The connection's place under `limits.max_connections`.
    slot: OwnedSemaphorePermit,
}

/// Reads the request head and decides: a plain HTTP request is answered here, a refused upgrade
/// gets its HTTP error; an accepted upgrade is returned, not yet answered.
async fn open<S>(
    shared: &Arc<Shared>,
    stream: &mut S,
    address: SocketAddr,
    deadline: Instant,
) -> Option<Opened>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let router = &*shared.router;
    let mut buffer = BytesMut::with_capacity(1024);
    let head = tokio::select! {
        head = read_head(stream, &mut buffer) => head,
        _ = tokio::time::sleep_until(deadline) => {
            debug!(peer = %address, "handshake timed out");
            return None;
        }
        _ = shared.shutdown.cancelled() => return None,
    };
    let head = match head {
        Ok(Some(head)) => head,
        Ok(None) => return None,
        Err(rejection) => {
            info!(peer = %address, status = rejection.status, reason = %rejection.reason, "bad request head refused");
            let _ = stream.write_all(&rejection.to_response()).await;
            return None;
        }
    };
    if !head.wants_websocket() {
        let endpoints = http::Endpoints::main(&shared.config);
        http::respond(shared, &head, stream, address, buffer, endpoints, deadline).await;
        return None;
    }
    let limits = shared.config.limits.tag_limits();
    let opening = handshake::check_upgrade(&head, limits, &shared.config.server.allowed_origins)
        .and_then(|upgrade| match (&upgrade.since, router.history()) {
            (Some(_), None) => Err(Rejection::new(
                400,
                "since: this server keeps no history ([history] size = 0)",
            )),
            _ => Ok(upgrade),
        })
        .map_err(OpenRefusal::of_upgrade)
        .and_then(|upgrade| {
            let tags = router.auth().check_open(
                &upgrade.tags,
                &upgrade.credentials,
                upgrade.token.as_deref(),
                limits,
            )?;
            Ok(Upgrade { tags, ..upgrade })
        })
        .and_then(|upgrade| {
            let slot = shared.connection_slots.clone().try_acquire_owned();
            slot.map(|slot| (upgrade, slot))
                .map_err(|_| OpenRefusal::full())
        });
    let (upgrade, slot) = match opening {
        Ok(opening) => opening,
        Err(refusal) => {
            router.metrics().open_refused(refusal.reason);
            let OpenRefusal { rejection, kid, .. } = refusal;
            // A client's mistake (or a full server), not the server's fault: notice, never an
            // error. The token itself is never logged: only its application's key.
            info!(peer = %address, status = rejection.status, reason = %rejection.reason,
                app = kid.as_deref().unwrap_or(""), "handshake refused");
            let _ = stream.write_all(&rejection.to_response()).await;
            return None;
        }
    };
    let deflate = (shared.config.messages.compression == CompressionMode::Shared)
        .then(|| deflate::negotiate(head.header_values("sec-websocket-extensions")))
        .flatten();
    Some(Opened {
        upgrade,
        deflate,
        leftover: buffer,
        slot,
    })
}

/// Parses, authorizes and routes one text message.
fn handle_text(
    router: &Router,
    peer: &Peer,
    text: &[u8],
    wakeups: &mut Wakeups,
) -> Result<(), CloseReason> {
    let text = std::str::from_utf8(text)
        .map_err(|_| CloseReason::new(close_code::INVALID_PAYLOAD, "text is not valid UTF-8"))?;
    let delivery = router.handle_request(text, Source::Ws, None, wakeups)?;
    debug!(
        conn = peer.id,
        delivered = delivery.delivered,
        "request routed"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, DuplexStream};

    use super::*;
    use crate::net::server::Server;
    use crate::net::websocket::{self, tests::*};
    use crate::ops::config::Config;

    /// A server that serves no listener: its connections are driven over in-memory streams.
    fn server(toml: &str) -> Server {
        Server::new(Config::parse(toml, None).unwrap()).unwrap()
    }

    /// Opens a WebSocket connection with `tags` (JSON, URL-encoded) over an in-memory stream,
    /// served as an accepted socket is; returns the client's end once the 101 is read.
    async fn open_over_duplex(server: &Server, tags: &str) -> DuplexStream {
        let (mut client, served) = tokio::io::duplex(64 * 1024);
        let deadline = Instant::now() + Duration::from_secs(10);
        let address = "127.0.0.1:9".parse().unwrap();
        let serving = serve(
            server.shared(),
            served,
            websocket::split,
            address,
            Listener::Ws,
            deadline,
        );
        tokio::spawn(serving);
        let query = match tags {
            "" => String::new(),
            tags => format!(
                "?tags={}",
                form_urlencoded::byte_serialize(tags.as_bytes()).collect::<String>()
            ),
        };
        let request = format!(
            "GET /{query} HTTP/1.1\r\nHost: tagcast\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        client.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(client.read_u8().await.unwrap());
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        client
    }

    fn request(message: &str) -> Vec<u8> {
        let text = format!(r#"{{"message":"{message}","tags":{{"room":"1"}},"metadata":{{}}}}"#);
        client_frame(0x1, text.as_bytes())
    }

    async fn close_code_read(client: &mut DuplexStream) -> u16 {
        let (opcode, payload) = server_frame(client).await.expect("a close frame");
        assert_eq!(opcode, 0x8);
        close_code_of(&payload)
    }

    #[tokio::test]
    async fn a_text_frame_is_routed_to_the_matching_connections_only() {
        let server = server("");
        let mut room = open_over_duplex(&server, r#"{"room":"1"}"#).await;
        let mut elsewhere = open_over_duplex(&server, r#"{"room":"2"}"#).await;
        let mut sender = open_over_duplex(&server, "").await;
        sender.write_all(&request("hello")).await.unwrap();
        assert_eq!(
            server_frame(&mut room).await,
            Some((0x1, b"\"hello\"".to_vec()))
        );
        elsewhere.write_all(&client_frame(0x9, b"")).await.unwrap();
        assert_eq!(
            server_frame(&mut elsewhere).await,
            Some((0xA, Vec::new())),
            "only the pong: the message was not for room 2"
        );
    }

    #[tokio::test]
    async fn an_invalid_request_closes_its_connection_with_4400() {
        let server = server("");
        let mut sender = open_over_duplex(&server, "").await;
        sender
            .write_all(&client_frame(0x1, b"{not json"))
            .await
            .unwrap();
        assert_eq!(
            close_code_read(&mut sender).await,
            close_code::INVALID_REQUEST
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_past_the_rate_limit_close_with_4429_and_the_bucket_refills() {
        let server = server("[limits]\nmax_requests_per_s = 2\n");
        let mut room = open_over_duplex(&server, r#"{"room":"1"}"#).await;
        let mut sender = open_over_duplex(&server, "").await;
        for round in 0..3 {
            let mut two = request(&format!("{}", 2 * round));
            two.extend(request(&format!("{}", 2 * round + 1)));
            sender.write_all(&two).await.unwrap();
            for number in [2 * round, 2 * round + 1] {
                let expected = format!("\"{number}\"").into_bytes();
                assert_eq!(server_frame(&mut room).await, Some((0x1, expected)));
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let mut three = request("6");
        three.extend(request("7"));
        three.extend(request("8"));
        sender.write_all(&three).await.unwrap();
        assert_eq!(close_code_read(&mut sender).await, close_code::TOO_MANY);
    }
}
