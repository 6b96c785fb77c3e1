//! The Autobahn|Testsuite echo server: tagcast's own handshake, frame reader and writer, echoing
//! every message back instead of routing it.
//!
//! `cargo run --release --example autobahn_echo -- WS_ADDR [WSS_ADDR CERT KEY]` listens on
//! `WS_ADDR` (e.g. `127.0.0.1:0`) and, given a PEM certificate and key, on `WSS_ADDR` for wss. It
//! prints `ws PORT` (and `wss PORT`) once listening. The only differences from the daemon: the
//! reader passes binary messages on (tagcast closes with 1003) and each message is echoed (see
//! `tests/autobahn/run.sh`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tagcast::net::head::read_head;
use tagcast::net::tls::{TlsAcceptor, WssListener};
use tagcast::net::websocket::{self, run_websocket};
use tagcast::ops::config::TlsConfig;
use tagcast::routing::outbox::{Outbox, Outgoing, SendLimits, Wakeups};
use tagcast::tags::TagLimits;
use tagcast::wire::frame::{self, CloseReason, Incoming, MessageReader, close_code};
use tagcast::wire::{deflate, handshake};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Autobahn's largest messages are 16 MiB (cases 9.*).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Bytes an echo connection may have waiting (cases 9.* send hundreds of MiB back to back).
const SEND_QUEUE_BYTES: usize = 1 << 30;
/// How long a write may wait for the test client to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (ws, tls) = match args.as_slice() {
        [ws] => (ws.parse::<SocketAddr>()?, None),
        [ws, wss, cert, key] => {
            let config = TlsConfig {
                address: None,
                port: 0,
                cert: cert.into(),
                key: key.into(),
            };
            let acceptor = TlsAcceptor::load(wss.parse()?, &config)?;
            (ws.parse::<SocketAddr>()?, Some(Arc::new(acceptor)))
        }
        _ => return Err("usage: autobahn_echo WS_ADDR [WSS_ADDR CERT KEY]".into()),
    };
    let plain = TcpListener::bind(ws).await?;
    println!("ws {}", plain.local_addr()?.port());
    if let Some(acceptor) = tls {
        let secure = WssListener::bind(acceptor).await?;
        println!("wss {}", secure.local_addr()?.port());
        let (secure, acceptor) = secure.into_parts();
        tokio::spawn(async move {
            while let Ok((stream, _)) = secure.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    if let Ok(stream) = acceptor.accept(stream).await {
                        echo(stream, websocket::split).await;
                    }
                });
            }
        });
    }
    loop {
        let (stream, _) = plain.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(echo(stream, websocket::split_tcp));
    }
}

/// Upgrades one connection as the daemon does, then echoes until it closes.
async fn echo<S, P, R, W>(mut stream: S, split: P)
where
    S: AsyncRead + AsyncWrite + Unpin,
    P: FnOnce(S, &Outbox) -> (R, W),
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = BytesMut::with_capacity(1024);
    let head = match read_head(&mut stream, &mut buffer).await {
        Ok(Some(head)) => head,
        Ok(None) => return,
        Err(rejection) => {
            let _ = stream.write_all(&rejection.to_response()).await;
            return;
        }
    };
    let upgrade = match handshake::check_upgrade(&head, TagLimits::UNLIMITED, &[]) {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let _ = stream.write_all(&rejection.to_response()).await;
            return;
        }
    };
    // permessage-deflate whenever the client offers what the daemon accepts: every text
    // message is echoed compressed, whatever its size, so Autobahn checks both directions.
    let agreement = deflate::negotiate(head.header_values("sec-websocket-extensions"));
    let extensions = agreement
        .as_ref()
        .map(|agreement| agreement.response.as_str());
    let switching = handshake::switching_protocols(&upgrade.accept, extensions);
    let compressed_frames = agreement
        .as_ref()
        .is_some_and(|agreement| agreement.compressed_frames);
    if stream.write_all(&switching).await.is_err() {
        return;
    }
    let outbox = Outbox::new(SendLimits::new(SEND_QUEUE_BYTES, WRITE_TIMEOUT, usize::MAX));
    let messages = MessageReader::new(MAX_MESSAGE, buffer)
        .accept_binary()
        .with_deflate(agreement.is_some());
    let echo_message = |message, wakeups: &mut Wakeups| {
        let echoed = match message {
            Incoming::Text(text) => match std::str::from_utf8(&text) {
                Ok(text) => frame::MessageFrames::text(text, compressed_frames)
                    .for_recipient(compressed_frames)
                    .clone(),
                Err(_) => return Err(CloseReason::new(close_code::INVALID_PAYLOAD, "not UTF-8")),
            },
            Incoming::Binary(data) => frame::binary_frame(&data),
            _ => return Ok(()),
        };
        outbox.push(&Outgoing::new(&echoed), wakeups);
        Ok(())
    };
    run_websocket(
        stream,
        split,
        &outbox,
        messages,
        Duration::from_secs(5),
        echo_message,
        |_: &CloseReason| {},
    )
    .await;
}
