//! permessage-deflate over real sockets (issue 20): what the server negotiates, that a message is
//! compressed once and the same bytes reach every recipient that negotiated it, that others get
//! plain frames, and that compressed requests are inflated within `messages.max_size`.
//!
//! The client side here inflates with flate2's raw inflater directly, not with tagcast's code;
//! Chromium, Python `websockets` (tests/wss) and Autobahn's 12.*/13.* cases check the same
//! against independent implementations. The last tests are the Rust client's side, seen
//! through a proxy recording both directions: it negotiates permessage-deflate, reads what comes
//! compressed, and sends its long requests compressed, which tagcast routes and a Python
//! `websockets` server (needs python3-venv) inflates.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::{Daemon, RawClient, TestServer, WAIT, masked_frame, tags_query};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tagcast::client::{Endpoint, WebSocketRequest};
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

/// The bytes that went through a [`recording_proxy`], each way.
#[derive(Clone, Default)]
struct Recorded {
    from_server: Arc<Mutex<Vec<u8>>>,
    from_client: Arc<Mutex<Vec<u8>>>,
}

/// A proxy for one connection to `upstream` that keeps a copy of every byte each side sends.
async fn recording_proxy(upstream: SocketAddr) -> (SocketAddr, Recorded) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let recorded = Recorded::default();
    let copies = recorded.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(upstream).await.unwrap();
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::spawn(copy_recording(
            client_read,
            server_write,
            copies.from_client,
        ));
        copy_recording(server_read, client_write, copies.from_server).await;
    });
    (address, recorded)
}

/// Copies `from` to `to` until either ends, keeping a copy in `record`.
async fn copy_recording(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    record: Arc<Mutex<Vec<u8>>>,
) {
    let mut chunk = vec![0u8; 16 * 1024];
    while let Ok(read @ 1..) = from.read(&mut chunk).await {
        record.lock().unwrap().extend_from_slice(&chunk[..read]);
        if to.write_all(&chunk[..read]).await.is_err() {
            break;
        }
    }
}

/// The frames in `bytes` after the HTTP head they start with: each frame's first byte (FIN,
/// RSV1, opcode) and payload length, masked or not.
fn frames_after_head(bytes: &[u8]) -> Vec<(u8, usize)> {
    let head_end = bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("an HTTP head")
        + 4;
    let mut rest = &bytes[head_end..];
    let mut frames = Vec::new();
    while rest.len() >= 2 {
        let (length, header) = match rest[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 => panic!("no test frame is that long"),
            short => (usize::from(short), 2),
        };
        let mask = if rest[1] & 0x80 != 0 { 4 } else { 0 };
        frames.push((rest[0], length));
        rest = &rest[header + mask + length..];
    }
    frames
}

/// The Rust client, through a recording proxy, receives the notification from a server with
/// `toml`; returns whether it negotiated compression and the first frame's first byte and
/// payload length as they came on the wire.
async fn rust_client_receives_a_notification(toml: &str) -> (bool, u8, usize) {
    let server = TestServer::start(toml).await;
    let (proxy, recorded) = recording_proxy(server.address).await;
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
    let (first_byte, length) = frames_after_head(&recorded.from_server.lock().unwrap())[0];
    (listener.compressed(), first_byte, length)
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

/// A request of the Rust client for the user `user` carrying the notification, and one too
/// short to be compressed.
fn long_and_short_requests(user: &str) -> [WebSocketRequest; 2] {
    [
        WebSocketRequest::create(notification()).tags([("user", user)]),
        WebSocketRequest::create("short").tags([("user", user)]),
    ]
}

/// What a listener receives of [`long_and_short_requests`]: their messages as the JSON strings
/// they are (the `string` parser, the default, delivers a message as it came).
fn delivered_requests() -> [String; 2] {
    [notification(), "short".to_owned()].map(|message| serde_json::to_string(&message).unwrap())
}

/// The Rust client sends [`long_and_short_requests`] to a server with `toml` through a
/// recording proxy, and closes normally (the server took both); returns the first byte and
/// payload length of each data frame it sent, and what a listener of the user received.
async fn rust_client_sends_requests(toml: &str) -> (Vec<(u8, usize)>, Vec<String>) {
    let server = TestServer::start(toml).await;
    let mut listener = server.connect(r#"{"user":"42"}"#).await;
    let (proxy, recorded) = recording_proxy(server.address).await;
    let mut client = Endpoint::new(&format!("ws://{proxy}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    server.wait_for_connections(2).await;
    for request in long_and_short_requests("42") {
        client.send(&request).await.unwrap();
    }
    client.close().await.unwrap();
    let received = vec![listener.recv().await, listener.recv().await];
    let sent = frames_after_head(&recorded.from_client.lock().unwrap())
        .into_iter()
        .filter(|(first, _)| first & 0x08 == 0)
        .collect();
    (sent, received)
}

#[tokio::test]
async fn the_rust_client_compresses_a_long_request_and_the_server_routes_it() {
    let (sent, received) = rust_client_sends_requests("").await;
    assert_eq!(received, delivered_requests());
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].0, 0x80 | 0x40 | 0x1, "FIN, RSV1 and text");
    let plain = long_and_short_requests("42")[0].to_json().unwrap().len();
    assert!(
        sent[0].1 * 3 <= plain,
        "{} bytes on the wire for a request of {plain}",
        sent[0].1
    );
    assert_eq!(
        sent[1].0, 0x81,
        "a request under the minimum size goes plain"
    );
}

#[tokio::test]
async fn the_rust_client_sends_plain_requests_to_a_server_with_compression_off() {
    let (sent, received) = rust_client_sends_requests("[messages]\ncompression = \"off\"\n").await;
    assert_eq!(received, delivered_requests());
    assert_eq!(sent[0].0, 0x81);
    assert!(sent[0].1 > notification().len(), "{sent:?}");
}

/// Python `websockets` (an independent implementation of RFC 7692) inflates the Rust client's
/// compressed requests: tests/compression/websockets_server.py prints what it receives. Its
/// lines are waited for on this thread while the proxy runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3-venv + websockets"]
async fn python_websockets_reads_the_rust_clients_compressed_requests() {
    let python = common::python_venv(
        "websockets-venv",
        &["websockets>=14,<16"],
        "import websockets.asyncio.server",
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/compression/websockets_server.py"
    );
    let mut command = std::process::Command::new(python);
    command
        .arg(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut server = Daemon::start_with(command);
    let port: u16 = server
        .wait_for_line("listening on ")
        .trim_start_matches("listening on ")
        .parse()
        .expect("a port");
    let (proxy, recorded) = recording_proxy(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let mut client = Endpoint::new(&format!("ws://{proxy}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let requests = long_and_short_requests("42");
    for request in &requests {
        client.send(request).await.unwrap();
    }
    for request in &requests {
        let line = server.wait_for_line("received ");
        let received: String = serde_json::from_str(&line["received ".len()..]).unwrap();
        assert_eq!(received, request.to_json().unwrap());
    }
    client.close().await.unwrap();
    let answer = String::from_utf8_lossy(&recorded.from_server.lock().unwrap()).to_lowercase();
    assert!(
        answer.contains("sec-websocket-extensions: permessage-deflate"),
        "{answer}"
    );
    let sent = frames_after_head(&recorded.from_client.lock().unwrap());
    assert_eq!(sent[0].0, 0x80 | 0x40 | 0x1, "FIN, RSV1 and text");
    assert_eq!(sent[1].0, 0x81);
}
