//! Placeholder, replaced below.
use crate::config::Settings;
/// Bench options.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}
/// Runs the benchmark.
pub async fn run(_settings: Settings, _args: BenchArgs) -> anyhow::Result<()> {
    Ok(())
}
