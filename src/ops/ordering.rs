//! Ordering keys held back: which, by what, and with how much waiting behind.

use super::{Operators, OpsError};
use crate::store::ordering::{self, BlockedKey};

/// Most blocked keys listed at once.
pub const MAX_LISTED: i64 = 500;

impl Operators {
    /// Blocked keys within reach: halted ones (waiting for an operator) first, oldest first.
    pub async fn blocked_keys(&self) -> Result<Vec<BlockedKey>, OpsError> {
        Ok(ordering::blocked(&self.pool, self.reach.tenant(), MAX_LISTED).await?)
    }
}
