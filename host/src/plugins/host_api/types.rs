//! The `request` and `response` resources: host methods over the store's slots.
//! Bad plugin input (an invalid header, path or status) is a WIT error, never a trap.

use std::str::FromStr;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Uri};
use wasmtime::component::Resource;

use crate::plugins::bindings::sluice::plugin::types::{
    Consumer as WitConsumer, HeaderOp, Host, HostRequest, HostResponse,
};
use crate::plugins::bindings::{BodyError, HeaderError, PathError, StatusError, UpstreamError};
use crate::plugins::output::{OutputLimit, Written};
use crate::plugins::state::{Consumer, HeaderEdit, PluginState, RequestHandle, ResponseHandle};

type Res<T> = wasmtime::Result<T>;

/// Headers the gateway manages itself: plugins may read but not change them.
fn forbidden(name: &HeaderName) -> bool {
    matches!(
        *name,
        header::CONNECTION
            | header::TRANSFER_ENCODING
            | header::CONTENT_LENGTH
            | header::TE
            | header::TRAILER
    ) || name == "keep-alive"
        || name == "proxy-connection"
        || name == header::UPGRADE
}

fn writable_name(name: &str) -> Result<HeaderName, HeaderError> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| HeaderError::InvalidName)?;
    if forbidden(&name) { Err(HeaderError::Forbidden) } else { Ok(name) }
}

fn first_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn first_bytes(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    headers.get(name).map(|v| v.as_bytes().to_vec())
}

fn all_bytes(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
    headers.get_all(name).iter().map(|v| v.as_bytes().to_vec()).collect()
}

fn list(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())).collect()
}

/// A checked header change: every header method (and `edit-response-header`) goes
/// through here, whether the change is applied at once or later.
fn header_edit(op: HeaderOp, name: &str, value: &str) -> Result<HeaderEdit, HeaderError> {
    let name = writable_name(name)?;
    let value = || HeaderValue::from_str(value).map_err(|_| HeaderError::InvalidValue);
    Ok(match op {
        HeaderOp::Set => HeaderEdit::Set(name, value()?),
        HeaderOp::Append => HeaderEdit::Append(name, value()?),
        HeaderOp::Remove => HeaderEdit::Remove(name),
    })
}

/// Checks and applies one change to `headers` now. A refused change is the plugin's
/// to handle; a change past the output bounds stops the plugin.
fn edit(
    headers: &mut HeaderMap,
    written: &mut Written,
    op: HeaderOp,
    name: &str,
    value: &str,
) -> Res<Result<(), HeaderError>> {
    let edit = match header_edit(op, name, value) {
        Ok(edit) => edit,
        Err(e) => return Ok(Err(e)),
    };
    written.charge(name.len() + value.len()).map_err(OutputLimit::trap)?;
    edit.apply(headers).map_err(OutputLimit::trap)?;
    Ok(Ok(()))
}

fn to_wit(c: &Option<Consumer>) -> Option<WitConsumer> {
    c.as_ref().map(|c| WitConsumer { name: c.name.clone(), groups: c.groups.clone() })
}

fn read_body(body: &Option<Bytes>, allowed: bool) -> Result<Vec<u8>, BodyError> {
    match body {
        Some(b) if allowed => Ok(b.to_vec()),
        _ => Err(BodyError::NotBuffered),
    }
}

impl Host for PluginState {}

impl HostRequest for PluginState {
    fn method(&mut self, _: Resource<RequestHandle>) -> Res<String> {
        Ok(self.req.method.as_str().to_owned())
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> Res<String> {
        Ok(self.req.uri.path().to_owned())
    }

    fn query(&mut self, _: Resource<RequestHandle>) -> Res<Option<String>> {
        Ok(self.req.uri.query().map(str::to_owned))
    }

    fn header(&mut self, _: Resource<RequestHandle>, name: String) -> Res<Option<String>> {
        Ok(first_str(&self.req.headers, &name))
    }

    fn header_bytes(&mut self, _: Resource<RequestHandle>, name: String) -> Res<Option<Vec<u8>>> {
        Ok(first_bytes(&self.req.headers, &name))
    }

    fn header_all(&mut self, _: Resource<RequestHandle>, name: String) -> Res<Vec<Vec<u8>>> {
        Ok(all_bytes(&self.req.headers, &name))
    }

    fn headers(&mut self, _: Resource<RequestHandle>) -> Res<Vec<(String, Vec<u8>)>> {
        Ok(list(&self.req.headers))
    }

    fn set_header(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
        value: String,
    ) -> Res<Result<(), HeaderError>> {
        edit(&mut self.req.headers, &mut self.req.written, HeaderOp::Set, &name, &value)
    }

    fn append_header(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
        value: String,
    ) -> Res<Result<(), HeaderError>> {
        edit(&mut self.req.headers, &mut self.req.written, HeaderOp::Append, &name, &value)
    }

    fn remove_header(&mut self, _: Resource<RequestHandle>, name: String) -> Res<Result<(), HeaderError>> {
        edit(&mut self.req.headers, &mut self.req.written, HeaderOp::Remove, &name, "")
    }

    fn set_path(&mut self, _: Resource<RequestHandle>, path_and_query: String) -> Res<Result<(), PathError>> {
        if !path_and_query.starts_with('/') {
            return Ok(Err(PathError::Invalid));
        }
        let Ok(pq) = PathAndQuery::from_str(&path_and_query) else {
            return Ok(Err(PathError::Invalid));
        };
        let mut parts = std::mem::take(&mut self.req.uri).into_parts();
        parts.path_and_query = Some(pq);
        match Uri::from_parts(parts) {
            Ok(uri) => {
                self.req.uri = uri;
                Ok(Ok(()))
            }
            Err(_) => Ok(Err(PathError::Invalid)),
        }
    }

    fn body(&mut self, _: Resource<RequestHandle>) -> Res<Result<Vec<u8>, BodyError>> {
        Ok(read_body(&self.req.body, self.req.body_allowed))
    }

    fn set_body(&mut self, _: Resource<RequestHandle>, body: Vec<u8>) -> Res<Result<(), BodyError>> {
        if self.req.body.is_none() || !self.req.body_allowed {
            return Ok(Err(BodyError::NotBuffered));
        }
        self.req.body = Some(Bytes::from(body));
        self.req.body_changed = true;
        Ok(Ok(()))
    }

    fn set_upstream(&mut self, _: Resource<RequestHandle>, name: String) -> Res<Result<(), UpstreamError>> {
        if !self.env.upstreams.contains(name.as_str()) {
            return Ok(Err(UpstreamError::Unknown));
        }
        self.req.upstream = Some(name);
        Ok(Ok(()))
    }

    fn route(&mut self, _: Resource<RequestHandle>) -> Res<String> {
        Ok(self.route.to_string())
    }

    fn client_ip(&mut self, _: Resource<RequestHandle>) -> Res<String> {
        Ok(self.req.client_ip.map(|ip| ip.to_string()).unwrap_or_default())
    }

    fn request_id(&mut self, _: Resource<RequestHandle>) -> Res<String> {
        Ok(self.req.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned())
    }

    fn path_params(&mut self, _: Resource<RequestHandle>) -> Res<Vec<(String, String)>> {
        Ok(self.req.params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    fn consumer(&mut self, _: Resource<RequestHandle>) -> Res<Option<WitConsumer>> {
        Ok(to_wit(&self.req.consumer))
    }

    fn set_consumer(&mut self, _: Resource<RequestHandle>, consumer: Option<WitConsumer>) -> Res<()> {
        let size =
            consumer.as_ref().map_or(0, |c| c.name.len() + c.groups.iter().map(String::len).sum::<usize>());
        self.req.written.charge(size).map_err(OutputLimit::trap)?;
        self.req.consumer = consumer.map(|c| Consumer { name: c.name, groups: c.groups });
        Ok(())
    }

    fn context(&mut self, _: Resource<RequestHandle>, key: String) -> Res<Option<String>> {
        Ok(self.req.context.get(&self.env.plugin, &key).map(str::to_owned))
    }

    fn set_context(&mut self, _: Resource<RequestHandle>, key: String, value: String) -> Res<()> {
        self.req.written.charge(key.len() + value.len()).map_err(OutputLimit::trap)?;
        self.req.context.set(&self.env.plugin, key, value).map_err(OutputLimit::trap)
    }

    fn edit_response_header(
        &mut self,
        _: Resource<RequestHandle>,
        op: HeaderOp,
        name: String,
        value: String,
    ) -> Res<Result<(), HeaderError>> {
        let edit = match header_edit(op, &name, &value) {
            Ok(edit) => edit,
            Err(e) => return Ok(Err(e)),
        };
        self.req.written.charge(name.len() + value.len()).map_err(OutputLimit::trap)?;
        self.req.response_edits.push(self.req.entry, edit).map_err(OutputLimit::trap)?;
        Ok(Ok(()))
    }

    fn drop(&mut self, _: Resource<RequestHandle>) -> Res<()> {
        // The handle is a fixed rep into the store's slot; nothing to free.
        Ok(())
    }
}

impl HostResponse for PluginState {
    fn status(&mut self, _: Resource<ResponseHandle>) -> Res<u16> {
        Ok(self.resp.status.as_u16())
    }

    fn set_status(&mut self, _: Resource<ResponseHandle>, status: u16) -> Res<Result<(), StatusError>> {
        match crate::error::final_status(status) {
            Some(s) => {
                self.resp.status = s;
                Ok(Ok(()))
            }
            None => Ok(Err(StatusError::Invalid)),
        }
    }

    fn header(&mut self, _: Resource<ResponseHandle>, name: String) -> Res<Option<String>> {
        Ok(first_str(&self.resp.headers, &name))
    }

    fn header_bytes(&mut self, _: Resource<ResponseHandle>, name: String) -> Res<Option<Vec<u8>>> {
        Ok(first_bytes(&self.resp.headers, &name))
    }

    fn header_all(&mut self, _: Resource<ResponseHandle>, name: String) -> Res<Vec<Vec<u8>>> {
        Ok(all_bytes(&self.resp.headers, &name))
    }

    fn headers(&mut self, _: Resource<ResponseHandle>) -> Res<Vec<(String, Vec<u8>)>> {
        Ok(list(&self.resp.headers))
    }

    fn set_header(
        &mut self,
        _: Resource<ResponseHandle>,
        name: String,
        value: String,
    ) -> Res<Result<(), HeaderError>> {
        edit(&mut self.resp.headers, &mut self.resp.written, HeaderOp::Set, &name, &value)
    }

    fn append_header(
        &mut self,
        _: Resource<ResponseHandle>,
        name: String,
        value: String,
    ) -> Res<Result<(), HeaderError>> {
        edit(&mut self.resp.headers, &mut self.resp.written, HeaderOp::Append, &name, &value)
    }

    fn remove_header(&mut self, _: Resource<ResponseHandle>, name: String) -> Res<Result<(), HeaderError>> {
        edit(&mut self.resp.headers, &mut self.resp.written, HeaderOp::Remove, &name, "")
    }

    fn body(&mut self, _: Resource<ResponseHandle>) -> Res<Result<Vec<u8>, BodyError>> {
        Ok(read_body(&self.resp.body, self.resp.body_allowed))
    }

    fn set_body(&mut self, _: Resource<ResponseHandle>, body: Vec<u8>) -> Res<Result<(), BodyError>> {
        if self.resp.body.is_none() || !self.resp.body_allowed {
            return Ok(Err(BodyError::NotBuffered));
        }
        self.resp.body = Some(Bytes::from(body));
        self.resp.body_changed = true;
        Ok(Ok(()))
    }

    fn consumer(&mut self, _: Resource<ResponseHandle>) -> Res<Option<WitConsumer>> {
        Ok(to_wit(&self.resp.consumer))
    }

    fn context(&mut self, _: Resource<ResponseHandle>, key: String) -> Res<Option<String>> {
        Ok(self.resp.context.get(&self.env.plugin, &key).map(str::to_owned))
    }

    fn drop(&mut self, _: Resource<ResponseHandle>) -> Res<()> {
        Ok(())
    }
}
