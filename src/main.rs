//! The `sluice` binary: the library's command line with the built-in domain.

use std::process::ExitCode;

fn main() -> ExitCode {
    sluice::cli::main(|settings| sluice::App::builder(settings).builtin_domain())
}
