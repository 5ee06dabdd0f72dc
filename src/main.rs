//! The `sluice` binary: see `sluice --help`.

/// mimalloc, not the system allocator (feature `mimalloc`, on by default): see Cargo.toml and BENCHMARKS.md (RSS
/// per proxy).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::run()
}
