//! The `tagcast` command: run the server, check a config, send or listen as a client.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::value::RawValue;
use tagcast::client::{ClientError, Endpoint, Event, ResumingListener, WebSocketRequest};
use tagcast::net::server::Server;
use tagcast::ops::config::{Config, ParserConfig};
use tagcast::ops::logging::{self, message_id};
use tagcast::ops::trust::{self, TlsTrust};
use tagcast::ops::{control, systemd};
use tokio::signal::unix::{SignalKind, signal};

/// The daemon's allocator: jemalloc, which hands memory freed after a burst back to the system
/// (glibc's malloc kept most of it; PERFORMANCE.md § Memory through a burst).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (its `malloc_conf`, a C string it reads at start; `_RJEM_MALLOC_CONF` in
/// the environment overrides them): a background thread returns pages unused for 100 ms, even
/// while the daemon is idle (by default pages are returned only when threads allocate).
///
/// One background thread, for every arena: it is started at the first allocation by the
/// thread that makes it. With more, that first thread starts the others, and a short-lived
/// process (`tagcast bench` replaces itself with tagcast-bench at once) raced its own exec:
/// the failed thread creation was retried and printed hundreds of "background thread creation
/// failed (11)" lines.
#[unsafe(export_name = "_rjem_malloc_conf")]
static ALLOCATOR_SETTINGS: &u8 =
    &b"background_thread:true,max_background_threads:1,dirty_decay_ms:100,muzzy_decay_ms:0\0"[0];

/// sysexits' EX_CONFIG: the configuration is unusable (systemd does not restart on it).
const EXIT_CONFIG: u8 = 78;

/// tagcast routes each message to the WebSocket clients whose tags match it.
///
/// Browsers connect to ws://HOST:8080/?tags={"language":"FR"}; a backend sends
/// {"message": "Bonjour !", "tags": {"language": "FR"}} and every connection tagged
/// language=FR receives "Bonjour !".
#[derive(Parser)]
#[command(version, about, long_about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a command: `serve`'s options (`tagcast --config PATH` runs the server).
    #[command(flatten)]
    serve: ConfigArg,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server in the foreground (the default command).
    Serve(ConfigArg),
    /// Validate the config and the files it names; exit 78 naming the problem.
    Check(ConfigArg),
    /// Reload the running daemon and wait for the outcome (systemctl reload runs this); exit 1
    /// naming what failed to reload.
    Reload(ReloadArgs),
    /// Send one request, then close. Exit 1 when the server refuses it.
    Send(SendArgs),
    /// Connect with tags and print every message that arrives, one per line.
    Listen(ListenArgs),
    /// Print a token for signed tags (auth.signed_tags): a JWT a page opens with as ?token=.
    ///
    /// Signed HS256 with the application's secret: TAGCAST_SECRET when set, else the clear
    /// `secret` of the configured auth file; or ES256/EdDSA with --private-key.
    Token(TokenArgs),
    /// Measure a server speaking this protocol: deliveries/s, loss, latency, CPU, memory.
    ///
    /// Runs tagcast-bench, the load tool installed beside tagcast, with the same arguments
    /// (`tagcast bench --help` lists them).
    #[command(disable_help_flag = true)]
    Bench {
        /// tagcast-bench's arguments.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
    /// Write the man pages and the bash, zsh and fish completions into DIR (for packaging).
    #[command(hide = true)]
    Generate {
        /// The directory: man pages in DIR/man, completions in DIR/completions.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Config file [default: /etc/tagcast/tagcast.toml when it exists, else built-in defaults]
    #[arg(long, short, value_name = "PATH", env = "TAGCAST_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the ws listener, instead of the config's `server.address` (e.g. 127.0.0.1).
    #[arg(long, value_name = "IP")]
    address: Option<std::net::IpAddr>,
    /// Port of the ws listener, instead of the config's `server.port` (0: any free port).
    #[arg(long)]
    port: Option<u16>,
}

#[derive(clap::Args)]
struct ReloadArgs {
    /// The daemon's runtime directory, where its control socket is (systemd's
    /// RuntimeDirectory=).
    #[arg(
        long,
        value_name = "DIR",
        env = "RUNTIME_DIRECTORY",
        default_value = "/run/tagcast"
    )]
    runtime_dir: PathBuf,
}

#[derive(clap::Args)]
struct SendArgs {
    /// Server URL, e.g. ws://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// A tag of the request (repeatable, one value per name); only connections with every tag
    /// receive it.
    #[arg(long = "tag", value_name = "NAME=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Application key, sent in metadata.
    #[arg(long, requires = "secret")]
    key: Option<String>,
    /// Application secret, sent in metadata (used with --key).
    #[arg(long, env = "TAGCAST_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Parse MESSAGE as JSON instead of sending it as a JSON string.
    #[arg(long)]
    json: bool,
    /// Publish with one HTTP request (POST /publish) instead of a WebSocket; prints
    /// {"delivered": N}. Takes an http:// URL (a ws:// one is read as http://).
    #[arg(long)]
    http: bool,
    #[command(flatten)]
    trust: TlsTrust,
    /// Read the message from this file (for a message too large for the command line).
    #[arg(long, value_name = "PATH", conflicts_with = "message")]
    file: Option<PathBuf>,
    /// The message; `-` reads it from stdin. One final newline of a file or stdin is dropped.
    #[arg(required_unless_present = "file")]
    message: Option<String>,
}

#[derive(clap::Args)]
struct ListenArgs {
    /// Server URL, e.g. ws://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// A tag of this connection (repeatable, one value per name).
    #[arg(long = "tag", value_name = "NAME=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Application key to open with (when the server requires it).
    #[arg(long)]
    key: Option<String>,
    /// Application secret to open with (used with --key).
    #[arg(long, env = "TAGCAST_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Recovery (a server with [history]): print each message as {"id":"ID","message":...}
    /// and {"gap":true} where some may be missing; reconnect by itself and resume after the
    /// last one. Without ID: from now on.
    #[arg(long, value_name = "ID", num_args = 0..=1, default_missing_value = "")]
    since: Option<String>,
    #[command(flatten)]
    trust: TlsTrust,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Application key (the token's kid).
    #[arg(long)]
    key: String,
    /// A tag the token signs (repeatable).
    #[arg(long = "tag", value_name = "NAME=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// How long the token is valid: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "60s", value_parser = parse_ttl)]
    ttl: std::time::Duration,
    /// PKCS#8 PEM private key (EC P-256 or Ed25519) matching the application's tokenPublicKey:
    /// sign ES256/EdDSA instead of HS256.
    #[arg(long, value_name = "PEM", conflicts_with = "config")]
    private_key: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
}

fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let digits = text.trim_end_matches(['s', 'm', 'h', 'd']);
    let unit: u64 = match &text[digits.len()..] {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?} is not a duration like 60s, 5m, 1h or 1d")),
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|&count| count > 0)
        .and_then(|count| count.checked_mul(unit))
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is not a duration like 60s, 5m, 1h or 1d"))
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        None => Err(format!("{text:?} is not NAME=VALUE")),
        Some(("", _)) => Err(format!("{text:?} has no tag name before '='")),
        Some((name, value)) => Ok((name.to_owned(), value.to_owned())),
    }
}

/// The `--tag` options, refused when two give the same name: a connection has one value per
/// tag name, and a request's second value would silently replace the first.
fn distinct_tags(tags: Vec<(String, String)>) -> anyhow::Result<Vec<(String, String)>> {
    for (at, (name, value)) in tags.iter().enumerate() {
        if let Some((_, first)) = tags[..at].iter().find(|(earlier, _)| earlier == name) {
            bail!(
                "--tag {name}={value}: the tag {name:?} is already given (--tag {name}={first}); a tag name has one value"
            );
        }
    }
    Ok(tags)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tagcast: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
    runtime.block_on(async {
        match command {
            Command::Serve(args) => serve(args).await,
            Command::Check(args) => check(args),
            Command::Reload(args) => reload(args).await,
            Command::Send(args) => report(send(args).await),
            Command::Listen(args) => report(listen(args).await),
            Command::Token(args) => report(token(args)),
            Command::Bench { args } => report(bench(args)),
            Command::Generate { out } => report(generate(&out)),
        }
    })
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tagcast: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The config file (or the defaults), with `--address` and `--port` applied.
fn load_config(args: &ConfigArg) -> Result<Config, ExitCode> {
    let mut config = Config::load_or_default(args.config.as_deref()).map_err(|error| {
        eprintln!("tagcast: {error}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    if let Some(address) = args.address {
        config.server.address = address;
    }
    if let Some(port) = args.port {
        config.server.port = port;
    }
    Ok(config)
}

/// `tagcast check`: loads everything `serve` would, and says what it looked at.
fn check(args: ConfigArg) -> ExitCode {
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let server = match Server::new(config.clone()) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("tagcast: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let shared = server.shared();
    match &config.source {
        Some(path) => println!("{}: ok", path.display()),
        None => println!("no config file: the built-in defaults"),
    }
    if config.server.plain {
        println!("ws: {}", config.plain_address());
    }
    if let Some(tls) = &shared.tls {
        let certificate = match tls.describe_certificate() {
            Ok(certificate) => certificate,
            Err(error) => {
                eprintln!("tagcast: {error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let path = tls.cert_path().display();
        let Some(days) = certificate.days_left else {
            eprintln!(
                "tagcast: {path}: the certificate for {} expired on {}",
                certificate.subject, certificate.not_after
            );
            return ExitCode::from(EXIT_CONFIG);
        };
        println!("wss: {}", tls.address());
        println!(
            "{path}: ok, certificate for {}, valid until {} ({days} days left), key matches",
            certificate.subject, certificate.not_after
        );
    }
    let auth = shared.router.auth();
    match (auth.path(), auth.applications()) {
        (Some(path), Some(applications)) => {
            println!("{}: ok, {applications} applications", path.display())
        }
        _ => println!("no auth file: anyone may open and send"),
    }
    let parser = config.messages.parser.name();
    match &config.messages.parser {
        ParserConfig::JsonSchema { schema } => println!(
            "messages: parser {parser}, schema {} ok, at most {} bytes",
            schema.display(),
            config.messages.max_size
        ),
        _ => println!(
            "messages: parser {parser}, at most {} bytes",
            config.messages.max_size
        ),
    }
    ExitCode::SUCCESS
}

async fn serve(args: ConfigArg) -> ExitCode {
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    logging::init(&config.log);
    let source = config
        .source
        .as_ref()
        .map(|path| path.display().to_string());
    tracing::info!(
        message_id = message_id::STARTED,
        version = env!("CARGO_PKG_VERSION"),
        config = source.as_deref().unwrap_or("built-in defaults"),
        "tagcast {} starting",
        env!("CARGO_PKG_VERSION")
    );
    // Listen for signals before anything can send them (SIGHUP's default action ends the
    // process; systemd may send SIGHUP or SIGTERM as soon as READY=1 is out).
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut terminate), Ok(mut interrupt), Ok(mut hangup)) = signals else {
        eprintln!("tagcast: cannot install the signal handlers");
        return ExitCode::FAILURE;
    };
    let server = match Server::new(config.clone()) {
        Ok(server) => server,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let listeners = match server.bind().await {
        Ok(listeners) => listeners,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(address) = listeners.plain_address() {
        tracing::info!(%address, "listening for ws on {address}");
    }
    if let Some(address) = listeners.tls_address() {
        tracing::info!(%address, "listening for wss on {address}");
    }
    if let Some(address) = listeners.admin_address() {
        tracing::info!(%address, "serving /metrics and /healthz on {address}");
    }
    let service = systemd::Service::new(server.shared());
    let (stopper, shutdown) = (service.clone(), server.shutdown_token());
    tokio::spawn(async move {
        let signal = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(
            message_id = message_id::SHUTDOWN,
            "{signal} received: shutting down, closing every connection with 1001"
        );
        stopper.stopping();
        shutdown.cancel();
    });
    let (reloader, shared) = (service.clone(), server.shared());
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reloader.reload(|| shared.reload().outcome());
        }
    });
    // `tagcast reload` (the unit's ExecReload=) when run by systemd with RuntimeDirectory=.
    if let Some(directory) = std::env::var_os("RUNTIME_DIRECTORY") {
        let path = control::socket_path(directory.as_ref());
        match control::bind(&path) {
            Ok(socket) => {
                let (reloader, shared) = (service.clone(), server.shared());
                let reload = move || reloader.reload(|| shared.reload().outcome());
                tokio::spawn(control::serve(socket, reload, server.shutdown_token()));
            }
            Err(error) => tracing::error!(
                "cannot listen on {}: {error}; `tagcast reload` will not reach this daemon",
                path.display()
            ),
        }
    }
    tracing::info!(message_id = message_id::READY, "ready");
    service.ready();
    tokio::spawn(service.keep_status());
    tokio::spawn(systemd::watchdog());
    server.run(listeners).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// The load tool, `tagcast-bench`, in the directory of this binary (both are built and
/// installed together).
fn bench_tool() -> anyhow::Result<PathBuf> {
    let this = std::env::current_exe().context("cannot find this binary's path")?;
    Ok(this.with_file_name("tagcast-bench"))
}

/// `tagcast bench ARGS`: becomes `tagcast-bench ARGS` (same process, so same pid and exit
/// status); returns only when it cannot be started.
fn bench(args: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let tool = bench_tool()?;
    let error = std::process::Command::new(&tool).args(args).exec();
    Err(error).with_context(|| format!("cannot run {}", tool.display()))
}

/// `tagcast generate`: the man pages and completions of this very command line; the page of
/// `tagcast bench` is tagcast-bench's own (`tagcast-bench --man-page`).
fn generate(out: &std::path::Path) -> anyhow::Result<()> {
    let tool = bench_tool()?;
    let bench_page = std::process::Command::new(&tool)
        .arg("--man-page")
        .output()
        .with_context(|| format!("cannot run {}", tool.display()))?;
    if !bench_page.status.success() {
        bail!("{} --man-page: {}", tool.display(), bench_page.status);
    }
    let written =
        tagcast::ops::manual::generate(Cli::command(), &[("bench", bench_page.stdout)], out)
            .with_context(|| format!("cannot write into {}", out.display()))?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// `tagcast reload`: prints the keys that need a restart, then whether the reload was done.
async fn reload(args: ReloadArgs) -> ExitCode {
    let path = control::socket_path(&args.runtime_dir);
    let outcome = match control::request_reload(&path).await {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("tagcast: {error}");
            return ExitCode::FAILURE;
        }
    };
    if !outcome.needs_restart.is_empty() {
        println!(
            "needs restart: {} (changed in tagcast.toml; applies at the next restart)",
            outcome.needs_restart.join(", ")
        );
    }
    if outcome.succeeded() {
        println!("reload done");
        return ExitCode::SUCCESS;
    }
    for failure in &outcome.failures {
        eprintln!("tagcast: reload failed: {failure}");
    }
    eprintln!("tagcast: the previous settings stay in force");
    ExitCode::FAILURE
}

/// Where `send` and `listen` connect: the URL, opened with the credentials when given, trusting
/// what `--ca`/`--insecure` say for wss:// (the webpki roots without them).
fn endpoint(
    url: &str,
    key: Option<&str>,
    secret: Option<&str>,
    trust: &TlsTrust,
) -> anyhow::Result<Endpoint> {
    let mut endpoint = Endpoint::new(url)?;
    if trust.ca.is_some() || trust.insecure {
        endpoint = endpoint.tls_config(Arc::new(trust::client_config(trust)?));
    }
    Ok(match key {
        Some(key) => endpoint.credentials(key, secret),
        None => endpoint,
    })
}

/// The text of `send`'s message: the argument, stdin for `-`, or `--file`'s content; one final
/// newline of stdin or a file is dropped (`echo Bonjour | tagcast send -` sends "Bonjour").
fn message_text(args: &SendArgs) -> anyhow::Result<String> {
    let text = match (&args.file, args.message.as_deref()) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("--file {}: cannot read it", path.display()))?,
        (None, Some("-")) => std::io::read_to_string(std::io::stdin())
            .context("cannot read the message from stdin")?,
        (None, Some(message)) => return Ok(message.to_owned()),
        (None, None) => bail!("no message: give MESSAGE, - (stdin) or --file PATH"),
    };
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let text = message_text(&args)?;
    let message: serde_json::Value = if args.json {
        serde_json::from_str(&text).context("the message is not valid JSON (--json)")?
    } else {
        serde_json::Value::String(text)
    };
    let mut request = WebSocketRequest::create(message).tags(distinct_tags(args.tags)?);
    if let (Some(key), Some(secret)) = (&args.key, &args.secret) {
        request = request.metadata([("key", key.as_str()), ("secret", secret.as_str())]);
    }
    if args.http {
        return publish_http(&args.url, &request.to_json()?).await;
    }
    let mut client = endpoint(
        &args.url,
        args.key.as_deref(),
        args.secret.as_deref(),
        &args.trust,
    )?
    .connect()
    .await?;
    client.send(&request).await?;
    // The server handles frames in order: a refusal of the request arrives before the close.
    match client.close().await {
        Err(ClientError::Closed(close)) => bail!("the server refused the request: {close}"),
        other => Ok(other?),
    }
}

/// `send --http`: one `POST /publish` over plain HTTP; prints the answer's body.
async fn publish_http(url: &str, body: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .with_context(|| format!("--http needs an http:// URL, not {url}"))?;
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    let address = match host.rsplit_once(':') {
        Some((_, port)) if !port.ends_with(']') => host.to_owned(),
        _ => format!("{host}:80"),
    };
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .with_context(|| format!("cannot connect to {address}"))?;
    let request = format!(
        "POST /publish HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let (head, answer) = response
        .split_once("\r\n\r\n")
        .context("the server's answer is not HTTP")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        bail!("the server refused the request: {status} {}", answer.trim());
    }
    println!("{}", answer.trim());
    Ok(())
}

async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    let endpoint = endpoint(
        &args.url,
        args.key.as_deref(),
        args.secret.as_deref(),
        &args.trust,
    )?;
    let tags = distinct_tags(args.tags)?;
    if let Some(since) = args.since {
        let since = Some(since).filter(|since| !since.is_empty());
        return listen_resuming(endpoint.resume_with_tags(tags, since)).await;
    }
    let mut listener = endpoint.connect_with_tags(tags).await?;
    // On stderr, so that stdout holds only the messages; without the query, which may hold a
    // secret.
    let (url, _) = args.url.split_once('?').unwrap_or((&args.url, ""));
    eprintln!("tagcast: connected to {url}; waiting for messages");
    use std::io::Write;
    // Printed as it arrives: the JSON the server sent, one message per line.
    while let Some(message) = listener.next::<Box<RawValue>>().await? {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", message.get())?;
        stdout.flush()?;
    }
    Ok(())
}

/// `tagcast token`: prints a token for `--key` holding the `--tag`s.
fn token(args: TokenArgs) -> anyhow::Result<()> {
    use tagcast::token::SigningKey;
    let signing = if let Some(path) = &args.private_key {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        SigningKey::from_private_pem(&pem).with_context(|| path.display().to_string())?
    } else if let Ok(secret) = std::env::var("TAGCAST_SECRET") {
        SigningKey::hs256(&secret).context("TAGCAST_SECRET")?
    } else {
        let config = Config::load_or_default(args.config.config.as_deref())?;
        let Some(path) = &config.auth.file else {
            bail!("no auth file configured (auth.file): set TAGCAST_SECRET or --private-key");
        };
        let applications = tagcast::ops::auth::Applications::load(path)?;
        if applications.get(&args.key).is_none() {
            bail!("{}: no application `{}`", path.display(), args.key);
        }
        let key = applications
            .token_key(&args.key)
            .with_context(|| format!("{}", path.display()))?;
        key.signing_key().with_context(|| {
            format!(
                "{}: application `{}` takes {} tokens: sign them with --private-key",
                path.display(),
                args.key,
                key.algorithm()
            )
        })?
    };
    let tags: tagcast::tags::Tags = args.tags.into_iter().collect();
    println!(
        "{}",
        tagcast::token::mint(&args.key, &signing, &tags, args.ttl)?
    );
    Ok(())
}

/// `listen --since`: prints each message with its id, and the gaps, one JSON object a line.
async fn listen_resuming(mut listener: ResumingListener) -> anyhow::Result<()> {
    use std::io::Write;
    loop {
        let line = match listener.next::<Box<RawValue>>().await? {
            Event::Message { id, message } => {
                format!(
                    r#"{{"id":{},"message":{}}}"#,
                    serde_json::Value::String(id),
                    message.get()
                )
            }
            Event::Gap => r#"{"gap":true}"#.to_owned(),
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
    }
}
