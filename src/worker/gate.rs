//! What stands between a remote command type and its endpoint in one process: a bound on calls
//! in flight, a bound on deliveries waiting for one, and a circuit breaker that stops calling
//! an endpoint that keeps failing and probes it, one call at a time, to close again.

use crate::handlers::remote::RemoteLimits;
use crate::heartbeat::Reporter;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest a circuit stays open before probing again.
const MAX_OPEN: Duration = Duration::from_secs(60);

/// Whether a delivery may go on to call its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Call; `probe` when this call decides whether a half-open circuit closes.
    Go { probe: bool },
    /// Do not call now: put the delivery aside for about `delay` (not counted as an attempt).
    Defer { delay: Duration, why: &'static str },
}

/// One remote type's gate in this process.
pub struct Gate {
    kind: String,
    limits: RemoteLimits,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Moving average of a call's duration (ms), to guess how long a deferred delivery waits.
    mean_call_ms: AtomicU64,
    circuit: Mutex<Circuit>,
    reporter: Arc<Reporter>,
}

impl Gate {
    /// A gate for `kind` with `limits`, reporting its circuit through `reporter`.
    pub fn new(kind: &str, limits: RemoteLimits, reporter: Arc<Reporter>) -> Self {
        metrics::gauge!("sluice_circuit_state", "type" => kind.to_owned()).set(0.0);
        Self {
            kind: kind.to_owned(),
            limits,
            permits: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            waiting: AtomicUsize::new(0),
            mean_call_ms: AtomicU64::new(100),
            circuit: Mutex::new(Circuit::new(limits.circuit_failures, limits.circuit_open)),
            reporter,
        }
    }

    /// Decides whether a delivery goes on. Beyond `max_in_flight` calls running and as many
    /// waiting, a delivery is put aside rather than held: held deliveries count against the
    /// process's prefetch, and a slow endpoint must not fill it and starve the other types.
    pub fn admit(&self) -> Admit {
        let verdict = self.with_circuit(|c| c.admit(Instant::now()));
        match verdict {
            Err(wait) => Admit::Defer { delay: wait, why: "circuit_open" },
            Ok(probe) => {
                let full = self.permits.available_permits() == 0
                    && self.waiting.load(Ordering::Relaxed) >= self.limits.max_in_flight;
                if full && !probe {
                    let queued = self.waiting.load(Ordering::Relaxed) as u64 / self.limits.max_in_flight.max(1) as u64;
                    let guess = self.mean_call_ms.load(Ordering::Relaxed).saturating_mul(queued + 1);
                    Admit::Defer { delay: Duration::from_millis(guess), why: "at_max_in_flight" }
                } else {
                    Admit::Go { probe }
                }
            }
        }
    }

    /// Waits for a call slot.
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = self.permits.clone().acquire_owned().await.ok();
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        permit
    }

    /// A call ended: `healthy` unless it failed transiently (what opens a circuit).
    pub fn called(&self, healthy: bool, probe: bool, took: Duration) {
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        let old = self.mean_call_ms.load(Ordering::Relaxed);
        self.mean_call_ms.store((old * 7 + ms) / 8, Ordering::Relaxed);
        self.with_circuit(|c| if healthy { c.succeeded(probe) } else { c.failed(probe, Instant::now()) });
    }

    /// A delivery admitted as the probe ended without calling (shutdown, a duplicate).
    pub fn not_called(&self, probe: bool) {
        if probe {
            self.with_circuit(Circuit::probe_abandoned);
        }
    }

    fn with_circuit<T>(&self, f: impl FnOnce(&mut Circuit) -> T) -> T {
        let mut c = self.circuit.lock().unwrap_or_else(|e| e.into_inner());
        let before = c.state_name();
        let out = f(&mut c);
        let after = c.state_name();
        if before != after {
            tracing::warn!(kind = %self.kind, from = before, to = after, "circuit changed");
            let level = match after {
                "closed" => 0.0,
                "half_open" => 1.0,
                _ => 2.0,
            };
            metrics::gauge!("sluice_circuit_state", "type" => self.kind.clone()).set(level);
            if after == "open" {
                metrics::counter!("sluice_circuit_opened_total", "type" => self.kind.clone()).increment(1);
            }
            self.reporter.circuit(&self.kind, after);
        }
        out
    }
}

/// A circuit breaker: closed (calls go), open (none go, until a time), half-open (one probe).
#[derive(Debug)]
pub struct Circuit {
    threshold: u32,
    first_open: Duration,
    open_for: Duration,
    consecutive: u32,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

impl Circuit {
    /// Opens after `threshold` consecutive failures, first for `open`.
    pub fn new(threshold: u32, open: Duration) -> Self {
        Self { threshold: threshold.max(1), first_open: open, open_for: open, consecutive: 0, state: State::Closed }
    }

    /// `Ok(probe)` when a call may go, or how long to wait.
    pub fn admit(&mut self, now: Instant) -> Result<bool, Duration> {
        match self.state {
            State::Closed => Ok(false),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                Ok(true)
            }
            // One probe at a time; the rest come back about when it has answered.
            State::HalfOpen { probing: true } => Err(self.first_open.min(Duration::from_secs(1))),
        }
    }

    /// A call succeeded (or was refused on its merits: the endpoint is up).
    pub fn succeeded(&mut self, probe: bool) {
        self.consecutive = 0;
        if probe || matches!(self.state, State::HalfOpen { .. }) {
            self.state = State::Closed;
            self.open_for = self.first_open;
        }
    }

    /// A call failed transiently.
    pub fn failed(&mut self, probe: bool, now: Instant) {
        match self.state {
            State::HalfOpen { .. } if probe => {
                self.open_for = (self.open_for * 2).min(MAX_OPEN);
                self.state = State::Open { until: now + self.open_for };
            }
            State::Closed => {
                self.consecutive += 1;
                if self.consecutive >= self.threshold {
                    self.state = State::Open { until: now + self.open_for };
                }
            }
            // Calls that started before it opened say nothing new.
            State::Open { .. } | State::HalfOpen { .. } => {}
        }
    }

    /// The probe never called; the next delivery probes instead.
    pub fn probe_abandoned(&mut self) {
        if let State::HalfOpen { probing: true } = self.state {
            self.state = State::HalfOpen { probing: false };
        }
    }

    /// `closed`, `open` or `half_open`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_circuit_opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let mut c = Circuit::new(3, Duration::from_secs(5));
        let now = Instant::now();
        c.failed(false, now);
        c.failed(false, now);
        c.succeeded(false);
        c.failed(false, now);
        c.failed(false, now);
        assert_eq!(c.state_name(), "closed");
        c.failed(false, now);
        assert_eq!(c.state_name(), "open");
        assert_eq!(c.admit(now + Duration::from_secs(1)), Err(Duration::from_secs(4)));
    }

    #[test]
    fn an_open_circuit_lets_one_probe_through_and_closes_when_it_succeeds() {
        let mut c = Circuit::new(1, Duration::from_secs(5));
        let now = Instant::now();
        c.failed(false, now);
        let later = now + Duration::from_secs(6);
        assert_eq!(c.admit(later), Ok(true), "the first after the wait probes");
        assert!(c.admit(later).is_err(), "others wait for the probe");
        c.succeeded(true);
        assert_eq!(c.state_name(), "closed");
        assert_eq!(c.admit(later), Ok(false));
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_for_twice_as_long_up_to_a_minute() {
        let mut c = Circuit::new(1, Duration::from_secs(20));
        let mut now = Instant::now();
        c.failed(false, now);
        for expected in [40, 60, 60] {
            now += Duration::from_secs(61);
            assert_eq!(c.admit(now), Ok(true));
            c.failed(true, now);
            assert_eq!(c.admit(now), Err(Duration::from_secs(expected)));
        }
    }

    #[test]
    fn an_abandoned_probe_hands_probing_to_the_next_delivery() {
        let mut c = Circuit::new(1, Duration::from_millis(10));
        let now = Instant::now();
        c.failed(false, now);
        let later = now + Duration::from_secs(1);
        assert_eq!(c.admit(later), Ok(true));
        c.probe_abandoned();
        assert_eq!(c.admit(later), Ok(true));
    }
}
