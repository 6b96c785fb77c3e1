//! The Rust client library against a real server on port 0 (SPEC §7): sending with tags,
//! defaults, what goes on the wire, wss with a test CA, reconnecting, and the mock answering as
//! the server routes.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use common::{TestServer, WAIT};
use futures_util::StreamExt;
use tagcast::client::{ClientError, Endpoint, Listener, WebSocketClient, WebSocketRequest};
use tagcast::client::{RequestSender, connect_with_tags};
use tagcast::mock::WebSocketClientMock;
use tagcast::ops::config::Config;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// Opens a listener with `tags` and waits until the server counts it.
async fn listen(server: &TestServer, tags: &[(&str, &str)]) -> Listener {
    let before = server.hub.len();
    let listener = connect_with_tags(&server.url(""), tags.iter().copied())
        .await
        .expect("listen");
    server.wait_for_connections(before + 1).await;
    listener
}

/// The next message, as the JSON text the server sent.
async fn recv(listener: &mut Listener) -> String {
    let message = tokio::time::timeout(WAIT, listener.next::<Box<serde_json::value::RawValue>>())
        .await
        .expect("timed out waiting for a message")
        .expect("next")
        .expect("a message, not the end");
    message.get().to_owned()
}

/// Sends a marker to everybody and returns what `listener` received before it.
async fn received_before_marker(
    client: &mut WebSocketClient,
    listener: &mut Listener,
) -> Vec<String> {
    client
        .send(&WebSocketRequest::create("marker"))
        .await
        .expect("send marker");
    common::received_before(r#""marker""#, async || recv(listener).await).await
}

#[tokio::test]
async fn a_request_reaches_the_listeners_that_have_all_its_tags() {
    let server = TestServer::start("").await;
    let mut fr = listen(&server, &[("language", "FR")]).await;
    let mut en = listen(&server, &[("language", "EN")]).await;
    let mut client = WebSocketClient::connect(&server.url("")).await.unwrap();

    client
        .send(&WebSocketRequest::create("Bonjour !").tags([("language", "FR")]))
        .await
        .unwrap();
    assert_eq!(recv(&mut fr).await, r#""Bonjour !""#);
    assert_eq!(
        received_before_marker(&mut client, &mut en).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn default_tags_are_merged_and_the_request_wins() {
    let server = TestServer::start("").await;
    let mut fr_42 = listen(&server, &[("language", "FR"), ("userId", "42")]).await;
    let mut en_42 = listen(&server, &[("language", "EN"), ("userId", "42")]).await;
    let mut client = WebSocketClient::connect(&server.url("")).await.unwrap();
    client.set_default_tags([("language", "FR")]);

    // The default language=FR joins userId=42.
    client
        .send(&WebSocketRequest::create("default").tags([("userId", "42")]))
        .await
        .unwrap();
    // language=EN replaces the default.
    client
        .send(&WebSocketRequest::create("override").tags([("language", "EN"), ("userId", "42")]))
        .await
        .unwrap();
    // Closing waits until the server has routed both (it handles frames in order). Markers come
    // from a second client: this one's would carry the default tag.
    client.close().await.unwrap();
    let mut plain = WebSocketClient::connect(&server.url("")).await.unwrap();
    assert_eq!(
        received_before_marker(&mut plain, &mut fr_42).await,
        [r#""default""#]
    );
    assert_eq!(
        received_before_marker(&mut plain, &mut en_42).await,
        [r#""override""#]
    );
}

#[tokio::test]
async fn user_types_travel_as_json() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Shipped {
        order: u64,
        items: Vec<String>,
    }
    let server = TestServer::start("[messages]\nparser = \"json\"\n").await;
    let mut listener = listen(&server, &[]).await;
    let mut client = WebSocketClient::connect(&server.url("")).await.unwrap();
    let shipped = Shipped {
        order: 42,
        items: vec!["book".into()],
    };
    client
        .send(&WebSocketRequest::create(&shipped))
        .await
        .unwrap();
    let received = tokio::time::timeout(WAIT, listener.next::<Shipped>())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, Some(shipped));
}

#[tokio::test]
async fn a_refused_request_is_reported_by_close_and_the_next_send_reconnects() {
    let server = TestServer::start("").await;
    let mut listener = listen(&server, &[]).await;

    // The default `string` parser refuses an object: close code 4400.
    let mut client = WebSocketClient::connect(&server.url("")).await.unwrap();
    client
        .send(&WebSocketRequest::create(
            serde_json::json!({"not": "a string"}),
        ))
        .await
        .unwrap();
    let refused = client.close().await;
    let Err(ClientError::Closed(close)) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert_eq!(close.code, 4400);
    assert!(close.reason.contains("parser"), "{}", close.reason);

    // Without close: the refusal ends the connection, and the next send opens a new one.
    let mut client = WebSocketClient::connect(&server.url("")).await.unwrap();
    client.send(&WebSocketRequest::create(42)).await.unwrap();
    let wait = client_disconnects(&client);
    wait.await;
    client
        .send(&WebSocketRequest::create("after the refusal"))
        .await
        .unwrap();
    assert_eq!(recv(&mut listener).await, r#""after the refusal""#);
    client.close().await.unwrap();
}

/// Waits until `client` knows its connection ended.
async fn client_disconnects(client: &WebSocketClient) {
    common::wait_until(|| !client.is_connected(), "the client to see the close").await;
}

#[tokio::test]
async fn a_request_without_a_message_is_refused_locally() {
    let server = TestServer::start("").await;
    let mut client = WebSocketClient::connect(&server.url("")).await.unwrap();
    let result = client.send(&WebSocketRequest::create(())).await;
    assert!(matches!(result, Err(ClientError::NoMessage)), "{result:?}");
    // Nothing reached the server: the connection is still fine.
    assert!(client.is_connected());
    client.close().await.unwrap();
}

#[tokio::test]
async fn the_client_reconnects_after_a_server_restart() {
    let first = TestServer::start("").await;
    let address = first.address;
    let mut client = WebSocketClient::connect(&first.url("")).await.unwrap();
    client.send(&WebSocketRequest::create("one")).await.unwrap();
    first.shutdown.cancel();
    first.task.await.unwrap();
    client_disconnects(&client).await;

    // Nobody listening: a clear error.
    let result = client.send(&WebSocketRequest::create("lost")).await;
    let Err(error @ ClientError::Unreachable { .. }) = result else {
        panic!("expected Unreachable, got {result:?}");
    };
    assert!(error.to_string().contains(&address.to_string()), "{error}");

    // The server is back on the same address: the next send reconnects.
    let second = start_on(address).await;
    let mut listener = listen(&second, &[]).await;
    client.send(&WebSocketRequest::create("two")).await.unwrap();
    assert_eq!(recv(&mut listener).await, r#""two""#);
}

async fn start_on(address: SocketAddr) -> TestServer {
    let mut config = Config::parse("", None).unwrap();
    config.server.address = address.ip();
    config.server.port = address.port();
    TestServer::start_with(config).await
}

#[tokio::test]
async fn connecting_to_nothing_is_unreachable() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let result = WebSocketClient::connect(&format!("ws://127.0.0.1:{port}/")).await;
    assert!(
        matches!(result, Err(ClientError::Unreachable { .. })),
        "{result:?}"
    );
    let result = WebSocketClient::connect("http://127.0.0.1:8080/").await;
    assert!(matches!(result, Err(ClientError::Url { .. })), "{result:?}");
}

/// A WebSocket server that records what a client sends: the request target (path and query),
/// then the text of every frame.
async fn capture_server(tls: Option<TlsAcceptor>) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (sender, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let sender = sender.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            capture(stream, sender).await;
                        }
                    }
                    None => capture(stream, sender).await,
                }
            });
        }
    });
    (address, received)
}

async fn capture<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    sender: mpsc::UnboundedSender<String>,
) {
    let target = sender.clone();
    #[allow(clippy::result_large_err)] // the error type is tungstenite's
    let callback = move |request: &Request, response: Response| {
        let _ = target.send(request.uri().to_string());
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    // Read to the end so that tungstenite answers the client's close.
    while let Some(Ok(frame)) = socket.next().await {
        if let Message::Text(text) = frame {
            let _ = sender.send(text.to_string());
        }
    }
}

async fn next_captured(received: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(WAIT, received.recv())
        .await
        .expect("timed out waiting for the capture server")
        .expect("capture server ended")
}

#[tokio::test]
async fn defaults_and_metadata_go_on_the_wire_as_the_gomoob_client_writes_them() {
    let (address, mut received) = capture_server(None).await;
    let mut client = Endpoint::new(&format!("ws://{address}/"))
        .unwrap()
        .credentials("application1", Some("s e/cret"))
        .connect()
        .await
        .unwrap();
    assert_eq!(
        next_captured(&mut received).await,
        "/?key=application1&secret=s+e%2Fcret"
    );
    client
        .set_default_tags([("language", "FR"), ("team", "ops")])
        .set_default_metadata([("key", "application1"), ("secret", "default")]);
    client
        .send(
            &WebSocketRequest::create("Bonjour !")
                .tags([("language", "EN")])
                .metadata([("secret", "mine")]),
        )
        .await
        .unwrap();
    assert_eq!(
        next_captured(&mut received).await,
        r#"{"message":"Bonjour !","tags":{"language":"EN","team":"ops"},"metadata":{"key":"application1","secret":"mine"}}"#
    );
    client.close().await.unwrap();
}

/// A TLS acceptor for a fresh self-signed certificate for 127.0.0.1; returns it with the
/// certificate's PEM.
fn test_tls() -> (TlsAcceptor, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    (TlsAcceptor::from(Arc::new(config)), certified.cert.pem())
}

#[tokio::test]
async fn wss_with_a_trusted_test_ca() {
    let (acceptor, ca_pem) = test_tls();
    let (address, mut received) = capture_server(Some(acceptor)).await;
    let url = format!("wss://{address}/");

    let mut client = Endpoint::new(&url)
        .unwrap()
        .trust_ca_pem(ca_pem.as_bytes())
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(next_captured(&mut received).await, "/");
    client
        .send(&WebSocketRequest::create("over TLS"))
        .await
        .unwrap();
    assert_eq!(
        next_captured(&mut received).await,
        r#"{"message":"over TLS","tags":{},"metadata":{}}"#
    );
    client.close().await.unwrap();

    // The webpki roots do not know the test certificate.
    let result = WebSocketClient::connect(&url).await;
    let Err(error @ ClientError::Unreachable { .. }) = result else {
        panic!("expected Unreachable, got {result:?}");
    };
    assert!(error.to_string().contains("certificate"), "{error}");

    // A PEM without a certificate is refused up front.
    let result = Endpoint::new(&url).unwrap().trust_ca_pem(b"not a PEM");
    assert!(matches!(result, Err(ClientError::Tls(_))), "{result:?}");
}

/// The mock answers `find_by_tags` exactly as the server routes: the same requests and
/// connections, the same matching code.
#[tokio::test]
async fn the_mock_finds_what_the_server_delivers() {
    let sets: [&[(&str, &str)]; 4] = [
        &[("language", "FR")],
        &[("language", "EN")],
        &[("language", "FR"), ("userId", "42")],
        &[],
    ];
    let queries: [&[(&str, &str)]; 6] = [
        &[("language", "FR")],
        &[("language", "FR"), ("userId", "42")],
        &[],
        &[("language", "DE")],
        &[("team", "ops")],
        &[("userId", "42")],
    ];

    // The server: a connection per tag set, a request per query.
    let server = TestServer::start("").await;
    let mut listeners = Vec::new();
    for set in sets {
        listeners.push(listen(&server, set).await);
    }
    let mut client = WebSocketClient::connect(&server.url("")).await.unwrap();
    let mut delivered = BTreeSet::new();
    for (query, tags) in queries.iter().enumerate() {
        client
            .send(&WebSocketRequest::create(query.to_string()).tags(tags.iter().copied()))
            .await
            .unwrap();
    }
    // Closing waits until the server has routed every request; then the markers.
    client.close().await.unwrap();
    let mut marker_sender = WebSocketClient::connect(&server.url("")).await.unwrap();
    for (set, listener) in listeners.iter_mut().enumerate() {
        for query in received_before_marker(&mut marker_sender, listener).await {
            let query: String = serde_json::from_str(&query).unwrap();
            delivered.insert((query.parse::<usize>().unwrap(), set));
        }
    }

    // The mock: a request per tag set, a query per request.
    let mut mock = WebSocketClientMock::new();
    for (set, tags) in sets.iter().enumerate() {
        mock.send(&WebSocketRequest::create(set).tags(tags.iter().copied()))
            .await
            .unwrap();
    }
    let mut found = BTreeSet::new();
    for (query, tags) in queries.iter().enumerate() {
        for request in mock.find_by_tags(tags.iter().copied()) {
            let set = request.get_message().and_then(|m| m.as_u64()).unwrap();
            let set = usize::try_from(set).unwrap();
            found.insert((query, set));
        }
    }

    assert_eq!(found, delivered);
    // FR→{0,2}, FR+42→{2}, {}→all four, DE→none, ops→none, userId=42→{2}.
    assert_eq!(delivered.len(), 2 + 1 + 4 + 1);
}
