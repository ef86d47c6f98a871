//! Pushing one outbox entry: makes Odoo's sale orders of the reservation
//! match the entry, one `sale.order` per warehouse, found again by
//! `client_order_ref` = `<channel>:<order_id>:<warehouse>`.
//!
//! A push converges instead of replaying: it looks at what Odoo holds and
//! does only what is missing (create and confirm, lower a quantity, cancel).
//! Quantities only ever go down and a cancelled order stays cancelled, so a
//! retry after a timeout, or an older entry retried by ops after a newer one
//! went through, never duplicates an order nor undoes a later change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::{json, Value};

use super::rpc::{OdooClient, RpcError};
use super::{OdooConfig, WarehouseRef};
use crate::domain::{ChannelCode, Sku, WarehouseCode};
use crate::store::{OutboxEntry, OutboxLine};

/// Why a push did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PushError {
    /// Odoo is down, slow or failing: try again later.
    #[error(transparent)]
    Retry(#[from] RpcError),
    /// No retry can fix it (a SKU Odoo does not know, no partner for the
    /// channel): dead-letter at once.
    #[error("{0}")]
    Permanent(String),
}

/// Pushes entries through one client, caching Odoo ids of products and
/// warehouses (they do not change under a running shop).
pub struct Pusher {
    client: OdooClient,
    partners: HashMap<ChannelCode, i64>,
    warehouses: HashMap<WarehouseCode, WarehouseRef>,
    products: Mutex<HashMap<Sku, i64>>,
    warehouse_ids: Mutex<HashMap<WarehouseCode, i64>>,
}

/// The `client_order_ref` of a reservation's order from one warehouse.
pub fn order_ref(channel: &ChannelCode, order_id: &str, warehouse: &WarehouseCode) -> String {
    format!("{channel}:{order_id}:{warehouse}")
}

impl Pusher {
    pub fn new(config: &OdooConfig) -> anyhow::Result<Pusher> {
        Ok(Pusher {
            client: OdooClient::new(config)?,
            partners: config.partners.clone(),
            warehouses: config.warehouses.clone(),
            products: Mutex::new(HashMap::new()),
            warehouse_ids: Mutex::new(HashMap::new()),
        })
    }

    pub fn client(&self) -> &OdooClient {
        &self.client
    }

    /// Makes Odoo hold what `entry` says, warehouse by warehouse.
    pub async fn push(&self, entry: &OutboxEntry) -> Result<(), PushError> {
        let e = &entry.entry;
        let mut by_warehouse: BTreeMap<&WarehouseCode, Vec<&OutboxLine>> = BTreeMap::new();
        for line in &e.lines {
            by_warehouse.entry(&line.warehouse).or_default().push(line);
        }
        for (warehouse, lines) in by_warehouse {
            let reference = order_ref(&e.channel, e.order_id.as_str(), warehouse);
            self.converge(&e.channel, warehouse, &reference, &lines)
                .await?;
        }
        Ok(())
    }

    async fn converge(
        &self,
        channel: &ChannelCode,
        warehouse: &WarehouseCode,
        reference: &str,
        lines: &[&OutboxLine],
    ) -> Result<(), PushError> {
        let wanted: Vec<&OutboxLine> = lines.iter().copied().filter(|l| l.ordered > 0).collect();
        let found = self
            .client
            .execute_kw(
                "sale.order",
                "search_read",
                json!([[["client_order_ref", "=", reference]]]),
                json!({"fields": ["id", "state"], "order": "id"}),
            )
            .await?;
        let existing = found.as_array().and_then(|a| a.first()).map(|o| {
            (
                o.get("id").and_then(Value::as_i64).unwrap_or(0),
                o.get("state")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        });
        let Some((order_id, state)) = existing else {
            if wanted.is_empty() {
                // Released before Odoo ever saw it: nothing to create or cancel.
                return Ok(());
            }
            return self.create(channel, warehouse, reference, &wanted).await;
        };
        if order_id <= 0 {
            return Err(PushError::Retry(RpcError::Protocol {
                call: "sale.order.search_read".into(),
                detail: format!("an order without an id for {reference}"),
            }));
        }
        if state == "cancel" {
            return Ok(());
        }
        if wanted.is_empty() {
            self.client
                .execute_kw(
                    "sale.order",
                    "action_cancel",
                    json!([[order_id]]),
                    json!({"context": {"disable_cancel_warning": true}}),
                )
                .await?;
            return Ok(());
        }
        if state == "draft" || state == "sent" {
            // Created by an attempt whose answer was lost before it confirmed.
            self.client
                .execute_kw(
                    "sale.order",
                    "action_confirm",
                    json!([[order_id]]),
                    json!({}),
                )
                .await?;
        }
        let products = self.product_ids(lines.iter().map(|l| &l.sku)).await?;
        let odoo_lines = self
            .client
            .execute_kw(
                "sale.order.line",
                "search_read",
                json!([[["order_id", "=", order_id]]]),
                json!({"fields": ["id", "product_id", "product_uom_qty"]}),
            )
            .await?;
        for line in lines {
            let Some(product) = products.get(&line.sku) else {
                continue;
            };
            for odoo in odoo_lines.as_array().into_iter().flatten() {
                if many2one_id(odoo.get("product_id")) != Some(*product) {
                    continue;
                }
                let qty = odoo
                    .get("product_uom_qty")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let id = odoo.get("id").and_then(Value::as_i64).unwrap_or(0);
                if qty > line.ordered as f64 && id > 0 {
                    self.client
                        .execute_kw(
                            "sale.order.line",
                            "write",
                            json!([[id], {"product_uom_qty": line.ordered}]),
                            json!({}),
                        )
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn create(
        &self,
        channel: &ChannelCode,
        warehouse: &WarehouseCode,
        reference: &str,
        wanted: &[&OutboxLine],
    ) -> Result<(), PushError> {
        let partner = *self.partners.get(channel).ok_or_else(|| {
            PushError::Permanent(format!(
                "no Odoo partner is configured for channel {channel}: add it under [odoo.partners]"
            ))
        })?;
        let warehouse_id = self.warehouse_id(warehouse).await?;
        let products = self.product_ids(wanted.iter().map(|l| &l.sku)).await?;
        let order_line: Vec<Value> = wanted
            .iter()
            .map(|l| json!([0, 0, {"product_id": products[&l.sku], "product_uom_qty": l.ordered}]))
            .collect();
        let created = self
            .client
            .execute_kw(
                "sale.order",
                "create",
                json!([{
                    "partner_id": partner,
                    "warehouse_id": warehouse_id,
                    "client_order_ref": reference,
                    "order_line": order_line,
                }]),
                json!({}),
            )
            .await?;
        let id = created
            .as_i64()
            .or_else(|| {
                created
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(Value::as_i64)
            })
            .ok_or_else(|| {
                PushError::Retry(RpcError::Protocol {
                    call: "sale.order.create".into(),
                    detail: format!("expected the new id, got {created}"),
                })
            })?;
        self.client
            .execute_kw("sale.order", "action_confirm", json!([[id]]), json!({}))
            .await?;
        Ok(())
    }

    /// Odoo product ids of these SKUs (`product.product` by `default_code`),
    /// from the cache or one search for the missing ones. A SKU Odoo does
    /// not know is a permanent failure.
    pub async fn product_ids<'a>(
        &self,
        skus: impl Iterator<Item = &'a Sku>,
    ) -> Result<HashMap<Sku, i64>, PushError> {
        let skus: Vec<&Sku> = skus.collect();
        let found = self.find_products(&skus).await?;
        let unknown: Vec<&str> = skus
            .iter()
            .filter(|s| !found.contains_key(**s))
            .map(|s| s.as_str())
            .collect();
        if !unknown.is_empty() {
            return Err(PushError::Permanent(format!(
                "Odoo has no product with internal reference {}: create it in Odoo (Inventory > Products, field Internal Reference) or fix the SKU, then retry this entry",
                unknown.join(", ")
            )));
        }
        Ok(found)
    }

    /// The Odoo product ids of those of `skus` that Odoo knows, from the
    /// cache or one search for the missing ones (then cached).
    pub async fn find_products(&self, skus: &[&Sku]) -> Result<HashMap<Sku, i64>, RpcError> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.products.lock().unwrap_or_else(|p| p.into_inner());
            for sku in skus {
                match cache.get(*sku) {
                    Some(id) => {
                        out.insert((*sku).clone(), *id);
                    }
                    None => missing.push(sku.as_str()),
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let found = self
            .client
            .execute_kw(
                "product.product",
                "search_read",
                json!([[["default_code", "in", missing]]]),
                json!({"fields": ["id", "default_code"]}),
            )
            .await?;
        let mut cache = self.products.lock().unwrap_or_else(|p| p.into_inner());
        for p in found.as_array().into_iter().flatten() {
            let (Some(id), Some(code)) = (
                p.get("id").and_then(Value::as_i64),
                p.get("default_code").and_then(Value::as_str),
            ) else {
                continue;
            };
            if let Ok(sku) = Sku::parse(code) {
                cache.insert(sku.clone(), id);
                out.insert(sku, id);
            }
        }
        Ok(out)
    }

    /// The Odoo `stock.warehouse` id of a stockpool warehouse: configured,
    /// or looked up by code (the configured Odoo code, else the stockpool
    /// code) and cached.
    pub async fn warehouse_id(&self, warehouse: &WarehouseCode) -> Result<i64, PushError> {
        let code = match self.warehouses.get(warehouse) {
            Some(WarehouseRef::Id(id)) => return Ok(*id),
            Some(WarehouseRef::Code(code)) => code.clone(),
            None => warehouse.to_string(),
        };
        if let Some(id) = self
            .warehouse_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(warehouse)
        {
            return Ok(*id);
        }
        let found = self
            .client
            .execute_kw(
                "stock.warehouse",
                "search_read",
                json!([[["code", "=", code]]]),
                json!({"fields": ["id", "code"]}),
            )
            .await?;
        let id = found
            .as_array()
            .and_then(|a| a.first())
            .and_then(|w| w.get("id"))
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                PushError::Permanent(format!(
                    "Odoo has no warehouse with code {code:?} for stockpool warehouse {warehouse}: set its id or code under [odoo.warehouses]"
                ))
            })?;
        self.warehouse_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(warehouse.clone(), id);
        Ok(id)
    }
}

/// The id of a many2one value as Odoo reads it: `[id, "name"]`, or a bare
/// id, or `false`.
pub fn many2one_id(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::Array(a) => a.first().and_then(Value::as_i64),
        _ => None,
    }
}
