//! The `sluice` binary: see `sluice --help`.

/// mimalloc, not the system allocator: see Cargo.toml and BENCHMARKS.md (RSS per proxy).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::run()
}
