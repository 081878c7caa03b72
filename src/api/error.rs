//! The API's one error type: every failure becomes a JSON body that says what and where.

use crate::broker::PublishError;
use crate::ingest::{IngestError, ItemRefusal};
use crate::ops::OpsError;
use crate::schemas::Violation;
use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// An API failure and the response it becomes.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String, location: Option<String> },
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String, violations: Vec<Violation> },
    /// No item of a batch was published; why each was refused.
    #[error("{message}")]
    BatchRefused { message: String, items: Vec<ItemRefusal> },
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
    /// A cancel came too late: the command is `status` (succeeded, rejected, processing) or
    /// the batch has finished.
    #[error("it is {status} and can no longer be cancelled")]
    AlreadyFinal { status: String },
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
    /// The HTTP status and the body's `code`.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Self::BatchRefused { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "batch_rejected"),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::JsonTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "json_too_large"),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::AlreadyFinal { .. } => (StatusCode::CONFLICT, "already_final"),
            Self::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::OutcomeUnknown { .. } => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Timeout { .. } => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

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

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::BadRequest { code, message, location } => Self::BadRequest { code, message, location },
            IngestError::Invalid { code, message, violations } => Self::Unprocessable { code, message, violations },
            IngestError::BatchRefused { message, items } => Self::BatchRefused { message, items },
            IngestError::Unauthorized(why) => Self::Unauthorized(why),
            IngestError::Behind { message, retry_after_secs } => Self::Unavailable { message, retry_after_secs },
            IngestError::Unconfirmed { message, certain: true } => Self::Unavailable { message, retry_after_secs: 2 },
            IngestError::Unconfirmed { message, certain: false } => {
                Self::OutcomeUnknown { message, retry_after_secs: 2 }
            }
            IngestError::Publish(e) => e.into(),
            IngestError::Store(e) => e.into(),
        }
    }
}

impl From<crate::ingest::shape::ShapeError> for ApiError {
    fn from(e: crate::ingest::shape::ShapeError) -> Self {
        IngestError::from(e).into()
    }
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::NotFound(m) => Self::NotFound(m),
            OpsError::Conflict(m) => Self::Conflict(m),
            OpsError::AlreadyFinal { status } => Self::AlreadyFinal { status },
            OpsError::BadInput(m) => Self::bad_request("invalid_request", m, None),
            OpsError::InvalidField { path, message } => Self::Unprocessable {
                code: "invalid_field",
                violations: vec![Violation { path, message: message.clone() }],
                message,
            },
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

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong and where; only the fields that apply to the code are present.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable word for programs (`invalid_payload`, `unauthorized`, `rate_limited`, ...).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Where in the request (`header Idempotency-Key`, `body line 3 column 7`, `query limit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Each way the body breaks its schema, by JSON pointer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violations: Option<Vec<Violation>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<usize>,
    /// The scope the key lacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_ms: Option<u64>,
    /// The status that made a cancel too late (`already_final`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Per item of a refused batch: why each was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<ItemRefusal>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut detail = ErrorDetail { code: code.to_owned(), ..ErrorDetail::default() };
        match &self {
            Self::BadRequest { location, .. } => detail.location = location.clone(),
            Self::Unprocessable { violations, .. } => detail.violations = Some(violations.clone()),
            Self::BatchRefused { items, .. } => detail.items = Some(items.clone()),
            Self::TooLarge { limit } => detail.limit_bytes = Some(*limit),
            Self::JsonTooLarge { location, .. } => detail.location = Some(location.clone()),
            Self::Forbidden(scope) => detail.required_scope = Some((*scope).to_owned()),
            Self::Timeout { limit_ms } => detail.limit_ms = Some(*limit_ms),
            Self::AlreadyFinal { status } => detail.status = Some(status.clone()),
            Self::Internal(cause) => tracing::error!(%cause, "internal error"),
            _ => {}
        }
        detail.message = match &self {
            Self::Internal(_) => "internal error; it has been logged".to_owned(),
            other => other.to_string(),
        };
        let mut response = (status, Json(ErrorBody { error: detail })).into_response();
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
