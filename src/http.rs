//! Plain HTTP requests on the WebSocket listeners (a request without `Upgrade: websocket`).

use crate::handshake::{Head, Rejection};
use crate::server::Shared;

/// The response to a plain HTTP request.
pub async fn handle(_shared: &Shared, head: &Head) -> Vec<u8> {
    Rejection::new(
        426,
        format!(
            "{} is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)",
            head.path
        ),
    )
    .to_response()
}
