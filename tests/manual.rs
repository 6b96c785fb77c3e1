//! The man pages and completions `tagcast generate` writes (what the .deb installs) match the
//! binary: the same commands as `tagcast --help`, every flag of every `tagcast COMMAND --help`,
//! the binary's version and no date written by hand.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::TAGCAST;

fn output(args: &[&str]) -> String {
    let output = Command::new(TAGCAST)
        .args(args)
        .output()
        .expect("run tagcast");
    assert!(output.status.success(), "tagcast {args:?}: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The commands `tagcast --help` lists (its "Commands:" block), `help` aside.
fn help_commands() -> BTreeSet<String> {
    output(&["--help"])
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every `--long` flag of a `--help` text.
fn long_flags(help: &str) -> BTreeSet<String> {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(|word| {
            word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .collect()
}

#[test]
fn the_man_pages_and_completions_match_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    output(&["generate", "--out", dir.path().to_str().unwrap()]);
    let read = |path: &str| {
        std::fs::read_to_string(dir.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let main_page = read("man/tagcast.1");
    let commands = help_commands();
    assert!(commands.len() >= 6, "{commands:?}");

    // tagcast(1) lists exactly the commands of `tagcast --help`, each with its own page.
    let listed: BTreeSet<String> = main_page
        .lines()
        .filter_map(|line| line.strip_prefix("tagcast\\-")?.strip_suffix("(1)"))
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, commands);
    for command in &commands {
        let page = read(&format!("man/tagcast-{command}.1"));
        let help = output(&[command, "--help"]);
        for flag in long_flags(&help) {
            assert!(
                page.contains(&flag.replace('-', "\\-")),
                "tagcast-{command}(1) lacks {flag}"
            );
        }
        for completion in [
            "completions/tagcast.bash",
            "completions/_tagcast",
            "completions/tagcast.fish",
        ] {
            assert!(
                read(completion).contains(command.as_str()),
                "{completion} lacks {command}"
            );
        }
    }
    for flag in long_flags(&output(&["--help"])) {
        assert!(
            main_page.contains(&flag.replace('-', "\\-")),
            "tagcast(1) lacks {flag}"
        );
    }

    // The hand-written sections, and the version of this binary, never a date.
    for section in [
        ".SH FILES",
        ".SH SIGNALS",
        ".SH ENVIRONMENT",
        ".SH \"EXIT STATUS\"",
        ".SH \"HTTP ENDPOINTS\"",
    ] {
        assert!(main_page.contains(section), "tagcast(1) lacks {section}");
    }
    for variable in [
        "TAGCAST_CONFIG",
        "TAGCAST_SECRET",
        "SIGHUP",
        "POST /publish",
        "GET /metrics",
    ] {
        assert!(main_page.contains(variable), "tagcast(1) lacks {variable}");
    }
    let version = env!("CARGO_PKG_VERSION");
    let title = main_page
        .lines()
        .find(|line| line.starts_with(".TH"))
        .expect(".TH");
    assert_eq!(title, format!(".TH tagcast 1  \"tagcast {version}\" "));
}
