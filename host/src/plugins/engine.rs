//! The one `wasmtime::Engine` of the process: component model, pooling allocator with
//! copy-on-write memory images, and epoch interruption driven by a ticker thread.
//!
//! The ticker bumps the epoch every [`EPOCH_TICK`]; a running call sees each tick in
//! [`super::deadline::on_tick`], which stops it past its deadline (`Trap::Interrupt`,
//! no matter what the guest does) or lets it yield its thread meanwhile.
//!
//! `SLUICE_PERFMAP=1` in the environment makes the engine write `/tmp/perf-PID.map`,
//! so `perf report` names plugin functions (for profiling; off by default).

use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy};

use crate::config::MAX_PLUGIN_MEMORY;

/// How often the epoch advances: the granularity of plugin deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Component instances alive at once, for the whole process: every entry's
/// instances, the snapshots still draining included. Each entry has its own bound
/// below this (`limits.max_instances`).
pub const POOL_COMPONENT_INSTANCES: u32 = 10_000;
/// Core instances alive at once (a Rust component has a few per component instance,
/// an interpreter-based one a dozen).
pub const POOL_CORE_INSTANCES: u32 = 60_000;
/// Linear memories alive at once. Each reserves address space only (the memory cap
/// plus guards, ~320 MiB): 10,000 of them are ~3 TiB of the 128 TiB a process has,
/// and none of it is resident until a plugin touches it.
pub const POOL_MEMORIES: u32 = 10_000;
/// Tables alive at once.
pub const POOL_TABLES: u32 = 20_000;
/// Fiber stacks for calls running at once (each call on the asynchronous path that
/// is waiting or running holds one).
pub const POOL_STACKS: u32 = 4_000;
/// Guard region after each linear memory.
pub const MEMORY_GUARD: u64 = 32 << 20;
/// Largest core instance metadata (interpreted runtimes such as Python need more
/// than the default).
pub const MAX_CORE_INSTANCE_SIZE: usize = 10 << 20;

static ENGINE: OnceLock<Engine> = OnceLock::new();

/// The engine when it has been created (a config without plugins never creates it).
pub fn created() -> Option<&'static Engine> {
    ENGINE.get()
}

/// The process's engine, created (with its epoch ticker) on first use.
pub fn engine() -> &'static Engine {
    ENGINE.get_or_init(|| {
        let engine = Engine::new(&engine_config()).expect("the plugin engine's configuration is valid");
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .expect("spawning the epoch ticker thread");
        engine
    })
}

fn engine_config() -> Config {
    let max_memory = MAX_PLUGIN_MEMORY.bytes();
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_COMPONENT_INSTANCES)
        .total_core_instances(POOL_CORE_INSTANCES)
        .total_memories(POOL_MEMORIES)
        .total_tables(POOL_TABLES)
        .total_stacks(POOL_STACKS)
        .max_memory_size(max_memory as usize)
        .max_core_instance_size(MAX_CORE_INSTANCE_SIZE)
        .max_memories_per_component(4)
        .max_tables_per_component(8);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .memory_reservation(max_memory)
        .memory_guard_size(MEMORY_GUARD)
        .parallel_compilation(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if std::env::var_os("SLUICE_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(ProfilingStrategy::PerfMap);
    }
    config
}
