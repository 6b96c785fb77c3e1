//! Message parsers: what a request's `message` may be, and the JSON delivered to clients.
//!
//! A parser checks the raw JSON of a message and returns the text to deliver. It runs once per
//! request, never per recipient. Library users plug in their own type through [`MessageParser`].

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::ops::config::{MessagesConfig, ParserConfig};
use crate::strict::{self, JsonValue};

/// Checks a request's message and encodes what clients receive.
///
/// ```
/// use tagcast::wire::parser::{MessageParser, Rejected};
/// use serde_json::value::RawValue;
///
/// /// Accepts only numbers.
/// struct Numbers;
/// impl MessageParser for Numbers {
///     fn parse(&self, message: &RawValue) -> Result<String, Rejected> {
///         let number: f64 = serde_json::from_str(message.get())
///             .map_err(|_| Rejected("the message must be a number".into()))?;
///         Ok(number.to_string())
///     }
/// }
/// let raw = RawValue::from_string("42".into()).unwrap();
/// assert_eq!(Numbers.parse(&raw).unwrap(), "42");
/// ```
pub trait MessageParser: Send + Sync + 'static {
    /// The JSON text to deliver for `message`, or why it is refused (sent with close 4400).
    fn parse(&self, message: &RawValue) -> Result<String, Rejected>;
}

/// Why a parser refused a message; shown to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// `string`: the message must be a JSON string (the default, as in Gomoob).
pub struct StringParser;

impl MessageParser for StringParser {
    fn parse(&self, message: &RawValue) -> Result<String, Rejected> {
        let text: String = serde_json::from_str(message.get()).map_err(|_| {
            Rejected(
                "the message must be a JSON string; set messages.parser to accept other JSON"
                    .into(),
            )
        })?;
        Ok(Value::String(text).to_string())
    }
}

/// `json`: any JSON value, re-encoded compactly with object keys in their order.
pub struct JsonParser;

impl MessageParser for JsonParser {
    fn parse(&self, message: &RawValue) -> Result<String, Rejected> {
        Ok(parse_value(message)?.to_string())
    }
}

/// The message as a JSON value; an object repeating a key is refused.
fn parse_value(message: &RawValue) -> Result<Value, Rejected> {
    serde_json::from_str(message.get())
        .map(|JsonValue(value)| value)
        .map_err(|error| Rejected(error.to_string()))
}

/// `message`: Gomoob's sample message object, `{"type", "creationDate", "metadata"}`.
pub struct GomoobMessageParser;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GomoobMessage {
    #[serde(rename = "type")]
    kind: JsonValue,
    #[serde(rename = "creationDate", default)]
    creation_date: Option<JsonValue>,
    #[serde(default)]
    metadata: Option<JsonValue>,
}

impl MessageParser for GomoobMessageParser {
    fn parse(&self, message: &RawValue) -> Result<String, Rejected> {
        let refused = |problem: &dyn std::fmt::Display| {
            Rejected(format!(
                "the message must be an object with `type`, `creationDate`, `metadata`: {problem}"
            ))
        };
        let parsed: GomoobMessage =
            strict::object_from_str(message.get()).map_err(|error| refused(&error))?;
        let metadata = match parsed.metadata.map(|metadata| metadata.0) {
            None => Value::Object(Default::default()),
            Some(metadata @ Value::Object(_)) => metadata,
            Some(_) => return Err(refused(&"`metadata` is not an object")),
        };
        let mut out = serde_json::Map::new();
        out.insert("type".into(), parsed.kind.0);
        if let Some(JsonValue(date)) = parsed.creation_date {
            out.insert("creationDate".into(), date);
        }
        out.insert("metadata".into(), metadata);
        Ok(Value::Object(out).to_string())
    }
}

/// `json-schema`: any JSON value valid against a schema file (cargo feature `json-schema`, on by
/// default).
#[cfg(feature = "json-schema")]
pub struct JsonSchemaParser {
    validator: jsonschema::Validator,
}

#[cfg(feature = "json-schema")]
impl std::fmt::Debug for JsonSchemaParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonSchemaParser")
    }
}

/// A schema file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The schema file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{path}: not JSON: {message}")]
    Json {
        /// The schema file.
        path: String,
        /// The JSON parser's message.
        message: String,
    },
    /// The JSON is not a valid schema.
    #[error("{path}: not a valid JSON Schema: {message}")]
    Schema {
        /// The schema file.
        path: String,
        /// The schema compiler's message.
        message: String,
    },
    /// This binary was built without the cargo feature `json-schema`.
    #[cfg(not(feature = "json-schema"))]
    #[error(
        "messages.parser: this tagcast is built without the json-schema parser (cargo feature `json-schema`)"
    )]
    NotBuilt,
}

#[cfg(feature = "json-schema")]
impl JsonSchemaParser {
    /// Loads and compiles the schema at `path`.
    pub fn load(path: &Path) -> Result<JsonSchemaParser, SchemaError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Read {
            path: shown.clone(),
            source,
        })?;
        let schema: Value = serde_json::from_str(&text).map_err(|error| SchemaError::Json {
            path: shown.clone(),
            message: error.to_string(),
        })?;
        let validator =
            jsonschema::validator_for(&schema).map_err(|error| SchemaError::Schema {
                path: shown,
                message: error.to_string(),
            })?;
        Ok(JsonSchemaParser { validator })
    }
}

#[cfg(feature = "json-schema")]
impl MessageParser for JsonSchemaParser {
    fn parse(&self, message: &RawValue) -> Result<String, Rejected> {
        let value = parse_value(message)?;
        if let Err(error) = self.validator.validate(&value) {
            return Err(Rejected(format!(
                "the message does not match the schema: {error}"
            )));
        }
        Ok(value.to_string())
    }
}

/// The parser `[messages]` asks for.
pub fn from_config(config: &MessagesConfig) -> Result<Arc<dyn MessageParser>, SchemaError> {
    Ok(match &config.parser {
        ParserConfig::String => Arc::new(StringParser),
        ParserConfig::Json => Arc::new(JsonParser),
        ParserConfig::Message => Arc::new(GomoobMessageParser),
        ParserConfig::JsonSchema { schema } => json_schema(schema)?,
    })
}

/// The `json-schema` parser of the schema file `schema`.
#[cfg(feature = "json-schema")]
fn json_schema(schema: &Path) -> Result<Arc<dyn MessageParser>, SchemaError> {
    Ok(Arc::new(JsonSchemaParser::load(schema)?))
}

/// Without the cargo feature `json-schema`: a config that asks for it is refused at start.
#[cfg(not(feature = "json-schema"))]
fn json_schema(_schema: &Path) -> Result<Arc<dyn MessageParser>, SchemaError> {
    Err(SchemaError::NotBuilt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.into()).unwrap()
    }

    #[test]
    fn string_parser() {
        assert_eq!(
            StringParser.parse(&raw(r#""Bonjour !""#)).unwrap(),
            r#""Bonjour !""#
        );
        assert_eq!(StringParser.parse(&raw(r#""\u00e9\/""#)).unwrap(), "\"é/\"");
        let refused = StringParser.parse(&raw("{}")).unwrap_err();
        assert!(refused.0.contains("messages.parser"));
    }

    #[test]
    fn json_parser_keeps_key_order() {
        assert_eq!(
            JsonParser
                .parse(&raw(r#"{ "z": 1, "a": [true, null], "s": "\u00e9" }"#))
                .unwrap(),
            r#"{"z":1,"a":[true,null],"s":"é"}"#
        );
        let refused = JsonParser.parse(&raw(r#"{"a":1,"b":{"a":1,"a":2}}"#));
        assert!(refused.unwrap_err().0.starts_with("duplicate key `a`"));
    }

    #[test]
    fn gomoob_message_parser() {
        assert_eq!(
            GomoobMessageParser
                .parse(&raw(
                    r#"{"metadata":{"b":1},"type":"T","creationDate":"2026"}"#
                ))
                .unwrap(),
            r#"{"type":"T","creationDate":"2026","metadata":{"b":1}}"#
        );
        assert_eq!(
            GomoobMessageParser.parse(&raw(r#"{"type":"T"}"#)).unwrap(),
            r#"{"type":"T","metadata":{}}"#
        );
        assert!(
            GomoobMessageParser
                .parse(&raw(r#"{"type":"T","x":1}"#))
                .is_err()
        );
        assert!(
            GomoobMessageParser
                .parse(&raw(r#"{"creationDate":"x"}"#))
                .is_err()
        );
        assert!(GomoobMessageParser.parse(&raw(r#""text""#)).is_err());
        // serde's derive would fill `type` from the array's first item.
        let refused = GomoobMessageParser
            .parse(&raw(r#"[{"type":"chat"}]"#))
            .unwrap_err();
        assert!(refused.0.contains("expected a JSON object"), "{refused}");
        for refused in [
            r#"{"type":"T","metadata":[1]}"#,
            r#"{"type":"T","type":"U"}"#,
            r#"{"type":{"a":1,"a":2}}"#,
        ] {
            assert!(
                GomoobMessageParser.parse(&raw(refused)).is_err(),
                "{refused}"
            );
        }
    }

    #[cfg(feature = "json-schema")]
    #[test]
    fn json_schema_parser() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schema.json");
        std::fs::write(&path, r#"{"type":"object","required":["n"]}"#).unwrap();
        let parser = JsonSchemaParser::load(&path).unwrap();
        assert_eq!(parser.parse(&raw(r#"{"n":1}"#)).unwrap(), r#"{"n":1}"#);
        assert!(
            parser
                .parse(&raw(r#"{"m":1}"#))
                .unwrap_err()
                .0
                .contains("schema")
        );
        std::fs::write(&path, "{").unwrap();
        assert!(
            JsonSchemaParser::load(&path)
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
        let missing = dir.path().join("missing.json");
        assert!(
            JsonSchemaParser::load(&missing)
                .unwrap_err()
                .to_string()
                .contains("missing.json")
        );
    }

    #[cfg(not(feature = "json-schema"))]
    #[test]
    fn without_the_feature_json_schema_is_refused_by_name() {
        let refused = json_schema(Path::new("schema.json"))
            .err()
            .expect("refused");
        assert!(
            refused.to_string().contains("feature `json-schema`"),
            "{refused}"
        );
    }
}
