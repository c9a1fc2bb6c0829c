//! JSON pointers (RFC 6901): parsed once, then used to set, remove and move fields.

use serde_json::{Map, Value};

/// A parsed JSON pointer: its reference tokens, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// Parses `s` (`""` is the whole document, otherwise `/a/b~1c/0`).
    pub fn parse(s: &str) -> Result<Pointer, String> {
        if s.is_empty() {
            return Ok(Pointer { text: String::new(), tokens: Vec::new() });
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(format!("`{s}` is not a JSON pointer: it must start with `/`"));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    token.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => token.push('~'),
                    Some('1') => token.push('/'),
                    _ => return Err(format!("`{s}` is not a JSON pointer: `~` must be followed by 0 or 1")),
                }
            }
            tokens.push(token);
        }
        Ok(Pointer { text: s.to_owned(), tokens })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for `""`, the whole document.
    pub fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Sets the value at the pointer, creating missing objects on the way. An array
    /// index must exist (or be `-` or the length, to append). False when something
    /// that is not a container is in the way.
    pub fn set(&self, doc: &mut Value, value: Value) -> bool {
        let Some((last, parents)) = self.tokens.split_last() else {
            *doc = value;
            return true;
        };
        let mut cur = doc;
        for token in parents {
            cur = match cur {
                Value::Object(map) => map.entry(token.clone()).or_insert_with(|| Value::Object(Map::new())),
                Value::Array(items) => match index(token, items.len()) {
                    Some(i) if i < items.len() => &mut items[i],
                    _ => return false,
                },
                _ => return false,
            };
        }
        match cur {
            Value::Object(map) => {
                map.insert(last.clone(), value);
                true
            }
            Value::Array(items) => match index(last, items.len()) {
                Some(i) if i < items.len() => {
                    items[i] = value;
                    true
                }
                Some(i) if i == items.len() => {
                    items.push(value);
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// Removes and returns the value at the pointer, if there is one.
    pub fn take(&self, doc: &mut Value) -> Option<Value> {
        let (last, parents) = self.tokens.split_last()?;
        let mut cur = doc;
        for token in parents {
            cur = match cur {
                Value::Object(map) => map.get_mut(token)?,
                Value::Array(items) => {
                    let i = index(token, items.len()).filter(|i| *i < items.len())?;
                    &mut items[i]
                }
                _ => return None,
            };
        }
        match cur {
            Value::Object(map) => map.remove(last),
            Value::Array(items) => {
                let i = index(last, items.len()).filter(|i| *i < items.len())?;
                Some(items.remove(i))
            }
            _ => None,
        }
    }
}

/// An array index token: digits without a leading zero, or `-` (the end).
fn index(token: &str, len: usize) -> Option<usize> {
    if token == "-" {
        return Some(len);
    }
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(s: &str) -> Pointer {
        Pointer::parse(s).unwrap()
    }

    #[test]
    fn rfc6901_escapes_are_decoded() {
        let doc = json!({"a/b": 1, "m~n": 2});
        let mut d = doc.clone();
        assert_eq!(p("/a~1b").take(&mut d), Some(json!(1)));
        assert_eq!(p("/m~0n").take(&mut d), Some(json!(2)));
        assert!(Pointer::parse("a").unwrap_err().contains("must start with `/`"));
        assert!(Pointer::parse("/a~2").unwrap_err().contains("`~` must be followed"));
    }

    #[test]
    fn set_creates_objects_and_appends_to_arrays() {
        let mut d = json!({"items": [1, 2]});
        assert!(p("/user/id").set(&mut d, json!(7)));
        assert!(p("/items/-").set(&mut d, json!(3)));
        assert!(p("/items/0").set(&mut d, json!(0)));
        assert!(!p("/items/9").set(&mut d, json!(9)));
        assert!(!p("/items/0/x").set(&mut d, json!(9)), "a number is in the way");
        assert_eq!(d, json!({"items": [0, 2, 3], "user": {"id": 7}}));
        assert!(p("").set(&mut d, json!("whole")));
        assert_eq!(d, json!("whole"));
    }

    #[test]
    fn take_removes_from_objects_and_arrays() {
        let mut d = json!({"a": {"b": [1, 2, 3]}});
        assert_eq!(p("/a/b/1").take(&mut d), Some(json!(2)));
        assert_eq!(p("/a/b/01").take(&mut d), None);
        assert_eq!(p("/a/x").take(&mut d), None);
        assert_eq!(d, json!({"a": {"b": [1, 3]}}));
    }
}
