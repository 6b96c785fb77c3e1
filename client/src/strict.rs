//! Deserializing without serde's leniencies, for what clients send (JSON) and admins write (TOML).
//!
//! serde's derived structs also read a struct from a sequence (`[1, 2]` fills the fields in
//! order), and `serde_json::Value` keeps the last of duplicate keys without a word. A request, a
//! message, a tag set or a config section written that way is a mistake to refuse, not to guess:
//! - [`table`] / [`optional_table`] (TOML sections) and [`object_from_str`] (JSON) read a struct
//!   only from a map;
//! - [`JsonValue`] is any JSON value, refusing an object that repeats a key, at any depth.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Reads `T` only from a map; `expected` names it in the error for anything else.
fn only_map<'de, D, T>(deserializer: D, expected: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct MapOnly<T>(&'static str, PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for MapOnly<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(MapOnly(expected, PhantomData))
}

/// A config section (`#[serde(deserialize_with = "strict::table")]`): only a TOML table.
pub fn table<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    only_map(deserializer, "a table")
}

/// An optional config section: when present, only a TOML table.
pub fn optional_table<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    table(deserializer).map(Some)
}

/// `T` from the text of a JSON object, and from nothing else (not from an array).
pub fn object_from_str<'a, T: Deserialize<'a>>(text: &'a str) -> serde_json::Result<T> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = only_map(&mut deserializer, "a JSON object")?;
    deserializer.end()?;
    Ok(value)
}

/// Any JSON value, as [`serde_json::Value`] reads it, except that an object repeating a key is
/// refused ("duplicate key `a`") instead of keeping the last value.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonValue(pub Value);

impl<'de> Deserialize<'de> for JsonValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JsonValue, D::Error> {
        deserializer
            .deserialize_any(JsonValueVisitor)
            .map(JsonValue)
    }
}

struct JsonValueVisitor;

impl<'de> Visitor<'de> for JsonValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        JsonValue::deserialize(deserializer).map(|value| value.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(JsonValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let JsonValue(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_read_as_serde_json_reads_them() {
        let text = r#"{"z":[1,-2,3.5,"é",true,null,{}],"a":{"b":18446744073709551615}}"#;
        let strict: JsonValue = serde_json::from_str(text).unwrap();
        assert_eq!(strict.0, serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(strict.0.to_string(), text);
    }

    #[test]
    fn a_repeated_key_is_refused_at_any_depth() {
        for text in [r#"{"a":1,"a":2}"#, r#"[{"x":{"a":1,"a":1}}]"#] {
            let error = serde_json::from_str::<JsonValue>(text).unwrap_err();
            assert!(error.to_string().starts_with("duplicate key `"), "{error}");
        }
    }

    #[test]
    fn a_struct_is_read_from_an_object_only() {
        #[derive(Debug, serde::Deserialize)]
        struct Pair {
            a: u8,
        }
        assert_eq!(object_from_str::<Pair>(r#" {"a":1} "#).unwrap().a, 1);
        let error = object_from_str::<Pair>("[1]").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid type: sequence, expected a JSON object"),
            "{error}"
        );
        assert!(object_from_str::<Pair>(r#"{"a":1} x"#).is_err());
    }
}
