//! How busy the whole machine was during a run, and how much of the run's wall time the
//! machine itself did not get. This VM's hypervisor sometimes stops scheduling it without
//! reporting steal time: the kernel's CPU accounting then covers less than wall time × cores.
//! A pause stretches the latency of whatever was in flight and lowers the rate of the run, for
//! the raw pipeline and sluice alike, so the bench says so beside their figures.

use std::time::Instant;

/// /proc/stat counts in USER_HZ, which Linux fixes at 100 for user space on every architecture
/// it ships.
const USER_HZ: f64 = 100.0;

/// A reading of the kernel's CPU time counters (Linux; elsewhere nothing).
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    at: Instant,
    counters: Option<Counters>,
}

#[derive(Debug, Clone, Copy)]
struct Counters {
    /// Seconds of CPU time accounted to any state, all cores.
    total: f64,
    /// Of which idle or waiting for I/O.
    idle: f64,
    /// The cores that the counters cover (all the kernel's, whatever this process may use).
    cores: f64,
}

/// The machine over a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineUsage {
    /// Busy share of all cores' accounted time.
    pub busy: f64,
    /// Share of wall time × cores that the kernel did not account at all (the VM was paused).
    pub lost: f64,
}

impl CpuClock {
    /// Reads the counters now.
    pub fn now() -> Self {
        Self { at: Instant::now(), counters: read() }
    }

    /// Usage between this reading and now; None where /proc/stat is not readable.
    pub fn usage(&self) -> Option<MachineUsage> {
        let (before, after) = (self.counters?, read()?);
        let wall = self.at.elapsed().as_secs_f64() * after.cores;
        let (total, idle) = (after.total - before.total, after.idle - before.idle);
        (total > 0.0 && wall > 0.0)
            .then(|| MachineUsage { busy: (total - idle) / total, lost: ((wall - total) / wall).max(0.0) })
    }
}

impl MachineUsage {
    /// Whether the run lost enough of its time that its figures say more about the host.
    pub fn disturbed(&self) -> bool {
        self.lost > 0.03
    }

    /// The run's `machine` line.
    pub fn line(&self) -> String {
        let note = if self.disturbed() { "  (the host paused this VM: read with care)" } else { "" };
        format!(
            "  machine                      {:>8.0}% busy, {:.1}% of wall time not given to this VM{note}",
            100.0 * self.busy,
            100.0 * self.lost
        )
    }
}

fn read() -> Option<Counters> {
    parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The aggregate `cpu` line (user nice system idle iowait irq softirq steal guest guest_nice),
/// with the cores counted from the per-core `cpuN` lines that it sums. Guest time is already
/// counted in user time, so only the first eight fields add up.
fn parse(stat: &str) -> Option<Counters> {
    let mut fields = stat.lines().next()?.split_whitespace();
    (fields.next()? == "cpu").then_some(())?;
    let ticks: Vec<f64> = fields.take(8).map(|f| f.parse::<f64>().ok()).collect::<Option<_>>()?;
    (ticks.len() >= 5).then_some(())?;
    let cores = stat
        .lines()
        .filter(|l| l.strip_prefix("cpu").is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit())))
        .count();
    (cores > 0).then_some(())?;
    Some(Counters {
        total: ticks.iter().sum::<f64>() / USER_HZ,
        idle: (ticks[3] + ticks[4]) / USER_HZ,
        cores: cores as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_adds_up_without_guest_time_over_the_cores_it_sums() {
        let stat =
            "cpu  100 0 50 800 50 0 0 0 30 0\ncpu0 50 0 25 400 25 0 0 0 15 0\ncpu1 50 0 25 400 25 0 0 0 15 0\nintr 1";
        let c = parse(stat).expect("parses");
        assert_eq!((c.total, c.idle, c.cores), (10.0, 8.5, 2.0));
    }

    #[test]
    fn a_per_core_line_is_not_the_total() {
        assert!(parse("cpu0 100 0 50 800 50 0 0 0 0 0").is_none());
    }
}
