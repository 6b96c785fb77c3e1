//! Authorization from a real `auth.yml` (SPEC §3): the open and send rules, live reload by every
//! way a file gets replaced, rejected edits, revocation, and the real binary on SIGHUP.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{Client, Daemon, TAGCAST, TestServer, open_status, wait_until};
use tagcast::net::server::Server;
use tagcast::net::shared::Shared;
use tagcast::ops::auth::AuthReload;
use tagcast::ops::config::Config;
use tagcast::wire::request::Credentials;

/// SHA-256 of "hashed-secret", for the `secretSha256` form.
const HASHED_SECRET_DIGEST: &str =
    "4e598f5daafc2fda61641ddbb5956deb23fde6616366dc9dd5a7c9f47da4d787";

/// An application of a test file: key, secret, authorizeOpen.
type App<'a> = (&'a str, &'a str, bool);

fn yaml(applications: &[App]) -> String {
    let mut text = String::from("# test applications\napplications:\n");
    for (key, secret, authorize_open) in applications {
        text.push_str(&format!(
            "  - key: {key}\n    secret: {secret}\n    authorizeOpen: {authorize_open}\n"
        ));
    }
    text
}

/// A temporary directory holding `auth.yml`.
struct AuthDir {
    directory: tempfile::TempDir,
    path: PathBuf,
}

impl AuthDir {
    fn new(text: &str) -> AuthDir {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("auth.yml");
        std::fs::write(&path, text).expect("write auth.yml");
        AuthDir { directory, path }
    }

    /// Truncates and rewrites the file where it is (same inode).
    fn write_in_place(&self, text: &str) {
        std::fs::write(&self.path, text).expect("write in place");
    }

    /// Writes a new file beside it and renames it over (as most editors save).
    fn rename_over(&self, text: &str) {
        let temporary = self.directory.path().join(".auth.yml.swp");
        std::fs::write(&temporary, text).expect("write temporary");
        std::fs::rename(&temporary, &self.path).expect("rename over");
    }

    /// The `[auth]` section naming this file.
    fn toml(&self, authorize_open: bool) -> String {
        format!(
            "[auth]\nfile = {:?}\nauthorize_open = {authorize_open}\n",
            self.path.display().to_string()
        )
    }
}

/// `?key=...&secret=...` with the values URL-encoded; either may be absent.
fn query(key: Option<&str>, secret: Option<&str>) -> String {
    let mut pairs = form_urlencoded::Serializer::new(String::new());
    if let Some(key) = key {
        pairs.append_pair("key", key);
    }
    if let Some(secret) = secret {
        pairs.append_pair("secret", secret);
    }
    format!("?{}", pairs.finish())
}

/// Opens a connection with credentials in the URL; waits until the hub counts it.
async fn open(server: &TestServer, key: Option<&str>, secret: Option<&str>) -> Client {
    let before = server.hub.len();
    let client = Client::connect(&server.url(&query(key, secret))).await;
    server.wait_for_connections(before + 1).await;
    client
}

/// A request for everybody carrying `metadata` credentials.
fn request(message: &str, key: Option<&str>, secret: Option<&str>) -> String {
    let metadata = serde_json::json!({"key": key, "secret": secret});
    serde_json::json!({"message": message, "tags": {}, "metadata": metadata}).to_string()
}

fn credentials(key: &str, secret: &str) -> Credentials {
    Credentials {
        key: Some(key.into()),
        secret: Some(secret.into()),
    }
}

/// Proves `client` is open and served: it sends with `app`'s credentials and gets its message.
async fn round_trip(client: &mut Client, app: (&str, &str), message: &str) {
    client
        .send(&request(message, Some(app.0), Some(app.1)))
        .await;
    assert_eq!(client.recv().await, format!("{message:?}"));
}

/// `tagcast_auth_reloads_total{result}` (`ok` or `failed`) as `/metrics` shows it: how many
/// reloads of the auth file the server counted.
fn auth_reloads(shared: &Shared, result: &str) -> u64 {
    let series = format!("tagcast_auth_reloads_total{{result=\"{result}\"}} ");
    let text = shared.router.metrics().encode();
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {series}in {text}"))
}

/// Reloads as SIGHUP does; checks the new file is in force and how many connections it closed.
fn reload_loads(server: &TestServer, applications: usize, revoked: usize) {
    match server.shared.reload().auth {
        AuthReload::Loaded {
            applications: loaded,
            revoked: closed,
        } => assert_eq!((loaded, closed), (applications, revoked)),
        other => panic!("the reload failed: {other:?}"),
    }
}

#[tokio::test]
async fn without_an_auth_file_anyone_opens_and_sends() {
    let server = TestServer::start("").await;
    assert_eq!(server.shared.router.auth().path(), None);
    let mut client = open(&server, None, None).await;
    client.send(&request("hello", None, None)).await;
    assert_eq!(client.recv().await, r#""hello""#);
    assert!(matches!(server.shared.reload().auth, AuthReload::NoFile));
}

#[tokio::test]
async fn open_rules_when_authorize_open_is_false() {
    let file = AuthDir::new(&format!(
        "{}  - key: hashed\n    secretSha256: {HASHED_SECRET_DIGEST}\n    authorizeOpen: false\n",
        yaml(&[("opener", "s-open", true), ("closed", "s-closed", false)])
    ));
    let server = TestServer::start(&file.toml(false)).await;
    let cases: [(Option<&str>, Option<&str>, u16); 11] = [
        (None, None, 401),
        (None, Some("s-closed"), 401),
        // An application with authorizeOpen: its key alone opens; its secret is not checked.
        (Some("opener"), None, 101),
        (Some("opener"), Some("wrong"), 101),
        (Some("closed"), None, 401),
        (Some("closed"), Some("s-closed"), 101),
        (Some("closed"), Some("s-open"), 403),
        (Some("nobody"), None, 401),
        (Some("nobody"), Some("s-closed"), 403),
        (Some("hashed"), Some("hashed-secret"), 101),
        (Some("hashed"), Some(HASHED_SECRET_DIGEST), 403),
    ];
    for (key, secret, expected) in cases {
        let (status, body) = open_status(&server, &query(key, secret)).await;
        assert_eq!(status, expected, "key {key:?} secret {secret:?}: {body}");
        match status {
            401 => assert!(body.contains("needs the key and secret"), "{body}"),
            403 => assert!(
                body.contains("unknown application key or wrong secret"),
                "{body}"
            ),
            _ => {}
        }
        assert!(!body.contains("s-closed") && !body.contains("hashed-secret"));
    }
}

#[tokio::test]
async fn authorize_open_true_lets_anyone_open() {
    let file = AuthDir::new(&yaml(&[("closed", "s-closed", false)]));
    let server = TestServer::start(&file.toml(true)).await;
    for (key, secret) in [
        (None, None),
        (Some("closed"), Some("wrong")),
        (Some("x"), None),
    ] {
        assert_eq!(open_status(&server, &query(key, secret)).await.0, 101);
    }
}

#[tokio::test]
async fn every_send_needs_the_key_and_secret_of_an_application() {
    let file = AuthDir::new(&format!(
        "{}  - key: hashed\n    secretSha256: {HASHED_SECRET_DIGEST}\n    authorizeOpen: true\n",
        yaml(&[("app", "s-app", false)])
    ));
    let server = TestServer::start(&file.toml(true)).await;
    let refused: [(Option<&str>, Option<&str>, &str); 5] = [
        (None, None, "metadata needs the key and secret"),
        (Some("app"), None, "metadata needs the key and secret"),
        (None, Some("s-app"), "metadata needs the key and secret"),
        (
            Some("app"),
            Some("wrong"),
            "unknown application key or wrong secret",
        ),
        (
            Some("nobody"),
            Some("s-app"),
            "unknown application key or wrong secret",
        ),
    ];
    for (key, secret, reason) in refused {
        let mut client = open(&server, None, None).await;
        client.send(&request("x", key, secret)).await;
        let (code, text) = client.expect_close().await;
        assert_eq!(code, 4401, "{key:?} {secret:?}");
        assert!(text.contains(reason), "{text}");
        drop(client); // else the server waits for its close reply
        server.wait_for_connections(0).await;
    }
    // The Gomoob PHP client sends `"metadata": {}` when it has no credentials.
    let mut client = open(&server, None, None).await;
    client.publish(r#""x""#, "{}").await;
    assert_eq!(client.expect_close().await.0, 4401);
    drop(client);
    server.wait_for_connections(0).await;

    let mut client = open(&server, None, None).await;
    round_trip(&mut client, ("app", "s-app"), "plain").await;
    round_trip(&mut client, ("hashed", "hashed-secret"), "hashed").await;
}

#[tokio::test]
async fn a_missing_or_invalid_auth_file_stops_the_start() {
    let file = AuthDir::new("applications:\n  - key: a\n    secret: s\n");
    let missing = file.directory.path().join("missing.yml");
    for (path, expected) in [
        (&missing, "cannot read the auth file"),
        (&file.path, "line 2: application `a` has no `authorizeOpen`"),
    ] {
        let text = format!("[auth]\nfile = {:?}\n", path.display().to_string());
        let config = Config::parse(&text, None).expect("config");
        let message = Server::new(config).err().expect("start error").to_string();
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
        assert!(message.contains(expected), "{message}");
    }
}

/// Starts a server whose file has `held` (kept valid), opens a connection with it, replaces the
/// file with `replace` so that `added` appears, and checks that the change is in force within
/// the bounded wait while the held connection stays open.
async fn reload_is_observed(toml: &str, replace: impl FnOnce(&str)) {
    let held = ("held", "s-held");
    let added = ("added", "s-added");
    let server = TestServer::start(toml).await;
    let mut client = open(&server, Some(held.0), Some(held.1)).await;
    assert_eq!(
        open_status(&server, &query(Some(added.0), Some(added.1)))
            .await
            .0,
        403
    );

    replace(&yaml(&[(held.0, held.1, false), (added.0, added.1, false)]));
    let auth = server.shared.clone();
    wait_until(
        move || {
            auth.router
                .auth()
                .check_send(&credentials(added.0, added.1))
                .is_ok()
        },
        "the new application to be in force",
    )
    .await;
    assert_eq!(server.shared.router.auth().applications(), Some(2));
    assert_eq!(
        open_status(&server, &query(Some(added.0), Some(added.1)))
            .await
            .0,
        101
    );
    round_trip(&mut client, held, "still open").await;
    round_trip(&mut client, added, "new secret works").await;
    assert_eq!(auth_reloads(&server.shared, "failed"), 0);
}

#[tokio::test]
async fn reload_by_in_place_write() {
    let file = AuthDir::new(&yaml(&[("held", "s-held", false)]));
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file.path).unwrap());
    reload_is_observed(&file.toml(false), |text| file.write_in_place(text)).await;
    let after = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file.path).unwrap());
    assert_eq!(inode, after, "the file was written in place");
}

#[tokio::test]
async fn reload_by_rename_over() {
    let file = AuthDir::new(&yaml(&[("held", "s-held", false)]));
    reload_is_observed(&file.toml(false), |text| file.rename_over(text)).await;
}

/// A Kubernetes config map volume holding `auth.yml`: `auth.yml -> ..data/auth.yml`,
/// `..data -> ..vN`. An update writes a new version directory, points a new `..data_tmp` link at
/// it, renames that over `..data` and removes the old version, as the kubelet does.
struct ConfigMap {
    file: AuthDir,
    version: usize,
}

impl ConfigMap {
    fn new(text: &str) -> ConfigMap {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        std::fs::create_dir(root.join("..v1")).unwrap();
        std::fs::write(root.join("..v1/auth.yml"), text).unwrap();
        std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/auth.yml", root.join("auth.yml")).unwrap();
        let path = root.join("auth.yml");
        ConfigMap {
            file: AuthDir { directory, path },
            version: 1,
        }
    }

    fn root(&self) -> &Path {
        self.file.directory.path()
    }

    /// The file the links lead to now.
    fn real_file(&self) -> PathBuf {
        self.root().join(format!("..v{}/auth.yml", self.version))
    }

    fn update(&mut self, text: &str) {
        let old = self.root().join(format!("..v{}", self.version));
        self.version += 1;
        let new = format!("..v{}", self.version);
        std::fs::create_dir(self.root().join(&new)).unwrap();
        std::fs::write(self.real_file(), text).unwrap();
        std::os::unix::fs::symlink(&new, self.root().join("..data_tmp")).unwrap();
        std::fs::rename(self.root().join("..data_tmp"), self.root().join("..data")).unwrap();
        std::fs::remove_dir_all(old).unwrap();
    }
}

#[tokio::test]
async fn reload_by_symlink_swap() {
    let mut map = ConfigMap::new(&yaml(&[("held", "s-held", false)]));
    reload_is_observed(&map.file.toml(false), |text| map.update(text)).await;
}

/// After each swap the watches follow the file: the directory of the new version is watched,
/// so an in-place edit of the real file is seen too.
#[tokio::test]
async fn the_watch_follows_the_file_across_swaps() {
    let version = |number: usize| {
        yaml(&[
            ("held", "s-held", false),
            ("rotating", &format!("s-{number}"), false),
        ])
    };
    let mut map = ConfigMap::new(&version(0));
    let server = TestServer::start(&map.file.toml(false)).await;
    let mut client = open(&server, Some("held"), Some("s-held")).await;
    for number in 1..=6 {
        match number {
            4 => std::fs::write(map.real_file(), version(number)).unwrap(),
            _ => map.update(&version(number)),
        }
        let auth = server.shared.clone();
        let secret = format!("s-{number}");
        wait_until(
            move || {
                auth.router
                    .auth()
                    .check_send(&credentials("rotating", &secret))
                    .is_ok()
            },
            &format!("version {number} to be in force"),
        )
        .await;
    }
    round_trip(&mut client, ("held", "s-held"), "still open").await;
    assert_eq!(auth_reloads(&server.shared, "failed"), 0);
}

#[tokio::test]
async fn reload_on_sighup_is_the_same_path() {
    // Shared::reload is what main.rs calls on SIGHUP.
    let file = AuthDir::new(&yaml(&[("held", "s-held", false)]));
    let server = TestServer::start(&file.toml(false)).await;
    let mut client = open(&server, Some("held"), Some("s-held")).await;
    file.rename_over(&yaml(&[
        ("held", "s-held", false),
        ("added", "s-added", true),
    ]));
    reload_loads(&server, 2, 0);
    assert_eq!(
        open_status(&server, &query(Some("added"), None)).await.0,
        101
    );
    round_trip(&mut client, ("held", "s-held"), "still open").await;
}

#[tokio::test]
async fn an_invalid_edit_keeps_the_previous_applications() {
    let valid = yaml(&[("held", "s-held", false)]);
    let file = AuthDir::new(&valid);
    let server = TestServer::start(&file.toml(false)).await;
    let mut client = open(&server, Some("held"), Some("s-held")).await;
    // Each edit replaces `held`'s secret, but is invalid: the old secret must keep working.
    let edits: [(&str, &str); 8] = [
        (
            "applications:\n  - key: held\n    secret: [new\n",
            "line 3: ",
        ),
        ("apps:\n  - key: held\n", "line 1: unknown field `apps`"),
        (
            "applications:\n  - secret: new\n    authorizeOpen: false\n",
            "line 2: an application has no `key`",
        ),
        (
            "applications:\n  - key: held\n    authorizeOpen: false\n",
            "line 2: application `held` has no `secret`",
        ),
        (
            "applications:\n  - key: held\n    secret: new\n",
            "line 2: application `held` has no `authorizeOpen`",
        ),
        (
            "applications:\n  - key: held\n    secret: new\n    authorizeOpen: false\n  - key: held\n    secret: newer\n    authorizeOpen: false\n",
            "line 5: duplicate application key `held` (first defined at line 2)",
        ),
        (
            "applications:\n  - key: held\n    secret: new\n    authorizeOpen: sometimes\n",
            "line 4: invalid boolean",
        ),
        ("", "no `applications:` list"),
    ];
    for (round, (text, expected)) in edits.into_iter().enumerate() {
        let failed = auth_reloads(&server.shared, "failed");
        file.rename_over(text);
        // The watcher sees the edit and rejects it...
        let auth = server.shared.clone();
        wait_until(
            move || auth_reloads(&auth, "failed") > failed,
            "the watcher to reject the edit",
        )
        .await;
        // ...and a reload says precisely why.
        match server.shared.reload().auth {
            AuthReload::Failed(error) => {
                let message = error.to_string();
                assert!(
                    message.starts_with(&file.path.display().to_string()),
                    "{message}"
                );
                assert!(message.contains(expected), "{text:?}: {message}");
            }
            other => panic!("{text:?} was accepted: {other:?}"),
        }
        assert_eq!(server.shared.router.auth().applications(), Some(1));
        round_trip(&mut client, ("held", "s-held"), &format!("round {round}")).await;
        assert_eq!(
            open_status(&server, &query(Some("held"), Some("s-held")))
                .await
                .0,
            101
        );
        assert_eq!(
            open_status(&server, &query(Some("held"), Some("new")))
                .await
                .0,
            403
        );
    }
    // A file that disappears is an error too; the old table stays.
    std::fs::remove_file(&file.path).unwrap();
    match server.shared.reload().auth {
        AuthReload::Failed(error) => assert!(error.to_string().contains("cannot read")),
        other => panic!("a missing file was accepted: {other:?}"),
    }
    round_trip(&mut client, ("held", "s-held"), "after removal").await;
    // And the next valid file is taken.
    file.rename_over(&yaml(&[("held", "s-held", false), ("b", "s-b", false)]));
    reload_loads(&server, 2, 0);
}

#[tokio::test]
async fn revocation_closes_exactly_the_affected_connections_with_4403() {
    let file = AuthDir::new(&yaml(&[
        ("opener", "s-opener", true),
        ("rotated", "s-old", false),
        ("kept", "s-kept", false),
        ("removed", "s-removed", false),
    ]));
    let server = TestServer::start(&file.toml(false)).await;
    let by_key_alone = open(&server, Some("opener"), None).await;
    let mut opener_with_secret = open(&server, Some("opener"), Some("s-opener")).await;
    let rotated = open(&server, Some("rotated"), Some("s-old")).await;
    let mut kept = open(&server, Some("kept"), Some("s-kept")).await;
    let removed = open(&server, Some("removed"), Some("s-removed")).await;

    // `opener` loses authorizeOpen, `rotated` gets a new secret, `removed` goes away.
    file.rename_over(&yaml(&[
        ("opener", "s-opener", false),
        ("rotated", "s-new", false),
        ("kept", "s-kept", false),
    ]));
    for mut client in [by_key_alone, rotated, removed] {
        let (code, reason) = client.expect_close().await;
        assert_eq!(code, 4403);
        assert!(reason.contains("revoked"), "{reason}");
    }
    server.wait_for_connections(2).await;
    // The others stay, served: each receives what the other sends.
    kept.send(&request("to all", Some("kept"), Some("s-kept")))
        .await;
    assert_eq!(kept.recv().await, r#""to all""#);
    assert_eq!(opener_with_secret.recv().await, r#""to all""#);
    // A reload with nothing more to revoke closes nothing.
    reload_loads(&server, 3, 0);
    round_trip(&mut opener_with_secret, ("rotated", "s-new"), "new secret").await;
    assert_eq!(kept.recv().await, r#""new secret""#);
}

#[tokio::test]
async fn connections_opened_without_credentials_under_authorize_open_stay() {
    let file = AuthDir::new(&yaml(&[("app", "s-app", false)]));
    let server = TestServer::start(&file.toml(true)).await;
    let mut anonymous = open(&server, None, None).await;
    let mut with_old = open(&server, Some("app"), Some("s-app")).await;
    file.rename_over("applications: []\n");
    reload_loads(&server, 0, 0);
    file.rename_over(&yaml(&[("other", "s-other", false)]));
    server.shared.reload();
    round_trip(&mut anonymous, ("other", "s-other"), "anonymous stays").await;
    assert_eq!(with_old.recv().await, r#""anonymous stays""#);
    assert_eq!(server.hub.len(), 2);
}

/// A sender keeps sending while the file is rewritten 50 times (in place and renamed over, in
/// turn): every message arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_delivery_is_lost_while_the_file_is_rewritten_50_times() {
    const BATCH: usize = 20;
    let sender_app = ("sender", "s-sender");
    // The sender's application comes first and stays; another one changes every time.
    fn version(round: usize) -> String {
        yaml(&[
            ("sender", "s-sender", false),
            ("rotating", &format!("s-{round}"), round.is_multiple_of(2)),
        ])
    }
    let file = Arc::new(AuthDir::new(&version(0)));
    let server = TestServer::start(&file.toml(true)).await;
    let mut receiver = server.connect(r#"{"room":"1"}"#).await;
    let mut sender = open(&server, None, None).await;

    let received = Arc::new(AtomicUsize::new(0));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            common::received_before(r#""end""#, async move || {
                let text = receiver.recv().await;
                // Counts the final "end" too, once nobody waits on the count.
                received.fetch_add(1, Ordering::Relaxed);
                text
            })
            .await
        })
    };
    let rewriting = Arc::new(AtomicBool::new(true));
    let writer = {
        let (file, rewriting) = (file.clone(), rewriting.clone());
        std::thread::spawn(move || {
            for round in 1..=50 {
                match round % 2 {
                    0 => file.write_in_place(&version(round)),
                    _ => file.rename_over(&version(round)),
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            rewriting.store(false, Ordering::Relaxed);
        })
    };
    let mut sent = 0;
    while rewriting.load(Ordering::Relaxed) || sent < 500 {
        for _ in 0..BATCH {
            let text = serde_json::json!({
                "message": sent.to_string(),
                "tags": {"room": "1"},
                "metadata": {"key": sender_app.0, "secret": sender_app.1},
            });
            sender.send(&text.to_string()).await;
            sent += 1;
        }
        // Keep the receiver's queue short: the test is about auth, not slow clients.
        let received = received.clone();
        wait_until(
            move || received.load(Ordering::Relaxed) == sent,
            "the receiver to catch up",
        )
        .await;
    }
    writer.join().expect("writer thread");
    sender
        .send(&request("end", Some(sender_app.0), Some(sender_app.1)))
        .await;
    let messages = reader.await.expect("reader");
    let expected: Vec<String> = (0..sent).map(|number| format!("\"{number}\"")).collect();
    assert_eq!(messages, expected);
    // The file was reloaded along the way; the last version is in force.
    let auth = server.shared.clone();
    wait_until(
        move || {
            auth.router
                .auth()
                .check_send(&credentials("rotating", "s-50"))
                .is_ok()
        },
        "the last version to be in force",
    )
    .await;
    assert!(auth_reloads(&server.shared, "ok") >= 1);
}

// --- the real binary ---------------------------------------------------------------------

/// Runs `tagcast ARGS`; returns the exit code, stdout and stderr.
fn run_tagcast(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(TAGCAST)
        .args(args)
        .output()
        .expect("run tagcast");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write_config(directory: &Path, auth: &Path, authorize_open: bool) -> PathBuf {
    let config = directory.join("tagcast.toml");
    let text = format!(
        "[server]\naddress = \"127.0.0.1\"\nport = 0\n[http]\nadmin_address = \"\"\n\
         [auth]\nfile = {:?}\nauthorize_open = {authorize_open}\n[log]\ntarget = \"stderr\"\nlevel = \"info\"\n",
        auth.display().to_string()
    );
    std::fs::write(&config, text).expect("write config");
    config
}

#[test]
fn tagcast_check_validates_the_auth_file() {
    let file = AuthDir::new(&yaml(&[("a", "s-a", true), ("b", "s-b", false)]));
    let config = write_config(file.directory.path(), &file.path, false);
    let config = config.to_str().unwrap();

    let (code, stdout, stderr) = run_tagcast(&["check", "--config", config]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("auth.yml: ok, 2 applications"), "{stdout}");

    file.write_in_place(&format!("{}  - key: a\n", yaml(&[("a", "s-a", true)])));
    let (code, _, stderr) = run_tagcast(&["check", "--config", config]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains(&file.path.display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 6: application `a` has no `authorizeOpen`"),
        "{stderr}"
    );

    std::fs::remove_file(&file.path).unwrap();
    let (code, _, stderr) = run_tagcast(&["check", "--config", config]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains(&file.path.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("cannot read the auth file"), "{stderr}");
}

/// SIGHUP makes the real daemon read the file again. The file is edited through a hard link in
/// another directory, which the watcher of the configured directory does not see: only the
/// signal can bring the change in.
#[tokio::test]
async fn sighup_reloads_the_auth_file_of_the_real_daemon() {
    let root = tempfile::tempdir().unwrap();
    let watched = root.path().join("etc");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir(&watched).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    let auth = watched.join("auth.yml");
    std::fs::write(&auth, yaml(&[("held", "s-held", false)])).unwrap();
    std::fs::hard_link(&auth, elsewhere.join("auth.yml")).unwrap();
    let mut daemon = Daemon::start(&write_config(&watched, &auth, false));
    let address = daemon.ws_address();
    let url =
        |key: &str, secret: &str| format!("ws://{address}/{}", query(Some(key), Some(secret)));

    let mut held = Client::connect(&url("held", "s-held")).await;
    assert!(
        tokio_tungstenite::connect_async(url("added", "s-added"))
            .await
            .is_err(),
        "added is not in the file yet"
    );
    std::fs::write(
        elsewhere.join("auth.yml"),
        yaml(&[("held", "s-held", false), ("added", "s-added", false)]),
    )
    .unwrap();
    daemon.signal("HUP");
    daemon.wait_for_line("reload requested");
    let reloaded = daemon.wait_for_line("auth file reloaded");
    assert!(reloaded.contains("applications=2"), "{reloaded}");

    // `added` receiving its own message proves it is registered (the 101 comes just before).
    let mut added = Client::connect(&url("added", "s-added")).await;
    round_trip(&mut added, ("added", "s-added"), "after SIGHUP").await;
    assert_eq!(held.recv().await, r#""after SIGHUP""#);
}
