//! Method, header and query conditions: parsing them from config and checking them
//! against a request.

use http::Method;
use http::header::{HeaderMap, HeaderName};

/// A route's `methods`; empty means any method.
#[derive(Debug, Clone)]
pub(super) struct Methods(Box<[Method]>);

impl Methods {
    /// Parses `methods`, reporting problems as `(index, message)`. Methods are
    /// case-sensitive tokens (RFC 9110); `get` is rejected rather than silently taken as
    /// `GET`.
    pub(super) fn parse(list: &[String]) -> Result<Methods, Vec<(usize, String)>> {
        let mut methods = Vec::with_capacity(list.len());
        let mut problems = Vec::new();
        for (i, m) in list.iter().enumerate() {
            let upper = m.to_ascii_uppercase();
            let standard = Method::from_bytes(upper.as_bytes()).is_ok_and(|u| is_standard(&u));
            if upper != *m && standard {
                problems.push((i, format!("methods are case-sensitive; write `{upper}`")));
                continue;
            }
            match Method::from_bytes(m.as_bytes()) {
                Ok(method) => {
                    if !methods.contains(&method) {
                        methods.push(method);
                    }
                }
                Err(_) => problems.push((i, format!("invalid method `{m}`"))),
            }
        }
        if problems.is_empty() { Ok(Methods(methods.into_boxed_slice())) } else { Err(problems) }
    }

    /// Whether the route lists methods (and so ranks above routes taking any method).
    pub(super) fn is_restricted(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `method` is accepted.
    pub(super) fn matches(&self, method: &Method) -> bool {
        self.0.is_empty() || self.0.contains(method)
    }

    /// The methods as sorted strings, for duplicate detection.
    pub(super) fn key(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.iter().map(|m| m.as_str().to_owned()).collect();
        v.sort();
        v
    }
}

fn is_standard(m: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ]
    .contains(m)
}

/// One header condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeaderCondition {
    name: HeaderName,
    /// `None`: present with any value (`"*"` in config).
    value: Option<Box<[u8]>>,
}

impl HeaderCondition {
    /// Parses one `headers` entry.
    pub(super) fn parse(name: &str, value: &str) -> Result<HeaderCondition, String> {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name `{name}`"))?;
        if value == "*" {
            return Ok(HeaderCondition { name, value: None });
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err("invalid header value".to_owned());
        }
        Ok(HeaderCondition { name, value: Some(value.as_bytes().into()) })
    }

    /// Whether the request satisfies the condition: the header is present and, unless
    /// any value is accepted, one of its values (a header may be sent several times)
    /// equals the expected one exactly.
    pub(super) fn matches(&self, headers: &HeaderMap) -> bool {
        match &self.value {
            None => headers.contains_key(&self.name),
            Some(v) => headers.get_all(&self.name).iter().any(|h| h.as_bytes() == &**v),
        }
    }
}

impl Ord for HeaderCondition {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.name.as_str(), &self.value).cmp(&(other.name.as_str(), &other.value))
    }
}

impl PartialOrd for HeaderCondition {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// One query-parameter condition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct QueryCondition {
    name: String,
    /// `None`: present with any value (`"*"` in config).
    value: Option<String>,
}

impl QueryCondition {
    /// Parses one `query` entry.
    pub(super) fn parse(name: &str, value: &str) -> Result<QueryCondition, String> {
        if name.is_empty() {
            return Err("a query parameter has a name".to_owned());
        }
        Ok(QueryCondition { name: name.to_owned(), value: (value != "*").then(|| value.to_owned()) })
    }

    /// Whether the query has the parameter (with the value, unless any is accepted),
    /// comparing the percent-decoded names and values of every occurrence.
    pub(super) fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else { return false };
        form_urlencoded::parse(query.as_bytes())
            .any(|(k, v)| k == self.name.as_str() && self.value.as_deref().is_none_or(|want| v == want))
    }
}
