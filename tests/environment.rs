//! `TAGCAST_CONFIG` and `TAGCAST_SECRET` stand for `--config` and `--secret` (SPEC §5), so that
//! no secret need be on a command line (visible in `ps`); and `tagcast --config PATH` is
//! `tagcast serve --config PATH`. The real binary, real sockets, real files.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Daemon, TAGCAST};

/// A config on 127.0.0.1, port 0, whose one application `app` (secret `s3cret`) must open
/// with its credentials.
fn write_files(dir: &Path) -> std::path::PathBuf {
    let auth = dir.join("auth.yml");
    std::fs::write(
        &auth,
        "applications:\n  - key: app\n    secret: s3cret\n    authorizeOpen: true\n",
    )
    .unwrap();
    let config = dir.join("tagcast.toml");
    let text = format!(
        "[server]\naddress = \"127.0.0.1\"\nport = 0\n[http]\nadmin_address = \"\"\n\
         [log]\ntarget = \"stderr\"\n[auth]\nfile = {auth:?}\nauthorize_open = false\n"
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// `tagcast ARGS` with the environment `env`, neither variable inherited from the test's.
fn tagcast(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(TAGCAST);
    command
        .args(args)
        .env_remove("TAGCAST_CONFIG")
        .env_remove("TAGCAST_SECRET")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied());
    command
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    tagcast(args, env).output().expect("run tagcast")
}

fn daemon(mut command: Command) -> Daemon {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Daemon::start_with(command)
}

#[test]
fn tagcast_config_is_serve_and_the_variables_stand_for_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_files(dir.path());
    let config = config.to_str().unwrap();

    // `tagcast --config PATH` and `TAGCAST_CONFIG=PATH tagcast` both serve that config.
    let mut by_flag = daemon(tagcast(&["--config", config], &[]));
    let mut by_env = daemon(tagcast(&[], &[("TAGCAST_CONFIG", config)]));
    for daemon in [&mut by_flag, &mut by_env] {
        let url = format!("ws://{}/", daemon.ws_address());
        let send = |secret: &str| {
            run(
                &["send", "--url", &url, "--key", "app", "message"],
                &[("TAGCAST_SECRET", secret)],
            )
        };
        // The secret from TAGCAST_SECRET opens (authorize_open = false) and sends.
        let accepted = send("s3cret");
        assert!(accepted.status.success(), "{accepted:?}");
        let refused = send("wrong");
        assert_eq!(refused.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("4401"),
            "{refused:?}"
        );
        // --secret still wins over the variable.
        let flag = run(
            &[
                "send", "--url", &url, "--key", "app", "--secret", "s3cret", "message",
            ],
            &[("TAGCAST_SECRET", "wrong")],
        );
        assert!(flag.status.success(), "{flag:?}");
    }

    // `check` reads TAGCAST_CONFIG too; a flag wins over it.
    let checked = run(&["check"], &[("TAGCAST_CONFIG", config)]);
    assert!(checked.status.success(), "{checked:?}");
    assert!(String::from_utf8_lossy(&checked.stdout).starts_with(&format!("{config}: ok\n")));
    let missing = run(
        &["check", "--config", "/nonexistent.toml"],
        &[("TAGCAST_CONFIG", config)],
    );
    assert_eq!(missing.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.toml"));
}

#[test]
fn help_names_the_variables_but_never_shows_the_secret() {
    for command in [["send", "--help"], ["listen", "--help"]] {
        let help = run(&command, &[("TAGCAST_SECRET", "s3cret-in-env")]);
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(text.contains("[env: TAGCAST_SECRET]"), "{text}");
        assert!(!text.contains("s3cret-in-env"), "{text}");
    }
    let help = run(&["serve", "--help"], &[]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("TAGCAST_CONFIG"));
}
