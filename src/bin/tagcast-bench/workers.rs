//! Several processes: one process may hold at most 20 000 file descriptors here, so past that
//! the parent spawns `tagcast bench --worker` children, each running a share of the
//! subscribers. A child reads its job as one JSON line on stdin, reports progress as JSON lines
//! on stdout (connected, ready, received, how far every publisher's messages have arrived) and,
//! when stdin says `stop`, its result.

use std::ops::Range;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

use super::BenchError;
use super::client::Target;
use super::histogram::SparseHistogram;
use super::plan::{Plan, Settings};
use super::probe;
use super::subscribers::{Board, Subscribers};

/// How often a child reports its progress.
const REPORT_EVERY: Duration = Duration::from_millis(1);
/// How long the parent waits for a child's result once it said stop.
const RESULT_WAIT: Duration = Duration::from_secs(30);

/// A child's share of a scenario.
#[derive(Serialize, Deserialize)]
struct Job {
    settings: Settings,
    range: Range<usize>,
}

/// A line a child writes.
#[derive(Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Line {
    Progress {
        connected: bool,
        ready: bool,
        received: u64,
        /// By room, then publisher: what every subscriber of the room received.
        received_below: Vec<u64>,
    },
    Result(Outcome),
    Failed {
        error: String,
    },
}

/// What one process's subscribers measured.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// Messages received.
    pub received: u64,
    /// Bytes of the frames that carried them.
    pub wire_bytes: u64,
    /// First and last receipt, ns since the epoch.
    pub receipts: Option<(u64, u64)>,
    /// Latencies to the tool's reads, ns.
    pub latencies: SparseHistogram,
    /// Latencies to arrival (see [`Latencies`]), ns.
    pub arrivals: SparseHistogram,
    /// The first errors, and how many there were.
    pub errors: (Vec<String>, usize),
    /// CPU seconds this process spent.
    pub cpu_s: f64,
}

impl Outcome {
    /// Reads the board of a process's subscribers.
    pub fn from_board(board: &Board, cpu_s: f64) -> Outcome {
        let latencies = board.latencies();
        Outcome {
            received: board.received(),
            wire_bytes: board.wire_bytes(),
            receipts: board.receipts(),
            latencies: latencies.read.to_sparse(),
            arrivals: latencies.arrival.to_sparse(),
            errors: board.errors(),
            cpu_s,
        }
    }
}

fn print_line(line: &Line) {
    use std::io::Write;
    if let Ok(text) = serde_json::to_string(line) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{text}");
        let _ = stdout.flush();
    }
}

/// `tagcast bench --worker`: runs the job read from stdin.
pub async fn serve() -> Result<(), BenchError> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let job_line = stdin.next_line().await?.unwrap_or_default();
    let job: Job = serde_json::from_str(&job_line)
        .map_err(|error| BenchError::Worker(format!("bad job line: {error}")))?;
    let result = run_job(job, &mut stdin).await;
    if let Err(error) = &result {
        print_line(&Line::Failed {
            error: error.to_string(),
        });
    }
    result
}

async fn run_job(
    job: Job,
    stdin: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>,
) -> Result<(), BenchError> {
    let cpu_start = probe::sample(None)?.cpu_seconds;
    let trust = super::trust(&job.settings);
    let target = Target::new(&job.settings.url, &trust, job.settings.sources).await?;
    let target = Arc::new(target.with_compression(job.settings.compression));
    let plan = Arc::new(Plan::new(job.settings));
    let board = Arc::new(Board::for_subscribers(&plan, job.range.clone()));
    let subscribers = Subscribers::connect(plan, target, job.range, board.clone()).await?;
    let report = async {
        let mut last = None;
        loop {
            let line = Line::Progress {
                connected: true,
                ready: board.all_ready(),
                received: board.received(),
                received_below: board.progress_by_room(),
            };
            if last.as_ref() != Some(&line) {
                print_line(&line);
                last = Some(line);
            }
            tokio::time::sleep(REPORT_EVERY).await;
        }
    };
    tokio::select! {
        () = report => {}
        _ = stdin.next_line() => {}
    }
    subscribers.close();
    let cpu_s = probe::sample(None)?.cpu_seconds - cpu_start;
    print_line(&Line::Result(Outcome::from_board(&board, cpu_s)));
    Ok(())
}

/// The children of one scenario.
pub struct Workers {
    children: Vec<(Child, ChildStdin, oneshot::Receiver<Outcome>)>,
}

impl Workers {
    /// Spawns `count` children sharing the subscribers of `settings`; their progress goes to
    /// `board`, one unit per child.
    pub async fn spawn(
        settings: &Settings,
        count: usize,
        board: Arc<Board>,
    ) -> Result<Workers, BenchError> {
        let program = std::env::current_exe()?;
        let mut children = Vec::new();
        for worker in 0..count {
            let share = |k: usize| k * settings.subscribers / count;
            let job = Job {
                settings: settings.clone(),
                range: share(worker)..share(worker + 1),
            };
            let mut child = Command::new(&program)
                .arg("--worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(BenchError::Worker("no pipes to the worker".into()));
            };
            let mut text = serde_json::to_string(&job)
                .map_err(|error| BenchError::Worker(error.to_string()))?;
            text.push('\n');
            stdin.write_all(text.as_bytes()).await?;
            let (outcome_tx, outcome_rx) = oneshot::channel();
            tokio::spawn(follow(worker, stdout, board.clone(), outcome_tx));
            children.push((child, stdin, outcome_rx));
        }
        Ok(Workers { children })
    }

    /// Tells every child to stop and collects their outcomes.
    pub async fn finish(self) -> Result<Vec<Outcome>, BenchError> {
        let mut outcomes = Vec::new();
        for (mut child, mut stdin, outcome) in self.children {
            let _ = stdin.write_all(b"stop\n").await;
            let outcome = tokio::time::timeout(RESULT_WAIT, outcome)
                .await
                .map_err(|_| BenchError::Worker("a worker did not report its result".into()))?
                .map_err(|_| BenchError::Worker("a worker exited without a result".into()))?;
            outcomes.push(outcome);
            let _ = child.wait().await;
        }
        Ok(outcomes)
    }
}

/// Reads child `worker`'s lines into the board.
async fn follow(
    worker: usize,
    stdout: tokio::process::ChildStdout,
    board: Arc<Board>,
    outcome: oneshot::Sender<Outcome>,
) {
    let mut lines = BufReader::new(stdout).lines();
    let (mut connected, mut ready) = (false, false);
    while let Ok(Some(text)) = lines.next_line().await {
        match serde_json::from_str::<Line>(&text) {
            Ok(Line::Progress {
                connected: now_connected,
                ready: now_ready,
                received,
                received_below,
            }) => {
                board.set_worker_progress(worker, &received_below);
                board.set_received(worker, received);
                if now_connected && !connected {
                    connected = true;
                    board.add_connected();
                }
                if now_ready && !ready {
                    ready = true;
                    board.add_ready();
                }
            }
            Ok(Line::Result(result)) => {
                let _ = outcome.send(result);
                return;
            }
            Ok(Line::Failed { error }) => {
                board.fail(format!("worker {worker}: {error}"));
                return;
            }
            Err(error) => {
                board.fail(format!("worker {worker} wrote {text:?}: {error}"));
                return;
            }
        }
    }
    board.fail(format!("worker {worker} exited"));
}
