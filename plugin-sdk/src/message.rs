//! [`Request`] and [`Response`]: named accessors over the gateway's request and
//! response (or over fakes from [`testing`](crate::testing) in native unit tests).
//!
//! Every change can be refused (an invalid header name or value, a gateway-managed
//! header, a body that was not buffered) and says so in a `Result`. Handle it: a
//! change the plugin relies on that did not happen is a plugin fault
//! ([`Decision::fault`](crate::Decision::fault)), not something to drop with `let _`.

use crate::bindings::sluice::plugin::types as wit;
use crate::testing::{FakeRequest, FakeResponse};
use crate::{BodyError, Consumer, HeaderError, PathError, StatusError, UpstreamError};

/// Headers the gateway manages itself (framing and connection headers): a plugin's
/// change to one of them is always refused.
pub const MANAGED_HEADERS: &[&str] = &[
    "connection",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "upgrade",
];

/// Whether `name` is a valid header name (an RFC 9110 token).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `name` is one of the [`MANAGED_HEADERS`] (any case).
pub fn is_managed_header(name: &str) -> bool {
    MANAGED_HEADERS.iter().any(|m| m.eq_ignore_ascii_case(name))
}

enum Req<'a> {
    Host(&'a wit::Request),
    Fake(&'a mut FakeRequest),
}

/// The client's request as it will go upstream. Only what you read crosses into the
/// plugin: prefer [`Request::header`] over [`Request::headers`].
pub struct Request<'a>(Req<'a>);

impl<'a> Request<'a> {
    pub(crate) fn host(r: &'a wit::Request) -> Self {
        Request(Req::Host(r))
    }

    pub(crate) fn fake(r: &'a mut FakeRequest) -> Self {
        Request(Req::Fake(r))
    }

    /// The method, like `GET`.
    pub fn method(&self) -> String {
        match &self.0 {
            Req::Host(r) => r.method(),
            Req::Fake(f) => f.method.clone(),
        }
    }

    /// The path without the query.
    pub fn path(&self) -> String {
        match &self.0 {
            Req::Host(r) => r.path(),
            Req::Fake(f) => f.path.clone(),
        }
    }

    /// The query string without `?`, if any.
    pub fn query(&self) -> Option<String> {
        match &self.0 {
            Req::Host(r) => r.query(),
            Req::Fake(f) => f.query.clone(),
        }
    }

    /// The first value of a header (case-insensitive), if present and UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        match &self.0 {
            Req::Host(r) => r.header(name),
            Req::Fake(f) => f.header(name),
        }
    }

    /// The first value of a header as bytes.
    pub fn header_bytes(&self, name: &str) -> Option<Vec<u8>> {
        match &self.0 {
            Req::Host(r) => r.header_bytes(name),
            Req::Fake(f) => f.headers.get(name).map(|v| v.as_bytes().to_vec()),
        }
    }

    /// Every header as (lowercase name, value bytes).
    pub fn headers(&self) -> Vec<(String, Vec<u8>)> {
        match &self.0 {
            Req::Host(r) => r.headers(),
            Req::Fake(f) => f.headers.list(),
        }
    }

    /// Replaces a header's values with `value`.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        match &mut self.0 {
            Req::Host(r) => r.set_header(name, value),
            Req::Fake(f) => f.headers.set(name, value, false),
        }
    }

    /// Adds a value to a header.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    pub fn append_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        match &mut self.0 {
            Req::Host(r) => r.append_header(name, value),
            Req::Fake(f) => f.headers.set(name, value, true),
        }
    }

    /// Removes a header.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    pub fn remove_header(&mut self, name: &str) -> Result<(), HeaderError> {
        match &mut self.0 {
            Req::Host(r) => r.remove_header(name),
            Req::Fake(f) => f.headers.remove(name),
        }
    }

    /// Replaces the path and query sent upstream.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    pub fn set_path(&mut self, path_and_query: &str) -> Result<(), PathError> {
        match &mut self.0 {
            Req::Host(r) => r.set_path(path_and_query),
            Req::Fake(f) => {
                if !path_and_query.starts_with('/') {
                    return Err(PathError::Invalid);
                }
                let (p, q) = match path_and_query.split_once('?') {
                    Some((p, q)) => (p, Some(q.to_owned())),
                    None => (path_and_query, None),
                };
                f.path = p.to_owned();
                f.query = q;
                Ok(())
            }
        }
    }

    /// The whole body (needs [`Phases::REQUEST_BODY`](crate::Phases::REQUEST_BODY)).
    pub fn body(&self) -> Result<Vec<u8>, BodyError> {
        match &self.0 {
            Req::Host(r) => r.body(),
            Req::Fake(f) => Ok(f.body.clone()),
        }
    }

    /// Replaces the body (needs [`Phases::REQUEST_BODY`](crate::Phases::REQUEST_BODY)).
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    pub fn set_body(&mut self, body: &[u8]) -> Result<(), BodyError> {
        match &mut self.0 {
            Req::Host(r) => r.set_body(body),
            Req::Fake(f) => {
                f.body = body.to_vec();
                Ok(())
            }
        }
    }

    /// Sends the request to another upstream pool of the gateway's config.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    pub fn set_upstream(&mut self, name: &str) -> Result<(), UpstreamError> {
        match &mut self.0 {
            Req::Host(r) => r.set_upstream(name),
            Req::Fake(f) => {
                f.upstream = Some(name.to_owned());
                Ok(())
            }
        }
    }

    /// The name of the matched route.
    pub fn route(&self) -> String {
        match &self.0 {
            Req::Host(r) => r.route(),
            Req::Fake(f) => f.route.clone(),
        }
    }

    /// The request's id (as the gateway sends it upstream and to the client); put it
    /// in error bodies the plugin makes.
    pub fn request_id(&self) -> String {
        match &self.0 {
            Req::Host(r) => r.request_id(),
            Req::Fake(f) => f.request_id.clone(),
        }
    }

    /// Every value of a header, in order, as raw bytes.
    pub fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        match &self.0 {
            Req::Host(r) => r.header_all(name),
            Req::Fake(f) => f.headers.get_all(name).into_iter().map(|v| v.as_bytes().to_vec()).collect(),
        }
    }

    /// The client's IP address (the TCP peer), like `192.0.2.7`.
    pub fn client_ip(&self) -> String {
        match &self.0 {
            Req::Host(r) => r.client_ip(),
            Req::Fake(f) => f.client_ip.clone(),
        }
    }

    /// The path parameters the route's pattern captured, in pattern order.
    pub fn path_params(&self) -> Vec<(String, String)> {
        match &self.0 {
            Req::Host(r) => r.path_params(),
            Req::Fake(f) => f.params.clone(),
        }
    }

    /// One path parameter by name.
    pub fn path_param(&self, name: &str) -> Option<String> {
        self.path_params().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The consumer an earlier (authentication) plugin set, if any.
    pub fn consumer(&self) -> Option<Consumer> {
        match &self.0 {
            Req::Host(r) => r.consumer(),
            Req::Fake(f) => f.consumer.clone(),
        }
    }

    /// Sets (or clears) the consumer the rest of the chain and the access log see.
    pub fn set_consumer(&mut self, consumer: Option<Consumer>) {
        match &mut self.0 {
            Req::Host(r) => r.set_consumer(consumer.as_ref()),
            Req::Fake(f) => f.consumer = consumer,
        }
    }

    /// A value this plugin stored for this request with [`Request::set_context`].
    pub fn context(&self, key: &str) -> Option<String> {
        match &self.0 {
            Req::Host(r) => r.context(key),
            Req::Fake(f) => f.context.get(key).cloned(),
        }
    }

    /// Keeps a value for the rest of this request, for example for the response
    /// phase ([`Response::context`]). Keys are private to the plugin.
    pub fn set_context(&mut self, key: &str, value: &str) {
        match &mut self.0 {
            Req::Host(r) => r.set_context(key, value),
            Req::Fake(f) => {
                f.context.insert(key.to_owned(), value.to_owned());
            }
        }
    }

    /// Sets a header on this request's response without a response phase: the
    /// gateway applies it when the response phase reaches this plugin (just before
    /// its [`Plugin::on_response`](crate::Plugin::on_response), if it has one), to the
    /// upstream's response or to a later plugin's answer. A plugin whose response work
    /// is known now can leave [`Phases::RESPONSE`](crate::Phases::RESPONSE) out of its
    /// phases and save a call per request.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    pub fn set_response_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.edit_response_header(wit::HeaderOp::Set, name, value)
    }

    /// Like [`Request::set_response_header`], but adds the value after the
    /// response's existing values of the header.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    pub fn append_response_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.edit_response_header(wit::HeaderOp::Append, name, value)
    }

    /// Like [`Request::set_response_header`], but removes the header from the
    /// response.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    pub fn remove_response_header(&mut self, name: &str) -> Result<(), HeaderError> {
        self.edit_response_header(wit::HeaderOp::Remove, name, "")
    }

    fn edit_response_header(
        &mut self,
        op: wit::HeaderOp,
        name: &str,
        value: &str,
    ) -> Result<(), HeaderError> {
        match &mut self.0 {
            Req::Host(r) => r.edit_response_header(op, name, value),
            Req::Fake(f) => f.edit_response_header(op, name, value),
        }
    }
}

enum Resp<'a> {
    Host(&'a wit::Response),
    Fake(&'a mut FakeResponse),
}

/// The upstream's response as it will go to the client.
pub struct Response<'a>(Resp<'a>);

impl<'a> Response<'a> {
    pub(crate) fn host(r: &'a wit::Response) -> Self {
        Response(Resp::Host(r))
    }

    pub(crate) fn fake(r: &'a mut FakeResponse) -> Self {
        Response(Resp::Fake(r))
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        match &self.0 {
            Resp::Host(r) => r.status(),
            Resp::Fake(f) => f.status,
        }
    }

    /// Replaces the status code.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    pub fn set_status(&mut self, status: u16) -> Result<(), StatusError> {
        match &mut self.0 {
            Resp::Host(r) => r.set_status(status),
            Resp::Fake(f) => {
                if !(100..=999).contains(&status) {
                    return Err(StatusError::Invalid);
                }
                f.status = status;
                Ok(())
            }
        }
    }

    /// The first value of a header, if present and UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        match &self.0 {
            Resp::Host(r) => r.header(name),
            Resp::Fake(f) => f.header(name),
        }
    }

    /// Every header as (lowercase name, value bytes).
    pub fn headers(&self) -> Vec<(String, Vec<u8>)> {
        match &self.0 {
            Resp::Host(r) => r.headers(),
            Resp::Fake(f) => f.headers.list(),
        }
    }

    /// Replaces a header's values with `value`.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        match &mut self.0 {
            Resp::Host(r) => r.set_header(name, value),
            Resp::Fake(f) => f.headers.set(name, value, false),
        }
    }

    /// Adds a value to a header.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    pub fn append_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        match &mut self.0 {
            Resp::Host(r) => r.append_header(name, value),
            Resp::Fake(f) => f.headers.set(name, value, true),
        }
    }

    /// Removes a header.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    pub fn remove_header(&mut self, name: &str) -> Result<(), HeaderError> {
        match &mut self.0 {
            Resp::Host(r) => r.remove_header(name),
            Resp::Fake(f) => f.headers.remove(name),
        }
    }

    /// The whole body (needs [`Phases::RESPONSE_BODY`](crate::Phases::RESPONSE_BODY)).
    pub fn body(&self) -> Result<Vec<u8>, BodyError> {
        match &self.0 {
            Resp::Host(r) => r.body(),
            Resp::Fake(f) => Ok(f.body.clone()),
        }
    }

    /// Replaces the body (needs [`Phases::RESPONSE_BODY`](crate::Phases::RESPONSE_BODY)).
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    pub fn set_body(&mut self, body: &[u8]) -> Result<(), BodyError> {
        match &mut self.0 {
            Resp::Host(r) => r.set_body(body),
            Resp::Fake(f) => {
                f.body = body.to_vec();
                Ok(())
            }
        }
    }

    /// Every value of a header, in order, as raw bytes.
    pub fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        match &self.0 {
            Resp::Host(r) => r.header_all(name),
            Resp::Fake(f) => f.headers.get_all(name).into_iter().map(|v| v.as_bytes().to_vec()).collect(),
        }
    }

    /// The request's consumer, as the request phase left it.
    pub fn consumer(&self) -> Option<Consumer> {
        match &self.0 {
            Resp::Host(r) => r.consumer(),
            Resp::Fake(f) => f.consumer.clone(),
        }
    }

    /// A value this plugin stored with [`Request::set_context`] during this request.
    pub fn context(&self, key: &str) -> Option<String> {
        match &self.0 {
            Resp::Host(r) => r.context(key),
            Resp::Fake(f) => f.context.get(key).cloned(),
        }
    }
}

/// The header operations requests and responses share, for code that edits either one
/// (`&mut dyn Headers`). Each method is the type's own method of the same name.
pub trait Headers {
    /// Every value of a header, in order, as raw bytes.
    fn header_all(&self, name: &str) -> Vec<Vec<u8>>;
    /// Replaces all values of a header with one value.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    fn set_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError>;
    /// Adds a value to a header, keeping the existing ones.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    fn append_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError>;
    /// Removes every value of a header.
    #[must_use = "a refused change must be handled (`Decision::fault` if the plugin cannot go on)"]
    fn remove_header(&mut self, name: &str) -> Result<(), HeaderError>;
}

macro_rules! headers_by_inherent_methods {
    ($t:ident) => {
        impl Headers for $t<'_> {
            fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
                $t::header_all(self, name)
            }
            fn set_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
                $t::set_header(self, name, value)
            }
            fn append_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
                $t::append_header(self, name, value)
            }
            fn remove_header(&mut self, name: &str) -> Result<(), HeaderError> {
                $t::remove_header(self, name)
            }
        }
    };
}
headers_by_inherent_methods!(Request);
headers_by_inherent_methods!(Response);
