//! A `wasi:http/incoming-handler` function for the function-target tests.
//!
//! By default it echoes: the response carries the request's method, path and
//! `x-echo` header as `x-function-method`, `x-function-path` and `x-function-header`,
//! and its body is the request body, written back piece by piece as it is read (the
//! response head goes out before the body is read at all, so a test can see the echo
//! of a first piece before it sends the next).
//!
//! Some paths misbehave on purpose: `/trap` panics, `/trap-mid-body` panics after
//! it sent the response head and part of the body, `/loop` never ends, `/hog`
//! allocates until its memory runs out, and `/outgoing` tries an outgoing request to
//! the authority in the `x-target` header and answers with what happened.

use std::io::Write as _;

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};
use wasip2::io::streams::StreamError;

struct Echo;

impl Guest for Echo {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let path = req.path_with_query().unwrap_or_default();
        match path.as_str() {
            "/trap" => panic!("the function was asked to trap"),
            "/loop" => spin(),
            "/hog" => hog(),
            "/trap-mid-body" => {
                let resp = OutgoingResponse::new(Fields::new());
                let body = resp.body().unwrap();
                ResponseOutparam::set(out, Ok(resp));
                let mut sink = body.write().unwrap();
                sink.write_all(b"the first part").unwrap();
                sink.flush().unwrap();
                panic!("the function trapped in the middle of its body");
            }
            "/outgoing" => {
                let target = header(&req, "x-target").unwrap_or_default();
                respond_text(out, 200, &outgoing(&target));
            }
            _ => echo(req, out, &path),
        }
    }
}

fn header(req: &IncomingRequest, name: &str) -> Option<String> {
    let values = req.headers().get(name);
    values.first().map(|v| String::from_utf8_lossy(v).into_owned())
}

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(o) => o.clone(),
    }
}

fn echo(req: IncomingRequest, out: ResponseOutparam, path: &str) {
    let headers = Fields::new();
    let method = method_name(&req.method());
    headers.append("x-function-method", method.as_bytes()).unwrap();
    headers.append("x-function-path", path.as_bytes()).unwrap();
    if let Some(v) = header(&req, "x-echo") {
        headers.append("x-function-header", v.as_bytes()).unwrap();
    }
    headers.append("content-type", b"application/octet-stream").unwrap();
    let resp = OutgoingResponse::new(headers);
    let body = resp.body().unwrap();
    ResponseOutparam::set(out, Ok(resp));

    let mut sink = body.write().unwrap();
    let incoming = req.consume().unwrap();
    let source = incoming.stream().unwrap();
    loop {
        match source.blocking_read(16 * 1024) {
            Ok(piece) => {
                sink.write_all(&piece).unwrap();
                sink.flush().unwrap();
            }
            Err(StreamError::Closed) => break,
            Err(e) => panic!("reading the request body failed: {e:?}"),
        }
    }
    drop(source);
    drop(sink);
    OutgoingBody::finish(body, None).unwrap();
}

fn respond_text(out: ResponseOutparam, status: u16, text: &str) {
    let headers = Fields::new();
    headers.append("content-type", b"text/plain").unwrap();
    let resp = OutgoingResponse::new(headers);
    resp.set_status_code(status).unwrap();
    let body = resp.body().unwrap();
    ResponseOutparam::set(out, Ok(resp));
    let mut sink = body.write().unwrap();
    sink.write_all(text.as_bytes()).unwrap();
    sink.flush().unwrap();
    drop(sink);
    OutgoingBody::finish(body, None).unwrap();
}

fn outgoing(authority: &str) -> String {
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&Scheme::Http)).unwrap();
    req.set_authority(Some(authority)).unwrap();
    req.set_path_with_query(Some("/from-function")).unwrap();
    let pending = match outgoing_handler::handle(req, None) {
        Ok(p) => p,
        Err(e) => return format!("error: {e:?}"),
    };
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Ok(resp))) => format!("status: {}", resp.status()),
        Some(Ok(Err(e))) => format!("error: {e:?}"),
        other => format!("error: {other:?}"),
    }
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn hog() {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        held.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&held);
    }
}

wasip2::http::proxy::export!(Echo);
