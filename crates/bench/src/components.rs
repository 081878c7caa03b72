//! CPU time per component over a run, from `/proc`: the sluice process, the RabbitMQ node(s),
//! PostgreSQL and this load generator, so the figures say how many cores of each a rate needs.
//!
//! Postgres forks a backend per connection: a backend that exits during the run is counted
//! through its parent's `cutime`/`cstime` once reaped, so the sum over every `postgres`
//! process plus the postmaster's children time is the server's whole CPU time.

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on every Linux architecture).
const TICKS: f64 = 100.0;

/// Which RabbitMQ Erlang VMs a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broker {
    /// The machine's own node, run by the `rabbitmq` user.
    Local,
    /// `scripts/rabbit-cluster`'s nodes, run by root.
    Cluster,
}

/// CPU seconds used so far, per component.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub sluice: f64,
    pub broker: f64,
    pub postgres: f64,
    pub client: f64,
}

impl Cpu {
    /// Reads the counters now; `sluice` are the processes under test (none for the raw pipeline).
    pub fn now(sluice: &[u32], broker: Broker) -> Self {
        let mut cpu = Self {
            client: own(),
            sluice: sluice.iter().filter_map(|&p| stat(p).map(|s| s.own)).sum(),
            ..Self::default()
        };
        let rabbitmq_uid = uid_of_user("rabbitmq");
        for pid in pids() {
            let Some(s) = stat(pid) else { continue };
            match s.comm.as_str() {
                "beam.smp" => {
                    let uid = uid(pid);
                    let ours = match broker {
                        Broker::Local => uid.is_some() && uid == rabbitmq_uid,
                        Broker::Cluster => uid == Some(0),
                    };
                    if ours {
                        cpu.broker += s.own;
                    }
                }
                "postgres" => {
                    cpu.postgres += s.own;
                    // The postmaster: its reaped backends' time is its children's.
                    if stat(s.ppid).is_none_or(|p| p.comm != "postgres") {
                        cpu.postgres += s.children;
                    }
                }
                _ => {}
            }
        }
        cpu
    }

    /// Microseconds of CPU per command of each component between `self` and `later`.
    pub fn per_command(&self, later: &Cpu, commands: usize) -> PerCommand {
        let us = |a: f64, b: f64| (b - a).max(0.0) * 1e6 / commands.max(1) as f64;
        PerCommand {
            sluice: us(self.sluice, later.sluice),
            broker: us(self.broker, later.broker),
            postgres: us(self.postgres, later.postgres),
            client: us(self.client, later.client),
        }
    }
}

/// Microseconds of CPU per command, per component.
#[derive(Clone, Copy, Debug, Default)]
pub struct PerCommand {
    pub sluice: f64,
    pub broker: f64,
    pub postgres: f64,
    pub client: f64,
}

impl PerCommand {
    /// The run's `CPU per command` line.
    pub fn line(&self, with_sluice: bool) -> String {
        let sluice = if with_sluice { format!("sluice {:.0} µs, ", self.sluice) } else { String::new() };
        format!(
            "  CPU per command              {sluice}RabbitMQ {:.0} µs, Postgres {:.0} µs, load generator {:.0} µs",
            self.broker, self.postgres, self.client
        )
    }
}

struct Stat {
    comm: String,
    ppid: u32,
    /// utime + stime, seconds.
    own: f64,
    /// cutime + cstime (reaped children), seconds.
    children: f64,
}

fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `/proc/<pid>/stat`: the command name is in parentheses and may hold spaces, so the fields
/// are counted from its closing one.
fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let field = |i: usize| rest.get(i).and_then(|v| v.parse::<f64>().ok());
    Some(Stat {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        own: (field(11)? + field(12)?) / TICKS,
        children: (field(13)? + field(14)?) / TICKS,
    })
}

fn own() -> f64 {
    stat(std::process::id()).map_or(0.0, |s| s.own)
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

fn uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

fn uid_of_user(name: &str) -> Option<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_from_after_the_name_even_when_the_name_has_spaces() {
        let line = "42 (beam (x) smp) S 7 42 42 0 -1 4194560 1 0 0 0 250 50 30 20 20 0 1 0 1 1 1";
        let s = parse_stat(line).expect("parses");
        assert_eq!((s.comm.as_str(), s.ppid), ("beam (x) smp", 7));
        assert!((s.own - 3.0).abs() < 1e-9 && (s.children - 0.5).abs() < 1e-9);
    }
}
