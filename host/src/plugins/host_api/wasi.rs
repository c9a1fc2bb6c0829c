//! WASI for the synchronous call path: `wasi:io/streams` and `wasi:io/poll` that never
//! wait, and the import check that decides whether a component may take that path.
//!
//! wasmtime-wasi's own synchronous bindings run every "blocking" stream operation
//! (`blocking-write-and-flush`, `pollable.block`, even dropping a stream) through
//! `block_on` on the current tokio runtime, which panics inside a tokio task. A plugin
//! needs none of that: its only streams are the sandbox's stdio (stdin empty, stdout
//! discarded, stderr captured in memory), which are always ready. So the synchronous
//! linker shadows those two interfaces with this module's versions, which poll the
//! same operations once and, should one ever not be ready, trap with a message
//! instead of waiting (the chain then applies the route's `on_error` policy).
//!
//! The one thing a plugin could wait on besides the network is a timer
//! (`monotonic-clock.subscribe-*`, what a sleep compiles to); sockets are refused by
//! the sandbox. [`sync_blocker`] sends components that import either down the
//! asynchronous path, where waiting is allowed.

use std::future::Future;

use futures_util::FutureExt;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::io::{poll as async_poll, streams as async_streams};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult};

use crate::plugins::engine::engine;

/// Polls a host operation once: its output, or a trap when it would have to wait.
fn now<F: Future>(op: F, what: &str) -> wasmtime::Result<F::Output> {
    op.now_or_never().ok_or_else(|| {
        wasmtime::format_err!(
            "the plugin waited on `{what}`, which was not ready: a plugin on the synchronous path cannot wait"
        )
    })
}

/// [`now`] for stream operations, whose errors are [`StreamError`]s.
fn now_stream<T>(op: impl Future<Output = StreamResult<T>>, what: &str) -> StreamResult<T> {
    now(op, what).map_err(StreamError::Trap)?
}

/// The store's resource table, seen through the non-waiting `wasi:io`.
pub struct NonBlockingIo<'a>(pub &'a mut ResourceTable);

/// [`HasData`] marker for [`NonBlockingIo`].
pub struct NonBlocking;

impl HasData for NonBlocking {
    type Data<'a> = NonBlockingIo<'a>;
}

impl streams::Host for NonBlockingIo<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        Ok(match err {
            StreamError::Closed => streams::StreamError::Closed,
            StreamError::LastOperationFailed(e) => streams::StreamError::LastOperationFailed(self.0.push(e)?),
            StreamError::Trap(e) => return Err(e),
        })
    }
}

impl streams::HostOutputStream for NonBlockingIo<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        now(async_streams::HostOutputStream::drop(self.0, stream), "output-stream drop")?
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        async_streams::HostOutputStream::check_write(self.0, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        async_streams::HostOutputStream::write(self.0, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        let op = async_streams::HostOutputStream::blocking_write_and_flush(self.0, stream, bytes);
        now_stream(op, "blocking-write-and-flush")
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        let op = async_streams::HostOutputStream::blocking_write_zeroes_and_flush(self.0, stream, len);
        now_stream(op, "blocking-write-zeroes-and-flush")
    }

    fn subscribe(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        async_streams::HostOutputStream::subscribe(self.0, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        async_streams::HostOutputStream::write_zeroes(self.0, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        async_streams::HostOutputStream::flush(self.0, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        now_stream(async_streams::HostOutputStream::blocking_flush(self.0, stream), "blocking-flush")
    }

    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        async_streams::HostOutputStream::splice(self.0, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        now_stream(async_streams::HostOutputStream::blocking_splice(self.0, dst, src, len), "blocking-splice")
    }
}

impl streams::HostInputStream for NonBlockingIo<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        now(async_streams::HostInputStream::drop(self.0, stream), "input-stream drop")?
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        async_streams::HostInputStream::read(self.0, stream, len)
    }

    fn blocking_read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        now_stream(async_streams::HostInputStream::blocking_read(self.0, stream, len), "blocking-read")
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        async_streams::HostInputStream::skip(self.0, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        now_stream(async_streams::HostInputStream::blocking_skip(self.0, stream, len), "blocking-skip")
    }

    fn subscribe(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        async_streams::HostInputStream::subscribe(self.0, stream)
    }
}

impl poll::Host for NonBlockingIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        now(async_poll::Host::poll(self.0, pollables), "poll")?
    }
}

impl poll::HostPollable for NonBlockingIo<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        now(async_poll::HostPollable::ready(self.0, pollable), "pollable.ready")?
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        now(async_poll::HostPollable::block(self.0, pollable), "pollable.block")?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.0, pollable)
    }
}

/// Why `component` cannot take the synchronous path, judged from its WASI imports
/// alone: it imports a timer subscription (it may sleep) or sockets. `None`: nothing
/// in its WASI imports can wait. (Whether `http` and `kv` can wait depends on the
/// entry's grants; see [`super::sync_blocker`].)
pub fn sync_blocker(component: &Component) -> Option<String> {
    for (name, item) in component.component_type().imports(engine()) {
        let iface = name.split('@').next().unwrap_or(name);
        if iface.starts_with("wasi:sockets/") {
            return Some(format!("it imports `{iface}`"));
        }
        if iface == "wasi:clocks/monotonic-clock"
            && let ComponentItem::ComponentInstance(inst) = item.ty
            && let Some((f, _)) = inst.exports(engine()).find(|(f, _)| f.starts_with("subscribe-"))
        {
            return Some(format!("it imports `{iface}.{f}` (a timer it may wait on)"));
        }
    }
    None
}
