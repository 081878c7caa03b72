//! Request bodies: size-limited, JSON-checked, with errors that point at the problem.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde_json::Value;

/// A JSON request body, parsed; rejects wrong media types (415), oversized bodies (413) and
/// malformed JSON (400 with line and column).
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        read(req, state).await?.map(JsonBody).ok_or_else(|| {
            ApiError::bad_request("empty_body", "the request body is empty; send a JSON object", Some("body"))
        })
    }
}

/// Like [`JsonBody`], for routes where a body is optional: an empty body is `None`.
pub struct MaybeJsonBody(pub Option<Value>);

impl<S: Send + Sync> FromRequest<S> for MaybeJsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        read(req, state).await.map(MaybeJsonBody)
    }
}

async fn read<S: Send + Sync>(req: Request, state: &S) -> Result<Option<Value>, ApiError> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType(format!("Content-Type must be application/json, not {ct:?}")));
        }
    }
    let shape = req.extensions().get::<ShapeLimit>().copied();
    let bytes = read_bytes(req, state).await?;
    if bytes.is_empty() {
        return Ok(None);
    }
    let limits = shape.map(|ShapeLimit(depth, string)| (depth, string));
    let value = parse_json(&bytes, limits)?;
    Ok(Some(value))
}

/// Parses a JSON body; with `limits` (depth, string bytes), also checks its shape.
pub fn parse_json(bytes: &[u8], limits: Option<(usize, usize)>) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            format!("body is not valid JSON: {e}"),
            Some(&format!("body line {} column {}", e.line(), e.column())),
        )
    })?;
    if let Some((depth, string)) = limits {
        super::limits::check_shape(&value, depth, string, "")?;
    }
    Ok(value)
}

/// The raw body within the route's limit: 413 naming the limit beyond it.
pub async fn read_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = req.extensions().get::<BodyLimit>().map_or(usize::MAX, |l| l.0);
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge { limit }
        } else {
            ApiError::bad_request("unreadable_body", e.body_text(), Some("body"))
        }
    })
}

/// Deepest JSON nesting and longest string (bytes) accepted, in request extensions.
#[derive(Clone, Copy)]
pub struct ShapeLimit(pub usize, pub usize);

/// The configured body limit, put in request extensions so errors can quote it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);
