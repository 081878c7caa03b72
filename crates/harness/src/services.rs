//! Breaking and restoring the shared RabbitMQ and PostgreSQL. Every breaking call returns a
//! guard that restores the service when dropped, so a failing scenario leaves them running.

use std::process::Command;
use std::time::Duration;

/// Runs a command to completion; true if it exited 0.
fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Runs a command off the async runtime and asserts it worked.
pub async fn must(program: &'static str, args: &[&str]) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let shown = format!("{program} {}", args.join(" "));
    let ok = tokio::task::spawn_blocking(move || {
        let out = Command::new(program).args(&args).output().expect("command runs");
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
        out.status.success()
    })
    .await
    .expect("blocking task");
    assert!(ok, "{shown} failed");
}

/// Makes sure RabbitMQ runs with its app started and its normal memory watermark.
pub struct BrokerGuard;

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        // The node first (it may have been killed), then its app (it may have been stopped),
        // then the watermark, which only a running app accepts.
        if !run("timeout", &["20", "rabbitmqctl", "-q", "ping"]) {
            let _ = run("rabbitmq-server", &["-detached"]);
            let start = std::time::Instant::now();
            while !run("timeout", &["20", "rabbitmqctl", "-q", "ping"]) && start.elapsed().as_secs() < 120 {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        let _ = run("timeout", &["60", "rabbitmqctl", "-q", "start_app"]);
        let _ = run("timeout", &["120", "rabbitmqctl", "-q", "await_startup"]);
        let _ = run("rabbitmqctl", &["-q", "set_vm_memory_high_watermark", "0.4"]);
    }
}

/// Kills the broker's Erlang VM without warning, then starts it again.
pub async fn kill_broker_hard() {
    // Whole-VM kill: no connection is closed cleanly, nothing unsynced survives.
    let killed = tokio::task::spawn_blocking(|| run("pkill", &["-9", "-u", "rabbitmq", "-f", "beam.smp"])).await;
    assert!(matches!(killed, Ok(true)), "the broker's Erlang VM was found and killed");
    wait_until(Duration::from_secs(30), || !run("pgrep", &["-u", "rabbitmq", "-f", "beam.smp"])).await;
    must("rabbitmq-server", &["-detached"]).await;
    // `-detached` returns before the node is up, and `await_startup` fails at once while the
    // node is not yet known to epmd: ask until it answers.
    wait_until(Duration::from_secs(180), || run("timeout", &["60", "rabbitmqctl", "-q", "await_startup"])).await;
}

/// Makes sure PostgreSQL runs.
pub struct PostgresGuard;

impl Drop for PostgresGuard {
    fn drop(&mut self) {
        if !run("pg_isready", &["-h", "127.0.0.1", "-q"]) {
            let _ = run("pg_ctlcluster", &["--skip-systemctl-redirect", &pg_version(), "main", "start"]);
        }
    }
}

/// The installed PostgreSQL major version (the one cluster of this machine).
fn pg_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| "15".into())
}

/// `pg_ctlcluster … restart -m fast`: every backend is cut off and the server comes back.
pub async fn restart_postgres() {
    let v = pg_version();
    must("pg_ctlcluster", &["--skip-systemctl-redirect", &v, "main", "restart", "-m", "fast"]).await;
    wait_until(Duration::from_secs(60), || run("pg_isready", &["-h", "127.0.0.1", "-q"])).await;
}

async fn wait_until(deadline: Duration, mut f: impl FnMut() -> bool + Send + 'static) {
    let start = std::time::Instant::now();
    loop {
        let (ok, back) = tokio::task::spawn_blocking(move || (f(), f)).await.expect("blocking task");
        if ok {
            return;
        }
        f = back;
        assert!(start.elapsed() < deadline, "service did not change state within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
