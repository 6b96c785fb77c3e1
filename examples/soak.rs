//! Soak test: runs a tagcast daemon (a release build) for a while under steady publishing and
//! connection churn, and reports its memory (VmRSS) and open file descriptors at the start, the
//! middle and the end, and the deliveries lost to clients that stayed connected (must be 0).
//!
//! `cargo run --release --example soak -- TAGCAST_BINARY [SECONDS]` (default 600). It starts the
//! daemon on a free port of 127.0.0.1, then:
//! - 50 steady clients stay connected the whole time and must receive every message, in order;
//! - a publisher sends 200 messages per second to them;
//! - 20 churn workers connect with the same tags, check that the 5 messages they receive are
//!   consecutive, and disconnect (cleanly or by dropping the socket), over and over.
//!
//! Exits 1 when a delivery was lost or the daemon died.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

type Error = Box<dyn std::error::Error + Send + Sync>;

const STEADY: usize = 50;
const CHURN_WORKERS: usize = 20;
const PER_SECOND: u64 = 200;
const TAGS: &str = r#"{"soak":"1"}"#;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (binary, seconds) = match args.as_slice() {
        [binary] => (binary.clone(), 600),
        [binary, seconds] => (binary.clone(), seconds.parse()?),
        _ => return Err("usage: soak TAGCAST_BINARY [SECONDS]".into()),
    };
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let directory = std::env::temp_dir().join(format!("tagcast-soak-{}", std::process::id()));
    std::fs::create_dir_all(&directory)?;
    let config = directory.join("tagcast.toml");
    std::fs::write(
        &config,
        format!("[server]\naddress = \"127.0.0.1\"\nport = {port}\n[log]\nlevel = \"warn\"\n"),
    )?;
    let mut daemon = Daemon(
        Command::new(&binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .spawn()?,
    );
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let url = format!(
        "ws://{address}/?tags={}",
        form_urlencoded::byte_serialize(TAGS.as_bytes()).collect::<String>()
    );
    let started = Instant::now();
    while tokio::net::TcpStream::connect(address).await.is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err("the daemon did not start listening".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = daemon.0.id();

    let stop = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(AtomicU64::new(0));
    let churned = Arc::new(AtomicU64::new(0));
    let mut steady = Vec::new();
    for _ in 0..STEADY {
        let (socket, _) = tokio_tungstenite::connect_async(&url).await?;
        steady.push(socket);
    }
    let (publisher, _) = tokio_tungstenite::connect_async(format!("ws://{address}/")).await?;
    let sent = Arc::new(AtomicU64::new(0));
    let publishing = tokio::spawn(publish(publisher, sent.clone(), stop.clone()));
    let receivers: Vec<_> = steady
        .into_iter()
        .map(|socket| tokio::spawn(receive_all(socket, sent.clone(), stop.clone())))
        .collect();
    let churners: Vec<_> = (0..CHURN_WORKERS)
        .map(|worker| {
            let (url, stop, lost, churned) =
                (url.clone(), stop.clone(), lost.clone(), churned.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Spread over 127.0.0.2-41: sockets in TIME_WAIT hold ephemeral ports.
                    let source = 2 + (n % 40) as u8;
                    match churn_once(&url, address, source, n.is_multiple_of(2)).await {
                        Ok(true) => {}
                        Ok(false) => {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => eprintln!("churn worker {worker}: {error}"),
                    }
                    churned.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();

    let total = Duration::from_secs(seconds);
    // Warm up for a tenth of the run (at most 30 s) before the first sample.
    tokio::time::sleep((total / 10).min(Duration::from_secs(30))).await;
    let run = Instant::now();
    report("start", pid, &sent, &churned)?;
    tokio::time::sleep(total / 2).await;
    report("middle", pid, &sent, &churned)?;
    tokio::time::sleep(total.saturating_sub(run.elapsed())).await;
    report("end", pid, &sent, &churned)?;

    stop.store(true, Ordering::Relaxed);
    publishing.await??;
    // Churn connections wait for messages that no longer come: stop them where they are.
    for churner in &churners {
        churner.abort();
    }
    let mut steady_lost = 0;
    for receiver in receivers {
        steady_lost += receiver.await??;
    }
    let churn_gaps = lost.load(Ordering::Relaxed);
    println!(
        "sent {} messages to {STEADY} steady clients; {} churn connections; \
         lost deliveries: steady {steady_lost}, churn gaps {churn_gaps}",
        sent.load(Ordering::Relaxed),
        churned.load(Ordering::Relaxed)
    );
    if let Some(status) = daemon.0.try_wait()? {
        return Err(format!("the daemon exited during the soak: {status}").into());
    }
    drop(daemon);
    let _ = std::fs::remove_dir_all(&directory);
    if steady_lost + churn_gaps > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Kills the daemon however the soak ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Publishes numbered messages at [`PER_SECOND`] until `stop`; `sent` counts them.
async fn publish(
    mut socket: Socket,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<(), Error> {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / PER_SECOND));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let number = sent.load(Ordering::Relaxed);
        let request = format!(r#"{{"message":"{number}","tags":{TAGS}}}"#);
        socket.send(Message::text(request)).await?;
        sent.fetch_add(1, Ordering::Relaxed);
    }
    socket.close(None).await?;
    Ok(())
}

/// The number a message carries.
fn number(message: &Message) -> Option<u64> {
    match message {
        Message::Text(text) => text.trim_matches('"').parse().ok(),
        _ => None,
    }
}

/// Receives until `stop` and everything sent arrived; returns how many messages were missed.
async fn receive_all(
    mut socket: Socket,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<u64, Error> {
    let mut expected: Option<u64> = None;
    let mut missed = 0;
    loop {
        let done = stop.load(Ordering::Relaxed);
        if done && expected == Some(sent.load(Ordering::Relaxed)) {
            return Ok(missed);
        }
        let wait = if done {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(60)
        };
        let Ok(Some(message)) = timeout(wait, socket.next()).await else {
            // Nothing more arrives: whatever is still missing is lost.
            return Ok(missed + sent.load(Ordering::Relaxed) - expected.unwrap_or(0));
        };
        let Some(number) = number(&message?) else {
            continue;
        };
        let first = *expected.get_or_insert(number);
        if number != first {
            missed += number.saturating_sub(first);
        }
        expected = Some(number + 1);
    }
}

/// One churn connection: receives 5 consecutive messages, then leaves. False on a gap.
async fn churn_once(
    url: &str,
    address: SocketAddr,
    source: u8,
    clean_close: bool,
) -> Result<bool, Error> {
    let tcp = tokio::net::TcpSocket::new_v4()?;
    tcp.bind(SocketAddr::from(([127, 0, 0, source], 0)))?;
    let stream = tcp.connect(address).await?;
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut socket, _) = tokio_tungstenite::client_async(url, stream).await?;
    let mut previous = None;
    let mut received = 0;
    while received < 5 {
        let Ok(Some(message)) = timeout(Duration::from_secs(10), socket.next()).await else {
            return Err("no message for 10 s".into());
        };
        let Some(number) = number(&message?) else {
            continue;
        };
        if previous.is_some_and(|previous| number != previous + 1) {
            return Ok(false);
        }
        previous = Some(number);
        received += 1;
    }
    if clean_close {
        socket.close(None).await?;
    }
    Ok(true)
}

/// Prints the daemon's resident memory and open file descriptors.
fn report(when: &str, pid: u32, sent: &AtomicU64, churned: &AtomicU64) -> Result<(), Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .map(str::trim)
        .unwrap_or("?");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    println!(
        "{when}: rss {rss}, open fds {fds}, sent {}, churn connections {}",
        sent.load(Ordering::Relaxed),
        churned.load(Ordering::Relaxed)
    );
    Ok(())
}
