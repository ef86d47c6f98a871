//! Pushing one outbox entry: makes Odoo's sale orders of the reservation
//! match the entry, one `sale.order` per warehouse, found again by
//! `client_order_ref` = `<channel>:<order_id>:<warehouse>`.
//!
//! A new order carries what the books need: the channel's unit prices
//! (`price_unit`), the currency (through a pricelist in it), the customer
//! (the Odoo contact found for the channel's `customer_ref`, else the
//! channel's partner), and the channel's fiscal position, sales team and
//! company. Odoo computes the fiscal position from the customer when the
//! customer has one of its own.
//!
//! A push converges instead of replaying: it looks at what Odoo holds and
//! does only what is missing (create and confirm, lower a quantity, cancel).
//! Quantities only ever go down, never below what Odoo delivered, and a
//! cancelled order stays cancelled, so a retry after a timeout, or an older
//! entry retried by ops after a newer one went through, never undoes a later
//! change. A second order for the same reference (a create that Odoo
//! committed after the client gave up on it) is cancelled when found.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::rpc::{OdooClient, RpcError};
use super::setup::{self, OdooWarehouse, Setup, SetupError};
use super::{ChannelOdoo, OdooConfig};
use crate::domain::{ChannelCode, Currency, CustomerRef, OrderTerms, Sku, WarehouseCode};
use crate::store::{OutboxEntry, OutboxLine};

/// Why a push did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PushError {
    /// Odoo is down, slow or failing: try again later.
    #[error(transparent)]
    Retry(RpcError),
    /// No retry can fix it (Odoo refused, a SKU Odoo does not know, no
    /// partner for the channel): dead-letter at once, with the reason.
    #[error("{0}")]
    Permanent(String),
}

impl From<RpcError> for PushError {
    /// Odoo's refusals are permanent, failures to answer are not.
    fn from(e: RpcError) -> PushError {
        if e.is_permanent() {
            PushError::Permanent(e.to_string())
        } else {
            PushError::Retry(e)
        }
    }
}

impl From<SetupError> for PushError {
    fn from(e: SetupError) -> PushError {
        match e {
            SetupError::Config(problem) => PushError::Permanent(problem),
            SetupError::Unreachable(e) => e.into(),
        }
    }
}

impl PushError {
    /// The same error, saying which order it was about.
    fn about(self, reference: &str) -> PushError {
        match self {
            PushError::Permanent(m) => PushError::Permanent(format!("{reference}: {m}")),
            retry => retry,
        }
    }
}

/// What a successful push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// A sale order was created. After an attempt that got no answer, that
    /// attempt's order may still commit: the dispatcher looks again later.
    pub created: bool,
    /// Duplicate orders found and cancelled.
    pub duplicates_cancelled: usize,
}

/// The Odoo contact an order is sold to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Customer {
    id: i64,
    /// The contact's own fiscal position, which Odoo applies by itself.
    fiscal_position: Option<i64>,
}

/// Pushes entries through one client, caching what does not change under
/// a running shop: product ids, the checked setup, customers found by
/// reference, pricelists found by currency.
pub struct Pusher {
    client: OdooClient,
    config: OdooConfig,
    /// The warehouses the setup check covers (those declared at start).
    declared: Vec<WarehouseCode>,
    setup: tokio::sync::Mutex<Option<Arc<Setup>>>,
    products: Mutex<HashMap<Sku, i64>>,
    /// Warehouses declared after start, found one by one.
    late_warehouses: Mutex<HashMap<WarehouseCode, OdooWarehouse>>,
    customers: Mutex<HashMap<(ChannelCode, CustomerRef), Customer>>,
    pricelists: Mutex<HashMap<(Option<i64>, Currency), i64>>,
}

/// The `client_order_ref` of a reservation's order from one warehouse.
pub fn order_ref(channel: &ChannelCode, order_id: &str, warehouse: &WarehouseCode) -> String {
    format!("{channel}:{order_id}:{warehouse}")
}

/// An order as searched: id, name, state.
#[derive(Debug, Clone)]
struct FoundOrder {
    id: i64,
    name: String,
    state: String,
}

fn float(row: &Value, field: &str) -> f64 {
    row.get(field).and_then(Value::as_f64).unwrap_or(0.0)
}

impl Pusher {
    /// A pusher for `config`, whose start-up check covers `declared`.
    pub fn new(config: &OdooConfig, declared: Vec<WarehouseCode>) -> anyhow::Result<Pusher> {
        Ok(Pusher {
            client: OdooClient::new(config)?,
            config: config.clone(),
            declared,
            setup: tokio::sync::Mutex::new(None),
            products: Mutex::new(HashMap::new()),
            late_warehouses: Mutex::new(HashMap::new()),
            customers: Mutex::new(HashMap::new()),
            pricelists: Mutex::new(HashMap::new()),
        })
    }

    pub fn client(&self) -> &OdooClient {
        &self.client
    }

    pub fn config(&self) -> &OdooConfig {
        &self.config
    }

    /// The checked setup: checked now when it was not yet (Odoo was down at
    /// start). Only a setup that passed is kept, so fixing Odoo and
    /// retrying works without a restart.
    pub async fn setup(&self) -> Result<Arc<Setup>, SetupError> {
        let mut cached = self.setup.lock().await;
        if let Some(s) = cached.as_ref() {
            return Ok(s.clone());
        }
        let s = Arc::new(setup::check(&self.client, &self.config, &self.declared).await?);
        *cached = Some(s.clone());
        Ok(s)
    }

    /// Makes Odoo hold what `entry` says, warehouse by warehouse.
    pub async fn push(&self, entry: &OutboxEntry) -> Result<Pushed, PushError> {
        let e = &entry.entry;
        let mut by_warehouse: BTreeMap<&WarehouseCode, Vec<&OutboxLine>> = BTreeMap::new();
        for line in &e.lines {
            by_warehouse.entry(&line.warehouse).or_default().push(line);
        }
        let mut pushed = Pushed::default();
        for (warehouse, lines) in by_warehouse {
            let reference = order_ref(&e.channel, e.order_id.as_str(), warehouse);
            let done = self
                .converge(&e.channel, &e.terms, warehouse, &reference, &lines)
                .await
                .map_err(|err| err.about(&reference))?;
            pushed.created |= done.created;
            pushed.duplicates_cancelled += done.duplicates_cancelled;
        }
        Ok(pushed)
    }

    async fn converge(
        &self,
        channel: &ChannelCode,
        terms: &OrderTerms,
        warehouse: &WarehouseCode,
        reference: &str,
        lines: &[&OutboxLine],
    ) -> Result<Pushed, PushError> {
        let wanted: Vec<&OutboxLine> = lines.iter().copied().filter(|l| l.ordered > 0).collect();
        let found = self
            .client
            .execute_kw(
                "sale.order",
                "search_read",
                json!([[["client_order_ref", "=", reference]]]),
                json!({"fields": ["id", "name", "state"], "order": "id"}),
            )
            .await?;
        let orders: Vec<FoundOrder> = found
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| FoundOrder {
                id: o.get("id").and_then(Value::as_i64).unwrap_or(0),
                name: o
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                state: o
                    .get("state")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            })
            .collect();
        if orders.iter().any(|o| o.id <= 0) {
            return Err(PushError::Retry(RpcError::Protocol {
                call: "sale.order.search_read".into(),
                detail: format!("an order without an id for {reference}"),
            }));
        }
        let mut live: Vec<&FoundOrder> = orders.iter().filter(|o| o.state != "cancel").collect();
        if live.is_empty() {
            if !orders.is_empty() || wanted.is_empty() {
                // Cancelled stays cancelled; released before Odoo ever saw
                // it: nothing to create.
                return Ok(Pushed::default());
            }
            self.create(channel, terms, warehouse, reference, &wanted)
                .await?;
            return Ok(Pushed {
                created: true,
                duplicates_cancelled: 0,
            });
        }
        // Keep the confirmed order (else the oldest); cancel the others.
        let keep = live
            .iter()
            .position(|o| o.state == "sale")
            .unwrap_or_default();
        let keeper = live.remove(keep);
        let mut pushed = Pushed::default();
        for stray in live {
            self.cancel(stray.id).await?;
            pushed.duplicates_cancelled += 1;
            crate::telemetry::odoo_duplicate_cancelled();
            tracing::warn!(reference, kept = %keeper.name, cancelled = %stray.name, state = %stray.state, "found two Odoo sale orders for one reservation and warehouse (a create committed after its answer was lost); cancelled the duplicate");
        }
        if wanted.is_empty() {
            self.cancel(keeper.id).await?;
            return Ok(pushed);
        }
        if keeper.state == "draft" || keeper.state == "sent" {
            // Created by an attempt whose answer was lost before it confirmed.
            self.client
                .execute_kw(
                    "sale.order",
                    "action_confirm",
                    json!([[keeper.id]]),
                    json!({}),
                )
                .await?;
        }
        self.lower_lines(keeper, terms, lines, reference).await?;
        Ok(pushed)
    }

    /// Lowers each line to what is ordered, never below what Odoo has
    /// delivered (Odoo refuses that). The price is written with the
    /// quantity: Odoo recomputes `price_unit` from the pricelist when the
    /// quantity alone changes.
    async fn lower_lines(
        &self,
        order: &FoundOrder,
        terms: &OrderTerms,
        lines: &[&OutboxLine],
        reference: &str,
    ) -> Result<(), PushError> {
        let products = self.product_ids(lines.iter().map(|l| &l.sku)).await?;
        let odoo_lines = self
            .client
            .execute_kw(
                "sale.order.line",
                "search_read",
                json!([[["order_id", "=", order.id]]]),
                json!({"fields": ["id", "product_id", "product_uom_qty", "qty_delivered"]}),
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
                let id = odoo.get("id").and_then(Value::as_i64).unwrap_or(0);
                let qty = float(odoo, "product_uom_qty");
                let delivered = float(odoo, "qty_delivered");
                let floor = delivered.ceil().max(0.0) as i64;
                let target = line.ordered.max(floor);
                if target > line.ordered {
                    tracing::warn!(reference, order = %order.name, sku = %line.sku, ordered = line.ordered, delivered, "Odoo delivered more than is still ordered; the line is lowered only to what was delivered");
                }
                if qty > target as f64 + 1e-9 && id > 0 {
                    let mut vals = json!({"product_uom_qty": target});
                    if let Some(price) = terms.unit_price(&line.sku) {
                        vals["price_unit"] = json!(price.as_f64());
                    }
                    self.client
                        .execute_kw("sale.order.line", "write", json!([[id], vals]), json!({}))
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn cancel(&self, order: i64) -> Result<(), PushError> {
        self.client
            .execute_kw(
                "sale.order",
                "action_cancel",
                json!([[order]]),
                json!({"context": {"disable_cancel_warning": true}}),
            )
            .await?;
        Ok(())
    }

    async fn create(
        &self,
        channel: &ChannelCode,
        terms: &OrderTerms,
        warehouse: &WarehouseCode,
        reference: &str,
        wanted: &[&OutboxLine],
    ) -> Result<(), PushError> {
        let settings = self.config.channel(channel);
        let partner = settings.partner.ok_or_else(|| {
            PushError::Permanent(format!(
                "no Odoo partner is configured for channel {channel}: set odoo.channels.{channel}.partner (or odoo.partners.{channel})"
            ))
        })?;
        let warehouse_id = self.warehouse(warehouse).await?.id;
        let customer = self
            .customer(channel, &settings, terms.customer_ref.as_ref())
            .await?;
        let pricelist = self
            .pricelist(channel, &settings, terms.currency.as_ref())
            .await?;
        let products = self.product_ids(wanted.iter().map(|l| &l.sku)).await?;
        let order_line: Vec<Value> = wanted
            .iter()
            .map(|l| {
                let mut vals =
                    json!({"product_id": products[&l.sku], "product_uom_qty": l.ordered});
                if let Some(price) = terms.unit_price(&l.sku) {
                    vals["price_unit"] = json!(price.as_f64());
                }
                json!([0, 0, vals])
            })
            .collect();
        let mut vals = json!({
            "partner_id": customer.map_or(partner, |c| c.id),
            "warehouse_id": warehouse_id,
            "client_order_ref": reference,
            "order_line": order_line,
        });
        // A customer's own fiscal position is Odoo's to apply; otherwise
        // the channel's (Amazon remits the tax on marketplace orders).
        if customer.is_none_or(|c| c.fiscal_position.is_none()) {
            if let Some(fp) = settings.fiscal_position {
                vals["fiscal_position_id"] = json!(fp);
            }
        }
        if let Some(p) = pricelist {
            vals["pricelist_id"] = json!(p);
        }
        if let Some(t) = settings.team {
            vals["team_id"] = json!(t);
        }
        if let Some(c) = settings.company {
            vals["company_id"] = json!(c);
        }
        let created = self
            .client
            .execute_kw("sale.order", "create", json!([vals]), json!({}))
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

    /// The Odoo contact of the channel's customer: the configured mapping,
    /// else the one contact whose Reference (`ref`) is `customer_ref`. None:
    /// anonymous, or not in Odoo (the channel's partner buys). Two contacts
    /// with the same reference is refused: the books would guess.
    async fn customer(
        &self,
        channel: &ChannelCode,
        settings: &ChannelOdoo,
        customer_ref: Option<&CustomerRef>,
    ) -> Result<Option<Customer>, PushError> {
        let Some(customer_ref) = customer_ref else {
            return Ok(None);
        };
        let key = (channel.clone(), customer_ref.clone());
        if let Some(c) = self.lock(&self.customers).get(&key) {
            return Ok(Some(*c));
        }
        let mapped = settings.customers.get(customer_ref).copied();
        if mapped.is_none() && !settings.customers_by_ref {
            return Ok(None);
        }
        let domain = match mapped {
            Some(id) => json!([["id", "=", id]]),
            None => json!([["ref", "=", customer_ref.as_str()]]),
        };
        let found = self
            .client
            .execute_kw(
                "res.partner",
                "search_read",
                json!([domain]),
                json!({"fields": ["id", "name", "property_account_position_id"], "order": "id"}),
            )
            .await?;
        let rows: Vec<&Value> = found.as_array().into_iter().flatten().collect();
        // Only when the reference is shared: which of them are companies.
        let companies: Vec<i64> = if rows.len() > 1 {
            let ids: Vec<i64> = rows
                .iter()
                .filter_map(|r| r.get("id").and_then(Value::as_i64))
                .collect();
            self.client
                .execute_kw(
                    "res.partner",
                    "search_read",
                    json!([[["id", "in", ids]]]),
                    json!({"fields": ["id", "parent_id"]}),
                )
                .await?
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| many2one_id(r.get("parent_id")).is_none())
                .filter_map(|r| r.get("id").and_then(Value::as_i64))
                .collect()
        } else {
            Vec::new()
        };
        let as_customer = |row: &Value| Customer {
            id: row.get("id").and_then(Value::as_i64).unwrap_or(0),
            fiscal_position: many2one_id(row.get("property_account_position_id")),
        };
        let customer = match (&rows[..], mapped) {
            ([], Some(id)) => {
                return Err(PushError::Permanent(format!(
                "odoo.channels.{channel}.customers.{:?}: Odoo has no active contact with id {id}",
                customer_ref.as_str()
            )))
            }
            ([], None) => {
                tracing::debug!(%channel, customer_ref = %customer_ref, "no Odoo contact has this reference: the channel's partner buys");
                return Ok(None);
            }
            ([row], _) => as_customer(row),
            (many, _) => {
                // A company and its contact persons: the company (the one
                // without a parent) is the customer.
                let companies: Vec<&&Value> = many
                    .iter()
                    .filter(|r| {
                        r.get("id")
                            .and_then(Value::as_i64)
                            .is_some_and(|id| companies.contains(&id))
                    })
                    .collect();
                match companies[..] {
                    [row] => as_customer(row),
                    _ => {
                        let ids: Vec<String> = many
                            .iter()
                            .filter_map(|r| r.get("id").and_then(Value::as_i64))
                            .map(|id| id.to_string())
                            .collect();
                        return Err(PushError::Permanent(format!(
                            "{} Odoo contacts have Reference {:?} (ids {}): give only one of them that reference, or map the customer under odoo.channels.{channel}.customers",
                            many.len(),
                            customer_ref.as_str(),
                            ids.join(", ")
                        )));
                    }
                }
            }
        };
        self.lock(&self.customers).insert(key, customer);
        Ok(Some(customer))
    }

    /// The pricelist of an order in `currency`: the channel's for that
    /// currency, else the channel's one pricelist (which must be in it),
    /// else the first Odoo pricelist in that currency (of the channel's
    /// company or of none). With no currency (no prices), the channel's
    /// pricelist if any, else Odoo's own choice from the customer.
    async fn pricelist(
        &self,
        channel: &ChannelCode,
        settings: &ChannelOdoo,
        currency: Option<&Currency>,
    ) -> Result<Option<i64>, PushError> {
        let Some(currency) = currency else {
            return Ok(settings.pricelist);
        };
        if let Some(id) = settings.pricelists.get(currency) {
            return Ok(Some(*id));
        }
        if let Some(id) = settings.pricelist {
            let setup = self.setup().await?;
            return match setup.pricelist_currency.get(&id) {
                Some(c) if c == currency.as_str() => Ok(Some(id)),
                other => Err(PushError::Permanent(format!(
                    "channel {channel}'s pricelist {id} is in {}, but the order is in {currency}: set odoo.channels.{channel}.pricelists.{currency}",
                    other.map_or("an unknown currency", String::as_str)
                ))),
            };
        }
        let key = (settings.company, currency.clone());
        if let Some(id) = self.lock(&self.pricelists).get(&key) {
            return Ok(Some(*id));
        }
        let currencies = self
            .client
            .execute_kw(
                "res.currency",
                "search_read",
                json!([[["name", "=", currency.as_str()]]]),
                json!({"fields": ["id", "name"]}),
            )
            .await?;
        let Some(currency_id) = currencies
            .as_array()
            .and_then(|a| a.first())
            .and_then(|c| c.get("id"))
            .and_then(Value::as_i64)
        else {
            return Err(PushError::Permanent(format!(
                "Odoo has no active currency {currency}: activate it (Accounting > Configuration > Currencies) and give it a pricelist"
            )));
        };
        let pricelists = self
            .client
            .execute_kw(
                "product.pricelist",
                "search_read",
                json!([[["currency_id", "=", currency_id]]]),
                json!({"fields": ["id", "name", "company_id"], "order": "id"}),
            )
            .await?;
        let id = pricelists
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                let owner = many2one_id(p.get("company_id"));
                owner.is_none() || owner == settings.company
            })
            .find_map(|p| p.get("id").and_then(Value::as_i64))
            .ok_or_else(|| {
                PushError::Permanent(format!(
                    "Odoo has no pricelist in {currency}{}: create one (Sales > Products > Pricelists) or set odoo.channels.{channel}.pricelists.{currency}",
                    settings.company.map(|c| format!(" for company {c}")).unwrap_or_default()
                ))
            })?;
        self.lock(&self.pricelists).insert(key, id);
        Ok(Some(id))
    }

    /// Odoo product ids of these SKUs (`product.product` by `default_code`),
    /// from the cache or one search for the missing ones. A SKU Odoo does
    /// not know, or has archived, is a permanent failure.
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
        if unknown.is_empty() {
            return Ok(found);
        }
        let archived = self.archived_products(&unknown).await;
        let (archived, missing): (Vec<&str>, Vec<&str>) = unknown
            .iter()
            .partition(|s| archived.iter().any(|a| a == *s));
        let mut reasons = Vec::new();
        if !missing.is_empty() {
            reasons.push(format!(
                "Odoo has no product with internal reference {}: create it in Odoo (Inventory > Products, field Internal Reference) or fix the SKU, then retry this entry",
                missing.join(", ")
            ));
        }
        if !archived.is_empty() {
            reasons.push(format!(
                "Odoo's product with internal reference {} is archived: unarchive it in Odoo (Inventory > Products, filter Archived), then retry this entry",
                archived.join(", ")
            ));
        }
        Err(PushError::Permanent(reasons.join("; ")))
    }

    /// Of these internal references, those of archived products. Only to
    /// say why a SKU was not found: an Odoo that cannot tell (a refusal, no
    /// answer) tells nothing.
    async fn archived_products(&self, codes: &[&str]) -> Vec<String> {
        let found = self
            .client
            .execute_kw(
                "product.product",
                "search_read",
                json!([[["default_code", "in", codes], ["active", "=", false]]]),
                json!({"fields": ["id", "default_code"]}),
            )
            .await;
        match found {
            Ok(rows) => rows
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("default_code").and_then(Value::as_str))
                .map(str::to_string)
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "could not look for archived products");
                Vec::new()
            }
        }
    }

    /// The Odoo product ids of those of `skus` that Odoo knows (active
    /// products), from the cache or one search for the missing ones (then
    /// cached).
    pub async fn find_products(&self, skus: &[&Sku]) -> Result<HashMap<Sku, i64>, RpcError> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.lock(&self.products);
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
        let mut cache = self.lock(&self.products);
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

    /// The Odoo warehouse of a stockpool warehouse: from the checked setup,
    /// or (declared after start) looked up and kept. One Odoo does not have
    /// is a permanent failure.
    pub async fn warehouse(&self, warehouse: &WarehouseCode) -> Result<OdooWarehouse, PushError> {
        let setup = self.setup().await?;
        if let Some(w) = setup.warehouses.get(warehouse) {
            return Ok(w.clone());
        }
        if let Some(w) = self.lock(&self.late_warehouses).get(warehouse) {
            return Ok(w.clone());
        }
        match setup::find_warehouse(&self.client, &self.config, warehouse).await? {
            Ok(w) => {
                self.lock(&self.late_warehouses)
                    .insert(warehouse.clone(), w.clone());
                Ok(w)
            }
            Err(problem) => Err(PushError::Permanent(problem)),
        }
    }

    fn lock<'a, T>(&self, m: &'a Mutex<T>) -> std::sync::MutexGuard<'a, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The id of a many2one value as Odoo reads it: `[id, "name"]`, or a bare
/// id (webhooks read with `load=None`), or `false`.
pub fn many2one_id(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::Array(a) => a.first().and_then(Value::as_i64),
        _ => None,
    }
}
