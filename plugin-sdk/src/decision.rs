//! What a phase returns.

use crate::bindings::sluice::plugin::types as wit;

/// What the gateway does after a phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on: next plugin, then the upstream (request phase) or the client.
    Continue,
    /// Answer with this response: skips the rest of the phase (and the upstream, in
    /// the request phase).
    Respond(Reply),
}

/// A response made by a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status code, 100 to 999.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Decision {
    /// Answer with `status` and a body.
    pub fn respond(status: u16, body: impl Into<Vec<u8>>) -> Decision {
        Decision::Respond(Reply { status, headers: Vec::new(), body: body.into() })
    }

    /// Answer with `status` and `value` as a JSON body.
    pub fn respond_json(status: u16, value: &impl serde::Serialize) -> Decision {
        let body = serde_json::to_vec(value).unwrap_or_default();
        Decision::respond(status, body).with_header("content-type", "application/json")
    }

    /// Adds a header to a `Respond` decision (no effect on `Continue`).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Decision {
        if let Decision::Respond(r) = &mut self {
            r.headers.push((name.into(), value.into()));
        }
        self
    }

    /// True for `Continue`.
    pub fn is_continue(&self) -> bool {
        matches!(self, Decision::Continue)
    }

    /// The status of a `Respond` decision.
    pub fn status(&self) -> Option<u16> {
        match self {
            Decision::Respond(r) => Some(r.status),
            Decision::Continue => None,
        }
    }

    pub(crate) fn into_wit(self) -> wit::Decision {
        match self {
            Decision::Continue => wit::Decision::Continue,
            Decision::Respond(r) => wit::Decision::Respond(wit::ResponseSpec {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
        }
    }
}
