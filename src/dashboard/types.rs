//! The command types this deployment carries: what handles each, its retry settings, its
//! payload schema, and for remote (HTTP) types which processes have their circuit open.

use super::layout::{page, PageError};
use super::session::Operator;
use super::DashboardState;
use crate::store::processes;
use axum::extract::State;
use maud::{html, Markup};

/// `GET /dashboard/types`
pub async fn index(State(state): State<DashboardState>, op: Operator) -> Result<Markup, PageError> {
    let circuits = processes::open_circuits(&state.pool).await?;
    Ok(page(
        "Command types",
        "Command types",
        &op.csrf,
        html! {
            h1 { "Command types" }
            p.muted { "Built-in types and those declared in commands.dir. A circuit opens when an endpoint keeps failing: its commands are then put aside, not attempted, until a probe succeeds." }
            table {
                thead { tr { th { "Type" } th { "Handler" } th { "Retries" } th { "Circuit" } } }
                tbody {
                    @for t in state.types.iter() {
                        @let open: Vec<_> = circuits.iter().filter(|(k, _, _)| *k == t.kind).collect();
                        tr id={ "type-" (t.kind) } {
                            td { a href={ "#schema-" (t.kind) } { (t.kind) } @if !t.submittable { " " span.muted { "(made by sluice)" } } }
                            td { (t.handler) }
                            td {
                                @match t.retry {
                                    Some(r) => {
                                        @if let Some(n) = r.max_attempts { (n) " attempts " }
                                        @if let Some(ms) = r.base_ms { "from " (ms) " ms" }
                                    },
                                    None => span.muted { "[worker] defaults" },
                                }
                            }
                            td.circuit {
                                @if open.is_empty() { span.muted { "closed" } } @else {
                                    @for (_, state, process) in &open { span.badge.dead { (state) } " " (process) br; }
                                }
                            }
                        }
                    }
                }
            }
            @for t in state.types.iter() {
                section id={ "schema-" (t.kind) } {
                    h2 { (t.kind) }
                    pre { (state.schemas.schema(&t.kind).map(|s| serde_json::to_string_pretty(s).unwrap_or_default()).unwrap_or_default()) }
                }
            }
        },
    ))
}
