//! The `sluice` binary: all logic lives in the library (`sluice::cli`).

/// mimalloc instead of the C library's malloc (the default feature `mimalloc`; the
/// measurements are in BENCHMARKS.md, P1, 2026-12-04).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: sluice::allocator::MiMalloc = sluice::allocator::MiMalloc;

fn main() -> std::process::ExitCode {
    #[cfg(feature = "mimalloc")]
    sluice::allocator::configure();
    sluice::cli::main()
}
