//! Every bad input closes only the offending connection with its code and reason (SPEC §1
//! "Errors on an open connection"), or gets a plain-text HTTP error before the upgrade; the
//! server and the other connections go on.

mod common;

use common::{Client, RawClient, TestServer, masked_frame, tags_query, upgrade_request};

/// A connection that must keep working after someone else's error.
async fn bystander_still_served(server: &TestServer, bystander: &mut Client) {
    let mut sender = Client::connect(&server.url("")).await;
    sender
        .publish(r#""still here""#, r#"{"bystander":"1"}"#)
        .await;
    assert_eq!(bystander.recv().await, r#""still here""#);
}

/// Opens a connection, sends `request`, returns the close it gets once the server let it go.
async fn closed_with(server: &TestServer, request: &str) -> (u16, String) {
    let before = server.hub.len();
    let mut client = server.connect("").await;
    client.send(request).await;
    let close = client.expect_close().await;
    drop(client);
    server.wait_for_connections(before).await;
    close
}

#[tokio::test]
async fn invalid_requests_close_with_4400_and_a_reason() {
    let server = TestServer::start("").await;
    let mut bystander = server.connect(r#"{"bystander":"1"}"#).await;
    let cases = [
        ("not json", "invalid request: expected"),
        (
            "[1,2]",
            "invalid request: invalid type: sequence, expected a JSON object",
        ),
        (
            r#"{"message":"x","extra":1}"#,
            "invalid request: unknown field `extra`",
        ),
        (r#"{"tags":{}}"#, "no message"),
        (r#"{"message":null,"tags":{}}"#, "no message"),
        (
            r#"{"message":"x","tags":{"a":"1","a":"2"}}"#,
            "invalid request: duplicate key `a`",
        ),
        (
            r#"{"message":"x","tags":"FR"}"#,
            "invalid request: tags must be a JSON object",
        ),
        (
            r#"{"message":"x","tags":{"a":{"b":1}}}"#,
            "invalid request: tag \"a\" must be a string or an integer",
        ),
        (
            r#"{"message":{"an":"object"}}"#,
            "invalid message: the message must be a JSON string",
        ),
    ];
    for (request, reason) in cases {
        let (code, text) = closed_with(&server, request).await;
        assert_eq!(code, 4400, "{request}");
        assert!(
            text.starts_with(reason),
            "{request}: {text:?} should start with {reason:?}"
        );
        assert!(text.len() <= 123);
    }
    bystander_still_served(&server, &mut bystander).await;
}

/// `{"message": null}` is no message (SPEC §1, Gomoob's `isset`), even for the `json` parser
/// that takes any other JSON: 4400 "no message", nothing delivered.
#[tokio::test]
async fn a_null_message_is_no_message() {
    let server = TestServer::start("[messages]\nparser = \"json\"\n").await;
    let mut bystander = server.connect(r#"{"bystander":"1"}"#).await;
    let (code, reason) = closed_with(&server, r#"{"message":null}"#).await;
    assert_eq!((code, reason.as_str()), (4400, "no message"));
    bystander_still_served(&server, &mut bystander).await;
}

/// Gomoob's sample message is an object: the `message` parser refuses an array (serde's derive
/// would read `type` from its first item) and a repeated key.
#[tokio::test]
async fn the_message_parser_takes_an_object_only() {
    let server = TestServer::start("[messages]\nparser = \"message\"\n").await;
    let mut bystander = server.connect(r#"{"bystander":"1"}"#).await;
    let refused = "invalid message: the message must be an object with `type`, `creationDate`, \
                   `metadata`: ";
    for (request, problem) in [
        (r#"{"message":[{"type":"chat"}]}"#, "invalid type: sequence"),
        (
            r#"{"message":{"type":"chat","type":"news"}}"#,
            "duplicate field `type`",
        ),
    ] {
        // The reason is cut to a close frame's 123 bytes.
        let (code, reason) = closed_with(&server, request).await;
        assert_eq!(code, 4400, "{request}");
        assert!(
            reason.starts_with(&format!("{refused}{problem}")),
            "{request}: {reason}"
        );
    }
    let mut sender = Client::connect(&server.url("")).await;
    sender
        .publish(r#"{"type":"chat"}"#, r#"{"bystander":"1"}"#)
        .await;
    assert_eq!(bystander.recv().await, r#"{"type":"chat","metadata":{}}"#);
}

#[tokio::test]
async fn tag_limits_apply_to_requests() {
    let server = TestServer::start("[limits]\nmax_tags = 2\nmax_tag_length = 5\n").await;
    let (code, reason) = closed_with(
        &server,
        r#"{"message":"x","tags":{"a":"1","b":"2","c":"3"}}"#,
    )
    .await;
    assert_eq!(
        (code, reason.as_str()),
        (4400, "invalid request: too many tags: at most 2")
    );
    let (code, reason) = closed_with(&server, r#"{"message":"x","tags":{"a":"123456"}}"#).await;
    assert_eq!(code, 4400);
    assert!(reason.contains("longer than 5 bytes"), "{reason}");
}

#[tokio::test]
async fn frame_errors_have_their_rfc_codes() {
    let server = TestServer::start("[messages]\nmax_size = 100\n").await;
    let mut bystander = server.connect(r#"{"bystander":"1"}"#).await;
    let cases: [(Vec<u8>, u16); 6] = [
        (masked_frame(0x82, b"binary"), 1003),
        (masked_frame(0x81, &[b'a', 0xFF, b'b']), 1007),
        (masked_frame(0x83, b"x"), 1002),
        (vec![0x81, 0x01, b'x'], 1002), // unmasked
        (masked_frame(0x81, &[b' '; 101]), 1009),
        (masked_frame(0xC1, b"x"), 1002), // reserved bit
    ];
    for (frame, expected) in cases {
        let mut raw = RawClient::upgrade(server.address, "/").await;
        raw.stream_write(&frame).await;
        let (code, reason) = raw.read_close().await;
        assert_eq!(code, expected, "{reason}");
        assert!(!reason.is_empty());
    }
    // A declared 100 MB frame is refused from its header, without waiting for the payload.
    let mut raw = RawClient::upgrade(server.address, "/").await;
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&100_000_000u64.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    raw.stream_write(&header).await;
    assert_eq!(raw.read_close().await.0, 1009);
    bystander_still_served(&server, &mut bystander).await;
}

#[tokio::test]
async fn handshake_errors_are_plain_text_http() {
    let server = TestServer::start(
        "[server]\nallowed_origins = [\"https://app.example.com\"]\n[limits]\nmax_tags = 1\n",
    )
    .await;
    let cases = [
        (upgrade_request("/?tags=nope"), "400", "bad tags: tags are not valid JSON"),
        (upgrade_request("/?tags=%5B%5D"), "400", "bad tags: tags must be a JSON object"),
        (
            upgrade_request(&format!("/{}", tags_query(r#"{"a":"1","b":"2"}"#))),
            "400",
            "bad tags: too many tags: at most 1",
        ),
        (
            upgrade_request("/").replace("\r\n\r\n", "\r\nOrigin: https://evil.example\r\n\r\n"),
            "403",
            "origin https://evil.example is not allowed",
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".into(),
            "426",
            "unsupported WebSocket version",
        ),
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n".into(), "426", "/ is a WebSocket endpoint"),
    ];
    let mut bystander = server.connect(r#"{"bystander":"1"}"#).await;
    for (request, status, reason) in cases {
        let mut raw = RawClient::send_request(server.address, &request).await;
        let response = String::from_utf8(raw.read_to_end().await).unwrap();
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{response}"
        );
        assert!(response.contains("Content-Type: text/plain"), "{response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap();
        assert!(
            body.starts_with(reason),
            "{body:?} should start with {reason:?}"
        );
    }
    // An allowed origin (any case) and a client without Origin both pass.
    let allowed =
        upgrade_request("/").replace("\r\n\r\n", "\r\nOrigin: https://APP.example.com\r\n\r\n");
    let mut raw = RawClient::send_request(server.address, &allowed).await;
    assert!(raw.read_head().await.starts_with("HTTP/1.1 101"));
    bystander_still_served(&server, &mut bystander).await;
}

#[tokio::test]
async fn the_connection_limit_answers_503() {
    let server = TestServer::start("[limits]\nmax_connections = 2\n").await;
    let mut first = server.connect(r#"{"bystander":"1"}"#).await;
    let mut second = server.connect("").await;
    let mut raw = RawClient::send_request(server.address, &upgrade_request("/")).await;
    let response = String::from_utf8(raw.read_to_end().await).unwrap();
    assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
    assert!(response.ends_with("connection limit reached, try again later\n"));
    second
        .publish(r#""still here""#, r#"{"bystander":"1"}"#)
        .await;
    assert_eq!(first.recv().await, r#""still here""#);
    // A slot frees when a connection closes.
    drop(second);
    server.wait_for_connections(1).await;
    let _third = server.connect("").await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_dropped() {
    let server = TestServer::start("[limits]\nhandshake_timeout_ms = 200\n").await;
    let mut slow = RawClient::send_request(server.address, "GET / HTTP/1.1\r\nHost: x\r\n").await;
    // The server closes the socket without an answer once the deadline passes.
    assert!(slow.read_to_end().await.is_empty());
    let mut silent = RawClient::send_request(server.address, "").await;
    assert!(silent.read_to_end().await.is_empty());
}

#[tokio::test]
async fn a_client_too_slow_to_read_is_closed_with_4429_and_slows_nobody() {
    let server = TestServer::start("[limits]\nsend_queue_bytes = 262144\n").await;
    let mut bystander = server.connect(r#"{"bystander":"1"}"#).await;
    // Never reads: its socket buffers fill, then its queue overflows.
    let _stalled = RawClient::upgrade(
        server.address,
        &format!("/{}", tags_query(r#"{"bystander":"1"}"#)),
    )
    .await;
    server.wait_for_connections(2).await;
    let mut sender = server.connect("").await;
    let big = format!("\"{}\"", "x".repeat(16 * 1024));
    let mut sent = 0;
    // The bystander and the sender remain once the stalled client is closed.
    while server.hub.len() > 2 {
        sender.publish(&big, r#"{"bystander":"1"}"#).await;
        sent += 1;
        assert!(bystander.recv().await.len() > 16 * 1024);
        assert!(sent < 10_000, "the stalled client was never closed");
    }
    bystander_still_served(&server, &mut bystander).await;
}

#[tokio::test]
async fn a_slow_reader_that_reads_again_sees_4429() {
    let server = TestServer::start("[limits]\nsend_queue_bytes = 64\n").await;
    let mut slow = RawClient::upgrade(server.address, "/?tags=%7B%22slow%22%3A%221%22%7D").await;
    server.wait_for_connections(1).await;
    // Queue more frames than fit at once, from inside the server, before the writer runs.
    let shared_hub = server.hub.clone();
    let tags: tagcast::tags::Tags = [("slow", "1")].into_iter().collect();
    let frame = tagcast::wire::frame::MessageFrames::text("\"x\"", false);
    let mut overflowed = 0;
    for _ in 0..10_000 {
        overflowed += shared_hub
            .route(
                &tags,
                &frame,
                None,
                &mut tagcast::routing::outbox::Wakeups::default(),
            )
            .overflowed;
        if overflowed > 0 {
            break;
        }
    }
    assert_eq!(overflowed, 1);
    let (code, reason) = slow.read_close().await;
    assert_eq!(code, 4429);
    assert!(reason.contains("too slowly"), "{reason}");
}

#[tokio::test]
async fn ping_gets_pong_and_close_is_echoed() {
    let server = TestServer::start("").await;
    let mut raw = RawClient::upgrade(server.address, "/").await;
    raw.stream_write(&masked_frame(0x89, b"hello")).await;
    assert_eq!(raw.read_frame().await, (0x8A, b"hello".to_vec()));
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    raw.stream_write(&masked_frame(0x88, &close)).await;
    assert_eq!(raw.read_close().await.0, 1000);
    assert!(raw.read_to_end().await.is_empty());
    server.wait_for_connections(0).await;
}

#[tokio::test]
async fn request_rate_limit_closes_with_4429() {
    let server = TestServer::start("[limits]\nmax_requests_per_s = 5\n").await;
    let mut bystander = server.connect(r#"{"bystander":"1"}"#).await;
    let mut flooder = server.connect("").await;
    for _ in 0..50 {
        flooder.publish(r#""flood""#, r#"{"nobody":"1"}"#).await;
    }
    let (code, reason) = flooder.expect_close().await;
    assert_eq!(code, 4429);
    assert_eq!(reason, "too many requests: at most 5 per second");
    bystander_still_served(&server, &mut bystander).await;
}

#[tokio::test]
async fn shutdown_closes_every_client_with_1001() {
    let server = TestServer::start("").await;
    let mut first = server.connect("").await;
    let mut second = server.connect(r#"{"a":"1"}"#).await;
    server.shutdown.cancel();
    assert_eq!(
        first.expect_close().await,
        (1001, "server shutting down".into())
    );
    assert_eq!(
        second.expect_close().await,
        (1001, "server shutting down".into())
    );
    tokio::time::timeout(common::WAIT, server.task)
        .await
        .unwrap()
        .unwrap();
}
