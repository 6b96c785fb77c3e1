//! A client's request, as the Gomoob protocol writes it:
//! `{"message": ..., "tags": {...}, "metadata": {"key": ..., "secret": ...}}`.
//!
//! Parsing is pure and happens once per request, whoever sent it (a WebSocket frame, an HTTP
//! publish, another node). The message is kept as raw JSON for the configured
//! [`MessageParser`](crate::wire::parser::MessageParser) to check and re-encode.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::strict::{self, JsonValue};
use crate::tags::{TagLimits, Tags, TagsError};

/// A valid request, borrowing the message's JSON text from the frame it came in.
#[derive(Debug)]
pub struct Request<'a> {
    /// The message, as raw JSON.
    pub message: &'a RawValue,
    /// Who it is for; empty: everybody.
    pub tags: Tags,
    /// The sender's credentials (server-side only, never forwarded).
    pub credentials: Credentials,
}

/// An application key and secret, from a URL or a request's `metadata`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The application key.
    pub key: Option<String>,
    /// The application secret.
    pub secret: Option<String>,
}

/// Never prints the secret.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key", &self.key)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// Why a request is invalid (close code 4400). The `Display` text is sent to the client.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, not an object, an unknown or repeated key.
    #[error("invalid request: {0}")]
    Json(String),
    /// `message` is missing or `null`: Gomoob's server, too, takes `null` for no message.
    #[error("no message")]
    NoMessage,
    /// The `tags` object is invalid.
    #[error("invalid request: {0}")]
    Tags(#[from] TagsError),
    /// `metadata` is not an object, or its `key`/`secret` are not strings.
    #[error("invalid request: {0}")]
    Metadata(&'static str),
}

/// The request as written. `None` for a missing key and for `null` alike.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(default)]
    tags: Option<JsonValue>,
    #[serde(default)]
    metadata: Option<JsonValue>,
}

impl<'a> Request<'a> {
    /// Parses and validates the text of a request.
    pub fn parse(text: &'a str, limits: TagLimits) -> Result<Request<'a>, RequestError> {
        let wire: Wire<'a> =
            strict::object_from_str(text).map_err(|error| RequestError::Json(error.to_string()))?;
        let message = wire.message.ok_or(RequestError::NoMessage)?;
        let tags = match &wire.tags {
            None => Tags::default(),
            Some(JsonValue(value)) => Tags::from_json(value, limits)?,
        };
        let credentials = match wire.metadata.map(|metadata| metadata.0) {
            None => Credentials::default(),
            Some(Value::Object(map)) => Credentials {
                key: string_field(&map, "key", "metadata.key must be a string")?,
                secret: string_field(&map, "secret", "metadata.secret must be a string")?,
            },
            Some(_) => return Err(RequestError::Metadata("metadata must be a JSON object")),
        };
        Ok(Request {
            message,
            tags,
            credentials,
        })
    }
}

fn string_field(
    map: &Map<String, Value>,
    name: &str,
    problem: &'static str,
) -> Result<Option<String>, RequestError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(RequestError::Metadata(problem)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request<'_>, String> {
        Request::parse(text, TagLimits::UNLIMITED).map_err(|error| error.to_string())
    }

    #[test]
    fn the_gomoob_php_client_request() {
        let request = parse(r#"{"message":"x","metadata":{},"tags":{"language":"FR"}}"#).unwrap();
        assert_eq!(request.message.get(), r#""x""#);
        assert_eq!(request.tags.get("language"), Some("FR"));
        assert_eq!(request.credentials, Credentials::default());
    }

    #[test]
    fn credentials_from_metadata() {
        let request =
            parse(r#"{"message":1,"metadata":{"key":"k","secret":"s","other":1}}"#).unwrap();
        assert_eq!(request.credentials.key.as_deref(), Some("k"));
        assert_eq!(request.credentials.secret.as_deref(), Some("s"));
        assert!(!format!("{:?}", request.credentials).contains("\"s\""));
    }

    #[test]
    fn each_invalid_shape_says_why() {
        assert!(
            parse("nope")
                .unwrap_err()
                .starts_with("invalid request: expected")
        );
        assert!(parse("[1]").unwrap_err().contains("JSON object"));
        assert_eq!(parse(r#"{"tags":{}}"#).unwrap_err(), "no message");
        assert_eq!(parse(r#"{"message":null}"#).unwrap_err(), "no message");
        assert!(
            parse(r#"{"message":"x","message":"y"}"#)
                .unwrap_err()
                .contains("duplicate field `message`")
        );
        for repeated in [
            r#"{"message":"x","tags":{"a":"1","a":"2"}}"#,
            r#"{"message":"x","metadata":{"key":"k","key":"other"}}"#,
        ] {
            assert!(
                parse(repeated).unwrap_err().contains("duplicate key `"),
                "{repeated}"
            );
        }
        assert!(
            parse(r#"{"message":"x","to":1}"#)
                .unwrap_err()
                .contains("unknown field `to`")
        );
        assert!(
            parse(r#"{"message":"x","tags":[]}"#)
                .unwrap_err()
                .contains("tags must be")
        );
        assert!(
            parse(r#"{"message":"x","tags":{"a":[]}}"#)
                .unwrap_err()
                .contains("\"a\"")
        );
        assert!(
            parse(r#"{"message":"x","metadata":3}"#)
                .unwrap_err()
                .contains("metadata")
        );
        assert!(
            parse(r#"{"message":"x","metadata":{"key":3}}"#)
                .unwrap_err()
                .contains("metadata.key")
        );
    }
}
