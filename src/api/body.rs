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
    // Routes without limits of their own still get a budget: no body is parsed unbounded.
    let shape = req.extensions().get::<ShapeLimit>().copied().unwrap_or_default();
    let bytes = read_bytes(req, state).await?;
    if bytes.is_empty() {
        return Ok(None);
    }
    let value = parse_json(&bytes, shape)?;
    Ok(Some(value))
}

/// Parses a JSON body within `limits`' value and memory budget, then checks its shape.
pub fn parse_json(bytes: &[u8], limits: ShapeLimit) -> Result<Value, ApiError> {
    let budget = limits.budget();
    let value = crate::json::parse(bytes, &[&budget]).map_err(|e| json_error(&e, &[&budget], "body"))?;
    crate::ingest::shape::check_shape(&value, limits.depth, limits.string_bytes, "")?;
    Ok(value)
}

/// What a failed bounded parse becomes: 413 naming the bound and where it ran out, or 400
/// for JSON that is not JSON. `at` names the document (`body`, `body line 3`).
pub fn json_error(e: &serde_json::Error, budgets: &[&crate::json::Budget], at: &str) -> ApiError {
    let location = format!("{at} line {} column {}", e.line(), e.column());
    match crate::json::exceeded(budgets) {
        Some(exceeded) => ApiError::JsonTooLarge { message: format!("the body holds {exceeded}"), location },
        None => ApiError::bad_request("malformed_json", format!("{at} is not valid JSON: {e}"), Some(&location)),
    }
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

/// What one JSON document may hold (`limits.*`), in request extensions.
#[derive(Clone, Copy, Debug)]
pub struct ShapeLimit {
    /// Deepest nesting.
    pub depth: usize,
    /// Longest string or key, in bytes.
    pub string_bytes: usize,
    /// Most values.
    pub values: usize,
    /// Most memory the parsed values may take, in bytes (estimated while parsing).
    pub bytes: usize,
}

impl ShapeLimit {
    /// A fresh budget of this document's values and bytes.
    pub fn budget(&self) -> crate::json::Budget {
        crate::json::Budget::new(self.values, self.bytes)
    }
}

impl From<&crate::config::LimitSettings> for ShapeLimit {
    fn from(l: &crate::config::LimitSettings) -> Self {
        Self {
            depth: l.max_json_depth,
            string_bytes: l.max_string_bytes,
            values: l.max_json_values,
            bytes: l.max_json_bytes,
        }
    }
}

impl Default for ShapeLimit {
    /// The shipped `limits.*` defaults.
    fn default() -> Self {
        Self { depth: 32, string_bytes: 65536, values: 20_000, bytes: 4 << 20 }
    }
}

/// The configured body limit, put in request extensions so errors can quote it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);
