//! What a backend gets by adding this crate, with no feature to choose: at most 80 crates
//! (issue 15; the daemon's package brings over 200). Counted by `cargo tree` over a fresh project
//! that depends on this crate by path, with the versions of this repository's Cargo.lock.

use std::path::Path;
use std::process::Command;

/// The most crates a backend may get (its own dependencies, direct and indirect, once each).
const MOST_CRATES: usize = 80;

#[test]
fn a_backend_that_adds_the_client_gets_at_most_80_crates() {
    let backend = Path::new(env!("CARGO_TARGET_TMPDIR")).join("backend-with-tagcast-client");
    std::fs::create_dir_all(backend.join("src")).unwrap();
    let manifest = format!(
        "[package]\nname = \"backend\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n\
         [dependencies]\ntagcast-client = {{ path = {:?} }}\n\n[workspace]\n",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::write(backend.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(backend.join("src/lib.rs"), "").unwrap();
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    std::fs::copy(lock, backend.join("Cargo.lock")).unwrap();
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none"])
        .current_dir(&backend)
        .output()
        .expect("cargo tree runs");
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{tree}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut crates: Vec<&str> = tree
        .lines()
        .map(|line| line.trim_end_matches(" (*)"))
        .filter(|line| !line.is_empty() && !line.starts_with("backend v"))
        .collect();
    crates.sort_unstable();
    crates.dedup();
    println!(
        "a backend depending on tagcast-client gets {} crates",
        crates.len()
    );
    assert!(
        crates.len() <= MOST_CRATES,
        "{} crates (at most {MOST_CRATES}):\n{}",
        crates.len(),
        crates.join("\n")
    );
}
