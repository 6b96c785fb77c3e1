//! `tagcast send` and `tagcast listen` (SPEC §5), running the real binary against a server on
//! port 0.

mod common;

use std::process::{Child, Command, Output, Stdio};

use common::{TAGCAST, TestServer, WAIT};
use tagcast::client::{WebSocketClient, WebSocketRequest, connect_with_tags};
use tokio::sync::mpsc;

/// Runs `tagcast ARGS...` to completion off the runtime's threads.
async fn tagcast(args: &[&str]) -> Output {
    tagcast_with_stdin(args, Vec::new()).await
}

/// Runs `tagcast ARGS...` with `stdin` as its standard input.
async fn tagcast_with_stdin(args: &[&str], stdin: Vec<u8>) -> Output {
    let mut command = Command::new(TAGCAST);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let running = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn()?;
        let mut input = child.stdin.take().expect("piped stdin");
        // Written beside the child, so that a large input cannot block on a full pipe.
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut input, &stdin));
        let output = child.wait_with_output();
        let _ = writer.join();
        output
    });
    tokio::time::timeout(WAIT, running)
        .await
        .expect("tagcast did not finish")
        .expect("join")
        .expect("run tagcast")
}

/// Asserts that `output` failed with `code` and printed exactly `line` (one line) on stderr.
fn assert_one_line_error(output: &Output, code: i32, line: &str) {
    assert_eq!(output.status.code(), Some(code), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stderr), format!("{line}\n"));
}

/// A port nobody listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
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
async fn send_says_when_the_server_is_unreachable_in_one_line() {
    let url = format!("ws://127.0.0.1:{}/", dead_port());
    for command in ["send", "listen"] {
        let args = match command {
            "send" => vec![command, "--url", &url, "x"],
            _ => vec![command, "--url", &url],
        };
        let output = tagcast(&args).await;
        assert_one_line_error(
            &output,
            1,
            &format!("tagcast: cannot connect to {url}: Connection refused (os error 111)"),
        );
    }
}

/// A refused handshake shows the HTTP status and the server's plain-text reason.
#[tokio::test]
async fn a_refused_handshake_shows_the_status_and_the_servers_reason() {
    let server = TestServer::start("").await;
    let url = server.url("");
    let tag = format!("a={}", "x".repeat(300));
    let output = tagcast(&["listen", "--url", &url, "--tag", &tag]).await;
    assert_one_line_error(
        &output,
        1,
        &format!(
            "tagcast: cannot connect to {url}: the server refused the upgrade with HTTP 400 Bad \
             Request: bad tags: tag \"a\" has a value longer than 256 bytes"
        ),
    );
}

#[tokio::test]
async fn refused_tag_forms_say_what_is_wrong() {
    let url = format!("ws://127.0.0.1:{}/", dead_port());
    for command in ["send", "listen"] {
        let output = tagcast(&[command, "--url", &url, "--tag", "=FR"]).await;
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.lines().next(),
            Some(
                r#"error: invalid value '=FR' for '--tag <NAME=VALUE>': "=FR" has no tag name before '='"#
            ),
            "{stderr}"
        );
        let mut args = vec![
            command, "--url", &url, "--tag", "a=1", "--tag", "b=1", "--tag", "a=2",
        ];
        if command == "send" {
            args.push("x");
        }
        // Refused before connecting: the dead port is never tried.
        assert_one_line_error(
            &tagcast(&args).await,
            1,
            r#"tagcast: --tag a=2: the tag "a" is already given (--tag a=1); a tag name has one value"#,
        );
    }
}

/// `send -` reads the message from stdin, `--file` from a file: a 1 MB message, past what a
/// command line takes.
#[tokio::test]
async fn send_reads_a_large_message_from_stdin_or_a_file() {
    let server = TestServer::start("[messages]\nmax_size = 2000000\n").await;
    let url = server.url("");
    let mut listener = connect_with_tags(&url, [("big", "1")]).await.unwrap();
    server.wait_for_connections(1).await;
    let message = "é".repeat(500_000);
    let args = ["send", "--url", &url, "--tag", "big=1", "-"];
    let output = tagcast_with_stdin(&args, format!("{message}\n").into_bytes()).await;
    assert!(output.status.success(), "{output:?}");
    let received = tokio::time::timeout(WAIT, listener.next::<String>()).await;
    assert_eq!(
        received.unwrap().unwrap().as_deref(),
        Some(message.as_str())
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("message.json");
    std::fs::write(&path, r#"{"text": "from a file"}"#).unwrap();
    let server = TestServer::start("[messages]\nparser = \"json\"\n").await;
    let url = server.url("");
    let mut listener = connect_with_tags(&url, [("big", "1")]).await.unwrap();
    server.wait_for_connections(1).await;
    let file = path.display().to_string();
    let args = [
        "send", "--url", &url, "--tag", "big=1", "--json", "--file", &file,
    ];
    assert!(tagcast(&args).await.status.success());
    let received = tokio::time::timeout(WAIT, listener.next::<serde_json::Value>()).await;
    assert_eq!(
        received.unwrap().unwrap(),
        Some(serde_json::json!({"text": "from a file"}))
    );
    let missing = dir.path().join("missing.txt").display().to_string();
    let output = tagcast(&["send", "--url", &url, "--file", &missing]).await;
    assert_one_line_error(
        &output,
        1,
        &format!(
            "tagcast: --file {missing}: cannot read it: No such file or directory (os error 2)"
        ),
    );
}

/// A server certificate for 127.0.0.1 and localhost, self-signed, written to `dir`: a server
/// certificate, or (`ca`) a CA certificate used as one. Returns the certificate and key paths.
fn certificate(dir: &std::path::Path, ca: bool) -> (String, String) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tagcast test");
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = params.self_signed(&key).unwrap();
    let name = if ca { "ca" } else { "server" };
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, certificate.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

async fn wss_server(cert: &str, key: &str) -> (TestServer, String) {
    let server = TestServer::start(&format!("[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n")).await;
    let url = format!("wss://{}/", server.tls_address.expect("a wss listener"));
    (server, url)
}

/// `--ca FILE` trusts a test certificate, `--insecure` any; without them the certificate is
/// refused in words, not as a library's Rust value.
#[tokio::test]
async fn send_and_listen_over_wss_with_ca_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), false);
    let (server, url) = wss_server(&cert, &key).await;
    let mut listen = Listen::start(&["--url", &url, "--ca", &cert, "--tag", "language=FR"]);
    server.wait_for_connections(1).await;
    for (trust, message) in [
        (&["--ca", &cert][..], "trusted"),
        (&["--insecure"], "insecure"),
    ] {
        let args = [
            &["send", "--url", &url, "--tag", "language=FR"],
            trust,
            &[message],
        ]
        .concat();
        let output = tagcast(&args).await;
        assert!(output.status.success(), "{output:?}");
        assert_eq!(listen.line().await, format!("\"{message}\""));
    }
    assert_one_line_error(
        &tagcast(&["send", "--url", &url, "x"]).await,
        1,
        &format!(
            "tagcast: cannot connect to {url}: the server's certificate is not signed by a \
             certificate authority this client trusts"
        ),
    );

    // A CA certificate served as the server's: `openssl req -x509`'s default, refused by name.
    let (ca_cert, ca_key) = certificate(dir.path(), true);
    let (_ca_server, ca_url) = wss_server(&ca_cert, &ca_key).await;
    assert_one_line_error(
        &tagcast(&["send", "--url", &ca_url, "--ca", &ca_cert, "x"]).await,
        1,
        &format!(
            "tagcast: cannot connect to {ca_url}: the server's certificate is a CA certificate \
             (basicConstraints CA:TRUE), not a server certificate"
        ),
    );
}

/// `bench` against a dead port names the URL, and prints no table first.
#[tokio::test]
async fn bench_names_the_url_it_cannot_reach() {
    let url = format!("ws://127.0.0.1:{}", dead_port());
    let output = tagcast(&["bench", "--url", &url]).await;
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    assert_one_line_error(
        &output,
        1,
        &format!("tagcast: cannot connect to {url}: connect: Connection refused (os error 111)"),
    );
}

/// `tagcast listen` running, with its stdout lines arriving on a channel.
struct Listen {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Listen {
    fn start(args: &[&str]) -> Listen {
        let mut child = Command::new(TAGCAST)
            .arg("listen")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tagcast listen");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::unbounded_channel();
        common::forward_lines(stdout, move |line| sender.send(line).is_ok());
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

/// `tagcast check` says what it looked at: the listeners, the certificate's subject and expiry,
/// the auth file's applications, the parser.
#[tokio::test]
async fn check_names_what_it_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), false);
    let auth = dir.path().join("auth.yml");
    std::fs::write(
        &auth,
        "applications:\n  - key: a\n    secret: s\n    authorizeOpen: true\n  \
         - key: b\n    secret: t\n    authorizeOpen: false\n",
    )
    .unwrap();
    let config = dir.path().join("tagcast.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nport = 8443\n\
             [auth]\nfile = \"{}\"\n[messages]\nparser = \"json\"\n",
            auth.display()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let output = tagcast(&["check", "--config", &config, "--address", "127.0.0.1"]).await;
    assert!(output.status.success(), "{output:?}");
    // rcgen's not_after: 2030-01-01T00:00:00Z.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let days = (1_893_456_000 - now) / 86_400;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "{config}: ok\nws: 127.0.0.1:8080\nwss: 127.0.0.1:8443\n\
             {cert}: ok, certificate for CN=tagcast test, valid until Jan  1 00:00:00 2030 +00:00 \
             ({days} days left), key matches\n\
             {}: ok, 2 applications\n\
             messages: parser json, at most 65536 bytes\n",
            auth.display()
        )
    );
}

/// The lines of the README's `sh` block that follows `<!-- MARKER`.
fn readme_block(marker: &str) -> Vec<String> {
    let readme = include_str!("../README.md");
    let (_, after) = readme
        .split_once(&format!("<!-- {marker}"))
        .unwrap_or_else(|| panic!("no <!-- {marker} in README.md"));
    let (_, block) = after.split_once("```sh\n").expect("an sh block");
    let (block, _) = block.split_once("```").expect("the block's end");
    block.lines().map(str::to_owned).collect()
}

/// A command of the README left running in the background (`... &`): its stdout and stderr lines
/// arrive on channels; killed when dropped.
struct Background {
    child: Child,
    stdout: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Background {
    /// Waits for a stderr line containing `text`.
    fn wait_for_stderr(&self, text: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(_) => panic!("no stderr line with {text:?} within {WAIT:?}"),
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the README lines as a newcomer types them, one by one, in `dir`: `tagcast` is this
/// build's binary (on PATH, as `cargo install` would put it; the `cargo` line itself is not
/// run), each `(from, to)` of `ports` replaced. A background server is waited for until it
/// listens, a background listener until it is connected. Returns the background commands.
fn run_readme_lines(
    lines: &[String],
    dir: &std::path::Path,
    ports: &[(&str, u16)],
) -> Vec<Background> {
    let bin = std::path::Path::new(TAGCAST).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let uses_wss = lines.iter().any(|line| line.contains("wss://"));
    let mut background = Vec::new();
    for line in lines.iter().filter(|line| !line.starts_with("cargo ")) {
        let mut line = line.clone();
        for (from, to) in ports {
            line = line.replace(from, &to.to_string());
        }
        let (line, in_background) = match line.strip_suffix(" &") {
            Some(command) => (command.to_owned(), true),
            None => (line, false),
        };
        let mut command = Command::new("sh");
        command
            .args(["-c", &format!("exec {line}")])
            .current_dir(dir)
            .env("PATH", &path)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !in_background {
            let output = command.output().expect("run a README line");
            assert!(output.status.success(), "{line}: {output:?}");
            continue;
        }
        let mut child = command.spawn().expect("start a README line");
        let (out, stdout) = std::sync::mpsc::channel();
        let (err, stderr) = std::sync::mpsc::channel();
        common::forward_lines(child.stdout.take().unwrap(), move |line| {
            out.send(line).is_ok()
        });
        common::forward_lines(child.stderr.take().unwrap(), move |line| {
            err.send(line).is_ok()
        });
        let running = Background {
            child,
            stdout,
            stderr,
        };
        if line.starts_with("tagcast serve") {
            running.wait_for_stderr(if uses_wss {
                "listening for wss"
            } else {
                "listening for ws "
            });
        } else if line.starts_with("tagcast listen") {
            running.wait_for_stderr("tagcast: connected to");
        }
        background.push(running);
    }
    background
}

/// Held by a test that runs a README server: as written, it binds the default admin port
/// (127.0.0.1:9108), which only one server at a time can.
static README_SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The next stdout line of a background command.
fn next_line(running: &Background) -> String {
    running.stdout.recv_timeout(WAIT).expect("a line on stdout")
}

/// The README's 30-second try works as written (on free ports): the FR listener gets the
/// message, the EN one nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_quick_try_works_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let lines = readme_block("quick-try");
    let _admin_port = README_SERVER.lock().await;
    let port = dead_port();
    let running = tokio::task::spawn_blocking(move || {
        let running = run_readme_lines(&lines, dir.path(), &[("8080", port)]);
        (running, dir)
    })
    .await
    .unwrap()
    .0;
    let [_server, french, english] = &running[..] else {
        panic!("the quick try starts a server and two listeners");
    };
    assert_eq!(next_line(french), r#""Bonjour !""#);
    assert!(english.stdout.try_recv().is_err(), "EN got a message");
}

/// The README's wss try works as written (on free ports): openssl's certificate, `check`, a
/// wss listener trusting it with `--ca`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs openssl"]
async fn the_readme_wss_try_works_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let lines = readme_block("wss-try");
    let _admin_port = README_SERVER.lock().await;
    let ports = [("8080", dead_port()), ("8443", dead_port())];
    let running = tokio::task::spawn_blocking(move || {
        let running = run_readme_lines(&lines, dir.path(), &ports);
        (running, dir)
    })
    .await
    .unwrap()
    .0;
    let [_server, french] = &running[..] else {
        panic!("the wss try starts a server and a listener");
    };
    assert_eq!(next_line(french), r#""Bonjour en wss !""#);
}
