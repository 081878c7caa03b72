//! The page shell, shared bits of markup, and the dashboard's error page. maud escapes every
//! interpolated value; nothing here builds HTML from strings.

use crate::ops::OpsError;
use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

/// A full page with the navigation bar; `csrf` feeds the logout form.
pub fn page(title: &str, active: &str, csrf: &str, content: Markup) -> Markup {
    shell(
        title,
        html! {
            header {
                nav {
                    span.brand { "sluice" }
                    @for (href, label) in [("/dashboard", "Overview"), ("/dashboard/dead-letters", "Dead letters"), ("/dashboard/commands", "Commands"), ("/dashboard/schedules", "Schedules"), ("/dashboard/ordering", "Ordering keys"), ("/dashboard/types", "Command types"), ("/dashboard/audit", "Audit log")] {
                        a href=(href) aria-current=[(label == active).then_some("page")] { (label) }
                    }
                    form.logout method="post" action="/dashboard/logout" {
                        input type="hidden" name="csrf" value=(csrf);
                        button.link type="submit" { "Sign out" }
                    }
                }
            }
            main { (content) }
        },
    )
}

/// A page without navigation (login, errors).
pub fn page_without_nav(title: &str, content: Markup) -> Markup {
    shell(title, html! { main.narrow { (content) } })
}

fn shell(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // htmx would inject an inline <style>, which the CSP forbids.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles": false}"#;
                title { "sluice · " (title) }
                link rel="stylesheet" href="/dashboard/assets/style.css";
                script src="/dashboard/assets/htmx.min.js" defer {}
                script src="/dashboard/assets/dashboard.js" defer {}
            }
            body { (body) }
        }
    }
}

/// A hidden CSRF field for forms.
pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A time as UTC with seconds, and how long ago in a tooltip.
pub fn time(t: DateTime<Utc>) -> Markup {
    let ago = (Utc::now() - t).num_seconds().max(0);
    html! { time datetime=(t.to_rfc3339()) title=(format!("{} ago", human_secs(ago))) { (t.format("%Y-%m-%d %H:%M:%S")) } }
}

/// An optional time, or a dash.
pub fn maybe_time(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { "—" },
    }
}

/// `90` → `1m30s`.
pub fn human_secs(s: i64) -> String {
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A status as a coloured badge.
pub fn status_badge(status: &str) -> Markup {
    html! { span class=(format!("badge {status}")) { (status) } }
}

/// Text cut to `max` characters, the whole of it in a tooltip.
pub fn clipped(text: &str, max: usize) -> Markup {
    if text.chars().count() <= max {
        html! { (text) }
    } else {
        let short: String = text.chars().take(max).collect();
        html! { span title=(text) { (short) "…" } }
    }
}

/// A failure shown as an HTML page (the API's JSON errors are for programs).
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    /// An error page with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Invalid(_) = &e {
            return Self::new(
                StatusCode::BAD_REQUEST,
                "A value in the request cannot be stored (e.g. a NUL character).",
            );
        }
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is unavailable; this page will work again when it is back.",
            )
        } else {
            tracing::error!(error = %e, "dashboard query failed");
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error; it has been logged.")
        }
    }
}

impl From<OpsError> for PageError {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, m),
            OpsError::Conflict(m) => Self::new(StatusCode::CONFLICT, m),
            e @ OpsError::AlreadyFinal { .. } => Self::new(StatusCode::CONFLICT, format!("The command {e}.")),
            OpsError::BadInput(m) => Self::new(StatusCode::BAD_REQUEST, m),
            OpsError::InvalidField { path, message } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{path}: {message}"))
            }
            e @ OpsError::Invalid { .. } => Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            OpsError::Publish(e) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, format!("RabbitMQ did not take it: {e}. Try again."))
            }
            OpsError::Store(e) => e.into(),
            // Operators may read it: it names the key id that is missing, never a secret.
            OpsError::Secret(e) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = page_without_nav(
            "Error",
            html! {
                h1 { (self.status.as_u16()) " " (self.status.canonical_reason().unwrap_or("")) }
                p.error role="alert" { (self.message) }
                p { a href="/dashboard" { "Back to the dashboard" } }
            },
        );
        (self.status, body).into_response()
    }
}
