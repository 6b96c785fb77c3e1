//! Shared helpers for the integration tests: a server on port 0, WebSocket clients and the real
//! `tagcast` daemon in a child process.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tagcast::net::server::Server;
use tagcast::net::shared::Shared;
use tagcast::ops::config::Config;
use tagcast::routing::hub::Hub;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long any test waits for a condition before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server running in this process on 127.0.0.1, port 0.
pub struct TestServer {
    /// The ws listener (the wss one when `server.plain = false`).
    pub address: SocketAddr,
    /// The wss listener, when `[tls]` is set.
    pub tls_address: Option<SocketAddr>,
    /// The `/metrics` and `/healthz` listener, unless `http.admin_address = ""`.
    pub admin: Option<SocketAddr>,
    pub hub: std::sync::Arc<Hub>,
    pub shared: std::sync::Arc<Shared>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server with the defaults plus `toml` (a config file's text); every listener on
    /// 127.0.0.1, port 0.
    pub async fn start(toml: &str) -> TestServer {
        let mut config = Config::parse(toml, None).expect("test config");
        config.server.address = std::net::Ipv4Addr::LOCALHOST.into();
        config.server.port = 0;
        if let Some(tls) = &mut config.tls {
            tls.address = None;
            tls.port = 0;
        }
        TestServer::start_with(config).await
    }

    /// Starts a server with `config`; an admin listener binds 127.0.0.1:0, never its fixed port.
    pub async fn start_with(mut config: Config) -> TestServer {
        if config.http.admin_address.is_some() {
            config.http.admin_address = Some((std::net::Ipv4Addr::LOCALHOST, 0).into());
        }
        let server = Server::new(config).expect("server");
        let listeners = server.bind().await.expect("bind");
        let tls_address = listeners.tls_address();
        let admin = listeners.admin_address();
        let address = listeners
            .plain_address()
            .or(tls_address)
            .expect("a listener");
        let hub = server.hub();
        let shared = server.shared();
        let shutdown = server.shutdown_token();
        let task = tokio::spawn(server.run(listeners));
        TestServer {
            address,
            tls_address,
            admin,
            hub,
            shared,
            shutdown,
            task,
        }
    }

    pub fn url(&self, query: &str) -> String {
        format!("ws://{}/{}", self.address, query)
    }

    /// Connects with `tags` (a JSON object's text) and waits until the hub counts it.
    pub async fn connect(&self, tags: &str) -> Client {
        let before = self.hub.len();
        let client = Client::connect(&self.url(&tags_query(tags))).await;
        self.wait_for_connections(before + 1).await;
        client
    }

    /// Waits until the hub holds exactly `count` connections.
    pub async fn wait_for_connections(&self, count: usize) {
        let hub = self.hub.clone();
        wait_until(move || hub.len() == count, &format!("{count} connections")).await;
    }
}

/// `?tags=...` with the JSON URL-encoded; empty for "".
pub fn tags_query(tags: &str) -> String {
    if tags.is_empty() {
        return String::new();
    }
    let encoded: String = form_urlencoded::byte_serialize(tags.as_bytes()).collect();
    format!("?tags={encoded}")
}

/// The HTTP status a WebSocket open with `query` gets, and the body's first line.
pub async fn open_status(server: &TestServer, query: &str) -> (u16, String) {
    let mut client =
        RawClient::send_request(server.address, &upgrade_request(&format!("/{query}"))).await;
    let head = client.read_head().await;
    let status = head[9..12].parse().expect("status code");
    if status == 101 {
        return (status, String::new());
    }
    let body = String::from_utf8_lossy(&client.read_to_end().await).into_owned();
    (status, body.trim().to_owned())
}

/// Polls `condition` every few milliseconds until it holds; panics after [`WAIT`].
pub async fn wait_until(condition: impl Fn() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The messages `next` yields before `marker`, which it consumes: proves that a message did *not*
/// arrive without waiting for a timeout.
pub async fn received_before(marker: &str, mut next: impl AsyncFnMut() -> String) -> Vec<String> {
    let mut received = Vec::new();
    loop {
        let text = next().await;
        if text == marker {
            return received;
        }
        received.push(text);
    }
}

/// A WebSocket client (tokio-tungstenite).
pub struct Client {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Client { socket }
    }

    pub async fn send(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.expect("send");
    }

    /// Sends a request with `message` (JSON text) and `tags` (JSON object text).
    pub async fn publish(&mut self, message: &str, tags: &str) {
        let request = format!(r#"{{"message":{message},"tags":{tags},"metadata":{{}}}}"#);
        self.send(&request).await;
    }

    /// The next text message, waiting at most [`WAIT`].
    pub async fn recv(&mut self) -> String {
        match self.next_frame(WAIT).await {
            Some(Message::Text(text)) => text.to_string(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next data or close frame within `wait`, `None` on timeout or end of stream.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Message> {
        loop {
            match tokio::time::timeout(wait, self.socket.next()).await {
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(message))) => return Some(message),
                Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Skips text messages until a close frame; returns its code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.next_frame(WAIT).await {
                Some(Message::Close(Some(close))) => {
                    return (u16::from(close.code), close.reason.to_string());
                }
                Some(Message::Close(None)) => return (1005, String::new()),
                Some(Message::Text(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

/// A client speaking raw bytes over TCP, for what a well-behaved library will not send.
pub struct RawClient {
    pub stream: TcpStream,
    pub buffer: Vec<u8>,
}

impl RawClient {
    /// Opens a TCP connection and sends `request` as is.
    pub async fn send_request(address: SocketAddr, request: &str) -> RawClient {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        RawClient {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Opens a WebSocket connection by hand and checks for the 101 answer.
    pub async fn upgrade(address: SocketAddr, query: &str) -> RawClient {
        let mut client = RawClient::send_request(address, &upgrade_request(query)).await;
        let head = client.read_head().await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        client
    }

    /// Reads the HTTP response head.
    pub async fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end + 4]).into_owned();
                self.buffer.drain(..end + 4);
                return head;
            }
            self.fill().await;
        }
    }

    /// Reads until the server closes the TCP connection; returns everything.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.buffer);
        tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest))
            .await
            .expect("server did not close")
            .expect("read");
        rest
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("timed out reading")
            .expect("read");
        assert!(read > 0, "connection closed");
        self.buffer.extend_from_slice(&chunk[..read]);
    }

    /// Writes raw bytes.
    pub async fn stream_write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends one masked frame with the given first byte (FIN, RSV, opcode).
    pub async fn send_frame(&mut self, first: u8, payload: &[u8]) {
        self.stream
            .write_all(&masked_frame(first, payload))
            .await
            .expect("write");
    }

    /// Reads one server frame: (first byte, payload).
    pub async fn read_frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buffer.len() >= 2 {
                let (length, header) = match self.buffer[1] & 0x7F {
                    126 if self.buffer.len() >= 4 => (
                        u16::from_be_bytes([self.buffer[2], self.buffer[3]]) as usize,
                        4,
                    ),
                    127 if self.buffer.len() >= 10 => (
                        u64::from_be_bytes(self.buffer[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    length => (length as usize, 2),
                };
                if length != usize::MAX && self.buffer.len() >= header + length {
                    let first = self.buffer[0];
                    let payload = self.buffer[header..header + length].to_vec();
                    self.buffer.drain(..header + length);
                    return (first, payload);
                }
            }
            self.fill().await;
        }
    }

    /// Reads frames until a close frame; returns its code and reason.
    pub async fn read_close(&mut self) -> (u16, String) {
        loop {
            let (first, payload) = self.read_frame().await;
            if first & 0x0F == 0x8 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
            }
        }
    }
}

/// A WebSocket client that never reads, with a small receive buffer so that the server's
/// frames soon wait in its queue rather than in the kernel.
pub async fn non_reader(address: SocketAddr, tags: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(address).await.unwrap();
    stream
        .write_all(upgrade_request(&format!("/{}", tags_query(tags))).as_bytes())
        .await
        .unwrap();
    // Reads the 101 head byte by byte: nothing after it is read.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        tokio::time::timeout(WAIT, stream.read_exact(&mut byte))
            .await
            .expect("the 101 arrives")
            .unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    stream
}

/// The text of a WebSocket upgrade request for `query` (e.g. `/?tags=...`).
pub fn upgrade_request(target: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// A masked client frame.
pub fn masked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    tagcast::wire::frame::push_masked_frame(&mut frame, first, payload, [0x12, 0x34, 0x56, 0x78]);
    frame
}

/// The `tagcast` binary built for these tests.
pub const TAGCAST: &str = env!("CARGO_BIN_EXE_tagcast");

/// A Python venv with `packages`, for the tests that check tagcast against a Python library (an
/// independent implementation): `TAGCAST_TEST_VENV` when set, else `name` in the test binary's
/// temporary directory; made (`python3 -m venv`, then pip) unless `python -c check` already
/// succeeds in it. Returns its `bin/python`.
pub fn python_venv(name: &str, packages: &[&str], check: &str) -> PathBuf {
    // Tests of one binary run at once: one makes the venv while the others wait for it.
    static MAKING: Mutex<()> = Mutex::new(());
    let _making = MAKING.lock().unwrap_or_else(PoisonError::into_inner);
    let venv = std::env::var_os("TAGCAST_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join(name));
    let python = venv.join("bin/python");
    let ready = || {
        Command::new(&python)
            .args(["-c", check])
            .status()
            .is_ok_and(|status| status.success())
    };
    if !ready() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 (apt-get install python3-venv)");
        assert!(made.success(), "python3 -m venv failed");
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "-q"])
            .args(packages)
            .status()
            .expect("pip");
        assert!(installed.success(), "pip install {packages:?} failed");
    }
    python
}

/// Reads `reader` line by line in a thread, handing each line to `send` until it returns false or
/// the stream ends.
pub fn forward_lines(
    reader: impl Read + Send + 'static,
    mut send: impl FnMut(String) -> bool + Send + 'static,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if !send(line) {
                return;
            }
        }
    });
}

/// A `tagcast serve` child process, its stderr log lines read as they come; killed when dropped,
/// even when the test fails.
pub struct Daemon {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stderr line read so far.
    pub log: Vec<String>,
    /// How many lines of `log` [`Daemon::wait_for_line`] has looked at.
    seen: usize,
}

impl Daemon {
    /// `tagcast serve --config CONFIG` with `RUST_LOG` unset, stdin and stdout null and stderr
    /// piped: what [`Daemon::start_with`] expects; add to it before starting.
    pub fn command(config: &Path) -> Command {
        let mut command = Command::new(TAGCAST);
        command
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    /// Starts `tagcast serve --config CONFIG`, without colours in its log.
    pub fn start(config: &Path) -> Daemon {
        let mut command = Daemon::command(config);
        command.env("NO_COLOR", "1");
        Daemon::start_with(command)
    }

    /// Starts `command` (made by [`Daemon::command`], or any command with stderr piped).
    pub fn start_with(mut command: Command) -> Daemon {
        let mut child = command.spawn().expect("start the command");
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = mpsc::channel();
        forward_lines(stderr, move |line| sender.send(line).is_ok());
        Daemon {
            child,
            lines,
            log: Vec::new(),
            seen: 0,
        }
    }

    /// The next log line containing `text` (after the last one this returned), waiting at most
    /// [`WAIT`] in all.
    pub fn wait_for_line(&mut self, text: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(line) = self.log[self.seen..]
                .iter()
                .position(|line| line.contains(text))
            {
                self.seen += line + 1;
                return self.log[self.seen - 1].clone();
            }
            self.seen = self.log.len();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(_) => panic!(
                    "no log line with {text:?} within {WAIT:?}; stderr so far: {:#?}",
                    self.log
                ),
            }
        }
    }

    /// The lines logged so far, without waiting.
    pub fn log_so_far(&mut self) -> &[String] {
        self.log.extend(self.lines.try_iter());
        &self.log
    }

    /// The ws address, from the "listening for ws" line.
    pub fn ws_address(&mut self) -> SocketAddr {
        address_of(&self.wait_for_line("listening for ws "))
    }

    /// Sends signal `name` (e.g. `HUP`) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits at most [`WAIT`] for the daemon to exit, without blocking the runtime's thread.
    pub async fn wait(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("tagcast did not exit; stderr: {:#?}", self.log_so_far());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `address=` field of a log line.
pub fn address_of(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("address="))
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

// --- recovery after a reconnect ([history]) ---

/// A frame a `since` connection received.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Gap,
    Message { id: String, message: Value },
}

pub fn frame(text: &str) -> Frame {
    let value: Value = serde_json::from_str(text).expect("JSON");
    if value == serde_json::json!({"gap": true}) {
        return Frame::Gap;
    }
    let object = value.as_object().expect("an object");
    assert_eq!(object.len(), 2, "{text}");
    Frame::Message {
        id: object["id"].as_str().expect("an id").to_owned(),
        message: object["message"].clone(),
    }
}

/// The message of a frame; panics on a gap.
pub fn message(frame: &Frame) -> String {
    match frame {
        Frame::Message { message, .. } => message.as_str().expect("a string").to_owned(),
        Frame::Gap => panic!("a gap where a message was expected"),
    }
}

pub fn id(frame: &Frame) -> String {
    match frame {
        Frame::Message { id, .. } => id.clone(),
        Frame::Gap => panic!("a gap where a message was expected"),
    }
}

/// Opens a connection with `tags` and `since` (the server registers it before its 101 answer).
pub async fn connect_since(server: &TestServer, tags: &str, since: &str) -> Client {
    let mut query = tags_query(tags);
    query.push(if query.is_empty() { '?' } else { '&' });
    query.push_str("since=");
    query.extend(form_urlencoded::byte_serialize(since.as_bytes()));
    Client::connect(&server.url(&query)).await
}

/// Closes `client` and waits until the server saw it go.
pub async fn disconnect(server: &TestServer, client: Client) {
    let before = server.hub.len();
    drop(client);
    server.wait_for_connections(before - 1).await;
}

/// `POST /publish`: the answer's JSON.
pub async fn http_publish(server: &TestServer, body: &str) -> Value {
    let request = format!(
        "POST /publish HTTP/1.1\r\nHost: tagcast\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut client = RawClient::send_request(server.address, &request).await;
    let answer = String::from_utf8(client.read_to_end().await).expect("utf-8");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_, json) = answer.split_once("\r\n\r\n").expect("a body");
    serde_json::from_str(json).expect("JSON")
}

/// A TCP proxy in front of a server whose connections can all be cut at once, both sides
/// dropped without a close: a network that fails under the client.
pub struct CuttingProxy {
    pub address: SocketAddr,
    cuts: tokio::sync::watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl CuttingProxy {
    /// Forwards every connection to 127.0.0.1:0 to `upstream`.
    pub async fn start(upstream: SocketAddr) -> CuttingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let watching = cuts.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = watching.subscribe();
                cut.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                    // Dropped here: both sockets close at once, mid-stream.
                });
            }
        });
        CuttingProxy {
            address,
            cuts,
            task,
        }
    }

    /// Drops every connection open now.
    pub fn cut(&self) {
        self.cuts.send_modify(|cuts| *cuts += 1);
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Resident memory of this process, in bytes.
pub fn rss() -> u64 {
    memory_of("self", "VmRSS:")
}

/// A memory figure of process `pid` (a number or `self`), in bytes: `field` of its
/// `/proc/PID/status`, e.g. `VmRSS:` (resident now) or `VmHWM:` (its peak).
pub fn memory_of(pid: &str, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).expect(&path);
    let kilobytes = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect(field);
    kilobytes * 1024
}
