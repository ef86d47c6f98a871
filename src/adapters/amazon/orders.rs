//! Orders in: getOrders polled by `LastUpdatedAfter`, each order's items
//! read once (getOrderItems, following `NextToken`), each order brought to
//! the reservation its status means:
//!
//! | Amazon `OrderStatus` | stockpool |
//! | --- | --- |
//! | `PendingAvailability`, `Pending` (not paid yet) | Reserve with a hold of `hold_s`; held again (a new generation) while still Pending near its end |
//! | `Unshipped`, `PartiallyShipped` | Confirm (a confirmed Reserve when first seen so) |
//! | `Shipped`, `InvoiceUnconfirmed` | Fulfill every open unit, `shipment_id` `<order>:shipped` (idempotent) |
//! | `Canceled`, `Unfulfillable` | Release every open unit |
//!
//! # The window polled
//!
//! Each poll asks for orders updated in
//! `[end of the last poll − overlap, now − data_delay]`: `LastUpdatedBefore`
//! respects the two-minute rule (Amazon refuses a later one, and its data is
//! not complete before), the overlap takes the orders whose update showed up
//! late. The end of the window is stored (in the adapter's state) only once
//! every order in it is applied, so a crash polls the same window again;
//! every step above is idempotent in stockpool (Reserve on the order id,
//! Confirm of a confirmed one, Fulfill on its shipment id, Release of a
//! released one), so an order seen twice changes nothing.
//!
//! # Holds
//!
//! A Pending order is reserved with a hold: Amazon cancels orders that are
//! never paid, and a cancel the adapter misses must not keep the units.
//! An order still Pending near the end of its hold is reserved again under
//! the order id `<amazon id>/<generation>` before the old hold is released,
//! so its units are never free in between (when stock is too short for
//! both at once, the old hold goes first and the new one follows at once).
//! The generation in use is kept
//! per order; every later step uses it.
//!
//! FBA orders (`FulfillmentChannel` `AFN`) ship from Amazon's stock: they
//! are skipped and counted unless `include_afn`.

use std::collections::BTreeMap;
use std::time::Instant;

use hyper::Method;
use serde_json::Value;
use tonic::Code;

use super::config::AmazonConfig;
use super::iso;
use super::spapi::{enc, Auth, SpApi, SpError};
use crate::adapters::state::StateDb;
use crate::adapters::{metrics, micros, price_text, valid_sku, Upstream};
use crate::api::pb;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What an order's status asks of stockpool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Want {
    Held,
    Confirmed,
    Fulfilled,
    Released,
    /// A status the adapter does not act on.
    Nothing,
}

pub fn want(status: &str) -> Want {
    match status {
        "PendingAvailability" | "Pending" => Want::Held,
        "Unshipped" | "PartiallyShipped" => Want::Confirmed,
        "Shipped" | "InvoiceUnconfirmed" => Want::Fulfilled,
        "Canceled" | "Unfulfillable" => Want::Released,
        _ => Want::Nothing,
    }
}

/// One line as reserved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Line {
    /// The stockpool SKU (the SellerSKU through `sku_map`).
    pub sku: String,
    /// Units ordered, summed over the order's items of this SKU.
    pub quantity: i64,
    /// Per unit, decimal; empty when Amazon gave no price.
    pub unit_price: String,
}

/// What the adapter knows of one Amazon order (its state database).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct OrderState {
    /// The last status applied.
    status: String,
    /// Lines as first reserved (a later read may differ: prices appear
    /// once paid; the reservation keeps the first).
    lines: Option<Vec<Line>>,
    currency: String,
    customer_ref: String,
    /// 0: not reserved yet; 1: reserved as the Amazon id; n: as `<id>/n`.
    generation: u32,
    /// When the current generation's hold ends (0: confirmed).
    held_until_ms: i64,
    /// Released or fulfilled in stockpool: nothing more to do.
    closed: bool,
    /// Never applies (refused by stockpool, FBA, no line with a SKU).
    skipped: Option<String>,
}

/// An order as getOrders gives it (the fields used).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AmazonOrder {
    /// `3-7-7` digits: the order id in stockpool.
    pub amazon_order_id: String,
    /// When the buyer placed it: the start of the in-flight window.
    pub purchase_date: String,
    /// What the poll window selects on (and the order orders are applied in).
    pub last_update_date: String,
    /// Pending, Unshipped, PartiallyShipped, Shipped, Canceled, ...
    pub order_status: String,
    /// `AFN` (Amazon ships from its stock) or `MFN` (we ship).
    #[serde(default)]
    pub fulfillment_channel: Option<String>,
    /// Amazon Business: the buyer becomes the customer_ref.
    #[serde(default)]
    pub is_business_order: Option<bool>,
    /// Restricted data: empty without the roles for it.
    #[serde(default)]
    pub buyer_info: Option<Value>,
    /// Kept for the log; prices come from the items.
    #[serde(default)]
    pub order_total: Option<Value>,
}

/// The orders side: polls, applies, renews holds.
pub struct Orders {
    api: std::sync::Arc<SpApi>,
    /// stockpool, where the orders become reservations.
    upstream: Upstream,
    /// The orders' records and the end of the last window polled.
    db: StateDb,
    config: AmazonConfig,
    /// Milliseconds more taken off the window's end after Amazon refused
    /// it as too recent (this host's clock runs ahead of Amazon's).
    skew_ms: std::sync::atomic::AtomicI64,
    /// When the Tokens API last refused the buyer-info RDT (ms, 0:
    /// never): it is not asked for again before [`RDT_RETRY_MS`].
    rdt_refused_ms: std::sync::atomic::AtomicI64,
}

/// How long after a refused Restricted Data Token (a missing role) getOrders
/// goes without one before the RDT is asked for again.
const RDT_RETRY_MS: i64 = 600_000;

fn code_name(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

impl Orders {
    pub fn new(
        api: std::sync::Arc<SpApi>,
        upstream: Upstream,
        db: StateDb,
        config: AmazonConfig,
    ) -> Orders {
        Orders {
            api,
            upstream,
            db,
            config,
            skew_ms: std::sync::atomic::AtomicI64::new(0),
            rdt_refused_ms: std::sync::atomic::AtomicI64::new(0),
        }
    }

    pub async fn init(db: &StateDb) -> anyhow::Result<()> {
        for statement in [
            "CREATE TABLE IF NOT EXISTS amazon_orders (
                order_id TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                -- When the open hold ends (0: none), for the renewal scan.
                hold_until INTEGER NOT NULL DEFAULT 0
            )",
            "CREATE INDEX IF NOT EXISTS amazon_orders_holds ON amazon_orders (hold_until) WHERE hold_until > 0",
            "CREATE TABLE IF NOT EXISTS amazon_poll (id INTEGER PRIMARY KEY CHECK (id = 1), until_ms INTEGER NOT NULL)",
        ] {
            sqlx::query(statement).execute(db.pool()).await?;
        }
        Ok(())
    }

    async fn load(&self, id: &str) -> anyhow::Result<OrderState> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT state FROM amazon_orders WHERE order_id = ?1")
                .bind(id)
                .fetch_optional(self.db.pool())
                .await?;
        Ok(match text {
            Some(t) => serde_json::from_str(&t)?,
            None => OrderState::default(),
        })
    }

    async fn save(&self, id: &str, state: &OrderState) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO amazon_orders (order_id, state, hold_until) VALUES (?1, ?2, ?3)
             ON CONFLICT (order_id) DO UPDATE SET state = excluded.state, hold_until = excluded.hold_until",
        )
        .bind(id)
        .bind(serde_json::to_string(state)?)
        .bind(if state.closed || state.skipped.is_some() {
            0
        } else {
            state.held_until_ms
        })
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// The end of the last window fully applied (None: never polled).
    pub async fn polled_until(&self) -> anyhow::Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT until_ms FROM amazon_poll WHERE id = 1")
                .fetch_optional(self.db.pool())
                .await?,
        )
    }

    async fn set_polled_until(&self, ms: i64) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO amazon_poll (id, until_ms) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET until_ms = excluded.until_ms")
            .bind(ms)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// One poll: the window's orders, every page, applied oldest update
    /// first; then its end stored. Err: not applied (Amazon or stockpool
    /// unreachable); the same window is polled again.
    pub async fn poll(&self) -> Result<usize, String> {
        let now = now_ms();
        let delay = self.config.data_delay.as_millis() as i64;
        // A margin (a second, less for a shortened rule): the clocks of
        // Amazon and this host differ.
        let skew = self.skew_ms.load(std::sync::atomic::Ordering::Relaxed);
        let before = now - delay - (delay / 20).min(1000) - skew;
        let until = self
            .polled_until()
            .await
            .map_err(|e| format!("the adapter's state: {e}"))?;
        let after = match until {
            Some(u) => u - self.config.overlap.as_millis() as i64,
            None => now - self.config.start_back.as_millis() as i64,
        }
        .min(before - 1);
        let mut orders: Vec<AmazonOrder> = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mp = enc(&self.config.marketplace_id);
            let query = match &next {
                Some(token) => format!("/orders/v0/orders?MarketplaceIds={mp}&NextToken={}", enc(token)),
                None => format!(
                    "/orders/v0/orders?MarketplaceIds={mp}&LastUpdatedAfter={}&LastUpdatedBefore={}&MaxResultsPerPage={}",
                    enc(&iso::format(after)),
                    enc(&iso::format(before)),
                    self.config.page_size
                ),
            };
            let page = match self.get_orders(&query).await {
                Ok(page) => page,
                Err(e @ SpError::Refused { status: 400, .. }) if next.is_none() => {
                    // Most likely this host's clock runs ahead of Amazon's:
                    // end the next windows a few seconds earlier (up to a
                    // minute more).
                    let more = (skew + 5000).min(60_000);
                    self.skew_ms
                        .store(more, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(channel = %self.config.channel, error = %e, skew_ms = more, "Amazon refused the window; ending it earlier from now on");
                    return Err(e.to_string());
                }
                Err(e) => return Err(e.to_string()),
            };
            let payload = page.get("payload").cloned().unwrap_or(Value::Null);
            for o in payload
                .get("Orders")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match serde_json::from_value::<AmazonOrder>(o.clone()) {
                    Ok(order) => orders.push(order),
                    Err(e) => {
                        tracing::warn!(channel = %self.config.channel, error = %e, order = %o, "an order getOrders gave in an unexpected shape; skipped")
                    }
                }
            }
            next = payload
                .get("NextToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if next.is_none() {
                break;
            }
        }
        orders.sort_by_key(|o| iso::parse(&o.last_update_date).unwrap_or(0));
        let count = orders.len();
        for order in orders {
            self.apply(&order).await?;
        }
        self.set_polled_until(before)
            .await
            .map_err(|e| format!("the adapter's state: {e}"))?;
        metrics::poll_lag(&self.config.channel, (now_ms() - before) as f64 / 1000.0);
        self.renew_holds().await?;
        Ok(count)
    }

    /// One getOrders page: with the buyer-info Restricted Data Token when
    /// `buyer_info` is on. When the Tokens API refuses it (the app lacks
    /// the role), the page is read with the access token instead: orders
    /// must flow even without their buyer (customer_ref stays empty), and
    /// the RDT is not asked for again for [`RDT_RETRY_MS`].
    async fn get_orders(&self, query: &str) -> Result<Value, SpError> {
        use std::sync::atomic::Ordering::Relaxed;
        let refused = self.rdt_refused_ms.load(Relaxed);
        if self.config.buyer_info && (refused == 0 || now_ms() - refused >= RDT_RETRY_MS) {
            match self
                .api
                .call_as(Auth::BuyerInfo, "getOrders", Method::GET, query, None)
                .await
            {
                Err(SpError::Refused {
                    op: "createRestrictedDataToken",
                    status,
                    code,
                    message,
                }) => {
                    self.rdt_refused_ms.store(now_ms(), Relaxed);
                    metrics::channel_error(&self.config.channel);
                    tracing::warn!(channel = %self.config.channel, status, code = %code, message = %message, "Amazon refused the restricted data token for buyerInfo; orders are read without their buyer");
                }
                Err(SpError::Auth(why)) if why.starts_with("createRestrictedDataToken") => {
                    self.rdt_refused_ms.store(now_ms(), Relaxed);
                    metrics::channel_error(&self.config.channel);
                    tracing::warn!(channel = %self.config.channel, error = %why, "Amazon refused the restricted data token for buyerInfo (does the app have the Tax Invoicing role?); orders are read without their buyer");
                }
                other => return other,
            }
        }
        self.api.call("getOrders", Method::GET, query, None).await
    }

    fn key(id: &str, generation: u32) -> String {
        if generation <= 1 {
            id.to_string()
        } else {
            format!("{id}/{generation}")
        }
    }

    async fn unapplied(&self, id: &str, reason: &'static str, detail: String) {
        match self.db.unapplied("getOrders", id, &detail).await {
            Ok(true) => {
                metrics::unapplied(&self.config.channel, reason);
                tracing::warn!(channel = %self.config.channel, order = id, reason, detail = %detail, "an Amazon order that can never apply: listed at /unapplied");
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "could not list an unapplied order"),
        }
    }

    /// The order's lines from getOrderItems, every page: one line per
    /// stockpool SKU (SellerSKU through `sku_map`), quantities summed, the
    /// unit price `ItemPrice.Amount / QuantityOrdered` (Amazon's ItemPrice
    /// is the line's total); the currency; the lines that cannot be held.
    async fn items(&self, id: &str) -> Result<(Vec<Line>, String, Vec<String>), SpError> {
        let mut raw: Vec<Value> = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut path = format!("/orders/v0/orders/{}/orderItems", enc(id));
            if let Some(t) = &next {
                path.push_str(&format!("?NextToken={}", enc(t)));
            }
            let page = self
                .api
                .call("getOrderItems", Method::GET, &path, None)
                .await?;
            let payload = page.get("payload").cloned().unwrap_or(Value::Null);
            raw.extend(
                payload
                    .get("OrderItems")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
            next = payload
                .get("NextToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if next.is_none() {
                break;
            }
        }
        let mut per_sku: BTreeMap<String, (i64, Option<i128>)> = BTreeMap::new();
        let mut currency = String::new();
        let mut without = Vec::new();
        for item in &raw {
            let seller_sku = item
                .get("SellerSKU")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim();
            let quantity = item
                .get("QuantityOrdered")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if quantity <= 0 {
                continue;
            }
            let sku = self
                .config
                .sku_map
                .get(seller_sku)
                .cloned()
                .unwrap_or_else(|| seller_sku.to_string());
            if !valid_sku(&sku) {
                let item_id = item
                    .get("OrderItemId")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                without.push(if seller_sku.is_empty() {
                    format!("order item {item_id} has no SellerSKU")
                } else {
                    format!("order item {item_id}: SellerSKU {seller_sku:?} is not a stockpool SKU (add it to sku_map)")
                });
                continue;
            }
            let price = item
                .pointer("/ItemPrice/Amount")
                .and_then(Value::as_str)
                .and_then(micros);
            if let Some(c) = item
                .pointer("/ItemPrice/CurrencyCode")
                .and_then(Value::as_str)
            {
                currency = c.to_string();
            }
            let entry = per_sku.entry(sku).or_insert((0, Some(0)));
            entry.0 += quantity;
            entry.1 = match (entry.1, price) {
                (Some(total), Some(p)) => Some(total + p as i128),
                _ => None,
            };
        }
        let lines = per_sku
            .into_iter()
            .map(|(sku, (quantity, total))| Line {
                sku,
                quantity,
                unit_price: total
                    .filter(|_| !currency.is_empty())
                    .map(|t| price_text((t / quantity as i128) as i64))
                    .unwrap_or_default(),
            })
            .collect::<Vec<_>>();
        if lines.iter().all(|l| l.unit_price.is_empty()) {
            currency.clear();
        }
        Ok((lines, currency, without))
    }

    /// Brings stockpool to what `order`'s status asks; the record saved
    /// after each step. Err: retry the window later.
    pub async fn apply(&self, order: &AmazonOrder) -> Result<(), String> {
        let id = order.amazon_order_id.as_str();
        let mut state = self
            .load(id)
            .await
            .map_err(|e| format!("the adapter's state: {e}"))?;
        if state.skipped.is_some() || state.closed {
            return Ok(());
        }
        let want = want(&order.order_status);
        if want == Want::Nothing {
            return Ok(());
        }
        if order.fulfillment_channel.as_deref() == Some("AFN") && !self.config.include_afn {
            state.skipped = Some("fulfilled by Amazon (AFN)".into());
            metrics::order(&self.config.channel, "skipped_afn");
            return self
                .save(id, &state)
                .await
                .map_err(|e| format!("the adapter's state: {e}"));
        }
        let result = self.converge(order, want, &mut state).await;
        self.save(id, &state)
            .await
            .map_err(|e| format!("the adapter's state: {e}"))?;
        result
    }

    async fn converge(
        &self,
        order: &AmazonOrder,
        want: Want,
        state: &mut OrderState,
    ) -> Result<(), String> {
        let id = order.amazon_order_id.as_str();
        let Some(conn) = self.upstream.try_get() else {
            return Err("stockpool not connected yet".into());
        };
        let mut inv = conn.inventory();
        let channel = self.config.channel.clone();
        if state.generation == 0 {
            if want == Want::Released {
                // Cancelled before it was ever reserved: nothing to free.
                state.closed = true;
                state.status = order.order_status.clone();
                return Ok(());
            }
            let hold = if want == Want::Held {
                self.config.hold.as_secs() as u32
            } else {
                0
            };
            match self.reserve(order, state, 1, hold, &mut inv).await? {
                true => {}
                false => return Ok(()),
            }
        }
        if matches!(want, Want::Confirmed | Want::Fulfilled) && state.held_until_ms > 0 {
            let started = Instant::now();
            let r = inv
                .confirm(pb::ConfirmRequest {
                    channel: channel.clone(),
                    order_id: Self::key(id, state.generation),
                })
                .await;
            metrics::rpc(&channel, "Confirm", started.elapsed());
            match r {
                Ok(_) => metrics::order(&channel, "confirmed"),
                Err(s) if s.code() == Code::FailedPrecondition => {
                    // The hold ran out before the payment showed: a new
                    // generation, confirmed.
                    let next = state.generation + 1;
                    if !self.reserve(order, state, next, 0, &mut inv).await? {
                        return Ok(());
                    }
                }
                Err(s) => return Err(format!("Confirm: {}", code_name(&s))),
            }
            state.held_until_ms = 0;
        }
        let key = Self::key(id, state.generation);
        match want {
            Want::Held | Want::Nothing | Want::Confirmed => {}
            Want::Fulfilled => {
                let started = Instant::now();
                let r = inv
                    .fulfill(pb::FulfillRequest {
                        channel: channel.clone(),
                        order_id: key.clone(),
                        lines: vec![],
                        shipment_id: format!("{id}:shipped"),
                    })
                    .await;
                metrics::rpc(&channel, "Fulfill", started.elapsed());
                match r {
                    Ok(_) => {
                        metrics::order(&channel, "fulfilled");
                        state.closed = true;
                    }
                    Err(s) if s.code() == Code::FailedPrecondition => {
                        // Expired or released meanwhile: Amazon shipped our
                        // units, so they leave stock: reserve and ship anew.
                        let next = state.generation + 1;
                        if self.reserve(order, state, next, 0, &mut inv).await? {
                            return Box::pin(self.converge(order, want, state)).await;
                        }
                        return Ok(());
                    }
                    Err(s) => return Err(format!("Fulfill: {}", code_name(&s))),
                }
            }
            Want::Released => {
                let started = Instant::now();
                let r = inv
                    .release(pb::ReleaseRequest {
                        channel: channel.clone(),
                        order_id: key.clone(),
                        lines: vec![],
                        reason: format!("{} on Amazon", order.order_status),
                    })
                    .await;
                metrics::rpc(&channel, "Release", started.elapsed());
                match r {
                    Ok(_) => metrics::order(&channel, "released"),
                    // Nothing open any more (expired, or released already).
                    Err(s) if s.code() == Code::FailedPrecondition => {}
                    Err(s) => return Err(format!("Release: {}", code_name(&s))),
                }
                state.closed = true;
            }
        }
        state.status = order.order_status.clone();
        Ok(())
    }

    /// Reserves generation `generation` of the order (hold 0: confirmed).
    /// Ok(false): it can never be (listed for ops).
    async fn reserve(
        &self,
        order: &AmazonOrder,
        state: &mut OrderState,
        generation: u32,
        hold_seconds: u32,
        inv: &mut crate::adapters::Inventory,
    ) -> Result<bool, String> {
        let id = order.amazon_order_id.as_str();
        if state.lines.is_none() {
            let (lines, currency, without) = match self.items(id).await {
                Ok(read) => read,
                Err(e @ SpError::Refused { .. }) => {
                    // Amazon will not give this order's items: listed, and
                    // the window moves on without it.
                    let why = format!("getOrderItems: {e}");
                    state.skipped = Some(why.clone());
                    self.unapplied(id, "items_refused", why).await;
                    return Ok(false);
                }
                Err(e) => return Err(e.to_string()),
            };
            for why in without {
                self.unapplied(id, "line_without_sku", why).await;
            }
            state.lines = Some(lines);
            state.currency = currency;
            state.customer_ref = customer_ref(order);
        }
        let lines = state.lines.clone().unwrap_or_default();
        if lines.is_empty() {
            state.skipped = Some("no line stockpool can hold".into());
            return Ok(false);
        }
        let channel = self.config.channel.clone();
        let request = pb::ReserveRequest {
            channel: channel.clone(),
            order_id: Self::key(id, generation),
            lines: lines
                .iter()
                .map(|l| pb::Line {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                    warehouse: String::new(),
                    unit_price: l.unit_price.clone(),
                })
                .collect(),
            hold_seconds,
            currency: state.currency.clone(),
            customer_ref: state.customer_ref.clone(),
            prices_include_tax: self.config.prices_include_tax,
        };
        let previous = state.generation;
        let mut released_first = false;
        loop {
            let started = Instant::now();
            let r = inv.reserve(request.clone()).await;
            metrics::rpc(&channel, "Reserve", started.elapsed());
            match r {
                Ok(answer) => {
                    let replayed = answer.get_ref().replayed;
                    if !replayed && generation == 1 {
                        if let Some(placed) = iso::parse(&order.purchase_date) {
                            metrics::inflight(&channel, (now_ms() - placed) as f64 / 1000.0);
                        }
                    }
                    metrics::order(
                        &channel,
                        if generation > 1 {
                            "held_again"
                        } else {
                            "reserved"
                        },
                    );
                }
                Err(s) if s.code() == Code::AlreadyExists => {
                    // Reserved before a crash with what Amazon said then.
                    self.unapplied(
                        id,
                        "lines_differ",
                        format!(
                            "stockpool holds this order with other lines or prices: {}",
                            s.message()
                        ),
                    )
                    .await;
                }
                Err(s)
                    if s.code() == Code::FailedPrecondition
                        && previous >= 1
                        && previous != generation
                        && !released_first =>
                {
                    // Not enough for both holds at once (the order takes the
                    // last units): the old one goes first, then the new one.
                    self.release_generation(id, previous, inv).await;
                    released_first = true;
                    continue;
                }
                Err(s)
                    if s.code() == Code::FailedPrecondition
                        || s.code() == Code::InvalidArgument =>
                {
                    let why = format!(
                        "stockpool refused the order (an oversell on Amazon?): {}",
                        code_name(&s)
                    );
                    state.skipped = Some(why.clone());
                    self.unapplied(id, "refused", why).await;
                    return Ok(false);
                }
                Err(s) => return Err(format!("Reserve: {}", code_name(&s))),
            }
            break;
        }
        state.generation = generation;
        state.held_until_ms = if hold_seconds > 0 {
            now_ms() + i64::from(hold_seconds) * 1000
        } else {
            0
        };
        if previous >= 1 && previous != generation && !released_first {
            // The new hold stands: the old one goes (if it did not expire).
            self.release_generation(id, previous, inv).await;
        }
        Ok(true)
    }

    /// Releases what generation `generation` of the order still holds.
    async fn release_generation(
        &self,
        id: &str,
        generation: u32,
        inv: &mut crate::adapters::Inventory,
    ) {
        let channel = &self.config.channel;
        let started = Instant::now();
        let r = inv
            .release(pb::ReleaseRequest {
                channel: channel.clone(),
                order_id: Self::key(id, generation),
                lines: vec![],
                reason: "held again under a new generation".into(),
            })
            .await;
        metrics::rpc(channel, "Release", started.elapsed());
        if let Err(s) = r {
            if s.code() != Code::FailedPrecondition {
                tracing::warn!(channel = %channel, order = id, error = %code_name(&s), "the previous hold could not be released; it expires by itself");
            }
        }
    }

    /// Holds every order still Pending near the end of its hold again.
    async fn renew_holds(&self) -> Result<(), String> {
        let hold = self.config.hold.as_millis() as i64;
        let margin = (hold / 4).min(600_000) + self.config.poll_interval.as_millis() as i64;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT order_id, state FROM amazon_orders WHERE hold_until > 0 AND hold_until <= ?1",
        )
        .bind(now_ms() + margin)
        .fetch_all(self.db.pool())
        .await
        .map_err(|e| format!("the adapter's state: {e}"))?;
        for (id, text) in rows {
            let Ok(mut state) = serde_json::from_str::<OrderState>(&text) else {
                continue;
            };
            if state.closed
                || state.skipped.is_some()
                || state.held_until_ms == 0
                || state.held_until_ms - now_ms() > margin
            {
                continue;
            }
            let Some(conn) = self.upstream.try_get() else {
                return Err("stockpool not connected yet".into());
            };
            let mut inv = conn.inventory();
            let order = AmazonOrder {
                amazon_order_id: id.clone(),
                purchase_date: String::new(),
                last_update_date: String::new(),
                order_status: state.status.clone(),
                fulfillment_channel: None,
                is_business_order: None,
                buyer_info: None,
                order_total: None,
            };
            let next = state.generation + 1;
            let hold_s = self.config.hold.as_secs() as u32;
            let result = self
                .reserve(&order, &mut state, next, hold_s, &mut inv)
                .await;
            self.save(&id, &state)
                .await
                .map_err(|e| format!("the adapter's state: {e}"))?;
            result?;
            tracing::info!(channel = %self.config.channel, order = %id, generation = next, "still Pending on Amazon at the end of its hold: held again");
        }
        Ok(())
    }
}

/// A business order's buyer: the company's legal name
/// (`BuyerTaxInfo.CompanyLegalName`), else the buyer's e-mail (Amazon's
/// anonymised relay address); empty for retail and when Amazon gave no
/// `BuyerInfo` (no Restricted Data Token). The company first: it is who
/// the invoice is made out to and the same for every buyer of that
/// business, where the relay address is one person's. Control characters
/// become spaces and the text is cut to the 200 characters stockpool
/// accepts.
fn customer_ref(order: &AmazonOrder) -> String {
    if order.is_business_order != Some(true) {
        return String::new();
    }
    let info = order.buyer_info.as_ref();
    let get = |p: &str| {
        info.and_then(|i| i.pointer(p))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    get("/BuyerTaxInfo/CompanyLegalName")
        .or_else(|| get("/BuyerEmail"))
        .map(|s| {
            let text: String = s
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(200)
                .collect();
            text.trim().to_string()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_asks_for_its_step() {
        assert_eq!(want("Pending"), Want::Held);
        assert_eq!(want("PendingAvailability"), Want::Held);
        assert_eq!(want("Unshipped"), Want::Confirmed);
        assert_eq!(want("PartiallyShipped"), Want::Confirmed);
        assert_eq!(want("Shipped"), Want::Fulfilled);
        assert_eq!(want("Canceled"), Want::Released);
        assert_eq!(want("Whatever"), Want::Nothing);
    }

    #[test]
    fn only_a_business_orders_buyer_becomes_the_customer() {
        let order = |business: bool| AmazonOrder {
            amazon_order_id: "902-3159896-1390916".into(),
            purchase_date: String::new(),
            last_update_date: String::new(),
            order_status: "Pending".into(),
            fulfillment_channel: Some("MFN".into()),
            is_business_order: Some(business),
            buyer_info: Some(
                serde_json::json!({ "BuyerEmail": "abc@marketplace.amazon.de", "BuyerTaxInfo": { "CompanyLegalName": "ACME GmbH" } }),
            ),
            order_total: None,
        };
        assert_eq!(customer_ref(&order(true)), "ACME GmbH");
        assert_eq!(customer_ref(&order(false)), "");
        let mut no_company = order(true);
        no_company.buyer_info =
            Some(serde_json::json!({ "BuyerEmail": "abc@marketplace.amazon.de" }));
        assert_eq!(customer_ref(&no_company), "abc@marketplace.amazon.de");
        let mut no_info = order(true);
        no_info.buyer_info = None;
        assert_eq!(customer_ref(&no_info), "", "no RDT, no buyer");
        let mut long = order(true);
        long.buyer_info = Some(
            serde_json::json!({ "BuyerTaxInfo": { "CompanyLegalName": format!("ACME\nGmbH{}", "x".repeat(300)) } }),
        );
        let text = customer_ref(&long);
        assert_eq!(text.chars().count(), 200);
        assert!(text.starts_with("ACME GmbH"), "{text}");
    }
}
