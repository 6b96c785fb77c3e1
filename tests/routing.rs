//! Delivery by tags over real sockets (SPEC §1 "Delivery").

mod common;

use common::TestServer;

/// Sends a marker to `probe_tags` and returns what `client` received before it: proves that a
/// message did *not* arrive without waiting for a timeout.
async fn received_before_marker(
    server: &TestServer,
    client: &mut common::Client,
    sender: &mut common::Client,
) -> Vec<String> {
    let _ = server;
    sender.publish(r#""marker""#, "{}").await;
    common::received_before(r#""marker""#, async || client.recv().await).await
}

#[tokio::test]
async fn requests_reach_exactly_the_connections_that_have_all_their_tags() {
    let server = TestServer::start("").await;
    let mut fr = server.connect(r#"{"language":"FR"}"#).await;
    let mut en = server.connect(r#"{"language":"EN"}"#).await;
    let mut fr_user = server.connect(r#"{"language":"FR","userId":42}"#).await;
    let mut untagged = server.connect("").await;
    let mut sender = server.connect(r#"{"role":"backend"}"#).await;

    sender
        .publish(r#""Bonjour !""#, r#"{"language":"FR"}"#)
        .await;
    sender
        .publish(r#""for 42""#, r#"{"language":"FR","userId":"42"}"#)
        .await;
    sender.publish(r#""to all""#, "{}").await;
    sender.publish(r#""nobody""#, r#"{"language":"DE"}"#).await;
    sender
        .publish(r#""nobody either""#, r#"{"team":"ops"}"#)
        .await;

    assert_eq!(
        received_before_marker(&server, &mut fr, &mut sender).await,
        [r#""Bonjour !""#, r#""to all""#]
    );
    assert_eq!(
        received_before_marker(&server, &mut en, &mut sender).await,
        [r#""to all""#]
    );
    assert_eq!(
        received_before_marker(&server, &mut fr_user, &mut sender).await,
        [r#""Bonjour !""#, r#""for 42""#, r#""to all""#]
    );
    assert_eq!(
        received_before_marker(&server, &mut untagged, &mut sender).await,
        [r#""to all""#]
    );
    // The sender receives what matches it too: the three broadcasts and markers.
    assert_eq!(sender.recv().await, r#""to all""#);
}

#[tokio::test]
async fn the_exact_request_of_the_gomoob_php_client() {
    let server = TestServer::start("").await;
    let mut fr = server.connect(r#"{"language":"FR"}"#).await;
    let mut sender = server.connect("").await;
    sender
        .send(r#"{"message":"x","metadata":{},"tags":{"language":"FR"}}"#)
        .await;
    assert_eq!(fr.recv().await, r#""x""#);
}

#[tokio::test]
async fn integer_tags_equal_string_tags() {
    let server = TestServer::start("").await;
    let mut by_number = server.connect(r#"{"userId":42}"#).await;
    let mut sender = server.connect("").await;
    sender.publish(r#""a""#, r#"{"userId":"42"}"#).await;
    assert_eq!(by_number.recv().await, r#""a""#);
    let mut by_string = server.connect(r#"{"userId":"7"}"#).await;
    sender.publish(r#""b""#, r#"{"userId":7}"#).await;
    assert_eq!(by_string.recv().await, r#""b""#);
}

#[tokio::test]
async fn the_sender_receives_its_own_request_when_it_matches() {
    let server = TestServer::start("").await;
    let mut client = server.connect(r#"{"room":"1"}"#).await;
    client.publish(r#""echo""#, r#"{"room":"1"}"#).await;
    assert_eq!(client.recv().await, r#""echo""#);
}

#[tokio::test]
async fn order_is_kept_per_sender() {
    let server = TestServer::start("[messages]\nparser = \"json\"\n").await;
    let mut receiver = server.connect(r#"{"room":"1"}"#).await;
    let mut sender = server.connect("").await;
    for index in 0..500 {
        sender.publish(&index.to_string(), r#"{"room":"1"}"#).await;
    }
    for index in 0..500 {
        assert_eq!(receiver.recv().await, index.to_string());
    }
}

#[tokio::test]
async fn parsers_shape_what_is_delivered() {
    let json = TestServer::start("[messages]\nparser = \"json\"\n").await;
    let mut receiver = json.connect("").await;
    receiver.publish(r#"{"z": 1, "a": "\u00e9"}"#, "{}").await;
    assert_eq!(receiver.recv().await, r#"{"z":1,"a":"é"}"#);

    let message = TestServer::start("[messages]\nparser = \"message\"\n").await;
    let mut receiver = message.connect("").await;
    receiver
        .publish(
            r#"{"metadata":{"k":"v"},"creationDate":"2026-11-27","type":"news"}"#,
            "{}",
        )
        .await;
    assert_eq!(
        receiver.recv().await,
        r#"{"type":"news","creationDate":"2026-11-27","metadata":{"k":"v"}}"#
    );
}

#[cfg(feature = "json-schema")]
#[tokio::test]
async fn a_json_schema_parser_checks_messages() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(
        &schema,
        r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}"#,
    )
    .unwrap();
    let config = format!(
        "[messages]\nparser = \"json-schema\"\nschema = {:?}\n",
        schema
    );
    let server = TestServer::start(&config).await;
    let mut receiver = server.connect("").await;
    receiver.publish(r#"{"n":1}"#, "{}").await;
    assert_eq!(receiver.recv().await, r#"{"n":1}"#);
    receiver.publish(r#"{"n":"x"}"#, "{}").await;
    let (code, reason) = receiver.expect_close().await;
    assert_eq!(code, 4400);
    assert!(reason.contains("schema"), "{reason}");
}
