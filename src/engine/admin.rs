//! Catalog changes: warehouses, channels and rules. Rare, so they are
//! serialized whole and applied to memory only after their commit.

use std::sync::Arc;

use super::{builtin_channels, Engine, EngineError};
use crate::domain::{Catalog, Channel, ChannelCode, Rule, Sku, Warehouse};
use crate::store::Op;

/// The declared world from the config file: applied at start where the store
/// does not have it yet (the store wins for rules ops changed since).
#[derive(Debug, Clone, Default)]
pub struct Seed {
    pub warehouses: Vec<Warehouse>,
    pub channels: Vec<Channel>,
    pub rules: Vec<Rule>,
}

/// Adds to `catalog` what `seed` (and the built-in channels) declare and it
/// lacks; returns the ops that store those additions.
pub(super) fn seed_ops(catalog: &mut Catalog, seed: Seed) -> Result<Vec<Op>, EngineError> {
    let mut ops = Vec::new();
    for w in seed.warehouses {
        let known = catalog
            .warehouse_index(&w.code)
            .map(|i| &catalog.warehouses[i]);
        if known != Some(&w) {
            catalog.upsert_warehouse(w.clone());
            ops.push(Op::Warehouse(w));
        }
    }
    for c in builtin_channels().chain(seed.channels) {
        let known = catalog.channel_index(&c.code).map(|i| &catalog.channels[i]);
        let builtin_present =
            known.is_some() && crate::domain::BUILTIN_CHANNELS.contains(&c.code.as_str());
        if known != Some(&c) && !(builtin_present && c.name == c.code.as_str()) {
            catalog.upsert_channel(c.clone());
            ops.push(Op::Channel(c));
        }
    }
    for r in seed.rules {
        catalog.check_rule(&r).map_err(|e| e.at("config"))?;
        let channel = r.channel.clone().expect("checked");
        if catalog.rule(&channel, r.sku.as_ref()).is_none() {
            catalog.put_rule(r.clone());
            ops.push(Op::PutRule(r));
        }
    }
    Ok(ops)
}

impl Engine {
    /// Commits `op` and, once durable, installs `next` as the catalog.
    async fn commit_catalog(&self, next: Catalog, op: Op) -> Result<(), EngineError> {
        self.inner
            .writer
            .enqueue(vec![op])
            .wait()
            .await
            .map_err(EngineError::Unavailable)?;
        *self
            .inner
            .catalog
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(())
    }

    pub async fn upsert_warehouse(&self, warehouse: Warehouse) -> Result<Warehouse, EngineError> {
        let _admin = self.inner.admin.lock().await;
        let mut next = (*self.catalog()).clone();
        next.upsert_warehouse(warehouse.clone());
        self.commit_catalog(next, Op::Warehouse(warehouse.clone()))
            .await?;
        Ok(warehouse)
    }

    pub async fn upsert_channel(&self, channel: Channel) -> Result<Channel, EngineError> {
        let _admin = self.inner.admin.lock().await;
        let mut next = (*self.catalog()).clone();
        next.upsert_channel(channel.clone());
        self.commit_catalog(next, Op::Channel(channel.clone()))
            .await?;
        Ok(channel)
    }

    /// Stores a rule (replacing the one for the same channel and SKU).
    pub async fn put_rule(&self, rule: Rule) -> Result<Rule, EngineError> {
        let _admin = self.inner.admin.lock().await;
        let mut next = (*self.catalog()).clone();
        next.check_rule(&rule)?;
        next.put_rule(rule.clone());
        self.commit_catalog(next, Op::PutRule(rule.clone())).await?;
        Ok(rule)
    }

    /// Deletes the rule of `channel` for `sku` (the default when None).
    pub async fn delete_rule(
        &self,
        channel: &ChannelCode,
        sku: Option<&Sku>,
    ) -> Result<Rule, EngineError> {
        let _admin = self.inner.admin.lock().await;
        let mut next = (*self.catalog()).clone();
        let Some(old) = next.delete_rule(channel, sku) else {
            return Err(EngineError::NotFound {
                what: "rule",
                code: match sku {
                    Some(s) => format!("{channel}/{s}"),
                    None => format!("{channel} (default)"),
                },
            });
        };
        self.commit_catalog(
            next,
            Op::DeleteRule {
                channel: channel.clone(),
                sku: sku.cloned(),
            },
        )
        .await?;
        Ok(old)
    }

    /// Rules of one channel, or of all when None.
    pub fn list_rules(&self, channel: Option<&ChannelCode>) -> Result<Vec<Rule>, EngineError> {
        let catalog = self.catalog();
        if let Some(c) = channel {
            self.check_channel(&catalog, c)?;
        }
        Ok(catalog
            .rules()
            .into_iter()
            .filter(|r| channel.is_none() || r.channel.as_ref() == channel)
            .collect())
    }
}
