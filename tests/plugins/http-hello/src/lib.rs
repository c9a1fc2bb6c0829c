//! The smallest `wasi:http/incoming-handler` function: answers every request with
//! `hello from a function` and the header `x-function: hello`. The reload tests swap
//! it with `http-echo` to see a changed component picked up.

use std::io::Write as _;

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hello;

impl Guest for Hello {
    fn handle(_req: IncomingRequest, out: ResponseOutparam) {
        let headers = Fields::new();
        headers.append("x-function", b"hello").unwrap();
        headers.append("content-type", b"text/plain").unwrap();
        let resp = OutgoingResponse::new(headers);
        let body = resp.body().unwrap();
        ResponseOutparam::set(out, Ok(resp));
        let mut sink = body.write().unwrap();
        sink.write_all(b"hello from a function").unwrap();
        sink.flush().unwrap();
        drop(sink);
        OutgoingBody::finish(body, None).unwrap();
    }
}

wasip2::http::proxy::export!(Hello);
