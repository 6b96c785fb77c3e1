//! `tagcast send` and `tagcast listen` (SPEC §5), running the real binary against a server on
//! port 0.

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Output, Stdio};

use common::{TestServer, WAIT};
use tagcast::client::{WebSocketClient, WebSocketRequest, connect_with_tags};
use tokio::sync::mpsc;

/// Runs `tagcast ARGS...` to completion off the runtime's threads.
async fn tagcast(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tagcast"));
    command.args(args);
    let running = tokio::task::spawn_blocking(move || command.output());
    tokio::time::timeout(WAIT, running)
        .await
        .expect("tagcast did not finish")
        .expect("join")
        .expect("run tagcast")
}

#[tokio::test]
async fn send_delivers_and_exits_0() {
    let server = TestServer::start("").await;
    let mut listener = connect_with_tags(&server.url(""), [("language", "FR")])
        .await
        .unwrap();
    server.wait_for_connections(1).await;

    let url = server.url("");
    let output = tagcast(&["send", "--url", &url, "--tag", "language=FR", "Bonjour !"]).await;
    assert!(output.status.success(), "{output:?}");
    let message = tokio::time::timeout(WAIT, listener.next::<String>())
        .await
        .unwrap();
    assert_eq!(message.unwrap().as_deref(), Some("Bonjour !"));
}

#[tokio::test]
async fn send_exits_1_with_the_close_code_and_reason_when_refused() {
    let server = TestServer::start("").await;
    let url = server.url("");
    // The default `string` parser refuses an object.
    let output = tagcast(&["send", "--url", &url, "--json", r#"{"a":1}"#]).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("4400"), "{stderr}");
    assert!(stderr.contains("messages.parser"), "{stderr}");
}

#[tokio::test]
async fn send_says_when_the_server_is_unreachable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("ws://127.0.0.1:{port}/");
    let output = tagcast(&["send", "--url", &url, "x"]).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to"), "{stderr}");
}

/// `tagcast listen` running, with its stdout lines arriving on a channel.
struct Listen {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Listen {
    fn start(args: &[&str]) -> Listen {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tagcast"))
            .arg("listen")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tagcast listen");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Listen { child, lines }
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.lines.recv())
            .await
            .expect("timed out waiting for a line")
            .expect("tagcast listen ended")
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn listen_prints_one_message_per_line() {
    let server = TestServer::start("[messages]\nparser = \"json\"\n").await;
    let url = server.url("");
    let mut listen = Listen::start(&["--url", &url, "--tag", "language=FR"]);
    server.wait_for_connections(1).await;

    let mut client = WebSocketClient::connect(&url).await.unwrap();
    for (message, language) in [
        (serde_json::json!("Bonjour !"), "FR"),
        (serde_json::json!("Hello"), "EN"),
        (serde_json::json!({"z": 1, "a": "multi\nline"}), "FR"),
    ] {
        let request = WebSocketRequest::create(message).tags([("language", language)]);
        client.send(&request).await.unwrap();
    }
    assert_eq!(listen.line().await, r#""Bonjour !""#);
    assert_eq!(listen.line().await, r#"{"z":1,"a":"multi\nline"}"#);
}

#[tokio::test]
async fn listen_exits_1_naming_the_close_code() {
    let server = TestServer::start("").await;
    let url = server.url("");
    let mut listen = Listen::start(&["--url", &url]);
    server.wait_for_connections(1).await;
    server.shutdown.cancel();
    let child = std::cell::RefCell::new(&mut listen.child);
    common::wait_until(
        || matches!(child.borrow_mut().try_wait(), Ok(Some(_))),
        "tagcast listen to exit",
    )
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut listen.child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("1001"), "{stderr}");
    assert_eq!(
        listen
            .child
            .try_wait()
            .unwrap()
            .and_then(|status| status.code()),
        Some(1)
    );
}
