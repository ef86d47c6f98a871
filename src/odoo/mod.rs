//! Odoo, the ERP, both directions: the JSON-RPC client; the start-up
//! check of what the configuration names in Odoo; the outbox dispatcher
//! that pushes reservations as priced sale orders (in order per
//! reservation, with backoff, a dead letter for what no retry can fix, and
//! a second look for duplicates); and the inbound side, which follows
//! Odoo's deliveries and counts through the webhook and the reconciliation.
//!
//! This module changes stock only through the engine's public API
//! ([`crate::engine::Engine::follow_erp`], `set_stock`); the engine knows
//! nothing of JSON-RPC.

mod dispatcher;
mod inbound;
mod push;
mod rpc;
mod setup;
mod stock;
mod webhook;

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::{ChannelCode, Currency, CustomerRef, StockMaster, WarehouseCode};

pub use dispatcher::Dispatcher;
pub use inbound::{Correction, Drift, Inbound, Notice, SyncError};
pub use push::{many2one_id, order_ref, PushError, Pushed, Pusher};
pub use rpc::{OdooClient, RpcError};
pub use setup::OdooWarehouse;
pub use setup::{Setup, SetupError, MAX_WAREHOUSE_CODE};
pub use stock::{whole_units, QuantTotals, StockReader};
pub use webhook::routes;

/// The `[odoo]` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdooSection {
    /// The Odoo base URL, e.g. `https://mycompany.odoo.com`.
    pub url: String,
    /// The Odoo database name.
    pub database: String,
    /// The login (email) of the user stockpool acts as.
    pub login: String,
    /// That user's API key; prefer `STOCKPOOL_ODOO_API_KEY` in the
    /// environment over writing it in the file.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Odoo partner (customer) id that each channel's orders are sold to;
    /// the same as `channels.<code>.partner`.
    #[serde(default)]
    pub partners: HashMap<String, i64>,
    /// What each channel's sale orders carry in Odoo besides their lines.
    #[serde(default)]
    pub channels: HashMap<String, ChannelSection>,
    /// Odoo warehouse per stockpool warehouse: its id (`1`) or its Odoo
    /// short name (`"EAST"`, at most 5 characters). Unlisted warehouses are
    /// looked up in Odoo by their stockpool code.
    #[serde(default)]
    pub warehouses: HashMap<String, WarehouseRef>,
    /// Odoo is the master of physical stock: deliveries, returns and counts
    /// happen in Odoo and stockpool follows them [default: true].
    pub stock_master: Option<bool>,
    /// One request's timeout [default: 10000].
    pub timeout_ms: Option<u64>,
    /// Attempts before an entry is dead-lettered when Odoo keeps failing
    /// (unreachable, 5xx, timeouts); a refusal by Odoo itself is
    /// dead-lettered at once [default: 30].
    pub max_attempts: Option<u32>,
    /// First retry delay, doubled per attempt [default: 1000].
    pub backoff_initial_ms: Option<u64>,
    /// Longest retry delay [default: 300000].
    pub backoff_max_ms: Option<u64>,
    /// Reservations pushed at the same time [default: 4].
    pub concurrency: Option<usize>,
    /// How often the outbox is looked at [default: 500].
    pub poll_ms: Option<u64>,
    /// After a sale order was created on a retry (an earlier attempt got no
    /// answer and may still commit), look again for a duplicate this long
    /// after [default: 130, beyond Odoo's default 120 s request limit].
    pub duplicate_check_s: Option<u64>,
    /// Shared secret of the stock webhook; none: the webhook is off.
    pub webhook_secret: Option<String>,
    /// Odoo calls the webhook before it commits: read Odoo this long after a
    /// notification [default: 1000].
    pub webhook_delay_ms: Option<u64>,
    /// ...and once more this long after it, for a slow commit [default: 10000].
    pub webhook_recheck_ms: Option<u64>,
    /// Seconds between stock reconciliations; 0 or none: off.
    pub reconcile_interval_s: Option<u64>,
    /// Whether a reconciliation corrects stockpool to Odoo (otherwise it
    /// only logs and counts the drift) [default: stock_master].
    pub reconcile_correct: Option<bool>,
}

/// `[odoo.channels.<code>]`: the books' side of one channel's orders.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSection {
    /// The Odoo contact the channel's orders are sold to when the customer
    /// is not found.
    pub partner: Option<i64>,
    /// Fiscal position of the channel's orders (e.g. Amazon's marketplace
    /// facilitator taxes); a customer's own fiscal position wins.
    pub fiscal_position: Option<i64>,
    /// Pricelist of the channel's orders; its currency must be the order's.
    pub pricelist: Option<i64>,
    /// Pricelist per currency (`{ EUR = 1, USD = 2 }`), for a channel that
    /// sells in several.
    #[serde(default)]
    pub pricelists: HashMap<String, i64>,
    /// Sales team (`crm.team`) of the channel's orders.
    pub team: Option<i64>,
    /// Company of the channel's orders (multi-company databases).
    pub company: Option<i64>,
    /// Odoo contact per `customer_ref`, for customers whose Odoo
    /// Reference differs from the channel's id.
    #[serde(default)]
    pub customers: HashMap<String, i64>,
    /// Look a `customer_ref` up as an Odoo contact's Reference (`ref`)
    /// [default: true].
    pub customers_by_ref: Option<bool>,
}

/// How a stockpool warehouse is found in Odoo.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum WarehouseRef {
    /// The `stock.warehouse` id.
    Id(i64),
    /// The `stock.warehouse` short name (`code`, at most 5 characters).
    Code(String),
}

/// One channel's resolved Odoo settings; by default no partner and
/// customers found by reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOdoo {
    pub partner: Option<i64>,
    pub fiscal_position: Option<i64>,
    pub pricelist: Option<i64>,
    pub pricelists: HashMap<Currency, i64>,
    pub team: Option<i64>,
    pub company: Option<i64>,
    pub customers: HashMap<CustomerRef, i64>,
    pub customers_by_ref: bool,
}

impl Default for ChannelOdoo {
    fn default() -> ChannelOdoo {
        ChannelOdoo {
            partner: None,
            fiscal_position: None,
            pricelist: None,
            pricelists: HashMap::new(),
            team: None,
            company: None,
            customers: HashMap::new(),
            customers_by_ref: true,
        }
    }
}

/// The resolved Odoo configuration.
#[derive(Clone)]
pub struct OdooConfig {
    pub url: String,
    pub database: String,
    pub login: String,
    pub api_key: String,
    /// Per channel; a channel not listed has no partner (its orders are
    /// dead-lettered) and finds customers by reference.
    pub channels: HashMap<ChannelCode, ChannelOdoo>,
    pub warehouses: HashMap<WarehouseCode, WarehouseRef>,
    pub stock_master: StockMaster,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub concurrency: usize,
    pub poll: Duration,
    pub duplicate_check: Duration,
    pub webhook_secret: Option<String>,
    pub webhook_delay: Duration,
    pub webhook_recheck: Duration,
    pub reconcile_every: Option<Duration>,
    pub reconcile_correct: bool,
}

/// By hand: the API key and the webhook secret never reach a log line.
impl std::fmt::Debug for OdooConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OdooConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("login", &self.login)
            .field("api_key", &"***")
            .field("channels", &self.channels)
            .field("warehouses", &self.warehouses)
            .field("stock_master", &self.stock_master)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "***"),
            )
            .field("reconcile_every", &self.reconcile_every)
            .field("reconcile_correct", &self.reconcile_correct)
            .finish_non_exhaustive()
    }
}

fn record_id(field: &str, id: i64) -> anyhow::Result<i64> {
    if id <= 0 {
        anyhow::bail!("{field}: {id} is not an Odoo record id");
    }
    Ok(id)
}

fn channel_settings(code: &str, s: &ChannelSection, into: &mut ChannelOdoo) -> anyhow::Result<()> {
    let at = |f: &str| format!("odoo.channels.{code}.{f}");
    if let Some(p) = s.partner {
        let p = record_id(&at("partner"), p)?;
        if into.partner.is_some_and(|q| q != p) {
            anyhow::bail!(
                "{}: {p} differs from odoo.partners.{code}; give the partner once",
                at("partner")
            );
        }
        into.partner = Some(p);
    }
    into.fiscal_position = s
        .fiscal_position
        .map(|id| record_id(&at("fiscal_position"), id))
        .transpose()?;
    into.pricelist = s
        .pricelist
        .map(|id| record_id(&at("pricelist"), id))
        .transpose()?;
    for (currency, id) in &s.pricelists {
        let field = at(&format!("pricelists.{currency}"));
        let c = Currency::parse(&field, currency).map_err(|e| anyhow::anyhow!("{e}"))?;
        into.pricelists.insert(c, record_id(&field, *id)?);
    }
    into.team = s.team.map(|id| record_id(&at("team"), id)).transpose()?;
    into.company = s
        .company
        .map(|id| record_id(&at("company"), id))
        .transpose()?;
    for (customer, id) in &s.customers {
        let field = at(&format!("customers.{customer:?}"));
        let c = CustomerRef::parse(&field, customer).map_err(|e| anyhow::anyhow!("{e}"))?;
        into.customers.insert(c, record_id(&field, *id)?);
    }
    into.customers_by_ref = s.customers_by_ref.unwrap_or(true);
    Ok(())
}

impl OdooConfig {
    /// Checks the section; `env_api_key` (from `STOCKPOOL_ODOO_API_KEY`)
    /// wins over the file. Every problem is named.
    pub fn resolve(s: &OdooSection, env_api_key: Option<String>) -> anyhow::Result<OdooConfig> {
        let url = s.url.trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            anyhow::bail!("odoo.url {:?}: must start with http:// or https://", s.url);
        }
        url.parse::<hyper::Uri>()
            .map_err(|e| anyhow::anyhow!("odoo.url {:?}: {e}", s.url))?;
        for (field, value) in [("database", &s.database), ("login", &s.login)] {
            if value.trim().is_empty() {
                anyhow::bail!("odoo.{field} must be set");
            }
        }
        let api_key = env_api_key
            .filter(|k| !k.is_empty())
            .or_else(|| s.api_key.clone())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "odoo.api_key is not set: give it in STOCKPOOL_ODOO_API_KEY (preferred) or in the file"
                )
            })?;
        let mut channels: HashMap<ChannelCode, ChannelOdoo> = HashMap::new();
        for (code, id) in &s.partners {
            let channel = ChannelCode::parse(code.as_str())
                .map_err(|e| anyhow::anyhow!("odoo.partners.{code}: {e}"))?;
            let id = record_id(&format!("odoo.partners.{code}"), *id)?;
            channels.entry(channel).or_default().partner = Some(id);
        }
        for (code, section) in &s.channels {
            let channel = ChannelCode::parse(code.as_str())
                .map_err(|e| anyhow::anyhow!("odoo.channels.{code}: {e}"))?;
            let entry = channels.entry(channel).or_default();
            channel_settings(code, section, entry)?;
        }
        let mut warehouses = HashMap::new();
        for (code, r) in &s.warehouses {
            let warehouse = WarehouseCode::parse(code.as_str())
                .map_err(|e| anyhow::anyhow!("odoo.warehouses.{code}: {e}"))?;
            match r {
                WarehouseRef::Id(id) => {
                    record_id(&format!("odoo.warehouses.{code}"), *id)?;
                }
                WarehouseRef::Code(c) if c.trim().is_empty() => {
                    anyhow::bail!("odoo.warehouses.{code}: the Odoo short name is empty")
                }
                WarehouseRef::Code(c) if c.chars().count() > MAX_WAREHOUSE_CODE => {
                    anyhow::bail!(
                        "odoo.warehouses.{code}: {c:?} is longer than the {MAX_WAREHOUSE_CODE} characters of an Odoo warehouse short name; give the short name shown in Inventory > Configuration > Warehouses, or the warehouse's id"
                    )
                }
                WarehouseRef::Code(_) => {}
            }
            warehouses.insert(warehouse, r.clone());
        }
        if let Some(secret) = &s.webhook_secret {
            if secret.len() < 16 {
                anyhow::bail!("odoo.webhook_secret must be at least 16 characters long");
            }
        }
        let max_attempts = s.max_attempts.unwrap_or(30);
        if max_attempts == 0 {
            anyhow::bail!("odoo.max_attempts must be at least 1");
        }
        let backoff_initial = Duration::from_millis(s.backoff_initial_ms.unwrap_or(1000).max(1));
        let backoff_max = Duration::from_millis(s.backoff_max_ms.unwrap_or(300_000));
        if backoff_max < backoff_initial {
            anyhow::bail!("odoo.backoff_max_ms must not be below odoo.backoff_initial_ms");
        }
        let webhook_delay = Duration::from_millis(s.webhook_delay_ms.unwrap_or(1000));
        let webhook_recheck = Duration::from_millis(s.webhook_recheck_ms.unwrap_or(10_000));
        if webhook_recheck < webhook_delay {
            anyhow::bail!("odoo.webhook_recheck_ms must not be below odoo.webhook_delay_ms");
        }
        let master = s.stock_master.unwrap_or(true);
        Ok(OdooConfig {
            url,
            database: s.database.clone(),
            login: s.login.clone(),
            api_key,
            channels,
            warehouses,
            stock_master: if master {
                StockMaster::Erp
            } else {
                StockMaster::Stockpool
            },
            timeout: Duration::from_millis(s.timeout_ms.unwrap_or(10_000).max(1)),
            max_attempts,
            backoff_initial,
            backoff_max,
            concurrency: s.concurrency.unwrap_or(4).clamp(1, 64),
            poll: Duration::from_millis(s.poll_ms.unwrap_or(500).max(10)),
            duplicate_check: Duration::from_secs(s.duplicate_check_s.unwrap_or(130)),
            webhook_secret: s.webhook_secret.clone(),
            webhook_delay,
            webhook_recheck,
            reconcile_every: s
                .reconcile_interval_s
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            reconcile_correct: s.reconcile_correct.unwrap_or(master),
        })
    }

    /// A configuration for tests against a fake Odoo at `url`: fast
    /// timeouts and retries, Odoo as master, no channel settings.
    pub fn for_tests(url: &str, database: &str, login: &str, api_key: &str) -> OdooConfig {
        OdooConfig {
            url: url.trim_end_matches('/').to_string(),
            database: database.to_string(),
            login: login.to_string(),
            api_key: api_key.to_string(),
            channels: HashMap::new(),
            warehouses: HashMap::new(),
            stock_master: StockMaster::Erp,
            timeout: Duration::from_secs(2),
            max_attempts: 5,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            concurrency: 4,
            poll: Duration::from_millis(20),
            duplicate_check: Duration::from_millis(500),
            webhook_secret: None,
            webhook_delay: Duration::from_millis(50),
            webhook_recheck: Duration::from_millis(400),
            reconcile_every: None,
            reconcile_correct: true,
        }
    }

    /// The settings of `channel` (defaults when it has none).
    pub fn channel(&self, channel: &ChannelCode) -> ChannelOdoo {
        self.channels.get(channel).cloned().unwrap_or_default()
    }

    /// Sets a channel's partner (tests and the sample config).
    pub fn set_partner(&mut self, channel: ChannelCode, partner: i64) {
        self.channels.entry(channel).or_default().partner = Some(partner);
    }

    /// The settings of `channel`, to change (created with defaults).
    pub fn channel_mut(&mut self, channel: ChannelCode) -> &mut ChannelOdoo {
        self.channels.entry(channel).or_default()
    }
}

/// The Odoo connection of a server: checked when the server is built,
/// started when it runs.
pub struct Connector {
    config: OdooConfig,
    pusher: std::sync::Arc<Pusher>,
    inbound: std::sync::Arc<Inbound>,
}

impl Connector {
    /// Checks the configuration: warehouse codes that can never match an
    /// Odoo short name, then, when Odoo answers, every record it names. A
    /// problem stops the start, naming the setting. When Odoo does not
    /// answer, the start goes on (a reservation never waits for Odoo) and
    /// the check runs again before the first push. Turns on the outbox and,
    /// unless `stock_master = false`, Odoo as the master of physical stock.
    pub async fn prepare(
        config: &OdooConfig,
        engine: &crate::engine::Engine,
    ) -> anyhow::Result<Connector> {
        Self::prepare_with(config, engine, true).await
    }

    /// [`Self::prepare`] for a standby taking over: the same local checks,
    /// but Odoo is not waited for (a failover does not wait on the ERP); its
    /// setup is checked before the first push instead.
    pub async fn prepare_at_takeover(
        config: &OdooConfig,
        engine: &crate::engine::Engine,
    ) -> anyhow::Result<Connector> {
        Self::prepare_with(config, engine, false).await
    }

    async fn prepare_with(
        config: &OdooConfig,
        engine: &crate::engine::Engine,
        ask_odoo: bool,
    ) -> anyhow::Result<Connector> {
        let declared: Vec<WarehouseCode> = engine
            .catalog()
            .warehouses
            .iter()
            .map(|w| w.code.clone())
            .collect();
        setup::check_codes(config, &declared).map_err(|e| anyhow::anyhow!("{e}"))?;
        for channel in &engine.catalog().channels {
            if config.channel(&channel.code).partner.is_none() {
                tracing::warn!(channel = %channel.code, "no Odoo partner configured for this channel: its reservations will be dead-lettered until odoo.channels.{}.partner is set", channel.code);
            }
        }
        let pusher = std::sync::Arc::new(Pusher::new(config, declared)?);
        let budget = config.timeout.saturating_mul(3);
        if ask_odoo {
            match tokio::time::timeout(budget, pusher.setup()).await {
                Ok(Ok(setup)) => tracing::info!(
                    warehouses = setup.warehouses.len(),
                    absent = setup.absent.len(),
                    channels = config.channels.len(),
                    "the Odoo configuration matches Odoo"
                ),
                Ok(Err(SetupError::Config(problems))) => {
                    anyhow::bail!("the [odoo] configuration does not match Odoo:\n{problems}")
                }
                Ok(Err(SetupError::Unreachable(e))) if e.is_permanent() || matches!(e, RpcError::Login { .. }) => {
                    anyhow::bail!("checking the [odoo] configuration: {e}")
                }
                Ok(Err(SetupError::Unreachable(e))) => tracing::warn!(error = %e, "Odoo did not answer at start; the [odoo] configuration is checked before the first push"),
                Err(_) => tracing::warn!(timeout_ms = budget.as_millis() as u64, "Odoo did not answer at start; the [odoo] configuration is checked before the first push"),
            }
        }
        engine.set_stock_master(config.stock_master);
        engine.enable_outbox();
        let inbound = std::sync::Arc::new(Inbound::new(
            engine.clone(),
            StockReader::new(pusher.clone()),
            config,
        ));
        Ok(Connector {
            config: config.clone(),
            pusher,
            inbound,
        })
    }

    /// The inbound side (tests look inside: [`Inbound::idle`]).
    pub fn inbound(&self) -> std::sync::Arc<Inbound> {
        self.inbound.clone()
    }

    /// Starts the outbox dispatcher, the reads after Odoo's notifications
    /// and, when configured, the reconciliation; returns the webhook's
    /// routes and the tasks, which end when `stop` turns true.
    /// Starts pushing and reading. `predecessor_until`: until when the
    /// previous active server may still push (see
    /// [`crate::store::lease::Lease::predecessor_until`]); the first push
    /// waits past it and one request timeout more, so a push of its still
    /// in flight is not made twice.
    pub fn start(
        self,
        engine: &crate::engine::Engine,
        predecessor_until: Option<std::time::Instant>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> (axum::Router, Vec<tokio::task::JoinHandle<()>>) {
        let Connector {
            config,
            pusher,
            inbound,
        } = self;
        let mut tasks = vec![tokio::spawn(
            Dispatcher::new(engine.clone(), pusher, &config)
                .run(predecessor_until.map(|t| t + config.timeout), stop.clone()),
        )];
        tasks.push(tokio::spawn(inbound.clone().run(stop.clone())));
        if let Some(every) = config.reconcile_every {
            tasks.push(tokio::spawn(
                inbound.clone().run_reconciliation(every, stop.clone()),
            ));
        }
        tracing::info!(url = %config.url, database = %config.database, stock_master = ?config.stock_master, webhook = inbound.webhook_enabled(), reconcile = ?config.reconcile_every, "connected to Odoo");
        (routes(inbound), tasks)
    }
}
