//! Reading Odoo's stock: `stock.quant` summed per product and warehouse over
//! internal locations, with products named by their internal reference
//! (`default_code` = SKU). Used by the webhook and the reconciliation.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::push::{many2one_id, PushError, Pusher};
use crate::domain::{Sku, WarehouseCode};

/// Odoo's counts of some products in some warehouses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantTotals {
    /// `quantity` and `reserved_quantity` summed over internal locations.
    pub counts: HashMap<(Sku, WarehouseCode), (f64, f64)>,
    /// Products counted that have no usable internal reference.
    pub unnamed_products: Vec<i64>,
}

/// Reads stock through the pusher's client and id caches.
#[derive(Clone)]
pub struct StockReader {
    pusher: Arc<Pusher>,
}

impl StockReader {
    pub fn new(pusher: Arc<Pusher>) -> StockReader {
        StockReader { pusher }
    }

    /// Odoo warehouse ids of these stockpool warehouses. One Odoo does not
    /// know is left out (and logged): the others are still read.
    pub async fn warehouse_ids(
        &self,
        warehouses: &[WarehouseCode],
    ) -> Result<HashMap<i64, WarehouseCode>, PushError> {
        let mut out = HashMap::new();
        for w in warehouses {
            match self.pusher.warehouse_id(w).await {
                Ok(id) => {
                    out.insert(id, w.clone());
                }
                Err(PushError::Permanent(reason)) => {
                    tracing::warn!(warehouse = %w, %reason, "warehouse not found in Odoo; its stock is not read");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The counts in these warehouses, of one product or of all.
    pub async fn totals(
        &self,
        warehouses: &HashMap<i64, WarehouseCode>,
        product: Option<i64>,
    ) -> Result<QuantTotals, PushError> {
        let ids: Vec<i64> = warehouses.keys().copied().collect();
        let mut domain = vec![
            json!(["location_id.usage", "=", "internal"]),
            json!(["warehouse_id", "in", ids]),
        ];
        if let Some(p) = product {
            domain.push(json!(["product_id", "=", p]));
        }
        let quants = self
            .pusher
            .client()
            .execute_kw(
                "stock.quant",
                "search_read",
                json!([domain]),
                json!({"fields": ["product_id", "warehouse_id", "quantity", "reserved_quantity"]}),
            )
            .await?;
        let mut by_product: HashMap<(i64, i64), (f64, f64)> = HashMap::new();
        for q in quants.as_array().into_iter().flatten() {
            let (Some(p), Some(w)) = (
                many2one_id(q.get("product_id")),
                many2one_id(q.get("warehouse_id")),
            ) else {
                continue;
            };
            let num = |k: &str| q.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            let slot = by_product.entry((p, w)).or_default();
            slot.0 += num("quantity");
            slot.1 += num("reserved_quantity");
        }
        let mut product_ids: Vec<i64> = by_product.keys().map(|(p, _)| *p).collect();
        if let Some(p) = product {
            product_ids.push(p);
        }
        product_ids.sort_unstable();
        product_ids.dedup();
        let names = self.skus_of(&product_ids).await?;
        let mut totals = QuantTotals::default();
        for ((p, w), counts) in by_product {
            let (Some(sku), Some(warehouse)) = (names.get(&p), warehouses.get(&w)) else {
                continue;
            };
            totals
                .counts
                .insert((sku.clone(), warehouse.clone()), counts);
        }
        totals.unnamed_products = product_ids
            .into_iter()
            .filter(|p| !names.contains_key(p))
            .collect();
        Ok(totals)
    }

    /// The product of one quant (None: Odoo has no such quant).
    pub async fn product_of_quant(&self, quant: i64) -> Result<Option<i64>, PushError> {
        let found = self
            .pusher
            .client()
            .execute_kw(
                "stock.quant",
                "search_read",
                json!([[["id", "=", quant]]]),
                json!({"fields": ["product_id"]}),
            )
            .await?;
        Ok(found
            .as_array()
            .and_then(|a| a.first())
            .and_then(|q| many2one_id(q.get("product_id"))))
    }

    /// The SKU of each product that has a valid internal reference.
    pub async fn skus_of(&self, products: &[i64]) -> Result<HashMap<i64, Sku>, PushError> {
        if products.is_empty() {
            return Ok(HashMap::new());
        }
        let found = self
            .pusher
            .client()
            .execute_kw(
                "product.product",
                "search_read",
                json!([[["id", "in", products]]]),
                json!({"fields": ["id", "default_code"]}),
            )
            .await?;
        Ok(found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let id = p.get("id").and_then(Value::as_i64)?;
                let sku = Sku::parse(p.get("default_code").and_then(Value::as_str)?).ok()?;
                Some((id, sku))
            })
            .collect())
    }

    /// Product ids of these SKUs that Odoo knows (the others are left out).
    pub async fn products_of(&self, skus: &[Sku]) -> Result<HashMap<Sku, i64>, PushError> {
        let mut out = HashMap::new();
        for chunk in skus.chunks(500) {
            let chunk: Vec<&Sku> = chunk.iter().collect();
            out.extend(self.pusher.find_products(&chunk).await?);
        }
        Ok(out)
    }
}
