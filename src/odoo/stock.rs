//! Reading Odoo's stock: `stock.quant` summed per product and warehouse over
//! internal locations, rounded to the product's unit of measure and then
//! down to whole units; what Odoo delivered on stockpool's sale orders
//! (`sale.order.line.qty_delivered`); and the pickings and quants a webhook
//! names. Products are named by their internal reference (`default_code`
//! = SKU).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::push::{many2one_id, PushError, Pusher};
use crate::domain::{Sku, WarehouseCode, MAX_QUANTITY};

/// The rounding used when a product's unit of measure is not known: Odoo's
/// default precision for quantities (2 digits).
const DEFAULT_ROUNDING: f64 = 0.01;

/// Odoo's counts of some products in some warehouses, in whole units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantTotals {
    /// `quantity` summed over internal locations, rounded to the product's
    /// unit of measure, then down to whole units.
    pub counts: HashMap<(Sku, WarehouseCode), i64>,
    /// The Odoo product of each SKU counted.
    pub products: HashMap<Sku, i64>,
    /// Products counted that have no usable internal reference.
    pub unnamed_products: Vec<i64>,
}

/// A stock.picking as a webhook names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picking {
    pub name: String,
    pub state: String,
    /// The sale order it delivers (or returns), if any.
    pub sale_order: Option<i64>,
}

/// Units Odoo delivered on one sale order line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The order's `client_order_ref`.
    pub reference: String,
    /// The order's name (`S00042`).
    pub order: String,
    pub product: i64,
    /// Whole units, rounded like counts.
    pub units: i64,
}

/// Odoo counts in floats, stockpool in whole units. A sum of fractions
/// (0.7 + 0.2 + 0.1 is 0.9999999999999999 in floats) is first rounded to
/// the product's unit of measure (`rounding`, e.g. 0.01), as Odoo rounds
/// its own quantities, then rounded down: stockpool never offers part of a
/// unit it does not have.
pub fn whole_units(quantity: f64, rounding: f64) -> i64 {
    if !quantity.is_finite() {
        return 0;
    }
    let rounding = if rounding.is_finite() && rounding > 0.0 {
        rounding
    } else {
        DEFAULT_ROUNDING
    };
    let rounded = (quantity / rounding).round() * rounding;
    // What is left of float error after rounding is far below any unit.
    let whole = (rounded + rounding.min(1.0) * 1e-6).floor();
    whole.clamp(0.0, MAX_QUANTITY as f64) as i64
}

/// Reads stock through the pusher's client, setup and id caches.
#[derive(Clone)]
pub struct StockReader {
    pusher: Arc<Pusher>,
    /// The unit-of-measure rounding of each product read so far.
    rounding: Arc<Mutex<HashMap<i64, f64>>>,
}

impl StockReader {
    pub fn new(pusher: Arc<Pusher>) -> StockReader {
        StockReader {
            pusher,
            rounding: Arc::default(),
        }
    }

    async fn search_read(
        &self,
        model: &str,
        domain: Value,
        fields: &[&str],
    ) -> Result<Vec<Value>, PushError> {
        let rows = self
            .pusher
            .client()
            .execute_kw(
                model,
                "search_read",
                json!([domain]),
                json!({"fields": fields}),
            )
            .await?;
        Ok(rows.as_array().cloned().unwrap_or_default())
    }

    /// Odoo warehouse ids of the stockpool warehouses Odoo has.
    pub async fn warehouse_ids(&self) -> Result<HashMap<i64, WarehouseCode>, PushError> {
        let setup = self.pusher.setup().await?;
        Ok(setup
            .warehouses
            .iter()
            .map(|(w, o)| (o.id, w.clone()))
            .collect())
    }

    /// The rounding of each product's unit of measure (cached).
    async fn roundings(&self, products: &[i64]) -> Result<HashMap<i64, f64>, PushError> {
        let missing: Vec<i64> = {
            let cache = self.rounding.lock().unwrap_or_else(|p| p.into_inner());
            products
                .iter()
                .filter(|p| !cache.contains_key(p))
                .copied()
                .collect()
        };
        if !missing.is_empty() {
            let read = self.read_roundings(&missing).await;
            let found = match read {
                Ok(found) => found,
                // Only a refinement: an Odoo that refuses the read (no unit
                // of measure on its products) gets the default rounding.
                Err(PushError::Permanent(reason)) => {
                    tracing::warn!(%reason, "could not read the products' units of measure; rounding quantities to 0.01");
                    HashMap::new()
                }
                Err(e) => return Err(e),
            };
            let mut cache = self.rounding.lock().unwrap_or_else(|p| p.into_inner());
            for p in missing {
                cache.insert(p, found.get(&p).copied().unwrap_or(DEFAULT_ROUNDING));
            }
        }
        let cache = self.rounding.lock().unwrap_or_else(|p| p.into_inner());
        Ok(products
            .iter()
            .filter_map(|p| Some((*p, *cache.get(p)?)))
            .collect())
    }

    /// The rounding of these products' units of measure, those Odoo has.
    async fn read_roundings(&self, products: &[i64]) -> Result<HashMap<i64, f64>, PushError> {
        let rows = self
            .search_read(
                "product.product",
                json!([["id", "in", products]]),
                &["id", "uom_id"],
            )
            .await?;
        let uom_of: HashMap<i64, i64> = rows
            .iter()
            .filter_map(|p| Some((p.get("id")?.as_i64()?, many2one_id(p.get("uom_id"))?)))
            .collect();
        let mut uoms: Vec<i64> = uom_of.values().copied().collect();
        uoms.sort_unstable();
        uoms.dedup();
        if uoms.is_empty() {
            return Ok(HashMap::new());
        }
        let rounding: HashMap<i64, f64> = self
            .search_read("uom.uom", json!([["id", "in", uoms]]), &["id", "rounding"])
            .await?
            .iter()
            .filter_map(|u| Some((u.get("id")?.as_i64()?, u.get("rounding")?.as_f64()?)))
            .collect();
        Ok(uom_of
            .into_iter()
            .filter_map(|(p, u)| Some((p, *rounding.get(&u)?)))
            .collect())
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
            .search_read(
                "stock.quant",
                json!(domain),
                &["product_id", "warehouse_id", "quantity"],
            )
            .await?;
        let mut by_product: HashMap<(i64, i64), f64> = HashMap::new();
        for q in &quants {
            let (Some(p), Some(w)) = (
                many2one_id(q.get("product_id")),
                many2one_id(q.get("warehouse_id")),
            ) else {
                continue;
            };
            *by_product.entry((p, w)).or_default() +=
                q.get("quantity").and_then(Value::as_f64).unwrap_or(0.0);
        }
        let mut product_ids: Vec<i64> = by_product.keys().map(|(p, _)| *p).collect();
        if let Some(p) = product {
            product_ids.push(p);
        }
        product_ids.sort_unstable();
        product_ids.dedup();
        let names = self.skus_of(&product_ids).await?;
        let roundings = self.roundings(&product_ids).await?;
        let mut totals = QuantTotals::default();
        for ((p, w), quantity) in by_product {
            let (Some(sku), Some(warehouse)) = (names.get(&p), warehouses.get(&w)) else {
                continue;
            };
            let rounding = roundings.get(&p).copied().unwrap_or(DEFAULT_ROUNDING);
            totals.counts.insert(
                (sku.clone(), warehouse.clone()),
                whole_units(quantity, rounding),
            );
        }
        totals.products = names.iter().map(|(p, s)| (s.clone(), *p)).collect();
        totals.unnamed_products = product_ids
            .into_iter()
            .filter(|p| !names.contains_key(p))
            .collect();
        Ok(totals)
    }

    /// What Odoo delivered on the sale orders with these references, per
    /// order line (of one product, or of all). Cancelled orders count too:
    /// a delivery done before a cancel stays done.
    pub async fn delivered(
        &self,
        references: &[String],
        product: Option<i64>,
    ) -> Result<Vec<Delivered>, PushError> {
        if references.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for chunk in references.chunks(200) {
            let orders = self
                .search_read(
                    "sale.order",
                    json!([["client_order_ref", "in", chunk]]),
                    &["id", "name", "client_order_ref"],
                )
                .await?;
            let by_id: HashMap<i64, (String, String)> = orders
                .iter()
                .filter_map(|o| {
                    let text = |f: &str| o.get(f).and_then(Value::as_str).map(str::to_string);
                    Some((
                        o.get("id")?.as_i64()?,
                        (text("client_order_ref")?, text("name").unwrap_or_default()),
                    ))
                })
                .collect();
            if by_id.is_empty() {
                continue;
            }
            let ids: Vec<i64> = by_id.keys().copied().collect();
            let mut domain = vec![json!(["order_id", "in", ids])];
            if let Some(p) = product {
                domain.push(json!(["product_id", "=", p]));
            }
            let lines = self
                .search_read(
                    "sale.order.line",
                    json!(domain),
                    &["order_id", "product_id", "qty_delivered"],
                )
                .await?;
            let products: Vec<i64> = lines
                .iter()
                .filter_map(|l| many2one_id(l.get("product_id")))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let roundings = self.roundings(&products).await?;
            for l in &lines {
                let (Some(order), Some(p)) = (
                    many2one_id(l.get("order_id")),
                    many2one_id(l.get("product_id")),
                ) else {
                    continue;
                };
                let Some((reference, name)) = by_id.get(&order) else {
                    continue;
                };
                let qty = l
                    .get("qty_delivered")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let units =
                    whole_units(qty, roundings.get(&p).copied().unwrap_or(DEFAULT_ROUNDING));
                if units > 0 {
                    out.push(Delivered {
                        reference: reference.clone(),
                        order: name.clone(),
                        product: p,
                        units,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The product of one quant (None: Odoo has no such quant, e.g. one
    /// emptied and removed since).
    pub async fn product_of_quant(&self, quant: i64) -> Result<Option<i64>, PushError> {
        let found = self
            .search_read("stock.quant", json!([["id", "=", quant]]), &["product_id"])
            .await?;
        Ok(found.first().and_then(|q| many2one_id(q.get("product_id"))))
    }

    /// One picking (None: Odoo has no such picking).
    pub async fn picking(&self, id: i64) -> Result<Option<Picking>, PushError> {
        let found = self
            .search_read(
                "stock.picking",
                json!([["id", "=", id]]),
                &["name", "state", "sale_id"],
            )
            .await?;
        Ok(found.first().map(|p| Picking {
            name: p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            state: p
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            sale_order: many2one_id(p.get("sale_id")),
        }))
    }

    /// The products of a sale order's lines.
    pub async fn order_products(&self, order: i64) -> Result<Vec<i64>, PushError> {
        let lines = self
            .search_read(
                "sale.order.line",
                json!([["order_id", "=", order]]),
                &["product_id"],
            )
            .await?;
        let mut products: Vec<i64> = lines
            .iter()
            .filter_map(|l| many2one_id(l.get("product_id")))
            .collect();
        products.sort_unstable();
        products.dedup();
        Ok(products)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_are_rounded_to_the_unit_of_measure_then_down_to_whole_units() {
        assert_eq!(whole_units(0.7 + 0.2 + 0.1, 0.01), 1, "0.999… is one unit");
        assert_eq!(whole_units(0.1 + 0.2 + 0.7 + 4.0, 0.001), 5);
        assert_eq!(whole_units(2.75, 0.01), 2, "part of a unit is not offered");
        assert_eq!(
            whole_units(2.996, 0.01),
            3,
            "rounded like Odoo rounds 2.996 kg"
        );
        assert_eq!(whole_units(5.0, 1.0), 5);
        assert_eq!([whole_units(-1.0, 1.0), whole_units(f64::NAN, 1.0)], [0, 0]);
        assert_eq!(whole_units(3.0000000001, 0.0), 3, "no rounding known: 0.01");
    }
}
