//! The first bytes of every connection: the request head, read before the deadline that bounds
//! the handshake. Shared by the WebSocket connection and the HTTP endpoints.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::ops::config::Config;
use crate::wire::handshake::{self, Head, Rejection};

/// When a connection accepted now must have sent its request head (and an HTTP body).
pub fn handshake_deadline(config: &Config) -> Instant {
    Instant::now() + Duration::from_millis(config.limits.handshake_timeout_ms.get())
}

/// Reads until a whole request head is in `buffer`, leaving the bytes after it there. `Ok(None)`:
/// the stream ended or failed first.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
) -> Result<Option<Head>, Rejection> {
    loop {
        if let Some((head, length)) = handshake::parse_head(buffer)? {
            buffer.advance(length);
            return Ok(Some(head));
        }
        if buffer.capacity() == buffer.len() {
            buffer.reserve(buffer.len().max(1024));
        }
        match stream.read_buf(buffer).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}
