//! Catalog changes: warehouses, channels and rules. Rare, so they are
//! serialized whole and applied to memory only after their commit.

use std::sync::Arc;

use super::{builtin_channels, Changed, Engine, EngineError};
use crate::domain::{levels, Catalog, Channel, ChannelCode, Rule, Sku, Warehouse};
use crate::store::{Op, RuleChange};

/// A figure that proposed rules would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedChange {
    pub sku: Sku,
    pub channel: ChannelCode,
    pub atp_before: i64,
    pub atp_after: i64,
    pub published_before: i64,
    pub published_after: i64,
}

/// The declared world from the config file: applied at start where the store
/// does not have it yet (the store wins for rules ops changed since).
#[derive(Debug, Clone, Default)]
pub struct Seed {
    pub warehouses: Vec<Warehouse>,
    pub channels: Vec<Channel>,
    pub rules: Vec<Rule>,
}

/// Adds to `catalog` what `seed` (and the built-in channels) declare and it
/// lacks; returns the ops that store those additions, a seeded rule with its
/// history entry (by `config`, at `now_ms`).
pub(super) fn seed_ops(
    catalog: &mut Catalog,
    seed: Seed,
    now_ms: i64,
) -> Result<Vec<Op>, EngineError> {
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
            ops.push(Op::RuleChange(Box::new(RuleChange {
                at_ms: now_ms,
                changed_by: "config".to_string(),
                comment: "seeded from the config file".to_string(),
                channel,
                sku: r.sku.clone(),
                before: None,
                after: Some(r.clone()),
            })));
            ops.push(Op::PutRule(r));
        }
    }
    Ok(ops)
}

impl Engine {
    /// Commits `op` and, once durable, installs `next` as the catalog.
    async fn commit_catalog(&self, next: Catalog, ops: Vec<Op>) -> Result<(), EngineError> {
        self.inner
            .writer
            .enqueue(ops)
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
        self.to_completion(move |e| async move { e.upsert_warehouse_now(warehouse).await })
            .await
    }

    async fn upsert_warehouse_now(&self, warehouse: Warehouse) -> Result<Warehouse, EngineError> {
        let _admin = self.inner.admin.lock().await;
        let mut next = (*self.catalog()).clone();
        next.upsert_warehouse(warehouse.clone());
        self.commit_catalog(next, vec![Op::Warehouse(warehouse.clone())])
            .await?;
        self.notify(Changed::All);
        Ok(warehouse)
    }

    pub async fn upsert_channel(&self, channel: Channel) -> Result<Channel, EngineError> {
        self.to_completion(move |e| async move { e.upsert_channel_now(channel).await })
            .await
    }

    async fn upsert_channel_now(&self, channel: Channel) -> Result<Channel, EngineError> {
        let _admin = self.inner.admin.lock().await;
        let mut next = (*self.catalog()).clone();
        next.upsert_channel(channel.clone());
        self.commit_catalog(next, vec![Op::Channel(channel.clone())])
            .await?;
        self.notify(Changed::All);
        Ok(channel)
    }

    /// Stores a rule (replacing the one for the same channel and SKU) and
    /// records the change in the rule history.
    pub async fn put_rule(
        &self,
        rule: Rule,
        changed_by: &str,
        comment: &str,
    ) -> Result<Rule, EngineError> {
        let (changed_by, comment) = (changed_by.to_owned(), comment.to_owned());
        self.to_completion(
            move |e| async move { e.put_rule_now(rule, &changed_by, &comment).await },
        )
        .await
    }

    async fn put_rule_now(
        &self,
        rule: Rule,
        changed_by: &str,
        comment: &str,
    ) -> Result<Rule, EngineError> {
        let _admin = self.inner.admin.lock().await;
        let mut next = (*self.catalog()).clone();
        next.check_rule(&rule)?;
        let channel = rule.channel.clone().expect("checked rule has a channel");
        let before = next.rule(&channel, rule.sku.as_ref()).cloned();
        next.put_rule(rule.clone());
        let change = self.rule_change(
            channel,
            rule.sku.clone(),
            before,
            Some(rule.clone()),
            changed_by,
            comment,
        );
        self.commit_catalog(next, vec![Op::PutRule(rule.clone()), change])
            .await?;
        self.announce(rule.sku.as_ref());
        Ok(rule)
    }

    /// Deletes the rule of `channel` for `sku` (the default when None) and
    /// records the change in the rule history.
    pub async fn delete_rule(
        &self,
        channel: &ChannelCode,
        sku: Option<&Sku>,
        changed_by: &str,
        comment: &str,
    ) -> Result<Rule, EngineError> {
        let (channel, sku) = (channel.clone(), sku.cloned());
        let (changed_by, comment) = (changed_by.to_owned(), comment.to_owned());
        self.to_completion(move |e| async move {
            e.delete_rule_now(&channel, sku.as_ref(), &changed_by, &comment)
                .await
        })
        .await
    }

    async fn delete_rule_now(
        &self,
        channel: &ChannelCode,
        sku: Option<&Sku>,
        changed_by: &str,
        comment: &str,
    ) -> Result<Rule, EngineError> {
        let _admin = self.inner.admin.lock().await;
        let mut next = (*self.catalog()).clone();
        self.check_channel(&next, channel)?;
        let Some(old) = next.delete_rule(channel, sku) else {
            return Err(EngineError::NotFound {
                what: "rule",
                code: match sku {
                    Some(s) => format!("{channel}/{s}"),
                    None => format!("{channel} (default)"),
                },
            });
        };
        let change = self.rule_change(
            channel.clone(),
            sku.cloned(),
            Some(old.clone()),
            None,
            changed_by,
            comment,
        );
        let op = Op::DeleteRule {
            channel: channel.clone(),
            sku: sku.cloned(),
        };
        self.commit_catalog(next, vec![op, change]).await?;
        self.announce(sku);
        Ok(old)
    }

    fn rule_change(
        &self,
        channel: ChannelCode,
        sku: Option<Sku>,
        before: Option<Rule>,
        after: Option<Rule>,
        changed_by: &str,
        comment: &str,
    ) -> Op {
        Op::RuleChange(Box::new(RuleChange {
            at_ms: self.now_ms(),
            changed_by: changed_by.to_string(),
            comment: comment.to_string(),
            channel,
            sku,
            before,
            after,
        }))
    }

    /// Tells the publisher what a rule change may have moved: one SKU, or
    /// every SKU for a channel default.
    fn announce(&self, sku: Option<&Sku>) {
        match sku {
            Some(s) => self.notify(Changed::Skus(vec![s.clone()])),
            None => self.notify(Changed::All),
        }
    }

    /// Who changed a rule, when, from what to what, and why; oldest first.
    /// `all_skus`: every rule of the channel.
    pub async fn rule_history(
        &self,
        channel: &ChannelCode,
        sku: Option<&Sku>,
        all_skus: bool,
    ) -> Result<Vec<RuleChange>, EngineError> {
        self.check_channel(&self.catalog(), channel)?;
        self.inner
            .store
            .rule_history(channel, sku, all_skus)
            .await
            .map_err(EngineError::Load)
    }

    /// What `proposed` rules would change, per SKU and channel, without
    /// applying anything. Only differing figures are returned.
    pub fn simulate_rules(
        &self,
        proposed: &[Rule],
        skus: &[Sku],
    ) -> Result<Vec<SimulatedChange>, EngineError> {
        let current = self.catalog();
        let mut next = (*current).clone();
        for (i, rule) in proposed.iter().enumerate() {
            next.check_rule(rule)
                .map_err(|e| e.at(&format!("proposed[{i}]")))?;
            next.put_rule(rule.clone());
        }
        let all;
        let skus = if skus.is_empty() {
            all = self.skus();
            &all
        } else {
            skus
        };
        let n = current.warehouses.len();
        let mut out = Vec::new();
        for sku in skus {
            let pools = self.pools_of(sku);
            let before = current.effective_all(sku);
            let after = next.effective_all(sku);
            if before == after {
                continue;
            }
            for c in 0..current.channels.len() {
                let (atp_before, published_before) = levels(&before, &pools, c, n);
                let (atp_after, published_after) = levels(&after, &pools, c, n);
                if (atp_before, published_before) != (atp_after, published_after) {
                    out.push(SimulatedChange {
                        sku: sku.clone(),
                        channel: current.channels[c].code.clone(),
                        atp_before,
                        atp_after,
                        published_before,
                        published_after,
                    });
                }
            }
        }
        Ok(out)
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
