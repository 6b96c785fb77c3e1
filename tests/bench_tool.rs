//! `tagcast bench` (the load tool) against a server in this process, with tiny numbers: every
//! scenario runs, loses nothing and prints its JSON line. No timing is asserted.

mod common;

use common::{TestServer, WAIT};
use serde_json::Value;

/// Runs `tagcast bench --url URL ARGS` and waits for it (bounded).
async fn run_bench(url: &str, args: &[&str]) -> std::process::Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tagcast"))
        .args(["bench", "--url", url])
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(WAIT * 3, child)
        .await
        .expect("tagcast bench finished")
        .expect("tagcast bench ran")
}

/// The JSON lines of a run's stdout.
fn json_lines(output: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// Runs `tagcast bench ARGS` against `server` with its pid; asserts it passed.
async fn bench(server: &TestServer, args: &[&str]) -> Vec<Value> {
    let pid = std::process::id().to_string();
    let mut all = vec!["--pid", &pid, "--timeout", "5"];
    all.extend_from_slice(args);
    let output = run_bench(&format!("ws://{}", server.address), &all).await;
    assert!(
        output.status.success(),
        "{}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    json_lines(&output)
}

const TINY: &[&str] = &[
    "--subscribers",
    "24",
    "--rooms",
    "4",
    "--messages",
    "400",
    "--window",
    "8",
    "--rate",
    "200",
    "--seconds",
    "0.25",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_delivers_everything_and_prints_a_json_line() {
    let server = TestServer::start("").await;
    let lines = bench(&server, TINY).await;
    let names: Vec<&str> = lines
        .iter()
        .map(|line| line["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["conns", "fanout", "broadcast", "latency"]);
    for line in &lines {
        assert_eq!(line["loss"], 0, "{line}");
        assert_eq!(line["errors"], 0, "{line}");
        assert_eq!(line["received"], line["expected"], "{line}");
        assert!(line["server"]["rss_kib"].as_u64().unwrap() > 0, "{line}");
    }
    // conns first (the default order), then fanout: 400 messages, each to the 6 subscribers
    // of one room.
    assert!(lines[0]["server"]["rss_per_connection_kib"].is_number());
    assert_eq!(lines[1]["expected"], 400 * 6);
    // broadcast: 400 / 4 messages, each to all 24.
    assert_eq!(lines[2]["expected"], 100 * 24);
    // latency: 200 messages/s for 0.25 s.
    assert_eq!(lines[3]["messages"], 50);
    assert!(lines[1]["latency_ms"]["max"].as_f64().unwrap() > 0.0);
    assert!(lines[1]["server"]["cpu_s_per_million"].is_number());
    assert_arrivals_precede_reads(&lines[3]);
    for line in [&lines[0], &lines[1], &lines[2]] {
        assert!(line["arrival_ms"].is_null(), "{line}");
    }
    // The subscribers are gone once it exits.
    server.wait_for_connections(0).await;
}

/// The `latency` scenario over ws: every delivery's kernel arrival stamp is reported
/// (`arrival_ms`), and a message reaches the socket before the tool reads it.
fn assert_arrivals_precede_reads(line: &Value) {
    assert_eq!(line["scenario"], "latency");
    let (arrival, read) = (&line["arrival_ms"], &line["latency_ms"]);
    assert_eq!(arrival["count"], line["received"], "{line}");
    assert_eq!(read["count"], line["received"], "{line}");
    for quantile in ["p50", "p99", "p99_9", "max"] {
        assert!(
            arrival[quantile].as_f64().unwrap() <= read[quantile].as_f64().unwrap(),
            "{quantile}: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_share_the_subscribers() {
    let server = TestServer::start("").await;
    let mut args = TINY.to_vec();
    args.extend([
        "--workers",
        "2",
        "--sources",
        "3",
        "fanout",
        "latency",
        "conns",
    ]);
    let lines = bench(&server, &args).await;
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert_eq!(line["workers"], 2, "{line}");
        assert_eq!(line["loss"], 0, "{line}");
        assert_eq!(line["errors"], 0, "{line}");
    }
    // The workers' arrival stamps reach the parent.
    assert_arrivals_precede_reads(&lines[1]);
    server.wait_for_connections(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_connections_is_an_error_not_a_panic() {
    // The latency scenario's subscribers connect on a runtime of their own, which must be
    // shut down cleanly when connecting fails: in this process and in worker processes.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", closed.local_addr().unwrap());
    drop(closed);
    for workers in ["1", "2"] {
        let output = run_bench(
            &url,
            &["latency", "--subscribers", "4", "--workers", workers],
        )
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "workers {workers}: {stderr}");
        assert!(stderr.contains("refused"), "workers {workers}: {stderr}");
        assert!(!stderr.contains("panicked"), "workers {workers}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_drops_messages_is_reported_as_loss() {
    // A one-byte queue with a wide window: the server closes slow subscribers with 4429.
    let server = TestServer::start("[limits]\nsend_queue_bytes = 1\n").await;
    let url = format!("ws://{}", server.address);
    let output = run_bench(
        &url,
        &[
            "--timeout",
            "1",
            "broadcast",
            "--subscribers",
            "50",
            "--rooms",
            "1",
            "--messages",
            "3000",
            "--window",
            "1000",
        ],
    )
    .await;
    assert!(!output.status.success());
    let lines = json_lines(&output);
    let line = lines.first().expect("a JSON line");
    assert!(line["loss"].as_i64().unwrap() > 0, "{line}");
    assert!(line["errors"].as_u64().unwrap() > 0, "{line}");
}

/// A TLS terminator on 127.0.0.1:0 in front of `server`, with a fresh self-signed certificate;
/// returns its address and the certificate's PEM file.
async fn tls_front(
    server: &TestServer,
    dir: &std::path::Path,
) -> (std::net::SocketAddr, std::path::PathBuf) {
    use std::sync::Arc;
    use tokio_rustls::rustls::{self, crypto::aws_lc_rs};
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_path = dir.join("cert.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    let key = rustls_pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key.into())
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let backend = server.address;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (address, cert_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_urls_work_with_a_ca_file() {
    let server = TestServer::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let (address, cert) = tls_front(&server, dir.path()).await;
    let url = format!("wss://127.0.0.1:{}", address.port());
    let cert = cert.display().to_string();
    let args = [
        "--timeout",
        "5",
        "fanout",
        "broadcast",
        "latency",
        "--subscribers",
        "12",
        "--rooms",
        "3",
        "--rate",
        "200",
        "--seconds",
        "0.25",
    ];
    let output = run_bench(
        &url,
        &[&args[..], &["--messages", "90", "--ca", &cert]].concat(),
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|line| line["loss"] == 0 && line["received"].as_u64() > Some(0))
    );
    // Read through TLS, a message has no kernel arrival stamp.
    assert!(lines[2]["arrival_ms"].is_null(), "{}", lines[2]);
    // Without a CA the certificate is refused, and the error says what to pass.
    let output = run_bench(&url, &args).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--ca"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaced_burst_at_the_default_config_loses_nothing() {
    let server = TestServer::start("").await;
    // `--window 0`: the publishers send as fast as their sockets take frames.
    let lines = bench(
        &server,
        &[
            "--window",
            "0",
            "--settle",
            "0.2",
            "fanout",
            "--subscribers",
            "200",
            "--rooms",
            "4",
            "--publishers",
            "4",
            "--messages",
            "4000",
        ],
    )
    .await;
    let line = &lines[0];
    assert_eq!(line["window"], 0, "{line}");
    assert_eq!(line["loss"], 0, "{line}");
    assert_eq!(line["errors"], 0, "{line}");
    let server_line = &line["server"];
    assert!(
        server_line["rss_peak_kib"].as_u64().unwrap() >= server_line["rss_kib"].as_u64().unwrap(),
        "{line}"
    );
    assert!(server_line["rss_settled_kib"].as_u64().is_some(), "{line}");
}

#[tokio::test]
async fn compressed_notifications_take_fewer_bytes_on_the_wire_and_all_arrive() {
    let server = TestServer::start("").await;
    let mut per_delivery = Vec::new();
    for (compression, workers) in [("off", "1"), ("offer", "1"), ("offer", "2")] {
        let lines = bench(
            &server,
            &[
                "fanout",
                "--content",
                "notification",
                "--compression",
                compression,
                "--workers",
                workers,
                "--subscribers",
                "24",
                "--rooms",
                "4",
                "--messages",
                "200",
            ],
        )
        .await;
        let line = &lines[0];
        assert_eq!(
            (line["loss"].as_i64(), line["errors"].as_u64()),
            (Some(0), Some(0))
        );
        assert_eq!(line["compression"], compression);
        assert_eq!(line["content"], "notification");
        per_delivery.push(line["wire_bytes_per_delivery"].as_f64().unwrap());
    }
    let [plain, compressed, with_workers] = per_delivery[..] else {
        unreachable!()
    };
    assert!(plain > 600.0, "{plain}");
    assert!(compressed * 3.0 <= plain, "{compressed} for {plain}");
    // Worker processes count the same frames (stamps differ in length by a digit or two).
    assert!(
        (with_workers - compressed).abs() < compressed * 0.05,
        "{with_workers}"
    );
}
