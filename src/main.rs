//! The `tagcast` command: run the server, check a config, send or listen as a client.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tagcast::config::Config;
use tagcast::server::{Listeners, Server};
use tokio::signal::unix::{SignalKind, signal};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// sysexits' EX_CONFIG: the configuration is unusable (systemd does not restart on it).
const EXIT_CONFIG: u8 = 78;

/// tagcast routes each message to the WebSocket clients whose tags match it.
///
/// Browsers connect to ws://HOST:8080/?tags={"language":"FR"}; a backend sends
/// {"message": "Bonjour !", "tags": {"language": "FR"}} and every connection tagged
/// language=FR receives "Bonjour !".
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server in the foreground (the default command).
    Serve(ConfigArg),
    /// Validate the config and the files it names; exit 78 naming the problem.
    Check(ConfigArg),
    /// Send one request, then close. Exit 1 when the server refuses it.
    Send(SendArgs),
    /// Connect with tags and print every message that arrives, one per line.
    Listen(ListenArgs),
    /// Measure a server speaking this protocol: deliveries/s, loss, latency, CPU, memory.
    Bench(tagcast::bench::BenchArgs),
}

#[derive(clap::Args, Default)]
struct ConfigArg {
    /// Config file [default: /etc/tagcast/tagcast.toml when it exists, else built-in defaults]
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SendArgs {
    /// Server URL, e.g. ws://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// A tag of the request (repeatable); only connections with every tag receive it.
    #[arg(long = "tag", value_name = "NAME=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Application key, sent in metadata.
    #[arg(long, requires = "secret")]
    key: Option<String>,
    /// Application secret, sent in metadata.
    #[arg(long, requires = "key")]
    secret: Option<String>,
    /// Parse MESSAGE as JSON instead of sending it as a JSON string.
    #[arg(long)]
    json: bool,
    /// The message.
    message: String,
}

#[derive(clap::Args)]
struct ListenArgs {
    /// Server URL, e.g. ws://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// A tag of this connection (repeatable).
    #[arg(long = "tag", value_name = "NAME=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Application key to open with (when the server requires it).
    #[arg(long)]
    key: Option<String>,
    /// Application secret to open with.
    #[arg(long)]
    secret: Option<String>,
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))
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
    let command = cli.command.unwrap_or(Command::Serve(ConfigArg::default()));
    runtime.block_on(async {
        match command {
            Command::Serve(args) => serve(args).await,
            Command::Check(args) => check(args),
            Command::Send(args) => report(send(args).await),
            Command::Listen(args) => report(listen(args).await),
            Command::Bench(args) => report(tagcast::bench::run(args).await.map_err(Into::into)),
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

fn load_config(args: &ConfigArg) -> Result<Config, ExitCode> {
    Config::load_or_default(args.config.as_deref()).map_err(|error| {
        eprintln!("tagcast: {error}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check(args: ConfigArg) -> ExitCode {
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(error) = Server::new(config.clone()) {
        eprintln!("tagcast: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match &config.source {
        Some(path) => println!("{}: ok", path.display()),
        None => println!("no config file: built-in defaults are ok"),
    }
    ExitCode::SUCCESS
}

async fn serve(args: ConfigArg) -> ExitCode {
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    init_logging(&config);
    let server = match Server::new(config.clone()) {
        Ok(server) => server,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let listeners = match Listeners::bind(&config).await {
        Ok(listeners) => listeners,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(address) = listeners.plain_address() {
        tracing::info!(%address, "listening for ws");
    }
    let shutdown = server.shutdown_token();
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        shutdown.cancel();
    });
    let shared = server.shared();
    tokio::spawn(async move {
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot listen for SIGHUP");
            return;
        };
        while hangup.recv().await.is_some() {
            shared.reload();
        }
    });
    server.run(listeners).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn wait_for_stop_signal() {
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn tags_json(tags: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Object(
        tags.iter()
            .map(|(name, value)| (name.clone(), serde_json::Value::String(value.clone())))
            .collect(),
    )
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let message: serde_json::Value = if args.json {
        serde_json::from_str(&args.message).context("MESSAGE is not valid JSON (--json)")?
    } else {
        serde_json::Value::String(args.message)
    };
    let mut metadata = serde_json::Map::new();
    if let (Some(key), Some(secret)) = (args.key, args.secret) {
        metadata.insert("key".into(), key.into());
        metadata.insert("secret".into(), secret.into());
    }
    let request = serde_json::json!({
        "message": message,
        "tags": tags_json(&args.tags),
        "metadata": metadata,
    });
    let (mut socket, _) = tokio_tungstenite::connect_async(&args.url)
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    socket.send(Message::text(request.to_string())).await?;
    socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await?;
    while let Some(frame) = socket.next().await {
        if let Message::Close(close) = frame? {
            match close {
                Some(close) if close.code != CloseCode::Normal => {
                    bail!(
                        "the server refused the request: {} {}",
                        u16::from(close.code),
                        close.reason
                    )
                }
                _ => return Ok(()),
            }
        }
    }
    Ok(())
}

async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    let mut url = url_with_query(
        &args.url,
        &[("tags", Some(tags_json(&args.tags).to_string()))],
    );
    url = url_with_query(&url, &[("key", args.key), ("secret", args.secret)]);
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    use std::io::Write;
    while let Some(frame) = socket.next().await {
        match frame? {
            Message::Text(text) => {
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{}", text.as_str())?;
                stdout.flush()?;
            }
            Message::Close(close) => {
                if let Some(close) = close {
                    bail!(
                        "the server closed the connection: {} {}",
                        u16::from(close.code),
                        close.reason
                    );
                }
                return Ok(());
            }
            _ => {}
        }
    }
    Ok(())
}

fn url_with_query(url: &str, params: &[(&str, Option<String>)]) -> String {
    let mut url = url.to_owned();
    for (name, value) in params {
        if let Some(value) = value {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(name);
            url.push('=');
            url.extend(form_urlencoded::byte_serialize(value.as_bytes()));
        }
    }
    url
}
