//! The three-node RabbitMQ cluster of `scripts/rabbit-cluster`, driven from a scenario: nodes
//! killed, stopped and started, and which node leads a queue.

use std::path::PathBuf;
use std::time::Duration;
use tokio::process::Command;

/// How many nodes the script starts.
pub const NODES: usize = 3;

/// The cluster; dropping it starts again every node a scenario left down, so the next one
/// finds all three.
pub struct RabbitCluster {
    script: PathBuf,
}

fn script() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/rabbit-cluster"))
}

/// Runs the script with `args`; its stdout if it exited 0 (else its stderr is printed).
async fn run(args: &[&str]) -> Option<String> {
    let out = quiet(args).await;
    if out.is_none() {
        eprintln!("rabbit-cluster {} failed", args.join(" "));
    }
    out
}

/// Runs the script with `args`; its stdout if it exited 0.
async fn quiet(args: &[&str]) -> Option<String> {
    let out = Command::new(script()).args(args).output().await.ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl RabbitCluster {
    /// Starts the cluster, or finds it running and joined.
    pub async fn up() -> Self {
        assert!(run(&["up"]).await.is_some(), "scripts/rabbit-cluster up failed; see target/rabbit-cluster/n*/log");
        Self { script: script() }
    }

    /// The AMQP URL of node `n` (1-based) with the given heartbeat.
    pub fn url(n: usize, heartbeat_secs: u64) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat={heartbeat_secs}", Self::port(n))
    }

    /// Node `n`'s AMQP port.
    pub fn port(n: usize) -> u16 {
        let base: u16 = std::env::var("SLUICE_RABBIT_CLUSTER_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(5690);
        base + n as u16
    }

    /// The Erlang node name of node `n`.
    pub fn node_name(n: usize) -> String {
        format!("sluice-c{n}@localhost")
    }

    /// SIGKILLs node `n`'s Erlang VM: its sockets close, nothing is flushed.
    pub async fn kill(&self, n: usize) {
        assert!(run(&["kill", &n.to_string()]).await.is_some(), "kill node {n}");
    }

    /// Stops node `n` gracefully (as a rolling restart does).
    pub async fn stop(&self, n: usize) {
        assert!(run(&["stop", &n.to_string()]).await.is_some(), "stop node {n}");
    }

    /// Starts node `n` again and waits until it has rejoined and every node is online.
    pub async fn start(&self, n: usize) {
        assert!(run(&["start", &n.to_string()]).await.is_some(), "start node {n}");
        assert!(self.ctl(&["-q", "await_online_nodes", &NODES.to_string()]).await.is_some(), "all nodes online");
    }

    /// `rabbitmqctl` against the first node that answers.
    pub async fn ctl(&self, args: &[&str]) -> Option<String> {
        Self::ctl_any(args).await
    }

    /// `rabbitmqctl` against the first node of the cluster that answers.
    pub async fn ctl_any(args: &[&str]) -> Option<String> {
        for n in 1..=NODES {
            let n = n.to_string();
            let mut full = vec!["ctl", n.as_str()];
            full.extend_from_slice(args);
            // A node that is down fails at once; the next one is asked.
            if let Some(out) = quiet(&full).await {
                return Some(out);
            }
        }
        None
    }

    /// The node (1-based) that leads `queue`, and how many members it has.
    pub async fn leader_of(&self, queue: &str) -> Option<(usize, usize)> {
        let out = self.ctl(&["-q", "list_queues", "--no-table-headers", "name", "leader", "members"]).await?;
        let line = out.lines().find(|l| l.split_whitespace().next() == Some(queue))?;
        let leader = line.split_whitespace().nth(1)?;
        let members = line.matches("sluice-c").count().saturating_sub(1);
        let n = (1..=NODES).find(|n| Self::node_name(*n) == leader)?;
        Some((n, members))
    }

    /// Waits until every quorum queue of `prefix` has a leader on a running node and all of
    /// its members back (after a node restarted, its replicas catch up).
    pub async fn settled(&self, prefix: &str) {
        crate::cluster::until(Duration::from_secs(120), "every queue has its three members online", || async {
            let Some(out) = self.ctl(&["-q", "list_queues", "--no-table-headers", "name", "online"]).await else {
                return false;
            };
            out.lines().filter(|l| l.starts_with(&format!("{prefix}."))).all(|l| l.matches("sluice-c").count() == NODES)
        })
        .await;
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        for n in 1..=NODES {
            let _ = std::process::Command::new(&self.script).args(["start", &n.to_string()]).status();
        }
    }
}
