//! Signed tags' tokens (SPEC §3 "Signed tags"): a JWT (RFC 7519, compact form) that an
//! application's backend makes so that a browser may hold tags it could not choose by itself.
//!
//! A token's header names the application (`kid` = its key) and the algorithm; its claims carry
//! `tags` (an object), `exp` (required), and optionally `nbf` and `iat`. Each application has at
//! most one [`TokenKey`], and a token is verified with exactly the algorithm that key fits:
//! `HS256` with the application's clear secret, or `ES256` / `EdDSA` with its `tokenPublicKey`.
//! Any other `alg` (`none`, `HS384`, an `HS256` token for an application with a public key...)
//! is refused before any signature is computed.
//!
//! [`verify`] is what the server runs at open; [`mint`] is what `tagcast token` and the client
//! library run. Signatures are computed by `jsonwebtoken` on aws-lc-rs (the TLS stack's crypto).
//!
//! Errors never quote the token, nor a key: they are sent to the client and logged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::{Deserialize, Serialize};

use crate::tags::{TagLimits, Tags};

/// Why a token is refused. The `Display` text is the plain-text reason of the HTTP 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, or a header that is not a JSON object.
    #[error("token malformed: {0}")]
    Malformed(&'static str),
    /// The header has no `kid`.
    #[error("token has no `kid` (the application key) in its header")]
    NoKid,
    /// The `kid` is not the key of an application of the auth file.
    #[error("token `kid` is not the key of an application")]
    UnknownKid,
    /// The application has neither a clear secret nor a `tokenPublicKey`.
    #[error(
        "application `{0}` cannot verify tokens: it needs a clear `secret` or a `tokenPublicKey`"
    )]
    NoKey(String),
    /// The header's `alg` is not the one the application's key is for.
    #[error("token alg `{given}` refused: application `{kid}` takes {expected} tokens")]
    Algorithm {
        /// The application.
        kid: String,
        /// The `alg` of the header, as written (shortened).
        given: String,
        /// The algorithm of the application's key.
        expected: &'static str,
    },
    /// The signature does not match the header and claims.
    #[error("token signature invalid")]
    Signature,
    /// `exp`, with the leeway, is past.
    #[error("token expired")]
    Expired,
    /// `nbf`, with the leeway, is ahead.
    #[error("token not yet valid (nbf)")]
    NotYetValid,
    /// The claims are not JSON, lack `exp` or `tags`, or one has the wrong type.
    #[error("token claims invalid: {0}")]
    Claims(String),
    /// A key given to sign with is unusable (minting only).
    #[error("{0}")]
    SigningKey(String),
}

impl TokenError {
    /// True when the token was good but is used outside its time (`exp`, `nbf`).
    pub fn is_timing(&self) -> bool {
        matches!(self, TokenError::Expired | TokenError::NotYetValid)
    }
}

/// What verifies the tokens of one application: its clear secret (HS256) or its public key
/// (ES256 for an EC P-256 key, EdDSA for an Ed25519 key). Its `Debug` shows only the algorithm.
#[derive(Clone)]
pub struct TokenKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

impl TokenKey {
    /// HS256 with an application's clear secret; an empty one is refused.
    pub fn hs256(secret: &str) -> Result<TokenKey, TokenError> {
        Ok(TokenKey {
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(secret.as_bytes()).map_err(|_| empty_secret())?,
        })
    }

    /// ES256 or EdDSA with a PEM public key (`-----BEGIN PUBLIC KEY-----`): an EC P-256 key
    /// or an Ed25519 key. The error says what is wrong, without quoting the text.
    pub fn from_public_pem(pem: &str) -> Result<TokenKey, String> {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ECDSA_P521_SHA512_FIXED, ED25519,
            ParsedPublicKey,
        };
        let not_public = || {
            "not a PEM public key (`-----BEGIN PUBLIC KEY-----`, EC P-256 or Ed25519)".to_owned()
        };
        // aws-lc-rs (what jsonwebtoken verifies with) reads the X.509 SubjectPublicKeyInfo as
        // is: the key is checked here once, by the code that will use it.
        let der =
            SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).map_err(|_| not_public())?;
        let fits = |algorithm| ParsedPublicKey::new(algorithm, der.as_ref()).is_ok();
        let (algorithm, key) = if fits(&ECDSA_P256_SHA256_FIXED) {
            (Algorithm::ES256, DecodingKey::from_ec_der(der.as_ref()))
        } else if fits(&ED25519) {
            (Algorithm::EdDSA, DecodingKey::from_ed_der(der.as_ref()))
        } else if fits(&ECDSA_P384_SHA384_FIXED) || fits(&ECDSA_P521_SHA512_FIXED) {
            return Err("an EC public key must be on the P-256 curve (ES256)".into());
        } else {
            return Err(not_public());
        };
        Ok(TokenKey { algorithm, key })
    }

    /// `HS256`, `ES256` or `EdDSA`: the one `alg` this key verifies.
    pub fn algorithm(&self) -> &'static str {
        algorithm_name(self.algorithm)
    }

    /// The key that makes the tokens this one verifies, when it is a secret (HS256): what
    /// `tagcast token` signs with. `None` for a public key.
    pub fn signing_key(&self) -> Option<SigningKey> {
        if self.algorithm != Algorithm::HS256 {
            return None;
        }
        let secret = self.key.try_get_as_bytes().ok()?;
        Some(SigningKey {
            algorithm: Algorithm::HS256,
            key: EncodingKey::from_secret(secret).ok()?,
        })
    }
}

/// Shows the algorithm only.
impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({})", self.algorithm())
    }
}

fn empty_secret() -> TokenError {
    TokenError::SigningKey("an HS256 secret must not be empty".into())
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        _ => "another algorithm",
    }
}

/// Which time claims a verification checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// At open: `exp` and `nbf` against now, give or take `leeway_s` seconds.
    Now {
        /// Seconds of clock skew allowed (`auth.token_leeway_s`).
        leeway_s: u64,
    },
    /// After an auth reload: only the key and the signature are judged again; a token that
    /// expired since the open does not close its connection.
    Ignored,
}

/// A valid token: whose it is and the tags it signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The application that signed it (`kid`).
    pub kid: String,
    /// Its `tags` claim.
    pub tags: Tags,
}

/// The header fields judged before the signature.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<serde_json::Value>,
    kid: Option<serde_json::Value>,
    /// Extensions the verifier must understand (RFC 7515 §4.1.11): none are, so any is refused.
    crit: Option<serde_json::Value>,
}

/// The claims a token must carry. `exp`, `nbf` and `iat` must be numbers: a string would not
/// deserialize (the check of a mistyped time claim cannot be skipped).
#[derive(Deserialize)]
struct Claims {
    tags: serde_json::Value,
    #[allow(
        dead_code,
        reason = "checked for presence and type; jsonwebtoken checks its time"
    )]
    exp: u64,
    #[allow(dead_code, reason = "checked for type; jsonwebtoken checks its time")]
    nbf: Option<u64>,
    #[allow(dead_code, reason = "checked for type only")]
    iat: Option<u64>,
}

/// The claims a token is made with.
#[derive(Serialize)]
struct MintedClaims<'a> {
    tags: &'a Tags,
    iat: u64,
    exp: u64,
}

/// The `kid` of a compact JWT's header, if it has one: for logs about a refused token.
pub fn key_id(token: &str) -> Option<String> {
    let header = read_header(token).ok()?;
    match header.kid? {
        serde_json::Value::String(kid) => Some(kid),
        _ => None,
    }
}

fn read_header(token: &str) -> Result<RawHeader, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "a JWT has three parts separated by `.`",
        ));
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed("the header is not base64url"))?;
    serde_json::from_slice(&json)
        .map_err(|_| TokenError::Malformed("the header is not a JSON object"))
}

/// Verifies a compact JWT: its `kid` names an application, `key_of` gives that application's
/// key (`Err(UnknownKid)` or `Err(NoKey)` otherwise), its `alg` is exactly the key's, its
/// signature matches, its time claims fit `clock`, and its `tags` claim is a tags object within
/// `limits`.
pub fn verify<'k>(
    token: &str,
    key_of: impl FnOnce(&str) -> Result<&'k TokenKey, TokenError>,
    clock: Clock,
    limits: TagLimits,
) -> Result<Verified, TokenError> {
    let header = read_header(token)?;
    if header.crit.is_some() {
        return Err(TokenError::Malformed(
            "`crit` header extensions are not supported",
        ));
    }
    let kid = match header.kid {
        Some(serde_json::Value::String(kid)) => kid,
        Some(_) => return Err(TokenError::Malformed("`kid` must be a string")),
        None => return Err(TokenError::NoKid),
    };
    let key = key_of(&kid)?;
    let expected = key.algorithm();
    match header.alg {
        Some(serde_json::Value::String(alg)) if alg == expected => {}
        given => {
            let given = match given {
                Some(serde_json::Value::String(alg)) => alg.chars().take(16).collect(),
                _ => "(none given)".into(),
            };
            return Err(TokenError::Algorithm {
                kid,
                given,
                expected,
            });
        }
    }
    let mut validation = Validation::new(key.algorithm);
    validation.validate_aud = false;
    match clock {
        Clock::Now { leeway_s } => {
            validation.leeway = leeway_s;
            validation.validate_exp = true;
            validation.validate_nbf = true;
        }
        Clock::Ignored => {
            validation.validate_exp = false;
            validation.validate_nbf = false;
        }
    }
    let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
        .map_err(|error| refusal(error.into_kind()))?
        .claims;
    let tags = Tags::from_json(&claims.tags, limits)
        .map_err(|error| TokenError::Claims(format!("`tags`: {error}")))?;
    Ok(Verified { kid, tags })
}

/// The refusal for a `jsonwebtoken` error, worded without the token.
fn refusal(kind: jsonwebtoken::errors::ErrorKind) -> TokenError {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) => {
            TokenError::Claims(format!("`{claim}` is required"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            TokenError::Claims(format!("`{claim}` has the wrong type"))
        }
        ErrorKind::Json(error) => TokenError::Claims(error.to_string()),
        ErrorKind::Base64(_) | ErrorKind::InvalidToken | ErrorKind::Utf8(_) => {
            TokenError::Malformed("a part is not base64url JSON")
        }
        _ => TokenError::Malformed("unreadable"),
    }
}

/// What signs tokens: an application's secret (HS256) or a private key (ES256, EdDSA).
pub struct SigningKey {
    algorithm: Algorithm,
    key: EncodingKey,
}

impl SigningKey {
    /// HS256 with an application's secret (the clear one of `auth.yml`); an empty one is
    /// refused.
    pub fn hs256(secret: &str) -> Result<SigningKey, TokenError> {
        Ok(SigningKey {
            algorithm: Algorithm::HS256,
            key: EncodingKey::from_secret(secret.as_bytes()).map_err(|_| empty_secret())?,
        })
    }

    /// ES256 or EdDSA with a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), EC P-256
    /// or Ed25519: the counterpart of an application's `tokenPublicKey`.
    pub fn from_private_pem(pem: &str) -> Result<SigningKey, TokenError> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
        let refused = || {
            TokenError::SigningKey(
                "not a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`, EC P-256 or Ed25519)"
                    .into(),
            )
        };
        // Checked here by aws-lc-rs, which signs with it (jsonwebtoken hands it the same DER).
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| refused())?;
        let der = der.secret_pkcs8_der();
        let (algorithm, key) =
            if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).is_ok() {
                (Algorithm::ES256, EncodingKey::from_ec_der(der))
            } else if Ed25519KeyPair::from_pkcs8(der).is_ok() {
                (Algorithm::EdDSA, EncodingKey::from_ed_der(der))
            } else {
                return Err(refused());
            };
        Ok(SigningKey { algorithm, key })
    }

    /// `HS256`, `ES256` or `EdDSA`.
    pub fn algorithm(&self) -> &'static str {
        algorithm_name(self.algorithm)
    }
}

/// Shows the algorithm only.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.algorithm())
    }
}

/// Makes a token for application `kid` holding `tags`, valid from now for `ttl`
/// (`iat` = now, `exp` = now + `ttl`), signed with `key`.
pub fn mint(kid: &str, key: &SigningKey, tags: &Tags, ttl: Duration) -> Result<String, TokenError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let mut header = Header::new(key.algorithm);
    header.kid = Some(kid.to_owned());
    let claims = MintedClaims {
        tags,
        iat: now,
        exp: now.saturating_add(ttl.as_secs()),
    };
    jsonwebtoken::encode(&header, &claims, &key.key)
        .map_err(|error| TokenError::SigningKey(format!("cannot sign the token: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TagLimits = TagLimits::UNLIMITED;
    const NOW: Clock = Clock::Now { leeway_s: 30 };

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs.iter().copied().collect()
    }

    #[test]
    fn a_minted_hs256_token_verifies_with_the_same_secret_only() {
        let token = mint(
            "app",
            &SigningKey::hs256("s3cret").unwrap(),
            &tags(&[("userId", "42")]),
            Duration::from_secs(60),
        )
        .unwrap();
        let key = TokenKey::hs256("s3cret").unwrap();
        let verified = verify(&token, |_| Ok(&key), NOW, LIMITS).unwrap();
        assert_eq!(verified.kid, "app");
        assert_eq!(verified.tags.get("userId"), Some("42"));
        assert_eq!(key_id(&token).as_deref(), Some("app"));
        let other = TokenKey::hs256("other").unwrap();
        assert_eq!(
            verify(&token, |_| Ok(&other), NOW, LIMITS),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn malformed_tokens_say_why_without_quoting_them() {
        let key = TokenKey::hs256("s").unwrap();
        for (token, expected) in [
            ("", "three parts"),
            ("a.b", "three parts"),
            ("a.b.c.d", "three parts"),
            ("!!.e30.x", "base64url"),
            ("bm9wZQ.e30.x", "JSON object"),
            // {"alg":"HS256","kid":"a","crit":["exp"]}
            (
                "eyJhbGciOiJIUzI1NiIsImtpZCI6ImEiLCJjcml0IjpbImV4cCJdfQ.e30.x",
                "`crit`",
            ),
        ] {
            let refused = verify(token, |_| Ok(&key), NOW, LIMITS).unwrap_err();
            assert!(refused.to_string().contains(expected), "{token}: {refused}");
        }
    }

    #[test]
    fn an_alg_other_than_the_keys_is_refused_before_the_signature() {
        // {"alg":"none","kid":"app"} . {"tags":{},"exp":99999999999} . (no signature)
        let token = "eyJhbGciOiJub25lIiwia2lkIjoiYXBwIn0.eyJ0YWdzIjp7fSwiZXhwIjo5OTk5OTk5OTk5OX0.";
        let key = TokenKey::hs256("s").unwrap();
        let refused = verify(token, |_| Ok(&key), NOW, LIMITS).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "token alg `none` refused: application `app` takes HS256 tokens"
        );
    }

    #[test]
    fn keys_hide_their_material() {
        assert_eq!(
            format!("{:?}", TokenKey::hs256("s3cret").unwrap()),
            "TokenKey(HS256)"
        );
        assert_eq!(
            format!("{:?}", SigningKey::hs256("s3cret").unwrap()),
            "SigningKey(HS256)"
        );
        assert!(SigningKey::hs256("").is_err());
        assert!(TokenKey::hs256("").is_err());
        assert!(TokenKey::from_public_pem("nope").is_err());
        assert!(SigningKey::from_private_pem("nope").is_err());
    }
}
