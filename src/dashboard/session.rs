//! Dashboard logins: an operator API key is exchanged for a session cookie (HttpOnly,
//! SameSite=Strict, Path=/dashboard; only its SHA-256 is stored) carrying a CSRF token that
//! every form posts back.

use super::layout::{page_without_nav, PageError};
use super::DashboardState;
use crate::auth::Scope;
use crate::store::{api_keys, audit, sessions};
use axum::extract::{FromRequestParts, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use rand::Rng;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "sluice_session";

/// A logged-in operator.
pub struct Operator {
    /// How the operator appears in the audit log.
    pub actor: String,
    pub csrf: String,
    token_hash: [u8; 32],
}

impl Operator {
    /// Fails unless `presented` is this session's CSRF token.
    pub fn check_csrf(&self, presented: &str) -> Result<(), PageError> {
        if bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(PageError::new(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from this dashboard. Reload the page and try again.",
            ))
        }
    }
}

impl FromRequestParts<DashboardState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &DashboardState) -> Result<Self, Response> {
        let to_login = || {
            if parts.headers.contains_key("hx-request") {
                // htmx swaps fragments; tell it to load the login page instead.
                ([("HX-Redirect", "/dashboard/login")], StatusCode::UNAUTHORIZED).into_response()
            } else {
                Redirect::to("/dashboard/login").into_response()
            }
        };
        let Some(token) = session_token(&parts.headers) else { return Err(to_login()) };
        let token_hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let session = match sessions::find(&state.pool, &token_hash).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(to_login()),
            Err(e) => return Err(PageError::from(e).into_response()),
        };
        // A session lasts only as long as its key is valid and still has the operator scope.
        if session.key_id != "bootstrap" {
            match api_keys::find(&state.pool, &session.key_id).await {
                Ok(Some(k)) if k.revoked_at.is_none() && k.scopes.iter().any(|s| s == Scope::Operator.as_str()) => {}
                Ok(_) => return Err(to_login()),
                Err(e) => return Err(PageError::from(e).into_response()),
            }
        }
        Ok(Operator { actor: session.actor, csrf: session.csrf_token, token_hash })
    }
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `GET /dashboard/login`
pub async fn login_form() -> Markup {
    login_page(None)
}

fn login_page(error: Option<&str>) -> Markup {
    page_without_nav(
        "Sign in",
        html! {
            h1 { "sluice" }
            form.login method="post" action="/dashboard/login" {
                label for="key" { "Operator API key" }
                input #key name="key" type="password" autocomplete="current-password" required autofocus;
                @if let Some(e) = error { p.error role="alert" { (e) } }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    key: String,
}

/// `POST /dashboard/login`: an operator key opens a session.
#[tracing::instrument(skip_all)]
pub async fn login(
    State(state): State<DashboardState>,
    crate::api::server::ClientIp(ip): crate::api::server::ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    // Browsers say where a form came from; a login posted from another site is refused
    // (it could sign a victim into the attacker's key).
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return (StatusCode::FORBIDDEN, login_page(Some("Sign in from this dashboard's own page.")))
                .into_response();
        }
    }
    let client = ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let principal = match state.auth.verify(form.key.trim(), ip).await {
        Ok(p) => p,
        Err(crate::auth::AuthError::Throttled { .. }) => {
            let page = login_page(Some("Too many failed sign-ins from this address; try again later."));
            return (StatusCode::TOO_MANY_REQUESTS, page).into_response();
        }
        Err(_) => {
            // Bounded by the throttle: past auth.max_failures an address's attempts are 429s.
            let details = serde_json::json!({"client": client});
            if let Err(e) =
                audit::record_one(&state.pool, "dashboard", "dashboard.login_failed", &client, &details).await
            {
                tracing::warn!(error = %e, "audit of a failed login not recorded");
            }
            return (StatusCode::UNAUTHORIZED, login_page(Some("That key is not valid."))).into_response();
        }
    };
    if principal.require(Scope::Operator).is_err() {
        return (StatusCode::FORBIDDEN, login_page(Some("That key lacks the operator scope."))).into_response();
    }
    let token = random_hex();
    let csrf = random_hex();
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let ttl = state.dashboard.session_ttl_secs;
    // Bounded by configuration validation (at most 30 days).
    let expires = chrono::Utc::now() + chrono::Duration::seconds(i64::try_from(ttl).unwrap_or(0));
    let actor = format!("dashboard:key:{}", principal.key_id);
    if let Err(e) = sessions::create(&state.pool, &hash, &principal.key_id, &actor, &csrf, expires).await {
        return PageError::from(e).into_response();
    }
    let details = serde_json::json!({"client": client});
    if let Err(e) = audit::record_one(&state.pool, &actor, "dashboard.login", &principal.key_id, &details).await {
        return PageError::from(e).into_response();
    }
    tracing::info!(%actor, "dashboard login");
    let secure = if state.dashboard.secure_cookie { "; Secure" } else { "" };
    let cookie = format!("{COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/dashboard; Max-Age={ttl}{secure}");
    let mut response = Redirect::to("/dashboard").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    response
}

/// The logout form's fields.
#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

/// `POST /dashboard/logout`
pub async fn logout(State(state): State<DashboardState>, op: Operator, Form(form): Form<CsrfForm>) -> Response {
    if let Err(e) = op.check_csrf(&form.csrf) {
        return e.into_response();
    }
    if let Err(e) = sessions::delete(&state.pool, &op.token_hash).await {
        return PageError::from(e).into_response();
    }
    let mut response = Redirect::to("/dashboard/login").into_response();
    let clear = format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/dashboard; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    response
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}
