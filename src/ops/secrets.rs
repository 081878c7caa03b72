//! `sluice secrets rotate`: every stored secret resealed with the current key.

use super::{Operators, OpsError};
use crate::store::{audit, batches, webhooks};
use serde_json::json;

/// What a rotation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rotated {
    /// Secrets resealed with the current key (clear ones included).
    pub resealed: usize,
    /// Secrets already sealed with it.
    pub current: usize,
    /// Values changed by someone else while rotating (run again).
    pub raced: usize,
}

impl Operators {
    /// Reseals every webhook source secret and batch callback secret that is in clear or
    /// sealed with another key than the first; each value is replaced only if it is unchanged.
    pub async fn rotate_secrets(&self, actor: &str) -> Result<Rotated, OpsError> {
        let key = self.sealer.current_key().ok_or_else(|| {
            OpsError::BadInput("no secrets key is configured (SLUICE_SECRETS_KEYS): nothing to seal with".into())
        })?;
        let mut r = Rotated::default();
        for (name, stored) in webhooks::stored_secrets(&self.pool).await? {
            let stale = stored.iter().filter(|s| self.sealer.is_stale(s)).count();
            r.current += stored.len() - stale;
            if stale == 0 {
                continue;
            }
            let mut resealed = Vec::with_capacity(stored.len());
            for s in &stored {
                resealed.push(if self.sealer.is_stale(s) {
                    self.sealer.seal(&self.sealer.open(s)?)
                } else {
                    s.clone()
                });
            }
            if webhooks::swap_secrets(&self.pool, &name, &stored, &resealed).await? {
                r.resealed += stale;
            } else {
                r.raced += stale;
            }
        }
        for (id, stored) in batches::stored_callback_secrets(&self.pool).await? {
            if !self.sealer.is_stale(&stored) {
                r.current += 1;
                continue;
            }
            let resealed = self.sealer.seal(&self.sealer.open(&stored)?);
            if batches::swap_callback_secret(&self.pool, id, &stored, &resealed).await? {
                r.resealed += 1;
            } else {
                r.raced += 1;
            }
        }
        let details = json!({"key": key, "resealed": r.resealed, "current": r.current, "raced": r.raced});
        audit::record_one(&self.pool, actor, "secrets.rotate", key, &details).await?;
        Ok(r)
    }
}
