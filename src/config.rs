//! Configuration in layers: built-in defaults, then a TOML file, then `FEEDGRAPH__...`
//! environment variables (`FEEDGRAPH__STORAGE__DURABILITY=flush` sets `storage.durability`).
//! Command-line flags are applied last by the binary.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::store::StorageConfig;
use crate::validate::{PiiConfig, ValidationConfig};

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "feedgraph.toml";

/// Everything configurable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the data lives (sled database, secrets). Default `./data`.
    pub data_dir: PathBuf,
    /// Durability and cache settings.
    pub storage: StorageConfig,
    /// Validation plugin and thresholds.
    pub validation: ValidationConfig,
    /// HTTP listener and request limits.
    pub server: ServerConfig,
    /// Token verification.
    pub auth: AuthConfig,
    /// Request rate limits.
    pub rate_limit: RateLimitConfig,
    /// Graph query limits.
    pub query: QueryConfig,
    /// The Prometheus endpoint `/metrics`.
    pub metrics: MetricsConfig,
    /// Log output.
    pub log: LogConfig,
    /// The review console under `/console`.
    pub console: ConsoleConfig,
    /// Batch submit (`POST /feedback/batch`).
    pub batch: BatchConfig,
    /// PII detectors on ingest: a mode per detector (`[pii]`, see `validate::pii`).
    pub pii: PiiConfig,
    /// Which orgs this replica serves (`[placement]`, see `service::placement`).
    pub placement: crate::service::placement::PlacementConfig,
    /// Lifecycle events delivered as webhooks (`[webhooks]`, see `events`).
    pub webhooks: crate::events::WebhooksConfig,
    /// Erasure jobs and the rewrite of the sled database after them (`[erasure]`).
    pub erasure: crate::service::erasure::ErasureConfig,
    /// Per-org retention policies (`[retention]`).
    pub retention: crate::service::erasure::RetentionConfig,
    /// Feedback pages: the rendered-item cache (`[pages]`, see `service::pages`).
    pub pages: crate::service::pages::PagesConfig,
}

/// Batch submit (`POST /feedback/batch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Most items one batch may hold (default 1000); a larger batch is a 400 and nothing
    /// of it is stored. The body must also fit `server.body_limit_bytes`.
    pub max_items: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_items: crate::service::batch::DEFAULT_MAX_ITEMS,
        }
    }
}

/// The Prometheus endpoint `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all (default true); when false it answers 404.
    pub enabled: bool,
    /// When set, `/metrics` answers only requests with `Authorization: Bearer <token>`,
    /// the token being this file's contents (surrounding whitespace ignored). Unset (the
    /// default), it needs no token, like `/healthz`: without per-org labels the metrics
    /// name no tenant, user or item.
    pub bearer_token_file: Option<PathBuf>,
    /// Adds an `org` label to the per-tenant series (submits, rate-limited requests,
    /// queries, graph sizes). Off by default: one series per org can be many, and org
    /// names are then visible to whoever scrapes.
    pub per_org_labels: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            bearer_token_file: None,
            per_org_labels: false,
        }
    }
}

/// How log lines are written (to stderr; the level comes from `RUST_LOG`, default `info`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json` (one JSON object per line, with the request span's
    /// fields, `request_id` among them).
    pub format: LogFormat,
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The browser console served under `/console`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console (default true).
    pub enabled: bool,
    /// Mark the sign-in cookie `Secure`, so browsers send it only over HTTPS. Turn it on
    /// when the server is reached through TLS (for example behind a terminating proxy);
    /// plain `http://` sign-ins stop working then.
    pub secure_cookie: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            secure_cookie: false,
        }
    }
}

/// The HTTP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind; port 0 picks a free port (the log says which).
    pub bind: String,
    /// Largest accepted request body, in bytes (larger is a 413).
    pub body_limit_bytes: usize,
    /// After SIGINT/SIGTERM, in-flight requests get this long to finish (seconds) before
    /// the remaining connections are closed; acknowledged writes are durable either way.
    pub shutdown_grace_secs: u64,
    /// A client must send a whole request head (request line and headers) within this
    /// many seconds of its first byte; slower heads get a 408 and the connection closes.
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection with no request in progress is closed after this many
    /// seconds (also the wait for the first request of a new connection).
    pub idle_timeout_secs: u64,
    /// A request body that sends nothing for this many seconds is abandoned (408) and
    /// its connection closed.
    pub body_read_timeout_secs: u64,
    /// Most connections open at once; further clients wait in the listen queue until one
    /// closes. Keep it well below the process's open-file limit (`ulimit -n`), which the
    /// store also draws on.
    pub max_connections: usize,
    /// Adds routes that exist only for tests (`GET /__test/panic`). Never in production.
    pub enable_test_routes: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            body_limit_bytes: 256 * 1024,
            shutdown_grace_secs: 10,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_read_timeout_secs: 30,
            max_connections: 512,
            enable_test_routes: false,
        }
    }
}

/// One public key for RS256 or EdDSA tokens, chosen by the token's `kid`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    /// The key id tokens name in their header.
    pub kid: String,
    /// `RS256` or `EdDSA`.
    pub alg: String,
    /// PEM file with the public key.
    pub pem_file: PathBuf,
}

/// How bearer tokens are verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret given inline (prefer `secret_file`).
    pub secret: Option<String>,
    /// HS256 secret file; default `<data_dir>/jwt-secret`, created (mode 0600) if missing.
    pub secret_file: Option<PathBuf>,
    /// Accept HS256 tokens signed with the secret (default true).
    pub hs256: bool,
    /// RS256/EdDSA public keys; tokens must name one by `kid`.
    pub public_keys: Vec<PublicKeyConfig>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
    /// When set, every token must carry this `aud` (or list it); `feedgraph token` adds it.
    pub audience: Option<String>,
    /// When set, every token's `iss` must equal this; `feedgraph token` adds it.
    pub issuer: Option<String>,
    /// How many verified tokens are remembered (by their text, until they expire) so a
    /// client that sends the same token on every request has it checked once; 0 turns
    /// the cache off. When full it is emptied and fills again.
    pub verified_cache: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secret: None,
            secret_file: None,
            hs256: true,
            public_keys: Vec::new(),
            leeway_secs: 30,
            audience: None,
            issuer: None,
            verified_cache: 4096,
        }
    }
}

/// Request rate limits (the seed's: 100 per minute per user, 10,000 per hour per org).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Turn rate limiting on or off.
    pub enabled: bool,
    /// Requests per user per window.
    pub per_user: u32,
    /// The user window, seconds.
    pub per_user_window_secs: u64,
    /// Requests per org per window.
    pub per_org: u32,
    /// The org window, seconds.
    pub per_org_window_secs: u64,
    /// Past this many tracked keys, keys back at their full allowance are dropped during a
    /// request (amortised: after such a sweep the next waits until the table grows by half).
    pub max_tracked_keys: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            per_user: 100,
            per_user_window_secs: 60,
            per_org: 10_000,
            per_org_window_secs: 3600,
            max_tracked_keys: 100_000,
        }
    }
}

/// Limits on each graph query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Wall time, milliseconds: the whole of a query whose result is collected, and the
    /// time until the first rows of a streamed (HTTP) result are sent.
    pub timeout_ms: u64,
    /// Wall time of a streamed (HTTP) result once its rows flow, milliseconds. A streamed
    /// query holds one batch of rows at a time and `max_work` bounds its graph work (texts
    /// read from the store and bytes encoded are not counted), so this mostly ends answers
    /// too big to finish: the seed's lineage with paths at 1M items is about 5 GB of JSON
    /// (91 s here). The client must still take each batch within `timeout_ms`.
    pub stream_timeout_ms: u64,
    /// Rows one query may return. Over HTTP the rows are streamed and rows sent hold no
    /// memory (`max_memory_bytes` bounds what a query holds), so this only stops runaway
    /// results; in-process calls (`feedgraph query`) collect their rows within the memory limit.
    pub max_rows: usize,
    /// Work units: nodes and edges visited, list elements built or visited by expressions.
    pub max_work: u64,
    /// Cap on unbounded variable-length patterns (`*`).
    pub max_depth: u32,
    /// Memory one query may hold, in bytes (an estimate: built lists and strings, bound and
    /// collected values, sort/group/DISTINCT state, the result's rows and JSON size).
    pub max_memory_bytes: u64,
    /// Memory every running query may hold together, in bytes of the same estimate; a
    /// query that would take more answers 429 (the server is busy: retry). 0 = no bound
    /// beyond `max_memory_bytes` per query.
    pub max_memory_total_bytes: u64,
    /// Queries of one org that may run at once; more answer 429 (0 = no limit).
    pub max_concurrent_per_org: usize,
    /// Queries of all orgs that may run at once, each on a blocking thread holding up to
    /// `max_memory_bytes`; more answer 429 (0 = no limit). The last quarter of these slots
    /// is kept for orgs that run no query, so busy tenants cannot shut out the others.
    pub max_concurrent_total: usize,
    /// Streamed results (HTTP): most rows per batch, the unit in which rows are sent and
    /// released from the query's memory estimate (and one Arrow record batch).
    pub stream_batch_rows: usize,
    /// Streamed results: a batch is sent early once its rows' estimated JSON size reaches
    /// this many bytes.
    pub stream_batch_bytes: u64,
    /// Query plans kept for repeated texts (parsed and planned once per org, text and
    /// parameter values while the graph keeps what the plan depends on); 0 = off.
    pub plan_cache_entries: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout_ms: 5_000,
            stream_timeout_ms: 600_000,
            max_rows: 10_000_000,
            max_work: 50_000_000,
            max_depth: 30,
            max_memory_bytes: 256 * 1024 * 1024,
            max_memory_total_bytes: 1024 * 1024 * 1024,
            max_concurrent_per_org: 4,
            max_concurrent_total: 16,
            stream_batch_rows: 8192,
            stream_batch_bytes: 1024 * 1024,
            plan_cache_entries: 1024,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            storage: StorageConfig::default(),
            validation: ValidationConfig::default(),
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            query: QueryConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
            console: ConsoleConfig::default(),
            batch: BatchConfig::default(),
            pii: PiiConfig::default(),
            placement: Default::default(),
            webhooks: crate::events::WebhooksConfig::default(),
            erasure: crate::service::erasure::ErasureConfig::default(),
            retention: crate::service::erasure::RetentionConfig::default(),
            pages: crate::service::pages::PagesConfig::default(),
        }
    }
}

/// A configuration that could not be read or does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads defaults, then `file` (or `feedgraph.toml` if present), then the environment.
    /// A named file that does not exist is an error; the default file is optional.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(f) => {
                if !f.exists() {
                    return Err(ConfigError(format!(
                        "config file {} does not exist",
                        f.display()
                    )));
                }
                fig = fig.merge(Toml::file(f));
            }
            None => fig = fig.merge(Toml::file(DEFAULT_CONFIG_FILE)),
        }
        fig = fig.merge(Env::prefixed("FEEDGRAPH__").split("__"));
        fig.extract().map_err(|e| ConfigError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;

    #[test]
    #[allow(clippy::result_large_err)]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                "data_dir = \"/tmp/x\"\n[storage]\ncache_mb = 64\n[validation]\nplugin = \"noop\"\n",
            )?;
            jail.set_env("FEEDGRAPH__STORAGE__DURABILITY", "flush");
            let c = Config::load(Some(Path::new("custom.toml"))).map_err(|e| e.0)?;
            assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
            assert_eq!(c.storage.cache_mb, 64);
            assert_eq!(c.storage.durability, Durability::Flush);
            assert_eq!(c.validation.plugin, "noop");
            assert!(c.storage.group_commit);
            assert!(Config::load(Some(Path::new("missing.toml"))).is_err());
            jail.create_file("typo.toml", "[server]\nbnid = \"0.0.0.0:1\"\n")?;
            let err = Config::load(Some(Path::new("typo.toml"))).unwrap_err();
            assert!(err.0.contains("bnid"), "{}", err.0);
            Ok(())
        });
    }
}
