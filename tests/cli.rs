//! The real `tagcast` binary: `check`, and `serve` started, used and stopped with SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BINARY: &str = env!("CARGO_BIN_EXE_tagcast");

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("tagcast.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_a_good_config_and_names_the_key_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(&dir, "[server]\nport = 9000\n");
    let output = Command::new(BINARY)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "{}: ok\nno auth file: anyone may open and send\n",
            good.display()
        )
    );

    for (text, named) in [
        ("[server]\nprot = 9000\n", "unknown field `prot`"),
        ("[limits]\nsend_queue = -1\n", "send_queue"),
        ("[messages]\nparser = \"xml\"\n", "unknown variant `xml`"),
        (
            "[limits]\nmax_connections = 0\n",
            "key `limits.max_connections`: must be greater than 0",
        ),
    ] {
        let bad = write_config(&dir, text);
        let output = Command::new(BINARY)
            .args(["check", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(78), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&bad.display().to_string()), "{stderr}");
        assert!(stderr.contains(named), "{stderr} should name {named}");
    }
    let missing = dir.path().join("missing.toml");
    let output = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml: cannot read"));
}

/// A `tagcast serve` process and the address it reported.
struct Daemon {
    child: Child,
    address: String,
}

impl Daemon {
    /// Starts the server on 127.0.0.1 port 0 and waits for its "listening" log line.
    fn start(dir: &tempfile::TempDir) -> Daemon {
        let config = write_config(
            dir,
            "[server]\naddress = \"127.0.0.1\"\nport = 0\n[http]\nadmin_address = \"\"\n[log]\ntarget = \"stderr\"\n",
        );
        let mut child = Command::new(BINARY)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(rest) = line.split("address=").nth(1) {
                    if line.contains("listening for ws") {
                        let _ =
                            sender.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                    }
                }
            }
        });
        let address = receiver
            .recv_timeout(common::WAIT)
            .expect("the server never said where it listens");
        Daemon { child, address }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn serve_routes_then_sigterm_closes_clients_with_1001_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(&dir);
    let url = format!("ws://{}/", daemon.address);
    let mut fr = common::Client::connect(&format!(
        "{url}{}",
        common::tags_query(r#"{"language":"FR"}"#)
    ))
    .await;
    let mut sender = common::Client::connect(&url).await;
    sender
        .publish(r#""Bonjour !""#, r#"{"language":"FR"}"#)
        .await;
    assert_eq!(fr.recv().await, r#""Bonjour !""#);

    daemon.signal("TERM");
    assert_eq!(
        fr.expect_close().await,
        (1001, "server shutting down".into())
    );
    assert_eq!(sender.expect_close().await.0, 1001);
    // Hanging up answers the close: the daemon need not wait out its grace period.
    drop((fr, sender));
    let status = tokio::task::spawn_blocking(move || {
        let status = daemon.child.wait().unwrap();
        std::mem::forget(daemon);
        status
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
}
