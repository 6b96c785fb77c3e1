//! Where the daemon's logs go: native journal entries under systemd, readable lines on stderr
//! otherwise (`log.target`), filtered by `RUST_LOG` when set, else by `log.level`.
//!
//! In the journal every `tracing` field becomes a journal field of the same name in upper case
//! (`conn` → `CONN`, `peer` → `PEER`, `tags` → `TAGS`, `app` → `APP`, `code` → `CODE`), so
//! `journalctl -u tagcast CONN=12` shows one connection's story. Levels map to priorities:
//! error → err, warn → warning, info → notice, debug → info, trace → debug.

use std::io::{self, IsTerminal};
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::ops::config::{LogConfig, LogTarget};

/// The journal's `SYSLOG_IDENTIFIER` (what `journalctl -t tagcast` selects).
const IDENTIFIER: &str = "tagcast";

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
