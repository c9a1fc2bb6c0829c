//! `FunctionError`: a function target that did not answer, naming the route, the
//! component and what went wrong, and the one place such faults become statuses.

use std::time::Duration;

use http::StatusCode;
use wasmtime::Trap;

use super::state::FunctionState;

/// What went wrong in a function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionErrorKind {
    /// `limits.max_concurrent` requests were running already.
    #[error("all {0} places (limits.max_concurrent) were in use")]
    Busy(usize),
    /// It ran past `limits.deadline`.
    #[error("ran past its deadline of {0:?} (limits.deadline)")]
    Deadline(Duration),
    /// It took longer than `limits.timeout`, waiting included.
    #[error("took longer than {0:?} (limits.timeout)")]
    Timeout(Duration),
    /// It grew its memory past `limits.memory`.
    #[error("grew past its memory cap of {0} bytes (limits.memory)")]
    Memory(usize),
    /// It trapped (a panic, an unreachable, a bad host call), with what it wrote to
    /// stderr.
    #[error("trapped: {0}")]
    Trap(String),
    /// Its handler returned without setting a response.
    #[error("returned without setting a response")]
    NoResponse,
    /// It answered with a `wasi:http` error code instead of a response.
    #[error("answered with the error {0}")]
    Answered(String),
    /// The gateway could not hand it the request.
    #[error("could not be given the request: {0}")]
    Request(String),
}

impl FunctionErrorKind {
    /// The kind of a failed instantiation or call of a store in `state`.
    pub(super) fn from_call(err: &wasmtime::Error, state: &FunctionState, deadline: Duration) -> Self {
        if state.limiter.exceeded {
            return Self::Memory(state.limiter.cap);
        }
        let trap = err.downcast_ref::<Trap>();
        if let Some(Trap::Interrupt) = trap {
            return Self::Deadline(deadline);
        }
        let what = trap.map_or_else(|| format!("{err:#}"), Trap::to_string);
        let stderr = state.stderr();
        if stderr.is_empty() { Self::Trap(what) } else { Self::Trap(format!("{what} ({stderr})")) }
    }
}

/// A function target's fault: which component, on which route, and what.
#[derive(Debug, Clone, thiserror::Error)]
#[error("function {component} on route {route} failed: {kind}")]
pub struct FunctionError {
    /// The route's name.
    pub route: String,
    /// The component's file name.
    pub component: String,
    /// What went wrong.
    pub kind: FunctionErrorKind,
}

impl FunctionError {
    /// The status the client gets: this is the one place function faults become
    /// statuses.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            FunctionErrorKind::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            FunctionErrorKind::Deadline(_) | FunctionErrorKind::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The machine-readable code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self.kind {
            FunctionErrorKind::Busy(_) => "function_busy",
            FunctionErrorKind::Deadline(_) | FunctionErrorKind::Timeout(_) => "function_timeout",
            _ => "function_failed",
        }
    }

    /// What the client is told: no component name, no trap details.
    pub fn public_message(&self) -> &'static str {
        match self.kind {
            FunctionErrorKind::Busy(_) => "the function is busy",
            FunctionErrorKind::Deadline(_) | FunctionErrorKind::Timeout(_) => {
                "the function did not answer in time"
            }
            _ => "the function failed",
        }
    }
}
