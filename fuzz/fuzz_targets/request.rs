//! A request's JSON (`Request::parse`), then its message through every built-in parser; what a
//! parser accepts must be JSON that parses back.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tagcast::ops::config::Config;
use tagcast::wire::parser::{
    GomoobMessageParser, JsonParser, JsonSchemaParser, MessageParser, StringParser,
};
use tagcast::wire::request::Request;

/// A schema with the keywords most likely to misbehave (patterns, formats, bounds).
const SCHEMA: &str = r#"{"anyOf": [
    {"type": "string", "pattern": "^[a-z]+(\\d{1,3})?$", "maxLength": 64},
    {"type": "object", "required": ["type"], "properties": {
        "type": {"enum": ["a", "b"]}, "n": {"type": "integer", "minimum": 0, "multipleOf": 3},
        "at": {"type": "string", "format": "date-time"}}},
    {"type": "array", "items": {"type": "number"}, "uniqueItems": true}]}"#;

fn parsers() -> &'static [Box<dyn MessageParser>] {
    static PARSERS: OnceLock<Vec<Box<dyn MessageParser>>> = OnceLock::new();
    PARSERS.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("tagcast-fuzz-schema-{}.json", std::process::id()));
        std::fs::write(&path, SCHEMA).expect("write the schema");
        let schema = JsonSchemaParser::load(&path).expect("the schema compiles");
        let _ = std::fs::remove_file(&path);
        vec![
            Box::new(StringParser),
            Box::new(JsonParser),
            Box::new(GomoobMessageParser),
            Box::new(schema),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(request) = Request::parse(text, Config::default().limits.tag_limits()) else {
        return;
    };
    for parser in parsers() {
        if let Ok(delivered) = parser.parse(request.message) {
            serde_json::from_str::<serde_json::Value>(&delivered).expect("a parser delivers JSON");
        }
    }
});
