//! Configuring webhook sources (API and CLI), checked and audited.

use super::{Operators, OpsError};
use crate::store::webhooks::{self, Source};
use crate::store::{audit, StoreError};
use crate::webhooks::inbound::{keys, SCHEMES};
use serde_json::json;

impl Operators {
    /// Creates or replaces a source after checking it can work.
    pub async fn set_source(&self, source: &Source, actor: &str) -> Result<(), OpsError> {
        let bad = |m: String| Err(OpsError::BadInput(m));
        let name_ok = !source.name.is_empty()
            && source.name.len() <= 63
            && source.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && source.name.as_bytes()[0].is_ascii_alphanumeric();
        if !name_ok {
            return bad("name must be 1-63 of [a-z0-9_-], starting with a letter or digit".into());
        }
        if !SCHEMES.contains(&source.scheme.as_str()) {
            return bad(format!("scheme must be one of {SCHEMES:?}"));
        }
        if source.secrets.is_empty() || source.secrets.iter().any(|s| s.len() < 8 || s.len() > 256) {
            return bad("secrets: at least one, each 8-256 characters".into());
        }
        if keys(source).is_none() {
            return bad("standard secrets are whsec_ followed by base64 of 24 to 64 bytes".into());
        }
        if !(1..=86_400).contains(&source.tolerance_secs) {
            return bad("tolerance_secs must be 1-86400".into());
        }
        if !self.schemas.knows(&source.command_type) {
            return bad(format!("unknown command type {:?}", source.command_type));
        }
        if source.scheme == "hmac" && source.signature_header.as_deref().is_none_or(str::is_empty) {
            return bad("the hmac scheme needs signature_header".into());
        }
        if !self.reach.covers(Some(&source.tenant)) {
            return bad("tenant: a tenant's admin key configures sources of its own tenant only".into());
        }
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        // Names are global (the receive URL is /v1/webhooks/{name}); a name another tenant
        // holds is not this one's to replace, and reads as absent.
        if let Some(owner) = webhooks::owner_for_update(&mut tx, &source.name).await? {
            if !self.reach.covers(Some(&owner)) {
                return Err(OpsError::NotFound(format!(
                    "no webhook source {:?} of this tenant, and the name is taken: choose another",
                    source.name
                )));
            }
        }
        let sealed = Source { secrets: source.secrets.iter().map(|s| self.sealer.seal(s)).collect(), ..source.clone() };
        webhooks::upsert(&mut tx, &sealed).await?;
        let details = json!({"scheme": source.scheme, "tenant": source.tenant, "secrets": source.secrets.len(),
                             "command_type": source.command_type, "tolerance_secs": source.tolerance_secs});
        audit::record(&mut tx, actor, "webhook_source.set", &format!("webhook_source/{}", source.name), &details)
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// A source within reach, by name.
    pub async fn source(&self, name: &str) -> Result<Source, OpsError> {
        webhooks::get(&self.pool, name)
            .await?
            .filter(|s| self.reach.covers(Some(&s.tenant)))
            .ok_or_else(|| OpsError::NotFound(format!("no webhook source {name:?}")))
    }

    /// The sources within reach, by name.
    pub async fn sources(&self) -> Result<Vec<Source>, OpsError> {
        Ok(webhooks::list(&self.pool, self.reach.tenant()).await?)
    }

    /// Removes a source (its recorded deliveries stay).
    pub async fn remove_source(&self, name: &str, actor: &str) -> Result<(), OpsError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        if !webhooks::delete(&mut tx, name, self.reach.tenant()).await? {
            return Err(OpsError::NotFound(format!("no webhook source {name:?}")));
        }
        audit::record(&mut tx, actor, "webhook_source.remove", &format!("webhook_source/{name}"), &json!({})).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}
