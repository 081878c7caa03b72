//! The `sluice` binary: the library's command line with the built-in domain.

use std::process::ExitCode;

fn main() -> ExitCode {
    sluice::cli::main(|settings| {
        let app = sluice::App::builder(settings).builtin_domain();
        // The fault suite's test-only command types and after-commit hook (src/fault.rs).
        #[cfg(feature = "fault-hooks")]
        let app = sluice::fault::install(app);
        app
    })
}
