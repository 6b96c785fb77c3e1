//! RFC 6455 framing: server frames are built once and shared, client frames are parsed and
//! reassembled into messages.
//!
//! Server frames are never masked, so one encoded frame (header and payload in one [`Bytes`]) is
//! identical for every recipient: the hub builds it once per request and hands out reference
//! counts. [`MessageReader`] turns the bytes a client sends into whole messages and control frames,
//! enforcing every rule a server must check (masking, reserved bits, opcodes, control frame sizes,
//! fragmentation, UTF-8, the size limit), each failure mapped to its close code.
use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::wire::deflate;

pub use crate::wire::close::{CloseReason, close_code};

/// The longest close reason a close frame can carry (125 bytes of payload minus the code).
pub const MAX_CLOSE_REASON: usize = 123;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The FIN bit of a frame's first byte.
const FIN: u8 = 0x80;
/// RSV1: the message is compressed (permessage-deflate, RFC 7692 §6).
const RSV1: u8 = 0x40;

/// Builds one unmasked server frame with FIN set.
fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    encode_first(FIN | opcode, payload)
}

/// Builds one unmasked server frame whose first byte is `first`.
fn encode_first(first: u8, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 10);
    put_header(&mut frame, first, 0, payload.len());
    frame.put_slice(payload);
    frame.freeze()
}

/// First byte of a whole text frame (FIN and the text opcode).
pub const TEXT: u8 = FIN | OP_TEXT;
/// First byte of a pong frame.
pub const PONG: u8 = FIN | OP_PONG;
/// The MASK bit of a frame's second byte: set on every client frame.
const MASKED: u8 = 0x80;

/// Appends a frame header: `first` (FIN, RSV1, opcode), then `length` in its shortest form,
/// the second byte or-ed with `mask_bit` ([`MASKED`] for a client frame, 0 for a server's).
fn put_header(out: &mut impl BufMut, first: u8, mask_bit: u8, length: usize) {
    out.put_u8(first);
    match length {
        0..=125 => out.put_u8(mask_bit | length as u8),
        126..=0xFFFF => {
            out.put_u8(mask_bit | 126);
            out.put_u16(length as u16);
        }
        _ => {
            out.put_u8(mask_bit | 127);
            out.put_u64(length as u64);
        }
    }
}

/// Appends one masked client frame to `out` (what a client sends: the load tool, the tests):
/// `first` is the byte holding FIN, RSV1 and the opcode (e.g. [`TEXT`]).
pub fn push_masked_frame(out: &mut Vec<u8>, first: u8, payload: &[u8], mask: [u8; 4]) {
    put_header(out, first, MASKED, payload.len());
    out.extend_from_slice(&mask);
    out.extend(
        payload
            .iter()
            .zip(mask.iter().cycle())
            .map(|(byte, key)| byte ^ key),
    );
}

/// The payload length a frame declares and the length of its header before any mask (2, 4 or
/// 10 bytes), read from the start of `buffer`; `None` until those bytes have arrived.
pub fn declared_length(buffer: &[u8]) -> Option<(u64, usize)> {
    match buffer.get(1)? & 0x7F {
        126 => Some((
            u16::from_be_bytes(buffer.get(2..4)?.try_into().ok()?).into(),
            4,
        )),
        127 => Some((u64::from_be_bytes(buffer.get(2..10)?.try_into().ok()?), 10)),
        length => Some((length.into(), 2)),
    }
}

/// A text frame holding `text`.
pub fn text_frame(text: &str) -> Bytes {
    encode(OP_TEXT, text.as_bytes())
}

/// First byte of a whole text frame holding a compressed message (FIN, RSV1 and the text opcode).
pub const COMPRESSED_TEXT: u8 = FIN | RSV1 | OP_TEXT;

/// A text frame holding a message compressed by [`deflate::compress`](crate::wire::deflate::compress)
/// (RSV1 set): the same bytes for every recipient that negotiated permessage-deflate.
pub fn compressed_text_frame(deflated: &[u8]) -> Bytes {
    encode_first(COMPRESSED_TEXT, deflated)
}

/// The frames of one message, each built once for all its recipients: the plain one, and the
/// compressed one when some recipient negotiated permessage-deflate.
#[derive(Debug, Clone)]
pub struct MessageFrames {
    plain: Bytes,
    compressed: Option<Bytes>,
}

impl MessageFrames {
    /// The frames of a text message; `compress` also builds the compressed one.
    pub fn text(text: &str, compress: bool) -> MessageFrames {
        MessageFrames {
            plain: text_frame(text),
            compressed: compress
                .then(|| compressed_text_frame(&deflate::compress(text.as_bytes()))),
        }
    }

    /// The plain frame.
    pub fn plain(&self) -> &Bytes {
        &self.plain
    }

    /// The compressed frame, when it was built.
    pub fn compressed(&self) -> Option<&Bytes> {
        self.compressed.as_ref()
    }

    /// The frame for a recipient that negotiated permessage-deflate (`deflate`) or not.
    pub fn for_recipient(&self, deflate: bool) -> &Bytes {
        match &self.compressed {
            Some(compressed) if deflate => compressed,
            _ => &self.plain,
        }
    }
}

/// A binary frame holding `payload` (tagcast itself never sends one; the Autobahn echo server
/// does).
pub fn binary_frame(payload: &[u8]) -> Bytes {
    encode(OP_BINARY, payload)
}

/// A pong answering a ping with `payload`.
pub fn pong_frame(payload: &[u8]) -> Bytes {
    encode(OP_PONG, payload)
}

/// A close frame with `code` and `reason`, the reason cut at a character boundary to fit.
pub fn close_frame(close: &CloseReason) -> Bytes {
    let reason = truncate_reason(&close.reason);
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&close.code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    encode(OP_CLOSE, &payload)
}

/// Cuts `reason` to at most [`MAX_CLOSE_REASON`] bytes without splitting a character.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// What a client sent, once reassembled.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A whole text message, valid UTF-8.
    Text(Bytes),
    /// A whole binary message (only with [`MessageReader::accept_binary`]).
    Binary(Bytes),
    /// A ping, to be answered with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong (ignored).
    Pong,
    /// A close frame; `None` when it carried no code.
    Close(Option<CloseReason>),
}

/// Reassembles client frames into messages, enforcing RFC 6455 and the size limit.
///
/// Feed it the bytes read from the socket with [`MessageReader::read_buffer`], then call
/// [`MessageReader::next_message`] until it returns `Ok(None)` (more bytes needed).
pub struct MessageReader {
    buffer: BytesMut,
    /// A fragmented message being assembled.
    fragments: Option<BytesMut>,
    /// The message being assembled is text (checked as UTF-8), not binary.
    fragments_are_text: bool,
    /// The message being assembled is compressed (RSV1 on its first frame).
    fragments_compressed: bool,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    deflate: bool,
    /// Binary messages are passed on instead of closing with 1003.
    binary: bool,
    /// How many bytes of `fragments` are known to be valid UTF-8.
    validated: usize,
    max_message: usize,
    /// Free room in the buffer before the last read.
    spare_before_read: usize,
    /// The room to offer the next read: doubled each time a read fills the buffer (the client
    /// is streaming, more is waiting), back to [`IDLE_READ_BUFFER`] when one does not.
    read_size: usize,
}

/// Capacity of the read buffer of an idle connection.
pub const IDLE_READ_BUFFER: usize = 256;
/// The most one read asks for while a client streams.
const MAX_READ_CHUNK: usize = 64 * 1024;

impl MessageReader {
    /// A reader refusing frames and messages over `max_message` bytes, starting with the bytes
    /// already read past the handshake.
    pub fn new(max_message: usize, leftover: BytesMut) -> MessageReader {
        MessageReader {
            buffer: leftover,
            fragments: None,
            fragments_are_text: true,
            fragments_compressed: false,
            deflate: false,
            binary: false,
            validated: 0,
            max_message,
            spare_before_read: 0,
            read_size: IDLE_READ_BUFFER,
        }
    }

    /// Passes binary messages on as [`Incoming::Binary`] instead of refusing them with 1003. The
    /// daemon speaks text only; the Autobahn echo server echoes both.
    pub fn accept_binary(mut self) -> MessageReader {
        self.binary = true;
        self
    }

    /// Reads messages compressed with permessage-deflate (negotiated at the handshake): RSV1 on
    /// a message's first frame is then allowed, and the message is inflated within the size
    /// limit.
    pub fn with_deflate(mut self, deflate: bool) -> MessageReader {
        self.deflate = deflate;
        self
    }

    /// The buffer to read socket bytes into. A client that streams gets room for up to
    /// 64 KiB per read, so one read brings many requests; once everything read was consumed,
    /// a buffer larger than the next read needs (grown for a large frame, or while the client
    /// streamed) drops back to a small allocation: an idle connection holds little memory.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        if self.buffer.capacity() - self.buffer.len() < self.read_size / 2 {
            // May take back the whole allocation a large frame was split from.
            self.buffer.reserve(self.read_size);
        }
        let needed = match self.read_size {
            IDLE_READ_BUFFER => IDLE_READ_BUFFER,
            streaming => 2 * streaming,
        };
        if self.buffer.is_empty() && self.fragments.is_none() && self.buffer.capacity() > needed {
            self.buffer = BytesMut::with_capacity(self.read_size);
        }
        self.spare_before_read = self.buffer.capacity() - self.buffer.len();
        &mut self.buffer
    }

    /// Records how many bytes the last read into [`MessageReader::read_buffer`] returned.
    pub fn note_read(&mut self, read: usize) {
        self.read_size = if read >= self.spare_before_read {
            (self.read_size * 2).min(MAX_READ_CHUNK)
        } else {
            IDLE_READ_BUFFER
        };
    }

    /// True when bytes read are still waiting in the buffer: (part of) a next frame.
    pub fn has_unread(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// The next complete message or control frame in the buffer, `Ok(None)` when more bytes are
    /// needed, or the close code and reason the connection must be closed with.
    pub fn next_message(&mut self) -> Result<Option<Incoming>, CloseReason> {
        loop {
            let Some(frame) = self.next_frame()? else {
                return Ok(None);
            };
            if let Some(incoming) = self.assemble(frame)? {
                return Ok(Some(incoming));
            }
        }
    }

    /// Splits one whole frame off the buffer and unmasks it.
    fn next_frame(&mut self) -> Result<Option<Frame>, CloseReason> {
        let buffer = &self.buffer[..];
        if buffer.len() < 2 {
            return Ok(None);
        }
        let (first, second) = (buffer[0], buffer[1]);
        let fin = first & FIN != 0;
        let opcode = first & 0x0F;
        let compressed = first & RSV1 != 0;
        if first & 0x30 != 0 || (compressed && !self.deflate) {
            return Err(protocol_error("reserved bits set without an extension"));
        }
        if compressed && !matches!(opcode, OP_TEXT | OP_BINARY) {
            return Err(protocol_error(
                "only the first frame of a data message may be marked compressed",
            ));
        }
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(protocol_error("unknown opcode"));
        }
        if second & MASKED == 0 {
            return Err(protocol_error("client frames must be masked"));
        }
        let Some((length, header_length)) = declared_length(buffer) else {
            return Ok(None);
        };
        if length >> 63 != 0 {
            return Err(protocol_error("frame length has its top bit set"));
        }
        let is_control = opcode >= OP_CLOSE;
        if is_control && (length > 125 || !fin) {
            return Err(protocol_error(
                "control frames must be whole and at most 125 bytes",
            ));
        }
        if length > self.max_message as u64 {
            return Err(too_big(self.max_message));
        }
        let total = header_length + 4 + length as usize;
        if self.buffer.len() < total {
            self.buffer.reserve(total - self.buffer.len());
            return Ok(None);
        }
        let mut frame = self.buffer.split_to(total);
        frame.advance(header_length);
        let mask: [u8; 4] = frame[..4].try_into().expect("4 bytes");
        frame.advance(4);
        unmask(&mut frame, mask);
        Ok(Some(Frame {
            fin,
            opcode,
            compressed,
            payload: frame,
        }))
    }

    /// Adds a frame to the message being assembled; returns what is complete.
    fn assemble(&mut self, frame: Frame) -> Result<Option<Incoming>, CloseReason> {
        let Frame {
            fin,
            opcode,
            compressed,
            payload,
        } = frame;
        match opcode {
            OP_PING => Ok(Some(Incoming::Ping(payload.freeze()))),
            OP_PONG => Ok(Some(Incoming::Pong)),
            OP_CLOSE => parse_close(&payload).map(|close| Some(Incoming::Close(close))),
            OP_BINARY if !self.binary => Err(CloseReason::new(
                close_code::UNSUPPORTED_DATA,
                "binary frames are not supported: send JSON text",
            )),
            OP_TEXT | OP_BINARY if self.fragments.is_some() => Err(protocol_error(
                "a new message started before the fragmented one ended",
            )),
            OP_TEXT | OP_BINARY if fin => self.whole(opcode == OP_TEXT, compressed, payload, false),
            OP_TEXT | OP_BINARY => {
                self.fragments_are_text = opcode == OP_TEXT;
                self.fragments_compressed = compressed;
                self.validated = if self.fragments_are_text && !compressed {
                    validate_utf8(&payload, false)?
                } else {
                    0
                };
                self.fragments = Some(payload);
                Ok(None)
            }
            _ => {
                let Some(message) = self.fragments.as_mut() else {
                    return Err(protocol_error("continuation frame without a message"));
                };
                if message.len() + payload.len() > self.max_message {
                    return Err(too_big(self.max_message));
                }
                message.extend_from_slice(&payload);
                if self.fragments_are_text && !self.fragments_compressed {
                    self.validated += validate_utf8(&message[self.validated..], fin)?;
                }
                if !fin {
                    return Ok(None);
                }
                self.validated = 0;
                let Some(message) = self.fragments.take() else {
                    return Ok(None);
                };
                let checked = !self.fragments_compressed;
                self.whole(
                    self.fragments_are_text,
                    self.fragments_compressed,
                    message,
                    checked,
                )
            }
        }
    }

    /// A complete data message: inflated when compressed, checked as UTF-8 when text unless
    /// `utf8_checked` (a fragmented uncompressed text is checked as it comes).
    fn whole(
        &self,
        text: bool,
        compressed: bool,
        message: BytesMut,
        utf8_checked: bool,
    ) -> Result<Option<Incoming>, CloseReason> {
        let message = if compressed {
            Bytes::from(deflate::decompress(&message, self.max_message)?)
        } else {
            message.freeze()
        };
        if !text {
            return Ok(Some(Incoming::Binary(message)));
        }
        if !utf8_checked {
            validate_utf8(&message, true)?;
        }
        Ok(Some(Incoming::Text(message)))
    }
}

struct Frame {
    fin: bool,
    opcode: u8,
    compressed: bool,
    payload: BytesMut,
}

fn protocol_error(reason: &'static str) -> CloseReason {
    CloseReason::new(close_code::PROTOCOL_ERROR, reason)
}

fn too_big(max: usize) -> CloseReason {
    CloseReason::new(
        close_code::MESSAGE_TOO_BIG,
        format!("message larger than {max} bytes"),
    )
}

/// Unmasks a client frame's payload in place with its masking key (masking is the same XOR).
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes(chunk.try_into().expect("4 bytes")) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// Checks UTF-8 and returns how many bytes are valid. With `complete` false, a character cut at
/// the end is allowed (it continues in the next fragment); a truly invalid sequence fails at once.
fn validate_utf8(bytes: &[u8], complete: bool) -> Result<usize, CloseReason> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Ok(bytes.len()),
        Err(error) if !complete && error.error_len().is_none() => Ok(error.valid_up_to()),
        Err(_) => Err(CloseReason::new(
            close_code::INVALID_PAYLOAD,
            "text frame is not valid UTF-8",
        )),
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<CloseReason>, CloseReason> {
    match payload {
        [] => Ok(None),
        [_] => Err(protocol_error("close frame with a one-byte payload")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(protocol_error("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| {
                CloseReason::new(close_code::INVALID_PAYLOAD, "close reason is not UTF-8")
            })?;
            Ok(Some(CloseReason::new(code, reason.to_owned())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        push_masked_frame(&mut frame, first, payload, [1, 2, 3, 4]);
        frame
    }

    fn read_all(bytes: &[u8], max: usize) -> Vec<Result<Incoming, CloseReason>> {
        read_all_with(MessageReader::new(max, BytesMut::new()), bytes)
    }

    fn read_all_deflated(bytes: &[u8], max: usize) -> Vec<Result<Incoming, CloseReason>> {
        read_all_with(
            MessageReader::new(max, BytesMut::new()).with_deflate(true),
            bytes,
        )
    }

    fn read_all_with(
        mut reader: MessageReader,
        bytes: &[u8],
    ) -> Vec<Result<Incoming, CloseReason>> {
        let mut out = Vec::new();
        // Feed one byte at a time: every split point must work.
        for byte in bytes {
            reader.read_buffer().put_u8(*byte);
            loop {
                match reader.next_message() {
                    Ok(Some(incoming)) => out.push(Ok(incoming)),
                    Ok(None) => break,
                    Err(close) => {
                        out.push(Err(close));
                        return out;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn text_ping_and_fragments() {
        let mut bytes = client_frame(0x81, "héllo".as_bytes());
        bytes.extend(client_frame(0x89, b"p"));
        bytes.extend(client_frame(0x01, &"é".as_bytes()[..1]));
        bytes.extend(client_frame(0x8A, b""));
        bytes.extend(client_frame(0x80, &"é".as_bytes()[1..]));
        assert_eq!(
            read_all(&bytes, 100),
            vec![
                Ok(Incoming::Text(Bytes::from("héllo"))),
                Ok(Incoming::Ping(Bytes::from("p"))),
                Ok(Incoming::Pong),
                Ok(Incoming::Text(Bytes::from("é"))),
            ]
        );
    }

    #[test]
    fn binary_messages_pass_only_when_accepted() {
        let mut bytes = client_frame(0x82, &[0xFF, 0x00]);
        bytes.extend(client_frame(0x02, &[0xC3]));
        bytes.extend(client_frame(0x89, b"p"));
        bytes.extend(client_frame(0x80, &[0xFF]));
        let mut reader = MessageReader::new(10, BytesMut::from(&bytes[..])).accept_binary();
        let mut out = Vec::new();
        while let Some(incoming) = reader.next_message().unwrap() {
            out.push(incoming);
        }
        assert_eq!(
            out,
            vec![
                Incoming::Binary(Bytes::from_static(&[0xFF, 0x00])),
                Incoming::Ping(Bytes::from("p")),
                Incoming::Binary(Bytes::from_static(&[0xC3, 0xFF])),
            ]
        );
        // A text message may not start inside a fragmented binary one.
        let mut bytes = client_frame(0x02, b"a");
        bytes.extend(client_frame(0x81, b"b"));
        let mut reader = MessageReader::new(10, BytesMut::from(&bytes[..])).accept_binary();
        assert_eq!(reader.next_message().unwrap_err().code, 1002);
    }

    #[test]
    fn long_lengths() {
        let payload = "x".repeat(70_000);
        let out = read_all(&client_frame(0x81, payload.as_bytes()), 100_000);
        assert_eq!(out, vec![Ok(Incoming::Text(Bytes::from(payload)))]);
    }

    fn first_error(bytes: &[u8], max: usize) -> u16 {
        match read_all(bytes, max).pop() {
            Some(Err(close)) => close.code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn every_violation_has_its_code() {
        assert_eq!(first_error(&client_frame(0x82, b"x"), 10), 1003);
        assert_eq!(first_error(&client_frame(0x83, b"x"), 10), 1002);
        assert_eq!(first_error(&client_frame(0xC1, b"x"), 10), 1002);
        assert_eq!(first_error(&client_frame(0x80, b"x"), 10), 1002);
        assert_eq!(first_error(&client_frame(0x09, b"x"), 10), 1002);
        assert_eq!(first_error(&client_frame(0x81, &[0xFF]), 10), 1007);
        assert_eq!(first_error(&client_frame(0x81, &[0u8; 11]), 10), 1009);
        assert_eq!(first_error(&client_frame(0x88, &[3, 0xE8, 0xFF]), 10), 1007);
        assert_eq!(first_error(&client_frame(0x88, &[0x03]), 10), 1002);
        assert_eq!(first_error(&client_frame(0x88, &[0x03, 0xEC]), 10), 1002);
        // Unmasked.
        assert_eq!(first_error(&[0x81, 0x01, b'x'], 10), 1002);
        // A 100 MB declared length is refused from the header alone.
        let mut huge = vec![0x81, 0x80 | 127];
        huge.extend_from_slice(&100_000_000u64.to_be_bytes());
        assert_eq!(first_error(&huge, 65536), 1009);
        // Fragments that add up past the limit.
        let mut bytes = client_frame(0x01, &[b'a'; 8]);
        bytes.extend(client_frame(0x80, &[b'a'; 8]));
        assert_eq!(first_error(&bytes, 10), 1009);
        // Invalid UTF-8 in a first fragment fails before the message ends.
        assert_eq!(
            first_error(&client_frame(0x01, &[b'a', 0xC0, 0x80]), 10),
            1007
        );
    }

    #[test]
    fn close_frames() {
        let out = read_all(&client_frame(0x88, &[0x03, 0xE8, b'o', b'k']), 10);
        assert_eq!(
            out,
            vec![Ok(Incoming::Close(Some(CloseReason::new(1000, "ok"))))]
        );
        assert_eq!(
            read_all(&client_frame(0x88, &[]), 10),
            vec![Ok(Incoming::Close(None))]
        );
    }

    #[test]
    fn server_frames() {
        assert_eq!(&text_frame("hi")[..], &[0x81, 2, b'h', b'i']);
        assert_eq!(&text_frame(&"x".repeat(200))[..4], &[0x81, 126, 0, 200]);
        let close = close_frame(&CloseReason::new(4400, "é".repeat(100)));
        assert_eq!(close[1] as usize, 2 + 122);
        assert_eq!(&close[2..4], &4400u16.to_be_bytes());
    }

    #[test]
    fn the_read_buffer_grows_while_a_client_streams_and_shrinks_when_it_pauses() {
        let mut reader = MessageReader::new(1 << 20, BytesMut::new());
        let mut offered = Vec::new();
        for _ in 0..12 {
            // Each read fills the room it was given: the client has more waiting.
            let buffer = reader.read_buffer();
            let room = buffer.capacity() - buffer.len();
            offered.push(room);
            buffer.put_bytes(0x81, room);
            reader.note_read(room);
            reader.buffer.clear();
        }
        assert!(offered[0] >= IDLE_READ_BUFFER / 2 && offered[0] < 1024);
        assert!(offered.windows(2).all(|pair| pair[1] >= pair[0]));
        assert!(*offered.last().unwrap() >= MAX_READ_CHUNK / 2);
        // A read that does not fill it: the client paused; the next read gets a small buffer.
        reader.read_buffer().put_u8(0x81);
        reader.note_read(1);
        reader.buffer.clear();
        assert!(reader.read_buffer().capacity() <= IDLE_READ_BUFFER);
    }

    #[test]
    fn the_read_buffer_shrinks_after_one_large_message() {
        let payload = vec![b'x'; 60_000];
        let mut wire = Vec::new();
        push_masked_frame(&mut wire, TEXT, &payload, [1, 2, 3, 4]);
        let mut reader = MessageReader::new(1 << 20, BytesMut::new());
        let mut sent = 0;
        let mut messages = 0;
        while sent < wire.len() {
            let buffer = reader.read_buffer();
            let room = (buffer.capacity() - buffer.len()).min(wire.len() - sent);
            buffer.put_slice(&wire[sent..sent + room]);
            reader.note_read(room);
            sent += room;
            while let Some(message) = reader.next_message().unwrap() {
                assert!(matches!(message, Incoming::Text(text) if text.len() == 60_000));
                messages += 1;
            }
        }
        assert_eq!(messages, 1);
        // The client is quiet now: the next read waits in a small buffer.
        assert!(reader.read_buffer().capacity() <= 4 * IDLE_READ_BUFFER);
    }

    #[test]
    fn a_compressed_message_is_inflated_whole_or_fragmented() {
        let text = r#"{"message":"Bonjour !","tags":{"language":"FR"}}"#.repeat(10);
        let deflated = deflate::compress(text.as_bytes());
        let whole = client_frame(0x80 | RSV1 | OP_TEXT, &deflated);
        assert_eq!(
            read_all_deflated(&whole, 65_536),
            vec![Ok(Incoming::Text(Bytes::from(text.clone())))]
        );
        let (first, rest) = deflated.split_at(deflated.len() / 2);
        let mut fragmented = client_frame(RSV1 | OP_TEXT, first);
        fragmented.extend(client_frame(0x80 | OP_PING, b"p"));
        fragmented.extend(client_frame(0x80 | OP_CONTINUATION, rest));
        assert_eq!(
            read_all_deflated(&fragmented, 65_536),
            vec![
                Ok(Incoming::Ping(Bytes::from_static(b"p"))),
                Ok(Incoming::Text(Bytes::from(text)))
            ]
        );
    }

    #[test]
    fn rsv1_is_refused_where_it_does_not_belong() {
        let deflated = deflate::compress(b"hello");
        let compressed = client_frame(0x80 | RSV1 | OP_TEXT, &deflated);
        let refused = read_all(&compressed, 1024);
        assert_eq!(
            refused[0].as_ref().unwrap_err().code,
            close_code::PROTOCOL_ERROR
        );
        for bad in [
            client_frame(0x80 | RSV1 | OP_PING, b""),
            [
                client_frame(OP_TEXT, b"a"),
                client_frame(0x80 | RSV1, &deflated),
            ]
            .concat(),
            client_frame(0x80 | 0x20 | OP_TEXT, b"a"),
        ] {
            let refused = read_all_deflated(&bad, 1024);
            assert_eq!(
                refused.last().unwrap().as_ref().unwrap_err().code,
                close_code::PROTOCOL_ERROR
            );
        }
    }

    #[test]
    fn a_compressed_message_over_the_limit_once_inflated_is_refused_with_1009() {
        let deflated = deflate::compress(&[b'x'; 5000]);
        assert!(deflated.len() < 1000);
        let refused = read_all_deflated(&client_frame(0x80 | RSV1 | OP_TEXT, &deflated), 1000);
        assert_eq!(
            refused[0].as_ref().unwrap_err().code,
            close_code::MESSAGE_TOO_BIG
        );
    }

    #[test]
    fn a_compressed_text_that_is_not_utf8_is_refused_with_1007() {
        let deflated = deflate::compress(&[0xC3, 0x28]);
        let refused = read_all_deflated(&client_frame(0x80 | RSV1 | OP_TEXT, &deflated), 1000);
        assert_eq!(
            refused[0].as_ref().unwrap_err().code,
            close_code::INVALID_PAYLOAD
        );
    }

    #[test]
    fn the_compressed_server_frame_has_rsv1_and_inflates_to_the_message() {
        let frame = compressed_text_frame(&deflate::compress(b"\"Bonjour !\""));
        assert_eq!(frame[0], 0x80 | RSV1 | OP_TEXT);
        let length = usize::from(frame[1]);
        assert_eq!(
            deflate::decompress(&frame[2..2 + length], 100).unwrap(),
            b"\"Bonjour !\""
        );
    }
}
