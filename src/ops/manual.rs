//! The man pages and the shell completions, generated from the command line's clap definition
//! (`tagcast generate --out DIR`, which packaging runs), so that they cannot drift from the
//! binary: every command, flag and default comes from clap. `tagcast(1)` adds the sections clap
//! does not know of (files, signals, environment, exit status, HTTP endpoints, journal); each
//! command has its own page, `tagcast-send(1)` and so on, as git and cargo do. No date and no
//! version is written by hand: the version is the binary's own.

use std::io;
use std::path::{Path, PathBuf};

use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

/// The shells whose completions the package installs.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// `(term, description)` entries of a hand-written section: the term in bold.
type Entries<'a> = &'a [(&'a str, &'a str)];

const FILES: Entries = &[
    (
        "/etc/tagcast/tagcast.toml",
        "The configuration, read by serve and check when --config and TAGCAST_CONFIG are not \
         given; every key is documented in it. Its changes apply at the next restart; a reload \
         checks it and names the changed keys as needing a restart.",
    ),
    (
        "/etc/tagcast/auth.yml",
        "The applications that may open and send (Gomoob format), created by the package with \
         a random secret (mode 0640, root:tagcast). Reloaded when it changes and on reload.",
    ),
    (
        "/etc/tagcast/tls/",
        "A place for the certificate and key named by [tls] (readable by the tagcast group). \
         Reloaded when they change and on reload. Purging the package keeps it.",
    ),
    (
        "/run/tagcast/control",
        "The control socket tagcast reload talks to (in $RUNTIME_DIRECTORY; mode 0600).",
    ),
];

const SIGNALS: Entries = &[
    (
        "SIGTERM, SIGINT",
        "Stop accepting, close every client with 1001 (going away), wait up to \
         limits.shutdown_grace_ms for them to answer, exit 0.",
    ),
    (
        "SIGHUP",
        "Reload: re-read the auth file and the TLS certificate and key, check tagcast.toml and \
         log its changed keys as needing a restart. What fails to reload stays as it was; the \
         outcome is logged (tagcast reload also reports it).",
    ),
];

const ENVIRONMENT: Entries = &[
    (
        "TAGCAST_CONFIG",
        "The config file, for --config (serve, check, and tagcast without a command).",
    ),
    (
        "TAGCAST_SECRET",
        "The application secret, for --secret (send, listen): keeps it off the command line, \
         where ps shows it.",
    ),
    (
        "RUST_LOG",
        "A log filter (e.g. tagcast=debug) that wins over log.level.",
    ),
    (
        "RUNTIME_DIRECTORY",
        "Set by systemd (RuntimeDirectory=): serve listens on the control socket there, and \
         reload connects to it (default /run/tagcast).",
    ),
    (
        "NOTIFY_SOCKET, WATCHDOG_USEC, JOURNAL_STREAM",
        "Set by systemd: readiness, status and watchdog messages (Type=notify), and logs as \
         journal entries.",
    ),
];

const EXIT_STATUS: Entries = &[
    ("0", "Success."),
    (
        "1",
        "A failure at run time: an address in use (serve), a request the server refused \
         (send, printing the close code and reason), a reload that failed (reload, naming \
         the file), a server that cannot be reached.",
    ),
    ("2", "A usage error on the command line."),
    (
        "78",
        "The configuration, auth file or TLS files are unusable (serve, check), named with the \
         file, line and key. systemd does not restart the service on it.",
    ),
];

const HTTP_ENDPOINTS: Entries = &[
    (
        "GET / with Upgrade: websocket",
        "A WebSocket connection; its tags in the query, ?tags={\"name\":\"value\"} (and \
         key and secret when auth.authorize_open = false).",
    ),
    (
        "POST /publish",
        "Publish one request (its JSON as the body; credentials in metadata or \
         Authorization: Bearer KEY:SECRET); answers {\"delivered\": N}, or 4xx with \
         {\"error\": \"...\"}. Off with http.publish = false.",
    ),
    (
        "GET /healthz",
        "200 while serving, 503 while shutting down.",
    ),
    (
        "GET /metrics",
        "Prometheus metrics (tagcast_*, process_*), on http.admin_address \
         (127.0.0.1:9108 by default) or, when it is empty, on the main listeners.",
    ),
];

const JOURNAL: &str = "Under systemd the logs are journal entries with the fields CONN, PEER, TAGS, APP \
    and CODE (never a secret): journalctl -u tagcast -o verbose CONN=12 shows one connection. \
    Priorities follow the level (info is 6). Start, ready, reload done, reload failed, slow-client \
    close and shutdown carry a MESSAGE_ID; the README lists them. Elsewhere the logs are lines on \
    standard error.";

/// Writes the man pages into `out/man` and the bash, zsh and fish completions into
/// `out/completions`; returns the files written. `external` gives the pages of the commands
/// that run another binary (`bench`: tagcast-bench's own page), by command name.
pub fn generate(
    command: clap::Command,
    external: &[(&str, Vec<u8>)],
    out: &Path,
) -> io::Result<Vec<PathBuf>> {
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let (man, completions) = (out.join("man"), out.join("completions"));
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let mut written = vec![man.join(Man::new(command.clone()).get_filename())];
    std::fs::write(&written[0], main_page(&command)?)?;
    // A command's page shows the binary's version in its footer, as `tagcast(1)` does.
    let source = format!(
        "{} {}",
        command.get_name(),
        command.get_version().unwrap_or_default()
    );
    for subcommand in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let page = Man::new(subcommand.clone()).source(source.clone());
        match external
            .iter()
            .find(|(name, _)| *name == subcommand.get_name())
        {
            Some((_, content)) => {
                let path = man.join(page.get_filename());
                std::fs::write(&path, content)?;
                written.push(path);
            }
            None => written.push(page.generate_to(&man)?),
        }
    }
    let name = command.get_name().to_owned();
    for shell in SHELLS {
        written.push(clap_complete::generate_to(
            shell,
            &mut command,
            &name,
            &completions,
        )?);
    }
    Ok(written)
}

/// `tagcast(1)`: clap's sections, then the hand-written ones.
fn main_page(command: &clap::Command) -> io::Result<Vec<u8>> {
    let man = Man::new(command.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    let mut roff = Roff::new();
    for (title, entries) in [
        ("FILES", FILES),
        ("SIGNALS", SIGNALS),
        ("ENVIRONMENT", ENVIRONMENT),
        ("EXIT STATUS", EXIT_STATUS),
        ("HTTP ENDPOINTS", HTTP_ENDPOINTS),
    ] {
        roff.control("SH", [title]);
        for (term, description) in entries {
            roff.control("TP", []);
            roff.text([bold(*term)]);
            roff.text([roman(*description)]);
        }
    }
    roff.control("SH", ["JOURNAL"]);
    roff.text([roman(JOURNAL)]);
    roff.control("SH", ["SEE ALSO"]);
    let mut see_also: Vec<String> = command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .map(|sub| format!("{}-{}(1)", command.get_name(), sub.get_name()))
        .collect();
    see_also.extend(["systemctl(1)", "journalctl(1)"].map(String::from));
    roff.text([italic(see_also.join(", "))]);
    roff.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    Ok(page)
}
