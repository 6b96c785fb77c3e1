//! A signed tags' token from a URL: `token::verify` against an HS256, an ES256 and an EdDSA
//! application, with and without its time checked, returns the token's tags or a refusal and
//! never panics; `key_id` (what the logs read) neither.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tagcast::ops::config::Config;
use tagcast::token::{self, Clock, TokenError, TokenKey};

const ES_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEQZbf1Sm4naSvZ5Uj4t1tq7stD7Q
TH130rAKb21EOesS0iVxxe9uHLO6Qje8/P0FMyfjvsuenznFA4TprnxPuQ==
-----END PUBLIC KEY-----
";
const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAV0j8Jsyw0Rz/Hae6gkeTWdipu7E9TYOlQKyvcaijGsk=
-----END PUBLIC KEY-----
";

fn keys() -> &'static [(&'static str, TokenKey); 3] {
    static KEYS: OnceLock<[(&str, TokenKey); 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            ("hs", TokenKey::hs256("fuzz-secret").expect("secret")),
            ("es", TokenKey::from_public_pem(ES_PUBLIC).expect("EC key")),
            ("ed", TokenKey::from_public_pem(ED_PUBLIC).expect("Ed key")),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = token::key_id(text);
    let limits = Config::default().limits.tag_limits();
    let key_of = |kid: &str| {
        keys()
            .iter()
            .find(|(name, _)| *name == kid)
            .map(|(_, key)| key)
            .ok_or(TokenError::UnknownKid)
    };
    for clock in [Clock::Now { leeway_s: 30 }, Clock::Ignored] {
        if let Ok(verified) = token::verify(text, key_of, clock, limits) {
            assert!(verified.tags.len() <= limits.max_tags);
        }
    }
});
