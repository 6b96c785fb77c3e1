//! Recovery after a reconnect on one node (SPEC §10), over real sockets: `?since=`, the id
//! frames, the replay and its handoff to live delivery, and `{"gap":true}`.

mod common;

use std::time::Duration;

use common::{
    Client, Frame, RawClient, TestServer, WAIT, connect_since, disconnect, frame, http_publish, id,
    message,
};

/// The frames `client` receives before the bare marker message `"marker"` (sent to every
/// connection), which it consumes.
async fn frames_before_marker(client: &mut Client, sender: &mut Client) -> Vec<Frame> {
    sender.publish(r#""marker""#, "{}").await;
    let mut frames = Vec::new();
    loop {
        let frame = frame(&client.recv().await);
        if matches!(&frame, Frame::Message { message, .. } if message == "marker") {
            return frames;
        }
        frames.push(frame);
    }
}

#[tokio::test]
async fn since_is_refused_with_400_when_the_history_is_off() {
    let server = TestServer::start("").await;
    let mut plain = server.connect("{}").await;
    for query in ["/?since=", "/?since=1-0", "/?tags=%7B%7D&since=x"] {
        let mut refused =
            RawClient::send_request(server.address, &common::upgrade_request(query)).await;
        let answer = String::from_utf8(refused.read_to_end().await).expect("utf-8");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("Content-Type: text/plain"), "{answer}");
        assert!(answer.ends_with("since: this server keeps no history ([history] size = 0)\n"));
    }
    // The others go on, with bare frames and no id in the publish answer.
    let answer = http_publish(&server, r#"{"message":"still here"}"#).await;
    assert_eq!(answer, serde_json::json!({"delivered": 1}));
    assert_eq!(plain.recv().await, r#""still here""#);
}

#[tokio::test]
async fn a_reconnecting_client_gets_exactly_what_it_missed_that_matches_then_live() {
    let server = TestServer::start("[history]\nsize = 100\n").await;
    let mut sender = server.connect(r#"{"role":"backend"}"#).await;
    let mut plain = server.connect(r#"{"room":"a"}"#).await;
    let mut recovering = connect_since(&server, r#"{"room":"a"}"#, "").await;

    sender.publish(r#""1""#, r#"{"room":"a"}"#).await;
    let first = frame(&recovering.recv().await);
    assert_eq!(message(&first), "1");
    disconnect(&server, recovering).await;

    // Published over HTTP: each is routed once its answer is in.
    http_publish(&server, r#"{"message":"2 for a","tags":{"room":"a"}}"#).await;
    http_publish(&server, r#"{"message":"3 for b","tags":{"room":"b"}}"#).await;
    let answer = http_publish(&server, r#"{"message":"4 for all"}"#).await;
    assert_eq!(answer["delivered"], 2, "{answer}"); // the sender and `plain`
    let fourth_id = answer["id"]
        .as_str()
        .expect("an id in the answer")
        .to_owned();
    let answer = http_publish(
        &server,
        r#"{"message":"5 for a+x","tags":{"room":"a","x":"1"}}"#,
    );
    assert_eq!(answer.await["delivered"], 0);

    let mut recovering = connect_since(&server, r#"{"room":"a"}"#, &id(&first)).await;
    let replayed = frames_before_marker(&mut recovering, &mut sender).await;
    assert_eq!(
        replayed.iter().map(message).collect::<Vec<_>>(),
        ["2 for a", "4 for all"]
    );
    assert_eq!(id(&replayed[1]), fourth_id);
    assert_ne!(id(&replayed[0]), id(&first));
    sender.publish(r#""6 live""#, r#"{"room":"a"}"#).await;
    assert_eq!(message(&frame(&recovering.recv().await)), "6 live");

    // A connection without `since` keeps Gomoob's bare frames.
    let bare = common::received_before(r#""marker""#, async || plain.recv().await).await;
    assert_eq!(bare, [r#""1""#, r#""2 for a""#, r#""4 for all""#]);
    assert_eq!(plain.recv().await, r#""6 live""#);

    // From now on: no replay, live frames with ids.
    let mut fresh = connect_since(&server, r#"{"room":"a"}"#, "").await;
    assert!(
        frames_before_marker(&mut fresh, &mut sender)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_reconnect_during_a_stream_of_1500_sees_every_message_once_in_order() {
    const MESSAGES: usize = 1500;
    let server = TestServer::start("[history]\nsize = 2000\n").await;
    let mut listener = connect_since(&server, r#"{"room":"a"}"#, "").await;
    let mut publisher = server.connect(r#"{"role":"backend"}"#).await;
    let stream = tokio::spawn(async move {
        for n in 0..MESSAGES {
            publisher
                .publish(&format!("\"{n}\""), r#"{"room":"a"}"#)
                .await;
            if n % 2 == 0 {
                // Something it must not see, between the ones it must.
                publisher
                    .publish(r#""other room""#, r#"{"room":"b"}"#)
                    .await;
            }
        }
        publisher
    });
    let mut received = Vec::with_capacity(MESSAGES);
    let mut last_id = String::new();
    let mut reconnects = 0;
    while received.len() < MESSAGES {
        let frame = frame(&listener.recv().await);
        last_id = id(&frame);
        received.push(message(&frame).parse::<usize>().expect("a number"));
        if [300, 700, 1100].contains(&received.len()) {
            // Dropped without a close, as a phone changing networks; back at once.
            drop(listener);
            listener = connect_since(&server, r#"{"room":"a"}"#, &last_id).await;
            reconnects += 1;
        }
    }
    let _publisher = stream.await.expect("the publisher");
    assert_eq!(reconnects, 3);
    assert_eq!(received, (0..MESSAGES).collect::<Vec<_>>());
    assert!(!last_id.is_empty());
}

#[tokio::test]
async fn gap_when_the_size_dropped_messages_after_the_id() {
    let server = TestServer::start("[history]\nsize = 3\n").await;
    let mut sender = server.connect(r#"{"role":"backend"}"#).await;
    let mut recovering = connect_since(&server, "{}", "").await;
    sender.publish(r#""0""#, "{}").await;
    let first = frame(&recovering.recv().await);
    disconnect(&server, recovering).await;
    for n in 1..=5 {
        http_publish(&server, &format!(r#"{{"message":"{n}"}}"#)).await;
    }
    let mut recovering = connect_since(&server, "{}", &id(&first)).await;
    let replayed = frames_before_marker(&mut recovering, &mut sender).await;
    assert_eq!(replayed[0], Frame::Gap);
    assert_eq!(
        replayed[1..].iter().map(message).collect::<Vec<_>>(),
        ["3", "4", "5"]
    );
}

#[tokio::test]
async fn gap_when_the_ttl_dropped_messages_after_the_id() {
    let server = TestServer::start("[history]\nsize = 10\nttl_s = 1\n").await;
    let mut sender = server.connect(r#"{"role":"backend"}"#).await;
    let first = http_publish(&server, r#"{"message":"old"}"#).await;
    let first = first["id"].as_str().expect("an id").to_owned();
    http_publish(&server, r#"{"message":"expires"}"#).await;
    // Recover again until the second message has expired (at most WAIT): first its replay,
    // then a gap and nothing kept.
    let deadline = tokio::time::Instant::now() + WAIT;
    let replayed = loop {
        let mut recovering = connect_since(&server, "{}", &first).await;
        let replayed = frames_before_marker(&mut recovering, &mut sender).await;
        disconnect(&server, recovering).await;
        if replayed.first() == Some(&Frame::Gap) {
            break replayed;
        }
        assert_eq!(
            replayed.iter().map(message).collect::<Vec<_>>(),
            ["expires"]
        );
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The markers of the earlier attempts expired too (they are a second old at most by now,
    // but any kept one would follow the gap).
    assert!(
        replayed[1..].iter().all(|frame| message(frame) == "marker"),
        "{replayed:?}"
    );
}

#[tokio::test]
async fn gap_for_an_id_the_server_never_issued_then_what_is_kept() {
    let server = TestServer::start("[history]\nsize = 10\n").await;
    let mut sender = server.connect(r#"{"role":"backend"}"#).await;
    sender.publish(r#""kept for a""#, r#"{"room":"a"}"#).await;
    sender.publish(r#""kept for b""#, r#"{"room":"b"}"#).await;
    for unknown in ["not-an-id", "42", "1-0", "99999999999999-0"] {
        let mut recovering = connect_since(&server, r#"{"room":"a"}"#, unknown).await;
        let replayed = frames_before_marker(&mut recovering, &mut sender).await;
        assert_eq!(replayed[0], Frame::Gap, "{unknown}");
        let messages: Vec<String> = replayed[1..].iter().map(message).collect();
        assert_eq!(messages[0], "kept for a", "{unknown}");
        assert!(
            messages[1..].iter().all(|text| text == "marker"),
            "{unknown}"
        );
        disconnect(&server, recovering).await;
    }
}

#[tokio::test]
async fn gap_after_a_restart() {
    let before = TestServer::start("[history]\nsize = 10\n").await;
    let answer = http_publish(&before, r#"{"message":"before the restart"}"#).await;
    let id = answer["id"].as_str().expect("an id").to_owned();
    before.shutdown.cancel();
    before.task.await.expect("stopped");

    let after = TestServer::start("[history]\nsize = 10\n").await;
    let mut sender = after.connect(r#"{"role":"backend"}"#).await;
    let mut recovering = connect_since(&after, "{}", &id).await;
    let replayed = frames_before_marker(&mut recovering, &mut sender).await;
    assert_eq!(replayed, [Frame::Gap]);
}

#[tokio::test]
async fn the_history_size_in_bytes_is_in_the_metrics() {
    let server = TestServer::start("[history]\nsize = 10\n").await;
    let bytes = || {
        server
            .shared
            .router
            .metrics()
            .encode()
            .lines()
            .find_map(|line| line.strip_prefix("tagcast_history_bytes "))
            .expect("tagcast_history_bytes")
            .parse::<u64>()
            .expect("a number")
    };
    assert_eq!(bytes(), 0);
    http_publish(&server, &format!(r#"{{"message":"{}"}}"#, "x".repeat(1000))).await;
    assert!(bytes() > 1000, "{}", bytes());
}

/// Publishes `count` numbered messages to room `a` from a connection of its own, once `ready`
/// holds (the listener under test is connected).
fn publish_numbers(
    server: &TestServer,
    count: usize,
    ready: impl Fn() -> bool + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let url = server.url("");
    tokio::spawn(async move {
        let mut publisher = Client::connect(&url).await;
        common::wait_until(ready, "the listener").await;
        for n in 0..count {
            publisher
                .publish(&format!("\"{n}\""), r#"{"room":"a"}"#)
                .await;
        }
    })
}

#[tokio::test]
async fn the_resuming_listener_survives_cut_connections_and_sees_every_message_once_in_order() {
    const MESSAGES: usize = 1500;
    let server = TestServer::start("[history]\nsize = 2000\n").await;
    let proxy = common::CuttingProxy::start(server.address).await;
    let mut listener = tagcast::client::Endpoint::new(&format!("ws://{}/", proxy.address))
        .expect("a URL")
        .resume_with_tags([("room", "a")], None);
    let hub = server.hub.clone();
    let stream = publish_numbers(&server, MESSAGES, move || hub.len() == 2);
    let mut received = Vec::with_capacity(MESSAGES);
    while received.len() < MESSAGES {
        let event = tokio::time::timeout(WAIT, listener.next::<String>())
            .await
            .expect("an event in time")
            .expect("no error");
        match event {
            tagcast::client::Event::Message { id, message } => {
                assert_eq!(listener.last_id(), Some(id.as_str()));
                received.push(message.parse::<usize>().expect("a number"));
            }
            tagcast::client::Event::Gap => panic!("a gap after {} messages", received.len()),
        }
        if [300, 700, 1100].contains(&received.len()) {
            proxy.cut();
        }
    }
    stream.await.expect("the publisher");
    assert_eq!(received, (0..MESSAGES).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_resuming_listener_yields_a_gap_as_an_event_and_refusals_as_errors() {
    let server = TestServer::start("[history]\nsize = 10\n").await;
    let endpoint = tagcast::client::Endpoint::new(&server.url("")).expect("a URL");
    http_publish(&server, r#"{"message":"kept"}"#).await;
    let mut listener = endpoint.resume_with_tags([("room", "a")], Some("1-0".into()));
    assert_eq!(
        listener.next::<String>().await.expect("an event"),
        tagcast::client::Event::Gap
    );
    match listener.next::<String>().await.expect("an event") {
        tagcast::client::Event::Message { message, .. } => assert_eq!(message, "kept"),
        other => panic!("{other:?}"),
    }
    // No history: refused for good, not retried.
    let off = TestServer::start("").await;
    let endpoint = tagcast::client::Endpoint::new(&off.url("")).expect("a URL");
    let refused = endpoint
        .resume_with_tags([("room", "a")], None)
        .next::<String>()
        .await;
    assert!(
        matches!(&refused, Err(tagcast::client::ClientError::Unreachable { error, .. }) if error.to_string().contains("400")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn tagcast_listen_since_prints_ids_and_resumes_after_a_cut() {
    let server = TestServer::start("[history]\nsize = 100\n").await;
    let proxy = common::CuttingProxy::start(server.address).await;
    let mut child = std::process::Command::new(common::TAGCAST)
        .args(["listen", "--since", "--tag", "room=a", "--url"])
        .arg(format!("ws://{}/", proxy.address))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tagcast listen");
    let (sender, mut lines) = tokio::sync::mpsc::unbounded_channel();
    common::forward_lines(child.stdout.take().expect("stdout"), move |line| {
        sender.send(line).is_ok()
    });
    let mut next_line = async || {
        tokio::time::timeout(WAIT, lines.recv())
            .await
            .expect("a line in time")
            .expect("tagcast listen is running")
    };
    server.wait_for_connections(1).await;
    let mut printed = Vec::new();
    for n in 0..3 {
        http_publish(
            &server,
            &format!(r#"{{"message":"{n}","tags":{{"room":"a"}}}}"#),
        )
        .await;
        printed.push(frame(&next_line().await));
    }
    proxy.cut();
    // Published while it is away (or reconnecting): it must get them once, in order.
    for n in 3..6 {
        http_publish(
            &server,
            &format!(r#"{{"message":"{n}","tags":{{"room":"a"}}}}"#),
        )
        .await;
    }
    for _ in 3..6 {
        printed.push(frame(&next_line().await));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        printed.iter().map(message).collect::<Vec<_>>(),
        ["0", "1", "2", "3", "4", "5"]
    );
    let ids: std::collections::HashSet<String> = printed.iter().map(id).collect();
    assert_eq!(ids.len(), 6);
}
