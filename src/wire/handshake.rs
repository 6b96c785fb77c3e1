//! The HTTP side of a connection, before any WebSocket frame: parse the request head, decide
//! between a WebSocket upgrade, a plain HTTP request and a rejection, and write the responses.
//!
//! Everything here is pure (bytes in, decisions and bytes out) so that it is tested and fuzzed
//! without sockets. A rejected upgrade gets a plain-text HTTP error *before* the upgrade
//! (SPEC §1): 400 bad `tags`, 403 bad `Origin`, 401/403 not authorized, 503 full.

use base64::Engine;
use sha1::{Digest, Sha1};

use crate::routing::history::Since;
use crate::tags::{TagLimits, Tags};
use crate::wire::request::Credentials;

/// Largest request head accepted; a larger one gets 431.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers in a request head; more get 431.
const MAX_HEADERS: usize = 64;

/// An HTTP error answer: a status and a short plain-text reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status code.
    pub status: u16,
    /// Why, in one line of text.
    pub reason: String,
}

impl Rejection {
    /// A rejection with `status` and `reason`.
    pub fn new(status: u16, reason: impl Into<String>) -> Rejection {
        Rejection {
            status,
            reason: reason.into(),
        }
    }

    /// The full HTTP response: `Content-Type: text/plain`, the reason as body, connection closed.
    pub fn to_response(&self) -> Vec<u8> {
        response(
            self.status,
            "text/plain; charset=utf-8",
            &[],
            format!("{}\n", self.reason).as_bytes(),
        )
    }
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `GET`, `POST`...
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The raw query string (after `?`), if any.
    pub query: Option<String>,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(own, _)| own.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(own, _)| own.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// True when a comma-separated header lists `token` (case-insensitive).
    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .flat_map(|value| value.split(','))
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    }

    /// True when the client asks for a WebSocket upgrade (else this is a plain HTTP request).
    pub fn wants_websocket(&self) -> bool {
        self.header_has_token("upgrade", "websocket")
    }
}

/// Parses a request head from the start of `buffer`: `Ok(None)` when more bytes are needed,
/// `Ok(Some((head, length)))` once the blank line is in, or the rejection to answer with.
pub fn parse_head(buffer: &[u8]) -> Result<Option<(Head, usize)>, Rejection> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buffer.len() >= MAX_HEAD => {
            return Err(Rejection::new(431, "request head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejection::new(431, "too many request headers"));
        }
        Err(error) => {
            return Err(Rejection::new(
                400,
                format!("malformed HTTP request: {error}"),
            ));
        }
    };
    if length > MAX_HEAD {
        return Err(Rejection::new(431, "request head too large"));
    }
    let target = request.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    let mut parsed = Vec::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| Rejection::new(400, format!("header {} is not UTF-8", header.name)))?;
        parsed.push((header.name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(Some((
        Head {
            method: request.method.unwrap_or("").to_owned(),
            path: path.to_owned(),
            query,
            headers: parsed,
        },
        length,
    )))
}

/// What a valid upgrade request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The connection's tags, from `?tags=`.
    pub tags: Tags,
    /// The credentials from `?key=` and `?secret=`.
    pub credentials: Credentials,
    /// The signed tags' token from `?token=` (SPEC §3 "Signed tags"), not yet verified.
    pub token: Option<String>,
    /// The `Sec-WebSocket-Accept` value for the 101 answer.
    pub accept: String,
    /// `?since=`: where a recovering connection starts (SPEC §10).
    pub since: Option<Since>,
}

/// Checks a WebSocket upgrade request (method, headers, origin, tags) and extracts what the
/// connection opens with. Authorization is checked by the caller.
pub fn check_upgrade(
    head: &Head,
    limits: TagLimits,
    allowed_origins: &[String],
) -> Result<Upgrade, Rejection> {
    if head.method != "GET" {
        return Err(Rejection::new(405, "a WebSocket upgrade must use GET"));
    }
    if !head.header_has_token("connection", "upgrade") {
        return Err(Rejection::new(400, "missing `Connection: Upgrade`"));
    }
    if head.header("sec-websocket-version") != Some("13") {
        return Err(Rejection::new(426, "unsupported WebSocket version: use 13"));
    }
    let key = head
        .header("sec-websocket-key")
        .filter(|key| {
            base64::engine::general_purpose::STANDARD
                .decode(key)
                .is_ok_and(|decoded| decoded.len() == 16)
        })
        .ok_or_else(|| Rejection::new(400, "missing or invalid Sec-WebSocket-Key"))?;
    if !allowed_origins.is_empty()
        && let Some(origin) = head.header("origin")
        && !allowed_origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(origin))
    {
        return Err(Rejection::new(
            403,
            format!("origin {origin} is not allowed"),
        ));
    }
    let mut tags = Tags::default();
    let mut credentials = Credentials::default();
    let mut token = None;
    let mut since = None;
    if let Some(query) = &head.query {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "tags" => {
                    tags = Tags::parse(&value, limits)
                        .map_err(|error| Rejection::new(400, format!("bad tags: {error}")))?;
                }
                "key" => credentials.key = Some(value.into_owned()),
                "secret" => credentials.secret = Some(value.into_owned()),
                "token" => token = Some(value.into_owned()),
                "since" => since = Some(Since::parse(&value)),
                _ => {}
            }
        }
    }
    Ok(Upgrade {
        tags,
        credentials,
        token,
        accept: accept_key(key),
        since,
    })
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// The `101 Switching Protocols` answer, with the `Sec-WebSocket-Extensions` value agreed on.
pub fn switching_protocols(accept: &str, extensions: Option<&str>) -> Vec<u8> {
    let extensions = extensions
        .map(|value| format!("Sec-WebSocket-Extensions: {value}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{extensions}\r\n"
    )
    .into_bytes()
}

/// A complete HTTP/1.1 response that closes the connection.
pub fn response(
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        status_text(status),
        body.len()
    );
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TagLimits = TagLimits {
        max_tags: 4,
        max_tag_length: 8,
    };

    fn head(target: &str, extra: &str) -> Head {
        let text = format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        );
        let (head, length) = parse_head(text.as_bytes()).unwrap().unwrap();
        assert_eq!(length, text.len());
        head
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn tags_and_credentials_from_the_query() {
        let upgrade = check_upgrade(
            &head(
                "/any/path?tags=%7B%22language%22%3A%22FR%22%2C%22id%22%3A42%7D&key=k&secret=s&token=a.b.c",
                "",
            ),
            LIMITS,
            &[],
        )
        .unwrap();
        assert_eq!(upgrade.tags.get("language"), Some("FR"));
        assert_eq!(upgrade.tags.get("id"), Some("42"));
        assert_eq!(upgrade.credentials.key.as_deref(), Some("k"));
        assert_eq!(upgrade.credentials.secret.as_deref(), Some("s"));
        assert_eq!(upgrade.token.as_deref(), Some("a.b.c"));
    }

    fn rejected(target: &str, extra: &str, origins: &[String]) -> Rejection {
        check_upgrade(&head(target, extra), LIMITS, origins).unwrap_err()
    }

    #[test]
    fn bad_tags_are_400_with_a_reason() {
        let rejection = rejected("/?tags=nope", "", &[]);
        assert_eq!(rejection.status, 400);
        assert!(
            rejection
                .reason
                .starts_with("bad tags: tags are not valid JSON"),
            "{rejection:?}"
        );
        assert_eq!(
            rejected("/?tags=[]", "", &[]).reason,
            "bad tags: tags must be a JSON object"
        );
        assert_eq!(rejected("/?tags={\"a\":true}", "", &[]).status, 400);
        assert!(
            rejected("/?tags={\"a\":\"123456789\"}", "", &[])
                .reason
                .contains("longer than 8")
        );
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example.com".to_string()];
        assert_eq!(
            rejected("/", "Origin: https://evil.example\r\n", &allowed).status,
            403
        );
        assert!(
            check_upgrade(
                &head("/", "Origin: HTTPS://APP.example.com\r\n"),
                LIMITS,
                &allowed
            )
            .is_ok()
        );
        assert!(check_upgrade(&head("/", ""), LIMITS, &allowed).is_ok());
    }

    #[test]
    fn heads() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap(), None);
        assert_eq!(
            parse_head(b"\x01\x02 nonsense\r\n\r\n").unwrap_err().status,
            400
        );
        let huge = format!("GET /?{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse_head(huge.as_bytes()).unwrap_err().status, 431);
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(text.as_bytes()).unwrap_err().status, 431);
        let plain = parse_head(b"POST /publish HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap()
            .0;
        assert!(!plain.wants_websocket());
        assert_eq!(plain.path, "/publish");
    }

    #[test]
    fn rejection_response_is_plain_text() {
        let text = String::from_utf8(Rejection::new(400, "bad tags: x").to_response()).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(text.contains("Content-Type: text/plain"));
        assert!(text.ends_with("\r\n\r\nbad tags: x\n"));
    }
}
