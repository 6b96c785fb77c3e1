//! Several nodes sharing one real Redis (SPEC §9): each test starts its own `redis-server` on a
//! free port and two or three in-process nodes.
//!
//! These tests need Debian's `redis-server`: each is ignored with the reason "needs
//! redis-server", and `.ci/run` runs them with `--include-ignored`, where a missing
//! `redis-server` fails them.
//!
//! "Exactly once" is proven with fences, not timeouts: a marker from node X is published to
//! Redis after everything before it (every client has seen the previous marker, remote ones
//! through Redis), and Redis keeps one order for every subscriber, so a duplicate of an earlier
//! message would show up before the marker.
#![cfg(feature = "cluster")]

mod common;

use std::io::Write;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{Client, Daemon, TestServer, wait_until};
use tagcast::cluster::Cluster;

/// Panics when `redis-server` is missing: an ignored test that is run needs it.
fn require_redis() {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "redis-server is not installed (apt-get install redis-server)"
    );
}

/// A `redis-server` of this test's own on 127.0.0.1, without persistence; killed on drop.
struct Redis {
    port: u16,
    child: Option<Child>,
    directory: tempfile::TempDir,
    /// More `redis-server` arguments (a password).
    options: Vec<String>,
    /// Certificate and key: serve TLS only, on `port`.
    tls: Option<(PathBuf, PathBuf)>,
}

impl Redis {
    /// Starts one on a free port.
    async fn start() -> Redis {
        Redis::start_with(&[], None).await
    }

    /// Starts one on a free port with more `redis-server` arguments, and TLS when given a
    /// certificate and key.
    async fn start_with(options: &[&str], tls: Option<(PathBuf, PathBuf)>) -> Redis {
        for _ in 0..5 {
            let mut redis = Redis {
                port: free_port(),
                child: None,
                directory: tempfile::tempdir().expect("tempdir"),
                options: options.iter().map(|&option| option.to_owned()).collect(),
                tls: tls.clone(),
            };
            if redis.restart().await {
                return redis;
            }
        }
        panic!("redis-server did not start on a free port in 5 attempts");
    }

    /// Starts it (again) on its port; false when it exited at once (the port was taken).
    async fn restart(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-auth-clients", "no", "--tls-cert-file"])
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.directory.path())
            .args(&self.options)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let child = self.child.insert(child);
        let deadline = tokio::time::Instant::now() + common::WAIT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return true;
            }
            if child.try_wait().expect("redis-server status").is_some() {
                return false;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not listen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills it (an outage, as abrupt as a crash).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis-cli PUBLISH channel text`, as any Redis user could (no password).
    fn publish(&self, channel: &str, text: &str) {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "PUBLISH", channel, text])
            .output()
            .expect("run redis-cli");
        assert!(output.status.success(), "redis-cli: {output:?}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Starts a node on `redis`'s `channel`, with `extra` config text.
async fn node(redis: &Redis, channel: &str, extra: &str) -> TestServer {
    node_at(&redis.url(), channel, extra).await
}

/// Starts a node on the Redis at `url`.
async fn node_at(url: &str, channel: &str, extra: &str) -> TestServer {
    TestServer::start(&format!(
        "{extra}\n[cluster]\nredis = \"{url}\"\nchannel = \"{channel}\"\n"
    ))
    .await
}

fn cluster(node: &TestServer) -> &Cluster {
    node.shared.cluster.as_deref().expect("a clustered node")
}

/// Waits until every node publishes and listens.
async fn wait_connected(nodes: &[&TestServer], connected: bool) {
    for node in nodes {
        let shared = node.shared.clone();
        wait_until(
            move || shared.cluster.as_ref().map(|cluster| cluster.connected()) == Some(connected),
            &format!("cluster connected == {connected}"),
        )
        .await;
    }
}

/// True when `node`'s `/metrics` text shows `tagcast_cluster_connected` at `value`.
fn gauge_says(node: &TestServer, value: u8) -> bool {
    node.shared
        .router
        .metrics()
        .encode()
        .lines()
        .any(|line| line == format!("tagcast_cluster_connected {value}"))
}

/// Reads until `marker`; returns what came before it.
async fn until(client: &mut Client, marker: &str) -> Vec<String> {
    let marker = format!("\"{marker}\"");
    let mut before = Vec::new();
    loop {
        let text = client.recv().await;
        if text == marker {
            return before;
        }
        before.push(text);
    }
}

/// Publishes `marker` to everybody from `sender`; returns what each client got before it.
async fn fence(sender: &mut Client, clients: &mut [&mut Client], marker: &str) -> Vec<Vec<String>> {
    sender.publish(&format!("\"{marker}\""), "{}").await;
    let mut received = Vec::new();
    for client in clients.iter_mut() {
        received.push(until(client, marker).await);
    }
    received
}

/// Captures every log line of this test binary, for the "logged once" checks.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("tagcast=info")
            .with_writer(move || LogWriter(writer.clone()))
            .try_init()
            .expect("the only subscriber");
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured lines that contain every one of `parts`.
fn log_lines(parts: &[&str]) -> Vec<String> {
    let logs = logs();
    let text = String::from_utf8_lossy(&logs.lock().expect("log buffer")).into_owned();
    text.lines()
        .filter(|line| parts.iter().all(|part| line.contains(part)))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_request_reaches_the_tagged_clients_of_every_node_exactly_once() {
    require_redis();
    let redis = Redis::start().await;
    let (a, b, c) = (
        node(&redis, "once", "").await,
        node(&redis, "once", "").await,
        node(&redis, "once", "").await,
    );
    wait_connected(&[&a, &b, &c], true).await;
    let mut senders = [
        a.connect(r#"{"role":"backend"}"#).await,
        b.connect(r#"{"role":"backend"}"#).await,
        c.connect(r#"{"role":"backend"}"#).await,
    ];
    let [mut a1, mut a2] = [
        a.connect(r#"{"room":"1"}"#).await,
        a.connect(r#"{"room":"2"}"#).await,
    ];
    let [mut b1, mut b2] = [
        b.connect(r#"{"room":"1"}"#).await,
        b.connect(r#"{"room":"2"}"#).await,
    ];
    let [mut c1, mut c2] = [
        c.connect(r#"{"room":"1"}"#).await,
        c.connect(r#"{"room":"2"}"#).await,
    ];
    let mut clients = [&mut a1, &mut a2, &mut b1, &mut b2, &mut c1, &mut c2];

    senders[0]
        .publish(r#""to room 1""#, r#"{"room":"1"}"#)
        .await;
    senders[0].publish(r#""to room 2""#, r#"{"room":2}"#).await;
    senders[0]
        .publish(r#""to nobody""#, r#"{"room":"3"}"#)
        .await;
    let received = fence(&mut senders[0], &mut clients, "end of a").await;
    let room = |name: &str| vec![format!("\"to room {name}\"")];
    assert_eq!(
        received,
        [
            room("1"),
            room("2"),
            room("1"),
            room("2"),
            room("1"),
            room("2")
        ]
    );
    // A fence from each node in turn: a late duplicate of anything before it would show up.
    for (sender, marker) in [(1, "fence b"), (2, "fence c"), (0, "fence a")] {
        let received = fence(&mut senders[sender], &mut clients, marker).await;
        assert!(received.iter().all(Vec::is_empty), "{marker}: {received:?}");
    }
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn each_senders_order_is_kept_on_every_node() {
    require_redis();
    const COUNT: usize = 300;
    let redis = Redis::start().await;
    let (a, b) = (
        node(&redis, "order", "").await,
        node(&redis, "order", "").await,
    );
    wait_connected(&[&a, &b], true).await;
    let mut from_a = a.connect(r#"{"role":"backend"}"#).await;
    let mut from_b = b.connect(r#"{"role":"backend"}"#).await;
    let mut on_a = a.connect(r#"{"room":"1"}"#).await;
    let mut on_b = b.connect(r#"{"room":"1"}"#).await;

    // Both senders at once, interleaved: each one's messages must arrive in its own order.
    let send_all = async |client: &mut Client, name: &str| {
        for number in 0..COUNT {
            client
                .publish(&format!("\"{name} {number}\""), r#"{"room":"1"}"#)
                .await;
        }
    };
    tokio::join!(send_all(&mut from_a, "a"), send_all(&mut from_b, "b"));
    for client in [&mut on_a, &mut on_b] {
        let mut next = [0, 0];
        while next != [COUNT, COUNT] {
            let text = client.recv().await;
            let (name, number) = text
                .trim_matches('"')
                .split_once(' ')
                .expect("\"name number\"");
            let number: usize = number.parse().expect("a number");
            let sender = usize::from(name == "b");
            assert_eq!(number, next[sender], "from {name}: {text}");
            next[sender] += 1;
        }
    }
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn auth_and_the_parser_apply_on_the_accepting_node_only() {
    require_redis();
    let directory = tempfile::tempdir().expect("tempdir");
    let auth = directory.path().join("auth.yml");
    std::fs::write(
        &auth,
        "applications:\n  - key: app\n    secret: s3cret\n    authorizeOpen: true\n",
    )
    .expect("write auth.yml");
    let redis = Redis::start().await;
    // a: credentials needed to send, any JSON message; b: no auth, strings only.
    let a = node(
        &redis,
        "rules",
        &format!(
            "[auth]\nfile = \"{}\"\n[messages]\nparser = \"json\"\n",
            auth.display()
        ),
    )
    .await;
    let b = node(&redis, "rules", "").await;
    wait_connected(&[&a, &b], true).await;
    let mut on_a = a.connect("").await;
    let mut on_b = b.connect("").await;
    let mut clients = [&mut on_a, &mut on_b];

    // Refused by a (no credentials): nobody anywhere gets it.
    let mut intruder = a.connect("").await;
    intruder.publish(r#""not allowed""#, "{}").await;
    assert_eq!(intruder.expect_close().await.0, 4401);
    // Refused by b's string parser: nobody anywhere gets it.
    let mut wrong_shape = b.connect("").await;
    wrong_shape.publish(r#"{"an":"object"}"#, "{}").await;
    assert_eq!(wrong_shape.expect_close().await.0, 4400);
    // Accepted by a with credentials and the json parser: b delivers it as a encoded it, though
    // b's own parser would have refused it and b has no credentials to check.
    let mut app = a.connect("").await;
    app.send(r#"{"message":{"n":[1, 2]},"tags":{},"metadata":{"key":"app","secret":"s3cret"}}"#)
        .await;
    // Accepted by b without credentials: a delivers it, though a would have asked for them.
    let mut anyone = b.connect("").await;
    anyone.publish(r#""from b""#, "{}").await;

    for client in clients.iter_mut() {
        let mut received = vec![client.recv().await, client.recv().await];
        received.sort();
        assert_eq!(received, ["\"from b\"", r#"{"n":[1,2]}"#]);
    }
    let received = fence(&mut anyone, &mut clients, "fence").await;
    assert!(received.iter().all(Vec::is_empty), "{received:?}");
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn without_redis_each_node_serves_its_own_clients_and_reconnects_when_it_is_back() {
    require_redis();
    let _ = logs();
    let mut redis = Redis::start().await;
    let channel = format!("outage{}", redis.port);
    let (a, b) = (
        node(&redis, &channel, "").await,
        node(&redis, &channel, "").await,
    );
    wait_connected(&[&a, &b], true).await;
    let mut from_a = a.connect(r#"{"role":"backend"}"#).await;
    let mut on_a = a.connect(r#"{"room":"1"}"#).await;
    let mut on_b = b.connect(r#"{"room":"1"}"#).await;
    from_a.publish(r#""before""#, r#"{"room":"1"}"#).await;
    assert_eq!(on_a.recv().await, "\"before\"");
    assert_eq!(on_b.recv().await, "\"before\"");

    redis.stop();
    wait_connected(&[&a, &b], false).await;
    // The gauge follows the link a moment after `connected()` does.
    wait_until(|| gauge_says(&a, 0), "tagcast_cluster_connected 0").await;
    from_a.publish(r#""during""#, r#"{"room":"1"}"#).await;
    assert_eq!(on_a.recv().await, "\"during\"");
    // Several reconnection attempts later, still one warning per node for the whole outage.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for node in [&a, &b] {
        let lines = log_lines(&[
            "redis unreachable",
            &format!("node={}", cluster(node).node()),
        ]);
        assert_eq!(lines.len(), 1, "{lines:#?}");
    }

    assert!(redis.restart().await, "redis-server restarts on its port");
    wait_connected(&[&a, &b], true).await;
    wait_until(|| gauge_says(&a, 1), "tagcast_cluster_connected 1").await;
    from_a.publish(r#""after""#, r#"{"room":"1"}"#).await;
    assert_eq!(on_a.recv().await, "\"after\"");
    // "during" was delivered on a only: b's next message is the one sent after the outage.
    assert_eq!(on_b.recv().await, "\"after\"");
    for node in [&a, &b] {
        let lines = log_lines(&[
            "redis reachable again",
            &format!("node={}", cluster(node).node()),
        ]);
        assert_eq!(lines.len(), 1, "{lines:#?}");
    }
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn garbage_on_the_channel_is_logged_and_dropped() {
    require_redis();
    let _ = logs();
    let redis = Redis::start().await;
    let channel = format!("garbage{}", redis.port);
    let (a, b) = (
        node(&redis, &channel, "").await,
        node(&redis, &channel, "").await,
    );
    wait_connected(&[&a, &b], true).await;
    let mut from_a = a.connect("").await;
    let mut on_b = b.connect("").await;

    for garbage in [
        "not json",
        r#"{"v":2,"node":"x","tags":{},"message":"from the future"}"#,
        r#"{"v":1,"node":"x","tags":"no","message":"bad tags"}"#,
        r#"{"v":1,"node":"x","tags":{}}"#,
    ] {
        redis.publish(&channel, garbage);
    }
    from_a.publish(r#""still delivering""#, "{}").await;
    assert_eq!(on_b.recv().await, "\"still delivering\"");
    assert!(cluster(&a).connected() && cluster(&b).connected());
    // One warning per node, the others held back for a while (rate-limited).
    let lines = log_lines(&["not a tagcast envelope", &format!("channel={channel}")]);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    // A well-formed envelope from another node is delivered as it says.
    redis.publish(
        &channel,
        r#"{"v":1,"node":"elsewhere","tags":{},"message":{"from":"redis-cli"}}"#,
    );
    assert_eq!(on_b.recv().await, r#"{"from":"redis-cli"}"#);
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_password_in_the_url_is_used_and_a_wrong_one_keeps_the_node_local() {
    require_redis();
    let _ = logs();
    let redis = Redis::start_with(&["--requirepass", "pa55word"], None).await;
    let url = |password: &str| format!("redis://:{password}@127.0.0.1:{}/", redis.port);
    let (a, b) = (
        node_at(&url("pa55word"), "password", "").await,
        node_at(&url("pa55word"), "password", "").await,
    );
    let wrong = node_at(&url("guess"), "password", "").await;
    wait_connected(&[&a, &b], true).await;
    let mut from_a = a.connect("").await;
    let mut on_b = b.connect("").await;
    let mut on_wrong = wrong.connect("").await;
    from_a.publish(r#""with the password""#, "{}").await;
    assert_eq!(on_b.recv().await, "\"with the password\"");

    // The node with the wrong password says so once, serves its own clients, never the others'.
    let node = format!("node={}", cluster(&wrong).node());
    wait_until(
        || log_lines(&["redis unreachable", &node]).len() == 1,
        "the wrong password logged",
    )
    .await;
    assert!(!cluster(&wrong).connected());
    let mut from_wrong = wrong.connect("").await;
    from_wrong.publish(r#""local only""#, "{}").await;
    assert_eq!(on_wrong.recv().await, "\"local only\"");
    let lines = log_lines(&["redis unreachable", &node]);
    assert!(
        lines[0].contains("WRONGPASS") || lines[0].contains("AuthenticationFailed"),
        "{lines:?}"
    );
    assert!(
        !lines[0].contains("guess"),
        "the password is not logged: {lines:?}"
    );
}

/// `rediss://`: nodes check Redis's certificate against the system's roots, which
/// `SSL_CERT_FILE` replaces. A running test cannot safely set an environment variable, so the
/// nodes are real `tagcast serve` daemons, each given `SSL_CERT_FILE`.
#[tokio::test]
#[ignore = "needs redis-server"]
async fn rediss_connects_with_tls_and_checks_the_certificate() {
    require_redis();
    let directory = tempfile::tempdir().expect("tempdir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("a certificate");
    let (cert, key) = (
        directory.path().join("cert.pem"),
        directory.path().join("key.pem"),
    );
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let redis = Redis::start_with(&[], Some((cert.clone(), key))).await;
    let config = directory.path().join("tagcast.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\naddress = \"127.0.0.1\"\nport = 0\n[http]\nadmin_address = \"\"\n\
             [cluster]\nredis = \"rediss://127.0.0.1:{}/\"\nchannel = \"tls\"\n",
            redis.port
        ),
    )
    .expect("write config");
    let node = |trusted: &std::path::Path| {
        let mut command = Daemon::command(&config);
        command.env("NO_COLOR", "1").env("SSL_CERT_FILE", trusted);
        Daemon::start_with(command)
    };
    let (mut a, mut b) = (node(&cert), node(&cert));
    let (at_a, at_b) = (a.ws_address(), b.ws_address());
    for daemon in [&mut a, &mut b] {
        daemon.wait_for_line("connected to redis");
    }
    let mut from_a = Client::connect(&format!("ws://{at_a}/")).await;
    let mut on_b = Client::connect(&format!("ws://{at_b}/")).await;
    from_a.publish(r#""over tls""#, "{}").await;
    assert_eq!(on_b.recv().await, "\"over tls\"");

    // Trusting another certificate only, a node refuses this Redis and stays local.
    let other = directory.path().join("other.pem");
    let other_certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("a certificate");
    std::fs::write(&other, other_certified.cert.pem()).expect("write other cert");
    let mut untrusting = node(&other);
    let at_untrusting = untrusting.ws_address();
    let line = untrusting.wait_for_line("redis unreachable");
    assert!(line.contains("invalid peer certificate"), "{line}");
    let mut from_local = Client::connect(&format!("ws://{at_untrusting}/")).await;
    let mut on_local = Client::connect(&format!("ws://{at_untrusting}/")).await;
    from_local.publish(r#""local only""#, "{}").await;
    assert_eq!(on_local.recv().await, "\"local only\"");
}

// --- recovery after a reconnect with the history in Redis (SPEC §10) --------------------------

const HISTORY: &str = "[history]\nsize = 1000\n";

#[tokio::test]
#[ignore = "needs redis-server"]
async fn with_history_a_client_recovers_on_node_b_what_nodes_a_and_b_accepted() {
    require_redis();
    let redis = Redis::start().await;
    let (a, b) = (
        node(&redis, "recover", HISTORY).await,
        node(&redis, "recover", HISTORY).await,
    );
    wait_connected(&[&a, &b], true).await;
    let mut plain_on_b = b.connect(r#"{"room":"a"}"#).await;
    let mut on_a = common::connect_since(&a, r#"{"room":"a"}"#, "").await;
    let first = common::http_publish(&a, r#"{"message":"1","tags":{"room":"a"}}"#).await;
    let received = common::frame(&on_a.recv().await);
    assert_eq!(common::message(&received), "1");
    assert_eq!(common::id(&received), first["id"].as_str().expect("an id"));
    assert_eq!(first["delivered"], 1, "{first}"); // node A's clients only
    common::disconnect(&a, on_a).await;

    // Accepted by either node while the client was away; ids are the cluster's.
    let second = common::http_publish(&a, r#"{"message":"2 via A","tags":{"room":"a"}}"#).await;
    let third = common::http_publish(&b, r#"{"message":"3 via B","tags":{"room":"a"}}"#).await;
    common::http_publish(&b, r#"{"message":"not for a","tags":{"room":"b"}}"#).await;
    assert_eq!(third["delivered"], 1, "{third}"); // plain_on_b
    let mut on_b = common::connect_since(&b, r#"{"room":"a"}"#, &common::id(&received)).await;
    common::http_publish(&a, r#"{"message":"4 live via A"}"#).await;
    let mut frames = Vec::new();
    for _ in 0..3 {
        frames.push(common::frame(&on_b.recv().await));
    }
    assert_eq!(
        frames.iter().map(common::message).collect::<Vec<_>>(),
        ["2 via A", "3 via B", "4 live via A"]
    );
    assert_eq!(
        common::id(&frames[0]),
        second["id"].as_str().expect("an id")
    );
    assert_eq!(common::id(&frames[1]), third["id"].as_str().expect("an id"));
    // Plain connections keep bare frames.
    for expected in ["\"1\"", "\"2 via A\"", "\"3 via B\"", "\"4 live via A\""] {
        assert_eq!(plain_on_b.recv().await, expected);
    }

    // A node started later recovers from what Redis kept.
    let c = node(&redis, "recover", HISTORY).await;
    wait_connected(&[&c], true).await;
    let mut on_c = common::connect_since(&c, r#"{"room":"a"}"#, &common::id(&frames[0])).await;
    common::http_publish(&c, r#"{"message":"5 via C","tags":{"room":"a"}}"#).await;
    for expected in ["3 via B", "4 live via A", "5 via C"] {
        assert_eq!(
            common::message(&common::frame(&on_c.recv().await)),
            expected
        );
    }
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn with_history_redis_stopped_and_started_during_a_stream_loses_nothing_silently() {
    const MESSAGES: usize = 600;
    require_redis();
    let mut redis = Redis::start().await;
    let (a, b) = (
        node(&redis, "outage", HISTORY).await,
        node(&redis, "outage", HISTORY).await,
    );
    wait_connected(&[&a, &b], true).await;
    let mut local_on_a = a.connect(r#"{"role":"watcher"}"#).await;
    let mut on_b = common::connect_since(&b, "{}", "").await;
    let mut publisher = a.connect(r#"{"role":"backend"}"#).await;
    let stream = tokio::spawn(async move {
        for n in 0..MESSAGES {
            publisher.publish(&format!("\"{n}\""), "{}").await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        publisher
    });
    // Every frame on B: each number at most once and in order; a number missing only where a
    // gap was announced.
    let mut numbers: Vec<usize> = Vec::new();
    let mut gaps = 0;
    let mut holes_announced = true;
    let mut next = async |gaps: &mut usize, numbers: &mut Vec<usize>, holes: &mut bool| {
        let mut gap_before = false;
        loop {
            match common::frame(&on_b.recv().await) {
                common::Frame::Gap => {
                    *gaps += 1;
                    gap_before = true;
                }
                frame => {
                    let number: usize = common::message(&frame).parse().expect("a number");
                    if let Some(&last) = numbers.last() {
                        assert!(
                            number > last,
                            "{number} after {last}: out of order or twice"
                        );
                        if number != last + 1 && !gap_before {
                            *holes = false;
                        }
                    }
                    numbers.push(number);
                    return;
                }
            }
        }
    };
    while numbers.len() < 100 {
        next(&mut gaps, &mut numbers, &mut holes_announced).await;
    }
    redis.stop();
    wait_connected(&[&a, &b], false).await;
    // Node A keeps serving its own clients.
    let seen = until_number_at_least(&mut local_on_a, 0).await;
    until_number_at_least(&mut local_on_a, seen + 20).await;
    // A recovery on B now cannot be vouched for.
    let mut recovering = common::connect_since(&b, "{}", "1-0").await;
    assert_eq!(common::frame(&recovering.recv().await), common::Frame::Gap);
    assert!(redis.restart().await, "redis-server restarted");
    wait_connected(&[&a, &b], true).await;
    while numbers.last() != Some(&(MESSAGES - 1)) {
        next(&mut gaps, &mut numbers, &mut holes_announced).await;
    }
    let _publisher = stream.await.expect("the publisher");
    assert!(
        holes_announced,
        "messages went missing without a gap: {numbers:?}"
    );
    assert!(gaps >= 1, "the outage was not announced");
    assert!(numbers.len() > 200, "{numbers:?}");
}

/// Reads bare numbered messages until one is at least `at_least`; returns it.
async fn until_number_at_least(client: &mut Client, at_least: usize) -> usize {
    loop {
        let text = client.recv().await;
        if let Ok(number) = text.trim_matches('"').parse::<usize>()
            && number >= at_least
        {
            return number;
        }
    }
}
