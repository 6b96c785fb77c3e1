//! What a hostile or broken client can do to a server on the public internet, each abuse run
//! against an in-process server while 50 well-behaved clients must keep receiving every message
//! meant for them, with the memory of this process (the server's) and its open files checked
//! where they matter.
//!
//! The tests run one at a time ([`SERIAL`]): memory and file counts are per process.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Client, RawClient, TestServer, masked_frame, rss, tags_query, upgrade_request, wait_until,
};
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, MutexGuard};
use tokio_tungstenite::tungstenite::Message;

/// Held by each test for its whole run.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// The tags of the well-behaved clients.
const GROUP: &str = r#"{"group":"bystanders"}"#;

/// The limits every abuse test runs with.
const CONFIG: &str = "[limits]\nsend_queue_bytes = 8388608\nhandshake_timeout_ms = 300\n\
                      max_requests_per_s = 200\n";

/// 50 clients with [`GROUP`] and one sender, checking that every message reaches every client.
struct Bystanders {
    clients: Vec<Client>,
    sender: Client,
    sent: u64,
}

impl Bystanders {
    const COUNT: usize = 50;

    async fn connect(server: &TestServer) -> Bystanders {
        let mut clients = Vec::with_capacity(Self::COUNT);
        for _ in 0..Self::COUNT {
            clients.push(server.connect(GROUP).await);
        }
        let sender = server.connect("").await;
        Bystanders {
            clients,
            sender,
            sent: 0,
        }
    }

    /// Publishes `count` numbered messages; every client must receive each, in order.
    async fn round(&mut self, count: u64) {
        let first = self.sent;
        for number in first..first + count {
            self.sender.publish(&format!("\"{number}\""), GROUP).await;
        }
        self.sent += count;
        for client in &mut self.clients {
            for number in first..first + count {
                assert_eq!(client.recv().await, format!("\"{number}\""));
            }
        }
    }

    /// Rounds of messages until `abuse` is done, then one more: nobody may miss one meanwhile.
    async fn served_during<T>(&mut self, abuse: tokio::task::JoinHandle<T>) -> T {
        while !abuse.is_finished() {
            self.round(5).await;
            // 100 requests per second at most: under the sender's `max_requests_per_s`.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let done = abuse.await.expect("the abuse task");
        self.round(5).await;
        done
    }
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

const MB: u64 = 1024 * 1024;

/// Fails when resident memory grew by more than `limit_mb` since `before`.
fn assert_memory_bounded(before: u64, limit_mb: u64, what: &str) {
    let after = rss();
    let grown = after.saturating_sub(before);
    assert!(
        grown < limit_mb * MB,
        "{what}: resident memory grew by {} MB (from {} to {} MB)",
        grown / MB,
        before / MB,
        after / MB
    );
}

/// Waits until the hub holds the bystanders only and the other sockets are closed (`fds_before`:
/// the open files with the bystanders connected).
async fn only_bystanders_left(server: &TestServer, fds_before: usize) {
    server.wait_for_connections(Bystanders::COUNT + 1).await;
    wait_until(
        || open_fds() <= fds_before + 10,
        "the other connections' sockets to close",
    )
    .await;
}

/// Waits for this test's turn, then starts a server and its bystanders; the server holds them
/// and nothing else.
async fn setup() -> (MutexGuard<'static, ()>, TestServer, Bystanders) {
    let serial = SERIAL.lock().await;
    let server = TestServer::start(CONFIG).await;
    let mut bystanders = Bystanders::connect(&server).await;
    bystanders.round(1).await;
    (serial, server, bystanders)
}

/// Reads what the server answers until it closes the connection, bounded in time and size.
async fn answer(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while answer.len() < 64 * 1024 {
        match tokio::time::timeout(common::WAIT, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(read)) => answer.extend_from_slice(&chunk[..read]),
            Err(_) => panic!("the server neither answered nor closed"),
        }
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_with_4429_and_memory_stays_bounded() {
    let (_serial, server, mut bystanders) = setup().await;
    let mut stalled = RawClient::upgrade(server.address, &format!("/{}", tags_query(GROUP))).await;
    server.wait_for_connections(Bystanders::COUNT + 2).await;
    let before = rss();
    let big = format!("\"{}\"", "x".repeat(32 * 1024));
    let tags: tagcast::tags::Tags = [("group", "bystanders")].into_iter().collect();
    let mut sent = 0;
    // The stalled client gets every message too, until its socket buffers and queue are full.
    loop {
        let mut overflowed = 0;
        for _ in 0..20 {
            overflowed += server
                .shared
                .router
                .route(
                    &tags,
                    &big,
                    &mut tagcast::routing::outbox::Wakeups::default(),
                )
                .overflowed;
        }
        for client in &mut bystanders.clients {
            for _ in 0..20 {
                assert_eq!(client.recv().await, big);
            }
        }
        sent += 20;
        if overflowed > 0 {
            assert_eq!(overflowed, 1, "only the stalled client overflows");
            break;
        }
        assert!(sent < 20_000, "the stalled client was never closed");
    }
    // 8 MiB of 32 KB frames are shared by every queue: bounded by a few queues' worth.
    assert_memory_bounded(before, 64, "a client that never reads");
    // Reading again, it finds its close frame after what its socket buffers held.
    let (code, _) = stalled.read_close().await;
    assert_eq!(code, 4429);
    server.wait_for_connections(Bystanders::COUNT + 1).await;
    bystanders.round(10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_handshakes_are_dropped_after_the_handshake_timeout() {
    let (_serial, server, mut bystanders) = setup().await;
    let address = server.address;
    let abuse = tokio::spawn(async move {
        let mut slow = Vec::new();
        for _ in 0..200 {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            stream.write_all(b"GET /?tags=").await.expect("write");
            slow.push(stream);
        }
        let started = tokio::time::Instant::now();
        // One more byte each every 100 ms: never a whole head.
        let mut dropped = 0;
        for mut stream in slow {
            loop {
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
                let mut byte = [0u8; 1];
                match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut byte)).await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => panic!("a slowloris client got an answer"),
                    Err(_) => assert!(started.elapsed() < common::WAIT, "never dropped"),
                }
            }
            dropped += 1;
        }
        dropped
    });
    assert_eq!(bystanders.served_during(abuse).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_headers_huge_queries_and_thousands_of_tags_are_refused() {
    let (_serial, server, mut bystanders) = setup().await;
    let before = rss();
    let address = server.address;
    let abuse = tokio::spawn(async move {
        let huge_header = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
            "j".repeat(1024 * 1024)
        );
        let many_headers = format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
            "X-A: b\r\n".repeat(500)
        );
        let huge_query = upgrade_request(&format!("/?tags={}", "%7B".repeat(100_000)));
        let tags: Vec<String> = (0..600).map(|i| format!("\"t{i}\":\"\"")).collect();
        let thousand_tags = upgrade_request(&format!(
            "/{}",
            tags_query(&format!("{{{}}}", tags.join(",")))
        ));
        let cases = [
            (huge_header, "431"),
            (many_headers, "431"),
            (huge_query, "431"),
            (thousand_tags, "400"),
        ];
        for _ in 0..20 {
            for (request, status) in &cases {
                let mut stream = TcpStream::connect(address).await.expect("connect");
                // The server may answer and close before it read everything.
                let _ = stream.write_all(request.as_bytes()).await;
                let answer = answer(&mut stream).await;
                let text = String::from_utf8_lossy(&answer);
                assert!(
                    text.starts_with(&format!("HTTP/1.1 {status}")),
                    "{}: {text}",
                    &request[..60]
                );
            }
        }
    });
    bystanders.served_during(abuse).await;
    // Thousands of tags in a request over an open connection: 4400.
    let tags: Vec<String> = (0..5000).map(|i| format!("\"t{i}\":\"v\"")).collect();
    let mut client = server.connect("").await;
    client
        .publish(r#""x""#, &format!("{{{}}}", tags.join(",")))
        .await;
    assert_eq!(client.expect_close().await.0, 4400);
    assert_memory_bounded(before, 32, "huge heads");
    bystanders.round(5).await;
}

/// Deterministic garbage: xorshift64.
fn garbage(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Connects from 127.0.0.`source` (spreading thousands of connections over source addresses).
async fn connect_from(source: u8, address: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, source], 0)))?;
    socket.connect(address).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_garbage_connections_leave_nothing_behind() {
    let (_serial, server, mut bystanders) = setup().await;
    let fds_before = open_fds();
    let before = rss();
    let address = server.address;
    let abuse = tokio::spawn(async move {
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..50u64 {
            workers.spawn(async move {
                for n in 0..200u64 {
                    let seed = worker * 1000 + n;
                    let source = 2 + (seed % 40) as u8;
                    let mut stream = connect_from(source, address).await.expect("connect");
                    let bytes = match n % 4 {
                        // Binary noise.
                        0 => garbage(seed, 1 + (seed as usize % 2000)),
                        // A request line, then noise.
                        1 => [b"GET / HTTP/1.1\r\n".as_slice(), &garbage(seed, 300)].concat(),
                        // A TLS ClientHello's first bytes on the plain port.
                        2 => [
                            &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..],
                            &garbage(seed, 64),
                        ]
                        .concat(),
                        // A valid upgrade, then garbage frames.
                        _ => [upgrade_request("/").as_bytes(), &garbage(seed, 500)].concat(),
                    };
                    let _ = stream.write_all(&bytes).await;
                    if n % 4 != 0 {
                        answer(&mut stream).await;
                    } // noise alone: hang up at once (a reset, often).
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            done.expect("a garbage worker");
        }
    });
    bystanders.served_during(abuse).await;
    // Noise-only connections that never sent a whole head wait for the handshake timeout.
    only_bystanders_left(&server, fds_before).await;
    assert_memory_bounded(before, 32, "garbage connections");
    bystanders.round(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_with_their_codes() {
    let (_serial, server, mut bystanders) = setup().await;
    let mut top_bit_length = vec![0x81, 0x80 | 127];
    top_bit_length.extend_from_slice(&u64::MAX.to_be_bytes());
    top_bit_length.extend_from_slice(&[1, 2, 3, 4]);
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (masked_frame(0x83, b"x"), 1002),                // reserved opcode
        (masked_frame(0x8B, b"x"), 1002),                // reserved control opcode
        (masked_frame(0xC1, b"x"), 1002),                // RSV1 without an extension
        (vec![0x81, 0x01, b'x'], 1002),                  // unmasked
        (masked_frame(0x89, &[0; 126]), 1002),           // control frame over 125 bytes
        (masked_frame(0x09, b"x"), 1002),                // fragmented control frame
        (masked_frame(0x80, b"x"), 1002),                // continuation without a message
        (top_bit_length, 1002),                          // 64-bit length with its top bit set
        (masked_frame(0x82, b"x"), 1003),                // binary
        (masked_frame(0x81, &[0xC3, 0x28]), 1007),       // invalid UTF-8
        (masked_frame(0x88, &[0x03, 0xED]), 1002),       // close code 1005 on the wire
        (masked_frame(0x81, &vec![b'a'; 70_000]), 1009), // over messages.max_size
    ];
    let address = server.address;
    let abuse = tokio::spawn(async move {
        for _ in 0..10 {
            for (bytes, code) in &cases {
                let mut raw = RawClient::upgrade(address, "/").await;
                raw.stream_write(bytes).await;
                assert_eq!(raw.read_close().await.0, *code, "{:02x?}", &bytes[..2]);
            }
        }
    });
    bystanders.served_during(abuse).await;
    server.wait_for_connections(Bystanders::COUNT + 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_declared_frame_is_refused_from_its_header() {
    let (_serial, server, mut bystanders) = setup().await;
    let before = rss();
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut raw = RawClient::upgrade(server.address, "/").await;
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&(100 * MB).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        raw.stream_write(&header).await;
        // The start of the payload: the server must not wait for (or buffer) the rest.
        let _ = raw.stream.write_all(&[b'a'; 64 * 1024]).await;
        clients.push(raw);
    }
    for raw in &mut clients {
        let (code, reason) = raw.read_close().await;
        assert_eq!(code, 1009, "{reason}");
    }
    assert_memory_bounded(before, 16, "100 MB frames");
    bystanders.round(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_is_closed_with_4429() {
    let (_serial, server, mut bystanders) = setup().await;
    let url = server.url("");
    let abuse = tokio::spawn(async move {
        let mut flooder = Client::connect(&url).await;
        let text = r#"{"message":"flood","tags":{"group":"nobody"}}"#;
        let mut request = 0;
        // Sending fails once the server closed.
        loop {
            let sent = flooder.socket.send(Message::text(text)).await;
            request += 1;
            if sent.is_err() || request == 2000 {
                break;
            }
        }
        flooder.expect_close().await
    });
    let (code, reason) = bystanders.served_during(abuse).await;
    assert_eq!(code, 4429, "{reason}");
    server.wait_for_connections(Bystanders::COUNT + 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_churn_leaves_nothing_behind() {
    let (_serial, server, mut bystanders) = setup().await;
    let fds_before = open_fds();
    // Warm up allocator pools with one round of churn before measuring.
    let churn = |rounds: usize| {
        let url = server.url(&tags_query(GROUP));
        tokio::spawn(async move {
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..20 {
                let url = url.clone();
                workers.spawn(async move {
                    for n in 0..rounds {
                        let mut client = Client::connect(&url).await;
                        if n % 2 == 0 {
                            // A clean close half the time, a dropped socket the other half.
                            let _ = client.socket.close(None).await;
                        }
                    }
                });
            }
            while let Some(done) = workers.join_next().await {
                done.expect("a churn worker");
            }
        })
    };
    bystanders.served_during(churn(10)).await;
    server.wait_for_connections(Bystanders::COUNT + 1).await;
    let before = rss();
    bystanders.served_during(churn(50)).await;
    only_bystanders_left(&server, fds_before).await;
    assert_memory_bounded(before, 16, "connection churn");
}
