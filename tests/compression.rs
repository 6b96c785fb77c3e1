//! permessage-deflate over real sockets (issue 20): what the server negotiates, that a message is
//! compressed once and the same bytes reach every recipient that negotiated it, that others get
//! plain frames, and that compressed requests are inflated within `messages.max_size`.
//!
//! The client side here inflates with flate2's raw inflater directly, not with tagcast's code;
//! Chromium, Python `websockets` (tests/wss) and Autobahn's 12.*/13.* cases check the same
//! against independent implementations. The last tests are the Rust client's side: it
//! negotiates permessage-deflate and reads what comes compressed, seen through a recording
//! proxy.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::{RawClient, TestServer, WAIT, masked_frame, tags_query};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tagcast::client::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a browser offers.
const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";
/// What tagcast answers when it accepts.
const ACCEPTED: &str = "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// A notification of about 600 bytes, as an application would send.
fn notification() -> String {
    let items: Vec<String> = (0..6)
        .map(|i| {
            format!(
                r#"{{"id":{i},"title":"Order {i} shipped","url":"https://shop.example.com/orders/{i}","status":"shipped"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"type":"notification","user":"42","items":[{}]}}"#,
        items.join(",")
    )
}

/// A raw WebSocket client that offers `extensions` (none when empty); returns it and the 101 head
/// in lowercase.
async fn open(server: &TestServer, tags: &str, extensions: &str) -> (RawClient, String) {
    let offer = if extensions.is_empty() {
        String::new()
    } else {
        format!("Sec-WebSocket-Extensions: {extensions}\r\n")
    };
    let request = format!(
        "GET /{} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{offer}\r\n",
        tags_query(tags)
    );
    let mut client = RawClient::send_request(server.address, &request).await;
    let head = client.read_head().await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    (client, head)
}

/// Inflates a frame payload the way RFC 7692 §7.2.2 says, with flate2's raw inflater.
fn inflate(payload: &[u8]) -> String {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
    let mut output = Vec::with_capacity(64 * 1024);
    Decompress::new(false)
        .decompress_vec(&input, &mut output, FlushDecompress::Sync)
        .expect("a valid raw deflate stream");
    String::from_utf8(output).expect("UTF-8")
}

/// Deflates a client message the way RFC 7692 §7.2.1 says.
fn deflate(message: &[u8]) -> Vec<u8> {
    let mut output = Vec::with_capacity(message.len() + 64);
    Compress::new(Compression::default(), false)
        .compress_vec(message, &mut output, FlushCompress::Sync)
        .unwrap();
    assert!(output.ends_with(&[0, 0, 0xFF, 0xFF]));
    output.truncate(output.len() - 4);
    output
}

/// Publishes `message` (a JSON value) to `tags` from a fresh plain connection.
async fn publish(server: &TestServer, message: &str, tags: &str) {
    let mut sender = server.connect("").await;
    sender.publish(message, tags).await;
}

#[tokio::test]
async fn a_message_is_compressed_once_for_every_recipient_that_negotiated_it() {
    let server = TestServer::start("[messages]\nparser = \"json\"\n").await;
    let (mut first, head) = open(&server, r#"{"user":"42"}"#, BROWSER_OFFER).await;
    assert!(head.contains(ACCEPTED), "{head}");
    let (mut second, _) = open(&server, r#"{"user":"42"}"#, BROWSER_OFFER).await;
    let (mut plain, head) = open(&server, r#"{"user":"42"}"#, "").await;
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    server.wait_for_connections(3).await;

    let message = notification();
    assert!((550..700).contains(&message.len()), "{}", message.len());
    publish(&server, &message, r#"{"user":"42"}"#).await;

    let (first_byte, compressed) = first.read_frame().await;
    assert_eq!(first_byte, 0x80 | 0x40 | 0x1, "FIN, RSV1 and text");
    assert_eq!(inflate(&compressed), message);
    assert!(
        compressed.len() * 3 <= message.len(),
        "{} bytes compressed for {}",
        compressed.len(),
        message.len()
    );
    assert_eq!(second.read_frame().await, (first_byte, compressed));
    assert_eq!(plain.read_frame().await, (0x81, message.into_bytes()));
}

/// Opens a browser-like connection to a server with `messages` (a `[messages]` body), checks
/// the 101's extensions header with `negotiated`, and returns the first frame a ~600-byte
/// notification reaches it in.
async fn notification_frame(messages: &str, negotiated: impl Fn(&str) -> bool) -> (u8, Vec<u8>) {
    let server = TestServer::start(&format!("[messages]\nparser = \"json\"\n{messages}")).await;
    let (mut client, head) = open(&server, r#"{"user":"42"}"#, BROWSER_OFFER).await;
    assert!(negotiated(&head), "{head}");
    server.wait_for_connections(1).await;
    publish(&server, &notification(), r#"{"user":"42"}"#).await;
    client.read_frame().await
}

#[tokio::test]
async fn a_message_under_compression_min_size_goes_uncompressed() {
    let frame = notification_frame("compression_min_size = 1000\n", |head| {
        head.contains(ACCEPTED)
    })
    .await;
    assert_eq!(frame, (0x81, notification().into_bytes()));
}

#[tokio::test]
async fn compression_off_declines_every_offer() {
    let frame = notification_frame("compression = \"off\"\n", |head| {
        !head.contains("sec-websocket-extensions")
    })
    .await;
    assert_eq!(frame, (0x81, notification().into_bytes()));
}

#[tokio::test]
async fn a_client_that_limits_the_server_window_gets_plain_frames_and_may_compress() {
    let server = TestServer::start("[messages]\nparser = \"json\"\n").await;
    let offer = "permessage-deflate; server_max_window_bits=10";
    let (mut client, head) = open(&server, r#"{"user":"42"}"#, offer).await;
    assert!(
        head.contains(&format!("{ACCEPTED}; server_max_window_bits=10")),
        "{head}"
    );
    server.wait_for_connections(1).await;
    let request = format!(
        r#"{{"message":{},"tags":{{"user":"42"}},"metadata":{{}}}}"#,
        notification()
    );
    client
        .stream_write(&masked_frame(
            0x80 | 0x40 | 0x1,
            &deflate(request.as_bytes()),
        ))
        .await;
    assert_eq!(
        client.read_frame().await,
        (0x81, notification().into_bytes())
    );
}

#[tokio::test]
async fn a_compressed_request_is_inflated_and_routed() {
    let server = TestServer::start("[messages]\nparser = \"json\"\n").await;
    let mut listener = server.connect(r#"{"user":"42"}"#).await;
    let (mut sender, _) = open(&server, "", BROWSER_OFFER).await;
    server.wait_for_connections(2).await;
    let request = format!(
        r#"{{"message":{},"tags":{{"user":"42"}},"metadata":{{}}}}"#,
        notification()
    );
    sender
        .stream_write(&masked_frame(
            0x80 | 0x40 | 0x1,
            &deflate(request.as_bytes()),
        ))
        .await;
    assert_eq!(listener.recv().await, notification());
}

#[tokio::test]
async fn a_compressed_request_over_max_size_once_inflated_is_closed_with_1009() {
    let server = TestServer::start("[messages]\nmax_size = 4096\n").await;
    let mut bystander = server.connect(r#"{"bystander":"1"}"#).await;
    let (mut bomb, _) = open(&server, "", BROWSER_OFFER).await;
    server.wait_for_connections(2).await;
    let inflated = format!(r#"{{"message":"{}"}}"#, "a".repeat(1_000_000));
    let compressed = deflate(inflated.as_bytes());
    assert!(compressed.len() < 4096, "{}", compressed.len());
    bomb.stream_write(&masked_frame(0x80 | 0x40 | 0x1, &compressed))
        .await;
    assert_eq!(
        bomb.read_close().await,
        (1009, "message larger than 4096 bytes once inflated".into())
    );
    publish(&server, r#""still here""#, r#"{"bystander":"1"}"#).await;
    assert_eq!(bystander.recv().await, r#""still here""#);
}

#[tokio::test]
async fn rsv1_without_negotiation_is_a_protocol_error() {
    let server = TestServer::start("").await;
    let (mut client, _) = open(&server, "", "").await;
    client
        .stream_write(&masked_frame(
            0x80 | 0x40 | 0x1,
            &deflate(br#"{"message":"x"}"#),
        ))
        .await;
    assert_eq!(
        client.read_close().await,
        (1002, "reserved bits set without an extension".into())
    );
}

/// A proxy for one connection to `upstream` that keeps a copy of every byte the server sends.
async fn recording_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recording = seen.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(upstream).await.unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
        let mut chunk = vec![0u8; 16 * 1024];
        while let Ok(read @ 1..) = server_read.read(&mut chunk).await {
            recording.lock().unwrap().extend_from_slice(&chunk[..read]);
            if client_write.write_all(&chunk[..read]).await.is_err() {
                break;
            }
        }
    });
    (address, seen)
}

/// The Rust client, through a recording proxy, receives the notification from a server with
/// `toml`; returns whether it negotiated compression and the first frame's first byte and
/// payload length as they came on the wire.
async fn rust_client_receives_a_notification(toml: &str) -> (bool, u8, usize) {
    let server = TestServer::start(toml).await;
    let (proxy, seen) = recording_proxy(server.address).await;
    let mut listener = Endpoint::new(&format!("ws://{proxy}"))
        .unwrap()
        .connect_with_tags([("user", "42")])
        .await
        .unwrap();
    server.wait_for_connections(1).await;
    // The `string` parser (the default): the notification travels as a JSON string.
    let message = notification();
    publish(
        &server,
        &serde_json::to_string(&message).unwrap(),
        r#"{"user":"42"}"#,
    )
    .await;
    let received: String = tokio::time::timeout(WAIT, listener.next())
        .await
        .expect("timed out waiting for the notification")
        .unwrap()
        .expect("a message");
    assert_eq!(received, message);
    let seen = seen.lock().unwrap().clone();
    let head_end = seen
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap()
        + 4;
    let frame = &seen[head_end..];
    let length = match frame[1] & 0x7F {
        126 => usize::from(u16::from_be_bytes([frame[2], frame[3]])),
        short => usize::from(short),
    };
    (listener.compressed(), frame[0], length)
}

#[tokio::test]
async fn the_rust_client_negotiates_compression_and_reads_compressed_messages() {
    let (compressed, first_byte, length) = rust_client_receives_a_notification("").await;
    assert!(compressed);
    assert_eq!(first_byte, 0x80 | 0x40 | 0x1, "FIN, RSV1 and text");
    assert!(
        length * 3 <= notification().len(),
        "{length} bytes on the wire for {}",
        notification().len()
    );
}

#[tokio::test]
async fn the_rust_client_reads_plain_messages_from_a_server_with_compression_off() {
    let (compressed, first_byte, length) =
        rust_client_receives_a_notification("[messages]\ncompression = \"off\"\n").await;
    assert!(!compressed);
    assert_eq!(first_byte, 0x81);
    assert!(length > notification().len(), "{length}");
}
