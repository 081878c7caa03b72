//! sluice as separate OS processes (one API, several workers) of the fault node binary, so a
//! scenario can SIGKILL a worker the way an orchestrator or the OOM killer would.

use sluice::config::Settings;
use sluice::testkit::{eventually, isolated_settings, remove_resources};
use sqlx::PgPool;
use std::collections::HashMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Makes the extra variables of each worker process started.
pub type WorkerEnv = Box<dyn Fn() -> Vec<(&'static str, String)> + Send + Sync>;

/// How to start a cluster.
pub struct Options {
    /// API processes; requests are spread over them (see [`Cluster::base_for`]).
    pub apis: usize,
    pub workers: usize,
    /// Broker port the processes connect to (a proxy's, to cut them off).
    pub broker_port: u16,
    /// AMQP heartbeat in seconds.
    pub heartbeat_secs: u64,
    /// Extra `SLUICE__…` settings for every process.
    pub env: Vec<(&'static str, String)>,
    /// Extra variables for worker processes only, made per start (e.g. a fresh crash point).
    pub worker_env: Option<WorkerEnv>,
    /// Scrape every process's metrics in the background (a scrape also empties the metrics
    /// library's sample buckets, which could hide memory growth from a memory check).
    pub scrape: bool,
    /// Run on the nodes of `scripts/rabbit-cluster` instead of the shared broker.
    pub on_cluster: Option<Layout>,
    /// A Postgres server (`postgres://user@host:port`) to create the database on instead of the
    /// shared one, e.g. a proxy in front of `scripts/pg-failover`'s primary.
    pub database_server: Option<String>,
}

/// Where the processes of a cluster run connect, on the three-node RabbitMQ cluster.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The port each process dials for node 1, 2, 3 (the nodes' own, or proxies in front).
    pub ports: Vec<u16>,
    /// The node (1-based) listed first to the API process.
    pub api_node: usize,
    /// The node (1-based) the topology is declared through before any process starts, so
    /// RabbitMQ places every queue's leader there.
    pub leaders_on: usize,
}

impl Layout {
    /// Straight to the nodes, the API on node 1 and the leaders on node `leaders_on`.
    pub fn direct(leaders_on: usize) -> Self {
        Self {
            ports: (1..=crate::rabbit::NODES).map(crate::rabbit::RabbitCluster::port).collect(),
            api_node: 1,
            leaders_on,
        }
    }

    /// The node list of a process, starting with node `first` (1-based), as URLs.
    fn urls(&self, first: usize, heartbeat_secs: u64) -> String {
        let n = self.ports.len();
        (0..n)
            .map(|k| {
                let port = self.ports[(first - 1 + k) % n];
                format!("amqp://guest:guest@127.0.0.1:{port}/%2f?heartbeat={heartbeat_secs}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            apis: 1,
            workers: 2,
            broker_port: 5672,
            heartbeat_secs: 5,
            env: Vec::new(),
            worker_env: None,
            scrape: true,
            on_cluster: None,
            database_server: None,
        }
    }
}

struct Proc {
    name: String,
    port: u16,
    child: Child,
}

/// A running sluice cluster with its own database and broker names, removed on drop.
pub struct Cluster {
    pub name: String,
    /// The sluice binary every process runs.
    binary: PathBuf,
    pub base: String,
    pub key: String,
    pub tenant: String,
    pub pool: PgPool,
    pub settings: Settings,
    pub http: reqwest::Client,
    env: Vec<(String, String)>,
    worker_env: Option<WorkerEnv>,
    /// Where `fault.apply` is declared.
    commands_dir: PathBuf,
    layout: Option<Layout>,
    heartbeat_secs: u64,
    apis: Vec<Proc>,
    /// Every API's base URL, in start order (`base` is the first).
    pub bases: Vec<String>,
    workers: Mutex<Vec<Option<Proc>>>,
    starts: AtomicUsize,
    /// The last metrics text scraped from every process ever started, by process name: a killed
    /// worker's counters up to its last scrape still count.
    scraped: Arc<Mutex<HashMap<String, String>>>,
    scraper: tokio::task::JoinHandle<()>,
    targets: Arc<Mutex<Vec<(String, u16)>>>,
}

impl Cluster {
    /// Creates the database with `fault.apply`'s function, starts the API of `binary` (a
    /// sluice binary with [`crate::hooks`]; it migrates the database), waits until it is
    /// ready, then starts the workers.
    pub async fn start(binary: &Path, name: &str, opts: Options) -> Self {
        let mut settings = isolated_settings();
        if let Some(server) = &opts.database_server {
            let name = settings.database.url.expose().rsplit('/').next().unwrap_or_default().to_owned();
            settings.database.url = sluice::config::Secret::new(format!("{server}/{name}"));
        }
        if let Some(layout) = &opts.on_cluster {
            // The test's own connections (queue clean-up) go straight to the nodes.
            settings.broker.urls = (1..=crate::rabbit::NODES)
                .map(|n| sluice::config::Secret::new(crate::rabbit::RabbitCluster::url(n, opts.heartbeat_secs)))
                .collect();
            declare_topology(&settings, layout.leaders_on).await;
        }
        let b = &settings.broker;
        crate::declared::prepare_database(settings.database.url.expose()).await;
        let commands_dir = crate::declared::commands_dir(&b.prefix);
        let env: Vec<(String, String)> = [
            ("SLUICE_ENV", "test".to_owned()),
            ("SLUICE_CONFIG_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/../../config").to_owned()),
            ("SLUICE__DATABASE__URL", settings.database.url.expose().to_owned()),
            ("SLUICE__DATABASE__MAX_CONNECTIONS", "10".to_owned()),
            (
                "SLUICE__BROKER__URL",
                format!("amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat={}", opts.broker_port, opts.heartbeat_secs),
            ),
            ("SLUICE__BROKER__PREFIX", b.prefix.clone()),
            ("SLUICE__BROKER__RECONNECT_MAX_MS", "500".to_owned()),
            ("SLUICE__BROKER__PUBLISH_TIMEOUT_MS", "3000".to_owned()),
            ("SLUICE_BOOTSTRAP_KEY", settings.auth.bootstrap_key.expose().to_owned()),
            ("SLUICE__AUTH__BOOTSTRAP_TENANT", settings.auth.bootstrap_tenant.clone()),
            // The load is the test's to choose; the rate limiter is tested elsewhere.
            ("SLUICE__LIMITS__RATE_PER_SECOND", "1000000".to_owned()),
            ("SLUICE__LIMITS__BURST", "1000000".to_owned()),
            ("SLUICE__WORKER__DRAIN_TIMEOUT_MS", "5000".to_owned()),
            ("SLUICE_FAULT_COMMITS_LOG", commits_log(&b.prefix).display().to_string()),
            ("SLUICE__COMMANDS__DIR", commands_dir.display().to_string()),
        ]
        .into_iter()
        .chain(opts.env)
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let scraped = Arc::new(Mutex::new(HashMap::new()));
        let targets = Arc::new(Mutex::new(Vec::new()));
        // Longer than any bound a scenario asserts, so a hang shows as a slow answer.
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
        let scraper = if opts.scrape {
            tokio::spawn(scrape_forever(http.clone(), targets.clone(), scraped.clone()))
        } else {
            tokio::spawn(async {})
        };
        // Lazy: the API process migrates the database.
        let pool = PgPool::connect_lazy(settings.database.url.expose()).expect("test pool");
        let mut cluster = Self {
            name: name.to_owned(),
            binary: binary.to_owned(),
            base: String::new(),
            key: settings.auth.bootstrap_key.expose().to_owned(),
            tenant: settings.auth.bootstrap_tenant.clone(),
            pool,
            http,
            env,
            worker_env: opts.worker_env,
            commands_dir,
            layout: opts.on_cluster,
            heartbeat_secs: opts.heartbeat_secs,
            apis: Vec::new(),
            bases: Vec::new(),
            workers: Mutex::new(Vec::new()),
            starts: AtomicUsize::new(0),
            scraped,
            scraper,
            targets,
            settings,
        };
        // The first API migrates the database alone; the others start once it is ready.
        for k in 0..opts.apis.max(1) {
            let api_urls = cluster.node_list_from("api", k);
            let api = cluster.launch("api", "api", api_urls);
            cluster.wait_ready(api.port).await;
            cluster.bases.push(format!("http://127.0.0.1:{}", api.port));
            cluster.apis.push(api);
        }
        cluster.base = cluster.bases[0].clone();
        let workers: Vec<Proc> = (0..opts.workers).map(|_| cluster.launch_worker()).collect();
        for port in workers.iter().map(|w| w.port) {
            cluster.wait_ready(port).await;
        }
        *cluster.workers.lock().unwrap() = workers.into_iter().map(Some).collect();
        cluster
    }

    fn launch_worker(&self) -> Proc {
        let mut extra = self.worker_env.as_ref().map(|f| f()).unwrap_or_default();
        extra.extend(self.node_list("worker"));
        self.launch("worker", "worker", extra)
    }

    /// `SLUICE__BROKER__URLS` for the next process on the RabbitMQ cluster: the API's list
    /// starts with its layout's node, each worker's with the next node in turn, so workers
    /// spread over all of them.
    fn node_list(&self, role: &str) -> Vec<(&'static str, String)> {
        self.node_list_from(role, 0)
    }

    /// [`Self::node_list`] for the `k`-th API (0-based): each further API starts one node on.
    fn node_list_from(&self, role: &str, k: usize) -> Vec<(&'static str, String)> {
        let Some(layout) = &self.layout else { return Vec::new() };
        let n = layout.ports.len();
        let first =
            if role == "api" { (layout.api_node - 1 + k) % n + 1 } else { self.starts.load(Ordering::SeqCst) % n + 1 };
        vec![("SLUICE__BROKER__URLS", layout.urls(first, self.heartbeat_secs))]
    }

    /// The API that request `seq` goes to: the APIs in turn.
    pub fn base_for(&self, seq: u64) -> &str {
        &self.bases[seq as usize % self.bases.len()]
    }
    /// Whether this cluster runs on the three-node RabbitMQ cluster.
    pub fn on_rabbit_cluster(&self) -> bool {
        self.layout.is_some()
    }

    fn launch(&self, role: &str, subcommand: &str, extra: Vec<(&'static str, String)>) -> Proc {
        let n = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
        let name = format!("{role}-{n}");
        let port = free_port();
        let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fault-logs");
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let log = std::fs::File::create(log_dir.join(format!("{}-{name}.log", self.name))).expect("log file");
        let child = Command::new(&self.binary)
            .arg(subcommand)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SLUICE__HTTP__ADDR", format!("127.0.0.1:{port}"))
            .envs(extra)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("sluice binary starts");
        self.targets.lock().unwrap().push((name.clone(), port));
        Proc { name, port, child }
    }

    async fn wait_ready(&self, port: u16) {
        let url = format!("http://127.0.0.1:{port}/readyz");
        eventually(Duration::from_secs(60), || async {
            let r = self.http.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }

    /// SIGKILLs worker `i` and starts a new one in its place; returns when the new one is ready.
    pub async fn kill_worker(&self, i: usize) {
        let old = self.workers.lock().unwrap()[i].take();
        if let Some(mut w) = old {
            w.child.start_kill().expect("kill");
            let _ = w.child.wait().await;
            self.forget(&w.name);
        }
        let fresh = self.launch_worker();
        let port = fresh.port;
        self.workers.lock().unwrap()[i] = Some(fresh);
        self.wait_ready(port).await;
    }

    /// Starts a new worker in place of each one that exited on its own; returns how many of
    /// them the crash hook had aborted (SIGABRT), not counting any other exit.
    pub fn respawn_exited(&self) -> usize {
        use std::os::unix::process::ExitStatusExt;
        let mut workers = self.workers.lock().unwrap();
        let mut aborted = 0;
        for slot in workers.iter_mut() {
            if let Some(w) = slot.as_mut() {
                if let Ok(Some(status)) = w.child.try_wait() {
                    if status.signal() == Some(6) {
                        aborted += 1;
                    }
                    self.forget(&w.name);
                    *slot = Some(self.launch_worker());
                }
            }
        }
        aborted
    }

    fn forget(&self, name: &str) {
        self.targets.lock().unwrap().retain(|(n, _)| n != name);
    }

    /// The process ids of the running workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.lock().unwrap().iter().flatten().filter_map(|w| w.child.id()).collect()
    }

    /// How many worker slots the cluster has.
    pub fn worker_count(&self) -> usize {
        self.workers.lock().unwrap().len()
    }

    /// A counter summed over every process this cluster ran (`series` with labels as rendered;
    /// a prefix sums every label set).
    pub async fn counter(&self, series: &str) -> f64 {
        scrape_once(&self.http, &self.targets, &self.scraped).await;
        let scraped = self.scraped.lock().unwrap();
        scraped.values().map(|text| metric_sum(text, series)).sum()
    }

    /// A counter of one process (`api-1`, `worker-2`, … in start order), `series` as in
    /// [`Self::counter`].
    pub async fn process_counter(&self, process: &str, series: &str) -> f64 {
        scrape_once(&self.http, &self.targets, &self.scraped).await;
        let scraped = self.scraped.lock().unwrap();
        scraped.get(process).map_or(0.0, |text| metric_sum(text, series))
    }

    /// A counter summed over every process, over the label sets containing `label`.
    pub async fn counter_where(&self, name: &str, label: &str) -> f64 {
        scrape_once(&self.http, &self.targets, &self.scraped).await;
        let scraped = self.scraped.lock().unwrap();
        let series = format!("{name}{{");
        scraped
            .values()
            .flat_map(|text| text.lines().filter(|l| l.starts_with(&series) && l.contains(label)))
            .map(|l| metric_sum(l, &series[..series.len() - 1]))
            .sum()
    }

    /// Started processes so far (each connects to the broker once when it starts).
    pub fn processes_started(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }
}

impl Drop for Cluster {
    /// Kills the processes, then deletes the cluster's queues, exchanges, database and commit
    /// log, also when the scenario failed.
    fn drop(&mut self) {
        self.scraper.abort();
        let mut workers = self.workers.lock().unwrap();
        for p in self.apis.iter_mut().chain(workers.iter_mut().flatten()) {
            let _ = p.child.start_kill();
        }
        drop(workers);
        let _ = std::fs::remove_file(commits_log(&self.settings.broker.prefix));
        crate::declared::remove_commands_dir(&self.commands_dir);
        remove_resources(&self.settings);
    }
}

/// Declares the topology through node `n` alone, as the first connection of a deployment
/// would, so that node leads every queue.
async fn declare_topology(settings: &Settings, n: usize) {
    let mut b = settings.broker.clone();
    b.urls = vec![sluice::config::Secret::new(crate::rabbit::RabbitCluster::url(n, 5))];
    let topology = sluice::broker::Topology::new(&b.prefix, &settings.worker.retry_tiers_ms, b.delivery_limit)
        .with_partitions(settings.ordering.partitions);
    let cancel = tokio_util::sync::CancellationToken::new();
    let broker = sluice::broker::Broker::start(b, topology, "cli", cancel.clone());
    let linked = tokio::time::timeout(Duration::from_secs(60), broker.wait_link(&cancel)).await;
    assert!(matches!(linked, Ok(Some(_))), "topology declared through node {n}");
    // Cancelled first, so the supervisor does not reconnect once the link is closed.
    cancel.cancel();
    broker.close().await;
}

/// The file the processes of the cluster with broker prefix `prefix` log their commits to.
pub fn commits_log(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sluice-commits-{prefix}.log"))
}

/// Sum of the values of the lines starting with `series` (a full series or a name prefix
/// followed by `{`).
pub fn metric_sum(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(series)?;
            let value = if rest.starts_with('{') { rest.rsplit_once(' ')?.1 } else { rest };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

async fn scrape_forever(
    http: reqwest::Client,
    targets: Arc<Mutex<Vec<(String, u16)>>>,
    scraped: Arc<Mutex<HashMap<String, String>>>,
) {
    loop {
        scrape_once(&http, &targets, &scraped).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn scrape_once(
    http: &reqwest::Client,
    targets: &Mutex<Vec<(String, u16)>>,
    scraped: &Mutex<HashMap<String, String>>,
) {
    let now: Vec<(String, u16)> = targets.lock().unwrap().clone();
    for (name, port) in now {
        let url = format!("http://127.0.0.1:{port}/metrics");
        let text = async { http.get(&url).timeout(Duration::from_secs(2)).send().await.ok()?.text().await.ok() };
        if let Some(text) = text.await {
            scraped.lock().unwrap().insert(name, text);
        }
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Resident memory of a process in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Waits until `f` holds, polling every 100 ms, or panics after `deadline`.
pub async fn until<F, Fut>(deadline: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
