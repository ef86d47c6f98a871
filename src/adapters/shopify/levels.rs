//! Levels out: every SKU due in the adapter's state is written to the
//! configured location, coalesced (one write per SKU at its newest level),
//! batched (up to `batch_size` quantities per mutation) and paced by
//! Shopify's cost bucket.
//!
//! # The level written
//!
//! The adapter sets the location's `on_hand`, not `available`:
//!
//! ```text
//! on_hand := published + min(open, committed) + unavailable
//! ```
//!
//! where `committed` (units of placed, unfulfilled orders) and
//! `unavailable = on_hand − available − committed` (reserved, damaged,
//! safety stock, quality control) are read from Shopify just before, and
//! `open` is what stockpool holds for Shopify's own orders. Shopify keeps
//! `available = on_hand − committed − unavailable`, so
//! `available = published − max(0, committed − open)`: every unit Shopify
//! sold whose order has not reached stockpool yet (`committed − open`)
//! stays subtracted, and Shopify is never shown more than `published`. An
//! order placed between the read and the write only lowers `available`
//! further; a change of `on_hand` in between (a fulfilment) fails the
//! write's compare (`changeFromQuantity`) with `CHANGE_FROM_QUANTITY_STALE`,
//! and the item is read again and written again.
//!
//! Each mutation carries `@idempotent(key:)`; a retry of the very same
//! mutation reuses its key. An item Shopify does not stock at the location,
//! or a SKU no variant carries, is logged and counted, and looked up again
//! at the next reconciliation.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use super::config::ShopifyConfig;
use super::graphql::{Admin, GqlError};
use crate::adapters::metrics;
use crate::adapters::pacing::Backoff;
use crate::adapters::serve::Readiness;
use crate::adapters::state::{LevelRow, StateDb};

const VARIANTS: &str = "query StockpoolVariants($first: Int!, $query: String!) { \
  productVariants(first: $first, query: $query) { nodes { sku inventoryItem { id } } } }";

const LEVELS: &str = "query StockpoolLevels($ids: [ID!]!, $location: ID!) { \
  nodes(ids: $ids) { ... on InventoryItem { id inventoryLevel(locationId: $location) { \
  quantities(names: [\"available\", \"committed\", \"on_hand\"]) { name quantity } } } } }";

const LEVELS_BY_SKU: &str =
    "query StockpoolLevelsBySku($first: Int!, $query: String!, $location: ID!) { \
  productVariants(first: $first, query: $query) { nodes { sku inventoryItem { id \
  inventoryLevel(locationId: $location) { \
  quantities(names: [\"available\", \"committed\", \"on_hand\"]) { name quantity } } } } } }";

const SET_ON_HAND: &str =
    "mutation StockpoolSetOnHand($input: InventorySetQuantitiesInput!, $key: String!) { \
  inventorySetQuantities(input: $input) @idempotent(key: $key) { \
  inventoryAdjustmentGroup { reason } userErrors { code field message } } }";

/// Rows taken from the state per round.
const ROUND: i64 = 1000;
/// Times a stale item is read and written again within one round.
const STALE_ATTEMPTS: usize = 5;
/// A SKU found on no variant is looked up again after this long.
const MISS_TTL: Duration = Duration::from_secs(300);
/// Items per lookup or read before Shopify's bucket is known.
const FIRST_CHUNK: usize = 50;

/// What a SKU is on Shopify.
#[derive(Debug, Clone)]
enum Mapping {
    Item(String),
    /// No variant has this SKU (as of then).
    Missing(Instant),
    /// Several variants have it: writing one would be a guess.
    Ambiguous(Instant),
}

/// Shopify's quantities of one item at the location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantities {
    pub available: i64,
    pub committed: i64,
    pub on_hand: i64,
}

/// The `on_hand` that gives Shopify `published` to sell, minus its own
/// orders not yet in stockpool (see the module header).
pub fn target_on_hand(published: i64, open: i64, q: Quantities) -> i64 {
    let unavailable = (q.on_hand - q.available - q.committed).max(0);
    published.max(0) + open.max(0).min(q.committed.max(0)) + unavailable
}

/// Search syntax for one SKU: bare when it holds only letters, digits,
/// `-`, `_` and `.` (every SKU stockpool accepts), else quoted with `\` and
/// `"` escaped.
fn sku_term(sku: &str) -> String {
    if super::orders::valid_sku(sku) {
        format!("sku:{sku}")
    } else {
        format!("sku:\"{}\"", sku.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Quantities per inventory item id from items as the API returns them
/// (`{ id, inventoryLevel { quantities { name quantity } } }`); an item
/// without a level at the location maps to None.
fn levels_of<'a>(items: impl Iterator<Item = &'a Value>) -> HashMap<String, Option<Quantities>> {
    let mut out = HashMap::new();
    for node in items {
        let Some(id) = node.get("id").and_then(Value::as_str) else {
            continue;
        };
        let quantities = node
            .pointer("/inventoryLevel/quantities")
            .and_then(Value::as_array);
        let q = quantities.map(|list| {
            let get = |name: &str| {
                list.iter()
                    .find(|q| q.get("name").and_then(Value::as_str) == Some(name))
                    .and_then(|q| q.get("quantity"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            };
            Quantities {
                available: get("available"),
                committed: get("committed"),
                on_hand: get("on_hand"),
            }
        });
        out.insert(id.to_string(), q);
    }
    out
}

pub struct Writer {
    admin: Arc<Admin>,
    db: StateDb,
    channel: String,
    location: String,
    batch: usize,
    mappings: HashMap<String, Mapping>,
    /// The last mutation sent and its key, reused for a retry of the same.
    last_key: Option<(String, String)>,
    /// Levels are read by SKU (the API refused reading them by item id).
    read_by_sku: bool,
    backoff: Backoff,
}

/// One item to write.
struct Change {
    sku: String,
    seq: u64,
    item: String,
    from: i64,
    to: i64,
    row: LevelRow,
}

impl Writer {
    pub fn new(config: &ShopifyConfig, admin: Arc<Admin>, db: StateDb) -> Writer {
        Writer {
            admin,
            db,
            channel: config.channel.clone(),
            location: config.location_id.clone(),
            batch: config.batch_size,
            mappings: HashMap::new(),
            last_key: None,
            read_by_sku: false,
            backoff: Backoff::new(Duration::from_millis(200), config.max_backoff),
        }
    }

    /// Writes due levels until `stop`; woken by the stream, else every second.
    pub async fn run(self, wake: Arc<Notify>, ready: Readiness, stop: watch::Receiver<bool>) {
        let channel = self.channel.clone();
        let backoff = self.backoff.clone();
        crate::adapters::writer::drive(self, channel, "shopify", backoff, wake, ready, stop).await
    }

    /// Forgets SKUs found on no variant, so the next round looks again.
    pub fn forget_misses(&mut self) {
        self.mappings.retain(|_, m| matches!(m, Mapping::Item(_)));
    }

    /// One round: the due rows written (or found right). Returns how many
    /// rows it settled.
    async fn settle(&mut self) -> Result<usize, GqlError> {
        let rows = self
            .db
            .due(ROUND)
            .await
            .map_err(|e| GqlError::Unavailable(format!("the adapter's state: {e}")))?;
        metrics::pending(&self.channel, self.db.due_count().await.unwrap_or(0));
        if rows.is_empty() {
            return Ok(0);
        }
        if rows.iter().any(|r| r.reconcile) {
            self.forget_misses_older_than(Duration::ZERO);
        }
        self.map(&rows).await?;
        let mut settled: Vec<(String, u64)> = Vec::new();
        let mut mapped = Vec::new();
        for row in rows {
            match self.mappings.get(&row.sku) {
                Some(Mapping::Item(item)) => mapped.push((item.clone(), row)),
                Some(Mapping::Ambiguous(_)) | Some(Mapping::Missing(_)) | None => {
                    metrics::writes(&self.channel, "unmapped", 1);
                    settled.push((row.sku.clone(), row.seq));
                }
            }
        }
        let unmapped = self
            .mappings
            .values()
            .filter(|m| !matches!(m, Mapping::Item(_)))
            .count();
        metrics::unmapped(&self.channel, unmapped);
        let count = settled.len() + mapped.len();
        self.mark(&settled).await?;
        let known = if self.read_by_sku {
            // Two variants of room per SKU.
            self.admin.max_size("levels_by_sku").map(|first| first / 2)
        } else {
            self.admin.max_size("levels")
        };
        let chunk = known.unwrap_or(FIRST_CHUNK).min(self.batch).max(1);
        for part in mapped.chunks(chunk) {
            self.write_part(part.to_vec()).await?;
        }
        Ok(count)
    }

    fn forget_misses_older_than(&mut self, age: Duration) {
        self.mappings.retain(|_, m| match m {
            Mapping::Item(_) => true,
            Mapping::Missing(at) | Mapping::Ambiguous(at) => at.elapsed() < age,
        });
    }

    async fn mark(&self, done: &[(String, u64)]) -> Result<(), GqlError> {
        if done.is_empty() {
            return Ok(());
        }
        self.db
            .written(done)
            .await
            .map_err(|e| GqlError::Unavailable(format!("the adapter's state: {e}")))
    }

    /// Looks up the inventory item of every row's SKU not known yet.
    async fn map(&mut self, rows: &[LevelRow]) -> Result<(), GqlError> {
        self.forget_misses_older_than(MISS_TTL);
        let wanted: Vec<String> = rows
            .iter()
            .map(|r| r.sku.clone())
            .filter(|s| !self.mappings.contains_key(s))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        // Each SKU asks for room for two variants (`first` = 2 × SKUs).
        let mut chunk = self
            .admin
            .max_size("variants")
            .map(|first| first / 2)
            .unwrap_or(FIRST_CHUNK)
            .clamp(1, 125);
        let mut rest: &[String] = &wanted;
        while !rest.is_empty() {
            let part = &rest[..chunk.min(rest.len())];
            let query = part
                .iter()
                .map(|s| sku_term(s))
                .collect::<Vec<_>>()
                .join(" OR ");
            // A SKU may sit on a few variants: ask for room to see that.
            let first = (part.len() * 2).min(250);
            let data = match self
                .admin
                .run(
                    "variants",
                    first,
                    VARIANTS,
                    json!({ "first": first, "query": query }),
                )
                .await
            {
                Err(GqlError::TooCostly { .. }) if chunk > 1 => {
                    chunk = (chunk / 2).max(1);
                    continue;
                }
                other => other?,
            };
            let mut found: HashMap<&str, Vec<String>> = HashMap::new();
            for node in data
                .pointer("/productVariants/nodes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (Some(sku), Some(item)) = (
                    node.get("sku").and_then(Value::as_str),
                    node.pointer("/inventoryItem/id").and_then(Value::as_str),
                ) else {
                    continue;
                };
                // The search matches loosely; only the exact SKU counts.
                if let Some(s) = part.iter().find(|s| s.as_str() == sku) {
                    found.entry(s.as_str()).or_default().push(item.to_string());
                }
            }
            for sku in part {
                let mapping = match found.get(sku.as_str()).map(Vec::as_slice) {
                    Some([item]) => Mapping::Item(item.clone()),
                    Some(items) if !items.is_empty() => {
                        tracing::warn!(channel = %self.channel, %sku, variants = items.len(), "several Shopify variants carry this SKU: its level is not written until one does");
                        Mapping::Ambiguous(Instant::now())
                    }
                    _ => {
                        tracing::warn!(channel = %self.channel, %sku, "no Shopify variant carries this SKU: its level is skipped");
                        Mapping::Missing(Instant::now())
                    }
                };
                self.mappings.insert(sku.clone(), mapping);
            }
            rest = &rest[part.len()..];
        }
        Ok(())
    }

    /// Reads Shopify's quantities of `part` (item, SKU): by item ids
    /// (`nodes`); if the API refuses that, from then on by SKU through
    /// `productVariants`, which every shop serves.
    async fn read(
        &mut self,
        part: &[(String, String)],
    ) -> Result<HashMap<String, Option<Quantities>>, GqlError> {
        if !self.read_by_sku {
            let items: Vec<&str> = part.iter().map(|(i, _)| i.as_str()).collect();
            let answer = self
                .admin
                .run(
                    "levels",
                    items.len(),
                    LEVELS,
                    json!({ "ids": items, "location": self.location }),
                )
                .await;
            match answer {
                Ok(data) => {
                    let nodes = data.get("nodes").and_then(Value::as_array).cloned();
                    return Ok(levels_of(nodes.iter().flatten()));
                }
                Err(GqlError::Refused(why)) => {
                    tracing::warn!(channel = %self.channel, why = %why, "reading levels by item id was refused; reading them by SKU from now on");
                    self.read_by_sku = true;
                }
                Err(e) => return Err(e),
            }
        }
        let query = part
            .iter()
            .map(|(_, sku)| sku_term(sku))
            .collect::<Vec<_>>()
            .join(" OR ");
        let first = (part.len() * 2).min(250);
        let data = self
            .admin
            .run(
                "levels_by_sku",
                first,
                LEVELS_BY_SKU,
                json!({ "first": first, "query": query, "location": self.location }),
            )
            .await?;
        let items: Vec<Value> = data
            .pointer("/productVariants/nodes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.get("inventoryItem").cloned())
            .collect();
        Ok(levels_of(items.iter()))
    }

    /// Reads, compares, writes one part of the mapped rows; retries stale
    /// items; marks every row it settles.
    async fn write_part(&mut self, mut part: Vec<(String, LevelRow)>) -> Result<(), GqlError> {
        for attempt in 0..STALE_ATTEMPTS {
            let items: Vec<(String, String)> = part
                .iter()
                .map(|(i, r)| (i.clone(), r.sku.clone()))
                .collect();
            let read = match self.read(&items).await {
                Err(GqlError::TooCostly { .. }) if part.len() > 1 => {
                    let half = part.len() / 2;
                    let second = part.split_off(half);
                    Box::pin(self.write_part(part)).await?;
                    return Box::pin(self.write_part(second)).await;
                }
                other => other?,
            };
            let mut settled = Vec::new();
            let mut changes = Vec::new();
            for (item, row) in part.drain(..) {
                match read.get(&item).copied().flatten() {
                    None => {
                        tracing::warn!(channel = %self.channel, sku = %row.sku, %item, location = %self.location, "the item is not stocked at the configured location: its level is skipped");
                        metrics::writes(&self.channel, "unmapped", 1);
                        settled.push((row.sku.clone(), row.seq));
                    }
                    Some(q) => {
                        let to = target_on_hand(row.published, row.open, q);
                        if to == q.on_hand {
                            metrics::writes(&self.channel, "unchanged", 1);
                            settled.push((row.sku.clone(), row.seq));
                        } else {
                            changes.push(Change {
                                sku: row.sku.clone(),
                                seq: row.seq,
                                item,
                                from: q.on_hand,
                                to,
                                row,
                            });
                        }
                    }
                }
            }
            self.mark(&settled).await?;
            if changes.is_empty() {
                return Ok(());
            }
            let stale = self.mutate(&changes).await?;
            let mut done = Vec::new();
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            for (i, c) in changes.into_iter().enumerate() {
                if stale.contains(&i) {
                    part.push((c.item, c.row));
                    continue;
                }
                metrics::writes(&self.channel, "written", 1);
                if c.row.fresh && c.row.at_ms > 0 {
                    metrics::lag(&self.channel, (now_ms - c.row.at_ms) as f64 / 1000.0);
                }
                if c.row.reconcile && !c.row.fresh {
                    metrics::drift(&self.channel, c.to - c.from);
                    tracing::warn!(channel = %self.channel, sku = %c.sku, shopify_on_hand = c.from, corrected_to = c.to, "reconciliation: Shopify's level differed from stockpool's; corrected");
                }
                done.push((c.sku, c.seq));
            }
            self.mark(&done).await?;
            if part.is_empty() {
                return Ok(());
            }
            metrics::stale_retry(&self.channel, part.len() as u64);
            tracing::debug!(
                attempt,
                items = part.len(),
                "quantities changed on Shopify since read; reading again"
            );
        }
        // Still stale after several tries: left due for the next round.
        Ok(())
    }

    /// Sends the mutation; the indexes of `changes` Shopify found stale
    /// (nothing was applied then: the mutation is all or nothing).
    async fn mutate(&mut self, changes: &[Change]) -> Result<HashSet<usize>, GqlError> {
        let max_seq = changes.iter().map(|c| c.seq).max().unwrap_or(0);
        let input = json!({
            "name": "on_hand",
            "reason": "correction",
            "referenceDocumentUri": format!("gid://stockpool/ChannelStock/{}-{max_seq}", self.channel),
            "quantities": changes.iter().map(|c| json!({
                "inventoryItemId": c.item,
                "locationId": self.location,
                "quantity": c.to,
                "changeFromQuantity": c.from,
            })).collect::<Vec<_>>(),
        });
        let input_text = input.to_string();
        let key = match &self.last_key {
            Some((sent, key)) if *sent == input_text => key.clone(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        self.last_key = Some((input_text, key.clone()));
        // A failed exchange comes back to the next round, which sends the
        // very same mutation with the same key if nothing moved since.
        let data = self
            .admin
            .run(
                "set",
                changes.len(),
                SET_ON_HAND,
                json!({ "input": input, "key": key }),
            )
            .await?;
        let errors = data
            .pointer("/inventorySetQuantities/userErrors")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if errors.is_empty() {
            self.last_key = None;
            return Ok(HashSet::new());
        }
        let index_of = |e: &Value| -> Option<usize> {
            let field = e.get("field")?.as_array()?;
            let pos = field
                .iter()
                .position(|f| f.as_str() == Some("quantities"))?;
            field.get(pos + 1)?.as_str()?.parse().ok()
        };
        let mut refused = HashSet::new();
        for e in &errors {
            let code = e.get("code").and_then(Value::as_str).unwrap_or("");
            match (code, index_of(e)) {
                ("CHANGE_FROM_QUANTITY_STALE", Some(_)) => {}
                ("IDEMPOTENCY_CONCURRENT_REQUEST", _) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return Box::pin(self.mutate(changes)).await;
                }
                (_, Some(i)) => {
                    let c = &changes[i];
                    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                    tracing::warn!(channel = %self.channel, sku = %c.sku, item = %c.item, code, message, "Shopify refused this item's quantity; it is skipped");
                    if code == "INVALID_INVENTORY_ITEM" {
                        self.mappings.remove(&c.sku);
                    }
                    refused.insert(i);
                }
                (_, None) => {
                    return Err(GqlError::Refused(format!("inventorySetQuantities: {e}")));
                }
            }
        }
        self.last_key = None;
        // Nothing was applied: the refused items are settled as skipped,
        // every other one goes again (as stale: read again and written).
        for i in &refused {
            metrics::writes(&self.channel, "failed", 1);
            let c = &changes[*i];
            self.mark(&[(c.sku.clone(), c.seq)]).await?;
        }
        Ok((0..changes.len())
            .filter(|i| !refused.contains(i))
            .collect())
    }
}

impl crate::adapters::writer::Rounds for Writer {
    type Error = GqlError;
    fn round(&mut self) -> impl std::future::Future<Output = Result<usize, GqlError>> + Send {
        self.settle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(available: i64, committed: i64, on_hand: i64) -> Quantities {
        Quantities {
            available,
            committed,
            on_hand,
        }
    }

    #[test]
    fn units_sold_on_shopify_and_not_yet_in_stockpool_stay_subtracted() {
        // Shopify sold 2 (committed) that stockpool does not know yet.
        let t = target_on_hand(3, 0, q(3, 2, 5));
        assert_eq!(t, 3, "on_hand 3 with 2 committed: 1 available, not 3");
        // Once stockpool has them (open 2, published already lower), the same.
        assert_eq!(target_on_hand(1, 2, q(1, 2, 3)), 3);
    }

    #[test]
    fn shopify_is_never_shown_more_than_published() {
        // Stockpool holds 4 open but Shopify counts only 1 committed (it
        // already shipped 3 whose fulfilment has not reached stockpool).
        let t = target_on_hand(10, 4, q(0, 1, 1));
        assert_eq!(t - 1, 10, "available = on_hand - committed = published");
        // Unavailable units (damaged, safety stock) are kept as they are.
        assert_eq!(target_on_hand(5, 0, q(5, 0, 8)), 8);
    }

    #[test]
    fn skus_are_bare_in_the_search_unless_they_need_quotes() {
        assert_eq!(sku_term("TEE-BLK-M"), "sku:TEE-BLK-M");
        assert_eq!(sku_term("A\"B"), "sku:\"A\\\"B\"");
    }
}
