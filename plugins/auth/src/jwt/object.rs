//! A JWT header or claims set read as borrowed `(member name, raw JSON value)` pairs.
//!
//! Only a handful of members are ever looked at (`alg`, `kid`, `exp`, the consumer
//! claim, …), each once, so nothing is built for the rest: no `serde_json::Value`
//! tree, no map, no copies of strings without escapes. This halved the cost of
//! reading a token's claims inside Wasm.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON object's members in document order.
pub struct Object<'a>(Vec<(Str<'a>, &'a RawValue)>);

/// Why a segment is not an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAnObject {
    /// Not JSON at all.
    NotJson,
    /// JSON, but not an object.
    NotObject,
}

impl<'a> Object<'a> {
    /// Reads `bytes` as one JSON object.
    pub fn parse(bytes: &'a [u8]) -> Result<Object<'a>, NotAnObject> {
        serde_json::from_slice(bytes).map_err(|_| match serde_json::from_slice::<IgnoredAny>(bytes) {
            Ok(_) => NotAnObject::NotObject,
            Err(_) => NotAnObject::NotJson,
        })
    }

    /// The raw value of member `name` (the last one, if it repeats, as
    /// `serde_json` maps do).
    fn raw(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().rev().find(|(k, _)| k.0 == name).map(|(_, v)| *v)
    }

    /// True when the object has member `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    /// Member `name` as a string: `Ok(None)` when absent, `Err` when not a string.
    pub fn str(&self, name: &str) -> Result<Option<Cow<'a, str>>, ()> {
        match self.raw(name) {
            None => Ok(None),
            Some(raw) => string(raw).map(Some).ok_or(()),
        }
    }

    /// Member `name` parsed as `T` (`None` when absent or of another type).
    pub fn get<T: de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        serde_json::from_str(self.raw(name)?.get()).ok()
    }
}

/// `raw` as a string, if it is one.
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Str<'_>>(raw.get()).ok().map(|s| s.0)
}

/// A string borrowed from the input when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
                let mut members = Vec::with_capacity(8);
                while let Some(member) = map.next_entry::<Str<'de>, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Object(members))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_read_without_building_values() {
        let doc = br#"{"alg":"HS256","kid":"k\u0031","exp":17.5,"aud":["a","b"],"exp":1700000000}"#;
        let o = Object::parse(doc).unwrap();
        assert!(matches!(o.str("alg"), Ok(Some(Cow::Borrowed("HS256")))));
        assert_eq!(o.str("kid").unwrap().as_deref(), Some("k1"), "escapes are decoded");
        assert_eq!(o.get::<i64>("exp"), Some(1_700_000_000), "the last duplicate wins");
        assert_eq!(o.str("aud"), Err(()), "not a string");
        assert_eq!(o.str("nbf"), Ok(None));
        assert!(o.contains("aud") && !o.contains("crit"));
    }

    #[test]
    fn non_objects_are_told_apart_from_non_json() {
        assert_eq!(Object::parse(b"[1]").err(), Some(NotAnObject::NotObject));
        assert_eq!(Object::parse(b"\"s\"").err(), Some(NotAnObject::NotObject));
        assert_eq!(Object::parse(b"{\"a\":").err(), Some(NotAnObject::NotJson));
        assert_eq!(Object::parse(b"{} x").err(), Some(NotAnObject::NotJson));
    }
}
