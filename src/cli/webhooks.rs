//! `sluice webhooks set|list|remove`: webhook sources from a shell (audited as `cli:…`).

use crate::config::Settings;
use crate::schemas::SchemaRegistry;
use crate::store::webhooks::{self, Source};
use clap::Subcommand;
use std::sync::Arc;

/// `sluice webhooks ...`
#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Create or replace a source: deliveries then go to POST /v1/webhooks/<name>.
    Set {
        name: String,
        #[arg(long)]
        tenant: String,
        /// standard, github, stripe or hmac.
        #[arg(long)]
        scheme: String,
        /// Repeat for rotation: any of them verifies. Visible to other users in the process
        /// list: prefer --secret-file.
        #[arg(long = "secret")]
        secrets: Vec<String>,
        /// A file with one secret per line; `-` reads them from standard input.
        #[arg(long = "secret-file")]
        secret_files: Vec<std::path::PathBuf>,
        #[arg(long, default_value_t = 300)]
        tolerance_secs: i32,
        #[arg(long, default_value = "webhook.received")]
        command_type: String,
        /// hmac: the header holding the signature.
        #[arg(long)]
        signature_header: Option<String>,
        /// hmac: the header holding the sender's delivery id.
        #[arg(long)]
        id_header: Option<String>,
    },
    /// List sources (never their secrets).
    List,
    /// Remove a source (its recorded deliveries stay).
    Remove { name: String },
}

/// Runs one `sluice webhooks` subcommand.
pub async fn run(settings: Settings, schemas: Arc<SchemaRegistry>, command: WebhooksCommand) -> anyhow::Result<()> {
    let pool = crate::store::ready_pool(&settings.database).await?;
    let (ops, broker, cancel) = super::dlq::operators(&settings, pool.clone(), schemas)?;
    let actor = super::actor();
    let result = async {
        match command {
            WebhooksCommand::Set {
                name,
                tenant,
                scheme,
                mut secrets,
                secret_files,
                tolerance_secs,
                command_type,
                signature_header,
                id_header,
            } => {
                for path in &secret_files {
                    secrets.extend(read_secrets(path)?);
                }
                anyhow::ensure!(!secrets.is_empty(), "give at least one --secret or --secret-file");
                let source = Source {
                    name,
                    tenant,
                    scheme,
                    secrets,
                    tolerance_secs,
                    command_type,
                    signature_header: signature_header.map(|h| h.to_ascii_lowercase()),
                    id_header: id_header.map(|h| h.to_ascii_lowercase()),
                };
                ops.set_source(&source, &actor).await?;
                println!("source {} set: deliveries go to POST /v1/webhooks/{}", source.name, source.name);
            }
            WebhooksCommand::List => {
                for s in webhooks::list(&pool, None).await? {
                    println!(
                        "{}\t{}\t{}\t{} secret(s)\t{}\t{} s",
                        s.name,
                        s.tenant,
                        s.scheme,
                        s.secrets.len(),
                        s.command_type,
                        s.tolerance_secs
                    );
                }
            }
            WebhooksCommand::Remove { name } => {
                ops.remove_source(&name, &actor).await?;
                println!("removed {name}");
            }
        }
        anyhow::Ok(())
    }
    .await;
    broker.close().await;
    cancel.cancel();
    result
}

/// Secrets from `path`, one per line (blank lines skipped); `-` is standard input.
fn read_secrets(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let text = if path == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading secrets from standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading secrets from {}", path.display()))?
    };
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
}
