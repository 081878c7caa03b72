//! The HTTP side of authentication: the `Authorization: Bearer <key>` extractor.

use super::error::ApiError;
use super::ApiState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

pub use crate::auth::{Principal, Scope};

impl FromRequestParts<ApiState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("missing Authorization header; send Authorization: Bearer <key>"))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthorized("Authorization header must be: Bearer <key>"))?;
        let principal = state.auth.verify(key, super::server::peer_of(parts).map(|a| a.ip())).await?;
        tracing::Span::current().record("tenant", principal.tenant.as_str());
        state.limiter.check(&principal.tenant, &principal.key_id)?;
        Ok(principal)
    }
}
