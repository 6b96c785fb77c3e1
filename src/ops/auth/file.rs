//! The Gomoob `auth.yml` file: YAML text → a checked [`Applications`] table, or an error that
//! names the file, the line and the problem.
//!
//! ```yaml
//! applications:
//!   - key: application1
//!     secret: B4ajW3P7jfWEYPZsQV8mnteHg97G67uW
//!     authorizeOpen: true
//!   - key: application2
//!     secretSha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!     authorizeOpen: false
//! ```
//!
//! An application gives its secret either in clear (`secret`) or as the SHA-256 digest of it in
//! hexadecimal (`secretSha256`), so that the file need not hold the secret itself.
//!
//! Signed tags' tokens (SPEC §3) of an application are verified with its `tokenPublicKey` (a PEM
//! public key, EC P-256 for ES256 or Ed25519 for EdDSA) when it has one, else HS256 with its
//! clear `secret`; a `secretSha256`-only application without a public key verifies no token.
//!
//! ```yaml
//!   - key: application3
//!     secretSha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!     authorizeOpen: false
//!     tokenPublicKey: |
//!       -----BEGIN PUBLIC KEY-----
//!       MCowBQYDK2VwAyEA...
//!       -----END PUBLIC KEY-----
//! ```
//!
//! Errors never quote the file's text: a misplaced secret must not end up in a log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::{MessageFormatter, Spanned, UserMessageFormatter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::token::{TokenError, TokenKey};

/// An auth file that cannot be used. The message names the file and, when known, the line.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file is missing or cannot be read.
    #[error("{path}: cannot read the auth file: {source}")]
    Read {
        /// The auth file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML, or not a valid applications list.
    #[error("{path}: {}{problem}", at_line(*.line))]
    Invalid {
        /// The auth file.
        path: PathBuf,
        /// The line at fault (1-based), when known.
        line: Option<u64>,
        /// What is wrong, without the file's text.
        problem: String,
    },
}

fn at_line(line: Option<u64>) -> String {
    line.map(|line| format!("line {line}: "))
        .unwrap_or_default()
}

/// An application's secret as the table keeps it: the SHA-256 digest of the secret (the clear
/// text is not kept). Compared in constant time; its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    /// The digest of a secret given in clear.
    fn of(clear: &str) -> Secret {
        Secret(Sha256::digest(clear.as_bytes()).into())
    }

    /// A digest written as 64 hexadecimal digits.
    fn from_hex(text: &str) -> Option<Secret> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut digest).ok()?;
        Some(Secret(digest))
    }

    /// True when `given` is this secret. Takes the same time whatever `given` is: both sides
    /// are digests of the same length, compared with `subtle`.
    pub fn matches(&self, given: &str) -> bool {
        Secret::of(given).0.ct_eq(&self.0).into()
    }
}

/// Never prints the secret, nor its digest.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// One application of the file.
#[derive(Debug, Clone)]
pub struct Application {
    /// Its secret.
    pub secret: Secret,
    /// True: its key alone opens a connection (the secret is not checked), as in Gomoob.
    pub authorize_open: bool,
    /// What verifies its signed tags' tokens: its `tokenPublicKey`, else its clear secret;
    /// none for a `secretSha256`-only application without a public key.
    pub token_key: Option<TokenKey>,
}

/// The applications of one valid auth file, by key.
#[derive(Debug, Clone, Default)]
pub struct Applications {
    by_key: HashMap<String, Application>,
}

impl Applications {
    /// Reads and checks the auth file at `path`.
    pub fn load(path: &Path) -> Result<Applications, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_owned(),
            source,
        })?;
        Applications::parse(&text, path)
    }

    /// Parses and checks the text of an auth file; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Applications, AuthError> {
        let invalid = |line: Option<u64>, problem: String| AuthError::Invalid {
            path: path.to_owned(),
            line,
            problem,
        };
        // `no_schema`: a key or secret written as a number (`secret: 0123`) or a boolean is
        // refused, to be quoted, rather than read as its text: YAML says it is not a string.
        let options = serde_saphyr::options! { no_schema: true };
        let raw: Option<RawFile> =
            serde_saphyr::from_str_with_options(text, options).map_err(|error| {
                let line = error
                    .location()
                    .map(|at| at.line())
                    .filter(|&line| line > 0);
                let message = UserMessageFormatter.format_message(error.without_snippet());
                // The formatter leaves control characters in; keep the message on one line.
                let message = message.replace(char::is_control, " ");
                invalid(line, message)
            })?;
        let Some(entries) = raw.and_then(|raw| raw.applications) else {
            return Err(invalid(None, "no `applications:` list".into()));
        };
        let mut by_key: HashMap<String, Application> = HashMap::new();
        let mut first_line: HashMap<String, u64> = HashMap::new();
        for entry in entries {
            let app_line = Some(entry.referenced.line());
            let RawApplication {
                key,
                secret,
                secret_sha256,
                authorize_open,
                token_public_key,
            } = entry.value;
            let Some(key) = key else {
                return Err(invalid(app_line, "an application has no `key`".into()));
            };
            let key_line = key.referenced.line();
            let key = key.value;
            let Some(authorize_open) = authorize_open else {
                return Err(invalid(
                    app_line,
                    format!("application `{key}` has no `authorizeOpen` (true or false)"),
                ));
            };
            if key.is_empty() {
                return Err(invalid(Some(key_line), "`key` must not be empty".into()));
            }
            let token_key = match (&token_public_key, &secret) {
                (Some(pem), _) => {
                    Some(TokenKey::from_public_pem(&pem.value).map_err(|problem| {
                        invalid(
                            Some(pem.referenced.line()),
                            format!("application `{key}`: `tokenPublicKey`: {problem}"),
                        )
                    })?)
                }
                (None, Some(clear)) => Some(TokenKey::hs256(&clear.value).map_err(|_| {
                    invalid(
                        Some(clear.referenced.line()),
                        format!("application `{key}`: `secret` must not be empty"),
                    )
                })?),
                (None, None) => None,
            };
            let secret = match (secret, secret_sha256) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        app_line,
                        format!(
                            "application `{key}` has both `secret` and `secretSha256`: keep one"
                        ),
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        app_line,
                        format!("application `{key}` has no `secret` (nor `secretSha256`)"),
                    ));
                }
                (Some(clear), None) if clear.value.is_empty() => {
                    return Err(invalid(
                        Some(clear.referenced.line()),
                        format!("application `{key}`: `secret` must not be empty"),
                    ));
                }
                (Some(clear), None) => Secret::of(&clear.value),
                (None, Some(digest)) => Secret::from_hex(&digest.value).ok_or_else(|| {
                    invalid(
                        Some(digest.referenced.line()),
                        format!(
                            "application `{key}`: `secretSha256` must be 64 hexadecimal digits \
                             (the SHA-256 digest of the secret)"
                        ),
                    )
                })?,
            };
            if let Some(first) = first_line.get(&key) {
                return Err(invalid(
                    Some(key_line),
                    format!("duplicate application key `{key}` (first defined at line {first})"),
                ));
            }
            first_line.insert(key.clone(), key_line);
            by_key.insert(
                key,
                Application {
                    secret,
                    authorize_open,
                    token_key,
                },
            );
        }
        Ok(Applications { by_key })
    }

    /// The application with this key.
    pub fn get(&self, key: &str) -> Option<&Application> {
        self.by_key.get(key)
    }

    /// What verifies the tokens whose `kid` is `key`.
    pub fn token_key(&self, key: &str) -> Result<&TokenKey, TokenError> {
        let application = self.get(key).ok_or(TokenError::UnknownKid)?;
        application
            .token_key
            .as_ref()
            .ok_or_else(|| TokenError::NoKey(key.to_owned()))
    }

    /// Number of applications.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when the file lists no application.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    applications: Option<Vec<Spanned<RawApplication>>>,
}

/// One application as written. Secrets stay in this type only until they are digested. Every
/// field is optional here so that a missing one is reported with the application's line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawApplication {
    #[serde(default)]
    key: Option<Spanned<String>>,
    #[serde(default)]
    secret: Option<Spanned<String>>,
    #[serde(default)]
    secret_sha256: Option<Spanned<String>>,
    #[serde(default)]
    authorize_open: Option<bool>,
    #[serde(default)]
    token_public_key: Option<Spanned<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/tagcast/auth.yml";

    fn parse(text: &str) -> Result<Applications, AuthError> {
        Applications::parse(text, Path::new(PATH))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    /// A number or a boolean is not a key or a secret: YAML reads `0123` as a number, so it
    /// must be quoted rather than be read back as its text.
    #[test]
    fn keys_and_secrets_are_strings_not_numbers() {
        for (text, line) in [
            (
                "applications:\n  - key: 123\n    secret: s\n    authorizeOpen: true\n",
                2,
            ),
            (
                "applications:\n  - key: a\n    secret: 0123\n    authorizeOpen: true\n",
                3,
            ),
            (
                "applications:\n  - key: a\n    secret: true\n    authorizeOpen: true\n",
                3,
            ),
        ] {
            let error = error(text);
            let expected = format!("{PATH}: line {line}: value requires quoting");
            assert!(error.starts_with(&expected), "{error}");
            assert!(
                !error.contains("0123"),
                "the file's text is not quoted: {error}"
            );
        }
        assert!(
            parse("applications:\n  - key: \"123\"\n    secret: '0123'\n    authorizeOpen: true\n")
                .is_ok()
        );
        let repeated = error(
            "applications:\n  - key: a\n    key: b\n    secret: s\n    authorizeOpen: true\n",
        );
        assert!(
            repeated.contains("line 3: duplicate mapping key"),
            "{repeated}"
        );
        let listed = error("applications:\n  - [a, s, null, true]\n");
        assert!(listed.contains("line 2: "), "{listed}");
    }

    #[test]
    fn the_gomoob_example_and_the_hashed_form() {
        let applications = parse(
            "applications:\n\
             \x20 - key: application1\n\
             \x20   secret: B4ajW3P7jfWEYPZsQV8mnteHg97G67uW\n\
             \x20   authorizeOpen: true\n\
             \x20 - key: application2\n\
             \x20   secretSha256: 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\n\
             \x20   authorizeOpen: false\n",
        )
        .unwrap();
        assert_eq!(applications.len(), 2);
        let first = applications.get("application1").unwrap();
        assert!(first.authorize_open);
        assert!(first.secret.matches("B4ajW3P7jfWEYPZsQV8mnteHg97G67uW"));
        assert!(!first.secret.matches("B4ajW3P7jfWEYPZsQV8mnteHg97G67u"));
        let second = applications.get("application2").unwrap();
        assert!(!second.authorize_open);
        assert!(second.secret.matches("test"));
        assert!(!second.secret.matches(""));
        assert!(applications.get("application3").is_none());
    }

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/auth.yml"));
        let applications = Applications::load(path).unwrap();
        assert_eq!(applications.len(), 2);
        let hashed = applications.get("application2").unwrap();
        assert!(hashed.secret.matches("33yLWdynhaqm9tYjDFKf8gB8zmAPKdDP"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let applications =
            parse("applications:\n  - key: a\n    secret: s3cr3t-value\n    authorizeOpen: true\n")
                .unwrap();
        let debug = format!("{applications:?}");
        assert!(debug.contains("<hidden>"), "{debug}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    #[test]
    fn an_empty_list_is_valid() {
        assert!(parse("applications: []\n").unwrap().is_empty());
    }

    #[test]
    fn each_problem_names_the_file_the_line_and_the_problem() {
        let cases: [(&str, &str); 15] = [
            ("", "no `applications:` list"),
            ("# only a comment\n", "no `applications:` list"),
            ("apps: []\n", "line 1: unknown field `apps`"),
            ("{}\n", "no `applications:` list"),
            ("applications:\n", "no `applications:` list"),
            ("applications:\n  key: a\n", "line 2: "),
            ("applications:\n  - key: a\n    secret: [s\n", "line 3: "),
            (
                "applications:\n  - key: a\n    secret: s\n    authorizeOpen: maybe\n",
                "line 4: invalid boolean",
            ),
            (
                "applications:\n  - key: a\n    secret: s\n",
                "line 2: application `a` has no `authorizeOpen`",
            ),
            (
                "applications:\n  - secret: s\n    authorizeOpen: true\n",
                "line 2: an application has no `key`",
            ),
            (
                "applications:\n  - key: a\n    secret: s\n    authorizeOpen: true\n  - key: b\n    authorizeOpen: true\n",
                "line 5: application `b` has no `secret`",
            ),
            (
                "applications:\n  - key: a\n    secret: s\n    secretSha256: \"00\"\n    authorizeOpen: true\n",
                "line 2: application `a` has both",
            ),
            (
                "applications:\n  - key: a\n    secretSha256: abc\n    authorizeOpen: true\n",
                "line 3: application `a`: `secretSha256` must be 64 hexadecimal digits",
            ),
            (
                "applications:\n  - key: a\n    secret: s\n    authorizeOpen: true\n  - key: a\n    secret: t\n    authorizeOpen: true\n",
                "line 5: duplicate application key `a` (first defined at line 2)",
            ),
            (
                "applications:\n  - key: a\n    secret: s\n    authorizeOpen: true\n    colour: red\n",
                "line 5: unknown field `colour`",
            ),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(message.starts_with(PATH), "{text:?}: {message}");
            assert!(message.contains(expected), "{text:?}: {message}");
            assert!(!message.contains('\n'), "{text:?}: {message}");
        }
        assert!(error("applications:\n  - key: a\n    secret: s\n    authorizeOpen: true\n  - key: b\n    secret: t\n")
            .contains("line 5: application `b` has no `authorizeOpen`"));
    }

    /// `tokenPublicKey: |` with `pem`, indented under an application.
    fn with_public_key(pem: &str) -> String {
        let mut text = String::from(
            "applications:\n  - key: a\n    secret: s\n    authorizeOpen: true\n    tokenPublicKey: |\n",
        );
        for line in pem.lines() {
            text.push_str(&format!("      {line}\n"));
        }
        text
    }

    const EC_P256: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEQZbf1Sm4naSvZ5Uj4t1tq7stD7Q
TH130rAKb21EOesS0iVxxe9uHLO6Qje8/P0FMyfjvsuenznFA4TprnxPuQ==
-----END PUBLIC KEY-----";
    const ED25519: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAV0j8Jsyw0Rz/Hae6gkeTWdipu7E9TYOlQKyvcaijGsk=
-----END PUBLIC KEY-----";

    #[test]
    fn each_application_has_the_token_key_its_entry_gives() {
        let algorithm = |text: &str| {
            parse(text)
                .unwrap()
                .token_key("a")
                .map(|key| key.algorithm())
                .map_err(|error| error.to_string())
        };
        assert_eq!(algorithm(&with_public_key(EC_P256)), Ok("ES256"));
        assert_eq!(algorithm(&with_public_key(ED25519)), Ok("EdDSA"));
        assert_eq!(
            algorithm("applications:\n  - key: a\n    secret: s\n    authorizeOpen: true\n"),
            Ok("HS256")
        );
        let hashed = format!(
            "applications:\n  - key: a\n    secretSha256: \"{}\"\n    authorizeOpen: true\n",
            "0".repeat(64)
        );
        assert!(
            algorithm(&hashed)
                .unwrap_err()
                .contains("cannot verify tokens")
        );
        assert!(
            parse(&hashed)
                .unwrap()
                .token_key("b")
                .unwrap_err()
                .to_string()
                .contains("not the key of an application")
        );
    }

    #[test]
    fn a_token_public_key_that_cannot_be_used_names_its_line() {
        const P384: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEpycGzKli/MKWtSQNXzMWTwbGn5NBXUwh
rAeClCBhEeR5BJ/0PLyxoYdp1e5mtBGi5nijdPgtiCUTNvkANN+aogBIF51xqQVM
U5m65AOCYCHx3Bt3cPlhKwMRwi3A8V25
-----END PUBLIC KEY-----";
        // A private key where the public one belongs: refused, and never quoted.
        const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIH0h1kS6V6Yh2ZbgW9rYk2Hc0b7bV7w4yQ7e3sR9m2pa
-----END PRIVATE KEY-----";
        for (pem, expected) in [
            ("nope", "not a PEM public key"),
            (PRIVATE, "not a PEM public key"),
            (P384, "must be on the P-256 curve"),
        ] {
            let message = error(&with_public_key(pem));
            assert!(
                message.contains("line 6: application `a`: `tokenPublicKey`: "),
                "{message}"
            );
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("MC4CAQAw"), "{message}");
        }
    }

    #[test]
    fn errors_never_quote_a_secret() {
        let message = error(
            "applications:\n  - key: a\n    secret: s3cr3t-value\n    authorizeOpen: s3cr3t-value\n",
        );
        assert!(message.contains("line 4"), "{message}");
        assert!(!message.contains("s3cr3t"), "{message}");
    }
}
