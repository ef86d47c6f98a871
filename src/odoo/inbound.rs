//! Stock from Odoo into stockpool: the notifications of Odoo's "Send
//! Webhook Notification" actions on `stock.quant` and `stock.picking`, and
//! the periodic reconciliation.
//!
//! Odoo sends a notification from inside the transaction that made the
//! change, before it commits, and waits at most a second for the answer. So
//! a notification is only noted and answered at once; Odoo is read
//! `webhook_delay` later, once its commit can have happened, and again
//! `webhook_recheck` later in case the commit was slow. A repeated
//! notification schedules both reads again. Each read takes Odoo's figures
//! as they are then, so the committed count wins however late or often the
//! notifications come.
//!
//! One product is synced at a time per SKU. With Odoo as the master of
//! physical stock ([`StockMaster::Erp`]), a sync reads, in this order, what
//! Odoo delivered on the orders of stockpool's reservations that still hold
//! units of the SKU, then the counts, and hands both to
//! [`Engine::follow_erp`] as one movement: Odoo commits a delivery and the
//! count it lowers together, so a count read after the deliveries never
//! misses one of them, and free stock is never overstated. Without it, a
//! sync sets each differing count with `SetStock`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{watch, Mutex as AsyncMutex, Notify};
use tokio::time::Instant;

use super::push::{many2one_id, order_ref, PushError};
use super::stock::StockReader;
use crate::domain::{ChannelCode, OrderId, Sku, StockMaster, WarehouseCode};
use crate::engine::{Engine, EngineError, ErpDelivery, ErpStock, SetCmd};
use crate::telemetry;

/// Most reads waiting at once; beyond, the oldest are dropped (the
/// reconciliation catches up) and a warning is logged.
const MAX_QUEUED: usize = 100_000;

/// Why a notification or a reconciliation did not apply.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The body is not a notification stockpool can use.
    #[error("{0}")]
    BadRequest(String),
    /// Odoo could not be read.
    #[error("reading Odoo failed: {0}")]
    Odoo(#[from] PushError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// One count changed by a sync or a reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Correction {
    pub sku: String,
    pub warehouse: String,
    pub before: i64,
    pub after: i64,
    /// Units Odoo delivered that this movement booked.
    pub delivered: i64,
}

/// What the webhook answers: the notification was taken, and when Odoo
/// will be read for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// `stock.quant` or `stock.picking`.
    pub model: String,
    pub id: i64,
    /// The product, when the notification names it.
    pub product_id: Option<i64>,
    /// Milliseconds from now at which Odoo is read.
    pub read_in_ms: Vec<u64>,
}

/// What a reconciliation found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// Pools whose on-hand differs from Odoo's count.
    pub differing: Vec<Correction>,
    /// SKUs with deliveries Odoo made that stockpool had not booked.
    pub undelivered: Vec<String>,
    /// Whether the drift was corrected.
    pub corrected: bool,
    /// Pools compared.
    pub compared: usize,
    /// SKUs stockpool holds that Odoo has no product for.
    pub unknown_in_odoo: Vec<String>,
}

/// What to read from Odoo.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Job {
    Product(i64),
    /// A quant whose notification did not name its product.
    Quant(i64),
    Picking(i64),
}

#[derive(Default)]
struct Queue {
    /// By due time, then arrival.
    due: BTreeMap<(Instant, u64), Job>,
    next: u64,
    /// Jobs taken off `due` and not finished yet.
    running: usize,
}

/// The inbound side of the Odoo connection.
pub struct Inbound {
    engine: Engine,
    reader: StockReader,
    secret: Option<String>,
    correct: bool,
    master: StockMaster,
    delay: Duration,
    recheck: Duration,
    queue: Mutex<Queue>,
    wake: Notify,
    /// One sync at a time per SKU: a read and its apply are not
    /// interleaved with another's.
    locks: Mutex<HashMap<Sku, Arc<AsyncMutex<()>>>>,
}

impl Inbound {
    pub fn new(engine: Engine, reader: StockReader, config: &super::OdooConfig) -> Inbound {
        Inbound {
            engine,
            reader,
            secret: config.webhook_secret.clone(),
            correct: config.reconcile_correct,
            master: config.stock_master,
            delay: config.webhook_delay,
            recheck: config.webhook_recheck,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            locks: Mutex::new(HashMap::new()),
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

    /// Takes one notification: checks its shape and schedules the reads.
    /// Reads nothing from Odoo: Odoo has not committed yet.
    pub fn notice(&self, body: &Value) -> Result<Notice, SyncError> {
        let model = body.get("_model").and_then(Value::as_str).unwrap_or("");
        let id = body.get("_id").and_then(Value::as_i64).filter(|id| *id > 0);
        let job = match (model, id) {
            ("stock.quant" | "stock.picking", None) => {
                return Err(SyncError::BadRequest(format!(
                    "_id is missing or not a record id in a {model} notification"
                )))
            }
            ("stock.quant", Some(id)) => match many2one_id(body.get("product_id")) {
                Some(p) => Job::Product(p),
                None => Job::Quant(id),
            },
            ("stock.picking", Some(id)) => Job::Picking(id),
            _ => {
                return Err(SyncError::BadRequest(format!(
                    "_model is {model:?}; this webhook takes stock.quant and stock.picking notifications"
                )))
            }
        };
        let product_id = match job {
            Job::Product(p) => Some(p),
            _ => None,
        };
        self.schedule(job);
        Ok(Notice {
            model: model.to_string(),
            id: id.unwrap_or_default(),
            product_id,
            read_in_ms: [self.delay, self.recheck]
                .iter()
                .map(|d| d.as_millis() as u64)
                .collect(),
        })
    }

    /// Schedules `job` after the delay and after the recheck, unless the
    /// same read is already due about then.
    fn schedule(&self, job: Job) {
        let now = Instant::now();
        let slack = self.delay / 2;
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        for after in [self.delay, self.recheck] {
            let at = now + after;
            let near = queue
                .due
                .range((at - slack.min(after), 0)..=(at + slack, u64::MAX))
                .any(|(_, j)| *j == job);
            if near {
                continue;
            }
            let seq = queue.next;
            queue.next += 1;
            queue.due.insert((at, seq), job.clone());
        }
        while queue.due.len() > MAX_QUEUED {
            let dropped = queue.due.pop_first();
            tracing::warn!(
                ?dropped,
                "too many Odoo reads waiting; dropped the oldest (the reconciliation catches up)"
            );
        }
        drop(queue);
        self.wake.notify_one();
    }

    /// Runs the scheduled reads until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let next = {
                let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                queue.due.first_key_value().map(|((at, _), _)| *at)
            };
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.wake.notified() => continue,
                _ = stop.changed() => return,
            }
            let due: Vec<Job> = {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let mut due = Vec::new();
                while let Some(entry) = queue.due.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    due.push(entry.remove());
                }
                queue.running += due.len();
                due
            };
            let taken = due.len();
            let mut seen = BTreeSet::new();
            for job in due.into_iter().filter(|j| seen.insert(j.clone())) {
                match self.read(&job).await {
                    Ok(changed) => {
                        telemetry::odoo_sync("applied");
                        if !changed.is_empty() {
                            tracing::info!(?job, ?changed, "stock follows Odoo");
                        }
                    }
                    Err(e) => {
                        telemetry::odoo_sync("failed");
                        tracing::warn!(?job, error = %telemetry::chain(&e), "could not follow an Odoo notification; the next read or the reconciliation catches up");
                    }
                }
            }
            self.queue.lock().unwrap_or_else(|p| p.into_inner()).running -= taken;
        }
    }

    /// Waits until no read is scheduled or running: every notification
    /// taken so far has been followed (tests, and a drain before stop).
    pub async fn idle(&self) {
        loop {
            {
                let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if queue.due.is_empty() && queue.running == 0 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Reads what one job names and syncs its products.
    async fn read(&self, job: &Job) -> Result<Vec<Correction>, SyncError> {
        match *job {
            Job::Product(p) => self.sync_product(p, "odoo stock.quant webhook").await,
            Job::Quant(q) => match self.reader.product_of_quant(q).await? {
                Some(p) => self.sync_product(p, "odoo stock.quant webhook").await,
                None => {
                    tracing::debug!(
                        quant = q,
                        "Odoo has no such quant (emptied and removed); nothing to read"
                    );
                    Ok(Vec::new())
                }
            },
            Job::Picking(id) => {
                let picking = match self.reader.picking(id).await {
                    Ok(p) => p,
                    // An Odoo that cannot say which order a picking is of:
                    // every SKU the ERP may be delivering is read.
                    Err(PushError::Permanent(reason)) => {
                        tracing::warn!(picking = id, %reason, "could not read the picking's sale order; reading every SKU awaiting delivery");
                        return self.sync_awaiting("odoo stock.picking webhook").await;
                    }
                    Err(e) => return Err(e.into()),
                };
                let Some(picking) = picking else {
                    tracing::debug!(picking = id, "Odoo has no such picking (yet)");
                    return Ok(Vec::new());
                };
                let Some(order) = picking.sale_order else {
                    // Receipts and internal moves: their quants notify.
                    return Ok(Vec::new());
                };
                let reason = format!("odoo stock.picking {} ({})", picking.name, picking.state);
                let mut out = Vec::new();
                for p in self.reader.order_products(order).await? {
                    out.extend(self.sync_product(p, &reason).await?);
                }
                Ok(out)
            }
        }
    }

    /// Syncs every SKU some reservation the ERP may deliver holds.
    async fn sync_awaiting(&self, reason: &str) -> Result<Vec<Correction>, SyncError> {
        let skus = self.engine.skus_awaiting_delivery();
        let products = self.reader.products_of(&skus).await?;
        let mut out = Vec::new();
        for sku in &skus {
            if let Some(p) = products.get(sku) {
                out.extend(self.sync_product(*p, reason).await?);
            }
        }
        Ok(out)
    }

    fn lock_for(&self, sku: &Sku) -> Arc<AsyncMutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(sku.clone())
            .or_default()
            .clone()
    }

    /// Makes one product's pools follow Odoo (see the module header).
    pub async fn sync_product(
        &self,
        product: i64,
        reason: &str,
    ) -> Result<Vec<Correction>, SyncError> {
        let Some(sku) = self.reader.skus_of(&[product]).await?.remove(&product) else {
            tracing::debug!(
                product,
                "Odoo product without a valid internal reference; not stockpool's"
            );
            return Ok(Vec::new());
        };
        let lock = self.lock_for(&sku);
        let _one_at_a_time = lock.lock().await;
        let warehouses = self.reader.warehouse_ids().await?;
        if self.master == StockMaster::Stockpool {
            return self.set_counts(&sku, product, &warehouses, reason).await;
        }
        // Deliveries first, counts after: see the module header.
        let delivered = self.deliveries(&sku, product, &warehouses).await?;
        let totals = self.reader.totals(&warehouses, Some(product)).await?;
        let mut counts: Vec<(WarehouseCode, i64)> = warehouses
            .values()
            .map(|w| {
                let count = totals
                    .counts
                    .get(&(sku.clone(), w.clone()))
                    .copied()
                    .unwrap_or(0);
                (w.clone(), count)
            })
            .collect();
        counts.sort();
        let followed = self
            .engine
            .follow_erp(ErpStock {
                sku: sku.clone(),
                counts,
                delivered,
                reason: reason.to_string(),
            })
            .await?;
        Ok(followed
            .into_iter()
            .map(|f| Correction {
                sku: sku.to_string(),
                warehouse: f.warehouse.to_string(),
                before: f.before.on_hand,
                after: f.after.on_hand,
                delivered: f.delivered,
            })
            .collect())
    }

    /// What Odoo delivered on the orders of reservations that still hold
    /// units of `sku` in a warehouse Odoo has.
    async fn deliveries(
        &self,
        sku: &Sku,
        product: i64,
        warehouses: &HashMap<i64, WarehouseCode>,
    ) -> Result<Vec<ErpDelivery>, SyncError> {
        let mapped: BTreeSet<&WarehouseCode> = warehouses.values().collect();
        let mut lines: HashMap<String, (ChannelCode, OrderId, WarehouseCode)> = HashMap::new();
        for a in self.engine.awaiting_delivery(sku).await {
            if mapped.contains(&a.warehouse) {
                let reference = order_ref(&a.channel, a.order_id.as_str(), &a.warehouse);
                lines.insert(reference, (a.channel, a.order_id, a.warehouse));
            }
        }
        let references: Vec<String> = lines.keys().cloned().collect();
        let mut totals: BTreeMap<String, (i64, BTreeSet<String>)> = BTreeMap::new();
        for d in self.reader.delivered(&references, Some(product)).await? {
            let entry = totals.entry(d.reference).or_default();
            entry.0 += d.units;
            entry.1.insert(d.order);
        }
        Ok(totals
            .into_iter()
            .filter_map(|(reference, (units, orders))| {
                let (channel, order_id, warehouse) = lines.remove(&reference)?;
                Some(ErpDelivery {
                    channel,
                    order_id,
                    warehouse,
                    delivered: units,
                    reference: orders.into_iter().collect::<Vec<_>>().join(", "),
                })
            })
            .collect())
    }

    /// Without Odoo as master: sets each differing count with SetStock.
    async fn set_counts(
        &self,
        sku: &Sku,
        product: i64,
        warehouses: &HashMap<i64, WarehouseCode>,
        reason: &str,
    ) -> Result<Vec<Correction>, SyncError> {
        let totals = self.reader.totals(warehouses, Some(product)).await?;
        let current = self.on_hand_of(std::slice::from_ref(sku));
        let mut ordered: Vec<&WarehouseCode> = warehouses.values().collect();
        ordered.sort();
        let mut out = Vec::new();
        for warehouse in ordered {
            let key = (sku.clone(), warehouse.clone());
            let counted = totals.counts.get(&key).copied().unwrap_or(0);
            let before = current.get(&key).copied().unwrap_or(0);
            if before == counted {
                continue;
            }
            self.engine
                .set_stock(SetCmd {
                    sku: sku.clone(),
                    warehouse: warehouse.clone(),
                    on_hand: counted,
                    reason: reason.to_string(),
                    expected_version: None,
                    movement_id: None,
                })
                .await?;
            out.push(Correction {
                sku: sku.to_string(),
                warehouse: warehouse.to_string(),
                before,
                after: counted,
                delivered: 0,
            });
        }
        Ok(out)
    }

    /// Compares every count Odoo holds in stockpool's warehouses with the
    /// pools and, with Odoo as master, what Odoo delivered with what
    /// stockpool booked; logs and counts each difference and, when
    /// configured, syncs the SKUs that differ (reading Odoo again for each,
    /// so a change since the bulk read is not undone).
    pub async fn reconcile(&self) -> Result<Drift, SyncError> {
        let warehouses = self.reader.warehouse_ids().await?;
        let totals = self.reader.totals(&warehouses, None).await?;
        let held = self.on_hand_of(&[]);
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
        let mut products = totals.products.clone();
        products.extend(self.reader.products_of(&missing).await?);
        let mut drift = Drift {
            corrected: self.correct,
            ..Drift::default()
        };
        let mut to_sync: BTreeSet<Sku> = BTreeSet::new();
        for (sku, warehouse) in keys {
            let odoo = match totals.counts.get(&(sku.clone(), warehouse.clone())) {
                Some(q) => *q,
                None if products.contains_key(&sku) => 0,
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
            to_sync.insert(sku.clone());
            drift.differing.push(Correction {
                sku: sku.to_string(),
                warehouse: warehouse.to_string(),
                before: ours,
                after: odoo,
                delivered: 0,
            });
        }
        if self.master == StockMaster::Erp {
            for sku in self.undelivered(&warehouses).await? {
                tracing::warn!(%sku, correct = self.correct, "Odoo delivered units stockpool has not booked");
                drift.undelivered.push(sku.to_string());
                to_sync.insert(sku);
            }
        }
        if self.correct {
            for sku in &to_sync {
                let Some(product) = products.get(sku).copied() else {
                    continue;
                };
                self.sync_product(product, "odoo reconciliation").await?;
            }
        }
        let units: i64 = drift
            .differing
            .iter()
            .map(|c| (c.after - c.before).abs())
            .sum();
        telemetry::odoo_reconciled(drift.differing.len(), units, self.correct);
        Ok(drift)
    }

    /// SKUs of which Odoo delivered more on stockpool's orders than
    /// stockpool booked (a picking notification lost).
    async fn undelivered(
        &self,
        warehouses: &HashMap<i64, WarehouseCode>,
    ) -> Result<Vec<Sku>, SyncError> {
        let mapped: BTreeSet<&WarehouseCode> = warehouses.values().collect();
        let mut booked: HashMap<(String, Sku), i64> = HashMap::new();
        for sku in self.engine.skus_awaiting_delivery() {
            for a in self.engine.awaiting_delivery(&sku).await {
                if mapped.contains(&a.warehouse) {
                    let reference = order_ref(&a.channel, a.order_id.as_str(), &a.warehouse);
                    *booked.entry((reference, sku.clone())).or_default() += a.delivered;
                }
            }
        }
        let references: Vec<String> = booked
            .keys()
            .map(|(r, _)| r.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let delivered = self.reader.delivered(&references, None).await?;
        let mut products: Vec<i64> = delivered.iter().map(|d| d.product).collect();
        products.sort_unstable();
        products.dedup();
        let names = self.reader.skus_of(&products).await?;
        let mut odoo: HashMap<(String, Sku), i64> = HashMap::new();
        for d in delivered {
            if let Some(sku) = names.get(&d.product) {
                *odoo.entry((d.reference, sku.clone())).or_default() += d.units;
            }
        }
        let behind: BTreeSet<Sku> = odoo
            .into_iter()
            .filter(|(key, units)| booked.get(key).is_some_and(|b| units > b))
            .map(|((_, sku), _)| sku)
            .collect();
        Ok(behind.into_iter().collect())
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
            // Paused while this server is not the current one (isolated:
            // its corrections could not be committed).
            if !self.engine.is_current() {
                continue;
            }
            match self.reconcile().await {
                Ok(d) => tracing::info!(
                    compared = d.compared,
                    differing = d.differing.len(),
                    undelivered = d.undelivered.len(),
                    corrected =
                        d.corrected && !(d.differing.is_empty() && d.undelivered.is_empty()),
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

    /// on_hand per pool of these SKUs (all when empty).
    fn on_hand_of(&self, skus: &[Sku]) -> HashMap<(Sku, WarehouseCode), i64> {
        self.engine
            .get_stock(skus)
            .into_iter()
            .map(|l| ((l.sku, l.warehouse), l.pool.on_hand))
            .collect()
    }
}
