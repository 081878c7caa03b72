//! The audit log: who replayed, discarded, edited, paused what, and when.

use super::layout::{page, time, PageError};
use super::session::Operator;
use super::DashboardState;
use crate::store::audit;
use axum::extract::{Query, State};
use maud::{html, Markup};
use serde::Deserialize;

const PAGE: i64 = 100;

/// `?before=<entry id>`
#[derive(Deserialize)]
pub struct AuditQuery {
    before: Option<i64>,
}

/// `GET /dashboard/audit`
pub async fn index(
    State(state): State<DashboardState>,
    op: Operator,
    Query(q): Query<AuditQuery>,
) -> Result<Markup, PageError> {
    let entries = audit::list(&state.pool, q.before, PAGE).await?;
    let next = (entries.len() as i64 == PAGE).then(|| entries.last().map(|e| e.id)).flatten();
    Ok(page(
        "Audit log",
        "Audit log",
        &op.csrf,
        html! {
            h1 { "Audit log" }
            section {
                @if entries.is_empty() { p.muted { "No operator action yet." } } @else {
                    table {
                        thead { tr { th { "At" } th { "Who" } th { "Action" } th { "Target" } th { "Details" } } }
                        tbody {
                            @for e in &entries {
                                tr {
                                    td { (time(e.at)) }
                                    td { code { (e.actor) } }
                                    td { (e.action) }
                                    td { code { (e.target) } }
                                    td { code { (e.details.to_string()) } }
                                }
                            }
                        }
                    }
                    @if let Some(n) = next { p { a href=(format!("/dashboard/audit?before={n}")) { "Older →" } } }
                }
            }
        },
    ))
}
