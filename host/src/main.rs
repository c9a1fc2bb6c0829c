//! The `sluice` binary: all logic lives in the library (`sluice::cli`).

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
