//! Native wss (SPEC §4 `[tls]`): real TLS handshakes with certificates made at test time, ws and
//! wss sharing one hub, `plain = false`, every unusable file, and certificate renewal without
//! restart — in process and through SIGHUP to the real daemon.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{Client, Daemon, RawClient, TAGCAST, TestServer, WAIT, address_of, tags_query};
use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tagcast::net::server::Server;
use tagcast::ops::config::Config;
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ClientConfig, ProtocolVersion, RootCertStore};
use tokio_tungstenite::{Connector, MaybeTlsStream};

/// A certificate for `localhost` and 127.0.0.1 (an end entity, CA:FALSE) and its key, as PEM.
struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pair {
    /// An EC (P-256) pair.
    fn ec() -> Pair {
        Pair::signed_with(KeyPair::generate().expect("EC key"))
    }

    /// An RSA (2048 bits) pair.
    fn rsa() -> Pair {
        Pair::signed_with(KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key"))
    }

    fn signed_with(key: KeyPair) -> Pair {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let cert = CertificateParams::new(names)
            .expect("names")
            .self_signed(&key)
            .expect("self-signed certificate");
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn fingerprint(&self) -> String {
        fingerprint(&self.der)
    }
}

fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// A directory holding `cert.pem` and `key.pem`, the files `[tls]` names.
struct Files {
    dir: TempDir,
}

impl Files {
    fn with(pair: &Pair) -> Files {
        let files = Files {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        files.install(&pair.cert_pem, &pair.key_pem);
        files
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// Replaces both files the way certbot and editors do: write a new file, rename it over.
    fn install(&self, cert_pem: &str, key_pem: &str) {
        for (path, text) in [(self.cert(), cert_pem), (self.key(), key_pem)] {
            let fresh = path.with_extension("new");
            std::fs::write(&fresh, text).expect("write");
            std::fs::rename(&fresh, &path).expect("rename");
        }
    }

    /// The `[tls]` section naming these files.
    fn toml(&self) -> String {
        tls_toml(&self.cert(), &self.key())
    }
}

fn tls_toml(cert: &Path, key: &Path) -> String {
    format!("[tls]\ncert = {:?}\nkey = {:?}\n", cert, key)
}

/// A rustls client config trusting `roots`, offering ALPN `http/1.1` and `versions`.
fn client_config(
    roots: &[&Pair],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for pair in roots {
        store.add(pair.der.clone()).expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What a wss client saw of the server's TLS.
struct Session {
    fingerprint: String,
    version: Option<ProtocolVersion>,
    alpn: Option<Vec<u8>>,
}

/// Opens a wss connection to `address` with `tags` (a JSON object's text); returns the client
/// and what the TLS session negotiated.
async fn connect_wss(
    address: SocketAddr,
    tags: &str,
    config: Arc<ClientConfig>,
) -> Result<(Client, Session), tokio_tungstenite::tungstenite::Error> {
    let url = format!("wss://127.0.0.1:{}/{}", address.port(), tags_query(tags));
    let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        false,
        Some(Connector::Rustls(config)),
    )
    .await?;
    let MaybeTlsStream::Rustls(tls) = socket.get_ref() else {
        panic!("not a rustls stream");
    };
    let connection = tls.get_ref().1;
    let session = Session {
        fingerprint: fingerprint(&connection.peer_certificates().expect("a certificate")[0]),
        version: connection.protocol_version(),
        alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
    };
    Ok((Client { socket }, session))
}

/// Opens a wss connection trusting `roots` and waits until the hub counts it.
async fn wss(server: &TestServer, tags: &str, roots: &[&Pair]) -> (Client, Session) {
    let before = server.hub.len();
    let config = client_config(roots, rustls::DEFAULT_VERSIONS);
    let tls_address = server.tls_address.expect("a wss listener");
    let connected = connect_wss(tls_address, tags, config)
        .await
        .expect("wss connect");
    server.wait_for_connections(before + 1).await;
    connected
}

#[tokio::test]
async fn ws_and_wss_clients_share_one_hub() {
    let pair = Pair::ec();
    let files = Files::with(&pair);
    let server = TestServer::start(&files.toml()).await;
    assert_ne!(Some(server.address), server.tls_address);
    let mut plain = server.connect(r#"{"room":"1"}"#).await;
    let (mut secure, session) = wss(&server, r#"{"room":1}"#, &[&pair]).await;
    assert_eq!(session.fingerprint, pair.fingerprint());
    assert_eq!(session.alpn.as_deref(), Some(&b"http/1.1"[..]));

    plain.publish(r#""from ws""#, r#"{"room":"1"}"#).await;
    assert_eq!(plain.recv().await, r#""from ws""#);
    assert_eq!(secure.recv().await, r#""from ws""#);

    secure.publish(r#""from wss""#, r#"{"room":1}"#).await;
    assert_eq!(plain.recv().await, r#""from wss""#);
    assert_eq!(secure.recv().await, r#""from wss""#);
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_served_with_rsa_and_ec_keys() {
    for pair in [Pair::ec(), Pair::rsa()] {
        let files = Files::with(&pair);
        let server = TestServer::start(&files.toml()).await;
        let tls_address = server.tls_address.expect("wss listener");
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let config = client_config(&[&pair], &[version]);
            let (mut client, session) = connect_wss(tls_address, "", config)
                .await
                .expect("wss connect");
            assert_eq!(session.version, Some(version.version));
            assert_eq!(session.fingerprint, pair.fingerprint());
            client.publish(r#""hello""#, "{}").await;
            assert_eq!(client.recv().await, r#""hello""#);
        }
    }
}

#[tokio::test]
async fn a_burst_over_wss_arrives_whole_and_in_order() {
    let pair = Pair::ec();
    let files = Files::with(&pair);
    let server = TestServer::start(&files.toml()).await;
    let (mut receiver, _) = wss(&server, r#"{"burst":"yes"}"#, &[&pair]).await;
    let mut sender = server.connect("").await;
    let filler = "x".repeat(700);
    for number in 0..500 {
        sender
            .publish(&format!(r#""{number} {filler}""#), r#"{"burst":"yes"}"#)
            .await;
    }
    for number in 0..500 {
        assert_eq!(receiver.recv().await, format!(r#""{number} {filler}""#));
    }
}

#[tokio::test]
async fn plain_false_serves_wss_only() {
    let pair = Pair::ec();
    let files = Files::with(&pair);
    let server = TestServer::start(&format!("[server]\nplain = false\n{}", files.toml())).await;
    assert_eq!(Some(server.address), server.tls_address);
    let (mut client, session) = wss(&server, r#"{"a":"b"}"#, &[&pair]).await;
    assert_eq!(session.fingerprint, pair.fingerprint());
    client.publish(r#""only wss""#, r#"{"a":"b"}"#).await;
    assert_eq!(client.recv().await, r#""only wss""#);

    // A plain WebSocket handshake on the wss port gets no HTTP answer: the bytes are not TLS.
    let mut raw =
        RawClient::send_request(server.address, &common::upgrade_request("/?tags=%7B%7D")).await;
    let answer = raw.read_to_end().await;
    assert!(!answer.starts_with(b"HTTP/1.1 101"), "{answer:?}");
}

#[tokio::test]
async fn a_stalled_tls_handshake_times_out_without_blocking_others() {
    let pair = Pair::ec();
    let files = Files::with(&pair);
    let toml = format!("[limits]\nhandshake_timeout_ms = 300\n{}", files.toml());
    let server = TestServer::start(&toml).await;
    let tls_address = server.tls_address.expect("wss listener");
    // Opens TCP and never says a word of TLS.
    let mut silent = TcpStream::connect(tls_address).await.expect("connect");
    let (mut client, _) = wss(&server, "", &[&pair]).await;
    client.publish(r#""still served""#, "{}").await;
    assert_eq!(client.recv().await, r#""still served""#);
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, silent.read(&mut byte))
        .await
        .expect("the server did not close the stalled handshake");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// `Server::new` (and so `tagcast serve` and `tagcast check`) refuses the `[tls]` files.
fn start_error(cert: &Path, key: &Path) -> String {
    let config = Config::parse(&tls_toml(cert, key), None).expect("config");
    match Server::new(config) {
        Ok(_) => panic!("{} / {} were accepted", cert.display(), key.display()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn every_unusable_file_is_refused_naming_the_path() {
    let pair = Pair::ec();
    let other = Pair::ec();
    let files = Files::with(&pair);
    let dir = files.dir.path();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let missing = dir.join("missing.pem");
    let directory = dir.join("a-directory");
    std::fs::create_dir(&directory).expect("mkdir");
    let empty = write("empty.pem", "");
    let truncated = write("truncated.pem", &pair.cert_pem[..pair.cert_pem.len() / 2]);
    let not_a_certificate = write(
        "garbage-cert.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let other_cert = write("other-cert.pem", &other.cert_pem);
    let encrypted_key = write(
        "encrypted.pem",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let (cert, key) = (files.cert(), files.key());

    let cases: [(&Path, &Path, &Path, &str); 10] = [
        (&missing, &key, &missing, "no such file"),
        (&cert, &missing, &missing, "no such file"),
        (&directory, &key, &directory, "cannot read"),
        (&cert, &directory, &directory, "cannot read"),
        (&empty, &key, &empty, "no certificate"),
        (&key, &key, &key, "no certificate"),
        (&truncated, &key, &truncated, "not a valid PEM file"),
        (
            &not_a_certificate,
            &key,
            &not_a_certificate,
            "certificate is invalid",
        ),
        (&cert, &cert, &cert, "no private key"),
        (&cert, &encrypted_key, &encrypted_key, "no private key"),
    ];
    for (cert_path, key_path, named, problem) in cases {
        let message = start_error(cert_path, key_path);
        assert!(
            message.contains(&named.display().to_string()) && message.contains(problem),
            "{} / {}: {message}",
            cert_path.display(),
            key_path.display()
        );
    }
    let mismatch = start_error(&other_cert, &key);
    assert!(
        mismatch.contains("does not match the certificate")
            && mismatch.contains(&key.display().to_string())
            && mismatch.contains(&other_cert.display().to_string()),
        "{mismatch}"
    );
}

#[test]
fn tagcast_check_reports_a_bad_key_with_exit_78() {
    let pair = Pair::ec();
    let other = Pair::ec();
    let files = Files::with(&pair);
    files.install(&pair.cert_pem, &other.key_pem);
    let config = files.dir.path().join("tagcast.toml");
    std::fs::write(&config, files.toml()).expect("write config");
    let output = Command::new(TAGCAST)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run tagcast check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("does not match the certificate"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&files.key().display().to_string()),
        "{stderr}"
    );

    files.install(&pair.cert_pem, &pair.key_pem);
    let output = Command::new(TAGCAST)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run tagcast check");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn reload_serves_a_renewed_certificate_to_new_clients_and_keeps_open_ones() {
    let old = Pair::ec();
    let new = Pair::rsa();
    let files = Files::with(&old);
    let server = TestServer::start(&files.toml()).await;
    let (mut before, session) = wss(&server, r#"{"t":"x"}"#, &[&old, &new]).await;
    assert_eq!(session.fingerprint, old.fingerprint());

    files.install(&new.cert_pem, &new.key_pem);
    server
        .shared
        .tls
        .as_ref()
        .expect("tls")
        .reload()
        .expect("reload");
    let (mut after, session) = wss(&server, r#"{"t":"x"}"#, &[&old, &new]).await;
    assert_eq!(session.fingerprint, new.fingerprint());

    after.publish(r#""after renewal""#, r#"{"t":"x"}"#).await;
    assert_eq!(before.recv().await, r#""after renewal""#);
    assert_eq!(after.recv().await, r#""after renewal""#);

    // A bad pair (the old key with the new certificate) is refused; the new pair stays.
    files.install(&new.cert_pem, &old.key_pem);
    let refused = server.shared.tls.as_ref().expect("tls").reload();
    assert!(
        matches!(
            refused,
            Err(tagcast::net::tls::TlsError::KeyMismatch { .. })
        ),
        "{refused:?}"
    );
    server.shared.reload(); // the SIGHUP path logs the same refusal
    let (_third, session) = wss(&server, "", &[&old, &new]).await;
    assert_eq!(session.fingerprint, new.fingerprint());
    before.publish(r#""still here""#, r#"{"t":"x"}"#).await;
    assert_eq!(after.recv().await, r#""still here""#);
}

#[tokio::test]
async fn a_certificate_renewed_on_disk_is_served_without_a_signal() {
    let old = Pair::ec();
    let new = Pair::ec();
    let files = Files::with(&old);
    let server = TestServer::start(&files.toml()).await;
    let (mut before, session) = wss(&server, r#"{"t":"x"}"#, &[&old, &new]).await;
    assert_eq!(session.fingerprint, old.fingerprint());

    // Renewed the way certbot does it: new files renamed over the old ones; no SIGHUP.
    files.install(&new.cert_pem, &new.key_pem);
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let config = client_config(&[&old, &new], rustls::DEFAULT_VERSIONS);
    let tls_address = server.tls_address.expect("a wss listener");
    loop {
        let (_, session) = connect_wss(tls_address, "", config.clone())
            .await
            .expect("wss connect");
        if session.fingerprint == new.fingerprint() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (mut after, _) = connect_wss(tls_address, "", config)
        .await
        .expect("wss connect");
    after.publish(r#""renewed""#, r#"{"t":"x"}"#).await;
    assert_eq!(before.recv().await, r#""renewed""#);
}

#[tokio::test]
async fn sighup_makes_the_daemon_serve_the_renewed_certificate() {
    let old = Pair::ec();
    let new = Pair::ec();
    let files = Files::with(&old);
    let config = files.dir.path().join("tagcast.toml");
    let toml = format!(
        "[server]\naddress = \"127.0.0.1\"\nport = 0\n{}port = 0\n[http]\nadmin_address = \"\"\n",
        files.toml()
    );
    std::fs::write(&config, toml).expect("write config");
    let mut daemon = Daemon::start(&config);
    let plain = daemon.ws_address();
    let secure = address_of(&daemon.wait_for_line("listening for wss"));
    let roots = client_config(&[&old, &new], rustls::DEFAULT_VERSIONS);

    let (mut before, session) = connect_wss(secure, r#"{"t":"x"}"#, roots.clone())
        .await
        .expect("wss connect");
    assert_eq!(session.fingerprint, old.fingerprint());

    files.install(&new.cert_pem, &new.key_pem);
    daemon.signal("HUP");
    daemon.wait_for_line("tls certificate reloaded");
    let (_after, session) = connect_wss(secure, "", roots.clone())
        .await
        .expect("wss connect");
    assert_eq!(session.fingerprint, new.fingerprint());

    files.install(&old.cert_pem, &new.key_pem);
    daemon.signal("HUP");
    let refusal = daemon.wait_for_line("tls certificate not reloaded");
    assert!(refusal.contains("does not match"), "{refusal}");
    let (_third, session) = connect_wss(secure, "", roots).await.expect("wss connect");
    assert_eq!(session.fingerprint, new.fingerprint());

    // The client connected before both reloads still receives, here from a ws sender.
    let mut sender = Client::connect(&format!("ws://{plain}/")).await;
    sender.publish(r#""after sighup""#, r#"{"t":"x"}"#).await;
    assert_eq!(before.recv().await, r#""after sighup""#);
}
