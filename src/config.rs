//! Configuration: command-line flags (also read from `STOCKPOOL_*`
//! environment variables) over an optional TOML file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::api::{Role, Tokens};
use crate::domain::{check_text, Channel, ChannelCode, Rule, TextKind, Warehouse, WarehouseCode};
use crate::engine::Seed;
use crate::listen::{Limits, TlsFiles};
use crate::odoo::OdooConfig;
use crate::publish::redis::RedisConfig;
use crate::store::LeaseTimings;

/// Flags of `stockpool serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML file declaring warehouses, channels, default rules and tokens.
    #[arg(long, env = "STOCKPOOL_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "STOCKPOOL_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP listen address for /healthz and /readyz [default: 127.0.0.1:9464].
    #[arg(long, env = "STOCKPOOL_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Database URL; none: an embedded SQLite file in --data-dir.
    #[arg(long, env = "STOCKPOOL_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis URL (redis://host[:port][/db]) for the mirror of pools and
    /// published levels and the level-change streams; none: no Redis.
    #[arg(long, env = "STOCKPOOL_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Where the embedded SQLite file lives [default: ./data].
    #[arg(long, env = "STOCKPOOL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PEM certificate chain: serve gRPC and HTTP over TLS (with --tls-key;
    /// both files are read again on SIGHUP).
    #[arg(long, env = "STOCKPOOL_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STOCKPOOL_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Seconds shutdown waits for requests in flight before it closes the
    /// connections still open [default: 10].
    #[arg(long, env = "STOCKPOOL_SHUTDOWN_GRACE", value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,
    /// Log format: text or json.
    #[arg(long, env = "STOCKPOOL_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    warehouses: Vec<NamedCode>,
    #[serde(default)]
    channels: Vec<NamedCode>,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    /// The ERP connection; none: reservations are not pushed anywhere.
    odoo: Option<crate::odoo::OdooSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    grpc_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    database_url: Option<String>,
    redis_url: Option<String>,
    /// Key prefix in Redis [default: stockpool].
    redis_prefix: Option<String>,
    /// Approximate length of each channel stream [default: 100000].
    redis_stream_maxlen: Option<u64>,
    data_dir: Option<PathBuf>,
    hold_sweep_ms: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    shutdown_grace_s: Option<u64>,
    /// Connections open at once per listener [default: 1024].
    max_connections: Option<usize>,
    /// Seconds a connection has for its TLS handshake and HTTP/2 preface or
    /// HTTP request headers [default: 10].
    handshake_timeout_s: Option<u64>,
    /// Seconds between HTTP/2 keepalive pings [default: 30].
    keepalive_interval_s: Option<u64>,
    /// Seconds a ping may go unanswered before the connection is closed
    /// [default: 20].
    keepalive_timeout_s: Option<u64>,
    /// High availability on Postgres: how long the active server's lease
    /// lasts past its last renewal, in ms [default: 5000].
    lease_ms: Option<u64>,
    /// How often the active server renews its lease, in ms [default: 1000].
    lease_renew_ms: Option<u64>,
    /// How often a standby looks whether it may take over, in ms
    /// [default: 250].
    standby_poll_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedCode {
    code: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token: String,
    role: String,
    /// For a `channel:<code>` token: read every channel's reservations,
    /// streams, figures and rules, not only its own [default: false].
    #[serde(default)]
    read_all_channels: bool,
}

/// Where state is kept.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Sqlite {
        data_dir: PathBuf,
    },
    /// A `postgres://` or `postgresql://` URL, which may hold a password.
    Postgres {
        url: String,
    },
}

/// By hand, so that a password in the URL never reaches a log line.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Sqlite { data_dir } => f
                .debug_struct("Sqlite")
                .field("data_dir", data_dir)
                .finish(),
            StoreConfig::Postgres { url } => f
                .debug_struct("Postgres")
                .field("url", &crate::store::redact_url(url))
                .finish(),
        }
    }
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub store: StoreConfig,
    pub seed: Seed,
    pub tokens: Tokens,
    /// How often lapsed holds are looked for.
    pub hold_sweep_ms: u64,
    /// The Redis mirror, when a URL is given.
    pub redis: Option<RedisConfig>,
    /// The Odoo connection, when the file has an `[odoo]` section.
    pub odoo: Option<OdooConfig>,
    /// Connection limits, timeouts and the shutdown grace of both listeners.
    pub listen: Limits,
    /// Serve both listeners over TLS with these files.
    pub tls: Option<TlsFiles>,
    /// On Postgres: the lease that elects the active server among those on
    /// one database.
    pub lease: LeaseTimings,
}

impl Config {
    /// Flags over the file over defaults; every problem is named.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let s = &file.server;
        let database_url = args.database_url.clone().or_else(|| s.database_url.clone());
        let data_dir = args
            .data_dir
            .clone()
            .or_else(|| s.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("data"));
        let store = match database_url.as_deref() {
            None | Some("") => StoreConfig::Sqlite { data_dir },
            Some(url) if url.starts_with("sqlite:") => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                StoreConfig::Sqlite {
                    data_dir: PathBuf::from(path),
                }
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                StoreConfig::Postgres {
                    url: url.to_string(),
                }
            }
            Some(url) => anyhow::bail!(
                "--database-url {}: only Postgres (postgres://USER@HOST/DB) and the embedded \
                 SQLite store (leave it unset, or give sqlite://DIR) are available",
                url.split('@').next_back().unwrap_or(url)
            ),
        };
        let redis = match args.redis_url.as_deref().or(s.redis_url.as_deref()) {
            None | Some("") => None,
            Some(url) => Some(RedisConfig::resolve(
                url,
                s.redis_prefix.clone(),
                s.redis_stream_maxlen,
            )?),
        };

        let odoo = file
            .odoo
            .as_ref()
            .map(|o| OdooConfig::resolve(o, std::env::var("STOCKPOOL_ODOO_API_KEY").ok()))
            .transpose()?;

        let mut seed = Seed::default();
        for (i, w) in file.warehouses.iter().enumerate() {
            let code = WarehouseCode::parse(w.code.as_str())
                .with_context(|| format!("warehouses[{i}]"))?;
            check_text("name", &w.name, TextKind::Line)
                .with_context(|| format!("warehouses[{i}]"))?;
            let name = if w.name.is_empty() {
                w.code.clone()
            } else {
                w.name.clone()
            };
            seed.warehouses.push(Warehouse { code, name });
        }
        for (i, c) in file.channels.iter().enumerate() {
            let code =
                ChannelCode::parse(c.code.as_str()).with_context(|| format!("channels[{i}]"))?;
            check_text("name", &c.name, TextKind::Line)
                .with_context(|| format!("channels[{i}]"))?;
            let name = if c.name.is_empty() {
                c.code.clone()
            } else {
                c.name.clone()
            };
            seed.channels.push(Channel { code, name });
        }
        for (i, r) in file.rules.iter().enumerate() {
            if r.channel.is_none() {
                anyhow::bail!("rules[{i}]: channel must be set");
            }
            seed.rules.push(r.clone());
        }
        let mut tokens = HashMap::new();
        let mut read_all = Vec::new();
        for (i, t) in file.tokens.iter().enumerate() {
            if t.token.len() < 16 {
                anyhow::bail!("tokens[{i}]: a token must be at least 16 characters long");
            }
            let role =
                Role::parse(&t.role).map_err(|e| anyhow::anyhow!("tokens[{i}].role: {e}"))?;
            if t.read_all_channels {
                if !matches!(role, Role::Channel(_)) {
                    anyhow::bail!(
                        "tokens[{i}].read_all_channels: only a channel:<code> token reads one channel; \
                         role {} already reads every channel",
                        t.role
                    );
                }
                read_all.push(t.token.clone());
            }
            if tokens.insert(t.token.clone(), role).is_some() {
                anyhow::bail!("tokens[{i}]: this token is configured twice");
            }
        }
        let mut tokens = Tokens::new(tokens);
        for token in &read_all {
            tokens.let_read_all_channels(token);
        }

        let grpc_addr = args
            .grpc_addr
            .or(s.grpc_addr)
            .unwrap_or_else(|| "127.0.0.1:50051".parse().expect("valid"));
        let http_addr = args
            .http_addr
            .or(s.http_addr)
            .unwrap_or_else(|| "127.0.0.1:9464".parse().expect("valid"));
        if tokens.is_empty() {
            for (flag, addr) in [("--grpc-addr", grpc_addr), ("--http-addr", http_addr)] {
                if !addr.ip().is_loopback() {
                    anyhow::bail!(
                        "{flag} {addr}: without tokens configured stockpool only listens on loopback; \
                         add [[tokens]] to the config file to listen on {}",
                        addr.ip()
                    );
                }
            }
        }
        let tls = match (
            args.tls_cert.clone().or_else(|| s.tls_cert.clone()),
            args.tls_key.clone().or_else(|| s.tls_key.clone()),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => anyhow::bail!("--tls-cert needs --tls-key (server.tls_key)"),
            (None, Some(_)) => anyhow::bail!("--tls-key needs --tls-cert (server.tls_cert)"),
        };
        let defaults = Limits::default();
        let seconds = |name: &str, v: Option<u64>, default: Duration| -> anyhow::Result<Duration> {
            match v {
                Some(0) => anyhow::bail!("server.{name}: must be at least 1 second"),
                Some(v) => Ok(Duration::from_secs(v)),
                None => Ok(default),
            }
        };
        let listen = Limits {
            max_connections: match s.max_connections {
                Some(0) => anyhow::bail!("server.max_connections: must be at least 1"),
                Some(n) => n,
                None => defaults.max_connections,
            },
            handshake_timeout: seconds(
                "handshake_timeout_s",
                s.handshake_timeout_s,
                defaults.handshake_timeout,
            )?,
            keepalive_interval: seconds(
                "keepalive_interval_s",
                s.keepalive_interval_s,
                defaults.keepalive_interval,
            )?,
            keepalive_timeout: seconds(
                "keepalive_timeout_s",
                s.keepalive_timeout_s,
                defaults.keepalive_timeout,
            )?,
            shutdown_grace: args
                .shutdown_grace
                .or(s.shutdown_grace_s)
                .map_or(defaults.shutdown_grace, Duration::from_secs),
        };
        let lease_defaults = LeaseTimings::default();
        let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
        let lease = LeaseTimings {
            ttl: ms(s.lease_ms, lease_defaults.ttl),
            renew_every: ms(s.lease_renew_ms, lease_defaults.renew_every),
            poll_every: ms(s.standby_poll_ms, lease_defaults.poll_every),
        };
        lease.check().map_err(|e| {
            anyhow::anyhow!("server.lease_ms, lease_renew_ms, standby_poll_ms: {e}")
        })?;
        Ok(Config {
            grpc_addr,
            http_addr,
            store,
            seed,
            tokens,
            hold_sweep_ms: s.hold_sweep_ms.unwrap_or(500).max(10),
            redis,
            odoo,
            listen,
            tls,
            lease,
        })
    }

    /// A configuration for tests and benches: SQLite in `data_dir`, both
    /// listeners on loopback port 0.
    pub fn for_tests(data_dir: &Path) -> Config {
        Config {
            grpc_addr: "127.0.0.1:0".parse().expect("valid"),
            http_addr: "127.0.0.1:0".parse().expect("valid"),
            store: StoreConfig::Sqlite {
                data_dir: data_dir.to_path_buf(),
            },
            seed: Seed::default(),
            tokens: Tokens::default(),
            hold_sweep_ms: 50,
            redis: None,
            odoo: None,
            listen: Limits::default(),
            tls: None,
            lease: LeaseTimings::default(),
        }
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_of(url: &str) -> anyhow::Result<StoreConfig> {
        let args = ServeArgs {
            database_url: Some(url.to_string()),
            ..ServeArgs::default()
        };
        Config::resolve(&args).map(|c| c.store)
    }

    #[test]
    fn a_postgres_url_selects_the_postgres_store_and_its_password_is_never_printed() {
        for url in [
            "postgres://app:s3cret@db/stock",
            "postgresql://app:s3cret@db/stock",
        ] {
            let store = store_of(url).unwrap();
            assert_eq!(
                store,
                StoreConfig::Postgres {
                    url: url.to_string()
                }
            );
            let shown = format!("{store:?}");
            assert!(
                !shown.contains("s3cret") && shown.contains("app:***@db/stock"),
                "{shown}"
            );
        }
    }

    fn odoo_of(section: &str) -> anyhow::Result<OdooConfig> {
        let file: FileConfig = toml::from_str(section)?;
        OdooConfig::resolve(file.odoo.as_ref().expect("an [odoo] section"), None)
    }

    const ODOO: &str = r#"
        [odoo]
        url = "https://shop.example.com/"
        database = "shop"
        login = "stockpool@example.com"
        api_key = "k"
        partners = { shopify = 7 }
        warehouses = { WH-EAST = 1, WH-WEST = "WEST" }
    "#;

    #[test]
    fn an_odoo_section_maps_channels_to_partners_and_warehouses_by_id_or_code() {
        let odoo = odoo_of(ODOO).unwrap();
        assert_eq!(odoo.url, "https://shop.example.com");
        assert_eq!(
            odoo.channel(&ChannelCode::parse("shopify").unwrap())
                .partner,
            Some(7)
        );
        let wh = |c: &str| WarehouseCode::parse(c).unwrap();
        assert_eq!(
            odoo.warehouses[&wh("WH-EAST")],
            crate::odoo::WarehouseRef::Id(1)
        );
        assert_eq!(
            odoo.warehouses[&wh("WH-WEST")],
            crate::odoo::WarehouseRef::Code("WEST".into())
        );
        assert!(!format!("{odoo:?}").contains("api_key: \"k\""));
    }

    #[test]
    fn a_wrong_odoo_section_is_refused_with_the_field_named() {
        for (change, field) in [
            (
                (
                    "url = \"https://shop.example.com/\"",
                    "url = \"shop.example.com\"",
                ),
                "odoo.url",
            ),
            (("api_key = \"k\"", ""), "odoo.api_key"),
            (("shopify = 7", "shopify = 0"), "odoo.partners.shopify"),
            (
                (
                    "api_key = \"k\"",
                    "api_key = \"k\"\nwebhook_secret = \"short\"",
                ),
                "odoo.webhook_secret",
            ),
            (
                ("api_key = \"k\"", "api_key = \"k\"\nmax_attempts = 0"),
                "odoo.max_attempts",
            ),
        ] {
            let text = ODOO.replace(change.0, change.1);
            let err = odoo_of(&text).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let err = odoo_of(&ODOO.replace("database", "databse")).unwrap_err();
        assert!(format!("{err:#}").contains("databse"), "{err:#}");
    }

    #[test]
    fn odoo_channel_settings_name_the_books_records_of_each_channel() {
        let odoo = odoo_of(&format!(
            "{ODOO}\n[odoo.channels.amazon]\npartner = 43\nfiscal_position = 5\npricelists = {{ EUR = 1, USD = 2 }}\nteam = 3\ncompany = 1\n\n[odoo.channels.b2b]\ncustomers = {{ \"ACME-001\" = 77 }}\ncustomers_by_ref = false\n"
        ))
        .unwrap();
        let amazon = odoo.channel(&ChannelCode::parse("amazon").unwrap());
        assert_eq!(
            (
                amazon.partner,
                amazon.fiscal_position,
                amazon.team,
                amazon.company
            ),
            (Some(43), Some(5), Some(3), Some(1))
        );
        let usd = crate::domain::Currency::parse("c", "USD").unwrap();
        assert_eq!(amazon.pricelists[&usd], 2);
        assert!(amazon.customers_by_ref, "by reference unless turned off");
        let b2b = odoo.channel(&ChannelCode::parse("b2b").unwrap());
        let acme = crate::domain::CustomerRef::parse("c", "ACME-001").unwrap();
        assert_eq!((b2b.customers[&acme], b2b.customers_by_ref), (77, false));
        assert_eq!(odoo.stock_master, crate::domain::StockMaster::Erp);
        assert!(odoo.reconcile_correct, "Odoo is the master: correct to it");
        let off =
            odoo_of(&ODOO.replace("api_key = \"k\"", "api_key = \"k\"\nstock_master = false"))
                .unwrap();
        assert_eq!(off.stock_master, crate::domain::StockMaster::Stockpool);
        assert!(!off.reconcile_correct);
    }

    #[test]
    fn a_wrong_odoo_channel_setting_is_refused_with_the_setting_named() {
        for (extra, field) in [
            (
                "[odoo.channels.shopify]\npartner = 8",
                "odoo.channels.shopify.partner: 8 differs from odoo.partners.shopify",
            ),
            (
                "[odoo.channels.amazon]\nfiscal_position = -1",
                "odoo.channels.amazon.fiscal_position: -1 is not an Odoo record id",
            ),
            (
                "[odoo.channels.amazon]\npricelists = { euro = 1 }",
                "odoo.channels.amazon.pricelists.euro",
            ),
            (
                "[odoo.channels.b2b]\ncustomers = { \" x\" = 1 }",
                "starts or ends with a space",
            ),
            ("[odoo.channels.b2b]\nteams = 1", "teams"),
        ] {
            let err = format!("{:#}", odoo_of(&format!("{ODOO}\n{extra}\n")).unwrap_err());
            assert!(err.contains(field), "{field}: {err}");
        }
        let long = ODOO.replace("WH-WEST = \"WEST\"", "WH-WEST = \"WESTERN\"");
        let err = odoo_of(&long).unwrap_err().to_string();
        assert!(
            err.contains("odoo.warehouses.WH-WEST: \"WESTERN\" is longer than the 5 characters"),
            "{err}"
        );
    }

    #[test]
    fn the_commented_odoo_example_in_the_sample_config_is_valid_once_uncommented() {
        let sample = include_str!("../examples/stockpool.toml");
        let start = sample
            .find("# [odoo]")
            .expect("the sample has an odoo section");
        let section: String = sample[start..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let file: FileConfig = toml::from_str(&section).unwrap();
        let odoo = OdooConfig::resolve(file.odoo.as_ref().unwrap(), Some("key".into())).unwrap();
        assert_eq!(odoo.channels.len(), 3);
        assert_eq!(odoo.max_attempts, 30);
        assert_eq!(
            odoo.reconcile_every,
            Some(std::time::Duration::from_secs(900))
        );
    }

    #[test]
    fn another_scheme_is_refused_without_showing_credentials() {
        let err = store_of("mysql://app:s3cret@db/stock")
            .unwrap_err()
            .to_string();
        assert!(err.contains("db/stock") && !err.contains("s3cret"), "{err}");
    }
}
