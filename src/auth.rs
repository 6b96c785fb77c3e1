//! Who may open a connection and who may send (SPEC §3).
//!
//! Without an auth file everybody may open and send.

use crate::frame::{CloseReason, close_code};
use crate::handshake::Rejection;
use crate::request::Credentials;

/// The authorization policy in force.
pub struct Auth {
    authorize_open: bool,
}

impl Auth {
    /// No applications file: everybody may open and send.
    pub fn open_to_all() -> Auth {
        Auth {
            authorize_open: true,
        }
    }

    /// The number of applications in the auth file; `None` without an auth file.
    pub fn applications(&self) -> Option<usize> {
        None
    }

    /// May a connection open with these URL credentials?
    pub fn check_open(&self, _credentials: &Credentials) -> Result<(), Rejection> {
        if self.authorize_open {
            return Ok(());
        }
        Err(Rejection::new(401, "open not authorized"))
    }

    /// May a request with these `metadata` credentials be sent?
    pub fn check_send(&self, _credentials: &Credentials) -> Result<(), CloseReason> {
        if self.authorize_open {
            return Ok(());
        }
        Err(CloseReason::new(
            close_code::UNAUTHORIZED,
            "send not authorized",
        ))
    }
}
