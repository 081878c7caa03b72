//! The overview: queues (depth, consumers, rates, wait, pause), throughput and end-to-end
//! latency over the last minutes, outcomes by type, and the live processes. Every query here
//! reads small tables or indexed recent rows, so a refresh costs the same with a million
//! commands as with ten.

use super::charts::{line_chart, quantile_ms};
use super::layout::{csrf_field, human_secs, page, status_badge, time, PageError};
use super::session::{CsrfForm, Operator};
use super::DashboardState;
use crate::store::{outcome_counts, processes};
use axum::extract::{Path, State};
use axum::response::Redirect;
use axum::Form;
use maud::{html, Markup};
use std::sync::Mutex;
use std::time::Instant;

const MINUTES: i32 = 10;

/// `GET /dashboard`
pub async fn index(State(state): State<DashboardState>, op: Operator) -> Result<Markup, PageError> {
    let live = content(&state, &op).await?;
    Ok(page(
        "Overview",
        "Overview",
        &op.csrf,
        html! {
            h1 { "Overview" }
            div hx-get="/dashboard/live/overview" hx-trigger="every 3s" hx-swap="innerHTML" { (live) }
        },
    ))
}

/// `GET /dashboard/live/overview`: the overview's content, for htmx to refresh.
pub async fn live(State(state): State<DashboardState>, op: Operator) -> Result<Markup, PageError> {
    content(&state, &op).await
}

/// Process totals at the previous refresh, to turn totals into rates.
static LAST_TOTALS: Mutex<Option<(Instant, i64, i64)>> = Mutex::new(None);

async fn content(state: &DashboardState, op: &Operator) -> Result<Markup, PageError> {
    let procs = processes::recent(&state.pool).await?;
    let alive: Vec<_> = procs.iter().filter(|p| p.alive).collect();
    let (accepted, processed): (i64, i64) = alive.iter().fold((0, 0), |(a, p), x| (a + x.accepted, p + x.processed));
    let rates = {
        let mut last = LAST_TOTALS.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let r = last.and_then(|(at, a0, p0)| {
            let secs = now.duration_since(at).as_secs_f64();
            (secs >= 0.5 && accepted >= a0 && processed >= p0)
                .then(|| ((accepted - a0) as f64 / secs, (processed - p0) as f64 / secs))
        });
        *last = Some((now, accepted, processed));
        r
    };
    let wait_ms = alive.iter().filter(|p| p.consuming).filter_map(|p| p.queue_wait_ms).max();
    let queues = state.broker.queue_stats().await;
    let paused_names = processes::paused_queues(&state.pool).await?;
    let paused: Vec<bool> = queues.iter().flatten().map(|q| paused_names.contains(&q.name)).collect();
    let t = state.broker.topology();
    let pausable = [t.work_queue(), t.dead_letter_queue()];
    let buckets = outcome_counts::recent(&state.pool, MINUTES).await?;
    let by_type = outcome_counts::by_type(&state.pool, MINUTES).await?;
    let now = chrono::Utc::now();
    let xs: Vec<f64> = buckets.iter().map(|b| -((now - b.bucket).num_seconds() as f64)).collect();
    let throughput: Vec<f64> = buckets.iter().map(|b| (b.succeeded + b.rejected + b.dead) as f64 / 10.0).collect();
    let p50: Vec<f64> = buckets.iter().map(|b| quantile_ms(&b.latency_buckets, 0.5)).collect();
    let p95: Vec<f64> = buckets.iter().map(|b| quantile_ms(&b.latency_buckets, 0.95)).collect();
    Ok(html! {
        section {
            h2 { "Queues" }
            p.muted {
                @match rates {
                    Some((a, p)) => { "Accepted " strong { (format!("{a:.0}")) } "/s · processed (acked) " strong { (format!("{p:.0}")) } "/s" }
                    None => { "Rates appear from the next refresh." }
                }
                " · latest delivery had waited " strong { (wait_ms.map_or("—".to_owned(), |ms| if ms < 1000 { format!("{ms} ms") } else { human_secs(ms / 1000) })) }
            }
            @match &queues {
                Err(e) => p.error { "Cannot read queues from RabbitMQ: " (e.to_string()) }
                Ok(qs) => table {
                    thead { tr { th { "Queue" } th { "Role" } th.num { "Ready" } th.num { "Consumers" } th { "Consumption" } } }
                    tbody {
                        @for (q, is_paused) in qs.iter().zip(&paused) {
                            tr data-queue=(q.name) {
                                td { code { (q.name) } }
                                td { (status_badge(q.role)) }
                                td.num { (q.messages) }
                                td.num { (q.consumers) }
                                td {
                                    @if pausable.contains(&q.name) {
                                        @if *is_paused {
                                            (status_badge("paused")) " "
                                            form.inline method="post" action=(format!("/dashboard/queues/{}/resume", q.name)) {
                                                (csrf_field(&op.csrf)) button.secondary type="submit" { "Resume" }
                                            }
                                        } @else {
                                            (status_badge("consuming")) " "
                                            form.inline method="post" action=(format!("/dashboard/queues/{}/pause", q.name)) data-confirm="Pause consumption of this queue?" {
                                                (csrf_field(&op.csrf)) button.danger type="submit" { "Pause" }
                                            }
                                        }
                                    } @else { span.muted { "delay (TTL) queue" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        div.grid {
            section { (line_chart("Commands completed per second", "/s", &xs, &throughput, None)) }
            section { (line_chart("End-to-end latency p50", "ms", &xs, &p50, Some(("p95", &p95)))) }
        }
        section {
            h2 { "Outcomes by command type (last " (MINUTES) " minutes)" }
            @if by_type.is_empty() { p.muted { "Nothing processed in that time." } } @else {
                table {
                    thead { tr { th { "Type" } th.num { "Succeeded" } th.num { "Rejected" } th.num { "Retried" } th.num { "Dead" } } }
                    tbody { @for (kind, s, r, re, d) in &by_type { tr { td { (kind) } td.num { (s) } td.num { (r) } td.num { (re) } td.num { (d) } } } }
                }
            }
        }
        section {
            h2 { "Processes" }
            @if procs.is_empty() { p.muted { "No process has reported yet." } } @else {
                table {
                    thead { tr { th { "Process" } th { "Roles" } th { "State" } th.num { "Concurrency" } th.num { "Prefetch" } th.num { "In flight" } th.num { "Processed" } th.num { "Accepted" } th { "Started" } th { "Last seen" } } }
                    tbody {
                        @for p in &procs {
                            tr {
                                td { code { (p.host) ":" (p.pid) } }
                                td { (p.roles) }
                                td { (status_badge(if p.alive { "alive" } else { "gone" })) }
                                td.num { (p.concurrency) }
                                td.num { (p.prefetch) }
                                td.num { (p.in_flight) }
                                td.num { (p.processed) }
                                td.num { (p.accepted) }
                                td { (time(p.started_at)) }
                                td { (time(p.last_seen)) }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// `POST /dashboard/queues/{name}/pause`
pub async fn pause(
    State(state): State<DashboardState>,
    op: Operator,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, PageError> {
    op.check_csrf(&form.csrf)?;
    state.ops.set_paused(&name, true, &op.actor).await?;
    Ok(Redirect::to("/dashboard"))
}

/// `POST /dashboard/queues/{name}/resume`
pub async fn resume(
    State(state): State<DashboardState>,
    op: Operator,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, PageError> {
    op.check_csrf(&form.csrf)?;
    state.ops.set_paused(&name, false, &op.actor).await?;
    Ok(Redirect::to("/dashboard"))
}
