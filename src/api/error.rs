//! The API's one error type: every failure becomes a JSON body that says what and where.

use crate::broker::PublishError;
use crate::ops::OpsError;
use crate::schemas::Violation;
use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An API failure and the response it becomes.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String, location: Option<String> },
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String, violations: Vec<Violation> },
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// JSON that would take more values or memory than its budget allows.
    #[error("{message}")]
    JsonTooLarge { message: String, location: String },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this API key lacks the {0:?} scope")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Unavailable { message: String, retry_after_secs: u32 },
    /// The command was sent but RabbitMQ never confirmed it: it may or may not be applied, so
    /// the client must retry with the same `Idempotency-Key` (code `outcome_unknown`).
    #[error("{message}")]
    OutcomeUnknown { message: String, retry_after_secs: u32 },
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_secs: u32 },
    /// The request ran past `http.request_timeout_ms`.
    #[error(
        "the request was not answered within {limit_ms} ms; a command it carried may still be applied: retry \
         with the same Idempotency-Key"
    )]
    Timeout { limit_ms: u64 },
    /// Our fault; logged with its cause, answered with a generic body.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 about the request at `location` (e.g. `header Idempotency-Key`).
    pub fn bad_request(code: &'static str, message: impl Into<String>, location: Option<&str>) -> Self {
        Self::BadRequest { code, message: message.into(), location: location.map(str::to_owned) }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            Self::Unavailable { message: "the database is unavailable; try again shortly".into(), retry_after_secs: 2 }
        } else if let StoreError::Invalid(inner) = &e {
            // The database's own words stay in the log; the client learns the SQLSTATE.
            tracing::info!(error = %e, "a value in the request cannot be stored");
            let code = match inner {
                sqlx::Error::Database(db) => db.code().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default(),
                _ => String::new(),
            };
            Self::bad_request("invalid_value", format!("a value in the request cannot be stored{code}"), None)
        } else {
            Self::Internal(e.to_string())
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError;
        match e {
            AuthError::Unauthorized(why) => Self::Unauthorized(why),
            AuthError::Forbidden(scope) => Self::Forbidden(scope),
            AuthError::Throttled { retry_after_secs } => Self::TooManyRequests {
                message: AuthError::Throttled { retry_after_secs }.to_string(),
                retry_after_secs,
            },
            AuthError::Store(e) => e.into(),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        tracing::warn!(error = %e, "publish not confirmed");
        let retry_after_secs = match e {
            PublishError::Overloaded => 1,
            _ => 2,
        };
        let why = e.public();
        if e.definitely_not_published() {
            Self::Unavailable {
                message: format!("the command was not published: {why}; retry later"),
                retry_after_secs,
            }
        } else {
            Self::OutcomeUnknown {
                message: format!(
                    "the command was sent but not confirmed ({why}), so it may still be applied; retry with the \
                     same Idempotency-Key and it is applied once"
                ),
                retry_after_secs,
            }
        }
    }
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::NotFound(m) => Self::NotFound(m),
            OpsError::Conflict(m) => Self::Conflict(m),
            OpsError::BadInput(m) => Self::bad_request("invalid_request", m, None),
            OpsError::Invalid { kind, violations } => Self::Unprocessable {
                code: "invalid_payload",
                message: format!("the edited payload does not match the schema of {kind}"),
                violations,
            },
            OpsError::Publish(e) => e.into(),
            OpsError::Store(e) => e.into(),
            OpsError::Secret(e) => Self::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, extra) = match &self {
            Self::BadRequest { code, location, .. } => {
                (StatusCode::BAD_REQUEST, *code, json!({ "location": location }))
            }
            Self::Unprocessable { code, violations, .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, *code, json!({ "violations": violations }))
            }
            Self::TooLarge { limit } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", json!({ "limit_bytes": limit }))
            }
            Self::JsonTooLarge { location, .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "json_too_large", json!({ "location": location }))
            }
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", json!({})),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", json!({})),
            Self::Forbidden(scope) => (StatusCode::FORBIDDEN, "forbidden", json!({ "required_scope": scope })),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", json!({})),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict", json!({})),
            Self::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", json!({})),
            Self::OutcomeUnknown { .. } => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown", json!({})),
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", json!({})),
            Self::Timeout { limit_ms } => (StatusCode::SERVICE_UNAVAILABLE, "timeout", json!({ "limit_ms": limit_ms })),
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", json!({}))
            }
        };
        let message = match &self {
            Self::Internal(_) => "internal error; it has been logged".to_owned(),
            other => other.to_string(),
        };
        let mut error = json!({ "code": code, "message": message });
        if let (Some(obj), Some(more)) = (error.as_object_mut(), extra.as_object()) {
            obj.extend(more.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())));
        }
        let mut response = (status, Json(json!({ "error": error }))).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unavailable { retry_after_secs, .. }
            | Self::OutcomeUnknown { retry_after_secs, .. }
            | Self::TooManyRequests { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::Timeout { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            Self::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
