//! Bounds on what plugins hand the host for one request. A plugin's own memory is
//! capped (`limits.memory`), but what it writes through the host API — headers,
//! response-header edits, context, the headers of an answer — lives in the host's
//! memory, and a header map panics past 32,768 entries. Past a bound, the call that
//! crossed it fails as a plugin fault (`output`), under the entry's `on_error`.

use http::HeaderMap;

/// Most header values one message may have after a plugin's change (request or
/// response headers, an answer's headers).
pub const MAX_HEADERS: usize = 1024;
/// Most response-header edits the plugins of one request may queue.
pub const MAX_EDITS: usize = 1024;
/// Most context entries the plugins of one request may keep.
pub const MAX_CONTEXT: usize = 1024;
/// Most bytes the plugins of one phase may write through header, edit, context and
/// consumer calls (names and values).
pub const MAX_WRITTEN: usize = 1 << 20;

/// A bound crossed: the call fails, and the fault is reported as `output`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct OutputLimit(pub String);

impl OutputLimit {
    /// The error a host call returns to stop the guest.
    pub fn trap(self) -> wasmtime::Error {
        wasmtime::Error::new(self)
    }
}

/// The bytes one phase's plugins have written so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written(usize);

impl Written {
    /// Counts `bytes` more, failing past [`MAX_WRITTEN`].
    pub fn charge(&mut self, bytes: usize) -> Result<(), OutputLimit> {
        self.0 = self.0.saturating_add(bytes);
        if self.0 > MAX_WRITTEN {
            return Err(OutputLimit(format!(
                "wrote more than {MAX_WRITTEN} bytes of headers, edits and context in one phase"
            )));
        }
        Ok(())
    }
}

/// Fails when `headers` cannot take one more value.
pub fn room_for_one(headers: &HeaderMap) -> Result<(), OutputLimit> {
    if headers.len() >= MAX_HEADERS {
        return Err(too_many(headers.len() + 1));
    }
    Ok(())
}

/// The error for a message that would have `n` header values.
pub fn too_many(n: usize) -> OutputLimit {
    OutputLimit(format!("would give a message {n} header values (at most {MAX_HEADERS})"))
}
