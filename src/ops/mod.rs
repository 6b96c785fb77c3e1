//! Running the daemon: what an operator configures, watches and reads.
//!
//! - [`config`]: `tagcast.toml`, validated.
//! - [`auth`]: who may open and send: the applications file, checked and reloaded.
//! - [`watch`]: noticing that a file changed, however it was replaced.
//! - [`control`]: `tagcast reload`: a reload the daemon runs and answers over a Unix socket.
//! - [`systemd`]: readiness, status, reload, stop and watchdog messages to systemd.
//! - [`logging`]: logs to the journal under systemd, to stderr otherwise.
//! - [`metrics`]: the Prometheus metrics.
//! - [`manual`]: the man pages and shell completions, generated from the clap definition.
//! - [`trust`]: how `send`, `listen` and `bench` trust a wss:// server (`--ca`, `--insecure`).

pub mod auth;
pub mod config;
pub mod control;
pub mod logging;
pub mod manual;
pub mod metrics;
pub mod systemd;
pub mod trust;
pub mod watch;
