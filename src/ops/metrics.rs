//! Prometheus metrics (SPEC §8): what `GET /metrics` shows.
//!
//! Every labelled series the server can produce is created once, at start, and kept as a plain
//! atomic counter or gauge: recording a value on the hot path is one atomic add, with no lock and
//! no map lookup. Deliveries are counted once per request (`inc_by` the number of recipients),
//! never once per recipient. Process metrics (memory, file descriptors, CPU time) are read from
//! `/proc/self` when the metrics are scraped, and cost nothing in between.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Metric, Registry, Unit};

use std::sync::Arc;

use crate::routing::hub::Listener;
use crate::routing::outbox::{SendLimits, Slow};
use crate::wire::frame::close_code;

/// The `Content-Type` of [`Metrics::encode`]'s text: the Prometheus text format 0.0.4, which
/// every Prometheus-compatible scraper reads.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Where a request came from (the `source` label of `tagcast_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A WebSocket text frame.
    Ws,
    /// `POST /publish`.
    Http,
    /// Another node of the cluster.
    Cluster,
}

impl Source {
    const ALL: [Source; 3] = [Source::Ws, Source::Http, Source::Cluster];

    fn as_str(self) -> &'static str {
        match self {
            Source::Ws => "ws",
            Source::Http => "http",
            Source::Cluster => "cluster",
        }
    }
}

/// Why a request was refused (the `reason` label of `tagcast_requests_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Not a valid request, or its message refused by the message parser (4400, HTTP 400).
    Invalid,
    /// Its credentials may not send (4401, HTTP 401).
    Unauthorized,
    /// Larger than `messages.max_size` (1009, HTTP 413).
    TooLarge,
    /// Over `limits.max_requests_per_s` (4429).
    RateLimited,
}

impl Rejected {
    const ALL: [Rejected; 4] = [
        Rejected::Invalid,
        Rejected::Unauthorized,
        Rejected::TooLarge,
        Rejected::RateLimited,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Rejected::Invalid => "invalid",
            Rejected::Unauthorized => "unauthorized",
            Rejected::TooLarge => "too_large",
            Rejected::RateLimited => "rate_limited",
        }
    }
}

/// Why a WebSocket open was refused before the upgrade (the `reason` label of
/// `tagcast_opens_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedOpen {
    /// A malformed upgrade request or bad `tags` (HTTP 4xx but 401/403).
    BadRequest,
    /// An `Origin` not in `server.allowed_origins` (403).
    Origin,
    /// No key, or no secret where one is needed (401).
    CredentialsMissing,
    /// An unknown key or a wrong secret (403).
    CredentialsWrong,
    /// A signed tag without a token (401).
    TokenMissing,
    /// A forged or unreadable token: kid, alg, signature, claims (403).
    TokenInvalid,
    /// A token outside its time: expired or not yet valid (403).
    TokenExpired,
    /// A valid token whose tags do not cover the URL's (403).
    TokenTags,
    /// `limits.max_connections` reached (503).
    Full,
}

impl RefusedOpen {
    const ALL: [RefusedOpen; 9] = [
        RefusedOpen::BadRequest,
        RefusedOpen::Origin,
        RefusedOpen::CredentialsMissing,
        RefusedOpen::CredentialsWrong,
        RefusedOpen::TokenMissing,
        RefusedOpen::TokenInvalid,
        RefusedOpen::TokenExpired,
        RefusedOpen::TokenTags,
        RefusedOpen::Full,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusedOpen::BadRequest => "bad_request",
            RefusedOpen::Origin => "origin",
            RefusedOpen::CredentialsMissing => "credentials_missing",
            RefusedOpen::CredentialsWrong => "credentials_wrong",
            RefusedOpen::TokenMissing => "token_missing",
            RefusedOpen::TokenInvalid => "token_invalid",
            RefusedOpen::TokenExpired => "token_expired",
            RefusedOpen::TokenTags => "token_tags",
            RefusedOpen::Full => "full",
        }
    }
}

/// The close codes counted by their own label; any other code counts as `other`.
const CLOSE_CODES: [(u16, &str); 12] = [
    (close_code::NORMAL, "1000"),
    (close_code::GOING_AWAY, "1001"),
    (close_code::PROTOCOL_ERROR, "1002"),
    (close_code::UNSUPPORTED_DATA, "1003"),
    (close_code::ABNORMAL, "1006"),
    (close_code::INVALID_PAYLOAD, "1007"),
    (close_code::MESSAGE_TOO_BIG, "1009"),
    (close_code::INTERNAL_ERROR, "1011"),
    (close_code::INVALID_REQUEST, "4400"),
    (close_code::UNAUTHORIZED, "4401"),
    (close_code::REVOKED, "4403"),
    (close_code::TOO_MANY, "4429"),
];

const LISTENERS: [Listener; 2] = [Listener::Ws, Listener::Wss];

type Labels = [(&'static str, &'static str); 1];

/// The server's metrics and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// By [`Listener`], in the order of `LISTENERS`.
    connections: [Gauge; 2],
    opened: Counter,
    /// By reason, in the order of `RefusedOpen::ALL`.
    opens_refused: [Counter; RefusedOpen::ALL.len()],
    /// By close code, in the order of `CLOSE_CODES`, then `other`.
    closed: [Counter; CLOSE_CODES.len() + 1],
    /// By [`Source`], in the order of `Source::ALL`.
    requests: [Counter; 3],
    deliveries: Counter,
    /// By reason, in the order of `Rejected::ALL`.
    rejected: [Counter; 4],
    /// By reason, in the order of `Slow::ALL`.
    slow_clients_closed: [Counter; 4],
    /// Successful, then failed.
    auth_reloads: [Counter; 2],
    /// Successful, then failed.
    tls_reloads: [Counter; 2],
    cluster_connected: Gauge,
    history_bytes: Gauge,
}

/// One series per label value, all created now so that every series shows from the first scrape.
fn family<const N: usize, M>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: [&'static str; N],
) -> [M; N]
where
    M: Default + Clone,
    Family<Labels, M>: Metric,
{
    let family = Family::<Labels, M>::default();
    registry.register(name, help, family.clone());
    values.map(|value| family.get_or_create_owned(&[(label, value)]))
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let counter = Counter::default();
    registry.register(name, help, counter.clone());
    counter
}

impl Metrics {
    /// Registers every metric; `clustered` adds `tagcast_cluster_connected`;
    /// `tagcast_queued_bytes` is read from `limits`.
    pub fn new(clustered: bool, limits: Arc<SendLimits>) -> Metrics {
        let mut registry = Registry::default();
        let connections = family(
            &mut registry,
            "tagcast_connections",
            "Open WebSocket connections, by listener",
            "listener",
            LISTENERS.map(Listener::as_str),
        );
        let opened = counter(
            &mut registry,
            "tagcast_connections_opened",
            "WebSocket connections opened (upgraded)",
        );
        let opens_refused = family(
            &mut registry,
            "tagcast_opens_refused",
            "WebSocket opens refused before the upgrade, by reason",
            "reason",
            RefusedOpen::ALL.map(RefusedOpen::as_str),
        );
        let mut codes = [""; CLOSE_CODES.len() + 1];
        for (slot, (_, label)) in codes.iter_mut().zip(CLOSE_CODES) {
            *slot = label;
        }
        codes[CLOSE_CODES.len()] = "other";
        let closed = family(
            &mut registry,
            "tagcast_connections_closed",
            "WebSocket connections closed, by close code (1006: the peer vanished without a close)",
            "code",
            codes,
        );
        let requests = family(
            &mut registry,
            "tagcast_requests",
            "Requests received, by source (ws, http, cluster)",
            "source",
            Source::ALL.map(Source::as_str),
        );
        let deliveries = counter(
            &mut registry,
            "tagcast_deliveries",
            "Messages queued to a connection (one per recipient of each request)",
        );
        let rejected = family(
            &mut registry,
            "tagcast_requests_rejected",
            "Requests refused, by reason",
            "reason",
            Rejected::ALL.map(Rejected::as_str),
        );
        let slow_clients_closed = family(
            &mut registry,
            "tagcast_slow_clients_closed",
            "Connections closed with 4429, by reason: bytes (send_queue_bytes), timeout \
             (write_timeout_ms), budget (max_queued_bytes), rate (max_requests_per_s)",
            "reason",
            Slow::ALL.map(Slow::as_str),
        );
        let auth_reloads = family(
            &mut registry,
            "tagcast_auth_reloads",
            "Reloads of the auth file, by result",
            "result",
            ["ok", "failed"],
        );
        let tls_reloads = family(
            &mut registry,
            "tagcast_tls_reloads",
            "Reloads of the TLS certificate and key, by result",
            "result",
            ["ok", "failed"],
        );
        let cluster_connected = Gauge::default();
        if clustered {
            registry.register(
                "tagcast_cluster_connected",
                "1 while this node is connected to the cluster's Redis, else 0",
                cluster_connected.clone(),
            );
        }
        let [build_info]: [Gauge; 1] = family(
            &mut registry,
            "tagcast_build_info",
            "Always 1; the labels say which tagcast this is",
            "version",
            [env!("CARGO_PKG_VERSION")],
        );
        build_info.set(1);
        let history_bytes = Gauge::default();
        registry.register(
            "tagcast_history_bytes",
            "Memory held by the messages kept for recovery ([history]), estimated; 0 when off",
            history_bytes.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        registry.register_collector(Box::new(QueuedBytes(limits)));
        Metrics {
            registry,
            connections,
            opened,
            opens_refused,
            closed,
            requests,
            deliveries,
            rejected,
            slow_clients_closed,
            auth_reloads,
            tls_reloads,
            cluster_connected,
            history_bytes,
        }
    }

    /// A WebSocket connection opened on `listener`; the returned guard counts it open until
    /// dropped.
    pub fn connection_opened(&self, listener: Listener) -> OpenConnection<'_> {
        self.opened.inc();
        let gauge = &self.connections[listener_index(listener)];
        gauge.inc();
        OpenConnection { gauge }
    }

    /// A WebSocket open was refused before the upgrade.
    pub fn open_refused(&self, reason: RefusedOpen) {
        self.opens_refused[reason as usize].inc();
    }

    /// A WebSocket connection closed with `code` (1006 when the peer vanished).
    pub fn connection_closed(&self, code: u16) {
        let index = CLOSE_CODES
            .iter()
            .position(|(known, _)| *known == code)
            .unwrap_or(CLOSE_CODES.len());
        self.closed[index].inc();
    }

    /// A request arrived from `source` (counted whether it is then accepted or not).
    pub fn request(&self, source: Source) {
        self.requests[source as usize].inc();
    }

    /// A request was refused.
    pub fn rejected(&self, reason: Rejected) {
        self.rejected[reason as usize].inc();
    }

    /// A request was queued to `delivered` connections.
    pub fn routed(&self, delivered: usize) {
        self.deliveries.inc_by(delivered as u64);
    }

    /// A connection closed with 4429 for being `slow` (counted once, when it ends).
    pub fn slow_client_closed(&self, slow: Slow) {
        self.slow_clients_closed[slow as usize].inc();
    }

    /// The auth file was reloaded (`ok`) or a reload was refused.
    pub fn auth_reloaded(&self, ok: bool) {
        self.auth_reloads[usize::from(!ok)].inc();
    }

    /// The TLS certificate was reloaded (`ok`) or a reload was refused.
    pub fn tls_reloaded(&self, ok: bool) {
        self.tls_reloads[usize::from(!ok)].inc();
    }

    /// Whether this node is connected to the cluster (`tagcast_cluster_connected`).
    pub fn set_cluster_connected(&self, connected: bool) {
        self.cluster_connected.set(i64::from(connected));
    }

    /// Memory held by the kept messages (`tagcast_history_bytes`).
    pub fn set_history_bytes(&self, bytes: usize) {
        self.history_bytes.set(bytes as i64);
    }

    /// The metrics in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(4096);
        // Writing into a String cannot fail; a collector's error would only truncate the text.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

fn listener_index(listener: Listener) -> usize {
    match listener {
        Listener::Ws => 0,
        Listener::Wss => 1,
    }
}

/// Counts one WebSocket connection in `tagcast_connections` while it lives.
pub struct OpenConnection<'a> {
    gauge: &'a Gauge,
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// `tagcast_queued_bytes`: the memory of the frames waiting, read at each scrape.
#[derive(Debug)]
struct QueuedBytes(Arc<SendLimits>);

impl Collector for QueuedBytes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(self.0.queued_bytes() as i64);
        gauge.encode(encoder.encode_descriptor(
            "tagcast_queued",
            "Memory held by the frames waiting to be written, all clients together (a frame \
             sent to many counted once)",
            Some(&Unit::Bytes),
            gauge.metric_type(),
        )?)
    }
}

/// `process_*` metrics read from `/proc/self` at each scrape (Linux; nothing elsewhere), named
/// as Prometheus' client libraries name them, `process_start_time_seconds` included.
#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second of `/proc/<pid>/stat` times: `USER_HZ`, fixed at 100 by the Linux ABI on
/// every architecture (Prometheus' own procfs library relies on the same constant).
const USER_HZ: f64 = 100.0;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(process) = ProcessStats::read() else {
            return Ok(());
        };
        let counter = ConstCounter::new(process.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent",
            Some(&Unit::Seconds),
            counter.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory",
                "Resident memory size",
                Some(Unit::Bytes),
                process.resident_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size",
                Some(Unit::Bytes),
                process.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                None,
                process.open_fds,
            ),
            (
                "process_max_fds",
                "Most open file descriptors allowed (soft limit)",
                None,
                process.max_fds,
            ),
        ];
        let start_time = ConstGauge::new(process.start_time_seconds);
        start_time.encode(encoder.encode_descriptor(
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(&Unit::Seconds),
            start_time.metric_type(),
        )?)?;
        for (name, help, unit, value) in gauges {
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// What `/proc/self` says of this process.
struct ProcessStats {
    cpu_seconds: f64,
    start_time_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: u64,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
        // utime and stime are fields 14 and 15 of proc(5); `fields[0]` is field 3.
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // starttime, field 22: clock ticks after boot; boot is `btime` of /proc/stat.
        let started_ticks: u64 = fields.get(19)?.parse().ok()?;
        let boot_seconds: u64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib = |key: &str| -> Option<u64> {
            let line = status.lines().find(|line| line.starts_with(key))?;
            line.get(key.len()..)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let max_fds = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .and_then(|line| line.get("Max open files".len()..))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|soft| soft.parse().ok())
            .unwrap_or(0);
        Some(ProcessStats {
            cpu_seconds: ticks as f64 / USER_HZ,
            start_time_seconds: boot_seconds as f64 + started_ticks as f64 / USER_HZ,
            resident_bytes: kib("VmRSS:")? * 1024,
            virtual_bytes: kib("VmSize:")? * 1024,
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as u64,
            max_fds,
        })
    }
}
