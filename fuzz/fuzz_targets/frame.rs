//! `MessageReader` fed arbitrary client bytes in arbitrary chunks: it must return messages or a
//! close reason, never panic, loop or grow past its limit.
#![no_main]

use bytes::BufMut;
use libfuzzer_sys::fuzz_target;
use tagcast::wire::frame::{Incoming, MessageReader};

const MAX_MESSAGE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // First byte: the chunk size and whether binary messages pass.
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x7F).max(1);
    let mut reader = MessageReader::new(MAX_MESSAGE, Default::default());
    if control & 0x80 != 0 {
        reader = reader.accept_binary();
    }
    for piece in bytes.chunks(chunk) {
        reader.read_buffer().put_slice(piece);
        reader.note_read(piece.len());
        loop {
            match reader.next_message() {
                Ok(Some(Incoming::Text(text))) => {
                    assert!(text.len() <= MAX_MESSAGE);
                    assert!(std::str::from_utf8(&text).is_ok());
                }
                Ok(Some(Incoming::Binary(data))) => assert!(data.len() <= MAX_MESSAGE),
                Ok(Some(Incoming::Ping(payload))) => assert!(payload.len() <= 125),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // Buffered bytes are bounded by one frame (header + mask + payload) plus the last read.
        assert!(reader.read_buffer().capacity() <= 2 * (MAX_MESSAGE + 14) + 64 * 1024);
    }
});
