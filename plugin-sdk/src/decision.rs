//! What a phase returns, and how a phase fails ([`Decision::fault`]).

use crate::bindings::sluice::plugin::types as wit;

/// How a fault's panic message starts, so [`testing::catch_fault`] tells a fault from
/// any other panic.
///
/// [`testing::catch_fault`]: crate::testing::catch_fault
pub(crate) const FAULT_PREFIX: &str = "plugin fault: ";

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
    /// Status code, 200 to 999 (a final status).
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

    /// Fails the call as a **plugin fault** instead of deciding anything: the gateway
    /// applies the entry's `on_error` policy (`fail_closed`, the default: the client
    /// gets the gateway's `500` JSON error; `fail_open`: the plugin is skipped),
    /// logs `message` naming the plugin and route, and replaces the instance.
    ///
    /// Use it when the plugin cannot do what its config promises — typically when the
    /// host refused a change the plugin relies on (a header an authentication plugin
    /// must set, a status a translation must give). Going on would send a request or
    /// response that is silently wrong; a fault is loud and follows the operator's
    /// policy. Changes the plugin made before the fault are not undone.
    ///
    /// ```no_run
    /// # use sluice_plugin_sdk::{Decision, Request};
    /// fn tag(req: &mut Request<'_>, value: &str) -> Decision {
    ///     if let Err(e) = req.set_header("x-tag", value) {
    ///         return Decision::fault(format_args!("x-tag not set: {e}"));
    ///     }
    ///     Decision::Continue
    /// }
    /// ```
    ///
    /// It never returns: a fault is a panic with a recognizable message (in Wasm, a
    /// trap), typed as a decision so that `return Decision::fault(…)` reads like the
    /// other answers. Native unit tests catch it with
    /// [`testing::catch_fault`](crate::testing::catch_fault).
    pub fn fault(message: impl std::fmt::Display) -> Decision {
        panic!("{FAULT_PREFIX}{message}")
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
