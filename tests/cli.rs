//! The real `tagcast` binary: `check`, and `serve` started, used and stopped with SIGTERM.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::{Daemon, TAGCAST};

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("tagcast.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_a_good_config_and_names_the_key_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(&dir, "[server]\nport = 9000\n");
    let output = Command::new(TAGCAST)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "{}: ok\nws: 0.0.0.0:9000\nno auth file: anyone may open and send\n\
             messages: parser string, at most 65536 bytes\n",
            good.display()
        )
    );

    for (text, named) in [
        ("[server]\nprot = 9000\n", "unknown field `prot`"),
        (
            "[limits]\nsend_queue = 1024\n",
            "limits.send_queue (a count of messages) is replaced by limits.send_queue_bytes",
        ),
        ("[messages]\nparser = \"xml\"\n", "unknown variant `xml`"),
        (
            "[limits]\nmax_connections = 0\n",
            "key `limits.max_connections`: must be greater than 0",
        ),
    ] {
        let bad = write_config(&dir, text);
        let output = Command::new(TAGCAST)
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
    let output = Command::new(TAGCAST)
        .args(["serve", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml: cannot read"));
}

/// Starts `tagcast serve` on 127.0.0.1 port 0 and returns it with the ws address it logged.
fn start_daemon(dir: &tempfile::TempDir) -> (Daemon, SocketAddr) {
    let config = write_config(
        dir,
        "[server]\naddress = \"127.0.0.1\"\nport = 0\n[http]\nadmin_address = \"\"\n[log]\ntarget = \"stderr\"\n",
    );
    let mut daemon = Daemon::start(&config);
    let address = daemon.ws_address();
    (daemon, address)
}

#[tokio::test]
async fn serve_routes_then_sigterm_closes_clients_with_1001_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, address) = start_daemon(&dir);
    let url = format!("ws://{address}/");
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
    assert_eq!(daemon.wait().await.code(), Some(0));
}

/// Every refusal is logged once, as a notice (INFO), with the connection's fields: a request
/// refused with 4400, a frame too large (1009), and plain HTTP answers 400 and 413.
#[tokio::test]
async fn every_refusal_is_logged_once_at_info_with_the_connections_fields() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        "[server]\naddress = \"127.0.0.1\"\nport = 0\n[messages]\nmax_size = 100\n\
         [http]\nadmin_address = \"\"\n[log]\ntarget = \"stderr\"\n",
    );
    let mut daemon = Daemon::start(&config);
    let address = daemon.ws_address();
    let url = format!("ws://{address}/");

    let mut invalid = common::Client::connect(&url).await;
    invalid.send("not json").await;
    assert_eq!(invalid.expect_close().await.0, 4400);
    let mut too_large = common::Client::connect(&url).await;
    too_large.send(&"x".repeat(200)).await;
    assert_eq!(too_large.expect_close().await.0, 1009);
    for body in [
        "{}".to_owned(),
        format!(r#"{{"message":"{}"}}"#, "x".repeat(200)),
    ] {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
    }

    for (text, fields) in [
        (
            "request refused with 4400",
            &["INFO", "conn=", "peer=127.0.0.1:"][..],
        ),
        (
            "request refused with 1009",
            &["INFO", "conn=", "peer=127.0.0.1:"],
        ),
        (
            "http request refused with 400",
            &["INFO", "peer=127.0.0.1:", "path=/publish"],
        ),
        (
            "http request refused with 413",
            &["INFO", "peer=127.0.0.1:", "path=/publish"],
        ),
    ] {
        let line = daemon.wait_for_line(text);
        for field in fields {
            assert!(line.contains(field), "{field} not in {line}");
        }
    }
    // Once each: the 4400 and 1009 closes are not logged again when the connections end.
    daemon.signal("TERM");
    daemon.wait().await;
    let log = daemon.log_so_far().to_vec();
    for text in ["refused with 4400", "refused with 1009"] {
        let count = log.iter().filter(|line| line.contains(text)).count();
        assert_eq!(count, 1, "{text}: {log:#?}");
    }
}
