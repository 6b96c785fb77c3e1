//! The inflater of compressed client messages (permessage-deflate) fed arbitrary payloads: it
//! must return at most the limit or a close reason, never panic, loop or allocate past the
//! limit; and what the server compresses must inflate back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tagcast::wire::deflate::{compress, decompress};
use tagcast::wire::frame::close_code;

const MAX_MESSAGE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    match decompress(data, MAX_MESSAGE) {
        Ok(message) => assert!(message.len() <= MAX_MESSAGE),
        Err(close) => assert!(matches!(
            close.code,
            close_code::MESSAGE_TOO_BIG | close_code::INVALID_PAYLOAD
        )),
    }
    assert_eq!(decompress(&compress(data), usize::MAX / 2).unwrap(), data);
});
