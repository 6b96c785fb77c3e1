//! Why a WebSocket connection closes: the close codes tagcast sends and the reason that goes with
//! one. Used by the frame reader ([`super::frame`]) and the inflater ([`super::deflate`]), which
//! both refuse input with a close code.

use std::borrow::Cow;

/// Close codes used by tagcast (RFC 6455 and the Gomoob-compatible 4xxx range).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Never sent: the peer vanished without a close frame (RFC 6455 §7.1.5).
    pub const ABNORMAL: u16 = 1006;
    /// A frame broke RFC 6455.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A binary frame: tagcast speaks text only.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame or message over `messages.max_size`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// An internal error.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The request is not a valid tagcast request.
    pub const INVALID_REQUEST: u16 = 4400;
    /// The request's credentials do not allow sending.
    pub const UNAUTHORIZED: u16 = 4401;
    /// The credentials this connection opened with were revoked.
    pub const REVOKED: u16 = 4403;
    /// The client reads too slowly or sends too fast.
    pub const TOO_MANY: u16 = 4429;
}

/// A close code and the human-readable reason sent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The close code (see [`close_code`]).
    pub code: u16,
    /// Why, for the client; cut to 123 bytes when encoded.
    pub reason: Cow<'static, str>,
}

impl CloseReason {
    /// A close code with its reason.
    pub fn new(code: u16, reason: impl Into<Cow<'static, str>>) -> CloseReason {
        CloseReason {
            code,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}
