//! `tagcast-bench` (what `tagcast bench` runs): a load tool for any server speaking the tagcast
//! protocol, like `redis-benchmark` for Redis. A binary of its own, beside the daemon's: it
//! shares only the frame encoding ([`tagcast::wire::frame`]) and the `--ca`/`--insecure`
//! options ([`tagcast::ops::trust`]) with it. It connects subscribers with tags, publishes timestamped
//! messages, and reports deliveries per second, loss, latency and — given the server's pid —
//! the server's CPU time per million deliveries and its memory.
//!
//! # Layout
//! - [`plan`]: the scenarios and their schedule, drawn up front, the same in every process.
//! - [`client`]: a lean WebSocket client (raw TCP or TLS, minimal framing).
//! - [`subscribers`]: subscriber tasks and the [`Board`](subscribers::Board) they post to.
//! - [`publishers`]: the publisher thread: warm-up, window, fixed rate.
//! - [`workers`]: child processes, past one process's file-descriptor limit.
//! - [`histogram`]: latency histograms.
//! - [`probe`]: CPU time and memory of a process, from `/proc`.

mod client;
mod histogram;
mod plan;
mod probe;
mod publishers;
mod subscribers;
mod workers;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use serde_json::json;
use tagcast::ops::trust::TlsTrust;
use tokio_util::sync::CancellationToken;

use client::{ClientError, Compression, Target};
use histogram::Histogram;
use plan::{Content, Plan, Scenario, Settings};
use probe::{ProbeError, Sample};
use subscribers::{Board, Subscribers};
use workers::{Outcome, Workers};

/// Measure a server speaking this protocol: deliveries/s, loss, latency, CPU, memory.
#[derive(Parser)]
#[command(name = "tagcast-bench", version)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
    /// Print this command's man page (roff) and exit: `tagcast generate` installs it as
    /// tagcast-bench(1).
    #[arg(long, hide = true)]
    man_page: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.man_page {
        let mut page = std::io::stdout().lock();
        return match clap_mangen::Man::new(Cli::command()).render(&mut page) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("tagcast: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let outcome = tokio::runtime::Runtime::new()
        .map_err(BenchError::Io)
        .and_then(|runtime| runtime.block_on(run(cli.bench)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The prefix of every tagcast command's errors (`tagcast bench` runs this binary).
            eprintln!("tagcast: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Connections one process opens at most (the hard limit here is 20 000 descriptors).
const CONNECTIONS_PER_PROCESS: usize = 18_000;

/// Why a benchmark could not run or did not pass.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A connection failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server cannot be reached (checked once before any scenario runs).
    #[error("cannot connect to {url}: {error}")]
    Unreachable {
        /// `--url`.
        url: String,
        /// Why (shown in the message, so not also its source).
        error: ClientError,
    },
    /// `--pid` names no readable process.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// Local IO (threads, pipes, child processes) failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The options contradict each other.
    #[error("{0}")]
    Options(String),
    /// A worker process failed.
    #[error("worker: {0}")]
    Worker(String),
    /// Not every subscriber received a warm-up message in time.
    #[error("only {ready} of {units} subscribers (or workers) received the warm-up message")]
    WarmUp {
        /// Ready so far.
        ready: usize,
        /// Needed.
        units: usize,
    },
    /// A scenario lost messages or saw errors (the results were printed).
    #[error("{0} scenario(s) lost messages or saw errors")]
    Failed(usize),
}

/// The sizes of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// 1 000 subscribers in 10 rooms, 20 000 messages.
    Quick,
    /// 10 000 subscribers in 100 rooms, 200 000 messages.
    Full,
}

/// `tagcast bench`: drives a tagcast-protocol server and measures it.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Scenarios to run, in order [default: conns fanout broadcast latency: conns first, on a
    /// server whose memory no earlier scenario has grown]
    #[arg(value_enum)]
    pub scenarios: Vec<Scenario>,
    /// The server, ws://HOST:PORT[/PATH] or wss://...; nothing else is ever connected to.
    #[arg(long, required_unless_present_any = ["worker", "man_page"])]
    pub url: Option<String>,
    /// Sizes: quick = 1 000 subscribers / 10 rooms / 20 000 messages; full = 10 000 / 100 /
    /// 200 000. The options below override single values.
    #[arg(long, value_enum, default_value = "quick")]
    pub profile: Profile,
    /// Subscriber connections (conns: idle connections).
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Rooms (tag values {"room":"rK"}) the subscribers are spread over.
    #[arg(long)]
    pub rooms: Option<usize>,
    /// Messages to publish in fanout; broadcast sends messages/rooms of them, for as many
    /// deliveries.
    #[arg(long)]
    pub messages: Option<usize>,
    /// Publisher connections.
    #[arg(long, default_value_t = 2)]
    pub publishers: usize,
    /// Bytes of each message string (filler content).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// What each message says after its index and stamp: filler = `x` up to --size bytes;
    /// notification = a JSON notification of about 600 bytes (--size is not used).
    #[arg(long, value_enum, default_value = "filler")]
    pub content: Content,
    /// offer = every connection offers permessage-deflate as browsers do (the server decides
    /// whether to compress what it sends); off = plain frames only. Subscribers inflate what
    /// comes compressed; `wire B/d` is the bytes of frame per delivery either way.
    #[arg(long, value_enum, default_value = "offer")]
    pub compression: Compression,
    /// Messages per second in the latency scenario.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Duration of the latency scenario, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Most messages each publisher keeps unfinished per room (sent, not yet received by every
    /// subscriber of the room): no server queue holds more than publishers × window frames.
    /// 0: unpaced, publishers send as fast as their sockets take frames (a burst, as real
    /// publishers do), and the server's queues hold what the subscribers have not read yet.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// The server's process id: report its CPU time per million deliveries and its memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Child processes running the subscribers [default: 1 process up to 18 000 connections,
    /// then one child per 18 000].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Source addresses 127.0.0.1..=127.0.0.K to spread connections over (server on
    /// 127.0.0.0/8 only).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub sources: u8,
    /// How to trust the server's certificate (`--ca`, `--insecure`).
    #[command(flatten)]
    pub trust: TlsTrust,
    /// Give up after this many seconds without a delivery.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// With --pid: seconds to wait once the subscribers closed, then sample the server's
    /// memory again (`rss_settled_kib`: does it hand back what a burst took?).
    #[arg(long, default_value_t = 0.0)]
    pub settle: f64,
    /// Seed of the rooms messages go to.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Internal: run as a worker process, reading its job on stdin.
    #[arg(long, hide = true)]
    pub worker: bool,
}

impl BenchArgs {
    fn settings(&self, url: &str, scenario: Scenario) -> Settings {
        let (subscribers, rooms, messages) = match self.profile {
            Profile::Quick => (1_000, 10, 20_000),
            Profile::Full => (10_000, 100, 200_000),
        };
        let rooms = self.rooms.unwrap_or(rooms).max(1);
        let messages = self.messages.unwrap_or(messages);
        let messages = match scenario {
            Scenario::Fanout => messages,
            // As many deliveries as fanout: every message reaches every subscriber.
            Scenario::Broadcast => messages.div_ceil(rooms),
            Scenario::Latency => (f64::from(self.rate) * self.seconds).round() as usize,
            Scenario::Conns => 0,
        };
        Settings {
            url: url.to_owned(),
            scenario,
            subscribers: self.subscribers.unwrap_or(subscribers),
            rooms: match scenario {
                Scenario::Broadcast => 1,
                _ => rooms,
            },
            publishers: self.publishers.max(1),
            messages,
            size: self.size,
            content: self.content,
            compression: self.compression,
            rate: self.rate,
            window: self.window,
            seed: self.seed,
            sources: self.sources,
            ca: self.trust.ca.clone(),
            insecure: self.trust.insecure,
            timeout_s: self.timeout,
            settle_s: self.settle,
        }
    }
}

fn trust(settings: &Settings) -> TlsTrust {
    TlsTrust {
        ca: settings.ca.clone(),
        insecure: settings.insecure,
    }
}

/// Runs the benchmark: every scenario asked for, a table row each, then one JSON line each.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    if args.worker {
        return workers::serve().await;
    }
    let url = args.url.clone().unwrap_or_default();
    let scenarios = match args.scenarios.is_empty() {
        true => vec![
            Scenario::Conns,
            Scenario::Fanout,
            Scenario::Broadcast,
            Scenario::Latency,
        ],
        false => args.scenarios.clone(),
    };
    check_reachable(&url, &args.trust).await?;
    let mut stdout = std::io::stdout();
    let mut lines = Vec::new();
    let mut failed = 0;
    let _ = writeln!(stdout, "{}", table_header());
    for scenario in scenarios {
        let settings = args.settings(&url, scenario);
        let workers = args.workers.unwrap_or(
            (settings.subscribers + settings.publishers).div_ceil(CONNECTIONS_PER_PROCESS),
        );
        if workers == 0 && settings.subscribers > 0 {
            return Err(BenchError::Options("--workers must be at least 1".into()));
        }
        match run_scenario(settings, workers.max(1), args.pid).await {
            Ok(report) => {
                let _ = writeln!(stdout, "{}", report.row());
                if !report.passed() {
                    failed += 1;
                }
                lines.push(report.json());
            }
            Err(error) => {
                for line in &lines {
                    let _ = writeln!(stdout, "{line}");
                }
                return Err(error);
            }
        }
    }
    for line in &lines {
        let _ = writeln!(stdout, "{line}");
    }
    match failed {
        0 => Ok(()),
        failed => Err(BenchError::Failed(failed)),
    }
}

/// Opens and drops one connection to `url`, so that a wrong URL or a stopped server is named
/// before any table is printed.
async fn check_reachable(url: &str, trust: &TlsTrust) -> Result<(), BenchError> {
    let unreachable = |error| BenchError::Unreachable {
        url: url.to_owned(),
        error,
    };
    let target = Target::new(url, trust, 1).await.map_err(unreachable)?;
    target.connect(0, None).await.map_err(unreachable)?;
    Ok(())
}

/// Where the subscribers run.
enum Receivers {
    Here(Subscribers),
    Children(Workers),
}

/// What one scenario measured.
struct Report {
    settings: Settings,
    workers: usize,
    pid: Option<u32>,
    expected: u64,
    received: u64,
    /// Bytes of the frames that carried the messages received.
    wire_bytes: u64,
    first_send_ns: u64,
    last_receipt_ns: u64,
    latencies: Histogram,
    /// Latencies to arrival (the latency scenario over ws).
    arrivals: Histogram,
    /// How late the publishers sent (the latency scenario).
    send_lag: Histogram,
    errors: (Vec<String>, usize),
    connect_seconds: f64,
    server_start: Option<Sample>,
    server_before: Option<Sample>,
    server_after: Option<Sample>,
    /// `--settle` seconds after the subscribers closed.
    server_settled: Option<Sample>,
    tool_cpu_s: f64,
}

async fn run_scenario(
    settings: Settings,
    workers: usize,
    pid: Option<u32>,
) -> Result<Report, BenchError> {
    let name = settings.scenario.name();
    // The peak reported is this scenario's (where the kernel allows starting it over).
    if let Some(pid) = pid {
        probe::reset_peak(pid);
    }
    let server_start = pid.map(|pid| probe::sample(Some(pid))).transpose()?;
    let tool_start = probe::sample(None)?.cpu_seconds;
    let target = Target::new(&settings.url, &trust(&settings), settings.sources).await?;
    let target = Arc::new(target.with_compression(settings.compression));
    let plan = Arc::new(Plan::new(settings.clone()));
    let connect_started = Instant::now();
    let (board, receivers) = if workers <= 1 {
        let board = Arc::new(Board::for_subscribers(&plan, 0..settings.subscribers));
        let subscribers = Subscribers::connect(
            plan.clone(),
            target.clone(),
            0..settings.subscribers,
            board.clone(),
        )
        .await?;
        (board, Receivers::Here(subscribers))
    } else {
        let board = Arc::new(Board::for_workers(&plan, workers));
        let children = Workers::spawn(&settings, workers, board.clone()).await?;
        (board, Receivers::Children(children))
    };
    let stop = CancellationToken::new();
    // Releases the publisher thread however this function returns.
    let stop_publishers = stop.clone().drop_guard();
    let mut sent = publishers::start(plan.clone(), target, board.clone(), pid, stop);
    let expected = plan.expected_total();
    let units = if workers <= 1 {
        "subscribers"
    } else {
        "workers"
    };
    let mut progress = Progress::new(name, units, expected);
    let mut sent_result = None;
    let mut connect_seconds = connect_started.elapsed().as_secs_f64();
    let mut last_change = (0, Instant::now());
    let timeout = Duration::from_secs_f64(settings.timeout_s.max(0.1));
    let outcome = loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if sent_result.is_none() {
            match sent.try_recv() {
                Ok(result) => match result {
                    Ok(done) => sent_result = Some(done),
                    Err(error) => break Err(error),
                },
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    break Err(BenchError::Worker("the publisher thread died".into()));
                }
            }
        }
        if !board.all_connected() {
            connect_seconds = connect_started.elapsed().as_secs_f64();
        }
        if !board.all_ready() {
            last_change.1 = Instant::now(); // the stall timeout starts with the measurement
        }
        let received = board.received();
        progress.show(received, &board);
        if received != last_change.0 {
            last_change = (received, Instant::now());
        }
        if board.failed() || (sent_result.is_some() && received >= expected) {
            break Ok(());
        }
        if last_change.1.elapsed() > timeout {
            break Ok(()); // stalled: the loss is reported
        }
    };
    let server_after = pid.map(|pid| probe::sample(Some(pid))).transpose()?;
    progress.clear();
    drop(stop_publishers);
    let mut outcomes = match receivers {
        Receivers::Here(subscribers) => {
            subscribers.close();
            vec![Outcome::from_board(&board, 0.0)]
        }
        Receivers::Children(children) => children.finish().await?,
    };
    outcome?;
    let tool_cpu_s = probe::sample(None)?.cpu_seconds - tool_start;
    let server_settled = match pid {
        Some(pid) if settings.settle_s > 0.0 => {
            tokio::time::sleep(Duration::from_secs_f64(settings.settle_s)).await;
            Some(probe::sample(Some(pid))?)
        }
        _ => None,
    };
    let first_send_ns = sent_result.as_ref().map_or(0, |sent| sent.first_send_ns);
    let (send_lag, server_before) = sent_result
        .map(|sent| (sent.send_lag, sent.server_before))
        .unwrap_or_default();
    let mut report = Report {
        workers,
        pid,
        expected,
        received: 0,
        wire_bytes: 0,
        first_send_ns,
        last_receipt_ns: 0,
        latencies: Histogram::default(),
        arrivals: Histogram::default(),
        // Here the board's errors are the outcome's; with workers, only its failures are new.
        errors: match workers {
            0 | 1 => (Vec::new(), 0),
            _ => board.errors(),
        },
        connect_seconds,
        server_start,
        send_lag,
        server_before,
        server_after,
        server_settled,
        tool_cpu_s,
        settings,
    };
    for outcome in outcomes.drain(..) {
        report.received += outcome.received;
        report.wire_bytes += outcome.wire_bytes;
        report.tool_cpu_s += outcome.cpu_s;
        if let Some((_, last)) = outcome.receipts {
            report.last_receipt_ns = report.last_receipt_ns.max(last);
        }
        report
            .latencies
            .merge(&Histogram::from_sparse(&outcome.latencies));
        report
            .arrivals
            .merge(&Histogram::from_sparse(&outcome.arrivals));
        report.errors.0.extend(outcome.errors.0);
        report.errors.1 += outcome.errors.1;
    }
    report.errors.0.truncate(5);
    Ok(report)
}

fn table_header() -> String {
    format!(
        "{:<9} {:>6} {:>5} {:>7} {:>5} {:>8} {:>10} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8}",
        "scenario",
        "subs",
        "rooms",
        "msgs",
        "size",
        "wire B/d",
        "deliv/s",
        "loss",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "srv s/M",
        "srv MiB",
        "tool s/M",
        "arr p99"
    )
}

impl Report {
    fn passed(&self) -> bool {
        self.received == self.expected && self.errors.1 == 0
    }

    fn seconds(&self) -> f64 {
        self.last_receipt_ns.saturating_sub(self.first_send_ns) as f64 / 1e9
    }

    fn rate(&self) -> f64 {
        match self.seconds() {
            seconds if seconds > 0.0 => self.received as f64 / seconds,
            _ => 0.0,
        }
    }

    /// Frame bytes per delivery, as they came on the wire (compressed or not).
    fn wire_bytes_per_delivery(&self) -> Option<f64> {
        (self.received > 0).then(|| self.wire_bytes as f64 / self.received as f64)
    }

    fn server_cpu_per_million(&self) -> Option<f64> {
        let (before, after) = (self.server_before?, self.server_after?);
        (self.received > 0)
            .then(|| (after.cpu_seconds - before.cpu_seconds) / (self.received as f64 / 1e6))
    }

    /// The server's write calls from the first send to the last receipt, and deliveries per
    /// call: how many frames it wrote at once, on average (its CPU per delivery falls as that
    /// rises).
    fn server_writes(&self) -> Option<(u64, f64)> {
        let (before, after) = (self.server_before?, self.server_after?);
        let calls = after.write_calls? - before.write_calls?;
        Some((calls, self.received as f64 / calls.max(1) as f64))
    }

    fn tool_cpu_per_million(&self) -> Option<f64> {
        (self.received > 0).then(|| self.tool_cpu_s / (self.received as f64 / 1e6))
    }

    /// RSS growth per connection, KiB (conns).
    fn rss_per_connection(&self) -> Option<f64> {
        let (start, after) = (self.server_start?, self.server_after?);
        let connections = self.settings.subscribers + self.settings.publishers;
        (connections > 0)
            .then(|| (after.rss_kib as f64 - start.rss_kib as f64) / connections as f64)
    }

    fn latency_ms(&self, quantile: f64) -> f64 {
        ms(self.latencies.quantile(quantile))
    }

    fn row(&self) -> String {
        let settings = &self.settings;
        let optional = |value: Option<f64>, precision: usize| {
            value.map_or("-".to_owned(), |value| format!("{value:.precision$}"))
        };
        let rss_mib = self
            .server_after
            .map(|sample| sample.rss_kib as f64 / 1024.0);
        if settings.scenario == Scenario::Conns {
            return format!(
                "{:<9} {:>6} {:>5} {:>7} {:>5} connected in {:.2} s; server RSS {} MiB, {} KiB per connection",
                "conns",
                settings.subscribers,
                settings.rooms,
                "-",
                "-",
                self.connect_seconds,
                optional(rss_mib, 1),
                optional(self.rss_per_connection(), 2)
            );
        }
        format!(
            "{:<9} {:>6} {:>5} {:>7} {:>5} {:>8} {:>10.0} {:>6} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>9} {:>9} {:>9} {:>8}",
            settings.scenario.name(),
            settings.subscribers,
            settings.rooms,
            settings.messages,
            match settings.content {
                Content::Filler => settings.size.to_string(),
                Content::Notification => "notif".to_owned(),
            },
            optional(self.wire_bytes_per_delivery(), 1),
            self.rate(),
            self.expected as i64 - self.received as i64,
            self.latency_ms(0.5),
            self.latency_ms(0.99),
            self.latency_ms(0.999),
            ms(self.latencies.max()),
            optional(self.server_cpu_per_million(), 3),
            optional(rss_mib, 1),
            optional(self.tool_cpu_per_million(), 3),
            optional(
                (!self.arrivals.is_empty()).then(|| ms(self.arrivals.quantile(0.99))),
                3
            ),
        )
    }

    fn json(&self) -> String {
        let settings = &self.settings;
        let server = self.pid.map(|pid| {
            json!({
                "pid": pid,
                "cpu_s": match (self.server_before, self.server_after) {
                    (Some(before), Some(after)) => Some(after.cpu_seconds - before.cpu_seconds),
                    _ => None,
                },
                "cpu_s_per_million": self.server_cpu_per_million(),
                "write_calls": self.server_writes().map(|(calls, _)| calls),
                "deliveries_per_write_call": self.server_writes().map(|(_, per_call)| per_call),
                "rss_kib": self.server_after.map(|sample| sample.rss_kib),
                "rss_peak_kib": self.server_after.map(|sample| sample.peak_rss_kib),
                "rss_settled_kib": self.server_settled.map(|sample| sample.rss_kib),
                "rss_start_kib": self.server_start.map(|sample| sample.rss_kib),
                "rss_per_connection_kib": match settings.scenario {
                    Scenario::Conns => self.rss_per_connection(),
                    _ => None,
                },
            })
        });
        json!({
            "scenario": settings.scenario.name(),
            "url": settings.url,
            "subscribers": settings.subscribers,
            "rooms": settings.rooms,
            "publishers": settings.publishers,
            "messages": settings.messages,
            "size": settings.size,
            "content": settings.content.name(),
            "compression": settings.compression.name(),
            "wire_bytes": self.wire_bytes,
            "wire_bytes_per_delivery": self.wire_bytes_per_delivery(),
            "rate": (settings.scenario == Scenario::Latency).then_some(settings.rate),
            "window": settings.window,
            "workers": self.workers,
            "connect_s": self.connect_seconds,
            "expected": self.expected,
            "received": self.received,
            "loss": self.expected as i64 - self.received as i64,
            "seconds": self.seconds(),
            "deliveries_per_s": self.rate(),
            "latency_ms": summary_ms(&self.latencies),
            "arrival_ms": (!self.arrivals.is_empty()).then(|| summary_ms(&self.arrivals)),
            "send_lag_ms": (!self.send_lag.is_empty()).then(|| summary_ms(&self.send_lag)),
            "server": server,
            "tool_cpu_s": self.tool_cpu_s,
            "errors": self.errors.1,
            "first_errors": self.errors.0,
        })
        .to_string()
    }
}

/// Nanoseconds as milliseconds.
fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// How many values `histogram` (ns) holds, and their p50, p99, p99.9 and max in ms.
fn summary_ms(histogram: &Histogram) -> serde_json::Value {
    json!({
        "count": histogram.len(),
        "p50": ms(histogram.quantile(0.5)),
        "p99": ms(histogram.quantile(0.99)),
        "p99_9": ms(histogram.quantile(0.999)),
        "max": ms(histogram.max()),
    })
}

/// The progress line on stderr: rewritten in place on a terminal, every 2 s otherwise.
struct Progress {
    name: &'static str,
    /// What the board's units are: subscribers, or worker processes.
    units: &'static str,
    expected: u64,
    terminal: bool,
    started: Instant,
    last_shown: Instant,
    last_received: u64,
}

impl Progress {
    fn new(name: &'static str, units: &'static str, expected: u64) -> Progress {
        let now = Instant::now();
        Progress {
            name,
            units,
            expected,
            terminal: std::io::stderr().is_terminal(),
            started: now,
            last_shown: now,
            last_received: 0,
        }
    }

    fn show(&mut self, received: u64, board: &Board) {
        let every = if self.terminal { 250 } else { 2000 };
        let elapsed = self.last_shown.elapsed();
        if elapsed < Duration::from_millis(every) {
            return;
        }
        let rate = (received - self.last_received.min(received)) as f64 / elapsed.as_secs_f64();
        let seconds = self.started.elapsed().as_secs_f64();
        let line = match board.all_ready() {
            true => format!(
                "{} {seconds:.1} s: {received}/{} deliveries, {:.2} M/s",
                self.name,
                self.expected,
                rate / 1e6
            ),
            false => format!(
                "{} {seconds:.1} s: warming up, {}/{} {} ready",
                self.name,
                board.ready_units(),
                board.units(),
                self.units
            ),
        };
        let mut stderr = std::io::stderr().lock();
        let _ = match self.terminal {
            true => write!(stderr, "\r\x1b[K{line}"),
            false => writeln!(stderr, "{line}"),
        };
        let _ = stderr.flush();
        self.last_shown = Instant::now();
        self.last_received = received;
    }

    fn clear(&self) {
        if self.terminal {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}
