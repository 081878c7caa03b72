//! The orders service: sluice's command line (`serve`, `api`, `worker`, `migrate`, `dlq`, ...)
//! carrying this crate's command types.

fn main() -> std::process::ExitCode {
    sluice::cli::main(sluice_example_orders::app)
}
