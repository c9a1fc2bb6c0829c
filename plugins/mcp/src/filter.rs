//! Filters a `tools/list` answer to the allowed tools, as it streams: a JSON answer is
//! collected and rewritten at its end; an event stream is rewritten line by line, each
//! `data:` line whose JSON-RPC result lists tools losing the ones not allowed.

use serde_json::{Value, json};

/// The largest answer (or event line) filtered; past it the answer is replaced by a
/// JSON-RPC error rather than passed on unfiltered.
pub const MAX_BYTES: usize = 4 << 20;

/// The state of one `tools/list` answer.
#[derive(Debug)]
pub struct ListFilter {
    allow: Vec<String>,
    /// An event stream (else one JSON document).
    stream: bool,
    /// The JSON document so far, or the event stream's unfinished line.
    buf: Vec<u8>,
    /// Past [`MAX_BYTES`].
    overflow: bool,
}

impl ListFilter {
    /// A filter keeping `allow`, for an event stream when `stream`.
    pub fn new(allow: Vec<String>, stream: bool) -> ListFilter {
        ListFilter { allow, stream, buf: Vec::new(), overflow: false }
    }

    /// Takes the next piece of the answer; returns what goes to the client now.
    pub fn push(&mut self, chunk: &[u8], last: bool) -> Vec<u8> {
        if !self.overflow {
            self.buf.extend_from_slice(chunk);
            self.overflow = self.buf.len() > MAX_BYTES;
            if self.overflow {
                self.buf = Vec::new();
            }
        }
        if self.overflow {
            if !last {
                return Vec::new();
            }
            let error = json!({"jsonrpc": "2.0", "id": null,
                               "error": {"code": -32603, "message": "the tools/list answer is too large to filter"}});
            return if self.stream {
                format!("event: message\ndata: {error}\n\n").into_bytes()
            } else {
                error.to_string().into_bytes()
            };
        }
        if !self.stream {
            if !last {
                return Vec::new();
            }
            let whole = std::mem::take(&mut self.buf);
            return self.document(&whole);
        }
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            self.line(&line, &mut out);
        }
        if last && !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.line(&rest, &mut out);
        }
        out
    }

    /// A whole JSON answer, filtered (unchanged when it is not one).
    fn document(&self, bytes: &[u8]) -> Vec<u8> {
        let Ok(mut v) = serde_json::from_slice::<Value>(bytes) else { return bytes.to_vec() };
        if self.keep_allowed(&mut v) { v.to_string().into_bytes() } else { bytes.to_vec() }
    }

    /// One event-stream line (with its line end), filtered into `out`.
    fn line(&self, line: &[u8], out: &mut Vec<u8>) {
        let text = std::str::from_utf8(line).unwrap_or_default();
        let body = text.trim_end_matches(['\r', '\n']);
        if let Some(data) = body.strip_prefix("data:")
            && let Ok(mut v) = serde_json::from_str::<Value>(data.strip_prefix(' ').unwrap_or(data))
            && self.keep_allowed(&mut v)
        {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(v.to_string().as_bytes());
            out.extend_from_slice(&line[body.len()..]);
            return;
        }
        out.extend_from_slice(line);
    }

    /// Drops the tools not allowed from a JSON-RPC result listing tools; false when
    /// `v` is no such result.
    fn keep_allowed(&self, v: &mut Value) -> bool {
        let Some(tools) = v.pointer_mut("/result/tools").and_then(Value::as_array_mut) else { return false };
        tools.retain(|t| {
            t.get("name").and_then(Value::as_str).is_some_and(|n| self.allow.iter().any(|a| a == n))
        });
        true
    }
}
