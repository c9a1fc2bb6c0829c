//! The aggregate target: a request fans out to its calls in parallel (each with its
//! own timeout), and their JSON answers are composed into one object.
//!
//! The calls carry the request's headers as the chain left them (an auth plugin's
//! consumer headers included), no body, and the path their template gives. A required
//! call that fails fails the request (`502`, `504` for a timeout); an optional one
//! leaves `null` under its name and a line in `_errors`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header};
use serde_json::{Map, Value};

use crate::body::{self, Body, ReadError};
use crate::config::{AggregateConfig, DEFAULT_AGGREGATE_MAX_BODY, PathTemplate};
use crate::error::ProxyError;
use crate::exchange::Exchange;
use crate::upstream::Upstream;

/// A built aggregate target.
#[derive(Debug)]
pub struct Aggregate {
    calls: Vec<Call>,
    max_body: usize,
}

#[derive(Debug)]
struct Call {
    name: String,
    upstream: Arc<Upstream>,
    path: PathTemplate,
    method: Method,
    timeout: Option<Duration>,
    required: bool,
    merge: bool,
}

/// Why a call gave no answer.
enum Failure {
    Proxy(ProxyError),
    Status(u16),
    TimedOut(Duration),
    TooLong,
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Proxy(e) => e.to_string(),
            Failure::Status(s) => format!("answered {s}"),
            Failure::TimedOut(t) => format!("no answer within {t:?}"),
            Failure::TooLong => "answer longer than max_body".to_owned(),
        }
    }
}

impl Aggregate {
    /// The target of a validated config; `find` gives each upstream name's pool.
    pub fn new(cfg: &AggregateConfig, find: impl Fn(&str) -> Option<Arc<Upstream>>) -> Option<Aggregate> {
        let mut calls = Vec::with_capacity(cfg.calls.len());
        for c in &cfg.calls {
            calls.push(Call {
                name: c.name.clone(),
                upstream: find(c.upstream.as_str())?,
                path: PathTemplate::parse(&c.path).ok()?,
                method: c
                    .method
                    .as_deref()
                    .map_or(Ok(Method::GET), |m| Method::from_bytes(m.as_bytes()))
                    .ok()?,
                timeout: c.timeout.map(|t| t.get()),
                required: c.required,
                merge: c.merge,
            });
        }
        Some(Aggregate { calls, max_body: cfg.max_body.unwrap_or(DEFAULT_AGGREGATE_MAX_BODY).0 as usize })
    }
}

/// Makes the calls for `req` and composes the answer.
pub async fn respond<B>(
    req: Request<B>,
    agg: &Aggregate,
    ex: &mut Exchange,
) -> Result<Response<Body>, ProxyError> {
    let (parts, _) = req.into_parts();
    let query: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let mut headers = parts.headers;
    for h in
        [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONTENT_TYPE, header::CONTENT_ENCODING]
    {
        headers.remove(h);
    }
    let params = &ex.params;
    // A dot segment in a parameter would climb the upstream's tree (the edge resolves
    // them in the client's path unless `paths.normalize` is off).
    let dotty = |v: &str| matches!(v.replace("%2e", ".").replace("%2E", ".").as_str(), "." | "..");
    if params.iter().any(|(_, v)| dotty(v)) {
        return Err(ProxyError::BadRequest("a path parameter is a dot segment"));
    }
    let calls = agg.calls.iter().map(|c| {
        let path = c.path.render(
            |n| params.iter().find(|(k, _)| &**k == n).map(|(_, v)| v.as_str()),
            |n| query.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()),
        );
        let mut req = Request::new(body::empty());
        *req.method_mut() = c.method.clone();
        *req.headers_mut() = headers.clone();
        let uri = path
            .parse()
            .map_err(|_| Failure::Proxy(ProxyError::Internal(format!("call `{}`: bad path", c.name))));
        async move {
            *req.uri_mut() = uri?;
            let call = async {
                let resp = c.upstream.forward(req).await.map_err(Failure::Proxy)?;
                if !resp.status().is_success() {
                    return Err(Failure::Status(resp.status().as_u16()));
                }
                let bytes =
                    body::read_limited(resp.into_body(), agg.max_body).await.map_err(|e| match e {
                        ReadError::TooLong => Failure::TooLong,
                        ReadError::Failed(e) => Failure::Proxy(ProxyError::Internal(e.to_string())),
                    })?;
                Ok(value_of(&bytes))
            };
            match c.timeout {
                Some(t) => tokio::time::timeout(t, call).await.unwrap_or(Err(Failure::TimedOut(t))),
                None => call.await,
            }
        }
    });
    let results = futures_util::future::join_all(calls).await;

    let mut out = Map::new();
    let mut errors = Map::new();
    for (c, result) in agg.calls.iter().zip(results) {
        match result {
            Ok(Value::Object(fields)) if c.merge => out.extend(fields),
            Ok(v) => {
                out.insert(c.name.clone(), v);
            }
            Err(f) if c.required => return Err(failed_call(c, f)),
            Err(f) => {
                if !c.merge {
                    out.insert(c.name.clone(), Value::Null);
                }
                errors.insert(c.name.clone(), Value::String(f.describe()));
            }
        }
    }
    if !errors.is_empty() {
        out.insert("_errors".to_owned(), Value::Object(errors));
    }
    ex.upstream = Some(Arc::from("aggregate"));
    let mut resp = Response::new(body::full(serde_json::to_vec(&Value::Object(out)).unwrap_or_default()));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// The error a required call's failure fails the request with.
fn failed_call(c: &Call, f: Failure) -> ProxyError {
    let target = format!("{} (call `{}`)", c.upstream.name(), c.name);
    match f {
        Failure::TimedOut(after) => ProxyError::UpstreamTimeout { target, after },
        Failure::Proxy(ProxyError::UpstreamTimeout { after, .. }) => {
            ProxyError::UpstreamTimeout { target, after }
        }
        other => ProxyError::Upstream { target, source: other.describe().into(), nothing_sent: false },
    }
}

/// A call's answer in the composed object: its JSON when it parses as JSON, else its
/// text.
fn value_of(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}
