//! `tagcast.toml`: raw serde structs that refuse unknown keys, validated into [`Config`].
//!
//! Every key has a default, so an empty file (or no file) gives a working server. The key names
//! are part of the contract (SPEC §4); `etc/tagcast.toml` documents each one and is parsed by a
//! test so that the example and the code cannot drift apart.

use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::strict;

use crate::tags::TagLimits;

/// Keys of older versions, refused with what replaced them: (key, explanation).
const RETIRED_KEYS: [(&str, &str); 1] = [(
    "send_queue",
    "limits.send_queue (a count of messages) is replaced by limits.send_queue_bytes (bytes \
     waiting for one client, default 4194304) and limits.write_timeout_ms (default 10000): \
     remove it, and see etc/tagcast.toml",
)];

/// Where the daemon looks for its config when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/tagcast/tagcast.toml";

/// A config that cannot be used. The message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The TOML parser's message: line, column and key.
        message: String,
    },
    /// A value has the right type but is not acceptable.
    #[error("{path}: key `{key}`: {problem}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The dotted key, e.g. `messages.parser`.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// The validated configuration of a server: every value is checked once, when the file is read,
/// into a type that holds only acceptable values (IP addresses, non-zero sizes and times, a
/// Redis URL whose `Debug` hides its password); nothing is parsed again where it is used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// The file it came from, if any (named in errors and logs).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[tls]`, when wss is served: the one place that says whether it is.
    pub tls: Option<TlsConfig>,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[messages]`.
    pub messages: MessagesConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[cluster]`.
    pub cluster: ClusterConfig,
    /// `[history]`.
    pub history: HistoryConfig,
    /// `[log]`.
    pub log: LogConfig,
}

/// `[server]`: the plain ws listener and who may connect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerConfig {
    /// Address to listen on.
    pub address: IpAddr,
    /// Port of the plain ws listener.
    pub port: u16,
    /// False: serve wss only.
    pub plain: bool,
    /// Origins browsers may connect from; empty: any.
    pub allowed_origins: Vec<String>,
}

/// `[tls]`: the wss listener. Its certificate and key are both given, or there is no `[tls]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsConfig {
    /// Address to listen on; `None`: `server.address`.
    pub address: Option<IpAddr>,
    /// Port of the wss listener.
    pub port: u16,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, RSA or EC).
    pub key: PathBuf,
}

impl TlsConfig {
    /// The wss listener's address: `server.address` unless `tls.address` is given.
    pub fn socket_address(&self, server: &ServerConfig) -> SocketAddr {
        SocketAddr::new(self.address.unwrap_or(server.address), self.port)
    }
}

/// `[auth]`: the applications file and the open policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The Gomoob `auth.yml`; none: anyone may open and send.
    pub file: Option<PathBuf>,
    /// True: anyone may open a connection; false: the URL must carry credentials (or a token).
    pub authorize_open: bool,
    /// Tag names a connection may hold only from a valid token (SPEC §3 "Signed tags");
    /// `["*"]`: every name; empty: none (Gomoob's behaviour).
    pub signed_tags: Vec<String>,
    /// Seconds of clock skew allowed when judging a token's `exp` and `nbf`.
    pub token_leeway_s: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            file: None,
            authorize_open: true,
            signed_tags: Vec::new(),
            token_leeway_s: 30,
        }
    }
}

impl AuthConfig {
    /// True when tag `name` may only come from a valid token.
    pub fn is_signed(&self, name: &str) -> bool {
        self.signed_tags
            .iter()
            .any(|signed| signed == "*" || signed == name)
    }
}

/// The built-in message parsers (`messages.parser`) as written; see [`ParserConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ParserKind {
    String,
    Json,
    Message,
    JsonSchema,
}

/// The message parser (`messages.parser`), with what it needs: the json-schema parser its
/// schema file (`messages.schema`), which no other parser takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "parser", rename_all = "kebab-case")]
pub enum ParserConfig {
    /// The message must be a JSON string.
    String,
    /// Any JSON value.
    Json,
    /// Gomoob's sample message object (`type`, `creationDate`, `metadata`).
    Message,
    /// Any JSON value valid against the schema.
    JsonSchema {
        /// The JSON Schema file.
        schema: PathBuf,
    },
}

impl ParserConfig {
    /// The name `messages.parser` gives it.
    pub fn name(&self) -> &'static str {
        match self {
            ParserConfig::String => "string",
            ParserConfig::Json => "json",
            ParserConfig::Message => "message",
            ParserConfig::JsonSchema { .. } => "json-schema",
        }
    }
}

/// `messages.compression`: whether frames to clients may be compressed (permessage-deflate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompressionMode {
    /// permessage-deflate is declined: every frame goes uncompressed.
    Off,
    /// Offers the shared compressor can honour are accepted: a message of at least
    /// `messages.compression_min_size` bytes is compressed once, and its compressed frame goes
    /// to every recipient that negotiated the extension.
    Shared,
}

/// `[messages]`: how requests' messages are parsed and how large they may be.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessagesConfig {
    /// Which parser checks and re-encodes each message (`messages.parser` and
    /// `messages.schema`).
    #[serde(flatten)]
    pub parser: ParserConfig,
    /// Largest frame or message accepted from a client, in bytes (a compressed one once
    /// inflated).
    pub max_size: NonZeroUsize,
    /// permessage-deflate to clients that offer it.
    pub compression: CompressionMode,
    /// Messages shorter than this many bytes are sent uncompressed even to clients that
    /// negotiated compression: deflate gains little on them.
    pub compression_min_size: usize,
}

/// `[limits]`: what one client may cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitsConfig {
    /// Most open WebSocket connections; more get HTTP 503.
    pub max_connections: NonZeroUsize,
    /// Most tags on a connection or a request.
    pub max_tags: usize,
    /// Longest tag name or value, in bytes.
    pub max_tag_length: NonZeroUsize,
    /// Bytes of frames waiting for one client before it is closed with 4429.
    pub send_queue_bytes: NonZeroUsize,
    /// How long frames may wait while a client's socket takes no byte before it is closed
    /// with 4429.
    pub write_timeout_ms: NonZeroU64,
    /// Memory all waiting frames may hold together; past it, the largest backlogs are closed.
    pub max_queued_bytes: NonZeroUsize,
    /// Requests per second one connection may send; 0: no limit.
    pub max_requests_per_s: u32,
    /// Time a client has to complete its handshake.
    pub handshake_timeout_ms: NonZeroU64,
    /// Time clients have to answer the close at shutdown.
    pub shutdown_grace_ms: NonZeroU64,
}

impl LimitsConfig {
    /// The tag bounds clients must respect.
    pub fn tag_limits(&self) -> TagLimits {
        TagLimits {
            max_tags: self.max_tags,
            max_tag_length: self.max_tag_length.get(),
        }
    }
}

/// `[http]`: the HTTP endpoints beside WebSocket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpConfig {
    /// Serve `POST /publish` on the ws/wss listeners.
    pub publish: bool,
    /// Address of `/metrics` and `/healthz`; `None` (`""` in the file): on the main listeners.
    pub admin_address: Option<SocketAddr>,
}

/// `[cluster]`: sharing deliveries between nodes through Redis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterConfig {
    /// The Redis to share through; `None` (`""` in the file): a single node.
    pub redis: Option<RedisUrl>,
    /// Redis pub/sub channel.
    pub channel: Channel,
}

/// A `redis://` or `rediss://` URL (`cluster.redis`). It may hold a password: its `Debug` and
/// its `Serialize` (what [`Config::changed_keys`] compares) show the URL without it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks the scheme of `url`; the rest is for the Redis client to judge.
    pub fn new(url: String) -> Result<RedisUrl, String> {
        match ["redis://", "rediss://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            true => Ok(RedisUrl(url)),
            false => Err("must start with redis:// or rediss://".into()),
        }
    }

    /// The whole URL, password included: for the Redis client only, never for a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the user and password, if any, replaced by `***`.
    pub fn redacted(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let authority_end = rest.find('/').unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => format!("{scheme}://***{}", &rest[at..]),
            None => self.0.clone(),
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RedisUrl").field(&self.redacted()).finish()
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// A Redis pub/sub channel name (`cluster.channel`): never empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Channel(String);

impl Channel {
    /// `name`, unless it is empty.
    pub fn new(name: String) -> Result<Channel, String> {
        match name.is_empty() {
            true => Err("must not be empty".into()),
            false => Ok(Channel(name)),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[history]`: the messages kept for clients that reconnect (SPEC §10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Messages kept; 0: no history, `since` is refused.
    pub size: usize,
    /// A kept message is dropped once it is this many seconds old.
    pub ttl_s: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            size: 0,
            ttl_s: 300,
        }
    }
}

/// Where logs go (`log.target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// journald when run by systemd, stderr otherwise.
    Auto,
    /// The systemd journal.
    Journald,
    /// Plain lines on standard error.
    Stderr,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Where logs go.
    pub target: LogTarget,
    /// Level or `RUST_LOG`-style filter, e.g. `info` or `tagcast=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            target: LogTarget::Auto,
            level: "info".into(),
        }
    }
}

/// The file as written: every section optional, values as TOML gives them. The sections whose
/// values need checking have a raw form here; the others are read as they are used.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    #[serde(deserialize_with = "strict::table")]
    server: RawServer,
    #[serde(deserialize_with = "strict::optional_table")]
    tls: Option<RawTls>,
    #[serde(deserialize_with = "strict::table")]
    auth: AuthConfig,
    #[serde(deserialize_with = "strict::table")]
    messages: RawMessages,
    #[serde(deserialize_with = "strict::table")]
    limits: RawLimits,
    #[serde(deserialize_with = "strict::table")]
    http: RawHttp,
    #[serde(deserialize_with = "strict::table")]
    cluster: RawCluster,
    #[serde(deserialize_with = "strict::table")]
    history: HistoryConfig,
    #[serde(deserialize_with = "strict::table")]
    log: LogConfig,
}

/// `[server]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    address: String,
    port: u16,
    plain: bool,
    allowed_origins: Vec<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            address: "0.0.0.0".into(),
            port: 8080,
            plain: true,
            allowed_origins: Vec::new(),
        }
    }
}

/// `[tls]` as written: `cert` and `key` have no default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    address: Option<String>,
    #[serde(default = "default_tls_port")]
    port: u16,
    cert: PathBuf,
    key: PathBuf,
}

fn default_tls_port() -> u16 {
    8443
}

/// `[messages]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMessages {
    parser: ParserKind,
    schema: Option<PathBuf>,
    max_size: usize,
    compression: CompressionMode,
    compression_min_size: usize,
}

impl Default for RawMessages {
    fn default() -> Self {
        RawMessages {
            parser: ParserKind::String,
            schema: None,
            max_size: 65536,
            compression: CompressionMode::Shared,
            compression_min_size: tagcast_client::wire::deflate::DEFAULT_MIN_SIZE,
        }
    }
}

/// `[limits]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_connections: usize,
    max_tags: usize,
    max_tag_length: usize,
    send_queue_bytes: usize,
    write_timeout_ms: u64,
    max_queued_bytes: usize,
    max_requests_per_s: u32,
    handshake_timeout_ms: u64,
    shutdown_grace_ms: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_connections: 100_000,
            max_tags: 32,
            max_tag_length: 256,
            send_queue_bytes: 4 * 1024 * 1024,
            write_timeout_ms: 10_000,
            max_queued_bytes: 512 * 1024 * 1024,
            max_requests_per_s: 0,
            handshake_timeout_ms: 5000,
            shutdown_grace_ms: 5000,
        }
    }
}

/// `[http]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    publish: bool,
    admin_address: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            publish: true,
            admin_address: "127.0.0.1:9108".into(),
        }
    }
}

/// `[cluster]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCluster {
    redis: String,
    channel: String,
}

impl Default for RawCluster {
    fn default() -> Self {
        RawCluster {
            redis: String::new(),
            channel: "tagcast".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::from_raw(RawConfig::default(), None).expect("the defaults are valid")
    }
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, Some(path))
    }

    /// Reads `path` when given, else [`DEFAULT_PATH`] when it exists, else the defaults.
    pub fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => Config::load(path),
            None if Path::new(DEFAULT_PATH).exists() => Config::load(Path::new(DEFAULT_PATH)),
            None => Ok(Config::default()),
        }
    }

    /// Parses and validates config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| {
            let mut message = error.to_string().trim_end().replace('\n', " | ");
            for (retired, replaced_by) in RETIRED_KEYS {
                if message.contains(&format!("unknown field `{retired}`")) {
                    message = format!("{message} | {replaced_by}");
                }
            }
            ConfigError::Parse {
                path: display_path(path),
                message,
            }
        })?;
        Config::from_raw(raw, path)
    }

    /// Checks every value of `raw` into its type; the first unacceptable one is the error.
    fn from_raw(raw: RawConfig, path: Option<&Path>) -> Result<Config, ConfigError> {
        let invalid = |key: &'static str, problem: String| ConfigError::Invalid {
            path: display_path(path),
            key,
            problem,
        };
        let ip = |key, address: &str| {
            address
                .parse::<IpAddr>()
                .map_err(|_| invalid(key, format!("{address:?} is not an IP address")))
        };
        let positive = |key, value: usize| {
            NonZeroUsize::new(value).ok_or_else(|| invalid(key, "must be greater than 0".into()))
        };
        let positive_ms = |key, value: u64| {
            NonZeroU64::new(value).ok_or_else(|| invalid(key, "must be greater than 0".into()))
        };
        let server = ServerConfig {
            address: ip("server.address", &raw.server.address)?,
            port: raw.server.port,
            plain: raw.server.plain,
            allowed_origins: raw.server.allowed_origins,
        };
        let tls = match raw.tls {
            Some(tls) => Some(TlsConfig {
                address: match &tls.address {
                    Some(address) => Some(ip("tls.address", address)?),
                    None => None,
                },
                port: tls.port,
                cert: tls.cert,
                key: tls.key,
            }),
            None if !server.plain => {
                return Err(invalid(
                    "server.plain",
                    "false serves wss only, but there is no [tls] section".into(),
                ));
            }
            None => None,
        };
        let admin_address = match raw.http.admin_address.as_str() {
            "" => None,
            address => Some(address.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "http.admin_address",
                    format!("{address:?} is not an address:port like 127.0.0.1:9108"),
                )
            })?),
        };
        let parser = match (raw.messages.parser, raw.messages.schema) {
            (ParserKind::JsonSchema, Some(schema)) => ParserConfig::JsonSchema { schema },
            (ParserKind::JsonSchema, None) => {
                return Err(invalid(
                    "messages.schema",
                    "the json-schema parser needs a schema file".into(),
                ));
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "messages.schema",
                    "only used with parser = \"json-schema\"".into(),
                ));
            }
            (ParserKind::String, None) => ParserConfig::String,
            (ParserKind::Json, None) => ParserConfig::Json,
            (ParserKind::Message, None) => ParserConfig::Message,
        };
        let messages = MessagesConfig {
            parser,
            max_size: positive("messages.max_size", raw.messages.max_size)?,
            compression: raw.messages.compression,
            compression_min_size: raw.messages.compression_min_size,
        };
        let limits = &raw.limits;
        let limits = LimitsConfig {
            max_connections: positive("limits.max_connections", limits.max_connections)?,
            max_tags: limits.max_tags,
            max_tag_length: positive("limits.max_tag_length", limits.max_tag_length)?,
            send_queue_bytes: positive("limits.send_queue_bytes", limits.send_queue_bytes)?,
            write_timeout_ms: positive_ms("limits.write_timeout_ms", limits.write_timeout_ms)?,
            max_queued_bytes: positive("limits.max_queued_bytes", limits.max_queued_bytes)?,
            max_requests_per_s: limits.max_requests_per_s,
            handshake_timeout_ms: positive_ms(
                "limits.handshake_timeout_ms",
                limits.handshake_timeout_ms,
            )?,
            shutdown_grace_ms: positive_ms("limits.shutdown_grace_ms", limits.shutdown_grace_ms)?,
        };
        let cluster = ClusterConfig {
            redis: match raw.cluster.redis.is_empty() {
                true => None,
                false if !cfg!(feature = "cluster") => {
                    return Err(invalid(
                        "cluster.redis",
                        "this tagcast was built without the cargo feature `cluster`".into(),
                    ));
                }
                false => Some(
                    RedisUrl::new(raw.cluster.redis)
                        .map_err(|problem| invalid("cluster.redis", problem))?,
                ),
            },
            channel: Channel::new(raw.cluster.channel)
                .map_err(|problem| invalid("cluster.channel", problem))?,
        };
        let auth = raw.auth;
        if !auth.authorize_open && auth.file.is_none() {
            return Err(invalid(
                "auth.authorize_open",
                "false needs auth.file: without applications nobody could open".into(),
            ));
        }
        if !auth.signed_tags.is_empty() && auth.file.is_none() {
            return Err(invalid(
                "auth.signed_tags",
                "needs auth.file: tokens are verified with the applications' keys".into(),
            ));
        }
        if auth.signed_tags.iter().any(String::is_empty) {
            return Err(invalid(
                "auth.signed_tags",
                "a tag name must not be empty (\"*\": every name)".into(),
            ));
        }
        if raw.history.size > 0 && raw.history.ttl_s == 0 {
            return Err(invalid(
                "history.ttl_s",
                "must be greater than 0 (history.size = 0 turns the history off)".into(),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&raw.log.level)
            .map_err(|error| invalid("log.level", error.to_string()))?;
        Ok(Config {
            source: path.map(Path::to_owned),
            server,
            tls,
            auth,
            messages,
            limits,
            http: HttpConfig {
                publish: raw.http.publish,
                admin_address,
            },
            cluster,
            history: raw.history,
            log: raw.log,
        })
    }

    /// The plain ws listener's address.
    pub fn plain_address(&self) -> SocketAddr {
        SocketAddr::new(self.server.address, self.server.port)
    }

    /// The dotted keys whose values differ between `self` and `other` (`server.port`, or a
    /// whole section such as `tls` when it is present in one only), defaults included: a key
    /// written out with its default value is no change.
    pub fn changed_keys(&self, other: &Config) -> Vec<String> {
        let (ours, theirs) = (self.as_table(), other.as_table());
        let mut changed = Vec::new();
        for section in ours
            .keys()
            .chain(theirs.keys().filter(|key| !ours.contains_key(*key)))
        {
            match (ours.get(section), theirs.get(section)) {
                (Some(toml::Value::Table(ours)), Some(toml::Value::Table(theirs))) => {
                    let keys = ours
                        .keys()
                        .chain(theirs.keys().filter(|key| !ours.contains_key(*key)));
                    for key in keys {
                        if ours.get(key) != theirs.get(key) {
                            changed.push(format!("{section}.{key}"));
                        }
                    }
                }
                (ours, theirs) if ours != theirs => changed.push(section.clone()),
                _ => {}
            }
        }
        // The table shows the Redis URL without its password: a new password is a change too.
        if self.cluster.redis != other.cluster.redis {
            changed.push("cluster.redis".into());
            changed.sort();
            changed.dedup();
        }
        changed
    }

    /// Every setting, defaults included, as TOML sections (absent optional values left out).
    fn as_table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("a config is always representable in TOML")
    }
}

fn display_path(path: Option<&Path>) -> PathBuf {
    path.map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("<config>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde's derive would fill a section's fields from an array, in order.
    #[test]
    fn a_section_is_a_table_and_nothing_else() {
        for text in [
            "server = [\"127.0.0.1\", 8080, true, []]\n",
            "tls = [\"/c.pem\", \"/k.pem\"]\n",
            "log = []\n",
        ] {
            let error = Config::parse(text, None).unwrap_err().to_string();
            assert!(error.contains("expected a table"), "{text:?}: {error}");
        }
        let error = Config::parse("[server]\nport = 1\nport = 2\n", None).unwrap_err();
        assert!(error.to_string().contains("duplicate key"), "{error}");
        let error = Config::parse("[server]\naddress = 127\n", None).unwrap_err();
        assert!(error.to_string().contains("expected a string"), "{error}");
    }

    /// `etc/tagcast.toml` documents every key with its default: parsing it gives the defaults
    /// (but for the auth file the package creates),
    /// and uncommenting the optional sections gives a valid config too.
    #[test]
    fn the_example_config_is_the_defaults() {
        let example = include_str!("../../etc/tagcast.toml");
        let mut parsed = Config::parse(example, None).unwrap();
        assert_eq!(
            parsed.auth.file.take().as_deref(),
            Some(Path::new("/etc/tagcast/auth.yml"))
        );
        assert_eq!(parsed, Config::default());
        // Commented-out settings are `# key = value` or `# [section]` lines.
        let is_setting = |rest: &str| {
            let key = rest.split(" = ").next().unwrap_or("");
            (rest.contains(" = ") && key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                || (rest.starts_with('[') && rest.ends_with(']'))
        };
        let uncommented: String = example
            .lines()
            .map(|line| {
                line.strip_prefix("# ")
                    .filter(|rest| is_setting(rest))
                    .unwrap_or(line)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let full = Config::parse(
            &uncommented.replace("parser = \"string\"", "parser = \"json-schema\""),
            None,
        )
        .unwrap();
        let tls = full.tls.expect("the [tls] example");
        assert_eq!(tls.port, 8443);
        assert_eq!(
            full.auth.file.as_deref(),
            Some(Path::new("/etc/tagcast/auth.yml"))
        );
        assert!(matches!(
            full.messages.parser,
            ParserConfig::JsonSchema { .. }
        ));
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let config = Config::parse("", None).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.plain_address().to_string(), "0.0.0.0:8080");
        assert_eq!(config.messages.parser, ParserConfig::String);
        assert!(config.auth.file.is_none());
    }

    #[test]
    fn changed_keys_are_named_with_their_section() {
        let config = |text: &str| Config::parse(text, None).unwrap();
        let base = config("[server]\nport = 8080\n");
        assert!(
            base.changed_keys(&config("")).is_empty(),
            "a default written out is no change"
        );
        assert_eq!(
            base.changed_keys(&config("[server]\nport = 9000\n[limits]\nmax_tags = 3\n")),
            ["limits.max_tags", "server.port"]
        );
        assert_eq!(
            base.changed_keys(&config("[auth]\nfile = \"/a.yml\"\n")),
            ["auth.file"]
        );
        assert_eq!(
            base.changed_keys(&config(
                "[messages]\nparser = \"json-schema\"\nschema = \"/s.json\"\n"
            )),
            ["messages.parser", "messages.schema"]
        );
        let tls = config("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n");
        assert_eq!(base.changed_keys(&tls), ["tls"]);
        assert_eq!(tls.changed_keys(&base), ["tls"]);
    }

    fn error(text: &str) -> String {
        Config::parse(text, Some(Path::new("/x/tagcast.toml")))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_retired_send_queue_is_refused_naming_its_replacement() {
        let message = error("[limits]\nsend_queue = 1024\n");
        assert!(message.contains("line 2"), "{message}");
        assert!(
            message.contains(
                "limits.send_queue (a count of messages) is replaced by limits.send_queue_bytes"
            ),
            "{message}"
        );
        assert!(message.contains("limits.write_timeout_ms"), "{message}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let message = error("[server]\nprot = 1\n");
        assert!(message.contains("/x/tagcast.toml"), "{message}");
        assert!(message.contains("prot"), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert!(error("[nope]\n").contains("nope"));
        assert!(error("[server]\nport = \"x\"\n").contains("port"));
        assert!(error("[messages]\nparser = \"xml\"\n").contains("xml"));
        assert!(error("[limits]\nsend_queue_bytes = 0\n").contains("limits.send_queue_bytes"));
        assert!(error("[limits]\nwrite_timeout_ms = 0\n").contains("limits.write_timeout_ms"));
        assert!(error("[limits]\nmax_queued_bytes = 0\n").contains("limits.max_queued_bytes"));
        assert!(error("[server]\naddress = \"here\"\n").contains("server.address"));
        assert!(error("[server]\nplain = false\n").contains("server.plain"));
        assert!(error("[messages]\nparser = \"json-schema\"\n").contains("messages.schema"));
        assert!(error("[cluster]\nredis = \"http://x\"\n").contains("cluster.redis"));
        assert!(error("[http]\nadmin_address = \"x\"\n").contains("http.admin_address"));
        assert!(error("[tls]\nport = 1\n").contains("cert"));
        assert!(error("[auth]\nauthorize_open = false\n").contains("auth.authorize_open"));
        assert!(error("[auth]\nsigned_tags = [\"userId\"]\n").contains("auth.signed_tags"));
        assert!(
            error("[auth]\nfile = \"/a.yml\"\nsigned_tags = [\"\"]\n").contains("auth.signed_tags")
        );
        assert!(error("[auth]\ntoken_leeway_s = -1\n").contains("token_leeway_s"));
    }

    #[cfg(not(feature = "cluster"))]
    #[test]
    fn without_the_feature_a_cluster_is_refused_by_name() {
        let refused = error("[cluster]\nredis = \"redis://127.0.0.1/\"\n");
        assert!(refused.contains("cluster.redis"), "{refused}");
        assert!(refused.contains("feature `cluster`"), "{refused}");
    }

    /// `cluster.redis` may hold a password: neither `Debug` nor the keys a reload names as
    /// changed show it, yet a new password is a change.
    #[cfg(feature = "cluster")]
    #[test]
    fn the_redis_password_is_never_shown() {
        let config = |url: &str| {
            Config::parse(&format!("[cluster]\nredis = \"{url}\"\n"), None).expect("valid")
        };
        let clustered = config("redis://:pa55word@10.0.0.1:6379/0");
        let shown = format!("{clustered:?} {:#?}", clustered);
        assert!(!shown.contains("pa55word"), "{shown}");
        assert!(shown.contains("redis://***@10.0.0.1:6379/0"), "{shown}");
        let redis = clustered.cluster.redis.as_ref().expect("clustered");
        assert_eq!(redis.expose(), "redis://:pa55word@10.0.0.1:6379/0");
        let user = config("rediss://tagcast:s3cret@redis.example:6380/");
        assert!(!format!("{user:?}").contains("s3cret"));
        let plain = config("redis://127.0.0.1:6379/");
        assert!(format!("{plain:?}").contains("redis://127.0.0.1:6379/"));
        assert_eq!(
            clustered.changed_keys(&config("redis://:other@10.0.0.1:6379/0")),
            ["cluster.redis"]
        );
        assert!(
            clustered
                .changed_keys(&config("redis://:pa55word@10.0.0.1:6379/0"))
                .is_empty()
        );
        assert_eq!(
            clustered.changed_keys(&Config::default()),
            ["cluster.redis"]
        );
    }

    /// wss is one optional section: a certificate without its key (or the reverse) is no
    /// config, and the error names the missing key and the line of the section.
    #[test]
    fn a_tls_section_needs_both_its_files() {
        let message = error("[server]\nport = 1\n[tls]\ncert = \"/c.pem\"\n");
        assert!(message.contains("missing field `key`"), "{message}");
        assert!(message.contains("line 3"), "{message}");
        assert!(message.starts_with("/x/tagcast.toml: "), "{message}");
        let message = error("[tls]\nkey = \"/k.pem\"\n");
        assert!(message.contains("missing field `cert`"), "{message}");
        let config = Config::parse("[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n", None).unwrap();
        let wss_address = |config: &Config| {
            let tls = config.tls.as_ref().expect("a [tls] section");
            tls.socket_address(&config.server)
        };
        assert_eq!(wss_address(&config), "0.0.0.0:8443".parse().unwrap());
        let mut moved = config.clone();
        moved.server.address = std::net::Ipv4Addr::LOCALHOST.into();
        assert_eq!(
            wss_address(&moved),
            "127.0.0.1:8443".parse().unwrap(),
            "without tls.address, wss follows server.address (and --address)"
        );
        let own = Config::parse(
            "[tls]\naddress = \"::1\"\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n",
            None,
        )
        .unwrap();
        assert_eq!(wss_address(&own), "[::1]:8443".parse().unwrap());
        let message = error("[tls]\naddress = \"here\"\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n");
        assert_eq!(
            message,
            "/x/tagcast.toml: key `tls.address`: \"here\" is not an IP address"
        );
    }

    /// Each value is checked into its type once: an empty admin address is no admin listener,
    /// zero is refused where it means nothing, an empty channel is refused.
    #[test]
    fn values_are_checked_into_their_types() {
        let config = Config::default();
        assert_eq!(
            config.http.admin_address,
            Some("127.0.0.1:9108".parse().unwrap())
        );
        assert_eq!(config.messages.max_size.get(), 65536);
        assert_eq!(config.limits.max_connections.get(), 100_000);
        assert!(config.cluster.redis.is_none());
        assert_eq!(config.cluster.channel.as_str(), "tagcast");
        let main = Config::parse("[http]\nadmin_address = \"\"\n", None).unwrap();
        assert_eq!(main.http.admin_address, None);
        for key in [
            "messages.max_size",
            "limits.max_connections",
            "limits.max_tag_length",
            "limits.handshake_timeout_ms",
            "limits.shutdown_grace_ms",
        ] {
            let (section, name) = key.split_once('.').unwrap();
            assert_eq!(
                error(&format!("[{section}]\n{name} = 0\n")),
                format!("/x/tagcast.toml: key `{key}`: must be greater than 0")
            );
        }
        assert_eq!(
            error("[cluster]\nchannel = \"\"\n"),
            "/x/tagcast.toml: key `cluster.channel`: must not be empty"
        );
        assert_eq!(
            error("[http]\nadmin_address = \"127.0.0.1\"\n"),
            "/x/tagcast.toml: key `http.admin_address`: \"127.0.0.1\" is not an address:port \
             like 127.0.0.1:9108"
        );
    }
}
