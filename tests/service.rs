//! The daemon as systemd sees it: the real `tagcast` binary, spawned with `NOTIFY_SOCKET`
//! pointing at a Unix datagram socket this test binds, and its logs on stderr.
//!
//! The variables are set on the child only, so nothing races inside the test process.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Client, WAIT, tags_query};
use tokio::net::UnixDatagram;

/// A `tagcast serve` child process and what it says.
struct Daemon {
    child: Child,
    config: PathBuf,
    notify: Option<UnixDatagram>,
    stderr: mpsc::Receiver<String>,
    /// Every stderr line read so far.
    log: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `tagcast serve` on 127.0.0.1, port 0, with `toml` appended to the config and
    /// `env` set on the child. With `notify`, `NOTIFY_SOCKET` names a socket bound here.
    fn start(toml: &str, env: &[(&str, &str)], notify: bool) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("tagcast.toml");
        std::fs::write(&config, config_text(toml)).expect("write config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tagcast"));
        command
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let notify = notify.then(|| {
            let path = dir.path().join("notify.sock");
            command.env("NOTIFY_SOCKET", &path);
            UnixDatagram::bind(&path).expect("bind the notify socket")
        });
        let mut child = command.spawn().expect("spawn tagcast");
        let stderr = child.stderr.take().expect("piped stderr");
        let (lines, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        Daemon {
            child,
            config,
            notify,
            stderr: receiver,
            log: Vec::new(),
            _dir: dir,
        }
    }

    /// Waits for a stderr line containing `text`; returns it.
    fn wait_for_log(&mut self, text: &str) -> String {
        if let Some(line) = self.log.iter().find(|line| line.contains(text)) {
            return line.clone();
        }
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line with {text:?}; stderr so far: {:#?}", self.log),
            }
        }
    }

    /// The ws address, from the "listening for ws" line.
    fn address(&mut self) -> SocketAddr {
        let line = self.wait_for_log("listening for ws");
        let address = line
            .split("address=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        address.parse().expect("a socket address")
    }

    /// The next notify datagram, within [`WAIT`].
    async fn next_message(&self) -> String {
        let socket = self.notify.as_ref().expect("started with notify");
        let mut buffer = vec![0; 4096];
        let length = tokio::time::timeout(WAIT, socket.recv(&mut buffer))
            .await
            .expect("a notify message in time")
            .expect("recv");
        String::from_utf8(buffer[..length].to_vec()).expect("UTF-8")
    }

    /// Skips datagrams until one has the line `line` (e.g. `READY=1`); returns that datagram.
    async fn wait_for_message(&self, line: &str) -> String {
        loop {
            let message = self.next_message().await;
            if message.lines().any(|got| got == line) {
                return message;
            }
        }
    }

    /// The next datagram that is neither `WATCHDOG=1` nor a lone `STATUS=`.
    async fn next_state(&self) -> String {
        loop {
            let message = self.next_message().await;
            if message
                .lines()
                .any(|line| !line.starts_with("STATUS=") && line != "WATCHDOG=1")
            {
                return message;
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the child to exit; returns its exit code.
    async fn exit_code(&mut self) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if tokio::time::Instant::now() > deadline {
                self.log.extend(self.stderr.try_iter());
                panic!("tagcast did not exit; stderr: {:#?}", self.log);
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

fn config_text(extra: &str) -> String {
    // No admin listener: its fixed default port would collide between parallel tests.
    format!("[server]\naddress = \"127.0.0.1\"\nport = 0\n[http]\nadmin_address = \"\"\n{extra}")
}

fn url(address: SocketAddr) -> String {
    format!("ws://{address}/{}", tags_query(r#"{"room":"a"}"#))
}

fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

#[tokio::test]
async fn systemd_hears_ready_status_reload_watchdog_and_stopping() {
    let mut daemon = Daemon::start(
        "[log]\ntarget = \"stderr\"\n",
        &[("WATCHDOG_USEC", "400000")],
        true,
    );

    // READY=1 comes first, once the listener is bound.
    let ready = daemon.next_message().await;
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
    assert!(
        ready.contains("STATUS=0 connections, auth: off"),
        "{ready:?}"
    );
    let address = daemon.address();
    daemon.wait_for_message("WATCHDOG=1").await;

    // STATUS= follows the connection count.
    let mut client = Client::connect(&url(address)).await;
    daemon
        .wait_for_message("STATUS=1 connection, auth: off")
        .await;

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1.
    daemon.signal("HUP");
    let reloading = daemon.next_state().await;
    assert!(reloading.contains("RELOADING=1\n"), "{reloading:?}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    let ready = daemon.next_state().await;
    assert!(ready.contains("READY=1\n"), "{ready:?}");
    assert!(
        ready.contains("STATUS=1 connection, auth: off\n"),
        "{ready:?}"
    );

    // A failed reload still ends with READY=1, and STATUS= says why until a reload succeeds.
    write_config(&daemon.config, &config_text("[log]\nlevle = \"x\"\n"));
    daemon.signal("HUP");
    assert!(daemon.next_state().await.contains("RELOADING=1\n"));
    let ready = daemon.next_state().await;
    assert!(ready.contains("READY=1\n"), "{ready:?}");
    assert!(ready.contains("last reload failed"), "{ready:?}");
    assert!(ready.contains("levle"), "{ready:?}");
    daemon.wait_for_log("reload failed");
    write_config(&daemon.config, &config_text("[log]\ntarget = \"stderr\"\n"));
    daemon.signal("HUP");
    assert!(daemon.next_state().await.contains("RELOADING=1\n"));
    let ready = daemon.next_state().await;
    assert!(
        ready.contains("READY=1\nSTATUS=1 connection, auth: off\n"),
        "{ready:?}"
    );

    // SIGTERM: STOPPING=1 is sent before the client gets close 1001. (The socket's queue is
    // emptied first: a full queue would block the daemon's sends.)
    let notify = daemon.notify.as_ref().expect("notify");
    let mut buffer = vec![0; 4096];
    while notify.try_recv(&mut buffer).is_ok() {}
    daemon.signal("TERM");
    assert_eq!(client.expect_close().await.0, 1001);
    let mut stopping = false;
    while let Ok(length) = notify.try_recv(&mut buffer) {
        stopping |= String::from_utf8_lossy(&buffer[..length]).contains("STOPPING=1\n");
    }
    assert!(stopping, "STOPPING=1 was not sent before close 1001");
    drop(client);
    assert_eq!(daemon.exit_code().await, Some(0));
}

#[tokio::test]
async fn log_level_filters_and_rust_log_overrides_it() {
    // JOURNAL_STREAM that is not stderr (a shell redirect under systemd): plain lines on stderr.
    let mut debug = Daemon::start(
        "[log]\nlevel = \"debug\"\n",
        &[("JOURNAL_STREAM", "0:0")],
        false,
    );
    let address = debug.address();
    let mut client = Client::connect(&url(address)).await;
    client.send("not json").await;
    assert_eq!(client.expect_close().await.0, 4400);
    let opened = debug.wait_for_log("connection opened");
    assert!(opened.contains("DEBUG"), "{opened}");
    assert!(opened.contains("peer=127.0.0.1:"), "{opened}");
    let refused = debug.wait_for_log("request refused");
    assert!(
        refused.contains(" INFO "),
        "a client's mistake is not an error: {refused}"
    );
    assert!(refused.contains("code=4400"), "{refused}");
    assert!(
        !refused.contains('\u{1b}'),
        "no colours in a pipe: {refused}"
    );

    // RUST_LOG wins over log.level.
    let mut overridden = Daemon::start(
        "[log]\nlevel = \"error\"\n",
        &[("RUST_LOG", "tagcast=debug")],
        false,
    );
    let address = overridden.address();
    drop(Client::connect(&url(address)).await);
    overridden.wait_for_log("connection opened");

    // A bad RUST_LOG is reported and log.level applies.
    let mut bad = Daemon::start(
        "[log]\nlevel = \"info\"\n",
        &[("RUST_LOG", "tagcast=loud")],
        false,
    );
    bad.wait_for_log("RUST_LOG is invalid");
    bad.address();
}

#[tokio::test]
async fn log_target_journald_falls_back_to_stderr_with_a_note() {
    let mut daemon = Daemon::start("[log]\ntarget = \"journald\"\n", &[], true);
    let ready = daemon.next_message().await;
    assert!(ready.contains("READY=1\n"), "{ready:?}");
    if Path::new("/run/systemd/journal/socket").exists() {
        // A machine with a journal: the lines went there, none to stderr.
        daemon.log.extend(daemon.stderr.try_iter());
        assert!(
            !daemon.log.iter().any(|line| line.contains("listening")),
            "{:#?}",
            daemon.log
        );
    } else {
        daemon.wait_for_log("the journal is unreachable");
        daemon.address();
    }
}
