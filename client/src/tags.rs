//! Tags and the tag index: the product's core rule.
//!
//! A connection opens with tags (`{"language":"FR","userId":42}`), and every request carries tags
//! too. A request reaches a connection when **every** request tag is present on the connection with
//! an equal value; a request without tags reaches everybody. Values are compared as strings, so the
//! integer `42` and the string `"42"` are the same tag.
//!
//! ```
//! use tagcast_client::tags::Tags;
//! let connection: Tags = [("language", "FR"), ("userId", "42")].into_iter().collect();
//! let request: Tags = [("language", "FR")].into_iter().collect();
//! assert!(connection.contains_all(&request));
//! assert!(connection.contains_all(&Tags::default()));
//! assert!(!connection.contains_all(&[("team", "ops")].into_iter().collect()));
//! ```
//!
//! [`TagIndex`] answers "which connections match these tags" without scanning every connection: it
//! keeps, for each `name=value` pair, the set of connections that have it, and checks only the
//! members of the smallest set named by the request. Nothing here does IO or async work.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use serde_json::{Map, Value};

use crate::strict::JsonValue;

/// The tags of a connection or a request: names mapped to string values, sorted by name.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Tags(Box<[(Box<str>, Box<str>)]>);

/// Bounds on the tags a client may send (config `limits.max_tags`, `limits.max_tag_length`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagLimits {
    /// Most tags in one object.
    pub max_tags: usize,
    /// Longest tag name or value, in bytes.
    pub max_tag_length: usize,
}

impl TagLimits {
    /// No bounds: for tags built by trusted code (the client library, tests).
    pub const UNLIMITED: TagLimits = TagLimits {
        max_tags: usize::MAX,
        max_tag_length: usize::MAX,
    };
}

/// Why a tags object was refused. The `Display` text is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagsError {
    /// The text is not JSON at all.
    #[error("tags are not valid JSON: {0}")]
    NotJson(String),
    /// The JSON is an array, a string, a number...
    #[error("tags must be a JSON object")]
    NotObject,
    /// A value is neither a string nor an integer.
    #[error("tag {0:?} must be a string or an integer")]
    BadValue(String),
    /// More tags than `limits.max_tags`.
    #[error("too many tags: at most {0}")]
    TooMany(usize),
    /// A name longer than `limits.max_tag_length`.
    #[error("tag name longer than {0} bytes")]
    NameTooLong(usize),
    /// A value longer than `limits.max_tag_length`.
    #[error("tag {0:?} has a value longer than {1} bytes")]
    ValueTooLong(String, usize),
}

impl Tags {
    /// Parses the text of a JSON tags object (the `tags` query parameter).
    pub fn parse(text: &str, limits: TagLimits) -> Result<Tags, TagsError> {
        match serde_json::from_str::<JsonValue>(text).map(|value| value.0) {
            Ok(Value::Object(map)) => Tags::from_map(&map, limits),
            Ok(_) => Err(TagsError::NotObject),
            Err(err) => Err(TagsError::NotJson(err.to_string())),
        }
    }

    /// Validates a JSON value that must be a tags object (the `tags` key of a request).
    pub fn from_json(value: &Value, limits: TagLimits) -> Result<Tags, TagsError> {
        match value {
            Value::Object(map) => Tags::from_map(map, limits),
            _ => Err(TagsError::NotObject),
        }
    }

    fn from_map(map: &Map<String, Value>, limits: TagLimits) -> Result<Tags, TagsError> {
        if map.len() > limits.max_tags {
            return Err(TagsError::TooMany(limits.max_tags));
        }
        let mut pairs = Vec::with_capacity(map.len());
        for (name, value) in map {
            if name.len() > limits.max_tag_length {
                return Err(TagsError::NameTooLong(limits.max_tag_length));
            }
            let value = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) if number.is_i64() || number.is_u64() => number.to_string(),
                _ => return Err(TagsError::BadValue(name.clone())),
            };
            if value.len() > limits.max_tag_length {
                return Err(TagsError::ValueTooLong(name.clone(), limits.max_tag_length));
            }
            pairs.push((name.as_str(), value));
        }
        Ok(pairs.into_iter().collect())
    }

    /// True when every tag of `query` is present here with an equal value. An empty query is
    /// contained in every set of tags.
    pub fn contains_all(&self, query: &Tags) -> bool {
        let mut own = self.0.iter();
        'query: for (name, value) in query.0.iter() {
            for (own_name, own_value) in own.by_ref() {
                match own_name.cmp(name) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Equal if own_value == value => continue 'query,
                    _ => return false,
                }
            }
            return false;
        }
        true
    }

    /// The value of tag `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(own, _)| own.as_ref().cmp(name))
            .ok()
            .map(|index| self.0[index].1.as_ref())
    }

    /// The `(name, value)` pairs, sorted by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_ref(), value.as_ref()))
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no tags.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Builds tags from pairs; when a name repeats, the last value wins.
impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Tags {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> Tags {
        let mut pairs: Vec<(Box<str>, Box<str>)> = pairs
            .into_iter()
            .map(|(name, value)| (name.into().into(), value.into().into()))
            .collect();
        // A stable sort keeps repeated names in insertion order; keep the last of each run.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut deduped: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match deduped.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => deduped.push(pair),
            }
        }
        Tags(deduped.into_boxed_slice())
    }
}

/// Shown as the JSON object, e.g. `{"language":"FR"}` (logs use it).
impl fmt::Display for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map: Map<String, Value> = self
            .iter()
            .map(|(name, value)| (name.to_owned(), Value::String(value.to_owned())))
            .collect();
        write!(f, "{}", Value::Object(map))
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Tags {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// Entries keyed by `Id`, each with its tags, found by tags.
///
/// Entries live in a dense vector (a broadcast walks it linearly); `postings` maps each tag name
/// and value to the ids that carry it, each with a copy of its value (an `Arc` in the hub), so a
/// targeted lookup visits only the smallest posting list named by the query and, for a one-tag
/// query, touches nothing else.
pub struct TagIndex<Id, V> {
    entries: Vec<(Id, Tags, V)>,
    /// Position of each id in `entries`.
    positions: HashMap<Id, usize>,
    /// tag name → tag value → ids with that tag, and their values.
    postings: HashMap<Box<str>, PostingsByValue<Id, V>>,
}

/// The entries carrying one `name=value` tag.
type Posting<Id, V> = HashMap<Id, V>;
/// One tag name's values, each with its posting.
type PostingsByValue<Id, V> = HashMap<Box<str>, Posting<Id, V>>;

impl<Id, V> Default for TagIndex<Id, V> {
    fn default() -> Self {
        TagIndex {
            entries: Vec::new(),
            positions: HashMap::new(),
            postings: HashMap::new(),
        }
    }
}

impl<Id: Copy + Eq + Hash, V: Clone> TagIndex<Id, V> {
    /// Adds an entry. An id already present is replaced.
    pub fn insert(&mut self, id: Id, tags: Tags, value: V) {
        self.remove(id);
        for (name, tag_value) in tags.iter() {
            self.postings
                .entry(name.into())
                .or_default()
                .entry(tag_value.into())
                .or_default()
                .insert(id, value.clone());
        }
        self.positions.insert(id, self.entries.len());
        self.entries.push((id, tags, value));
    }

    /// Removes an entry and returns its value.
    pub fn remove(&mut self, id: Id) -> Option<V> {
        let position = self.positions.remove(&id)?;
        let (_, tags, value) = self.entries.swap_remove(position);
        if let Some((moved, _, _)) = self.entries.get(position) {
            self.positions.insert(*moved, position);
        }
        for (name, tag_value) in tags.iter() {
            let Some(values) = self.postings.get_mut(name) else {
                continue;
            };
            if let Some(ids) = values.get_mut(tag_value) {
                ids.remove(&id);
                if ids.is_empty() {
                    values.remove(tag_value);
                }
            }
            if values.is_empty() {
                self.postings.remove(name);
            }
        }
        Some(value)
    }

    /// Calls `visit` for every entry whose tags contain all of `query`.
    pub fn for_each_match(&self, query: &Tags, mut visit: impl FnMut(Id, &V)) {
        if query.is_empty() {
            for (id, _, value) in &self.entries {
                visit(*id, value);
            }
            return;
        }
        let mut smallest: Option<&Posting<Id, V>> = None;
        for (name, value) in query.iter() {
            let Some(ids) = self.postings.get(name).and_then(|values| values.get(value)) else {
                return; // a tag nobody has matches nobody
            };
            if smallest.is_none_or(|current| ids.len() < current.len()) {
                smallest = Some(ids);
            }
        }
        let Some(candidates) = smallest else { return };
        if query.len() == 1 {
            for (id, value) in candidates {
                visit(*id, value);
            }
            return;
        }
        for id in candidates.keys() {
            let (_, tags, value) = &self.entries[self.positions[id]];
            if tags.contains_all(query) {
                visit(*id, value);
            }
        }
    }

    /// Calls `visit` for every entry.
    pub fn for_each(&self, mut visit: impl FnMut(Id, &Tags, &V)) {
        for (id, tags, value) in &self.entries {
            visit(*id, tags, value);
        }
    }

    /// The tags stored for `id`.
    pub fn tags_of(&self, id: Id) -> Option<&Tags> {
        self.positions
            .get(&id)
            .map(|&position| &self.entries[position].1)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs.iter().copied().collect()
    }

    #[test]
    fn integers_and_strings_are_the_same_tag() {
        let limits = TagLimits::UNLIMITED;
        let number = Tags::parse(r#"{"userId":42}"#, limits).unwrap();
        let text = Tags::parse(r#"{"userId":"42"}"#, limits).unwrap();
        assert_eq!(number, text);
    }

    #[test]
    fn parse_rejects_each_bad_shape() {
        let limits = TagLimits {
            max_tags: 2,
            max_tag_length: 4,
        };
        assert!(matches!(
            Tags::parse("{", limits),
            Err(TagsError::NotJson(_))
        ));
        assert_eq!(Tags::parse("[1]", limits), Err(TagsError::NotObject));
        assert_eq!(
            Tags::parse(r#"{"a":1.5}"#, limits),
            Err(TagsError::BadValue("a".into()))
        );
        assert_eq!(
            Tags::parse(r#"{"a":true}"#, limits),
            Err(TagsError::BadValue("a".into()))
        );
        assert_eq!(
            Tags::parse(r#"{"a":"1","b":"2","c":"3"}"#, limits),
            Err(TagsError::TooMany(2))
        );
        assert_eq!(
            Tags::parse(r#"{"abcde":"1"}"#, limits),
            Err(TagsError::NameTooLong(4))
        );
        assert_eq!(
            Tags::parse(r#"{"a":"12345"}"#, limits),
            Err(TagsError::ValueTooLong("a".into(), 4))
        );
    }

    #[test]
    fn contains_all_is_an_and() {
        let own = tags(&[("a", "1"), ("b", "2"), ("c", "3")]);
        assert!(own.contains_all(&tags(&[])));
        assert!(own.contains_all(&tags(&[("a", "1"), ("c", "3")])));
        assert!(!own.contains_all(&tags(&[("a", "1"), ("c", "4")])));
        assert!(!own.contains_all(&tags(&[("d", "1")])));
        assert!(!tags(&[]).contains_all(&tags(&[("a", "1")])));
    }

    #[test]
    fn last_value_wins_for_a_repeated_name() {
        assert_eq!(tags(&[("a", "1"), ("a", "2")]), tags(&[("a", "2")]));
    }

    #[test]
    fn display_is_json() {
        assert_eq!(
            tags(&[("b", "2"), ("a", "x\"y")]).to_string(),
            r#"{"a":"x\"y","b":"2"}"#
        );
    }
}
