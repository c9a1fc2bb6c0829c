//! The `sluice` binary: all logic lives in the library (`sluice::cli`).

/// mimalloc instead of the C library's malloc, with `--features mimalloc` (off by
/// default; the measurements are in BENCHMARKS.md, "Slow readers and the allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
