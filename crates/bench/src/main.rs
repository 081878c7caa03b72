//! `sluice-bench`: how fast a sluice binary is, as a ratio to what this machine's broker and
//! database can do with no HTTP and no business logic in between. It is a crate of its own so
//! the service carries none of the load generator's dependencies (hyper's client among them).

mod client;
mod components;
mod declared;
mod http;
mod jobs;
mod machine;
mod prefill;
mod raw;
mod stats;
mod summary;

use http::{Load, SluiceFigures};

use anyhow::Context;
use sluice::config::Settings;
use sqlx::{Connection, PgConnection};
use std::time::Duration;
use uuid::Uuid;

/// Options of `sluice-bench`. One invocation runs, each on a fresh database and broker
/// names: (a) the raw pipeline, (b) single-command POSTs, (c) batches, (d) single commands
/// paced at half of (b)'s ingest rate (latency at a sustainable load), and with `--prefill`,
/// (e) draining a pre-filled work queue.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    version,
    about = "Measure a sluice binary's throughput and latency against the raw broker + database pipeline"
)]
pub struct BenchArgs {
    /// The sluice binary to measure (`serve` is run on it): the shipped one or an
    /// application's. Default: `sluice` beside this binary (`cargo build --release -p sluice -p sluice-bench` builds both).
    #[arg(long, env = "SLUICE_BENCH_BINARY")]
    pub sluice: Option<std::path::PathBuf>,
    /// Commands to submit per run (and messages for the raw pipeline). Runs of a second or two
    /// are mostly start-up and host pauses: over three rounds the raw pipeline spread over
    /// 19.8k-26.1k msg/s at 20,000 and 21.9k-22.5k at 100,000.
    #[arg(long, default_value_t = 100_000)]
    pub commands: usize,
    /// Concurrent HTTP clients of the single-command runs: one run per value. Throughput is
    /// a saturation figure, and where a single-command load saturates depends on how many
    /// requests are in flight (each waits for a publisher confirm, i.e. a broker fsync, and
    /// the publishes that arrive meanwhile share the next burst), so the default tries three
    /// and the summary names the best; latency is measured by the paced run.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 128, 256])]
    pub concurrency: Vec<usize>,
    /// Command type to submit: event.record or ledger.transfer.
    #[arg(long, default_value = "event.record")]
    pub kind: String,
    /// Commands per POST /v1/batches in the batch run. `--batch 10000 --batch-concurrency 1`
    /// times the acceptance of 10,000-command batches.
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// Concurrent HTTP clients of the batch run.
    #[arg(long, default_value_t = 8)]
    pub batch_concurrency: usize,
    /// Batch run: one client, and each batch waits (up to a minute) until the previous one is
    /// committed, so a batch's acceptance is timed on a quiet system (its own commands still
    /// start being processed while it is published). The ingest rate then includes the waits.
    #[arg(long)]
    pub quiet_batches: bool,
    /// Rate of the paced run (commands/s); default half of the single-command ingest rate.
    #[arg(long)]
    pub paced_rate: Option<f64>,
    /// Also drain a work queue pre-filled with this many commands (e.g. 1000000).
    #[arg(long, default_value_t = 0)]
    pub prefill: usize,
    /// Skip the raw pipeline reference.
    #[arg(long)]
    pub skip_raw: bool,
    /// Publishes the raw pipeline sends before awaiting their confirms. 1,000 finds the broker's limit; 64
    /// matches 64 single-command clients, to see what the broker costs per message when each
    /// of its writes and confirms covers only that many.
    #[arg(long, default_value_t = 1000)]
    pub raw_window: usize,
    /// Rounds of (a) to (c): each round runs the raw pipeline, then every single-command and
    /// batch configuration, and rates each against its own round's raw run; the summary gives
    /// the median and the range of those ratios. On this shared machine one run can differ
    /// from the next by a quarter, for the raw pipeline and sluice alike.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Skip the single-command run (and the paced run, unless --paced-rate is given).
    #[arg(long)]
    pub skip_singles: bool,
    /// Skip the batch run.
    #[arg(long)]
    pub skip_batches: bool,
    /// Skip the paced run.
    #[arg(long)]
    pub skip_paced: bool,
    /// Skip every sluice run (raw reference only).
    #[arg(long)]
    pub skip_sluice: bool,
    /// Also run the declared types `bench.http` (an HTTP handler posting to a minimal endpoint
    /// in this process) and `bench.sql` (a one-insert SQL function), single commands at the
    /// first --concurrency, each rated against event.record at that concurrency in its round.
    #[arg(long)]
    pub declared: bool,
    /// Also measure job control: (f) high commands over this many queued low ones (e.g.
    /// 100000), and (g) scheduled commands beside a steady immediate load.
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Also run the fastest single-command load and the batch load against a RabbitMQ cluster
    /// (comma-separated AMQP URLs, e.g. `$(scripts/rabbit-cluster urls)`), each rated against
    /// the same load on the single node in this invocation: the cost of replication.
    #[arg(long, env = "SLUICE_BENCH_CLUSTER_URLS", value_delimiter = ',')]
    pub cluster_urls: Vec<String>,
    /// Also run the fastest single-command load and the batch load with this many `sluice api`
    /// and `sluice worker` processes instead of one `sluice serve` (e.g. `2x3`), on the cluster
    /// when --cluster-urls is given, each rated against one `serve` on the same broker.
    #[arg(long, value_parser = parse_processes)]
    pub processes: Option<(usize, usize)>,
    /// Postgres server URL without database; bench databases are created and dropped on it.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pub pg: String,
}

/// `AxW`: A API processes and W worker processes, each at least one.
fn parse_processes(s: &str) -> Result<(usize, usize), String> {
    let (a, w) = s.split_once('x').ok_or_else(|| format!("expected APIxWORKERS such as 2x3, got {s:?}"))?;
    let count = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0);
    match (count(a), count(w)) {
        (Some(a), Some(w)) => Ok((a, w)),
        _ => Err(format!("expected APIxWORKERS with both at least 1, such as 2x3, got {s:?}")),
    }
}

/// A bench database on the server of `args.pg`, dropped by [`drop_database`].
async fn create_database(args: &BenchArgs, name: &str) -> anyhow::Result<String> {
    let mut admin = PgConnection::connect(&format!("{}/postgres", args.pg)).await.context("connecting to Postgres")?;
    // Identifiers cannot be parameters; `name` is generated here, never user input.
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await?;
    Ok(format!("{}/{name}", args.pg))
}

async fn drop_database(args: &BenchArgs, name: &str) {
    if let Ok(mut admin) = PgConnection::connect(&format!("{}/postgres", args.pg)).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut admin).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = <BenchArgs as clap::Parser>::parse();
    // The broker and the retry tiers come from the same settings a sluice process reads.
    let settings = Settings::load().context("loading configuration")?;
    sluice::telemetry::init_tracing(&settings.log);
    let beside = std::env::current_exe().context("finding this binary")?.with_file_name("sluice");
    let binary = args.sluice.take().unwrap_or(beside);
    anyhow::ensure!(
        binary.is_file(),
        "no sluice binary at {}: build it first (cargo build --release -p sluice) or pass --sluice",
        binary.display()
    );
    args.sluice = Some(binary);
    run(settings, args).await
}

/// Runs the benchmark and prints its figures.
async fn run(settings: Settings, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.commands > 0 && !args.concurrency.is_empty() && args.concurrency.iter().all(|&c| c > 0),
        "--commands and every --concurrency must be > 0"
    );
    anyhow::ensure!(args.batch > 0 && args.batch_concurrency > 0, "--batch and --batch-concurrency must be > 0");
    // Pre-filled transfers would name accounts not yet opened and all be rejected.
    anyhow::ensure!(args.prefill == 0 || args.kind == "event.record", "--prefill works with --kind event.record");
    anyhow::ensure!(
        matches!(args.kind.as_str(), "event.record" | "ledger.transfer"),
        "--kind must be event.record or ledger.transfer"
    );
    anyhow::ensure!(!args.declared || args.kind == "event.record", "--declared is rated against --kind event.record");
    let id = Uuid::new_v4().simple().to_string()[..10].to_owned();
    println!(
        "sluice bench: {} commands per run, type {}, {} cores",
        args.commands,
        args.kind,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rounds = Vec::with_capacity(args.rounds.max(1));
    for round in 0..args.rounds.max(1) {
        if args.rounds > 1 {
            println!("\nround {} of {}", round + 1, args.rounds);
        }
        let raw = if args.skip_raw {
            None
        } else {
            let db = format!("sluice_bench_raw{round}_{id}");
            let url = create_database(&args, &db).await?;
            let r = raw::run(
                settings.broker.first_url(),
                &url,
                &format!("bench-{id}-{round}"),
                args.commands,
                args.raw_window,
            )
            .await;
            drop_database(&args, &db).await;
            let r = r?;
            r.print();
            Some(r)
        };
        let mut runs: Vec<(&str, SluiceFigures)> = Vec::new();
        if !args.skip_sluice && !args.skip_singles {
            for &c in &args.concurrency {
                let load = Load::singles(&args, c);
                let label = format!("singles{c}r{round}");
                runs.push(("(b)", one_run(&settings, &args, &id, &label, load, raw.as_ref()).await?));
            }
        }
        if !args.skip_sluice && args.declared {
            let declared = declared::prepare().await?;
            let c = args.concurrency[0];
            let builtin =
                runs.iter().find(|(tag, r)| *tag == "(b)" && r.load.concurrency == c).map(|(_, r)| r.e2e_rate);
            for kind in ["bench.http", "bench.sql"] {
                let load =
                    Load { kind: kind.into(), commands_dir: Some(declared.dir.clone()), ..Load::singles(&args, c) };
                let label = format!("{}r{round}", kind.replace('.', "_"));
                let r = one_run(&settings, &args, &id, &label, load, raw.as_ref()).await?;
                if let Some(base) = builtin {
                    println!("  {kind}: end to end {:.0}% of event.record's in this round", 100.0 * r.e2e_rate / base);
                }
            }
        }
        if !args.skip_sluice && !args.skip_batches {
            let concurrency = if args.quiet_batches { 1 } else { args.batch_concurrency };
            let load = Load::singles(&args, concurrency);
            let batches = Load { per_request: args.batch, quiet: args.quiet_batches, ..load };
            let label = format!("batches{round}");
            runs.push(("(c)", one_run(&settings, &args, &id, &label, batches, raw.as_ref()).await?));
        }
        rounds.push(summary::Round { raw, runs });
    }
    // (d) and (e) run once, rated against the median raw run.
    let raw = summary::median_raw(&rounds);
    let mut once: Vec<(&str, SluiceFigures)> = Vec::new();
    if !args.skip_sluice {
        // Paced at half the best single-command ingest rate, with that run's clients: fewer
        // clients would be near their own limit at that rate, which is not a sustainable load.
        let fastest = rounds
            .iter()
            .flat_map(|r| &r.runs)
            .filter(|(tag, _)| *tag == "(b)")
            .map(|(_, r)| r)
            .max_by(|a, b| a.ingest_rate.total_cmp(&b.ingest_rate));
        let singles = Load::singles(&args, fastest.map_or(args.concurrency[0], |r| r.load.concurrency));
        if let (false, Some(rate)) = (args.skip_paced, args.paced_rate.or(fastest.map(|r| r.ingest_rate / 2.0))) {
            let paced = Load { rate: Some(rate), ..singles.clone() };
            once.push(("(d)", one_run(&settings, &args, &id, "paced", paced, raw.as_ref()).await?));
        }
        if args.prefill > 0 {
            let prefill = Load { prefill: args.prefill, ..singles };
            once.push(("(e)", one_run(&settings, &args, &id, "prefill", prefill, raw.as_ref()).await?));
        }
    }
    summary::print(&rounds, raw.as_ref(), &once);
    let mut on_the_cluster = Vec::new();
    if !args.cluster_urls.is_empty() && !args.skip_sluice {
        on_the_cluster = on_cluster(&settings, &args, &id, &rounds, raw.as_ref()).await?;
    }
    if let (Some(processes), false) = (args.processes, args.skip_sluice) {
        in_processes(&settings, &args, &id, processes, &rounds, &on_the_cluster, raw.as_ref()).await?;
    }
    if args.jobs > 0 && !args.skip_sluice {
        run_jobs(&settings, &args, &id).await?;
    }
    Ok(())
}

/// The median over rounds of the single-node runs of `tag`, at the concurrency of its fastest
/// run (the saturation point).
fn median_of<'a>(rounds: &'a [summary::Round<'_>], tag: &str) -> Option<&'a SluiceFigures> {
    let all: Vec<&SluiceFigures> =
        rounds.iter().flat_map(|r| &r.runs).filter(|(t, _)| *t == tag).map(|(_, r)| r).collect();
    let best = all.iter().max_by(|a, b| a.e2e_rate.total_cmp(&b.e2e_rate))?.load.concurrency;
    let mut runs: Vec<&SluiceFigures> = all.into_iter().filter(|r| r.load.concurrency == best).collect();
    runs.sort_by(|a, b| a.e2e_rate.total_cmp(&b.e2e_rate));
    runs.get(runs.len() / 2).copied()
}

/// The singles and batch loads (i) and (j) repeat.
const REPEATED: [(&str, &str); 2] = [("(b)", "singles"), ("(c)", "batches")];

/// Settings whose broker is the cluster of `--cluster-urls`.
fn cluster_settings(settings: &Settings, args: &BenchArgs) -> Settings {
    let mut cluster = settings.clone();
    cluster.broker.urls = args.cluster_urls.iter().map(|u| sluice::config::Secret::new(u.trim())).collect();
    cluster
}

/// (i): the fastest singles load and the batch load on the RabbitMQ cluster, each rated
/// against its single-node run of the median round; returns the cluster's runs.
async fn on_cluster(
    settings: &Settings,
    args: &BenchArgs,
    id: &str,
    rounds: &[summary::Round<'_>],
    raw: Option<&raw::RawFigures>,
) -> anyhow::Result<Vec<(&'static str, SluiceFigures)>> {
    let cluster = cluster_settings(settings, args);
    println!("\n(i) on the {}-node RabbitMQ cluster", args.cluster_urls.len());
    let mut runs = Vec::new();
    for (tag, label) in REPEATED {
        let Some(single) = median_of(rounds, tag) else { continue };
        let load = http::Load { broker: components::Broker::Cluster, ..single.load.clone() };
        let r = one_run(&cluster, args, id, &format!("cluster_{label}"), load, raw).await?;
        compare(&format!("{label}: replicated on the cluster"), &r, single, "the single node's");
        runs.push((tag, r));
    }
    Ok(runs)
}

/// Prints `run`'s rates as shares of `base`'s, which `whose` names.
fn compare(what: &str, run: &SluiceFigures, base: &SluiceFigures, whose: &str) {
    println!(
        "  {what}, ingest {:.0}% and end to end {:.0}% of {whose} ({:.0} → {:.0} cmd/s)",
        100.0 * run.ingest_rate / base.ingest_rate,
        100.0 * run.e2e_rate / base.e2e_rate,
        base.e2e_rate,
        run.e2e_rate
    );
}

/// (j): the loads of (i) with `apis` API and `workers` worker processes, on the cluster when
/// there is one, each rated against one `serve` on the same broker.
async fn in_processes(
    settings: &Settings,
    args: &BenchArgs,
    id: &str,
    (apis, workers): (usize, usize),
    rounds: &[summary::Round<'_>],
    on_the_cluster: &[(&str, SluiceFigures)],
    raw: Option<&raw::RawFigures>,
) -> anyhow::Result<()> {
    let clustered = !args.cluster_urls.is_empty();
    let (settings, broker, on) = if clustered {
        (cluster_settings(settings, args), components::Broker::Cluster, "the RabbitMQ cluster")
    } else {
        (settings.clone(), components::Broker::Local, "the single node")
    };
    println!("\n(j) {apis} sluice api + {workers} sluice worker processes on {on}");
    for (tag, label) in REPEATED {
        let Some(single) = median_of(rounds, tag) else { continue };
        // One `serve` on the same broker: the cluster's run of (i), or the single node's median.
        let one = if clustered { on_the_cluster.iter().find(|(t, _)| *t == tag).map(|(_, r)| r) } else { Some(single) };
        let load = http::Load { broker, processes: Some((apis, workers)), ..single.load.clone() };
        let r = one_run(&settings, args, id, &format!("processes_{label}"), load, raw).await?;
        if let Some(one) = one {
            compare(&format!("{label}: {apis} + {workers} processes"), &r, one, "one serve's");
        }
    }
    Ok(())
}

/// (f) and (g), each on a sluice of its own.
async fn run_jobs(settings: &Settings, args: &BenchArgs, id: &str) -> anyhow::Result<()> {
    let binary = args.sluice.as_deref().context("no sluice binary to run")?;
    for (label, low) in [("priorities", args.jobs), ("scheduled", 0), ("ordered", 0)] {
        let db = format!("sluice_bench_{label}_{id}");
        let url = create_database(args, &db).await?;
        let prefix = format!("bench-{label}-{id}");
        let load = jobs::load(args, low);
        let started = http::start(binary, settings, &load, &url, &prefix).await?;
        let running =
            jobs::Running { base: &started.base, key: &started.key, pool: &started.pool, http: &started.http };
        let result = match label {
            "priorities" => jobs::priorities(running, low).await,
            "scheduled" => jobs::scheduled(running, 2000, 1000.0).await,
            _ => jobs::ordered(running, args.commands, 1000, args.concurrency[0]).await,
        };
        started.stop(result.is_err()).await;
        drop_database(args, &db).await;
        drop_topology(settings, &prefix).await;
        result?;
    }
    Ok(())
}

/// One sluice run on its own database and broker names, printed as it ends.
async fn one_run(
    settings: &Settings,
    args: &BenchArgs,
    id: &str,
    label: &str,
    load: Load,
    raw: Option<&raw::RawFigures>,
) -> anyhow::Result<SluiceFigures> {
    let db = format!("sluice_bench_{label}_{id}");
    let url = create_database(args, &db).await?;
    // Both declared types are in one commands.dir, and sluice refuses to start while a declared
    // function is missing: every run with it gets the function.
    if load.commands_dir.is_some() {
        let mut conn = PgConnection::connect(&url).await?;
        sqlx::raw_sql(declared::SQL_FUNCTION).execute(&mut conn).await.context("creating bench_apply")?;
    }
    let prefix = format!("bench-{label}-{id}");
    let binary = args.sluice.as_deref().context("no sluice binary to run")?;
    let r = http::run(binary, settings, &load, &url, &prefix).await;
    drop_database(args, &db).await;
    drop_topology(settings, &prefix).await;
    let r = r?;
    r.print(raw);
    Ok(r)
}

/// Deletes the queues and exchanges the sluice under test declared.
async fn drop_topology(settings: &Settings, prefix: &str) {
    let w = &settings.worker;
    let topology = sluice::broker::Topology::new(prefix, &w.retry_tiers_ms, settings.broker.delivery_limit)
        .with_partitions(settings.ordering.partitions);
    let props = lapin::ConnectionProperties::default();
    if let Ok(conn) = lapin::Connection::connect(settings.broker.first_url(), props).await {
        if let Ok(ch) = conn.create_channel().await {
            topology.delete(&ch).await;
            let _ = ch.close(200, "bench done".into()).await;
        }
        let _ = conn.close(200, "bench done".into()).await;
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::parse_processes;

    #[test]
    fn processes_are_read_as_apis_by_workers_and_zero_or_garbage_is_refused() {
        assert_eq!(parse_processes("2x3"), Ok((2, 3)));
        for bad in ["0x3", "2x0", "2", "x3", "twoxthree", "2x3x4"] {
            assert!(parse_processes(bad).is_err(), "{bad} was accepted");
        }
    }
}
