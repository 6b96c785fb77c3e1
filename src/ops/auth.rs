//! Who may open a connection and who may send (SPEC §3), from the Gomoob `auth.yml`, reloaded
//! while the server runs.
//!
//! - No auth file (`auth.file` unset): everybody may open and send.
//! - Open: allowed when `auth.authorize_open` is true. Otherwise the URL's `key` must be that of
//!   an application with `authorizeOpen: true` (its secret is not checked, as in Gomoob), or the
//!   URL must carry a `key` and its `secret`. Refusals answer HTTP **401** when the credentials
//!   are missing (no `key`, or no `secret` where one is needed) and **403** when they are wrong
//!   (unknown key or wrong secret).
//! - Send: with an auth file, every request's `metadata` must carry the `key` and `secret` of an
//!   application; otherwise the connection is closed with 4401.
//! - Signed tags (`auth.signed_tags`): a connection's tags are the URL's `tags` together with
//!   those of a valid `?token=` ([`crate::token`]); a name in both must have the same value, and
//!   a signed name must come from the token. 401 when a needed token is absent, 403 when a token
//!   is invalid or does not cover the URL's tags. A valid token also opens when
//!   `authorize_open` is false.
//!
//! The applications table sits behind an [`ArcSwap`]: every check reads it without a lock, and
//! [`Auth::reload`] replaces it whole. A reload is the one path for SIGHUP and for the file
//! watcher ([`crate::ops::watch`]); after each successful one every open connection is judged
//! again with the credentials and token it opened with, by the same [`Auth::authorize`] as an
//! open but for the token's time, and those refused are closed with 4403.

mod file;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

pub use file::{Application, Applications, AuthError, Secret};

use crate::ops::config::AuthConfig;
use crate::ops::metrics::RefusedOpen;
use crate::routing::hub::{Hub, Peer};
use crate::tags::{TagLimits, Tags, TagsError};
use crate::token::{self, Clock, TokenError, Verified};
use crate::wire::frame::{CloseReason, close_code};
use crate::wire::handshake::Rejection;
use crate::wire::request::Credentials;

/// The authorization policy in force.
pub struct Auth {
    /// `auth.authorize_open`: anyone may open.
    authorize_open: bool,
    /// `auth.signed_tags` and `auth.token_leeway_s`.
    tokens: AuthConfig,
    /// The applications file, when one is configured.
    file: Option<AuthFile>,
}

/// A configured applications file and what it holds now.
struct AuthFile {
    /// The file, named in logs and errors.
    path: PathBuf,
    /// The applications of the last valid version of the file; read without a lock.
    applications: ArcSwap<Applications>,
    /// Serializes reloads (SIGHUP and the watcher may ask at once), so that the table swapped
    /// in last is the one the connections were judged against.
    reloading: Mutex<()>,
}

/// What one reload of the auth file did.
#[derive(Debug)]
pub enum AuthReload {
    /// No auth file is configured: nothing to reload.
    NoFile,
    /// The new file is in force.
    Loaded {
        /// Applications in the new file.
        applications: usize,
        /// Open connections closed with 4403 because the new file refuses their credentials.
        revoked: usize,
    },
    /// The file is unreadable or invalid: the previous applications stay in force.
    Failed(AuthError),
}

const MISSING_OPEN: &str =
    "open not authorized: the URL needs the key and secret of an application";
const WRONG_OPEN: &str = "open not authorized: unknown application key or wrong secret";
const MISSING_SEND: &str =
    "send not authorized: metadata needs the key and secret of an application";
const WRONG_SEND: &str = "send not authorized: unknown application key or wrong secret";
const REVOKED: &str = "the credentials this connection opened with were revoked (auth file reload)";
const NO_FILE_FOR_TOKENS: &str = "token refused: this server has no auth file to verify it";

/// An open refused before the upgrade: the HTTP answer, why (for metrics) and, when a token was
/// given, its `kid` (for logs; the token itself is never logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRefusal {
    /// The status and plain-text reason answered.
    pub rejection: Rejection,
    /// The `reason` label of `tagcast_opens_refused_total`.
    pub reason: RefusedOpen,
    /// The `kid` of the token, when one was given and has one.
    pub kid: Option<String>,
}

impl OpenRefusal {
    fn new(reason: RefusedOpen, status: u16, text: impl Into<String>) -> OpenRefusal {
        OpenRefusal {
            rejection: Rejection::new(status, text),
            reason,
            kid: None,
        }
    }

    /// A refusal of the upgrade request itself ([`crate::wire::handshake::check_upgrade`]): its only
    /// 403 is a foreign `Origin`.
    pub fn of_upgrade(rejection: Rejection) -> OpenRefusal {
        let reason = match rejection.status {
            403 => RefusedOpen::Origin,
            _ => RefusedOpen::BadRequest,
        };
        OpenRefusal {
            rejection,
            reason,
            kid: None,
        }
    }

    /// `limits.max_connections` is reached.
    pub fn full() -> OpenRefusal {
        OpenRefusal::new(
            RefusedOpen::Full,
            503,
            "connection limit reached, try again later",
        )
    }

    fn token(error: &TokenError, token: &str) -> OpenRefusal {
        let reason = if error.is_timing() {
            RefusedOpen::TokenExpired
        } else {
            RefusedOpen::TokenInvalid
        };
        OpenRefusal {
            kid: token::key_id(token),
            ..OpenRefusal::new(reason, 403, error.to_string())
        }
    }
}

impl Auth {
    /// The policy of `[auth]`, loading the applications file it names. A configured file that
    /// is missing, unreadable or invalid is an error; no file is a warning.
    pub fn from_config(config: &AuthConfig) -> Result<Auth, AuthError> {
        let Some(path) = &config.file else {
            warn!("no auth file configured (auth.file): anyone may open and send");
            return Ok(Auth {
                authorize_open: true,
                tokens: config.clone(),
                file: None,
            });
        };
        let applications = Applications::load(path)?;
        info!(path = %path.display(), applications = applications.len(), "auth file loaded");
        Ok(Auth {
            authorize_open: config.authorize_open,
            tokens: config.clone(),
            file: Some(AuthFile {
                path: path.clone(),
                applications: ArcSwap::from_pointee(applications),
                reloading: Mutex::new(()),
            }),
        })
    }

    /// The applications file, when one is configured.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|file| file.path.as_path())
    }

    /// Number of applications in force; `None` without an auth file.
    pub fn applications(&self) -> Option<usize> {
        self.file
            .as_ref()
            .map(|file| file.applications.load().len())
    }

    /// May a connection open with these URL `tags`, `credentials` and `token`? Returns the
    /// connection's tags: the URL's together with the token's. See the module doc.
    pub fn check_open(
        &self,
        tags: &Tags,
        credentials: &Credentials,
        token: Option<&str>,
        limits: TagLimits,
    ) -> Result<Tags, OpenRefusal> {
        let clock = Clock::Now {
            leeway_s: self.tokens.token_leeway_s,
        };
        let verified = self.authorize(credentials, token, clock, limits)?;
        self.with_token_tags(tags, verified.as_ref(), limits)
            .map_err(|refusal| OpenRefusal {
                kid: verified.map(|verified| verified.kid),
                ..refusal
            })
    }

    /// The open rule for `credentials` and `token`, at open ([`Clock::Now`]) and when judged
    /// again after a reload ([`Clock::Ignored`]): a token, when given, must be valid; then
    /// anyone opens under `authorize_open`, and otherwise a valid token, the key of an
    /// `authorizeOpen` application, or a key and its secret. Returns the valid token.
    pub fn authorize(
        &self,
        credentials: &Credentials,
        token: Option<&str>,
        clock: Clock,
        limits: TagLimits,
    ) -> Result<Option<Verified>, OpenRefusal> {
        let Some(file) = &self.file else {
            return match token {
                Some(given) => Err(OpenRefusal {
                    kid: token::key_id(given),
                    ..OpenRefusal::new(RefusedOpen::TokenInvalid, 403, NO_FILE_FOR_TOKENS)
                }),
                None => Ok(None),
            };
        };
        let applications = file.applications.load();
        let verified = token
            .map(|given| {
                token::verify(given, |kid| applications.token_key(kid), clock, limits)
                    .map_err(|error| OpenRefusal::token(&error, given))
            })
            .transpose()?;
        if self.authorize_open || verified.is_some() {
            return Ok(verified);
        }
        let opens_by_key = |key: &String| {
            applications
                .get(key)
                .is_some_and(|application| application.authorize_open)
        };
        if credentials.key.as_ref().is_some_and(opens_by_key) {
            return Ok(None);
        }
        verify(&applications, credentials)
            .map(|()| None)
            .map_err(|refusal| match refusal {
                Refusal::Missing => {
                    OpenRefusal::new(RefusedOpen::CredentialsMissing, 401, MISSING_OPEN)
                }
                Refusal::Wrong => OpenRefusal::new(RefusedOpen::CredentialsWrong, 403, WRONG_OPEN),
            })
    }

    /// The URL's `tags` together with the valid token's; refused when they disagree, when a
    /// signed name does not come from the token, or when the result is over the limits.
    fn with_token_tags(
        &self,
        tags: &Tags,
        verified: Option<&Verified>,
        limits: TagLimits,
    ) -> Result<Tags, OpenRefusal> {
        let signed = verified.map(|verified| &verified.tags);
        let differs =
            |(name, value): &(&str, &str)| tags.get(name).is_some_and(|own| own != *value);
        if let Some((name, _)) = signed.and_then(|signed| signed.iter().find(differs)) {
            return Err(OpenRefusal::new(
                RefusedOpen::TokenTags,
                403,
                format!("tag `{name}`: the URL's value differs from the token's"),
            ));
        }
        let all: Tags = tags
            .iter()
            .chain(signed.into_iter().flat_map(Tags::iter))
            .collect();
        if all.len() > limits.max_tags {
            return Err(OpenRefusal::new(
                RefusedOpen::BadRequest,
                400,
                format!("bad tags: {}", TagsError::TooMany(limits.max_tags)),
            ));
        }
        let unsigned = all.iter().find(|(name, _)| {
            self.tokens.is_signed(name) && signed.is_none_or(|signed| signed.get(name).is_none())
        });
        match (unsigned, signed) {
            (None, _) => Ok(all),
            (Some((name, _)), None) => Err(OpenRefusal::new(
                RefusedOpen::TokenMissing,
                401,
                format!(
                    "tag `{name}` needs a token signed by an application (URL parameter `token`)"
                ),
            )),
            (Some((name, _)), Some(_)) => Err(OpenRefusal::new(
                RefusedOpen::TokenTags,
                403,
                format!("tag `{name}` is signed: it must come from the token"),
            )),
        }
    }

    /// May a request with these `metadata` credentials be sent?
    pub fn check_send(&self, credentials: &Credentials) -> Result<(), CloseReason> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        verify(&file.applications.load(), credentials).map_err(|refusal| {
            let reason = match refusal {
                Refusal::Missing => MISSING_SEND,
                Refusal::Wrong => WRONG_SEND,
            };
            CloseReason::new(close_code::UNAUTHORIZED, reason)
        })
    }

    /// Reads the file again. A valid file replaces the applications at once, then every
    /// connection of `hub` is judged again with the credentials it opened with, as a new open
    /// would be, and those refused are closed with 4403. An invalid file changes nothing.
    /// Logs the result either way.
    pub fn reload(&self, hub: &Hub) -> AuthReload {
        let Some(file) = &self.file else {
            info!("no auth file configured: nothing to reload");
            return AuthReload::NoFile;
        };
        let _one_at_a_time = file
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let applications = match Applications::load(&file.path) {
            Ok(applications) => applications,
            Err(problem) => {
                error!(error = %problem, "auth file rejected; the previous applications stay in force");
                return AuthReload::Failed(problem);
            }
        };
        let count = applications.len();
        file.applications.store(applications.into());
        let revoked = self.revoke_refused(hub);
        info!(path = %file.path.display(), applications = count, revoked, "auth file reloaded");
        AuthReload::Loaded {
            applications: count,
            revoked,
        }
    }

    /// Closes with 4403 every connection that could not open now; returns how many.
    fn revoke_refused(&self, hub: &Hub) -> usize {
        hub.peers()
            .iter()
            .filter(|peer| self.judge_again(peer))
            .count()
    }

    /// Judges an open connection as a new open with its credentials and token would be judged
    /// now (the token's time aside), and closes it with 4403 if refused. True when this call
    /// closed it.
    pub fn judge_again(&self, peer: &Peer) -> bool {
        // The token's tags were checked against the limits at open.
        let judged = self.authorize(
            &peer.credentials,
            peer.token.as_deref(),
            Clock::Ignored,
            TagLimits::UNLIMITED,
        );
        let Err(refusal) = judged else {
            return false;
        };
        let closed = peer
            .outbox
            .close(CloseReason::new(close_code::REVOKED, REVOKED));
        if closed {
            let kid = peer.token.as_deref().and_then(token::key_id);
            let app = peer
                .credentials
                .key
                .as_deref()
                .or(kid.as_deref())
                .unwrap_or("");
            info!(conn = peer.id, peer = %peer.address, app, reason = %refusal.rejection.reason,
                "credentials revoked: closing");
        }
        closed
    }
}

/// Why credentials do not match an application.
enum Refusal {
    /// No key, or no secret.
    Missing,
    /// An unknown key, or the wrong secret.
    Wrong,
}

/// Do `credentials` carry the key and the secret of one of `applications`?
fn verify(applications: &Applications, credentials: &Credentials) -> Result<(), Refusal> {
    let (Some(key), Some(secret)) = (&credentials.key, &credentials.secret) else {
        return Err(Refusal::Missing);
    };
    match applications.get(key) {
        Some(application) if application.secret.matches(secret) => Ok(()),
        _ => Err(Refusal::Wrong),
    }
}
