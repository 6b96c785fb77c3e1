//! The daemon as systemd sees it: the real `tagcast` binary, spawned with `NOTIFY_SOCKET`
//! pointing at a Unix datagram socket this test binds, and its logs on stderr.
//!
//! The variables are set on the child only, so nothing races inside the test process.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::{Client, Daemon, WAIT, tags_query};
use tokio::net::UnixDatagram;

/// A `tagcast serve` child process, its config and the notify socket it talks to.
struct Service {
    daemon: Daemon,
    config: PathBuf,
    notify: Option<UnixDatagram>,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts `tagcast serve` on 127.0.0.1, port 0, with `toml` appended to the config and
    /// `env` set on the child. With `notify`, `NOTIFY_SOCKET` names a socket bound here.
    fn start(toml: &str, env: &[(&str, &str)], notify: bool) -> Service {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("tagcast.toml");
        std::fs::write(&config, config_text(toml)).expect("write config");
        let mut command = Daemon::command(&config);
        command
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().copied());
        let notify = notify.then(|| {
            let path = dir.path().join("notify.sock");
            command.env("NOTIFY_SOCKET", &path);
            UnixDatagram::bind(&path).expect("bind the notify socket")
        });
        Service {
            daemon: Daemon::start_with(command),
            config,
            notify,
            _dir: dir,
        }
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
    let mut service = Service::start(
        "[log]\ntarget = \"stderr\"\n",
        &[("WATCHDOG_USEC", "400000")],
        true,
    );

    // READY=1 comes first, once the listener is bound.
    let ready = service.next_message().await;
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
    assert!(
        ready.contains("STATUS=0 connections, auth: off"),
        "{ready:?}"
    );
    let address = service.daemon.ws_address();
    service.wait_for_message("WATCHDOG=1").await;

    // STATUS= follows the connection count.
    let mut client = Client::connect(&url(address)).await;
    service
        .wait_for_message("STATUS=1 connection, auth: off")
        .await;

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1.
    service.daemon.signal("HUP");
    let reloading = service.next_state().await;
    assert!(reloading.contains("RELOADING=1\n"), "{reloading:?}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    let ready = service.next_state().await;
    assert!(ready.contains("READY=1\n"), "{ready:?}");
    assert!(
        ready.contains("STATUS=1 connection, auth: off\n"),
        "{ready:?}"
    );

    // A failed reload still ends with READY=1, and STATUS= says why until a reload succeeds.
    write_config(&service.config, &config_text("[log]\nlevle = \"x\"\n"));
    service.daemon.signal("HUP");
    assert!(service.next_state().await.contains("RELOADING=1\n"));
    let ready = service.next_state().await;
    assert!(ready.contains("READY=1\n"), "{ready:?}");
    assert!(ready.contains("last reload failed"), "{ready:?}");
    assert!(ready.contains("levle"), "{ready:?}");
    service.daemon.wait_for_line("reload failed");
    write_config(
        &service.config,
        &config_text("[log]\ntarget = \"stderr\"\n"),
    );
    service.daemon.signal("HUP");
    assert!(service.next_state().await.contains("RELOADING=1\n"));
    let ready = service.next_state().await;
    assert!(
        ready.contains("READY=1\nSTATUS=1 connection, auth: off\n"),
        "{ready:?}"
    );

    // SIGTERM: STOPPING=1 is sent before the client gets close 1001. (The socket's queue is
    // emptied first: a full queue would block the daemon's sends.)
    let notify = service.notify.as_ref().expect("notify");
    let mut buffer = vec![0; 4096];
    while notify.try_recv(&mut buffer).is_ok() {}
    service.daemon.signal("TERM");
    assert_eq!(client.expect_close().await.0, 1001);
    let mut stopping = false;
    while let Ok(length) = notify.try_recv(&mut buffer) {
        stopping |= String::from_utf8_lossy(&buffer[..length]).contains("STOPPING=1\n");
    }
    assert!(stopping, "STOPPING=1 was not sent before close 1001");
    drop(client);
    assert_eq!(service.daemon.wait().await.code(), Some(0));
}

#[tokio::test]
async fn log_level_filters_and_rust_log_overrides_it() {
    // JOURNAL_STREAM that is not stderr (a shell redirect under systemd): plain lines on stderr.
    let mut debug = Service::start(
        "[log]\nlevel = \"debug\"\n",
        &[("JOURNAL_STREAM", "0:0")],
        false,
    );
    let address = debug.daemon.ws_address();
    let mut client = Client::connect(&url(address)).await;
    client.send("not json").await;
    assert_eq!(client.expect_close().await.0, 4400);
    let opened = debug.daemon.wait_for_line("connection opened");
    assert!(opened.contains("DEBUG"), "{opened}");
    assert!(opened.contains("peer=127.0.0.1:"), "{opened}");
    let refused = debug.daemon.wait_for_line("request refused");
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
    let mut overridden = Service::start(
        "[log]\nlevel = \"error\"\n",
        &[("RUST_LOG", "tagcast=debug")],
        false,
    );
    let address = overridden.daemon.ws_address();
    drop(Client::connect(&url(address)).await);
    overridden.daemon.wait_for_line("connection opened");

    // A bad RUST_LOG is reported and log.level applies.
    let mut bad = Service::start(
        "[log]\nlevel = \"info\"\n",
        &[("RUST_LOG", "tagcast=loud")],
        false,
    );
    bad.daemon.wait_for_line("RUST_LOG is invalid");
    bad.daemon.ws_address();
}

#[tokio::test]
async fn log_target_journald_falls_back_to_stderr_with_a_note() {
    let mut service = Service::start("[log]\ntarget = \"journald\"\n", &[], true);
    let ready = service.next_message().await;
    assert!(ready.contains("READY=1\n"), "{ready:?}");
    if Path::new("/run/systemd/journal/socket").exists() {
        // A machine with a journal: the lines went there, none to stderr.
        let log = service.daemon.log_so_far();
        assert!(
            !log.iter().any(|line| line.contains("listening")),
            "{log:#?}"
        );
    } else {
        service.daemon.wait_for_line("the journal is unreachable");
        service.daemon.ws_address();
    }
}

/// `tagcast ARGS...` with `RUNTIME_DIRECTORY` set to `runtime`: its exit code, stdout and stderr.
fn tagcast(runtime: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(common::TAGCAST)
        .args(args)
        .env("RUNTIME_DIRECTORY", runtime)
        .output()
        .expect("run tagcast");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8");
    (
        output.status.code(),
        text(output.stdout),
        text(output.stderr),
    )
}

fn applications(secret: &str) -> String {
    format!("applications:\n  - key: app\n    secret: {secret}\n    authorizeOpen: true\n")
}

#[tokio::test]
async fn tagcast_reload_waits_for_the_outcome_and_fails_with_the_reason() {
    let files = tempfile::tempdir().expect("tempdir");
    let (runtime, auth) = (files.path().join("run"), files.path().join("auth.yml"));
    std::fs::create_dir(&runtime).expect("runtime directory");
    std::fs::write(&auth, applications("old-secret")).expect("write auth.yml");
    let auth_section = format!("[log]\ntarget = \"stderr\"\n[auth]\nfile = {auth:?}\n");
    let runtime_env = runtime.to_str().expect("UTF-8 path");
    let mut service = Service::start(&auth_section, &[("RUNTIME_DIRECTORY", runtime_env)], false);
    let address = service.daemon.ws_address();
    let socket = runtime.join("control");
    common::wait_until(|| socket.exists(), "the control socket").await;
    let send = |secret: &str| {
        let url = format!("ws://{address}/");
        let args = [
            "send", "--url", &url, "--key", "app", "--secret", secret, "hi",
        ];
        tagcast(&runtime, &args).0
    };

    let (code, stdout, _) = tagcast(&runtime, &["reload"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "reload done\n"));

    // A broken auth file: exit 1 naming the file and the problem; the old secret still works.
    std::fs::write(
        &auth,
        "applications:\n  - key: app\n    authorizeOpen: true\n",
    )
    .expect("break auth.yml");
    let (code, _, stderr) = tagcast(&runtime, &["reload"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(auth.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("secret"), "{stderr}");
    assert!(
        stderr.contains("the previous settings stay in force"),
        "{stderr}"
    );
    service.daemon.wait_for_line("reload failed");
    assert_eq!(send("old-secret"), Some(0));

    // A changed port cannot apply live: named as needing a restart, in the output and the log.
    std::fs::write(&auth, applications("new-secret")).expect("repair auth.yml");
    let moved = config_text(&auth_section).replace("port = 0", "port = 9");
    write_config(&service.config, &moved);
    let (code, stdout, stderr) = tagcast(&runtime, &["reload"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with("needs restart: server.port "),
        "{stdout}"
    );
    assert!(stdout.ends_with("reload done\n"), "{stdout}");
    service.daemon.wait_for_line("needs restart: server.port");
    assert_eq!(send("new-secret"), Some(0), "the auth file was reloaded");
    assert_eq!(send("old-secret"), Some(1));

    // No daemon there: says so.
    drop(service);
    let (code, _, stderr) = tagcast(&runtime, &["reload"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot reach the daemon"), "{stderr}");
}

#[tokio::test]
async fn key_events_carry_their_message_id() {
    use tagcast::ops::logging::message_id;
    let with_id = |id: &str| format!("message_id=\"{id}\"");
    let mut service = Service::start(
        "[log]\ntarget = \"stderr\"\n[limits]\nsend_queue_bytes = 65536\n",
        &[],
        false,
    );
    service.daemon.wait_for_line(&with_id(message_id::STARTED));
    let address = service.daemon.ws_address();
    service.daemon.wait_for_line(&with_id(message_id::READY));

    // A client that never reads, and messages until its socket buffers and its queue are full.
    let _stalled =
        common::RawClient::upgrade(address, &format!("/{}", tags_query(r#"{"room":"a"}"#))).await;
    let mut publisher = Client::connect(&format!("ws://{address}/")).await;
    let big = format!("\"{}\"", "x".repeat(60_000));
    let slow_line = with_id(message_id::SLOW_CLIENT_CLOSED);
    let slow_closed = |daemon: &mut common::Daemon| {
        daemon
            .log_so_far()
            .iter()
            .any(|line| line.contains(&slow_line))
    };
    for _ in 0..2_000 {
        if slow_closed(&mut service.daemon) {
            break;
        }
        publisher.publish(&big, r#"{"room":"a"}"#).await;
    }
    let line = service.daemon.wait_for_line(&slow_line);
    assert!(line.contains("slow client closed with 4429"), "{line}");

    service.daemon.signal("HUP");
    service
        .daemon
        .wait_for_line(&with_id(message_id::RELOAD_DONE));
    write_config(&service.config, &config_text("[log]\nlevle = \"x\"\n"));
    service.daemon.signal("HUP");
    service
        .daemon
        .wait_for_line(&with_id(message_id::RELOAD_FAILED));
    service.daemon.signal("TERM");
    service.daemon.wait_for_line(&with_id(message_id::SHUTDOWN));
}
