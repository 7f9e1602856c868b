//! The command line: `serve`, and the commands that work on a data directory (`get`,
//! `stats`, `check`, `token`, `query`, `export`, ...). Parsing is clap's; each command is a
//! thin call into the service. The data-loading commands live in `cli/load.rs`, backup and
//! restore in `cli/backup.rs`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod backup;
mod load;

use crate::config::{Config, ConfigError};
use crate::http::auth::Role;
use crate::model::{Actor, NewFeedback};
use crate::service::dump::{DumpRecord, LoadError};
use crate::service::training::ExportFormat;
use crate::service::{ImportRecord, Service, ServiceError, StatsQuery};

/// Command-line errors.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A service operation failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Reading input or writing output failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// An import file has bad lines; nothing was written.
    #[error("{path}: {count} bad line(s), nothing imported:\n{details}")]
    BadImport {
        /// The file.
        path: String,
        /// How many bad lines.
        count: usize,
        /// The first few, one per line, `line N: problem`.
        details: String,
    },
    /// An import stopped at a line the service refused.
    #[error("{path}: line {line}: {source} (lines before it were imported and are durable)")]
    ImportFailed {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// Why.
        source: ServiceError,
    },
    /// The consistency check found a difference.
    #[error("graph and store disagree: {0}")]
    Inconsistent(String),
    /// Output could not be rendered.
    #[error("cannot render output: {0}")]
    Render(#[from] serde_json::Error),
    /// The HTTP server failed.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// Token minting failed.
    #[error(transparent)]
    Auth(#[from] crate::http::auth::AuthError),
    /// A command-line value is invalid.
    #[error("{0}")]
    Usage(String),
}

/// feedgraph: a graph-centric feedback store for LLM answers and LoRA adapters.
#[derive(Debug, Parser)]
#[command(name = "feedgraph", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Default: ./feedgraph.toml if it exists.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides the configuration). Default: ./data.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (default: 127.0.0.1:8080 on ./data).
    Serve {
        /// Address to bind (overrides server.bind); port 0 picks a free port.
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
    },
    /// Mint a bearer token signed with the configured HS256 secret.
    Token {
        /// The tenant the token acts in.
        #[arg(long)]
        org: String,
        /// The user (the token's `sub`).
        #[arg(long)]
        sub: String,
        /// Role(s): user, trainer, admin (repeat or comma-separate).
        #[arg(long = "role", value_delimiter = ',', default_value = "user")]
        roles: Vec<String>,
        /// Lifetime, e.g. 3600, 90m, 12h, 30d.
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
    /// Print a one-time sign-in link for the review console (works once per server
    /// process, until it expires; needs the HS256 secret).
    ConsoleLink {
        /// The tenant to sign in to.
        #[arg(long)]
        org: String,
        /// The user to sign in as.
        #[arg(long)]
        user: String,
        /// Role(s): user, trainer, admin (repeat or comma-separate).
        #[arg(long = "role", value_delimiter = ',', default_value = "user")]
        roles: Vec<String>,
        /// How long the link works, e.g. 300, 10m, 1h.
        #[arg(long, default_value = "10m")]
        ttl: String,
        /// How long the session it opens lasts, e.g. 8h.
        #[arg(long, default_value = "12h")]
        session_ttl: String,
        /// The server's address as the browser reaches it. Default: http:// and server.bind
        /// (an unspecified address becomes 127.0.0.1).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Import a JSONL file of feedback (and adapter) records, validating each line.
    Import {
        /// The JSONL file (one JSON object per line).
        file: PathBuf,
        /// Org for lines without an `org` field.
        #[arg(long)]
        org: Option<String>,
        /// Recorded as the actor in each record's history.
        #[arg(long, default_value = "cli")]
        actor: String,
    },
    /// Print one feedback item as JSON.
    Get {
        /// The feedback id.
        id: String,
        /// The org that owns it.
        #[arg(long)]
        org: String,
        /// Also print its history.
        #[arg(long)]
        history: bool,
    },
    /// Print the feedback counters of an org as JSON.
    Stats {
        /// The org.
        #[arg(long)]
        org: String,
        /// Only feedback linked to this adapter.
        #[arg(long)]
        adapter: Option<String>,
        /// Only this model version.
        #[arg(long)]
        model: Option<String>,
        /// Only the last N hours.
        #[arg(long)]
        hours: Option<u64>,
    },
    /// Check the store's invariants (history, edges, leases, lineage) and that the graph
    /// index rebuilt from it is consistent (run it with the server stopped).
    Check,
    /// Erase one item, or every item of a user or session, in an org (with the server
    /// stopped; with it running use `POST /api/v1/llm/erasures`); prints the receipt.
    Erase {
        /// The org.
        #[arg(long)]
        org: String,
        /// Erase this feedback item.
        #[arg(long, group = "erase_scope")]
        item: Option<String>,
        /// Erase every item of this user_id.
        #[arg(long, group = "erase_scope")]
        user: Option<String>,
        /// Erase every item of this session_id.
        #[arg(long, group = "erase_scope")]
        session: Option<String>,
        /// Recorded as who erased (the receipt's `requested_by`).
        #[arg(long, default_value = "cli")]
        actor: String,
    },
    /// Rewrite the sled database with only its live data, so that erased bytes leave the
    /// disk (run it with the server stopped; the server also does it at start-up after
    /// erasures).
    Compact,
    /// Apply an org's retention policy (`[retention.orgs.<org>]`) now, with a progress
    /// bar (server stopped); prints the receipt, or nothing when no item is old enough.
    Retention {
        /// The org.
        #[arg(long)]
        org: String,
    },
    /// Run a read-only openCypher query (or a named one from queries/) on an org's graph.
    Query {
        /// The query text, e.g. 'MATCH (a:Adapter) RETURN a.id'.
        #[arg(required_unless_present = "named")]
        query: Option<String>,
        /// Run a named query instead (by_adapter, adapter_stats, lineage, shared_feedback).
        #[arg(long, conflicts_with = "query")]
        named: Option<String>,
        /// The org whose graph to query.
        #[arg(long)]
        org: String,
        /// A parameter, `name=value`; the value is read as JSON if it parses, else as text.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Output as a table (default) or JSON.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Bulk-load a graph dump (JSONL with kind adapter, derived_from, feedback,
    /// feedback_for) into an org: all or nothing, one durable sync at the end.
    Load {
        /// The dump file.
        file: PathBuf,
        /// The org to load into.
        #[arg(long)]
        org: String,
    },
    /// Write an org as a graph dump (to stdout, or --out FILE).
    Dump {
        /// The org.
        #[arg(long)]
        org: String,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a full backup (records, every history version, batches, edges with their
    /// metadata, idempotency keys) of some orgs, or of every org, to --out FILE or stdout.
    /// The file restores into either backend.
    Backup {
        /// An org to back up (repeat for several; none: every org with data).
        #[arg(long = "org")]
        orgs: Vec<String>,
        /// Write here (through FILE.partial, renamed once complete) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Restore a full backup into the configured store: the file is checked whole first;
    /// its orgs must hold nothing here unless --overwrite.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Replace what the backup holds in orgs that already have data (also finishes a
        /// restore that stopped part-way).
        #[arg(long)]
        overwrite: bool,
    },
    /// Write a training batch as JSONL for a trainer (to stdout).
    Export {
        /// The batch id.
        #[arg(long)]
        batch: u64,
        /// sft, dpo, openai-dpo or kto.
        #[arg(long)]
        format: String,
        /// The org that owns the batch.
        #[arg(long)]
        org: String,
    },
    /// Submit random feedback in a loop and print each id once it is durable (crash tests).
    #[command(hide = true)]
    Torture {
        /// Org to write to.
        #[arg(long, default_value = "torture")]
        org: String,
        /// Concurrent writer threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Stop after this many items per thread (0 = run until killed).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
}

/// Starts logging to stderr in `format`, at the level `RUST_LOG` sets (default `info`).
/// Lines written inside a request carry its span, and with it the request id.
pub fn init_logging(format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if let Err(e) = init_logging_to(format, filter, std::io::stderr, ansi) {
        eprintln!("warning: logging was set up already: {e}");
    }
}

/// Installs the process's log subscriber: `format` lines of what `filter` lets through,
/// written to `writer` (colours only with `ansi`, and never in JSON).
pub fn init_logging_to<W>(
    format: crate::config::LogFormat,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
    ansi: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        crate::config::LogFormat::Text => builder.with_ansi(ansi).try_init(),
        // `span` is the innermost span, `spans` all of them: the request's, with its id,
        // is among them even inside nested spans.
        crate::config::LogFormat::Json => builder.json().try_init(),
    }
}

impl Cli {
    /// The configuration these flags select.
    pub fn load_config(&self) -> Result<Config, CliError> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        Ok(config)
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|source| CliError::Io {
        context: "writing output".into(),
        source,
    })
}

/// Runs a command that works on a data directory.
pub fn run(cli: &Cli) -> Result<(), CliError> {
    run_with(cli, || {})
}

/// Like [`run`]; `serve` calls `after_ready` once the store is open and the graph built,
/// which lets the binary retune process-wide settings (its allocator) for steady serving.
pub fn run_with(cli: &Cli, after_ready: fn()) -> Result<(), CliError> {
    let config = cli.load_config()?;
    // Commands that only read must not create an empty store in a mistyped directory
    // (sled's store is the directory; PostgreSQL's is the database, found by its URL).
    let reads_only = config.storage.backend == crate::store::BackendKind::Sled
        && matches!(
            cli.command,
            Command::Get { .. }
                | Command::Stats { .. }
                | Command::Check
                | Command::Query { .. }
                | Command::Export { .. }
                | Command::Dump { .. }
                | Command::Backup { .. }
        );
    let has_data = crate::store::compact::active_dir(&config.data_dir).is_ok_and(|d| d.exists());
    if reads_only && !has_data {
        return Err(CliError::Usage(format!(
            "no feedgraph data in {} (give --data-dir, or import/load/serve first)",
            config.data_dir.display()
        )));
    }
    match &cli.command {
        Command::Serve { bind } => {
            let mut config = config;
            if let Some(b) = bind {
                config.server.bind = b.clone();
            }
            serve(config, after_ready)
        }
        Command::Token {
            org,
            sub,
            roles,
            ttl,
        } => {
            let roles = roles
                .iter()
                .map(|r| {
                    Role::parse(r.trim()).ok_or_else(|| {
                        CliError::Usage(format!("unknown role '{r}' (user, trainer, admin)"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let ttl = parse_ttl(ttl)?;
            if org.trim().is_empty() || sub.trim().is_empty() {
                return Err(CliError::Usage("--org and --sub must not be empty".into()));
            }
            crate::service::check_org(org)?;
            let token = crate::http::auth::mint(&config, org, sub, &roles, ttl)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{token}").map_err(|source| CliError::Io {
                context: "writing output".into(),
                source,
            })
        }
        Command::ConsoleLink {
            org,
            user,
            roles,
            ttl,
            session_ttl,
            url,
        } => {
            let roles = parse_roles(roles)?;
            if org.trim().is_empty() || user.trim().is_empty() {
                return Err(CliError::Usage("--org and --user must not be empty".into()));
            }
            crate::service::check_org(org)?;
            let code = crate::http::console::link::make(
                &config,
                org,
                user,
                &roles,
                parse_ttl(ttl)?,
                parse_ttl(session_ttl)?,
            )
            .map_err(|e| CliError::Usage(e.to_string()))?;
            let base = match url {
                Some(u) => u.trim_end_matches('/').to_owned(),
                None => format!("http://{}", browser_host(&config.server.bind)),
            };
            let mut out = std::io::stdout().lock();
            writeln!(out, "{base}/console/link/{code}").map_err(|source| CliError::Io {
                context: "writing output".into(),
                source,
            })
        }
        Command::Import { file, org, actor } => load::import(&config, file, org.as_deref(), actor),
        Command::Get { id, org, history } => {
            let service = Service::open(&config)?;
            let fb = service.get(org, id)?;
            if *history {
                let versions = service.history(org, id)?;
                print_json(&serde_json::json!({
                    "feedback": fb,
                    "history": versions.iter().map(crate::model::HistoryVersion::to_json).collect::<Vec<_>>(),
                }))
            } else {
                print_json(&fb)
            }
        }
        Command::Stats {
            org,
            adapter,
            model,
            hours,
        } => {
            let service = Service::open(&config)?;
            print_json(&service.stats(
                org,
                &StatsQuery {
                    adapter: adapter.clone(),
                    model: model.clone(),
                    window_hours: *hours,
                },
            )?)
        }
        Command::Check => {
            let service = Service::open(&config)?;
            match service.verify()? {
                None => {
                    eprintln!("ok: store invariants hold and the graph index matches the store");
                    Ok(())
                }
                Some(diff) => Err(CliError::Inconsistent(diff)),
            }
        }
        Command::Erase {
            org,
            item,
            user,
            session,
            actor,
        } => {
            use crate::store::ErasureScope;
            let (scope, value) = match (item, user, session) {
                (Some(v), None, None) => (ErasureScope::Item, v),
                (None, Some(v), None) => (ErasureScope::User, v),
                (None, None, Some(v)) => (ErasureScope::Session, v),
                _ => {
                    return Err(CliError::Service(ServiceError::BadRequest(
                        "give exactly one of --item, --user, --session".into(),
                    )));
                }
            };
            let service = Service::open(&config)?;
            let receipt = service.erase(
                &crate::model::Actor::new(org.clone(), actor.clone()),
                &crate::service::erasure::EraseRequest {
                    scope,
                    value: value.clone(),
                },
            )?;
            drop(service);
            print_json(&receipt)
        }
        Command::Retention { org } => {
            let service = Service::open(&config)?;
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "erasing old items {bar:40} {pos}/{len} ({eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let receipt =
                service.apply_retention(org, crate::model::now_millis(), &mut |done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                })?;
            bar.finish_and_clear();
            drop(service);
            match receipt {
                Some(r) => print_json(&r),
                None => {
                    eprintln!("no item of {org} is older than its retention period");
                    Ok(())
                }
            }
        }
        Command::Compact => {
            let r = crate::store::compact::compact(&config.data_dir, &config.storage)
                .map_err(ServiceError::from)?;
            eprintln!(
                "compacted: {} keys, {} -> {} bytes",
                r.keys, r.bytes_before, r.bytes_after
            );
            Ok(())
        }
        Command::Load { file, org } => load::load(&config, file, org),
        Command::Query {
            query,
            named,
            org,
            params,
            format,
        } => {
            let mut map = serde_json::Map::new();
            for p in params {
                let (k, v) = p.split_once('=').ok_or_else(|| {
                    CliError::Usage(format!("--param '{p}' must look like name=value"))
                })?;
                let value = serde_json::from_str(v)
                    .unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
                map.insert(k.trim_start_matches('$').to_owned(), value);
            }
            let service = Service::open(&config)?;
            let result = match (query, named) {
                (_, Some(name)) => service.named_query(org, name, &map)?,
                (Some(q), None) => service.query(org, q, &map)?,
                (None, None) => return Err(CliError::Usage("give a query or --named NAME".into())),
            };
            if format == "json" {
                return print_json(&result);
            }
            let mut out = std::io::stdout().lock();
            let text = render_table(&result.columns, &result.rows.to_json());
            write!(out, "{text}").map_err(|source| CliError::Io {
                context: "writing output".into(),
                source,
            })?;
            eprintln!(
                "{} row(s), {} units of work, {:.2} ms",
                result.stats.rows,
                result.stats.work,
                result.stats.elapsed_us as f64 / 1000.0
            );
            Ok(())
        }
        Command::Dump { org, out } => {
            let service = Service::open(&config)?;
            let lines = match out {
                Some(path) => {
                    let f = std::fs::File::create(path).map_err(|source| CliError::Io {
                        context: format!("creating {}", path.display()),
                        source,
                    })?;
                    let mut w = std::io::BufWriter::new(f);
                    service.dump(org, &mut w)?
                }
                None => {
                    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
                    service.dump(org, &mut w)?
                }
            };
            eprintln!("dumped {lines} line(s) of org '{org}'");
            Ok(())
        }
        Command::Backup { orgs, out } => backup::backup(&config, orgs, out.as_deref()),
        Command::Restore { file, overwrite } => backup::restore(&config, file, *overwrite),
        Command::Export { batch, format, org } => {
            let format: ExportFormat = format.parse()?;
            let service = Service::open(&config)?;
            let e = service.export(org, *batch, format)?;
            let mut out = std::io::stdout().lock();
            for line in &e.lines {
                writeln!(out, "{line}").map_err(|source| CliError::Io {
                    context: "writing output".into(),
                    source,
                })?;
            }
            eprintln!(
                "batch {batch}: {} item(s), {} line(s), {} skipped for this format{}",
                e.items,
                e.lines.len(),
                e.skipped,
                if format == ExportFormat::Kto {
                    format!("; desirable {}, undesirable {}", e.desirable, e.undesirable)
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        Command::Torture {
            org,
            threads,
            count,
        } => load::torture(&config, org, *threads, *count),
    }
}

/// Renders query rows as an aligned text table (long cells are cut at 60 characters).
pub fn render_table(columns: &[String], rows: &[Vec<serde_json::Value>]) -> String {
    let cell = |v: &serde_json::Value| {
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if s.chars().count() > 60 {
            let cut: String = s.chars().take(57).collect();
            format!("{cut}...")
        } else {
            s
        }
    };
    let cells: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(cell).collect()).collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in &cells {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |values: &mut dyn Iterator<Item = &String>| {
        let parts: Vec<String> = values
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        format!("| {} |\n", parts.join(" | "))
    };
    let mut out = line(&mut columns.iter());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
    for r in &cells {
        out.push_str(&line(&mut r.iter()));
    }
    out
}

/// Role names (as `--role` gives them) as roles.
fn parse_roles(roles: &[String]) -> Result<Vec<Role>, CliError> {
    roles
        .iter()
        .map(|r| {
            Role::parse(r.trim()).ok_or_else(|| {
                CliError::Usage(format!("unknown role '{r}' (user, trainer, admin)"))
            })
        })
        .collect()
}

/// `bind` as a browser can reach it: an unspecified address (all interfaces) becomes the
/// loopback address.
fn browser_host(bind: &str) -> String {
    if let Some(port) = bind.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = bind.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        bind.to_owned()
    }
}

/// Parses `3600`, `90s`, `15m`, `12h` or `30d` into seconds.
pub fn parse_ttl(s: &str) -> Result<u64, CliError> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| CliError::Usage(format!("bad --ttl '{s}': use e.g. 3600, 90m, 12h, 30d")))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(CliError::Usage(format!(
                "bad --ttl unit in '{s}': s, m, h or d"
            )));
        }
    };
    if n == 0 {
        return Err(CliError::Usage("--ttl must be positive".into()));
    }
    Ok(n.saturating_mul(mult))
}

fn serve(config: Config, after_ready: fn()) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            context: "starting the async runtime".into(),
            source,
        })?;
    runtime.block_on(async move {
        let data_dir = config.data_dir.clone();
        let mut server = crate::http::start(config, crate::http::shutdown_signal()).await?;
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "feedgraph listening on http://{}", server.addr);
            let _ = writeln!(out, "data directory: {}", data_dir.display());
            if server.created_secret {
                let _ = writeln!(
                    out,
                    "created a signing secret in {}",
                    data_dir.join(crate::http::auth::SECRET_FILE).display()
                );
            }
            let _ = writeln!(
                out,
                "mint a token with: feedgraph token --data-dir {} --org acme --sub alice --role admin",
                data_dir.display()
            );
            let _ = out.flush();
        }
        tracing::info!(addr = %server.addr, "listening");
        if let Err(e) = server.ready().await {
            server.shutdown();
            let _ = server.wait().await;
            return Err(e.into());
        }
        after_ready();
        server.wait().await?;
        tracing::info!("stopped; every acknowledged write is durable");
        Ok(())
    })
}
