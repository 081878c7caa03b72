//! The `sluice` binary: the library's command line with the built-in domain.

use std::process::ExitCode;

/// A per-thread-heap allocator: requests and frames are allocated on one thread and freed on
/// another, which glibc's malloc pays for in arena locks and consolidation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    sluice::cli::main(|settings| sluice::App::builder(settings).builtin_domain())
}
