//! The WebSocket wire formats the client and the server share, pure (no IO): RFC 6455 frames and
//! permessage-deflate (RFC 7692). The server re-exports them as `tagcast::wire`.

pub mod close;
pub mod deflate;
pub mod frame;
