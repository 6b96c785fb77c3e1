//! Where the daemon's logs go: native journal entries under systemd, readable lines on stderr
//! otherwise (`log.target`), filtered by `RUST_LOG` when set, else by `log.level`.
//!
//! In the journal every `tracing` field becomes a journal field of the same name in upper case
//! (`conn` → `CONN`, `peer` → `PEER`, `tags` → `TAGS`, `app` → `APP`, `code` → `CODE`), so
//! `journalctl -u tagcast CONN=12` shows one connection's story. Levels map to the syslog
//! priorities of the same name, so that `journalctl -p info` means what it says: error → err
//! (3), warn → warning (4), info → info (6), debug and trace → debug (7). The events an admin
//! looks for carry a `MESSAGE_ID` ([`message_id`]): `journalctl MESSAGE_ID=...`.

use std::io::{self, IsTerminal};
use std::os::unix::fs::MetadataExt;

use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::ops::config::{LogConfig, LogTarget};

/// The journal's `SYSLOG_IDENTIFIER` (what `journalctl -t tagcast` selects).
const IDENTIFIER: &str = "tagcast";

/// The `MESSAGE_ID`s (sd-id128, fixed for good: admins' filters and alerts name them) of the
/// events an admin looks for, logged as the field `message_id`. README "Reading the logs"
/// lists them.
pub mod message_id {
    /// The daemon starts (version, config file).
    pub const STARTED: &str = "5701cb616f2f43fea13b42793d2419db";
    /// Every listener is bound and the auth file loaded: serving (`READY=1`).
    pub const READY: &str = "9d3a15de849d42ee8fa3d9fd89dada6a";
    /// A reload (SIGHUP, `tagcast reload`) succeeded.
    pub const RELOAD_DONE: &str = "dff14ef3f50146e8b671e0ec6dd3305f";
    /// A reload failed; the previous settings stay in force.
    pub const RELOAD_FAILED: &str = "9832264f5ad1495487f3a62df6391b83";
    /// A client too slow to read its messages was closed with 4429.
    pub const SLOW_CLIENT_CLOSED: &str = "e18623e8c24a4873920bb0abe4a3c14d";
    /// SIGTERM or SIGINT: every client is being closed with 1001.
    pub const SHUTDOWN: &str = "750f232eca9d48dc81ee30acb0e39d00";
}

/// Installs the global subscriber for the daemon. Call once, before anything logs.
///
/// The filter is `RUST_LOG` when it is set and valid (a mistake in it is reported, then
/// `log.level` applies), else `log.level`, which the config has already validated. When the
/// journal is wanted but unreachable, the lines go to stderr after a warning saying so.
pub fn init(config: &LogConfig) {
    let (filter, bad_env) = filter(config);
    let wants_journal = match config.target {
        LogTarget::Auto => journal_is_stderr(),
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
    };
    let journal = wants_journal.then(|| {
        tracing_journald::layer().map(|layer| {
            layer
                .with_field_prefix(None)
                .with_syslog_identifier(IDENTIFIER.into())
                .with_priority_mappings(PriorityMappings {
                    info: Priority::Informational,
                    debug: Priority::Debug,
                    ..PriorityMappings::new()
                })
        })
    });
    match journal {
        Some(Ok(layer)) => tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init(),
        not_journal => {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(io::stderr)
                .with_ansi(io::stderr().is_terminal())
                .init();
            if let Some(Err(error)) = not_journal {
                tracing::warn!("the journal is unreachable ({error}); logging to stderr");
            }
        }
    }
    if let Some(error) = bad_env {
        tracing::warn!(
            "RUST_LOG is invalid ({error}); using log.level {:?}",
            config.level
        );
    }
}

/// `RUST_LOG` when set and valid, else `log.level`; plus `RUST_LOG`'s error, if any.
fn filter(config: &LogConfig) -> (EnvFilter, Option<String>) {
    let from_config = || EnvFilter::new(&config.level);
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) if !directives.trim().is_empty() => match EnvFilter::try_new(&directives) {
            Ok(filter) => (filter, None),
            Err(error) => (from_config(), Some(error.to_string())),
        },
        _ => (from_config(), None),
    }
}

/// True when systemd connected stderr to the journal: `JOURNAL_STREAM` (`DEVICE:INODE`) names
/// the very file stderr is (sd_journal_stream_fd(3)). A child that inherited the variable but
/// writes elsewhere (a shell redirect, a pipe) keeps plain lines.
fn journal_is_stderr() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream == format!("{}:{}", stderr.dev(), stderr.ino())
}
