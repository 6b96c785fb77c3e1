//! Signed tags (SPEC §3): tokens judged at open over real sockets, made by tagcast's own code and
//! by PyJWT (an independent implementation, in a venv: the tests marked `needs python3-venv +
//! PyJWT`, run by `.ci/run` with `--include-ignored`). Every accepted and refused case of issue
//! 16, the reload that revokes, the metrics and the logs, `tagcast token` and the client library.
//!
//! Times are explicit: the servers allow `token_leeway_s = 600` ([`LEEWAY`]), and each token
//! carries an `exp`/`nbf` at least five minutes inside or outside it, so that no test depends on
//! how fast it runs (a venv being made, a loaded machine); nothing sleeps.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::{
    Client, Daemon, RawClient, TAGCAST, TestServer, open_status, tags_query, upgrade_request,
};
use serde_json::{Value, json};
use tagcast::client::Endpoint;
use tagcast::ops::auth::AuthReload;
use tagcast::tags::{TagLimits, Tags};
use tagcast::token::{self, Clock, SigningKey};

/// The `auth.token_leeway_s` of the test servers, in seconds.
const LEEWAY: u64 = 600;

const HS_SECRET: &str = "hs-secret-0123456789abcdefghijklmnop";
const ED_SEND_SECRET: &str = "ed-send-secret-0123456789abcdefghij";
const OTHER_SECRET: &str = "other-secret-0123456789abcdefghijkl";

/// A key pair of the test applications, as PEM text.
struct KeyPair {
    private: String,
    public: String,
}

fn key_pair(algorithm: &'static rcgen::SignatureAlgorithm) -> KeyPair {
    let pair = rcgen::KeyPair::generate_for(algorithm).expect("key pair");
    let private = if algorithm == &rcgen::PKCS_ED25519 {
        ed25519_pkcs8_v1(&pair.serialize_der())
    } else {
        pair.serialize_pem()
    };
    KeyPair {
        private,
        public: pair.public_key_pem(),
    }
}

/// An Ed25519 private key in the PKCS#8 v1 form (RFC 8410 §7) that `openssl genpkey` writes and
/// Python's `cryptography` reads: aws-lc writes v2 (with the public key), which it does not.
fn ed25519_pkcs8_v1(v2: &[u8]) -> String {
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    // v2: 30 53 02 01 01 30 05 06 03 2b 65 70 04 22 04 20 <seed> a1 23 ...
    let seed = &v2[16..48];
    let der = [&V1_PREFIX[..], seed].concat();
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
}

/// The keys every test of this binary uses.
struct Keys {
    es: KeyPair,
    ed: KeyPair,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        es: key_pair(&rcgen::PKCS_ECDSA_P256_SHA256),
        ed: key_pair(&rcgen::PKCS_ED25519),
    })
}

/// `tokenPublicKey: |` and the PEM, indented for `auth.yml`.
fn public_key_yaml(pem: &str) -> String {
    let mut text = String::from("    tokenPublicKey: |\n");
    for line in pem.lines() {
        text.push_str(&format!("      {line}\n"));
    }
    text
}

/// The applications: `hs-app` (HS256 with `hs_secret`), `es-app` (ES256), `ed-app` (EdDSA),
/// `sha-app` (a `secretSha256` only: verifies no token) and `other` (key and secret, for
/// connections without a token). None opens by key alone.
fn auth_yaml(hs_secret: &str) -> String {
    let keys = keys();
    format!(
        "applications:\n\
         \x20 - key: hs-app\n    secret: {hs_secret}\n    authorizeOpen: false\n\
         \x20 - key: es-app\n    secretSha256: 4e598f5daafc2fda61641ddbb5956deb23fde6616366dc9dd5a7c9f47da4d787\n    authorizeOpen: false\n{}\
         \x20 - key: ed-app\n    secret: {ED_SEND_SECRET}\n    authorizeOpen: false\n{}\
         \x20 - key: sha-app\n    secretSha256: 4e598f5daafc2fda61641ddbb5956deb23fde6616366dc9dd5a7c9f47da4d787\n    authorizeOpen: false\n\
         \x20 - key: other\n    secret: {OTHER_SECRET}\n    authorizeOpen: false\n",
        public_key_yaml(&keys.es.public),
        public_key_yaml(&keys.ed.public),
    )
}

/// A server whose `auth.yml` is [`auth_yaml`], with `[auth]` lines `auth` besides `file` and
/// `token_leeway_s`.
struct Setup {
    server: TestServer,
    _directory: tempfile::TempDir,
    auth_path: PathBuf,
}

async fn start(auth: &str) -> Setup {
    let directory = tempfile::tempdir().expect("tempdir");
    let auth_path = directory.path().join("auth.yml");
    std::fs::write(&auth_path, auth_yaml(HS_SECRET)).expect("write auth.yml");
    let toml = format!(
        "[auth]\nfile = {:?}\ntoken_leeway_s = {LEEWAY}\n{auth}\n",
        auth_path.display().to_string()
    );
    Setup {
        server: TestServer::start(&toml).await,
        _directory: directory,
        auth_path,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// How a test token is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Hs256,
    Hs384,
    Es256,
    EdDsa,
    /// `alg: none`, no signature.
    None,
    /// HS256 computed over the header and claims with the given key's bytes, whatever it is.
    Hs256Raw,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
            Alg::None => "none",
            Alg::Hs256Raw => "HS256-raw",
        }
    }
}

/// One token to make.
struct Spec {
    alg: Alg,
    /// A secret, or a PEM private key.
    key: String,
    /// The `kid` header; `None`: no `kid`.
    kid: Option<&'static str>,
    claims: Value,
}

/// Who makes the tokens: tagcast's own dependency (`jsonwebtoken`, and base64 by hand for what
/// it cannot make), or PyJWT.
#[derive(Debug, Clone, Copy)]
enum Maker {
    Rust,
    PyJwt,
}

impl Maker {
    fn mint(self, spec: &Spec) -> String {
        match self {
            Maker::Rust => rust_mint(spec),
            Maker::PyJwt => {
                let spec = json!({"alg": spec.alg.name(), "key": spec.key, "kid": spec.kid,
                    "claims": spec.claims});
                let output = pyjwt(&["mint", &spec.to_string()]);
                assert!(output.status.success(), "PyJWT mint: {output:?}");
                String::from_utf8(output.stdout)
                    .expect("utf-8")
                    .trim()
                    .to_owned()
            }
        }
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn rust_mint(spec: &Spec) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let (algorithm, key) = match spec.alg {
        Alg::Hs256 | Alg::Hs256Raw => (
            Algorithm::HS256,
            EncodingKey::from_secret(spec.key.as_bytes()).expect("secret"),
        ),
        Alg::Hs384 => (
            Algorithm::HS384,
            EncodingKey::from_secret(spec.key.as_bytes()).expect("secret"),
        ),
        Alg::Es256 => (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(spec.key.as_bytes()).expect("EC key"),
        ),
        Alg::EdDsa => (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(spec.key.as_bytes()).expect("Ed key"),
        ),
        Alg::None => {
            let header = json!({"alg": "none", "kid": spec.kid});
            return format!(
                "{}.{}.",
                b64url(header.to_string().as_bytes()),
                b64url(spec.claims.to_string().as_bytes())
            );
        }
    };
    let mut header = Header::new(algorithm);
    header.kid = spec.kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &spec.claims, &key).expect("encode")
}

/// The Python of the venv with PyJWT and cryptography (see [`common::python_venv`]), made once
/// per test binary.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        common::python_venv(
            "pyjwt-venv",
            &["PyJWT>=2.8,<3", "cryptography>=42"],
            "import jwt, cryptography",
        )
    })
}

fn pyjwt(args: &[&str]) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tokens/pyjwt_tool.py");
    Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .expect("run pyjwt_tool.py")
}

/// `?token=...&tags=...`, either may be absent.
fn query(token: Option<&str>, tags: &str) -> String {
    let tags = tags_query(tags);
    let Some(token) = token else {
        return tags;
    };
    let encoded: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    match tags.strip_prefix('?') {
        Some(tags) => format!("?token={encoded}&{tags}"),
        None => format!("?token={encoded}"),
    }
}

/// One case: a token (or none), the URL's tags, and the answer expected: the status and a
/// piece of the reason.
struct Case {
    name: &'static str,
    token: Option<Spec>,
    url_tags: &'static str,
    status: u16,
    reason: &'static str,
}

fn claims(tags: Value) -> Value {
    json!({"tags": tags, "iat": now(), "exp": now() + 3600})
}

fn spec(alg: Alg, key: &str, kid: &'static str, claims: Value) -> Option<Spec> {
    Some(Spec {
        alg,
        key: key.to_owned(),
        kid: Some(kid),
        claims,
    })
}

/// Every accepted and refused token of issue 16, with `auth.signed_tags = ["userId"]`.
fn cases() -> Vec<Case> {
    let keys = keys();
    let user42 = || claims(json!({"userId": "42"}));
    let hs = |claims| spec(Alg::Hs256, HS_SECRET, "hs-app", claims);
    vec![
        Case {
            name: "HS256 with the application's secret",
            token: hs(user42()),
            url_tags: "",
            status: 101,
            reason: "",
        },
        Case {
            name: "ES256 with the application's tokenPublicKey",
            token: spec(Alg::Es256, &keys.es.private, "es-app", user42()),
            url_tags: "",
            status: 101,
            reason: "",
        },
        Case {
            name: "EdDSA with the application's tokenPublicKey",
            token: spec(Alg::EdDsa, &keys.ed.private, "ed-app", user42()),
            url_tags: "",
            status: 101,
            reason: "",
        },
        Case {
            name: "integer tag values, and URL tags that agree or are unsigned",
            token: hs(claims(json!({"userId": 42}))),
            url_tags: r#"{"userId":"42","room":"a"}"#,
            status: 101,
            reason: "",
        },
        Case {
            name: "expired, but within the leeway",
            token: hs(json!({"tags": {"userId": "42"}, "exp": now() - LEEWAY / 2})),
            url_tags: "",
            status: 101,
            reason: "",
        },
        Case {
            name: "no token, unsigned tags only",
            token: None,
            url_tags: r#"{"room":"a"}"#,
            status: 101,
            reason: "",
        },
        Case {
            name: "no token for a signed tag",
            token: None,
            url_tags: r#"{"userId":"42"}"#,
            status: 401,
            reason: "tag `userId` needs a token",
        },
        Case {
            name: "wrong secret",
            token: spec(Alg::Hs256, OTHER_SECRET, "hs-app", user42()),
            url_tags: "",
            status: 403,
            reason: "token signature invalid",
        },
        Case {
            name: "ES256 signed by another key",
            token: spec(
                Alg::Es256,
                &key_pair(&rcgen::PKCS_ECDSA_P256_SHA256).private,
                "es-app",
                user42(),
            ),
            url_tags: "",
            status: 403,
            reason: "token signature invalid",
        },
        Case {
            name: "unknown kid",
            token: spec(Alg::Hs256, HS_SECRET, "nobody", user42()),
            url_tags: "",
            status: 403,
            reason: "token `kid` is not the key of an application",
        },
        Case {
            name: "missing kid",
            token: Some(Spec {
                alg: Alg::Hs256,
                key: HS_SECRET.into(),
                kid: None,
                claims: user42(),
            }),
            url_tags: "",
            status: 403,
            reason: "token has no `kid`",
        },
        Case {
            name: "alg none",
            token: spec(Alg::None, "", "hs-app", user42()),
            url_tags: "",
            status: 403,
            reason: "token alg `none` refused: application `hs-app` takes HS256 tokens",
        },
        Case {
            name: "HS384 with the right secret",
            token: spec(Alg::Hs384, HS_SECRET, "hs-app", user42()),
            url_tags: "",
            status: 403,
            reason: "token alg `HS384` refused",
        },
        Case {
            name: "HS256 keyed with the PEM of the application's public key",
            token: spec(Alg::Hs256Raw, &keys.es.public, "es-app", user42()),
            url_tags: "",
            status: 403,
            reason: "token alg `HS256` refused: application `es-app` takes ES256 tokens",
        },
        Case {
            name: "an application with a secretSha256 only verifies no token",
            token: spec(Alg::Hs256, "hashed-secret", "sha-app", user42()),
            url_tags: "",
            status: 403,
            reason: "application `sha-app` cannot verify tokens",
        },
        Case {
            name: "expired past the leeway",
            token: hs(json!({"tags": {"userId": "42"}, "exp": now() - 2 * LEEWAY})),
            url_tags: "",
            status: 403,
            reason: "token expired",
        },
        Case {
            name: "nbf ahead",
            token: hs(
                json!({"tags": {"userId": "42"}, "nbf": now() + 2 * LEEWAY, "exp": now() + 4 * LEEWAY}),
            ),
            url_tags: "",
            status: 403,
            reason: "token not yet valid",
        },
        Case {
            name: "no exp",
            token: hs(json!({"tags": {"userId": "42"}})),
            url_tags: "",
            status: 403,
            reason: "`exp`",
        },
        Case {
            name: "exp as a string (the CVE-2026-25537 shape)",
            token: hs(json!({"tags": {"userId": "42"}, "exp": "99999999999"})),
            url_tags: "",
            status: 403,
            reason: "token claims invalid",
        },
        Case {
            name: "nbf as a string",
            token: hs(json!({"tags": {"userId": "42"}, "nbf": "99999999999", "exp": now() + 3600})),
            url_tags: "",
            status: 403,
            reason: "token claims invalid",
        },
        Case {
            name: "tags not an object",
            token: hs(claims(json!(["userId", "42"]))),
            url_tags: "",
            status: 403,
            reason: "token claims invalid: `tags`: tags must be a JSON object",
        },
        Case {
            name: "no tags claim",
            token: hs(json!({"exp": now() + 3600})),
            url_tags: "",
            status: 403,
            reason: "token claims invalid",
        },
        Case {
            name: "a URL value that differs from the token's",
            token: hs(user42()),
            url_tags: r#"{"userId":"43"}"#,
            status: 403,
            reason: "tag `userId`: the URL's value differs from the token's",
        },
        Case {
            name: "a signed URL tag missing from the token",
            token: hs(claims(json!({"room": "a"}))),
            url_tags: r#"{"userId":"42"}"#,
            status: 403,
            reason: "tag `userId` is signed: it must come from the token",
        },
    ]
}

/// Runs every case against one server; checks each answer, that no reason quotes the token or
/// a secret, and the refusals counted by reason in the metrics.
async fn every_case(maker: Maker) {
    let setup = start("signed_tags = [\"userId\"]").await;
    let mut refused = std::collections::BTreeMap::<&str, u64>::new();
    for case in cases() {
        let token = case.token.as_ref().map(|spec| maker.mint(spec));
        let (status, reason) =
            open_status(&setup.server, &query(token.as_deref(), case.url_tags)).await;
        assert_eq!(
            (status, reason.contains(case.reason)),
            (case.status, true),
            "{maker:?}: {}: {status} {reason}",
            case.name
        );
        for secret in [HS_SECRET, OTHER_SECRET, "BEGIN", "PRIVATE"] {
            assert!(!reason.contains(secret), "{}: {reason}", case.name);
        }
        if let Some(token) = &token {
            let signature = token.rsplit('.').next().unwrap_or_default();
            assert!(
                signature.is_empty() || !reason.contains(signature),
                "{reason}"
            );
        }
        if status != 101 {
            let label = match (status, case.reason) {
                (401, _) => "token_missing",
                (_, "token expired" | "token not yet valid") => "token_expired",
                (_, reason) if reason.starts_with("tag `") => "token_tags",
                _ => "token_invalid",
            };
            *refused.entry(label).or_default() += 1;
        }
    }
    let metrics = setup.server.shared.router.metrics().encode();
    for (label, count) in refused {
        let line = format!("tagcast_opens_refused_total{{reason=\"{label}\"}} {count}");
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
}

#[tokio::test]
async fn every_case_with_tokens_made_by_jsonwebtoken() {
    every_case(Maker::Rust).await;
}

#[tokio::test]
#[ignore = "needs python3-venv + PyJWT"]
async fn every_case_with_tokens_made_by_pyjwt() {
    python();
    every_case(Maker::PyJwt).await;
}

/// Mints an HS256 token for `hs-app` with `tags`, valid ten minutes.
fn hs_token(tags: &[(&str, &str)]) -> String {
    let tags: Tags = tags.iter().copied().collect();
    token::mint(
        "hs-app",
        &SigningKey::hs256(HS_SECRET).expect("secret"),
        &tags,
        Duration::from_secs(600),
    )
    .expect("mint")
}

/// A request for `tags`, sent with the `other` application's credentials.
fn request(message: &str, tags: Value) -> String {
    json!({"message": message, "tags": tags,
        "metadata": {"key": "other", "secret": OTHER_SECRET}})
    .to_string()
}

/// Sends `message` for `tags` from a connection of its own, and closes it.
async fn publish(setup: &Setup, message: &str, tags: Value) {
    let url = setup
        .server
        .url(&format!("?key=other&secret={OTHER_SECRET}"));
    let mut sender = Client::connect(&url).await;
    sender.send(&request(message, tags)).await;
}

#[tokio::test]
async fn a_page_receives_only_its_own_users_messages() {
    let setup = start("signed_tags = [\"userId\"]").await;
    let server = &setup.server;
    let mut user42 =
        Client::connect(&server.url(&query(Some(&hs_token(&[("userId", "42")])), ""))).await;
    let mut user43 =
        Client::connect(&server.url(&query(Some(&hs_token(&[("userId", "43")])), ""))).await;
    server.wait_for_connections(2).await;
    publish(&setup, "for 42", json!({"userId": "42"})).await;
    publish(&setup, "for 43", json!({"userId": "43"})).await;
    assert_eq!(user42.recv().await, r#""for 42""#);
    assert_eq!(user43.recv().await, r#""for 43""#);
    publish(&setup, "marker", json!({})).await;
    assert_eq!(user42.recv().await, r#""marker""#);
    assert_eq!(user43.recv().await, r#""marker""#);
}

#[tokio::test]
async fn every_name_is_signed_with_a_star() {
    let setup = start("signed_tags = [\"*\"]").await;
    let server = &setup.server;
    let (status, reason) = open_status(server, &query(None, r#"{"room":"a"}"#)).await;
    assert_eq!(
        (status, reason.as_str()),
        (
            401,
            "tag `room` needs a token signed by an application (URL parameter `token`)"
        )
    );
    let token = hs_token(&[("room", "a")]);
    assert_eq!(
        open_status(server, &query(Some(&token), r#"{"room":"a"}"#))
            .await
            .0,
        101
    );
    let (status, reason) = open_status(server, &query(Some(&token), r#"{"lang":"FR"}"#)).await;
    assert_eq!(
        (status, reason.as_str()),
        (403, "tag `lang` is signed: it must come from the token")
    );
    assert_eq!(open_status(server, &query(None, "")).await.0, 101);
}

#[tokio::test]
async fn a_token_alone_opens_when_authorize_open_is_false() {
    let setup = start("authorize_open = false\nsigned_tags = [\"userId\"]").await;
    let server = &setup.server;
    assert_eq!(open_status(server, &query(None, "")).await.0, 401);
    let token = hs_token(&[("userId", "42")]);
    assert_eq!(open_status(server, &query(Some(&token), "")).await.0, 101);
    // A token with no tags opens too: it is the application's word.
    assert_eq!(
        open_status(server, &query(Some(&hs_token(&[])), ""))
            .await
            .0,
        101
    );
    let forged = token::mint(
        "hs-app",
        &SigningKey::hs256(OTHER_SECRET).expect("secret"),
        &Tags::default(),
        Duration::from_secs(600),
    )
    .expect("mint");
    assert_eq!(open_status(server, &query(Some(&forged), "")).await.0, 403);
    // Without signed tags, the token still opens.
    let setup = start("authorize_open = false").await;
    assert_eq!(
        open_status(&setup.server, &query(Some(&token), "")).await.0,
        101
    );
}

#[tokio::test]
async fn the_client_library_opens_with_a_token() {
    let setup = start("authorize_open = false\nsigned_tags = [\"userId\"]").await;
    let tags: Tags = [("userId", "42")].into_iter().collect();
    let token = token::mint(
        "es-app",
        &SigningKey::from_private_pem(&keys().es.private).expect("private key"),
        &tags,
        Duration::from_secs(60),
    )
    .expect("mint");
    let mut listener = Endpoint::new(&setup.server.url(""))
        .expect("endpoint")
        .token(&token)
        .connect_with_tags([("room", "a")])
        .await
        .expect("listener");
    setup.server.wait_for_connections(1).await;
    publish(&setup, "hello", json!({"userId": "42", "room": "a"})).await;
    let message: String = listener.next().await.expect("next").expect("a message");
    assert_eq!(message, "hello");
}

#[tokio::test]
async fn a_reload_with_a_changed_secret_closes_its_tokens_with_4403_only() {
    let setup = start("authorize_open = false\nsigned_tags = [\"userId\"]").await;
    let server = &setup.server;
    let mut hs =
        Client::connect(&server.url(&query(Some(&hs_token(&[("userId", "42")])), ""))).await;
    let es_token = token::mint(
        "es-app",
        &SigningKey::from_private_pem(&keys().es.private).expect("key"),
        &[("userId", "7")].into_iter().collect(),
        Duration::from_secs(600),
    )
    .expect("mint");
    let mut es = Client::connect(&server.url(&query(Some(&es_token), ""))).await;
    let mut other =
        Client::connect(&server.url(&format!("?key=other&secret={OTHER_SECRET}"))).await;
    server.wait_for_connections(3).await;
    std::fs::write(
        &setup.auth_path,
        auth_yaml("a-new-hs-secret-0123456789abcdefghij"),
    )
    .expect("rewrite");
    match server.shared.reload().auth {
        AuthReload::Loaded { revoked, .. } => assert_eq!(revoked, 1),
        other => panic!("reload failed: {other:?}"),
    }
    let (code, reason) = hs.expect_close().await;
    assert_eq!(code, 4403, "{reason}");
    server.wait_for_connections(2).await;
    other.send(&request("still here", json!({}))).await;
    assert_eq!(es.recv().await, r#""still here""#);
    assert_eq!(other.recv().await, r#""still here""#);
    // The old secret's tokens no longer open; the new one's do.
    let (status, _) = open_status(server, &query(Some(&hs_token(&[("userId", "42")])), "")).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_token_that_expires_after_the_open_does_not_close_its_connection() {
    let setup = start("signed_tags = [\"userId\"]").await;
    let server = &setup.server;
    // Expired five minutes ago: within the leeway at open, refused by a strict clock.
    let expired = rust_mint(&Spec {
        alg: Alg::Hs256,
        key: HS_SECRET.into(),
        kid: Some("hs-app"),
        claims: json!({"tags": {"userId": "42"}, "exp": now() - LEEWAY / 2}),
    });
    let mut client = Client::connect(&server.url(&query(Some(&expired), ""))).await;
    server.wait_for_connections(1).await;
    let auth = server.shared.router.auth();
    let judged = |clock| {
        auth.authorize(
            &Default::default(),
            Some(&expired),
            clock,
            TagLimits::UNLIMITED,
        )
    };
    assert_eq!(
        judged(Clock::Now { leeway_s: 0 })
            .unwrap_err()
            .rejection
            .reason,
        "token expired"
    );
    assert!(judged(Clock::Ignored).is_ok());
    // A reload judges it again, as expired as can be: it stays.
    match server.shared.reload().auth {
        AuthReload::Loaded { revoked, .. } => assert_eq!(revoked, 0),
        other => panic!("reload failed: {other:?}"),
    }
    publish(&setup, "after the reload", json!({"userId": "42"})).await;
    assert_eq!(client.recv().await, r#""after the reload""#);
}

#[test]
fn signed_tags_need_an_auth_file_says_tagcast_check() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("tagcast.toml");
    std::fs::write(&path, "[auth]\nsigned_tags = [\"userId\"]\n").expect("write");
    let output = Command::new(TAGCAST)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("tagcast check");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("key `auth.signed_tags`: needs auth.file"),
        "{stderr}"
    );
}

/// Runs `tagcast token` with `args` and, when set, `TAGCAST_SECRET`; returns the token.
fn tagcast_token(args: &[&str], secret: Option<&str>) -> String {
    let mut command = Command::new(TAGCAST);
    command.arg("token").args(args).env_remove("TAGCAST_SECRET");
    if let Some(secret) = secret {
        command.env("TAGCAST_SECRET", secret);
    }
    let output = command.output().expect("tagcast token");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// What `tagcast token` reads, written beside the auth file: a `tagcast.toml` naming it, and
/// the PEM private keys of `es-app` and `ed-app`.
struct TokenFiles {
    config: String,
    es_pem: String,
    ed_pem: String,
}

fn token_files(setup: &Setup) -> TokenFiles {
    let directory = setup.auth_path.parent().expect("directory");
    let write = |name: &str, text: &str| {
        let path = directory.join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let auth = setup.auth_path.display().to_string();
    TokenFiles {
        config: write("tagcast.toml", &format!("[auth]\nfile = {auth:?}\n")),
        es_pem: write("es.pem", &keys().es.private),
        ed_pem: write("ed.pem", &keys().ed.private),
    }
}

#[tokio::test]
async fn tagcast_token_output_opens() {
    let setup = start("authorize_open = false\nsigned_tags = [\"userId\"]").await;
    let TokenFiles {
        config,
        es_pem,
        ed_pem,
    } = token_files(&setup);
    let tokens = [
        tagcast_token(
            &["--config", &config, "--key", "hs-app", "--tag", "userId=42"],
            None,
        ),
        tagcast_token(&["--key", "hs-app", "--tag", "userId=42"], Some(HS_SECRET)),
        tagcast_token(
            &[
                "--key",
                "es-app",
                "--tag",
                "userId=42",
                "--private-key",
                &es_pem,
            ],
            None,
        ),
        tagcast_token(
            &[
                "--key",
                "ed-app",
                "--tag",
                "userId=42",
                "--private-key",
                &ed_pem,
            ],
            None,
        ),
    ];
    for token in &tokens {
        assert_eq!(
            open_status(&setup.server, &query(Some(token), r#"{"userId":"42"}"#))
                .await
                .0,
            101,
            "{token}"
        );
    }
    // An application with a public key is not signed HS256 from the file.
    let output = Command::new(TAGCAST)
        .args(["token", "--config", &config, "--key", "es-app"])
        .env_remove("TAGCAST_SECRET")
        .output()
        .expect("tagcast token");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("application `es-app` takes ES256 tokens: sign them with --private-key"),
        "{stderr}"
    );
}

#[tokio::test]
#[ignore = "needs python3-venv + PyJWT"]
async fn tagcast_token_output_is_verified_by_pyjwt() {
    let setup = start("").await;
    let TokenFiles {
        config,
        es_pem,
        ed_pem,
    } = token_files(&setup);
    let keys = keys();
    let checks = [
        (
            tagcast_token(
                &[
                    "--config",
                    &config,
                    "--key",
                    "hs-app",
                    "--tag",
                    "userId=42",
                    "--tag",
                    "room=a",
                    "--ttl",
                    "5m",
                ],
                None,
            ),
            "HS256",
            HS_SECRET.to_owned(),
            "hs-app",
            300,
        ),
        (
            tagcast_token(
                &[
                    "--key",
                    "other",
                    "--tag",
                    "userId=42",
                    "--tag",
                    "room=a",
                    "--ttl",
                    "90",
                ],
                Some(OTHER_SECRET),
            ),
            "HS256",
            OTHER_SECRET.to_owned(),
            "other",
            90,
        ),
        (
            tagcast_token(
                &[
                    "--key",
                    "es-app",
                    "--tag",
                    "userId=42",
                    "--tag",
                    "room=a",
                    "--private-key",
                    &es_pem,
                ],
                None,
            ),
            "ES256",
            keys.es.public.clone(),
            "es-app",
            60,
        ),
        (
            tagcast_token(
                &[
                    "--key",
                    "ed-app",
                    "--tag",
                    "userId=42",
                    "--tag",
                    "room=a",
                    "--ttl",
                    "1h",
                    "--private-key",
                    &ed_pem,
                ],
                None,
            ),
            "EdDSA",
            keys.ed.public.clone(),
            "ed-app",
            3600,
        ),
    ];
    for (token, alg, key, kid, ttl) in checks {
        let output = pyjwt(&["verify", &token, alg, &key]);
        assert!(output.status.success(), "PyJWT refused {alg}: {output:?}");
        let decoded: Value = serde_json::from_slice(&output.stdout).expect("json");
        assert_eq!(decoded["header"]["kid"], kid);
        assert_eq!(decoded["header"]["alg"], alg);
        assert_eq!(
            decoded["claims"]["tags"],
            json!({"userId": "42", "room": "a"})
        );
        let exp = decoded["claims"]["exp"].as_u64().expect("exp");
        let iat = decoded["claims"]["iat"].as_u64().expect("iat");
        assert_eq!(exp - iat, ttl);
        // And PyJWT refuses it with another key.
        let stranger = match alg {
            "HS256" => ED_SEND_SECRET.to_owned(),
            "ES256" => key_pair(&rcgen::PKCS_ECDSA_P256_SHA256).public,
            _ => key_pair(&rcgen::PKCS_ED25519).public,
        };
        assert!(!pyjwt(&["verify", &token, alg, &stranger]).status.success());
    }
}

#[test]
fn the_log_names_the_reason_and_the_kid_never_the_token() {
    let directory = tempfile::tempdir().expect("tempdir");
    let auth = directory.path().join("auth.yml");
    std::fs::write(&auth, auth_yaml(HS_SECRET)).expect("write");
    let config = directory.path().join("tagcast.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\naddress = \"127.0.0.1\"\nport = 0\n[http]\nadmin_address = \"\"\n\
             [auth]\nfile = {:?}\nsigned_tags = [\"userId\"]\n[log]\ntarget = \"stderr\"\n",
            auth.display().to_string()
        ),
    )
    .expect("write");
    let mut daemon = Daemon::start(&config);
    let address = daemon.ws_address();
    let forged = token::mint(
        "hs-app",
        &SigningKey::hs256(OTHER_SECRET).expect("secret"),
        &[("userId", "42")].into_iter().collect(),
        Duration::from_secs(600),
    )
    .expect("mint");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let request = upgrade_request(&format!("/{}", query(Some(&forged), "")));
        let mut client = RawClient::send_request(address, &request).await;
        assert!(client.read_head().await.starts_with("HTTP/1.1 403"));
    });
    let line = daemon.wait_for_line("handshake refused");
    assert!(line.contains("token signature invalid"), "{line}");
    assert!(line.contains("hs-app"), "{line}");
    let signature = forged.rsplit('.').next().expect("signature");
    for logged in daemon.log_so_far() {
        assert!(!logged.contains(signature), "the token is logged: {logged}");
        assert!(
            !logged.contains(&forged[..40]),
            "the token is logged: {logged}"
        );
    }
}

#[tokio::test]
async fn without_an_auth_file_a_token_is_refused_and_tags_are_free() {
    let server = TestServer::start("").await;
    let token = hs_token(&[("userId", "42")]);
    let (status, reason) = open_status(&server, &query(Some(&token), "")).await;
    assert_eq!(
        (status, reason.as_str()),
        (
            403,
            "token refused: this server has no auth file to verify it"
        )
    );
    assert_eq!(
        open_status(&server, &query(None, r#"{"userId":"42"}"#))
            .await
            .0,
        101
    );
}
