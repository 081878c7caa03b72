//! `sluice keys create|list|revoke`.

use crate::config::Settings;
use clap::Subcommand;

/// `sluice keys ...`
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (the only time it is shown).
    Create {
        #[arg(long)]
        tenant: String,
        /// submit, read, admin, operator; repeat or separate with commas.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
    /// List keys (ids, tenants, scopes; never the keys).
    List,
    /// Revoke a key by its id.
    Revoke { key_id: String },
}

/// Runs one `sluice keys` subcommand.
pub async fn run(settings: Settings, command: KeysCommand) -> anyhow::Result<()> {
    let pool = crate::store::ready_pool(&settings.database).await?;
    match command {
        KeysCommand::Create { tenant, scopes } => {
            let created = crate::auth::create_key(&pool, &super::actor(), &tenant, &scopes).await?;
            eprintln!("key {} created for tenant {tenant}; it is shown only now:", created.key_id);
            println!("{}", created.key);
        }
        KeysCommand::List => {
            for k in crate::store::api_keys::list(&pool).await? {
                let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    k.key_id,
                    k.tenant,
                    k.scopes.join(","),
                    k.created_at.to_rfc3339(),
                    state
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            let revoked = crate::auth::revoke_key(&pool, &super::actor(), &key_id).await?;
            anyhow::ensure!(revoked, "no active key {key_id}");
            println!("revoked {key_id}");
        }
    }
    Ok(())
}
