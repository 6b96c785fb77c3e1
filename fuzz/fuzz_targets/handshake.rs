//! The upgrade request head and its `tags` query: `parse_head`, then `check_upgrade` with the
//! default limits and an origin list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tagcast::ops::config::Config;
use tagcast::wire::handshake::{check_upgrade, parse_head};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((head, length))) = parse_head(data) else {
        return;
    };
    assert!(length <= data.len());
    let origins = ["https://example.org".to_owned()];
    let limits = Config::default().limits.tag_limits();
    for allowed in [&origins[..], &[]] {
        if let Ok(upgrade) = check_upgrade(&head, limits, allowed) {
            assert!(upgrade.tags.len() <= limits.max_tags);
        }
    }
});
