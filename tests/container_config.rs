//! The container image's `packaging/container/tagcast.toml` is a valid config as shipped, and
//! with its `auth.file` line uncommented (what README "Container image" tells users to do).
//! The image itself is tested under podman by tests/container/run.sh.

mod common;

use std::process::Command;

fn check(config: &std::path::Path) -> std::process::Output {
    Command::new(common::TAGCAST)
        .args(["check", "--config"])
        .arg(config)
        .env_remove("TAGCAST_CONFIG")
        .output()
        .expect("run tagcast check")
}

#[test]
fn the_image_config_is_valid_with_and_without_the_auth_file() {
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/container/tagcast.toml");
    let output = check(&shipped);
    assert!(output.status.success(), "{output:?}");

    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.yml");
    std::fs::write(
        &auth,
        "applications:\n  - key: app\n    secret: s\n    authorizeOpen: true\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&shipped).unwrap();
    let uncommented = text.replace(
        "# file = \"/etc/tagcast/auth.yml\"",
        &format!("file = {auth:?}"),
    );
    assert_ne!(uncommented, text, "the auth.file line is no longer there");
    let config = dir.path().join("tagcast.toml");
    std::fs::write(&config, uncommented).unwrap();
    let output = check(&config);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok, 1 applications"));
}
