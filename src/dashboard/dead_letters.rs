//! Dead letters in the dashboard: groups by cause with replay/discard for the whole group, a
//! live list with filters, and a detail view with the payload editor.

use super::layout::{clipped, csrf_field, maybe_time, page, time, PageError};
use super::session::Operator;
use super::DashboardState;
use crate::ops::dead_letters::MAX_BULK;
use crate::store::dead_letters::{self, Filter};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// List filters from the query string (empty fields are ignored).
#[derive(Deserialize, Default, Clone)]
pub struct ListQuery {
    #[serde(default)]
    command_type: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    notice: String,
}

impl ListQuery {
    fn filter(&self) -> Filter {
        let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        Filter {
            command_type: some(&self.command_type),
            tenant: some(&self.tenant),
            error: some(&self.error),
            fingerprint: some(&self.group),
            ..Filter::default()
        }
    }

    fn query_string(&self) -> String {
        let pairs = [
            ("command_type", &self.command_type),
            ("tenant", &self.tenant),
            ("error", &self.error),
            ("group", &self.group),
        ];
        let mut s = String::new();
        for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
            s.push(if s.is_empty() { '?' } else { '&' });
            s.push_str(k);
            s.push('=');
            s.push_str(&urlencode(v));
        }
        s
    }
}

pub(super) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /dashboard/dead-letters`
pub async fn index(
    State(state): State<DashboardState>,
    op: Operator,
    Query(q): Query<ListQuery>,
) -> Result<Markup, PageError> {
    let groups = dead_letters::groups(&state.pool, 50).await?;
    let rows = rows(&state, &q).await?;
    Ok(page(
        "Dead letters",
        "Dead letters",
        &op.csrf,
        html! {
            h1 { "Dead letters" }
            @if !q.notice.is_empty() { p.flash role="status" { (q.notice) } }
            section {
                h2 { "Groups (open dead letters by cause)" }
                @if groups.is_empty() { p.muted { "No open dead letters." } } @else {
                    table {
                        thead { tr { th { "Type" } th { "Kind" } th { "Error (latest)" } th.num { "Open" } th.num { "Total" } th { "First seen" } th { "Last seen" } th { "" } } }
                        tbody {
                            @for g in &groups {
                                tr data-group=(g.fingerprint) {
                                    td { (g.command_type.as_deref().unwrap_or("?")) }
                                    td { (g.error_kind) }
                                    td { a href=(format!("/dashboard/dead-letters?group={}", g.fingerprint)) { (clipped(&g.message, 120)) } }
                                    td.num { (g.open_count) }
                                    td.num { (g.total_count) }
                                    td { (time(g.first_seen)) }
                                    td { (time(g.last_seen)) }
                                    td {
                                        form.inline method="post" action="/dashboard/dead-letters/groups/replay" data-confirm=(format!("Replay {} dead letters of this group?", g.open_count)) {
                                            (csrf_field(&op.csrf))
                                            input type="hidden" name="group" value=(g.fingerprint);
                                            button type="submit" { "Replay all" }
                                        }
                                        " "
                                        form.inline method="post" action="/dashboard/dead-letters/groups/discard" data-confirm=(format!("Discard {} dead letters of this group?", g.open_count)) {
                                            (csrf_field(&op.csrf))
                                            input type="hidden" name="group" value=(g.fingerprint);
                                            button.danger type="submit" { "Discard all" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section {
                h2 { "Open dead letters" }
                form.filters method="get" action="/dashboard/dead-letters" {
                    label { "Type" input name="command_type" value=(q.command_type); }
                    label { "Tenant" input name="tenant" value=(q.tenant); }
                    label { "Error contains" input name="error" value=(q.error); }
                    label { "Group" input name="group" value=(q.group) size="18"; }
                    button.secondary type="submit" { "Filter" }
                }
                div hx-get=(format!("/dashboard/live/dead-letters{}", q.query_string())) hx-trigger="every 2s" hx-swap="innerHTML" {
                    (rows)
                }
            }
        },
    ))
}

/// `GET /dashboard/live/dead-letters`: the list alone, for htmx to refresh.
pub async fn live(
    State(state): State<DashboardState>,
    _op: Operator,
    Query(q): Query<ListQuery>,
) -> Result<Markup, PageError> {
    rows(&state, &q).await
}

async fn rows(state: &DashboardState, q: &ListQuery) -> Result<Markup, PageError> {
    let list = dead_letters::list(&state.pool, &q.filter(), None, 100).await?;
    Ok(html! {
        @if list.is_empty() { p.muted { "None match." } } @else {
            table {
                thead { tr { th { "Dead since" } th { "Type" } th { "Tenant" } th.num { "Attempts" } th { "Kind" } th { "Error" } th { "Command" } } }
                tbody {
                    @for d in &list {
                        tr data-dead-letter-id=(d.id) data-command-id=[d.command_id] {
                            td { a.dead-letter-link href=(format!("/dashboard/dead-letters/{}", d.id)) { (time(d.dead_at)) } }
                            td { (d.command_type.as_deref().unwrap_or("?")) }
                            td { (d.tenant.as_deref().unwrap_or("?")) }
                            td.num { (d.attempts) }
                            td { (d.error_kind) }
                            td { (clipped(&d.error, 100)) }
                            td { @if let Some(c) = d.command_id { code { (c) } } @else { "—" } }
                        }
                    }
                }
            }
            @if list.len() == 100 { p.muted { "Showing the newest 100; narrow the filter to see others." } }
        }
    })
}

/// `GET /dashboard/dead-letters/{id}`
pub async fn detail(
    State(state): State<DashboardState>,
    op: Operator,
    Path(id): Path<Uuid>,
) -> Result<Markup, PageError> {
    detail_page(&state, &op, id, None, None).await
}

async fn detail_page(
    state: &DashboardState,
    op: &Operator,
    id: Uuid,
    draft: Option<&str>,
    error: Option<&str>,
) -> Result<Markup, PageError> {
    // The page reads the detail as the API serves it, field by field.
    let v = serde_json::to_value(state.ops.detail(id).await?).unwrap_or_default();
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    let payload = serde_json::to_string_pretty(&v["payload"]).unwrap_or_default();
    let open = v["state"] == "open";
    let attempts = v["attempt_errors"].as_array().cloned().unwrap_or_default();
    let dead_at = v["dead_at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.to_utc());
    Ok(page(
        "Dead letter",
        "Dead letters",
        &op.csrf,
        html! {
            h1 { "Dead letter " code { (id) } }
            section {
                table {
                    tr { th { "State" } td { (super::layout::status_badge(&s("state"))) " replayed " (v["replay_count"]) " time(s)" } }
                    tr { th { "Command" } td {
                        @if let Some(c) = v["command_id"].as_str() { a href=(format!("/dashboard/commands/{c}")) { code { (c) } } } @else { "—" }
                    } }
                    tr { th { "Type / tenant" } td { (s("command_type")) " / " (s("tenant")) } }
                    tr { th { "Error" } td { span.badge { (s("error_kind")) } " " (s("error")) } }
                    tr { th { "Attempts" } td { (v["attempts"]) } }
                    tr { th { "Dead since" } td { (maybe_time(dead_at)) } }
                    tr { th { "Group" } td { a href=(format!("/dashboard/dead-letters?group={}", s("fingerprint"))) { code { (s("fingerprint")) } } } }
                }
            }
            section {
                h2 { "Attempts" }
                @if attempts.is_empty() { p.muted { "No failed attempt recorded for this command." } } @else {
                    table {
                        thead { tr { th.num { "#" } th { "At" } th { "Error" } } }
                        tbody { @for a in &attempts { tr { td.num { (a["attempt"]) } td { (a["at"].as_str().unwrap_or("")) } td { (a["error"].as_str().unwrap_or("")) } } } }
                    }
                }
            }
            section {
                h2 { "Replay" }
                @if let Some(e) = error { p.error role="alert" { (e) } }
                form #replay-form method="post" action=(format!("/dashboard/dead-letters/{id}/replay")) {
                    (csrf_field(&op.csrf))
                    label for="payload" { "Payload (edit to fix it; checked against the type's schema, and the change is audited)" }
                    textarea #payload name="payload" spellcheck="false" { (draft.unwrap_or(&payload)) }
                    p { button type="submit" { "Replay" } }
                }
                @if open {
                    form method="post" action=(format!("/dashboard/dead-letters/{id}/discard")) data-confirm="Discard this dead letter?" {
                        (csrf_field(&op.csrf))
                        button.danger type="submit" { "Discard" }
                    }
                }
            }
            section {
                h2 { "Headers" }
                pre { (serde_json::to_string_pretty(&v["headers"]).unwrap_or_default()) }
            }
        },
    ))
}

/// The replay form's fields.
#[derive(Deserialize)]
pub struct ReplayForm {
    csrf: String,
    payload: Option<String>,
}

/// `POST /dashboard/dead-letters/{id}/replay`: replays, with the payload as edited; then shows
/// the command so the operator watches it succeed.
#[tracing::instrument(skip_all, fields(dead_letter_id = %id))]
pub async fn replay(
    State(state): State<DashboardState>,
    op: Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<ReplayForm>,
) -> Result<Response, PageError> {
    op.check_csrf(&form.csrf)?;
    let original = state.ops.detail(id).await?.payload;
    let edited = match form.payload.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        None => None,
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v) if v == original => None,
            Ok(v) => Some(v),
            Err(e) => {
                let msg = format!("The payload is not valid JSON: {e}");
                let page = detail_page(&state, &op, id, Some(text), Some(&msg)).await?;
                return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
            }
        },
    };
    match state.ops.replay(id, edited, &op.actor).await {
        Ok(r) => Ok(Redirect::to(&format!("/dashboard/commands/{}", r.command_id)).into_response()),
        Err(crate::ops::OpsError::Invalid { kind, violations }) => {
            let lines: Vec<String> = violations.iter().map(|v| format!("{}: {}", v.path, v.message)).collect();
            let msg = format!("The payload does not match the schema of {kind}: {}", lines.join("; "));
            let page = detail_page(&state, &op, id, form.payload.as_deref(), Some(&msg)).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /dashboard/dead-letters/{id}/discard`
pub async fn discard(
    State(state): State<DashboardState>,
    op: Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<super::session::CsrfForm>,
) -> Result<Redirect, PageError> {
    op.check_csrf(&form.csrf)?;
    state.ops.discard(id, &op.actor).await?;
    Ok(Redirect::to("/dashboard/dead-letters?notice=Discarded%20one%20dead%20letter."))
}

/// A group action's fields.
#[derive(Deserialize)]
pub struct GroupForm {
    csrf: String,
    group: String,
}

/// `POST /dashboard/dead-letters/groups/replay`: replays the group's open letters (up to the
/// bulk limit, 100 a second); a larger group takes another click, which resumes.
pub async fn replay_group(
    State(state): State<DashboardState>,
    op: Operator,
    Form(form): Form<GroupForm>,
) -> Result<Redirect, PageError> {
    op.check_csrf(&form.csrf)?;
    let filter = Filter { fingerprint: Some(form.group), until: Some(chrono::Utc::now()), ..Filter::default() };
    let bulk = state.ops.replay_many(&filter, MAX_BULK, 100.0, &op.actor).await?;
    let notice = format!("Replayed {}; {} failed; {} still open in the group.", bulk.done, bulk.failed, bulk.remaining);
    Ok(Redirect::to(&format!("/dashboard/dead-letters?notice={}", urlencode(&notice))))
}

/// `POST /dashboard/dead-letters/groups/discard`
pub async fn discard_group(
    State(state): State<DashboardState>,
    op: Operator,
    Form(form): Form<GroupForm>,
) -> Result<Redirect, PageError> {
    op.check_csrf(&form.csrf)?;
    // Only the letters the operator saw counted in the confirmation, not newer ones.
    let filter = Filter { fingerprint: Some(form.group), until: Some(chrono::Utc::now()), ..Filter::default() };
    let bulk = state.ops.discard_many(&filter, MAX_BULK, &op.actor).await?;
    let notice = format!("Discarded {}; {} still open in the group.", bulk.done, bulk.remaining);
    Ok(Redirect::to(&format!("/dashboard/dead-letters?notice={}", urlencode(&notice))))
}
