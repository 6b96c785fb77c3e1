//! permessage-deflate (RFC 7692), the shared way: a message is compressed once, and the same
//! compressed frame goes to every recipient that negotiated the extension.
//!
//! That works because tagcast always answers with `server_no_context_takeover`: each message is
//! compressed on its own, from an empty window, so its bytes do not depend on what the recipient
//! received before. The server keeps no compressor per connection. It also answers with
//! `client_no_context_takeover` (RFC 7692 §7.1.1.2 lets a server add it), so each client message
//! is inflated on its own too, and no inflater outlives the message it reads.
//!
//! An offer is accepted when every parameter in it is valid. One that limits the server's window
//! (`server_max_window_bits` below 15) is accepted too, with that limit echoed, but such a
//! client is sent plain frames: the shared frame is compressed once, with the full window, and
//! RFC 7692 lets a sender leave any message uncompressed. Its own compressed messages are read
//! as any other's.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::wire::close::{CloseReason, close_code};

/// The extension token.
const EXTENSION: &str = "permessage-deflate";

/// The `Sec-WebSocket-Extensions` value of the 101 answer when the client's offer is accepted.
const RESPONSE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Messages shorter than this many bytes gain little from deflate and are sent plain: the
/// server's default `messages.compression_min_size`, and the Rust client's threshold for its
/// requests.
pub const DEFAULT_MIN_SIZE: usize = 256;

/// What the server agreed to with one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// The `Sec-WebSocket-Extensions` value of the 101 answer.
    pub response: String,
    /// The client takes the shared compressed frames (it did not limit the server's window).
    pub compressed_frames: bool,
}

/// The four bytes a sync flush ends with, left off the wire (RFC 7692 §7.2.1) and put back
/// before inflating (§7.2.2).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// The agreement for the first valid permessage-deflate offer in the `Sec-WebSocket-Extensions`
/// values, or `None` (the extension is declined).
pub fn negotiate<'a>(extension_headers: impl IntoIterator<Item = &'a str>) -> Option<Agreement> {
    extension_headers
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(agreement)
}

/// One offer: `permessage-deflate` followed by `; name[=value]` parameters.
fn agreement(offer: &str) -> Option<Agreement> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case(EXTENSION))
    {
        return None;
    }
    let mut server_window = None;
    let mut seen: Vec<String> = Vec::new();
    for parameter in parts {
        let (name, value) = match parameter.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (parameter, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None; // §7: a parameter given twice makes the offer invalid.
        }
        let valid = match name.as_str() {
            "server_no_context_takeover" | "client_no_context_takeover" => value.is_none(),
            // The client may use any window: the server inflates with the full one.
            "client_max_window_bits" => value.is_none_or(|bits| window_bits(bits).is_some()),
            "server_max_window_bits" => {
                server_window = value.and_then(window_bits);
                server_window.is_some()
            }
            _ => false,
        };
        if !valid {
            return None;
        }
        seen.push(name);
    }
    Some(match server_window {
        // §7.1.2.1: accepted by answering with the same value.
        Some(bits) => Agreement {
            response: format!("{RESPONSE}; server_max_window_bits={bits}"),
            compressed_frames: bits == 15,
        },
        None => Agreement {
            response: RESPONSE.to_owned(),
            compressed_frames: true,
        },
    })
}

/// A window size parameter: 8 to 15, digits only (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// The payload of a compressed frame holding `message`: a raw deflate stream of it alone,
/// sync-flushed, without the trailing four bytes.
///
/// Each thread keeps one compressor and resets it for every message: the bytes are those of a
/// fresh compressor (nothing of the previous message is kept), without allocating and zeroing
/// zlib's state (a few hundred KiB) each time. No connection holds one.
pub fn compress(message: &[u8]) -> Vec<u8> {
    thread_local! {
        static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    }
    COMPRESSOR.with_borrow_mut(|compressor| {
        compressor.reset();
        let mut output = Vec::with_capacity(message.len() / 2 + 64);
        loop {
            let consumed = compressor.total_in() as usize;
            output.reserve(message.len() - consumed + 64);
            compressor
                .compress_vec(&message[consumed..], &mut output, FlushCompress::Sync)
                .expect("deflate of a whole buffer in memory cannot fail");
            let done = compressor.total_in() as usize == message.len();
            if done && output.ends_with(&SYNC_TAIL) && output.len() < output.capacity() {
                break;
            }
        }
        output.truncate(output.len() - SYNC_TAIL.len());
        output
    })
}

/// The message a compressed payload holds, refused with 1009 as soon as it inflates past
/// `max_size` bytes (a small payload that would inflate to gigabytes is never inflated whole),
/// and with 1007 when it is not a valid deflate stream.
pub fn decompress(payload: &[u8], max_size: usize) -> Result<Vec<u8>, CloseReason> {
    Inflater::new(false).inflate(payload, max_size)
}

/// Inflates one connection's compressed messages, within the limits of [`decompress`].
///
/// Without context takeover (what tagcast negotiates, both ways) each message is inflated from
/// an empty window and nothing is kept between messages. With it, the window of the messages
/// before is kept: a peer whose compressor keeps its context (Node's `ws` by default, read by
/// `tagcast bench`) refers back to it.
pub struct Inflater {
    inner: Decompress,
    takeover: bool,
}

impl Inflater {
    /// An inflater; `takeover` keeps the window from one message to the next.
    pub fn new(takeover: bool) -> Inflater {
        Inflater {
            inner: Decompress::new(false),
            takeover,
        }
    }

    /// The message `payload` holds (see [`decompress`] for the limits and the errors).
    pub fn inflate(&mut self, payload: &[u8], max_size: usize) -> Result<Vec<u8>, CloseReason> {
        if !self.takeover {
            self.inner.reset(false);
        }
        let mut input = Vec::with_capacity(payload.len() + SYNC_TAIL.len());
        input.extend_from_slice(payload);
        input.extend_from_slice(&SYNC_TAIL);
        let inflater = &mut self.inner;
        // The totals count every message this inflater read: the message starts here.
        let start = inflater.total_in();
        let mut output: Vec<u8> = Vec::new();
        loop {
            if output.len() == output.capacity() {
                // Grows by doubling, never past one byte over the limit: that byte tells a
                // message of exactly `max_size` from a larger one.
                let room = output.len().max(1024).min(max_size + 1 - output.len());
                output.reserve_exact(room);
            }
            let (read, written) = (inflater.total_in(), inflater.total_out());
            let consumed = (read - start) as usize;
            let status = inflater
                .decompress_vec(&input[consumed..], &mut output, FlushDecompress::Sync)
                .map_err(|_| invalid())?;
            if output.len() > max_size {
                return Err(CloseReason::new(
                    close_code::MESSAGE_TOO_BIG,
                    format!("message larger than {max_size} bytes once inflated"),
                ));
            }
            let consumed_all = (inflater.total_in() - start) as usize == input.len();
            let room_left = output.len() < output.capacity();
            match status {
                // A final block (BFINAL) ended the stream: what may follow is the tail we
                // added, and the next message starts a new stream.
                Status::StreamEnd => {
                    inflater.reset(false);
                    return Ok(output);
                }
                _ if consumed_all && room_left => return Ok(output),
                _ if room_left
                    && (read, written) == (inflater.total_in(), inflater.total_out()) =>
                {
                    return Err(invalid());
                }
                _ => {}
            }
        }
    }
}

fn invalid() -> CloseReason {
    CloseReason::new(
        close_code::INVALID_PAYLOAD,
        "compressed message is not a valid deflate stream",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compressed_frames(offer: &str) -> Option<bool> {
        negotiate([offer]).map(|agreement| agreement.compressed_frames)
    }

    #[test]
    fn browser_offers_are_accepted_for_compressed_frames() {
        // Chromium's and Firefox's offer.
        assert_eq!(
            compressed_frames("permessage-deflate; client_max_window_bits"),
            Some(true)
        );
        assert_eq!(compressed_frames("permessage-deflate"), Some(true));
        let full = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                    client_max_window_bits=10; server_max_window_bits=15";
        assert_eq!(
            negotiate([full]).unwrap().response,
            format!("{RESPONSE}; server_max_window_bits=15")
        );
        assert_eq!(
            negotiate(["permessage-deflate"]).unwrap().response,
            RESPONSE
        );
    }

    #[test]
    fn a_smaller_server_window_is_accepted_and_echoed_but_gets_plain_frames() {
        let agreement = negotiate(["permessage-deflate; server_max_window_bits=9"]).unwrap();
        assert_eq!(
            agreement.response,
            format!("{RESPONSE}; server_max_window_bits=9")
        );
        assert!(!agreement.compressed_frames);
    }

    #[test]
    fn invalid_offers_are_declined() {
        for offer in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=0x9",
            "permessage-deflate; unknown_parameter",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(negotiate([offer]), None, "{offer}");
        }
        assert_eq!(negotiate([]), None);
    }

    #[test]
    fn a_later_offer_is_taken_when_the_first_is_invalid() {
        let agreement =
            negotiate(["permessage-deflate; server_max_window_bits=99, permessage-deflate"]);
        assert_eq!(agreement.unwrap().response, RESPONSE);
        assert!(negotiate(["foo", "permessage-deflate"]).is_some());
    }

    #[test]
    fn compressed_messages_inflate_back_whatever_their_size() {
        for size in [0, 1, 100, 600, 70_000, 1_000_000] {
            let message: Vec<u8> = (0..size).map(|i| b"{\"tagcast\":1}"[i % 13]).collect();
            let compressed = compress(&message);
            assert!(!compressed.ends_with(&SYNC_TAIL) || compressed.len() < 4);
            assert_eq!(decompress(&compressed, usize::MAX / 2).unwrap(), message);
        }
    }

    #[test]
    fn the_same_message_compresses_to_the_same_bytes() {
        let message = br#"{"type":"order","id":42,"items":[1,2,3]}"#.repeat(20);
        assert_eq!(compress(&message), compress(&message));
        assert!(compress(&message).len() * 3 < message.len());
    }

    #[test]
    fn a_message_compresses_as_with_a_fresh_compressor_whatever_came_before() {
        let message = br#"{"type":"order","id":7,"items":[4,5,6]}"#.repeat(10);
        let mut fresh = Vec::with_capacity(1024);
        Compress::new(Compression::fast(), false)
            .compress_vec(&message, &mut fresh, FlushCompress::Sync)
            .unwrap();
        fresh.truncate(fresh.len() - SYNC_TAIL.len());
        compress(&b"something else entirely".repeat(50));
        assert_eq!(compress(&message), fresh);
    }

    #[test]
    fn a_bomb_is_refused_with_1009_without_being_inflated_whole() {
        let mut compressor = Compress::new(Compression::best(), false);
        let mut bomb = Vec::with_capacity(100_000);
        compressor
            .compress_vec(&vec![b'a'; 10_000_000], &mut bomb, FlushCompress::Sync)
            .unwrap();
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let refused = decompress(&bomb, 65_536).unwrap_err();
        assert_eq!(refused.code, close_code::MESSAGE_TOO_BIG);
        assert_eq!(
            decompress(&compress(&[b'a'; 65_536]), 65_536)
                .unwrap()
                .len(),
            65_536
        );
    }

    #[test]
    fn garbage_is_refused_with_1007() {
        let refused = decompress(&[0xFF, 0xFF, 0xFF, 0x00, 0x12], 65_536).unwrap_err();
        assert_eq!(refused.code, close_code::INVALID_PAYLOAD);
    }

    #[test]
    fn with_context_takeover_later_messages_refer_to_earlier_ones() {
        // What a peer keeping its compressor's context sends: one stream, sync-flushed per
        // message, the tail left off each.
        let mut compressor = Compress::new(Compression::default(), false);
        let message = br#"{"type":"notification","items":[1,2,3]}"#.repeat(4);
        let mut inflater = Inflater::new(true);
        let mut sizes = Vec::new();
        for _ in 0..3 {
            let mut payload = Vec::with_capacity(1024);
            compressor
                .compress_vec(&message, &mut payload, FlushCompress::Sync)
                .unwrap();
            payload.truncate(payload.len() - SYNC_TAIL.len());
            sizes.push(payload.len());
            assert_eq!(inflater.inflate(&payload, 1024).unwrap(), message);
        }
        assert!(sizes[1] < sizes[0] / 2, "{sizes:?}");
        // Without takeover the second message cannot be read: it refers to the first.
        let mut payload = Vec::with_capacity(1024);
        compressor
            .compress_vec(&message, &mut payload, FlushCompress::Sync)
            .unwrap();
        payload.truncate(payload.len() - SYNC_TAIL.len());
        assert!(decompress(&payload, 1024).is_err());
    }

    #[test]
    fn a_final_block_ends_the_message() {
        // What a client with BFINAL set sends: a complete raw deflate stream.
        let mut compressor = Compress::new(Compression::default(), false);
        let mut stream = Vec::with_capacity(256);
        compressor
            .compress_vec(b"hello", &mut stream, FlushCompress::Finish)
            .unwrap();
        assert_eq!(decompress(&stream, 1024).unwrap(), b"hello");
    }
}
