//! `sluice secrets generate-key|rotate`: keys that seal stored secrets.

use crate::config::Settings;
use crate::schemas::SchemaRegistry;
use clap::Subcommand;
use std::sync::Arc;

/// `sluice secrets ...`
#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Print a new key entry for SLUICE_SECRETS_KEYS (put it first to make it current).
    GenerateKey {
        /// The key's id, stored with every value it seals.
        #[arg(long, default_value = "k1")]
        id: String,
    },
    /// Reseal every stored secret (clear, or sealed with an older key) with the first key.
    Rotate,
}

/// Runs one `sluice secrets` subcommand.
pub async fn run(settings: Settings, schemas: Arc<SchemaRegistry>, command: SecretsCommand) -> anyhow::Result<()> {
    match command {
        SecretsCommand::GenerateKey { id } => {
            let entry = crate::secrets::generate_key(&id);
            // The id is checked as the keys are read at start-up.
            crate::secrets::Sealer::from_spec(&entry)?;
            println!("{entry}");
            Ok(())
        }
        SecretsCommand::Rotate => {
            let pool = crate::store::ready_pool(&settings.database).await?;
            let (ops, broker, cancel) = super::dlq::operators(&settings, pool, schemas)?;
            let result = ops.rotate_secrets(&super::actor()).await;
            broker.close().await;
            cancel.cancel();
            let r = result?;
            println!("resealed {}, already current {}, changed meanwhile {}", r.resealed, r.current, r.raced);
            anyhow::ensure!(r.raced == 0, "{} secrets changed while rotating: run it again", r.raced);
            Ok(())
        }
    }
}
