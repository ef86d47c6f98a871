//! Odoo, the ERP: the JSON-RPC client, the outbox dispatcher that pushes
//! reservations to Odoo as sale orders (in order per reservation, with
//! backoff and a dead letter), and the reading of Odoo's stock counts.
//!
//! This module never changes stock: counts read from Odoo are handed to
//! [`crate::sync`], which applies them through the engine like any ERP
//! client of the gRPC API would.

mod dispatcher;
mod push;
mod rpc;
mod stock;

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::{ChannelCode, WarehouseCode};

pub use dispatcher::Dispatcher;
pub use push::{many2one_id, order_ref, PushError, Pusher};
pub use rpc::{OdooClient, RpcError};
pub use stock::{QuantTotals, StockReader};

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
    /// Odoo partner (customer) id that each channel's orders are sold to.
    #[serde(default)]
    pub partners: HashMap<String, i64>,
    /// Odoo warehouse per stockpool warehouse: its id (`1`) or its Odoo
    /// short code (`"EAST"`). Unlisted warehouses are looked up in Odoo by
    /// their stockpool code.
    #[serde(default)]
    pub warehouses: HashMap<String, WarehouseRef>,
    /// One request's timeout [default: 10000].
    pub timeout_ms: Option<u64>,
    /// Attempts before an entry is dead-lettered [default: 30: one to two
    /// hours of failures with the default backoff].
    pub max_attempts: Option<u32>,
    /// First retry delay, doubled per attempt [default: 1000].
    pub backoff_initial_ms: Option<u64>,
    /// Longest retry delay [default: 300000].
    pub backoff_max_ms: Option<u64>,
    /// Reservations pushed at the same time [default: 4].
    pub concurrency: Option<usize>,
    /// How often the outbox is looked at [default: 500].
    pub poll_ms: Option<u64>,
    /// Shared secret of the stock webhook; none: the webhook is off.
    pub webhook_secret: Option<String>,
    /// Seconds between stock reconciliations; 0 or none: off.
    pub reconcile_interval_s: Option<u64>,
    /// Whether a reconciliation corrects stockpool's on_hand to Odoo's
    /// count (otherwise it only logs and counts the drift) [default: false].
    #[serde(default)]
    pub reconcile_correct: bool,
}

/// How a stockpool warehouse is found in Odoo.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum WarehouseRef {
    /// The `stock.warehouse` id.
    Id(i64),
    /// The `stock.warehouse` short code.
    Code(String),
}

/// The resolved Odoo configuration.
#[derive(Clone)]
pub struct OdooConfig {
    pub url: String,
    pub database: String,
    pub login: String,
    pub api_key: String,
    pub partners: HashMap<ChannelCode, i64>,
    pub warehouses: HashMap<WarehouseCode, WarehouseRef>,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub concurrency: usize,
    pub poll: Duration,
    pub webhook_secret: Option<String>,
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
            .field("partners", &self.partners)
            .field("warehouses", &self.warehouses)
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
        let mut partners = HashMap::new();
        for (code, id) in &s.partners {
            let channel = ChannelCode::parse(code.as_str())
                .map_err(|e| anyhow::anyhow!("odoo.partners.{code}: {e}"))?;
            if *id <= 0 {
                anyhow::bail!("odoo.partners.{code}: {id} is not an Odoo record id");
            }
            partners.insert(channel, *id);
        }
        let mut warehouses = HashMap::new();
        for (code, r) in &s.warehouses {
            let warehouse = WarehouseCode::parse(code.as_str())
                .map_err(|e| anyhow::anyhow!("odoo.warehouses.{code}: {e}"))?;
            match r {
                WarehouseRef::Id(id) if *id <= 0 => {
                    anyhow::bail!("odoo.warehouses.{code}: {id} is not an Odoo record id")
                }
                WarehouseRef::Code(c) if c.trim().is_empty() => {
                    anyhow::bail!("odoo.warehouses.{code}: the Odoo code is empty")
                }
                _ => {}
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
        Ok(OdooConfig {
            url,
            database: s.database.clone(),
            login: s.login.clone(),
            api_key,
            partners,
            warehouses,
            timeout: Duration::from_millis(s.timeout_ms.unwrap_or(10_000).max(1)),
            max_attempts,
            backoff_initial,
            backoff_max,
            concurrency: s.concurrency.unwrap_or(4).clamp(1, 64),
            poll: Duration::from_millis(s.poll_ms.unwrap_or(500).max(10)),
            webhook_secret: s.webhook_secret.clone(),
            reconcile_every: s
                .reconcile_interval_s
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            reconcile_correct: s.reconcile_correct,
        })
    }

    /// A configuration for tests against a fake Odoo at `url`.
    pub fn for_tests(url: &str, database: &str, login: &str, api_key: &str) -> OdooConfig {
        OdooConfig {
            url: url.trim_end_matches('/').to_string(),
            database: database.to_string(),
            login: login.to_string(),
            api_key: api_key.to_string(),
            partners: HashMap::new(),
            warehouses: HashMap::new(),
            timeout: Duration::from_secs(2),
            max_attempts: 5,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            concurrency: 4,
            poll: Duration::from_millis(20),
            webhook_secret: None,
            reconcile_every: None,
            reconcile_correct: false,
        }
    }
}
