use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The defaults, compiled in so the binary runs from any directory.
const DEFAULTS: &str = include_str!("../config/default.toml");

/// The shortest bootstrap key production accepts: an operator key guessed is every tenant's.
pub const MIN_PRODUCTION_KEY_CHARS: usize = 32;

/// A value that must not appear in logs or `Debug` output.
#[derive(Clone, Deserialize, Default, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// All of sluice's settings; see `config/default.toml` for each key's meaning.
#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub worker: WorkerSettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub batches: BatchSettings,
    pub dashboard: DashboardSettings,
    pub webhooks: WebhookSettings,
    pub secrets: SecretsSettings,
    pub retention: RetentionSettings,
    pub commands: CommandsSettings,
    pub scheduling: SchedulingSettings,
    pub ordering: OrderingSettings,
    pub log: LogSettings,
}

/// `[http]`
#[derive(Clone, Debug, Deserialize)]
pub struct HttpSettings {
    pub addr: String,
    pub body_limit_bytes: usize,
    pub request_timeout_ms: u64,
    pub header_read_timeout_ms: u64,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub hsts: bool,
}

/// `[database]`
#[derive(Clone, Debug, Deserialize)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    pub startup_timeout_secs: u64,
}

/// `[broker]`
#[derive(Clone, Debug, Deserialize)]
pub struct BrokerSettings {
    pub url: Secret,
    /// The cluster's nodes; when set, replaces `url`.
    #[serde(default)]
    pub urls: Vec<Secret>,
    pub connect_timeout_ms: u64,
    pub prefix: String,
    pub publish_timeout_ms: u64,
    pub max_in_flight_publishes: usize,
    pub publish_channels: usize,
    /// Bursts of single publishes awaiting confirms at once per channel; 0 sends each alone.
    pub publish_bursts: usize,
    pub frame_max: u32,
    pub delivery_limit: u32,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

/// `[worker]`
#[derive(Clone, Debug, Deserialize)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub prefetch: u16,
    pub batch_size: usize,
    pub batch_linger_ms: u64,
    pub max_attempts: u32,
    pub retry_tiers_ms: Vec<u64>,
    pub retry_base_ms: u64,
    pub retry_jitter: f64,
    pub serialization_retries: usize,
    pub drain_timeout_ms: u64,
}

/// `[auth]`
#[derive(Clone, Debug, Deserialize)]
pub struct AuthSettings {
    pub bootstrap_key: Secret,
    pub bootstrap_tenant: String,
    pub cache_ttl_secs: u64,
    pub max_failures: u32,
    pub failure_window_secs: u64,
}

/// `[limits]`
#[derive(Clone, Debug, Deserialize)]
pub struct LimitSettings {
    pub rate_per_second: f64,
    pub burst: f64,
    pub tenants: std::collections::HashMap<String, TenantLimit>,
    pub max_queue_depth: u64,
    pub max_queue_wait_ms: i64,
    pub max_json_depth: usize,
    pub max_string_bytes: usize,
    pub max_json_values: usize,
    pub max_json_bytes: usize,
    pub max_page_bytes: usize,
}

/// `[limits.tenants.<tenant>]`
#[derive(Clone, Debug, Deserialize)]
pub struct TenantLimit {
    pub rate_per_second: f64,
    pub burst: f64,
}

/// `[batches]`
#[derive(Clone, Debug, Deserialize)]
pub struct BatchSettings {
    pub max_commands: usize,
    pub body_limit_bytes: usize,
    pub max_json_values: usize,
    pub max_json_bytes: usize,
    pub callback_max_attempts: i32,
    pub callback_timeout_ms: u64,
    pub allow_private_callbacks: bool,
    pub callback_ports: Vec<u16>,
    pub settle_interval_ms: u64,
    pub sweep_interval_secs: u64,
}

/// `[webhooks]`
#[derive(Clone, Debug, Deserialize)]
pub struct WebhookSettings {
    pub rate_per_second: f64,
    pub burst: f64,
    pub client_rate_per_second: f64,
    pub client_burst: f64,
    pub source_cache_ms: u64,
    pub max_refused_kept: u64,
}

/// `[retention]`
#[derive(Clone, Debug, Deserialize)]
pub struct RetentionSettings {
    pub enabled: bool,
    pub interval_secs: u64,
    pub batch_size: u64,
    pub pause_ms: u64,
    pub commands_days: u32,
    pub dead_letters_days: u32,
    pub webhook_deliveries_days: u32,
    pub refused_deliveries_days: u32,
}

/// `[ordering]`
#[derive(Clone, Debug, Deserialize)]
pub struct OrderingSettings {
    pub partitions: u16,
    pub concurrency: usize,
    pub prefetch: u16,
    pub rebalance_interval_ms: u64,
    pub release_batch: i64,
}

/// `[scheduling]`
#[derive(Clone, Debug, Deserialize)]
pub struct SchedulingSettings {
    pub horizon_days: u32,
    pub poll_interval_ms: u64,
    pub dispatch_batch: i64,
    pub catch_up_grace_secs: u64,
}

/// `[commands]`
#[derive(Clone, Debug, Deserialize)]
pub struct CommandsSettings {
    pub dir: PathBuf,
}

/// `[secrets]`
#[derive(Clone, Debug, Deserialize)]
pub struct SecretsSettings {
    pub keys: Secret,
}

/// `[dashboard]`
#[derive(Clone, Debug, Deserialize)]
pub struct DashboardSettings {
    pub session_ttl_secs: u64,
    pub secure_cookie: bool,
}

/// `[log]`
#[derive(Clone, Debug, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration is invalid: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration is invalid: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads defaults < `config/$SLUICE_ENV.toml` < `SLUICE__*` variables < `SLUICE_BOOTSTRAP_KEY`.
    pub fn load() -> Result<Self, ConfigError> {
        let env = std::env::var("SLUICE_ENV").unwrap_or_else(|_| "development".into());
        let dir = std::env::var("SLUICE_CONFIG_DIR").map_or_else(|_| PathBuf::from("config"), PathBuf::from);
        Self::load_from(&env, &dir, true)
    }

    /// Loads the layers for environment `env` from `dir`; `with_env_vars` adds the variables.
    pub fn load_from(env: &str, dir: &std::path::Path, with_env_vars: bool) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .add_source(config::File::from(dir.join(format!("{env}.toml"))).required(false));
        if with_env_vars {
            builder = builder.add_source(environment());
            if let Ok(key) = std::env::var("SLUICE_BOOTSTRAP_KEY") {
                builder = builder.set_override("auth.bootstrap_key", key)?;
            }
            if let Ok(keys) = std::env::var("SLUICE_SECRETS_KEYS") {
                builder = builder.set_override("secrets.keys", keys)?;
            }
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        if env == "production" {
            settings.validate_for_production()?;
        }
        Ok(settings)
    }

    /// What production refuses to start with although development allows it.
    fn validate_for_production(&self) -> Result<(), ConfigError> {
        let key = self.auth.bootstrap_key.expose();
        if !key.is_empty() && key.chars().count() < MIN_PRODUCTION_KEY_CHARS {
            return Err(ConfigError::Invalid(format!(
                "SLUICE_BOOTSTRAP_KEY (auth.bootstrap_key) must be at least {MIN_PRODUCTION_KEY_CHARS} characters in \
                 production; generate one with: openssl rand -hex 32"
            )));
        }
        if self.secrets.keys.expose().trim().is_empty() {
            return Err(ConfigError::Invalid(
                "SLUICE_SECRETS_KEYS (secrets.keys) must be set in production, so webhook and callback secrets are \
                 stored sealed; generate one with: sluice secrets generate-key"
                    .into(),
            ));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let w = &self.worker;
        if w.retry_tiers_ms.is_empty() || w.retry_tiers_ms.contains(&0) {
            return Err(ConfigError::Invalid("worker.retry_tiers_ms needs at least one delay, all > 0".into()));
        }
        if w.concurrency == 0 || w.prefetch == 0 || w.max_attempts == 0 || w.batch_size == 0 {
            return Err(ConfigError::Invalid(
                "worker.concurrency, prefetch, batch_size and max_attempts must be > 0".into(),
            ));
        }
        if !(0.0..1.0).contains(&w.retry_jitter) {
            return Err(ConfigError::Invalid("worker.retry_jitter must be in [0, 1)".into()));
        }
        if self.broker.publish_channels == 0 || self.broker.max_in_flight_publishes == 0 {
            return Err(ConfigError::Invalid("broker.publish_channels and max_in_flight_publishes must be > 0".into()));
        }
        if self.broker.frame_max < 4096 {
            return Err(ConfigError::Invalid("broker.frame_max must be at least 4096 (AMQP's minimum)".into()));
        }
        if let Err(e) = crate::secrets::Sealer::from_spec(self.secrets.keys.expose()) {
            return Err(ConfigError::Invalid(e.to_string()));
        }
        if let Err(e) = self.broker.amqp_uris() {
            return Err(ConfigError::Invalid(e));
        }
        if self.broker.connect_timeout_ms == 0 {
            return Err(ConfigError::Invalid("broker.connect_timeout_ms must be > 0".into()));
        }
        if self.dashboard.session_ttl_secs == 0 || self.dashboard.session_ttl_secs > 30 * 24 * 3600 {
            return Err(ConfigError::Invalid("dashboard.session_ttl_secs must be 1 s to 30 days".into()));
        }
        let l = &self.limits;
        if !(l.rate_per_second.is_finite() && l.rate_per_second >= 0.0 && l.burst.is_finite() && l.burst >= 0.0)
            || l.tenants
                .values()
                .any(|t| !(t.rate_per_second.is_finite() && t.rate_per_second >= 0.0 && t.burst.is_finite()))
        {
            return Err(ConfigError::Invalid("limits: rates and bursts must be finite numbers >= 0".into()));
        }
        let h = &self.http;
        if h.request_timeout_ms == 0 || h.header_read_timeout_ms == 0 || h.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "http.request_timeout_ms, header_read_timeout_ms and max_connections must be > 0".into(),
            ));
        }
        if self.broker.max_in_flight_publishes < 4 {
            return Err(ConfigError::Invalid("broker.max_in_flight_publishes must be at least 4".into()));
        }
        if self.batches.max_commands == 0 || self.batches.callback_max_attempts < 1 {
            return Err(ConfigError::Invalid("batches.max_commands and callback_max_attempts must be > 0".into()));
        }
        if self.broker.prefix.is_empty()
            || !self.broker.prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::Invalid("broker.prefix must be non-empty [A-Za-z0-9-_.]".into()));
        }
        Ok(())
    }
}

/// The `SLUICE__SECTION__KEY` variables; list settings take comma-separated values.
fn environment() -> config::Environment {
    config::Environment::with_prefix("SLUICE")
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .with_list_parse_key("worker.retry_tiers_ms")
        .with_list_parse_key("batches.callback_ports")
        .with_list_parse_key("broker.urls")
        .try_parsing(true)
}

impl BrokerSettings {
    /// Publish confirmation deadline.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    /// How long one node may take to accept a connection before the next one is tried.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The addresses to connect to, in the order they are tried: `urls` if set, else `url`.
    pub fn addresses(&self) -> &[Secret] {
        if self.urls.is_empty() {
            std::slice::from_ref(&self.url)
        } else {
            &self.urls
        }
    }

    /// The first address (tools that need one connection, such as the bench's raw client).
    pub fn first_url(&self) -> &str {
        self.addresses()[0].expose()
    }

    /// Every address, parsed, with `frame_max` proposed unless the URL sets one; the error
    /// names the setting and the position of the address that is wrong.
    pub fn amqp_uris(&self) -> Result<Vec<lapin::uri::AMQPUri>, String> {
        let key = if self.urls.is_empty() { "broker.url" } else { "broker.urls" };
        self.addresses()
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let mut uri: lapin::uri::AMQPUri = url
                    .expose()
                    .trim()
                    .parse()
                    .map_err(|e| format!("{key} entry {} is not an AMQP URI: {e}", i + 1))?;
                uri.query.frame_max = uri.query.frame_max.or(Some(self.frame_max));
                Ok(uri)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(url: &str) -> BrokerSettings {
        let defaults = Settings::load_from("none", std::path::Path::new("/nonexistent"), false);
        let mut s = defaults.expect("the defaults load").broker;
        s.url = Secret::new(url);
        s
    }

    #[test]
    fn the_broker_url_gets_the_configured_frame_max_unless_it_sets_one() {
        let uri = &broker("amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10").amqp_uris().expect("parses")[0];
        assert_eq!((uri.query.frame_max, uri.query.heartbeat), (Some(16384), Some(10)));
        let uri = &broker("amqp://127.0.0.1/%2f?frame_max=65536").amqp_uris().expect("parses")[0];
        assert_eq!(uri.query.frame_max, Some(65536));
    }

    #[test]
    fn production_refuses_a_short_bootstrap_key_or_no_secrets_key_and_development_allows_both() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        // The production layer's own checks run on load; here they run on their own.
        let mut s = Settings::load_from("none", &dir, false).expect("defaults load");
        s.auth.bootstrap_key = Secret::new("dev-admin-key");
        let err = s.validate_for_production().expect_err("a short key is refused");
        assert!(err.to_string().contains("at least 32 characters"), "{err}");
        s.auth.bootstrap_key = Secret::new("x".repeat(32));
        s.secrets.keys = Secret::new(crate::secrets::generate_key("k1"));
        assert!(s.validate_for_production().is_ok());
        s.auth.bootstrap_key = Secret::new("");
        assert!(s.validate_for_production().is_ok(), "no bootstrap key at all is allowed");
        s.secrets.keys = Secret::new("");
        let err = s.validate_for_production().expect_err("production needs a secrets key");
        assert!(err.to_string().contains("SLUICE_SECRETS_KEYS"), "{err}");
    }

    #[test]
    fn a_broker_url_that_is_not_amqp_is_refused() {
        assert!(broker("http://127.0.0.1:5672").amqp_uris().is_err());
    }

    #[test]
    fn sluice_broker_urls_is_read_as_a_comma_separated_list() {
        let vars = [("SLUICE__BROKER__URLS".to_owned(), "amqp://a:5691/%2f,amqp://b:5692/%2f".to_owned())];
        let settings: Settings = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .add_source(environment().source(Some(vars.into_iter().collect())))
            .build()
            .and_then(config::Config::try_deserialize)
            .expect("loads");
        let hosts: Vec<String> =
            settings.broker.amqp_uris().expect("parses").into_iter().map(|u| u.authority.host).collect();
        assert_eq!(hosts, ["a", "b"]);
    }

    #[test]
    fn broker_urls_replace_the_lone_url_and_a_bad_entry_is_named_by_position() {
        let mut s = broker("amqp://127.0.0.1:5672/%2f");
        assert_eq!(s.amqp_uris().expect("parses").len(), 1, "a lone url still works");
        s.urls = vec![Secret::new("amqp://127.0.0.1:5691/%2f"), Secret::new(" amqp://127.0.0.1:5692/%2f")];
        let ports: Vec<u16> = s.amqp_uris().expect("parses").iter().map(|u| u.authority.port).collect();
        assert_eq!(ports, [5691, 5692], "urls win over url, in the order given");
        s.urls.push(Secret::new("http://127.0.0.1:5693"));
        let err = s.amqp_uris().expect_err("the third entry is wrong");
        assert!(err.contains("broker.urls entry 3"), "{err}");
    }
}
