//! Recent commands, searchable by id, type and status (keyset-paginated, index-backed), and
//! one command's status, refreshed live, with a button that cancels it while it can be.

use super::layout::{clipped, maybe_time, page, status_badge, time, PageError};
use super::session::Operator;
use super::DashboardState;
use crate::store::commands::{self, CommandStatus, Search};
use crate::store::scheduled;
use axum::extract::{Path, Query, State};
use axum::response::Redirect;
use axum::Form;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

const PAGE: i64 = 50;

/// Search fields from the query string.
#[derive(Deserialize, Default)]
pub struct SearchQuery {
    #[serde(default)]
    id: String,
    #[serde(default)]
    command_type: String,
    #[serde(default)]
    status: String,
    /// Keyset cursor: `<micros>_<uuid>` of the last row shown.
    #[serde(default)]
    before: String,
}

/// `GET /dashboard/commands`
pub async fn index(
    State(state): State<DashboardState>,
    op: Operator,
    Query(q): Query<SearchQuery>,
) -> Result<Markup, PageError> {
    let bad = |what: &str| PageError::new(axum::http::StatusCode::BAD_REQUEST, format!("{what} is not valid"));
    let id = match q.id.trim() {
        "" => None,
        s => Some(Uuid::parse_str(s).map_err(|_| bad("The command id"))?),
    };
    let before = match q.before.split_once('_') {
        None => None,
        Some((m, id)) => Some((
            m.parse::<i64>().ok().and_then(DateTime::<Utc>::from_timestamp_micros).ok_or_else(|| bad("The cursor"))?,
            Uuid::parse_str(id).map_err(|_| bad("The cursor"))?,
        )),
    };
    let search = Search {
        id,
        kind: Some(q.command_type.trim().to_owned()).filter(|s| !s.is_empty()),
        status: CommandStatus::parse(&q.status).filter(|s| CommandStatus::STORED.contains(s)),
    };
    let max_bytes = i64::try_from(state.limits.max_page_bytes).unwrap_or(i64::MAX);
    let found = commands::search(&state.pool, &search, before, PAGE, max_bytes).await?;
    let rows = found.rows;
    let batches = crate::store::batches::recent(&state.pool, 10).await?;
    let next = found.more.then(|| rows.last()).flatten().map(|r| {
        format!(
            "/dashboard/commands?command_type={}&status={}&before={}_{}",
            super::dead_letters::urlencode(search.kind.as_deref().unwrap_or("")),
            search.status.map_or("", CommandStatus::as_str),
            r.command.updated_at.timestamp_micros(),
            r.command.id
        )
    });
    Ok(page(
        "Commands",
        "Commands",
        &op.csrf,
        html! {
            h1 { "Recent commands" }
            @if !batches.is_empty() {
                section {
                    h2 { "Recent batches" }
                    table {
                        thead { tr { th { "Created" } th { "Batch" } th { "Tenant" } th.num { "Total" } th.num { "Succeeded" } th.num { "Rejected" } th.num { "Dead" } th.num { "Refused at ingest" } th { "Finished" } } }
                        tbody {
                            @for b in &batches {
                                tr data-batch-id=(b.id) {
                                    td { (time(b.created_at)) }
                                    td { code { (b.id) } }
                                    td { (b.tenant) }
                                    td.num { (b.total) }
                                    td.num { (b.succeeded) }
                                    td.num { (b.rejected) }
                                    td.num { (b.dead) }
                                    td.num { (b.rejected_at_ingest) }
                                    td { (maybe_time(b.finished_at)) }
                                }
                            }
                        }
                    }
                }
            }
            section {
                form.filters method="get" action="/dashboard/commands" {
                    label { "Id" input name="id" value=(q.id) size="38"; }
                    label { "Type" input name="command_type" value=(q.command_type); }
                    label { "Status" select name="status" {
                        option value="" { "any" }
                        @for s in CommandStatus::STORED { option value=(s) selected[q.status == s.as_str()] { (s) } }
                    } }
                    button.secondary type="submit" { "Search" }
                }
                @if rows.is_empty() { p.muted { "No command matches." } } @else {
                    table {
                        thead { tr { th { "Updated" } th { "Id" } th { "Type" } th { "Tenant" } th { "Status" } th.num { "Attempts" } th { "Last error" } } }
                        tbody {
                            @for r in &rows {
                                tr {
                                    td { (time(r.command.updated_at)) }
                                    td { a href=(format!("/dashboard/commands/{}", r.command.id)) { code { (r.command.id) } } }
                                    td { (r.command.kind) }
                                    td { (r.tenant) }
                                    td { (status_badge(r.command.status.as_str())) }
                                    td.num { (r.command.attempts) }
                                    td { (clipped(r.command.last_error.as_deref().unwrap_or(""), 80)) }
                                }
                            }
                        }
                    }
                    @if let Some(n) = next { p { a href=(n) { "Older →" } } }
                }
            }
        },
    ))
}

/// `GET /dashboard/commands/{id}`
pub async fn detail(
    State(state): State<DashboardState>,
    op: Operator,
    Path(id): Path<Uuid>,
) -> Result<Markup, PageError> {
    let status = status_block(&state, &op.csrf, id).await?;
    Ok(page(
        "Command",
        "Commands",
        &op.csrf,
        html! {
            h1 { "Command " code { (id) } }
            section { (status) }
        },
    ))
}

/// `GET /dashboard/live/commands/{id}`: the status block alone, for htmx to refresh.
pub async fn live_status(
    State(state): State<DashboardState>,
    op: Operator,
    Path(id): Path<Uuid>,
) -> Result<Markup, PageError> {
    status_block(&state, &op.csrf, id).await
}

/// `POST /dashboard/commands/{id}/cancel`
pub async fn cancel(
    State(state): State<DashboardState>,
    op: Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<super::session::CsrfForm>,
) -> Result<Redirect, PageError> {
    op.check_csrf(&form.csrf)?;
    state.ops.cancel_command(id, &op.actor).await?;
    Ok(Redirect::to(&format!("/dashboard/commands/{id}")))
}

async fn status_block(state: &DashboardState, csrf: &str, id: Uuid) -> Result<Markup, PageError> {
    let one = Search { id: Some(id), ..Search::default() };
    let row = commands::search(&state.pool, &one, None, 1, i64::MAX).await?.rows.into_iter().next();
    let waiting = match row {
        None => scheduled::find(&state.pool, None, id).await?,
        Some(_) => None,
    };
    let cancellable = waiting.is_some()
        || row.as_ref().is_some_and(|r| matches!(r.command.status, CommandStatus::Retrying | CommandStatus::Dead));
    let live = format!("/dashboard/live/commands/{id}");
    Ok(html! {
        div #command-status hx-get=(live) hx-trigger="every 1s" hx-swap="outerHTML" {
            @if cancellable {
                form.inline method="post" action=(format!("/dashboard/commands/{id}/cancel")) data-confirm="Cancel this command? It will never be applied." {
                    (super::layout::csrf_field(csrf))
                    button.danger type="submit" data-cancel-command { "Cancel command" }
                }
            }
            @match &row {
                None if waiting.is_some() => {
                    @let w = waiting.as_ref();
                    p { "Status: " span data-command-status class="badge scheduled" { "scheduled" } }
                    table {
                        tr { th { "Runs at" } td { (w.map(|w| time(w.run_at)).unwrap_or_default()) } }
                        tr { th { "Type / tenant" } td { (w.map(|w| w.kind.as_str()).unwrap_or("")) " / " (w.map(|w| w.tenant.as_str()).unwrap_or("")) } }
                        tr { th { "Submitted" } td { (w.map(|w| time(w.created_at)).unwrap_or_default()) } }
                    }
                }
                None if crate::retention::pruned_by_age(id, &state.retention) => {
                    p { "Status: " span data-command-status { "pruned" } }
                    p.muted { "The id is older than retention.commands_days: its record, if it had one, was pruned." }
                }
                None => {
                    p { "Status: " span data-command-status { "pending" } }
                    p.muted { "No worker has taken it yet (it may still be in the queue), or its record was pruned." }
                }
                Some(r) => {
                    table {
                        tr { th { "Status" } td { span data-command-status class=(format!("badge {}", r.command.status)) { (r.command.status) } } }
                        tr { th { "Type / tenant" } td { (r.command.kind) " / " (r.tenant) } }
                        tr { th { "Attempts" } td { (r.command.attempts) } }
                        tr { th { "Submitted" } td { (time(r.command.submitted_at)) } }
                        tr { th { "Completed" } td { (maybe_time(r.command.completed_at)) } }
                        tr { th { "Last error" } td { (r.command.last_error.as_deref().unwrap_or("—")) } }
                        tr { th { "Result" } td { pre { (r.command.result.as_ref().map(|v| serde_json::to_string_pretty(v).unwrap_or_default()).unwrap_or_default()) } } }
                    }
                    @if let Some(errors) = r.command.errors.as_array().filter(|e| !e.is_empty()) {
                        h2 { "Failed attempts" }
                        table {
                            thead { tr { th.num { "#" } th { "At" } th { "Error" } } }
                            tbody { @for a in errors { tr { td.num { (a["attempt"]) } td { (a["at"].as_str().unwrap_or("")) } td { (a["error"].as_str().unwrap_or("")) } } } }
                        }
                    }
                }
            }
        }
    })
}
