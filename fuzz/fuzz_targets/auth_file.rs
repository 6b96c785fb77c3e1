//! `auth.yml` text: `Applications::parse` returns applications or an error, never panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tagcast::ops::auth::Applications;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Applications::parse(text, Path::new("auth.yml"));
    }
});
