//! `tagcast.toml` text: `Config::parse` returns a config or an error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tagcast::ops::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, None);
    }
});
