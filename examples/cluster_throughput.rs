//! Deliveries per second through one node, the same node publishing to Redis, and two nodes
//! sharing one Redis: is cross-node publishing the bottleneck of a node?
//!
//! Needs `redis-server` (it starts its own on a free port, without persistence). Everything runs
//! on 127.0.0.1 in this process and is bounded: SUBSCRIBERS clients (spread over the nodes) each
//! wait for MESSAGES messages sent as fast as possible by one publisher on the first node.
//!
//! ```text
//! cargo run --release --example cluster_throughput -- [SUBSCRIBERS [MESSAGES]]
//! ```

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tagcast::net::server::Server;
use tagcast::ops::config::Config;
use tokio_tungstenite::tungstenite::Message;

/// How long any step may take before the measurement gives up.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let mut args = std::env::args().skip(1).map(|arg| {
        arg.parse::<usize>()
            .unwrap_or_else(|_| panic!("{arg:?} is not a count"))
    });
    let subscribers = args.next().unwrap_or(100).clamp(1, 10_000);
    let messages = args.next().unwrap_or(2_000).clamp(1, 1_000_000);
    let port = StdListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let directory = std::env::temp_dir();
    let mut redis = RedisServer(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&directory)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)"),
    );
    let redis_url = format!("redis://127.0.0.1:{port}/");
    println!("{subscribers} subscribers, {messages} messages each, one publisher on node 1");
    for (name, nodes, clustered) in [
        ("1 node, no redis", 1, false),
        ("1 node + redis", 1, true),
        ("2 nodes + redis", 2, true),
    ] {
        let cluster = match clustered {
            true => format!("[cluster]\nredis = \"{redis_url}\"\nchannel = \"bench{nodes}\"\n"),
            false => String::new(),
        };
        let rate = measure(nodes, &cluster, subscribers, messages).await;
        println!("{name:>18}: {rate:>10.0} deliveries/s");
    }
    let _ = redis.0.kill();
}

/// Kills redis-server when the measurement ends, however it ends.
struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Deliveries per second with `nodes` nodes.
async fn measure(nodes: usize, cluster: &str, subscribers: usize, messages: usize) -> f64 {
    let toml = format!(
        "[server]\naddress = \"127.0.0.1\"\nport = 0\n[limits]\nsend_queue_bytes = {}\n{cluster}",
        (messages + 16) * 1024
    );
    let mut running = Vec::new();
    for _ in 0..nodes {
        let config = Config::parse(&toml, None).expect("config");
        let server = Server::new(config).expect("server");
        let listeners = server.bind().await.expect("bind");
        let address = listeners.plain_address().expect("ws listener");
        let shared = server.shared();
        tokio::spawn(server.run(listeners));
        running.push((address, shared));
    }
    for (_, shared) in &running {
        wait_for(|| shared.cluster.as_ref().is_none_or(|c| c.connected())).await;
    }
    let (done, mut finished) = tokio::sync::mpsc::channel(subscribers);
    for subscriber in 0..subscribers {
        let (address, _) = &running[subscriber % nodes];
        let url = format!("ws://{address}/?tags=%7B%22room%22%3A%221%22%7D");
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("subscribe");
        let done = done.clone();
        tokio::spawn(async move {
            let mut received = 0;
            while received < messages {
                match socket.next().await {
                    Some(Ok(Message::Text(_))) => received += 1,
                    Some(Ok(_)) => {}
                    other => panic!("subscriber lost: {other:?}"),
                }
            }
            let _ = done.send(Instant::now()).await;
        });
    }
    for (index, (_, shared)) in running.iter().enumerate() {
        let expected = subscribers / nodes + usize::from(index < subscribers % nodes);
        wait_for(|| shared.router.hub().len() == expected).await;
    }
    let (mut publisher, _) = tokio_tungstenite::connect_async(format!("ws://{}/", running[0].0))
        .await
        .expect("publisher");
    let start = Instant::now();
    for number in 0..messages {
        let request = format!(r#"{{"message":"m{number}","tags":{{"room":"1"}},"metadata":{{}}}}"#);
        publisher
            .feed(Message::text(request))
            .await
            .expect("publish");
    }
    publisher.flush().await.expect("publish");
    let mut last = start;
    for _ in 0..subscribers {
        let Ok(finish) = tokio::time::timeout(WAIT, finished.recv()).await else {
            let dropped: Vec<_> = running
                .iter()
                .filter_map(|(_, shared)| shared.cluster.as_ref())
                .map(|cluster| (cluster.connected(), cluster.dropped()))
                .collect();
            panic!(
                "not every subscriber got every message; (connected, dropped) per node: {dropped:?}"
            );
        };
        last = last.max(finish.expect("a finish time"));
    }
    for (_, shared) in &running {
        shared.shutdown.cancel();
    }
    (subscribers * messages) as f64 / last.duration_since(start).as_secs_f64()
}

async fn wait_for(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
