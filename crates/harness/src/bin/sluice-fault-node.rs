//! The shipped `sluice` with the fault suite's hooks: crash points, a commit log, and the
//! `fault.poison` and `fault.slow` command types (see `sluice_harness::hooks`).

use std::process::ExitCode;

fn main() -> ExitCode {
    sluice::cli::main(|settings| sluice_harness::hooks::install(sluice::App::builder(settings).builtin_domain()))
}
