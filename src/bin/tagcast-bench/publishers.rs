//! The sending side, on a thread and runtime of its own so that thousands of subscriber tasks
//! never delay a send, and so that the latency scenario can sleep precisely.
//!
//! Publishers first send warm-up messages until every subscriber has received one (the server
//! has registered them all), then the scenario's messages. As fast as possible, each publisher
//! keeps at most `window` messages per room unfinished — sent but not yet received by every
//! subscriber of the room — so that no server queue holds more than publishers × window frames;
//! at a fixed rate, messages leave at their scheduled times, each stamped with that time.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::BenchError;
use super::client::{Stream, TEXT, Target, push_masked_frame};
use super::histogram::Histogram;
use super::plan::{Plan, Scenario};
use super::probe::{self, Sample};
use super::subscribers::{Board, wall_ns};

/// Warm-up rounds are this far apart.
const WARM_UP_ROUND: Duration = Duration::from_millis(200);
/// Bytes of requests written at once.
const BATCH_BYTES: usize = 32 * 1024;
/// The latency scenario wakes this long before a send, then sleeps precisely to it.
const COARSE_WAKE_EARLY: Duration = Duration::from_millis(2);
/// ... and spins for the last of it (at most a quarter of the interval between sends): a
/// thread woken from a sleep is tens of µs late.
const SPIN_BEFORE_SEND: Duration = Duration::from_micros(50);

/// What the publishers did.
pub struct Sent {
    /// When the first message was sent (ns since the epoch).
    pub first_send_ns: u64,
    /// The server just before the first message, when a pid was given.
    pub server_before: Option<Sample>,
    /// How late each message was written, in ns (the latency scenario; empty otherwise): the
    /// tool's own lateness, and the server's back-pressure if the write had to wait, both
    /// counted in the latency.
    pub send_lag: Histogram,
}

/// The publisher thread: `sent` reports when the last message is out; the connections stay
/// open until `stop` is cancelled.
pub fn start(
    plan: Arc<Plan>,
    target: Arc<Target>,
    board: Arc<Board>,
    pid: Option<u32>,
    stop: CancellationToken,
) -> oneshot::Receiver<Result<Sent, BenchError>> {
    let (sent_tx, sent_rx) = oneshot::channel();
    std::thread::spawn(move || {
        // Sleeps end when asked, not up to 50 µs later (the default timer slack); best effort.
        let _ = nix::sys::prctl::set_timerslack(1);
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = sent_tx.send(Err(BenchError::Io(error)));
                return;
            }
        };
        runtime.block_on(async move {
            let mut publishers = match connect(&plan, &target, &board).await {
                Ok(publishers) => publishers,
                Err(error) => {
                    let _ = sent_tx.send(Err(error));
                    return;
                }
            };
            let sent = publish(&plan, &board, pid, &stop, &mut publishers).await;
            let _ = sent_tx.send(sent);
            stop.cancelled().await;
        });
    });
    sent_rx
}

/// Connects the publishers once the subscribers are; a task per publisher discards what the
/// server sends it (broadcasts reach publishers too).
async fn connect(
    plan: &Plan,
    target: &Target,
    board: &Board,
) -> Result<Vec<WriteHalf<Stream>>, BenchError> {
    while !board.all_connected() {
        if board.failed() {
            return Err(BenchError::Worker(
                "a worker failed while connecting".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut writers = Vec::new();
    for publisher in 0..plan.publishers() {
        let (stream, _, _) = target
            .connect(plan.settings.subscribers + publisher, None)
            .await?;
        let (mut reader, writer) = tokio::io::split(stream);
        tokio::spawn(async move {
            let mut discard = vec![0u8; 16 * 1024];
            while matches!(reader.read(&mut discard).await, Ok(read) if read > 0) {}
        });
        writers.push(writer);
    }
    Ok(writers)
}

async fn publish(
    plan: &Arc<Plan>,
    board: &Arc<Board>,
    pid: Option<u32>,
    stop: &CancellationToken,
    publishers: &mut Vec<WriteHalf<Stream>>,
) -> Result<Sent, BenchError> {
    warm_up(plan, board, &mut publishers[0]).await?;
    let server_before = pid.map(|pid| probe::sample(Some(pid))).transpose()?;
    let first_send_ns = wall_ns();
    let send_lag = match plan.settings.scenario {
        Scenario::Latency => at_fixed_rate(plan, publishers).await?,
        _ => {
            let mut tasks = JoinSet::new();
            for (publisher, writer) in std::mem::take(publishers).into_iter().enumerate() {
                let window = Window {
                    plan: plan.clone(),
                    board: board.clone(),
                    stop: stop.clone(),
                    publisher,
                };
                tasks.spawn(window.send_all(writer));
            }
            while let Some(joined) = tasks.join_next().await {
                let writer = joined.map_err(|error| BenchError::Worker(error.to_string()))??;
                publishers.push(writer);
            }
            Histogram::default()
        }
    };
    Ok(Sent {
        first_send_ns,
        server_before,
        send_lag,
    })
}

/// Sends a warm-up message to every room until every subscriber has received one.
async fn warm_up(
    plan: &Plan,
    board: &Board,
    writer: &mut WriteHalf<Stream>,
) -> Result<(), BenchError> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs_f64(plan.settings.timeout_s.max(5.0));
    let mut requests = Vec::new();
    for room in 0..plan.rooms() {
        let mut request = Vec::new();
        plan.write_warm_up(room, &mut request);
        push_masked_frame(&mut requests, TEXT, &request, [7, 7, 7, 7]);
    }
    while !board.all_ready() {
        if board.failed() || tokio::time::Instant::now() > deadline {
            return Err(BenchError::WarmUp {
                ready: board.ready_units(),
                units: board.units(),
            });
        }
        writer.write_all(&requests).await?;
        let round_end = tokio::time::Instant::now() + WARM_UP_ROUND;
        while !board.all_ready() && tokio::time::Instant::now() < round_end {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(())
}

/// Publisher `publisher` sends its share (messages `publisher`, `publisher + P`, ...) in
/// batches, never more than the window ahead, in any room, of what every subscriber of the room
/// has received. A message whose room is a full window ahead waits, and the ones after it too.
struct Window {
    plan: Arc<Plan>,
    board: Arc<Board>,
    stop: CancellationToken,
    publisher: usize,
}

impl Window {
    async fn send_all(
        self,
        mut writer: WriteHalf<Stream>,
    ) -> Result<WriteHalf<Stream>, BenchError> {
        let Window {
            plan,
            board,
            stop,
            publisher,
        } = self;
        let step = plan.publishers();
        // 0: unpaced, as far ahead as the socket takes frames.
        let window = match plan.settings.window {
            0 => usize::MAX,
            window => window,
        };
        let mask = [0x5A, publisher as u8, 0xA5, 0x3C];
        let mut batch = Vec::with_capacity(BATCH_BYTES + 1024);
        let mut request = Vec::with_capacity(plan.settings.size + 128);
        let mut next = publisher;
        // Per room: this publisher's messages sent, and how many it may send before it looks
        // at the board again.
        let mut sent = vec![0usize; plan.rooms()];
        let mut allowed = vec![0usize; plan.rooms()];
        while next < plan.settings.messages {
            while next < plan.settings.messages && batch.len() < BATCH_BYTES {
                let room = plan.room_of_message(next);
                if sent[room] >= allowed[room] {
                    let below = board.min_received_below(room, publisher);
                    allowed[room] = plan
                        .received_count(room, publisher, below)
                        .saturating_add(window);
                    if sent[room] >= allowed[room] {
                        break;
                    }
                }
                request.clear();
                plan.write_request(next, wall_ns(), room, &mut request);
                push_masked_frame(&mut batch, TEXT, &request, mask);
                sent[room] += 1;
                next += step;
            }
            if batch.is_empty() {
                if stop.is_cancelled() {
                    return Err(BenchError::Worker(
                        "stopped: the subscribers stalled".into(),
                    ));
                }
                // Blocks this thread's other publishers too, briefly: they are waiting for
                // the same subscribers.
                std::thread::sleep(Duration::from_micros(200));
                tokio::task::yield_now().await;
                continue;
            }
            writer.write_all(&batch).await?;
            // Over wss, rustls may still hold some of it: out before the window is waited on.
            writer.flush().await?;
            batch.clear();
        }
        writer.flush().await?;
        Ok(writer)
    }
}

/// Sends message `i` at `start + i / rate`, stamped with that scheduled time, from publisher
/// `i % P`: a slow server delays the sends but not the stamps, so its queueing is counted.
/// Returns how late each message was written (ns).
async fn at_fixed_rate(
    plan: &Plan,
    publishers: &mut [WriteHalf<Stream>],
) -> Result<Histogram, BenchError> {
    let interval_ns = 1e9 / f64::from(plan.settings.rate.max(1));
    let spin = SPIN_BEFORE_SEND.min(Duration::from_nanos(interval_ns as u64 / 4));
    let start = std::time::Instant::now() + Duration::from_millis(5);
    let start_ns = wall_ns() + 5_000_000;
    let mut request = Vec::with_capacity(plan.settings.size + 128);
    let mut frame = Vec::with_capacity(plan.settings.size + 256);
    let mut send_lag = Histogram::default();
    for index in 0..plan.settings.messages {
        let offset = Duration::from_nanos((index as f64 * interval_ns) as u64);
        let due = start + offset;
        let now = std::time::Instant::now();
        if due > now + COARSE_WAKE_EARLY {
            tokio::time::sleep_until((due - COARSE_WAKE_EARLY).into()).await;
        }
        // The runtime's timer ticks in milliseconds; the thread sleeps the rest precisely.
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now() + spin));
        while std::time::Instant::now() < due {
            std::hint::spin_loop();
        }
        request.clear();
        frame.clear();
        let stamp = start_ns + offset.as_nanos() as u64;
        plan.write_request(index, stamp, plan.room_of_message(index), &mut request);
        push_masked_frame(&mut frame, TEXT, &request, [0x5A, 0, 0xA5, 0x3C]);
        let publisher = index % publishers.len();
        publishers[publisher].write_all(&frame).await?;
        send_lag.record(due.elapsed().as_nanos() as u64);
    }
    Ok(send_lag)
}
