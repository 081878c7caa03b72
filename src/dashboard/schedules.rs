//! Recurring schedules of every tenant: each one's next ticks and its last outcomes, with a
//! button that pauses or resumes it; and the count of one-off commands waiting for their time.

use super::layout::{csrf_field, time, PageError};
use super::session::Operator;
use super::DashboardState;
use crate::ops::schedules::ScheduleInput;
use crate::store::scheduled;
use axum::extract::{Path, State};
use axum::response::Redirect;
use axum::Form;
use maud::{html, Markup};

/// `GET /dashboard/schedules`
pub async fn index(State(state): State<DashboardState>, op: Operator) -> Result<Markup, PageError> {
    let all = state.ops.list_schedules().await?;
    let (waiting, due) = scheduled::counts(&state.pool).await?;
    Ok(super::layout::page(
        "Schedules",
        "Schedules",
        &op.csrf,
        html! {
            h1 { "Schedules" }
            p.muted data-scheduled-count=(waiting) {
                (waiting) " one-off commands wait for their run_at"
                @if due > 0 { "; " (due) " of them are due and being published" }
                "."
            }
            @if all.is_empty() {
                p { "No recurring schedules. Create one with PUT /v1/schedules/{name} or sluice schedules put." }
            } @else {
                table {
                    thead { tr { th { "Schedule" } th { "Pattern" } th { "Command" } th { "Next ticks" } th { "Last outcomes" } th {} } }
                    tbody {
                        @for s in &all {
                            @let tenant = s.tenant.as_str();
                            tr data-schedule=(s.name) {
                                td { (s.name) br; span.muted { (tenant) } }
                                td { code { (s.cron) } br; span.muted { (s.timezone) " · catch-up " (format!("{:?}", s.catch_up).to_lowercase()) } }
                                td { (s.command["type"].as_str().unwrap_or("")) " " span.muted { (s.command["priority"].as_str().unwrap_or("")) } }
                                td {
                                    @if s.paused { span.badge.dead { "paused" } }
                                    @for t in s.upcoming.iter().take(3) { (time(*t)) br; }
                                }
                                td {
                                    @for f in s.recent.iter().take(5) {
                                        a href=(format!("/dashboard/commands/{}", f.command_id)) { span class=(format!("badge {}", f.status)) { (f.status) } }
                                        " " span.muted { (time(f.tick)) @if f.missed > 0 { " (" (f.missed) " missed)" } } br;
                                    }
                                }
                                td {
                                    form.inline method="post" action=(format!("/dashboard/schedules/{}/{}/{}", tenant, s.name, if s.paused { "resume" } else { "pause" })) {
                                        (csrf_field(&op.csrf))
                                        button type="submit" { @if s.paused { "Resume" } @else { "Pause" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// `POST /dashboard/schedules/{tenant}/{name}/pause` and `/resume`
pub async fn set_paused(
    State(state): State<DashboardState>,
    op: Operator,
    Path((tenant, name, action)): Path<(String, String, String)>,
    Form(form): Form<super::session::CsrfForm>,
) -> Result<Redirect, PageError> {
    op.check_csrf(&form.csrf)?;
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return Err(PageError::new(axum::http::StatusCode::NOT_FOUND, "No such action.")),
    };
    let s = state.ops.get_schedule(&tenant, &name).await?;
    let input =
        ScheduleInput { cron: s.cron, timezone: Some(s.timezone), command: s.command, catch_up: s.catch_up, paused };
    state.ops.put_schedule(&tenant, &name, input, &op.actor).await?;
    Ok(Redirect::to("/dashboard/schedules"))
}
