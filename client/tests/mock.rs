//! `WebSocketClientMock` (SPEC §7): its queries on the Gomoob example and on the cases of the
//! server's routing tests (`tests/routing.rs`).

use tagcast_client::mock::WebSocketClientMock;
use tagcast_client::{ClientError, RequestSender, WebSocketRequest};

/// Runs `future` to completion: the mock never waits.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// The messages of `requests`, as strings.
fn messages(requests: Vec<&WebSocketRequest>) -> Vec<&str> {
    requests
        .into_iter()
        .map(|request| {
            request
                .get_message()
                .and_then(|message| message.as_str())
                .unwrap_or("?")
        })
        .collect()
}

/// Records one request per `(message, tags)`.
fn mock_with(requests: &[(&str, &[(&str, &str)])]) -> WebSocketClientMock {
    let mut mock = WebSocketClientMock::new();
    block_on(async {
        for (message, tags) in requests {
            let request = WebSocketRequest::create(*message).tags(tags.iter().copied());
            mock.send(&request).await.expect("send");
        }
    });
    mock
}

#[test]
fn the_gomoob_example() {
    let mock = mock_with(&[
        ("message0", &[("tag0", "tag0Value")]),
        ("message1", &[("tag1", "tag1Value")]),
        ("message2", &[("tag0", "tag0Value"), ("tag1", "tag1Value")]),
    ]);
    assert_eq!(
        messages(mock.find_by_tags([("tag0", "tag0Value")])),
        ["message0", "message2"]
    );
    assert_eq!(
        messages(mock.find_by_tags([("tag1", "tag1Value")])),
        ["message1", "message2"]
    );
    assert_eq!(
        messages(mock.find_by_tags([("tag0", "tag0Value"), ("tag1", "tag1Value")])),
        ["message2"]
    );
    assert_eq!(mock.count(), 3);
}

/// The cases of `requests_reach_exactly_the_connections_that_have_all_their_tags`: a recorded
/// request stands for a connection's tags, a query for a request's.
#[test]
fn the_routing_cases() {
    let mock = mock_with(&[
        ("fr", &[("language", "FR")]),
        ("en", &[("language", "EN")]),
        ("fr_user", &[("language", "FR"), ("userId", "42")]),
        ("untagged", &[]),
    ]);
    assert_eq!(
        messages(mock.find_by_tags([("language", "FR")])),
        ["fr", "fr_user"]
    );
    assert_eq!(
        messages(mock.find_by_tags([("language", "FR"), ("userId", "42")])),
        ["fr_user"]
    );
    let no_tags: [(&str, &str); 0] = [];
    assert_eq!(
        messages(mock.find_by_tags(no_tags)),
        ["fr", "en", "fr_user", "untagged"]
    );
    assert!(mock.find_by_tags([("language", "DE")]).is_empty());
    assert!(mock.find_by_tags([("team", "ops")]).is_empty());
}

#[test]
fn contains_count_and_reset() {
    let mut mock = WebSocketClientMock::new();
    mock.set_default_tags([("app", "shop")])
        .set_default_metadata([("key", "application1")]);
    let request = WebSocketRequest::create("hello").tags([("language", "FR")]);
    block_on(mock.send(&request)).expect("send");

    // Recorded as sent: with the defaults merged in; `contains` merges them into its query too.
    assert!(mock.contains(&request));
    assert!(!mock.contains(&WebSocketRequest::create("hello")));
    assert!(!mock.contains(&WebSocketRequest::create("other").tags([("language", "FR")])));
    assert_eq!(
        mock.requests()[0].to_json().expect("json"),
        r#"{"message":"hello","tags":{"app":"shop","language":"FR"},"metadata":{"key":"application1"}}"#
    );
    assert_eq!(messages(mock.find_by_tags([("app", "shop")])), ["hello"]);
    assert_eq!(mock.count(), 1);

    mock.reset();
    assert_eq!(mock.count(), 0);
    assert!(!mock.contains(&request));
}

#[test]
fn a_request_without_a_message_is_refused_and_not_recorded() {
    let mut mock = WebSocketClientMock::new();
    let result = block_on(mock.send(&WebSocketRequest::create(None::<String>)));
    assert!(matches!(result, Err(ClientError::NoMessage)), "{result:?}");
    assert_eq!(mock.count(), 0);
}

/// User code written against the trait, tested with the mock.
#[test]
fn code_generic_over_the_sender_is_testable() {
    async fn greet_team(sender: &mut impl RequestSender, team: &str) -> Result<(), ClientError> {
        sender
            .send(&WebSocketRequest::create(format!("hello {team}")).tags([("team", team)]))
            .await
    }
    let mut mock = WebSocketClientMock::new();
    block_on(greet_team(&mut mock, "ops")).expect("greet");
    assert_eq!(
        messages(mock.find_by_tags([("team", "ops")])),
        ["hello ops"]
    );
    assert!(mock.find_by_tags([("team", "dev")]).is_empty());
}
