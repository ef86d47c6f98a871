//! Stock from Odoo into stockpool: the webhook that Odoo's "Send Webhook
//! Notification" server action calls when a `stock.quant` changes, and the
//! periodic reconciliation of every count. Both read Odoo's figures through
//! [`crate::odoo::StockReader`] and apply them with `SetStock` through the
//! engine, as an ERP client of the gRPC API would.
//!
//! The webhook does not trust the quantity in its body: a warehouse may
//! hold a product in several locations, and notifications can arrive late
//! or out of order. It takes the product from the body and reads the
//! product's current totals from Odoo, so the last call always sets the
//! current count.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::domain::{Sku, WarehouseCode};
use crate::engine::{Engine, EngineError, SetCmd};
use crate::odoo::{many2one_id, PushError, StockReader};
use crate::telemetry;

/// Why a webhook call or a reconciliation did not apply.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The body is not a stock.quant notification stockpool can use.
    #[error("{0}")]
    BadRequest(String),
    /// Odoo could not be read.
    #[error("reading Odoo failed: {0}")]
    Odoo(#[from] PushError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// One count changed by the webhook or a reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Correction {
    pub sku: String,
    pub warehouse: String,
    pub before: i64,
    pub after: i64,
}

/// What a webhook call did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookOutcome {
    pub sku: String,
    pub changed: Vec<Correction>,
    /// Warehouses whose count already matched.
    pub unchanged: Vec<String>,
}

/// What a reconciliation found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// Pools whose on_hand differs from Odoo's count.
    pub differing: Vec<Correction>,
    /// Whether `differing` was applied.
    pub corrected: bool,
    /// Pools compared.
    pub compared: usize,
    /// SKUs stockpool holds that Odoo has no product for.
    pub unknown_in_odoo: Vec<String>,
}

/// The inbound side of the Odoo connection.
pub struct OdooSync {
    engine: Engine,
    reader: StockReader,
    secret: Option<String>,
    correct: bool,
}

impl OdooSync {
    pub fn new(
        engine: Engine,
        reader: StockReader,
        secret: Option<String>,
        correct: bool,
    ) -> OdooSync {
        OdooSync {
            engine,
            reader,
            secret,
            correct,
        }
    }

    /// Whether the webhook is configured at all.
    pub fn webhook_enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// Compares `presented` with the shared secret in constant time.
    pub fn secret_matches(&self, presented: &str) -> bool {
        let Some(secret) = &self.secret else {
            return false;
        };
        let (a, b) = (secret.as_bytes(), presented.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }

    /// Applies one `stock.quant` notification: reads the product's current
    /// counts in every stockpool warehouse from Odoo and sets those that
    /// differ.
    pub async fn quant_changed(&self, body: &Value) -> Result<WebhookOutcome, SyncError> {
        let model = body.get("_model").and_then(Value::as_str).unwrap_or("");
        if model != "stock.quant" {
            return Err(SyncError::BadRequest(format!(
                "_model is {model:?}; this webhook takes stock.quant notifications only"
            )));
        }
        let product = match many2one_id(body.get("product_id")) {
            Some(p) => p,
            None => {
                let quant = body.get("_id").and_then(Value::as_i64).ok_or_else(|| {
                    SyncError::BadRequest(
                        "neither product_id nor _id is in the body: add the Product field to the server action's fields"
                            .into(),
                    )
                })?;
                self.reader.product_of_quant(quant).await?.ok_or_else(|| {
                    SyncError::BadRequest(format!("Odoo has no stock.quant {quant}"))
                })?
            }
        };
        let sku = self
            .reader
            .skus_of(&[product])
            .await?
            .remove(&product)
            .ok_or_else(|| {
                SyncError::BadRequest(format!(
                    "Odoo product {product} has no internal reference that is a valid SKU; stockpool knows products by it"
                ))
            })?;
        let warehouses = self
            .reader
            .warehouse_ids(&self.declared_warehouses())
            .await?;
        let totals = self.reader.totals(&warehouses, Some(product)).await?;
        let mut outcome = WebhookOutcome {
            sku: sku.to_string(),
            changed: Vec::new(),
            unchanged: Vec::new(),
        };
        let current = self.on_hand_of(std::slice::from_ref(&sku));
        let mut ordered: Vec<&WarehouseCode> = warehouses.values().collect();
        ordered.sort();
        for warehouse in ordered {
            let counted = totals
                .counts
                .get(&(sku.clone(), warehouse.clone()))
                .map_or(0, |(q, _)| whole(*q));
            let before = current
                .get(&(sku.clone(), warehouse.clone()))
                .copied()
                .unwrap_or(0);
            if before == counted {
                outcome.unchanged.push(warehouse.to_string());
                continue;
            }
            self.set(&sku, warehouse, counted, "odoo stock.quant webhook")
                .await?;
            outcome.changed.push(Correction {
                sku: sku.to_string(),
                warehouse: warehouse.to_string(),
                before,
                after: counted,
            });
        }
        Ok(outcome)
    }

    /// Compares every count Odoo holds in stockpool's warehouses with the
    /// pools; logs and counts each difference and, when configured,
    /// corrects on_hand to Odoo's count.
    pub async fn reconcile(&self) -> Result<Drift, SyncError> {
        let warehouses = self
            .reader
            .warehouse_ids(&self.declared_warehouses())
            .await?;
        let totals = self.reader.totals(&warehouses, None).await?;
        let held = self.on_hand_of(&[]);
        // Every pool either side knows of, in a stable order.
        let mapped: BTreeSet<&WarehouseCode> = warehouses.values().collect();
        let mut keys: BTreeSet<(Sku, WarehouseCode)> = totals.counts.keys().cloned().collect();
        keys.extend(
            held.iter()
                .filter(|(k, on_hand)| **on_hand != 0 && mapped.contains(&k.1))
                .map(|(k, _)| k.clone()),
        );
        // SKUs only stockpool counts: zero in Odoo if Odoo knows the product.
        let missing: Vec<Sku> = keys
            .iter()
            .filter(|k| !totals.counts.contains_key(*k))
            .map(|k| k.0.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let known = self.reader.products_of(&missing).await?;
        let mut drift = Drift {
            corrected: self.correct,
            ..Drift::default()
        };
        for (sku, warehouse) in keys {
            let odoo = match totals.counts.get(&(sku.clone(), warehouse.clone())) {
                Some((q, _)) => whole(*q),
                None if known.contains_key(&sku) => 0,
                None => {
                    if !drift.unknown_in_odoo.contains(&sku.to_string()) {
                        drift.unknown_in_odoo.push(sku.to_string());
                    }
                    continue;
                }
            };
            drift.compared += 1;
            let ours = held
                .get(&(sku.clone(), warehouse.clone()))
                .copied()
                .unwrap_or(0);
            if ours == odoo {
                continue;
            }
            tracing::warn!(%sku, %warehouse, stockpool = ours, odoo, correct = self.correct, "stock differs from Odoo");
            if self.correct {
                self.set(&sku, &warehouse, odoo, "odoo reconciliation")
                    .await?;
            }
            drift.differing.push(Correction {
                sku: sku.to_string(),
                warehouse: warehouse.to_string(),
                before: ours,
                after: odoo,
            });
        }
        let units: i64 = drift
            .differing
            .iter()
            .map(|c| (c.after - c.before).abs())
            .sum();
        telemetry::odoo_reconciled(drift.differing.len(), units, self.correct);
        Ok(drift)
    }

    /// Reconciles every `every` until `stop`.
    pub async fn run_reconciliation(
        self: Arc<Self>,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            match self.reconcile().await {
                Ok(d) => tracing::info!(
                    compared = d.compared,
                    differing = d.differing.len(),
                    corrected = d.corrected && !d.differing.is_empty(),
                    unknown_in_odoo = d.unknown_in_odoo.len(),
                    "reconciled stock with Odoo"
                ),
                Err(e) => {
                    telemetry::odoo_reconcile_failed();
                    tracing::warn!(error = %telemetry::chain(&e), "stock reconciliation with Odoo failed; next in {:?}", every);
                }
            }
        }
    }

    fn declared_warehouses(&self) -> Vec<WarehouseCode> {
        self.engine
            .catalog()
            .warehouses
            .iter()
            .map(|w| w.code.clone())
            .collect()
    }

    /// on_hand per pool of these SKUs (all when empty).
    fn on_hand_of(&self, skus: &[Sku]) -> HashMap<(Sku, WarehouseCode), i64> {
        self.engine
            .get_stock(skus)
            .into_iter()
            .map(|l| ((l.sku, l.warehouse), l.pool.on_hand))
            .collect()
    }

    async fn set(
        &self,
        sku: &Sku,
        warehouse: &WarehouseCode,
        on_hand: i64,
        reason: &str,
    ) -> Result<(), SyncError> {
        self.engine
            .set_stock(SetCmd {
                sku: sku.clone(),
                warehouse: warehouse.clone(),
                on_hand,
                reason: reason.to_string(),
                expected_version: None,
                movement_id: None,
            })
            .await?;
        Ok(())
    }
}

/// Odoo counts in floats; stockpool in whole units. A fraction (a product
/// counted by weight) is rounded down: stockpool never offers part of a
/// unit it does not have.
fn whole(q: f64) -> i64 {
    if q.is_finite() {
        q.floor().max(0.0).min(crate::domain::MAX_QUANTITY as f64) as i64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odoo_counts_become_whole_units_rounded_down() {
        assert_eq!(
            [whole(5.0), whole(2.75), whole(-1.0), whole(f64::NAN)],
            [5, 2, 0, 0]
        );
    }
}
