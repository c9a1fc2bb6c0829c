//! The data of one function instance's store: a WASI context with no authority, the
//! `wasi:http` context, the policy hooks (outgoing requests only to the listed
//! upstream pools), the memory limiter and the run-time count the deadline is checked against.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreContextMut, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::outgoing::Outgoing;
use crate::plugins::engine::EPOCH_TICK;
use crate::plugins::state::MemoryLimiter;

/// The store data of one request's function instance.
pub struct FunctionState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Policy,
    /// The memory cap.
    pub limiter: MemoryLimiter,
    /// Epoch ticks in which the function ran so far.
    ran_ticks: u64,
    /// Ticks it may run: `limits.deadline` in ticks, at least one.
    max_ticks: u64,
    stderr: MemoryOutputPipe,
}

impl FunctionState {
    /// A fresh state whose instance may grow its memory to `memory_cap` bytes, run
    /// for `deadline` and call the pools of `outgoing`.
    pub fn new(memory_cap: usize, deadline: Duration, outgoing: Arc<Outgoing>) -> Self {
        // The clocks and randomness every wasi:http guest imports, nothing more.
        let (wasi, stderr) = crate::plugins::state::sandboxed_wasi();
        let tick = EPOCH_TICK.as_nanos().max(1);
        let max_ticks = u64::try_from(deadline.as_nanos().div_ceil(tick)).unwrap_or(u64::MAX).max(1);
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: Policy { outgoing },
            limiter: MemoryLimiter::new(memory_cap),
            ran_ticks: 0,
            max_ticks,
            stderr,
        }
    }

    /// What the guest wrote to stderr (a panic message, usually), lossily decoded.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).trim_end().to_owned()
    }
}

impl WasiView for FunctionState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for FunctionState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// The epoch callback of every function store. It runs at the first check after a
/// tick in which the function runs wasm: each call counts one tick of run time (a
/// function that waited for its body through many ticks counts one on resuming), and
/// past `max_ticks` the function traps (`Trap::Interrupt`). Otherwise it yields, so a
/// function that computes for long lets the requests sharing its worker thread run.
pub fn on_tick(mut ctx: StoreContextMut<'_, FunctionState>) -> wasmtime::Result<UpdateDeadline> {
    let state = ctx.data_mut();
    state.ran_ticks += 1;
    if state.ran_ticks >= state.max_ticks {
        return Err(Trap::Interrupt.into());
    }
    Ok(UpdateDeadline::Yield(1))
}

/// The gateway's `wasi:http` policy for functions: the default forbidden headers,
/// and outgoing requests only to the upstream pools the config lists (deny by
/// default: a function must not become a way into the gateway's network, SSRF).
struct Policy {
    outgoing: Arc<Outgoing>,
}

impl WasiHttpHooks for Policy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let sent = Arc::clone(&self.outgoing).send(request);
        Box::new(async move {
            let resp = sent.await?;
            let done: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send> =
                Box::new(async { Ok(()) });
            Ok((resp, done))
        })
    }
}
