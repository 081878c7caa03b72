//! The orders service: sluice's command line (`serve`, `api`, `worker`, `migrate`, `dlq`, ...)
//! carrying this crate's command types.

/// The allocator the `sluice` binary uses too: frames and requests are freed on other threads
/// than the ones that allocated them, which glibc's malloc pays for in arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::main(sluice_example_orders::app)
}
