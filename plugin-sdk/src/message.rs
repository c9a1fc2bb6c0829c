//! [`Request`] and [`Response`]: named accessors over the gateway's request and
//! response (or over fakes from [`testing`](crate::testing) in native unit tests).

use crate::bindings::sluice::plugin::types as wit;
use crate::testing::{FakeRequest, FakeResponse};
use crate::{BodyError, HeaderError, PathError, StatusError, UpstreamError};

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
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        match &mut self.0 {
            Req::Host(r) => r.set_header(name, value),
            Req::Fake(f) => f.headers.set(name, value, false),
        }
    }

    /// Adds a value to a header.
    pub fn append_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        match &mut self.0 {
            Req::Host(r) => r.append_header(name, value),
            Req::Fake(f) => f.headers.set(name, value, true),
        }
    }

    /// Removes a header.
    pub fn remove_header(&mut self, name: &str) -> Result<(), HeaderError> {
        match &mut self.0 {
            Req::Host(r) => r.remove_header(name),
            Req::Fake(f) => f.headers.remove(name),
        }
    }

    /// Replaces the path and query sent upstream.
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
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        match &mut self.0 {
            Resp::Host(r) => r.set_header(name, value),
            Resp::Fake(f) => f.headers.set(name, value, false),
        }
    }

    /// Adds a value to a header.
    pub fn append_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        match &mut self.0 {
            Resp::Host(r) => r.append_header(name, value),
            Resp::Fake(f) => f.headers.set(name, value, true),
        }
    }

    /// Removes a header.
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
    pub fn set_body(&mut self, body: &[u8]) -> Result<(), BodyError> {
        match &mut self.0 {
            Resp::Host(r) => r.set_body(body),
            Resp::Fake(f) => {
                f.body = body.to_vec();
                Ok(())
            }
        }
    }
}
