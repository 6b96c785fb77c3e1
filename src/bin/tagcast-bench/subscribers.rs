//! The receiving side: subscriber connections, each a task that reads whole batches of frames,
//! parses only the index and timestamp at the start of each message, and posts its progress on
//! a shared [`Board`] that the publishers read to keep their window.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::{self, ClientError, Deflate, Stream, Target};
use super::histogram::Histogram;
use super::plan::{Payload, Plan, Scenario, parse_payload};
use tagcast::wire::deflate::Inflater;
use tagcast_client::wire::close::CloseReason;

/// Nanoseconds since the Unix epoch: comparable between the load tool's processes.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

/// Latency histograms are sharded so that subscribers on different threads rarely contend.
const SHARDS: usize = 16;
/// Handshakes in flight at once: more would overflow the server's accept backlog.
const CONNECTING_AT_ONCE: usize = 128;
/// Errors kept word for word; the rest are only counted.
const ERRORS_KEPT: usize = 5;

/// Progress of the receiving side, one unit per subscriber (in the process that runs them) or
/// per worker process (in the parent). Receipts are followed per lane: a lane is one subscriber
/// (in the process that runs it) or one room of one worker process (in the parent).
pub struct Board {
    publishers: usize,
    /// Units whose subscribers are all connected.
    connected: AtomicUsize,
    /// Units whose subscribers all received a warm-up message.
    ready: AtomicUsize,
    units: usize,
    /// `[lane * publishers + publisher]`: every message of that publisher to the lane's room
    /// with a lower index has been received by the lane.
    received_below: Vec<AtomicU64>,
    /// The lanes of each room.
    lanes_of_room: Vec<Vec<usize>>,
    /// Messages received, per unit.
    received: Vec<AtomicU64>,
    /// Bytes of the frames that carried them (headers included, as they came on the wire).
    wire_bytes: AtomicU64,
    /// When the first and the last message arrived (ns since the epoch).
    first_receipt: AtomicU64,
    last_receipt: AtomicU64,
    latencies: Vec<Mutex<Latencies>>,
    errors: Mutex<(Vec<String>, usize)>,
    /// A worker failed: the scenario cannot go on.
    failed: AtomicBool,
}

impl Board {
    /// A board for the subscribers `range` of `plan`, run by this process: a unit and a lane
    /// per subscriber.
    pub fn for_subscribers(plan: &Plan, range: Range<usize>) -> Board {
        let lane_rooms = range.clone().map(|subscriber| plan.room_of(subscriber));
        Board::new(range.len(), plan, lane_rooms.collect())
    }

    /// A board for `workers` worker processes: a unit per worker, a lane per worker and room.
    pub fn for_workers(plan: &Plan, workers: usize) -> Board {
        let lane_rooms = (0..workers).flat_map(|_| 0..plan.rooms());
        Board::new(workers, plan, lane_rooms.collect())
    }

    fn new(units: usize, plan: &Plan, lane_rooms: Vec<usize>) -> Board {
        let publishers = plan.publishers();
        let mut lanes_of_room = vec![Vec::new(); plan.rooms()];
        for (lane, &room) in lane_rooms.iter().enumerate() {
            lanes_of_room[room].push(lane);
        }
        Board {
            publishers,
            connected: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            units,
            received_below: (0..lane_rooms.len() * publishers)
                .map(|_| AtomicU64::new(0))
                .collect(),
            lanes_of_room,
            received: (0..units).map(|_| AtomicU64::new(0)).collect(),
            wire_bytes: AtomicU64::new(0),
            first_receipt: AtomicU64::new(u64::MAX),
            last_receipt: AtomicU64::new(0),
            latencies: (0..SHARDS).map(|_| Mutex::default()).collect(),
            errors: Mutex::default(),
            failed: AtomicBool::new(false),
        }
    }

    /// True when every unit is connected.
    pub fn all_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire) >= self.units
    }

    /// Units that received a warm-up message.
    pub fn ready_units(&self) -> usize {
        self.ready.load(Ordering::Acquire)
    }

    /// True when every unit received a warm-up message.
    pub fn all_ready(&self) -> bool {
        self.ready_units() >= self.units
    }

    /// Number of units.
    pub fn units(&self) -> usize {
        self.units
    }

    /// Marks one more unit connected.
    pub fn add_connected(&self) {
        self.connected.fetch_add(1, Ordering::AcqRel);
    }

    /// Marks one more unit ready.
    pub fn add_ready(&self) {
        self.ready.fetch_add(1, Ordering::AcqRel);
    }

    /// Every message of `publisher` to `room` below the returned index was received by every
    /// subscriber of the room.
    pub fn min_received_below(&self, room: usize, publisher: usize) -> u64 {
        self.lanes_of_room[room]
            .iter()
            .map(|lane| {
                self.received_below[lane * self.publishers + publisher].load(Ordering::Acquire)
            })
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Sets a lane's progress for `publisher`.
    pub fn set_received_below(&self, lane: usize, publisher: usize, below: u64) {
        self.received_below[lane * self.publishers + publisher].store(below, Ordering::Release);
    }

    /// What every subscriber of each room received, by room then publisher: a worker's
    /// progress, read back by [`Board::set_worker_progress`] in the parent.
    pub fn progress_by_room(&self) -> Vec<u64> {
        (0..self.lanes_of_room.len())
            .flat_map(|room| (0..self.publishers).map(move |publisher| (room, publisher)))
            .map(|(room, publisher)| self.min_received_below(room, publisher))
            .collect()
    }

    /// Sets worker `worker`'s lanes (one per room) from its [`Board::progress_by_room`].
    pub fn set_worker_progress(&self, worker: usize, progress: &[u64]) {
        let first_lane = worker * self.lanes_of_room.len();
        for (slot, &below) in progress.iter().enumerate() {
            let lane = first_lane + slot / self.publishers;
            self.set_received_below(lane, slot % self.publishers, below);
        }
    }

    /// Sets a unit's count of received messages.
    pub fn set_received(&self, unit: usize, count: u64) {
        self.received[unit].store(count, Ordering::Release);
    }

    /// Messages received by all units.
    pub fn received(&self) -> u64 {
        self.received
            .iter()
            .map(|count| count.load(Ordering::Acquire))
            .sum()
    }

    /// Adds the frame bytes of messages received (see [`Board::wire_bytes`]).
    pub fn add_wire_bytes(&self, bytes: u64) {
        self.wire_bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Bytes of the frames that carried the messages received, headers included: compressed
    /// frames count as they came on the wire.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes.load(Ordering::Acquire)
    }

    /// Widens the first-to-last receipt span to include `first..=last`.
    pub fn note_receipts(&self, first: u64, last: u64) {
        self.first_receipt.fetch_min(first, Ordering::AcqRel);
        self.last_receipt.fetch_max(last, Ordering::AcqRel);
    }

    /// First and last receipt (ns since the epoch); `None` before any.
    pub fn receipts(&self) -> Option<(u64, u64)> {
        let first = self.first_receipt.load(Ordering::Acquire);
        (first != u64::MAX).then(|| (first, self.last_receipt.load(Ordering::Acquire)))
    }

    /// Records a subscriber's batch: latencies to its read and, if stamped, to arrival.
    fn record_latencies(&self, shard: usize, read: &[u64], arrival: &[u64]) {
        let mut guard = self.latencies[shard % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let latencies = &mut *guard;
        for (histogram, values) in [
            (&mut latencies.read, read),
            (&mut latencies.arrival, arrival),
        ] {
            for &value in values {
                histogram.record(value);
            }
        }
    }

    /// All latencies recorded.
    pub fn latencies(&self) -> Latencies {
        let mut all = Latencies::default();
        for shard in &self.latencies {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            all.read.merge(&shard.read);
            all.arrival.merge(&shard.arrival);
        }
        all
    }

    /// Records an error (a connection closed by the server, a message out of order, ...).
    pub fn error(&self, error: String) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        if errors.0.len() < ERRORS_KEPT {
            errors.0.push(error);
        }
        errors.1 += 1;
    }

    /// The errors kept and how many there were in all.
    pub fn errors(&self) -> (Vec<String>, usize) {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Marks the scenario as failed (a worker died); waiting loops give up.
    pub fn fail(&self, error: String) {
        self.error(error);
        self.failed.store(true, Ordering::Release);
    }

    /// True after [`Board::fail`].
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// Delivery latencies, ns from each message's (scheduled) send time.
#[derive(Default)]
pub struct Latencies {
    /// Until the tool read the message.
    pub read: Histogram,
    /// Until the message reached the subscriber's socket, by the kernel's stamp: the server's
    /// part without the tool's own delay in reading (`latency` over `ws://` only).
    pub arrival: Histogram,
}

/// Subscribers `range` of `plan`, connected and reading. Dropping it closes them.
pub struct Subscribers {
    tasks: JoinSet<()>,
    /// The `latency` scenario's own runtime, which runs these subscribers.
    runtime: Option<ReceiverRuntime>,
}

/// A runtime of the subscribers' own. Dropped, it shuts down without blocking (which async
/// code must not), however the scenario ends.
struct ReceiverRuntime(Option<Runtime>);

impl Drop for ReceiverRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Subscribers {
    /// Connects subscribers `range` (their global numbers pick rooms and source addresses);
    /// the board's units are `0..range.len()`. Fails on the first connection that fails.
    ///
    /// In the `latency` scenario they run on a runtime of their own with one thread: between
    /// two messages every subscriber is idle, and one thread takes all of a message's receipts
    /// from one `epoll` wake-up, where two threads would wake each other to share them. The
    /// throughput scenarios need the caller's threads to keep up (PERFORMANCE.md). Only the
    /// `latency` scenario's subscribers ask for arrival stamps (see [`Latencies`]).
    pub async fn connect(
        plan: Arc<Plan>,
        target: Arc<Target>,
        range: Range<usize>,
        board: Arc<Board>,
    ) -> Result<Subscribers, ClientError> {
        if plan.settings.scenario != Scenario::Latency {
            return Subscribers::connect_here(plan, target, range, board, false).await;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tagcast-bench-receiver")
            .enable_all()
            .build()
            .map_err(|error| ClientError::Io {
                what: "starting the receivers' runtime",
                error,
            })?;
        // Sockets are registered with the runtime that connects them: connect on the new one.
        let connecting = runtime.spawn(Subscribers::connect_here(plan, target, range, board, true));
        let runtime = ReceiverRuntime(Some(runtime));
        let connected = connecting.await.map_err(|joined| ClientError::Io {
            what: "connecting subscribers",
            error: joined.into(),
        })?;
        let mut subscribers = connected?;
        subscribers.runtime = Some(runtime);
        Ok(subscribers)
    }

    /// Connects the subscribers on the current runtime; with `stamp`, they record arrivals.
    async fn connect_here(
        plan: Arc<Plan>,
        target: Arc<Target>,
        range: Range<usize>,
        board: Arc<Board>,
        stamp: bool,
    ) -> Result<Subscribers, ClientError> {
        let slots = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
        let mut connecting = JoinSet::new();
        for (unit, subscriber) in range.clone().enumerate() {
            let (plan, target, slots) = (plan.clone(), target.clone(), slots.clone());
            connecting.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let tags = plan.subscriber_tags(subscriber);
                let connected = target.connect(subscriber, tags.as_deref()).await;
                connected.map(|connection| (unit, subscriber, connection))
            });
        }
        let mut tasks = JoinSet::new();
        while let Some(joined) = connecting.join_next().await {
            let Ok(connected) = joined else { continue };
            let (unit, subscriber, (stream, leftover, deflate)) = connected?;
            let stamp = stamp && stream.stamp_arrivals()?;
            let room = plan.room_of(subscriber);
            for publisher in 0..plan.publishers() {
                board.set_received_below(unit, publisher, plan.received_below(room, publisher, 0));
            }
            board.add_connected();
            let receiver = Receiver {
                plan: plan.clone(),
                board: board.clone(),
                unit,
                room,
                stamp,
            };
            tasks.spawn(receiver.run(stream, leftover, deflate));
        }
        Ok(Subscribers {
            tasks,
            runtime: None,
        })
    }

    /// Closes every subscriber.
    pub fn close(mut self) {
        self.tasks.abort_all();
    }
}

/// The smallest read buffer; it grows to hold a frame larger than half of it.
const READ_BUFFER: usize = 4096;
/// The largest message a compressed frame may inflate to (the server's default
/// `messages.max_size`): a larger one is an error, never inflated whole.
const MAX_INFLATED: usize = 64 * 1024;

/// The bytes (compressed and inflated) of the frames a thread remembers having inflated, at
/// most (see [`PerMessageInflation`]): the 20,000 notifications of `benches/compression.sh`.
const RECENT_BYTES: usize = 32 << 20;

thread_local! {
    /// What this thread's connections whose messages inflate on their own
    /// ([`Deflate::PerMessage`]) inflate with: 10 000 subscribers need not hold one each.
    static PER_MESSAGE: RefCell<PerMessageInflation> = RefCell::new(PerMessageInflation {
        inflater: Inflater::new(false),
        recent: HashMap::new(),
        oldest_first: VecDeque::new(),
        bytes: 0,
    });
}

/// An inflater for messages that inflate on their own, and the messages it inflated last
/// (up to `RECENT_BYTES`, the oldest forgotten first), by their compressed bytes.
///
/// Without context takeover the server sends a message's compressed frame as the same bytes
/// to every recipient, and each browser inflates it on its own machine. The tool stands in
/// for thousands of browsers on the server's own cores: it inflates each distinct frame once
/// per thread while it remembers it (every delivery is still parsed and checked), so that its
/// cost per delivery, and with it the pace of the server's measure, does not depend on
/// compression (PERFORMANCE.md § Compression).
struct PerMessageInflation {
    inflater: Inflater,
    recent: HashMap<Arc<[u8]>, Arc<[u8]>>,
    oldest_first: VecDeque<Arc<[u8]>>,
    bytes: usize,
}

impl PerMessageInflation {
    fn inflate(&mut self, payload: &[u8]) -> Result<Arc<[u8]>, CloseReason> {
        if let Some(message) = self.recent.get(payload) {
            return Ok(message.clone());
        }
        let message: Arc<[u8]> = self.inflater.inflate(payload, MAX_INFLATED)?.into();
        let frame: Arc<[u8]> = payload.into();
        self.bytes += frame.len() + message.len();
        self.recent.insert(frame.clone(), message.clone());
        self.oldest_first.push_back(frame);
        while self.bytes > RECENT_BYTES
            && let Some(oldest) = self.oldest_first.pop_front()
            && let Some(forgotten) = self.recent.remove(&oldest)
        {
            self.bytes -= oldest.len() + forgotten.len();
        }
        Ok(message)
    }
}

/// The message a compressed frame inflated to.
enum Inflated {
    /// Remembered by the thread ([`PerMessageInflation`]).
    Remembered(Arc<[u8]>),
    /// Inflated with this connection's own window ([`Deflate::Takeover`]).
    Own(Vec<u8>),
}

impl Inflated {
    fn bytes(&self) -> &[u8] {
        match self {
            Inflated::Remembered(message) => message,
            Inflated::Own(message) => message,
        }
    }
}

struct Receiver {
    plan: Arc<Plan>,
    board: Arc<Board>,
    unit: usize,
    room: usize,
    /// Reads return arrival stamps ([`Stream::stamp_arrivals`] said they will).
    stamp: bool,
}

impl Receiver {
    async fn run(self, mut stream: Stream, leftover: Vec<u8>, mut deflate: Option<Deflate>) {
        let mut buffer = leftover;
        let mut filled = buffer.len();
        buffer.resize(READ_BUFFER.max(filled * 2), 0);
        let mut counts = vec![0usize; self.plan.publishers()];
        let mut received = 0u64;
        let mut wire_bytes = 0u64;
        let mut ready = false;
        let mut latencies = Vec::with_capacity(64);
        let mut arrivals = Vec::with_capacity(64);
        // When the bytes of the last read reached the socket, if the kernel stamps them.
        let mut arrival: Option<u64> = None;
        loop {
            let now = wall_ns();
            let mut start = 0;
            let mut touched = false;
            while let Some(frame) = client::split_server_frame(&buffer[start..filled]) {
                let mut payload = &buffer[start + frame.payload_start..start + frame.length];
                let message;
                if frame.compressed {
                    let inflated = match &mut deflate {
                        Some(Deflate::PerMessage) => PER_MESSAGE
                            .with_borrow_mut(|inflation| inflation.inflate(payload))
                            .map(Inflated::Remembered),
                        Some(Deflate::Takeover(inflater)) => {
                            inflater.inflate(payload, MAX_INFLATED).map(Inflated::Own)
                        }
                        None => {
                            self.board
                                .error("a compressed frame without permessage-deflate".into());
                            return;
                        }
                    };
                    match inflated {
                        Ok(inflated) => message = inflated,
                        Err(close) => {
                            self.board.error(format!("compressed frame: {close}"));
                            return;
                        }
                    }
                    payload = message.bytes();
                }
                match frame.opcode {
                    0x1 => match parse_payload(payload) {
                        // Stamping subscribers wait for a stamped warm-up: the kernel turns
                        // stamping on a moment after it is asked, and every measured message
                        // must have its stamp.
                        Some(Payload::WarmUp) if !ready && (!self.stamp || arrival.is_some()) => {
                            ready = true;
                            self.board.add_ready();
                        }
                        Some(Payload::WarmUp) => {}
                        Some(Payload::Message { index, stamp_ns }) => {
                            self.check_order(index, &mut counts);
                            latencies.push(now.saturating_sub(stamp_ns));
                            if let Some(arrival) = arrival {
                                arrivals.push(arrival.saturating_sub(stamp_ns));
                            }
                            received += 1;
                            wire_bytes += frame.length as u64;
                            touched = true;
                        }
                        None => self.board.error(format!(
                            "unexpected message {:?}",
                            String::from_utf8_lossy(&payload[..payload.len().min(40)])
                        )),
                    },
                    0x8 => {
                        let code = payload
                            .get(..2)
                            .map_or(1005, |code| u16::from_be_bytes([code[0], code[1]]));
                        let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                        self.board
                            .error(format!("server closed a subscriber: {code} {reason}"));
                        return;
                    }
                    0x9 => {
                        let mut pong = Vec::new();
                        client::push_masked_frame(&mut pong, client::PONG, payload, [1, 2, 3, 4]);
                        if stream.write_all(&pong).await.is_err() {
                            return;
                        }
                    }
                    _ => {}
                }
                start += frame.length;
            }
            if touched {
                self.post(received, &counts, &latencies, &arrivals, now);
                self.board.add_wire_bytes(std::mem::take(&mut wire_bytes));
                latencies.clear();
                arrivals.clear();
            }
            buffer.copy_within(start..filled, 0);
            filled -= start;
            if filled * 2 > buffer.len() {
                buffer.resize(buffer.len() * 2, 0);
            }
            match stream.read_stamped(&mut buffer[filled..], self.stamp).await {
                Ok((0, _)) => {
                    self.board
                        .error("server closed a subscriber's connection".into());
                    return;
                }
                Ok((read, stamp)) => {
                    filled += read;
                    arrival = stamp;
                }
                Err(error) => {
                    self.board.error(format!("subscriber read failed: {error}"));
                    return;
                }
            }
        }
    }

    /// Checks that message `index` is the next one expected from its publisher.
    fn check_order(&self, index: usize, counts: &mut [usize]) {
        let publisher = index % counts.len();
        let list = self.plan.list(self.room, publisher);
        if list.get(counts[publisher]) != Some(&(index as u32)) {
            self.board.error(format!(
                "message {index} arrived out of order, duplicated or in the wrong room"
            ));
        }
        counts[publisher] += 1;
    }

    /// Posts progress and a batch of latencies, to the read and to arrival.
    fn post(&self, received: u64, counts: &[usize], read: &[u64], arrival: &[u64], now: u64) {
        for (publisher, &count) in counts.iter().enumerate() {
            let below = self.plan.received_below(self.room, publisher, count);
            self.board.set_received_below(self.unit, publisher, below);
        }
        self.board.record_latencies(self.unit, read, arrival);
        self.board.set_received(self.unit, received);
        self.board.note_receipts(now, now);
    }
}
