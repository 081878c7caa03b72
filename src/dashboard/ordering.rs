//! Ordering keys held back: a halted key waits for its dead letter to be replayed or
//! discarded (the dead letters page, or the command's page); a retrying one for its head's
//! next attempt.

use super::layout::{time, PageError};
use super::session::Operator;
use super::DashboardState;
use axum::extract::State;
use maud::{html, Markup};

/// `GET /dashboard/ordering`
pub async fn index(State(state): State<DashboardState>, op: Operator) -> Result<Markup, PageError> {
    let blocked = state.ops.blocked_keys().await?;
    Ok(super::layout::page(
        "Ordering keys",
        "Ordering keys",
        &op.csrf,
        html! {
            h1 { "Blocked ordering keys" }
            p.muted {
                "A key's commands run one at a time in the order accepted. A key is held back while its head "
                "waits for a retry, and halted when its head is dead under its type's halt policy: replay or "
                "discard that dead letter (or cancel the command) to let the key go on."
            }
            @if blocked.is_empty() {
                p data-blocked-count="0" { "No key is blocked." }
            } @else {
                table data-blocked-count=(blocked.len()) {
                    thead { tr { th { "Key" } th { "State" } th { "Held by" } th { "Waiting behind" } th { "Since" } th { "Error" } } }
                    tbody {
                        @for b in &blocked {
                            tr data-ordering-key=(b.ordering_key) {
                                td { code { (b.ordering_key) } br; span.muted { (b.tenant) } }
                                td {
                                    @if b.halted { span.badge.dead { "halted" } }
                                    @else { span.badge.retrying { "retrying" } br; span.muted { "next " (time(b.not_before)) } }
                                }
                                td { a href=(format!("/dashboard/commands/{}", b.command_id)) { (b.command_type) } }
                                td { (b.held) }
                                td { (time(b.since)) }
                                td.error { (b.error) }
                            }
                        }
                    }
                }
            }
        },
    ))
}
