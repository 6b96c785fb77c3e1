//! `tagcast reload`: a reload the daemon runs and answers, so that `systemctl reload tagcast`
//! (its `ExecReload=`) fails with the reason and returns only once the reload is done.
//!
//! systemd 252 (Debian 12) has no `Type=notify-reload`, and `ExecReload=/bin/kill -HUP` returns
//! as soon as the signal is sent, before the daemon has even read the files. So the daemon
//! listens on a Unix socket in its runtime directory (`RuntimeDirectory=tagcast`, which
//! systemd passes as `RUNTIME_DIRECTORY`): `tagcast reload` connects, sends `reload`, and the
//! daemon runs the very reload SIGHUP runs, then answers with one JSON line, a
//! [`ReloadOutcome`]: the failures (each naming its file) and the `tagcast.toml` keys that
//! need a restart. The socket is created under the unit's `UMask=0077`: only the service's
//! user and root may reload.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::net::shared::ReloadOutcome;

/// The socket's name in the runtime directory.
pub const SOCKET_NAME: &str = "control";

/// The request `tagcast reload` sends.
const RELOAD: &str = "reload";

/// How long `tagcast reload` waits for the daemon's answer. A reload reads a few small files;
/// this bounds a daemon that is wedged, well under systemd's 90 s for `ExecReload=`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why `tagcast reload` got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the socket: the daemon is not running, or not under systemd.
    #[error("cannot reach the daemon at {path}: {source} (is tagcast running as a service?)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The conversation broke off, or the answer is not a [`ReloadOutcome`].
    #[error("no answer from the daemon at {path}: {problem}")]
    Answer {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
}

/// The control socket's path in `runtime_directory`.
pub fn socket_path(runtime_directory: &Path) -> PathBuf {
    runtime_directory.join(SOCKET_NAME)
}

/// Binds the control socket at `path`, replacing a stale one a crashed daemon left behind.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    UnixListener::bind(path)
}

/// Answers `reload` requests with `reload()`'s outcome until `shutdown` is cancelled. One
/// request at a time: reloads are serialized anyway.
pub async fn serve(
    listener: UnixListener,
    reload: impl Fn() -> ReloadOutcome,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!("control socket: cannot accept: {error}");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        if let Err(error) = answer(stream, &reload).await {
            debug!("control socket: {error}");
        }
    }
}

async fn answer(stream: UnixStream, reload: impl Fn() -> ReloadOutcome) -> io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut request = String::new();
    tokio::time::timeout(
        ANSWER_TIMEOUT,
        BufReader::new(reader).read_line(&mut request),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request"))??;
    let outcome = match request.trim_end() {
        RELOAD => reload(),
        other => ReloadOutcome {
            failures: vec![format!("unknown request {other:?}")],
            needs_restart: Vec::new(),
        },
    };
    let mut line = serde_json::to_string(&outcome).map_err(io::Error::other)?;
    line.push('\n');
    writer.write_all(line.as_bytes()).await?;
    writer.shutdown().await
}

/// Asks the daemon listening at `path` to reload; waits for the outcome (at most 30 s).
pub async fn request_reload(path: &Path) -> Result<ReloadOutcome, ControlError> {
    let answer_error = |problem: String| ControlError::Answer {
        path: path.to_owned(),
        problem,
    };
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let conversation = async {
        let (reader, mut writer) = stream.into_split();
        writer.write_all(format!("{RELOAD}\n").as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(reader).read_line(&mut line).await?;
        io::Result::Ok(line)
    };
    let line = tokio::time::timeout(ANSWER_TIMEOUT, conversation)
        .await
        .map_err(|_| answer_error(format!("none within {} s", ANSWER_TIMEOUT.as_secs())))?
        .map_err(|error| answer_error(error.to_string()))?;
    serde_json::from_str(&line).map_err(|error| answer_error(format!("{error}: {line:?}")))
}
