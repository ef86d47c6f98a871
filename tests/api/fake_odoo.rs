//! A fake Odoo 17 for integration tests: an axum server on loopback
//! speaking Odoo's external JSON-RPC API (`POST /jsonrpc`, `common.login`
//! and `object.execute_kw`) for the models the connector uses, as strict
//! as Odoo is, plus controls to seed data, take the server down, delay
//! answers or commits, deliver and receive goods, and see what the client
//! did.
//!
//! Faithful where a client can tell:
//! - the JSON-RPC envelope; errors as HTTP 200 with `error.data.name` such
//!   as `odoo.exceptions.UserError`; credentials checked on every call;
//! - many2one values read as `[id, "display name"]`; quantities as floats;
//!   unknown fields (in vals, `fields` or a domain), kwargs, orders and ids
//!   refused; nothing applied by a call that fails; archived records left
//!   out of searches unless the context has `active_test: false` or the
//!   domain names `active`;
//! - `stock.warehouse.code` is a `Char(size=5)`;
//! - sale orders go draft → sale → cancel; a new order's fiscal position is
//!   computed from its customer (the commercial partner's
//!   `property_account_position_id`) unless given, its pricelist from the
//!   customer (else the first pricelist) unless given, its currency from
//!   the pricelist; records of another company are refused;
//! - "Lock Confirmed Sales": confirmed orders are locked, and Odoo refuses
//!   to change a locked order's lines ("It is forbidden to modify the
//!   following fields in a locked order") or to cancel it;
//! - a line's quantity cannot go below what was delivered; writing the
//!   quantity alone recomputes `price_unit` from the product's list price
//!   (Odoo 17's `_compute_price_unit` depends on the quantity);
//! - `action_cancel` on a non-draft order returns the cancel wizard (and
//!   cancels nothing) unless the context has `disable_cancel_warning`;
//! - confirming an order creates its delivery (`stock.picking`); validating
//!   it moves the quants, the picking's state and the lines' delivered
//!   quantities in one commit, and a return does the opposite;
//! - "Send Webhook Notification" on stock.quant and stock.picking: the
//!   notification is POSTed inside the transaction, before the commit
//!   (Odoo waits at most 1 s for the answer), with `_model`, `_id`,
//!   `_action` and the selected fields read with `load=None` (bare ids).
//!
//! Not modelled: access rights, taxes, invoices, units of measure other
//! than the product's own, reservations of quants, multi-step routes,
//! domain operators other than `=`, `!=`, `in`, `not in` and `&`. Ids come
//! from one counter shared by all models, so an id of the wrong kind of
//! record fails with `MissingError`.

// Not every test uses every control.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{routing::post, Json, Router};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DB: &str = "shop";
const LOGIN: &str = "stockpool@example.com";
const API_KEY: &str = "secret-key";
const UID: i64 = 2;
/// Methods that change data (`unlink` is not served, but would count).
const MUTATING: &str = "create write unlink action_confirm action_cancel";
/// Odoo's `requests.post(..., timeout=1)` in `_run_action_webhook`.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(1);

/// One call that reached the fake: `execute_kw` as (model, method, args,
/// kwargs), `login` as model "common", method "login" with its args.
#[derive(Debug, Clone)]
pub struct Call {
    pub model: String,
    pub method: String,
    pub args: Value,
    pub kwargs: Value,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub id: i64,
    pub name: String,
    /// Empty when the order was created without one.
    pub client_order_ref: String,
    pub partner_id: i64,
    pub warehouse_id: i64,
    pub company_id: i64,
    pub pricelist_id: i64,
    /// The pricelist's currency, by ISO code.
    pub currency: String,
    pub fiscal_position_id: Option<i64>,
    pub team_id: Option<i64>,
    /// "draft", "sale" or "cancel".
    pub state: String,
    pub locked: bool,
    pub lines: Vec<OrderLine>,
}

#[derive(Debug, Clone)]
pub struct OrderLine {
    pub id: i64,
    pub product_id: i64,
    pub qty: f64,
    pub price_unit: f64,
    pub qty_delivered: f64,
}

#[derive(Debug, Clone)]
pub struct Picking {
    pub id: i64,
    pub name: String,
    /// "assigned", "done" or "cancel".
    pub state: String,
    pub sale_id: i64,
    /// "outgoing" (a delivery) or "incoming" (a return).
    pub kind: &'static str,
}

/// A "Send Webhook Notification" Odoo would send: its body.
#[derive(Debug, Clone)]
pub struct Notification(pub Value);

/// When a delivery or return commits, and what becomes of its
/// notifications.
#[derive(Debug, Clone, Copy)]
pub enum Commit {
    /// Commits at once; the notifications are handed back, unsent, for
    /// the test to send in the order it wants.
    Held,
    /// As Odoo: sends every notification first (inside the transaction,
    /// each awaited up to 1 s), then commits this much later.
    AfterWebhooks(Duration),
}

/// Handle on a running fake; clones share the same server and data.
#[derive(Clone)]
pub struct FakeOdoo {
    addr: SocketAddr,
    state: Arc<Mutex<Odoo>>,
}

/// Ids of the records every fake starts with.
pub struct Defaults {
    pub company: i64,
    pub eur: i64,
    pub usd: i64,
    pub units: i64,
    pub kg: i64,
    pub public_pricelist: i64,
}

pub const DEFAULTS: Defaults = Defaults {
    eur: 1,
    usd: 2,
    company: 3,
    units: 4,
    kg: 5,
    public_pricelist: 6,
};

impl FakeOdoo {
    /// Serves on 127.0.0.1 (a free port) until the test's runtime ends,
    /// with one company (in EUR), EUR and USD, the Units and kg units of
    /// measure, and a public pricelist in EUR ([`DEFAULTS`]).
    pub async fn start() -> FakeOdoo {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeOdoo {
            addr,
            state: Arc::default(),
        };
        {
            let mut o = fake.lock();
            let eur = o.add(Model::Currency, json!({"name": "EUR", "active": true}));
            let usd = o.add(Model::Currency, json!({"name": "USD", "active": true}));
            let company = o.add(
                Model::Company,
                json!({"name": "My Company", "currency_id": eur}),
            );
            let units = o.add(Model::Uom, json!({"name": "Units", "rounding": 1.0}));
            let kg = o.add(Model::Uom, json!({"name": "kg", "rounding": 0.001}));
            let public = o.add(
                Model::Pricelist,
                json!({"name": "Public Pricelist", "active": true, "currency_id": eur, "company_id": false}),
            );
            assert_eq!(
                [eur, usd, company, units, kg, public],
                [
                    DEFAULTS.eur,
                    DEFAULTS.usd,
                    DEFAULTS.company,
                    DEFAULTS.units,
                    DEFAULTS.kg,
                    DEFAULTS.public_pricelist
                ]
            );
        }
        let app = Router::new()
            .route("/jsonrpc", post(jsonrpc))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn db(&self) -> &str {
        DB
    }
    pub fn login(&self) -> &str {
        LOGIN
    }
    pub fn api_key(&self) -> &str {
        API_KEY
    }

    /// Adds a product in Units with a list price of 10 and returns its id.
    pub fn add_product(&self, default_code: &str) -> i64 {
        self.add_product_in(default_code, DEFAULTS.units)
    }

    /// Adds a product in a unit of measure.
    pub fn add_product_in(&self, default_code: &str, uom: i64) -> i64 {
        self.lock().add(
            Model::Product,
            json!({"default_code": default_code, "name": default_code, "active": true,
                "uom_id": uom, "list_price": 10.0}),
        )
    }

    /// Archives (or unarchives) a record.
    pub fn set_active(&self, id: i64, active: bool) {
        let mut o = self.lock();
        let record = o.records.get_mut(&id).expect("record exists");
        record.1["active"] = json!(active);
    }

    /// Adds a warehouse with a stock location. Odoo's short name is a
    /// `Char(size=5)`: a longer one cannot exist.
    pub fn add_warehouse(&self, code: &str) -> i64 {
        assert!(code.chars().count() <= 5, "Odoo refuses short name {code}");
        let mut o = self.lock();
        assert!(
            o.all(Model::Warehouse)
                .iter()
                .all(|(_, w)| w["code"] != code),
            "warehouse {code} exists"
        );
        let id = o.add(
            Model::Warehouse,
            json!({"code": code, "name": format!("Warehouse {code}"), "active": true,
                "company_id": DEFAULTS.company}),
        );
        let location = o.add(
            Model::Location,
            json!({"name": format!("{code}/Stock"), "usage": "internal", "warehouse_id": id}),
        );
        o.records.get_mut(&id).unwrap().1["lot_stock_id"] = json!(location);
        id
    }

    /// Adds an internal location under a warehouse's stock (a shelf).
    pub fn add_location(&self, warehouse: i64, name: &str) -> i64 {
        let mut o = self.lock();
        let code = o.get(Model::Warehouse, warehouse)["code"].clone();
        o.add(
            Model::Location,
            json!({"name": format!("{}/Stock/{name}", code.as_str().unwrap()),
                "usage": "internal", "warehouse_id": warehouse}),
        )
    }

    /// Adds a contact; `reference` is its Reference (`ref`).
    pub fn add_partner(&self, name: &str, reference: Option<&str>) -> i64 {
        self.lock().add(
            Model::Partner,
            json!({"name": name, "ref": reference.map_or(json!(false), |r| json!(r)),
                "active": true, "parent_id": false, "company_id": false,
                "property_account_position_id": false, "property_product_pricelist": false}),
        )
    }

    /// Adds a contact person of a company (its commercial partner).
    pub fn add_contact_of(&self, company: i64, name: &str, reference: Option<&str>) -> i64 {
        let id = self.add_partner(name, reference);
        self.lock().records.get_mut(&id).unwrap().1["parent_id"] = json!(company);
        id
    }

    /// Sets a contact's fiscal position (as on its Sales & Purchase tab).
    pub fn set_partner_fiscal_position(&self, partner: i64, fiscal_position: i64) {
        let mut o = self.lock();
        o.get(Model::FiscalPosition, fiscal_position);
        o.records.get_mut(&partner).unwrap().1["property_account_position_id"] =
            json!(fiscal_position);
    }

    pub fn add_fiscal_position(&self, name: &str) -> i64 {
        self.lock().add(
            Model::FiscalPosition,
            json!({"name": name, "active": true, "company_id": DEFAULTS.company}),
        )
    }

    pub fn add_pricelist(&self, name: &str, currency: i64) -> i64 {
        self.lock().add(
            Model::Pricelist,
            json!({"name": name, "active": true, "currency_id": currency, "company_id": false}),
        )
    }

    pub fn add_team(&self, name: &str) -> i64 {
        self.lock().add(
            Model::Team,
            json!({"name": name, "active": true, "company_id": DEFAULTS.company}),
        )
    }

    pub fn add_company(&self, name: &str) -> i64 {
        self.lock().add(
            Model::Company,
            json!({"name": name, "currency_id": DEFAULTS.eur}),
        )
    }

    /// Settings > Sales > Lock Confirmed Sales.
    pub fn lock_confirmed_sales(&self, on: bool) {
        self.lock().lock_confirmed = on;
    }

    /// Where "Send Webhook Notification" posts (stockpool's webhook URL).
    pub fn set_webhook(&self, url: &str) {
        self.lock().webhook = Some(url.to_string());
    }

    /// Sets the quantity of a product in a warehouse's stock location.
    pub fn set_quant(&self, product_id: i64, warehouse_id: i64, quantity: f64) {
        let location = self.lock().get(Model::Warehouse, warehouse_id)["lot_stock_id"]
            .as_i64()
            .unwrap();
        self.set_quant_at(product_id, location, quantity);
    }

    /// Sets the quantity of a product in one location.
    pub fn set_quant_at(&self, product_id: i64, location: i64, quantity: f64) {
        let mut o = self.lock();
        o.get(Model::Product, product_id);
        let warehouse = o.get(Model::Location, location)["warehouse_id"].clone();
        let existing = o
            .all(Model::Quant)
            .into_iter()
            .find(|(_, q)| q["product_id"] == product_id && q["location_id"] == location)
            .map(|(id, _)| id);
        match existing {
            Some(id) => o.records.get_mut(&id).unwrap().1["quantity"] = json!(quantity),
            None => {
                o.add(
                    Model::Quant,
                    json!({"product_id": product_id, "location_id": location,
                        "warehouse_id": warehouse, "quantity": quantity, "reserved_quantity": 0.0}),
                );
            }
        }
    }

    /// The quantity of a product summed over a warehouse's locations.
    pub fn on_hand(&self, product_id: i64, warehouse_id: i64) -> f64 {
        self.lock()
            .all(Model::Quant)
            .iter()
            .filter(|(_, q)| q["product_id"] == product_id && q["warehouse_id"] == warehouse_id)
            .map(|(_, q)| q["quantity"].as_f64().unwrap())
            .sum()
    }

    /// While down, every POST /jsonrpc gets a 503 HTML page, as from a
    /// proxy in front of a stopped Odoo, and is not recorded.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// The next call to (model, method) is applied (committed) and then its
    /// answer is held back for `delay`: a client that times out sees
    /// nothing, yet the change happened. ("common", "login") for logins.
    pub fn delay_after_commit(&self, model: &str, method: &str, delay: Duration) {
        let key = (model.to_string(), method.to_string());
        self.lock().delays.insert(key, delay);
    }

    /// The next call to (model, method) runs for `delay` before it commits
    /// and answers: a client that times out retries while this call's
    /// change is not yet visible, and it commits later all the same.
    pub fn delay_before_commit(&self, model: &str, method: &str, delay: Duration) {
        let key = (model.to_string(), method.to_string());
        self.lock().slow.insert(key, delay);
    }

    /// Every call that reached the fake while up, in arrival order,
    /// refused ones included.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls to create, write, action_confirm, action_cancel (and
    /// unlink), whether they succeeded or not.
    pub fn writes(&self) -> Vec<Call> {
        let mut calls = self.calls();
        calls.retain(|c| listed(MUTATING, &c.method));
        calls
    }

    /// All sale orders, by id.
    pub fn orders(&self) -> Vec<Order> {
        self.lock().orders.clone()
    }

    /// The first sale order created with this client_order_ref.
    pub fn order_by_ref(&self, r: &str) -> Option<Order> {
        self.orders().into_iter().find(|o| o.client_order_ref == r)
    }

    /// The sale orders created (committed) with this reference.
    pub fn orders_by_ref(&self, r: &str) -> Vec<Order> {
        self.orders()
            .into_iter()
            .filter(|o| o.client_order_ref == r)
            .collect()
    }

    /// How many sale orders were created (committed) with this reference.
    pub fn creates_of(&self, client_order_ref: &str) -> usize {
        self.orders_by_ref(client_order_ref).len()
    }

    pub fn pickings(&self) -> Vec<Picking> {
        self.lock().pickings.clone()
    }

    /// What stockpool answered to each notification Odoo sent itself
    /// (`Commit::AfterWebhooks`); None: no answer within Odoo's 1 s.
    pub fn webhook_answers(&self) -> Vec<Option<u16>> {
        self.lock().answers.clone()
    }

    /// Validates the open delivery of the confirmed order `reference` for
    /// `lines` (product, quantity): the quants drop, the picking is done
    /// (the rest goes to a backorder) and the lines' delivered quantities
    /// rise, in one commit. Returns the notifications (picking, then each
    /// quant changed), sent or not as `commit` says.
    pub async fn deliver(
        &self,
        reference: &str,
        lines: &[(i64, f64)],
        commit: Commit,
    ) -> Vec<Notification> {
        let (change, notes) = self.lock().prepare_move(reference, lines, "outgoing");
        self.commit_with(change, notes, commit).await
    }

    /// Receives a return of `lines` against the order `reference`: a done
    /// incoming picking, the quants rise, the delivered quantities drop
    /// (Odoo's "Update quantities on SO"), in one commit.
    pub async fn receive_return(
        &self,
        reference: &str,
        lines: &[(i64, f64)],
        commit: Commit,
    ) -> Vec<Notification> {
        let (change, notes) = self.lock().prepare_move(reference, lines, "incoming");
        self.commit_with(change, notes, commit).await
    }

    async fn commit_with(
        &self,
        change: Change,
        notes: Vec<Notification>,
        commit: Commit,
    ) -> Vec<Notification> {
        match commit {
            Commit::Held => {
                self.lock().apply(change);
            }
            Commit::AfterWebhooks(delay) => {
                for n in &notes {
                    let answer = self.send(n).await;
                    self.lock().answers.push(answer);
                }
                tokio::time::sleep(delay).await;
                self.lock().apply(change);
            }
        }
        notes
    }

    /// POSTs a notification to the webhook URL as Odoo does (waiting at
    /// most 1 s); the HTTP status, or None when it timed out or failed.
    pub async fn send(&self, n: &Notification) -> Option<u16> {
        let url = self.lock().webhook.clone().expect("set_webhook first");
        let rest = url.strip_prefix("http://").expect("an http:// URL");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let body = n.0.to_string();
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
            let request = format!(
                "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(request.as_bytes()).await.ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).await.ok()?;
            out.get(9..12)?.parse().ok()
        };
        tokio::time::timeout(WEBHOOK_TIMEOUT, exchange)
            .await
            .ok()
            .flatten()
    }

    /// The notification of a quant as Odoo would send it now.
    pub fn quant_notification(&self, product_id: i64, warehouse_id: i64) -> Notification {
        let o = self.lock();
        let (id, q) = o
            .all(Model::Quant)
            .into_iter()
            .find(|(_, q)| q["product_id"] == product_id && q["warehouse_id"] == warehouse_id)
            .expect("a quant");
        quant_note(id, &q)
    }

    fn lock(&self) -> MutexGuard<'_, Odoo> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Odoo finishes a request whether or not the client is still waiting:
/// the work runs in its own task, which a dropped connection does not
/// cancel.
async fn jsonrpc(State(fake): State<FakeOdoo>, body: Bytes) -> Response {
    tokio::spawn(serve(fake, body))
        .await
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

async fn serve(fake: FakeOdoo, body: Bytes) -> Response {
    let request = serde_json::from_slice::<Value>(&body);
    let slow = match &request {
        Ok(r) => fake.lock().slow_for(&r["params"]),
        Err(_) => None,
    };
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    let (outcome, delay) = {
        let mut odoo = fake.lock();
        if odoo.down {
            let page = "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>";
            let html = [(header::CONTENT_TYPE, "text/html")];
            return (StatusCode::SERVICE_UNAVAILABLE, html, page).into_response();
        }
        match &request {
            Ok(request) => odoo.handle(&request["params"]),
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("Invalid JSON: {e}")).into_response()
            }
        }
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let id = request.map_or(Value::Null, |r| r["id"].clone());
    Json(match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(Fault { name, message }) => {
            let debug =
                format!("Traceback (most recent call last):\n  (fake)\n{name}: {message}\n");
            let data = json!({"name": name, "message": message, "arguments": [message],
                "context": {}, "debug": debug});
            let error = json!({"code": 200, "message": "Odoo Server Error", "data": data});
            json!({"jsonrpc": "2.0", "id": id, "error": error})
        }
    })
    .into_response()
}

/// An Odoo exception: its Python class and message.
struct Fault {
    name: &'static str,
    message: String,
}

/// `fail!(class, format...)` is an `Err(Fault)`.
macro_rules! fail {
    ($name:expr, $($message:tt)+) => {
        Err(Fault { name: $name, message: format!($($message)+) })
    };
}

const VALUE_ERROR: &str = "builtins.ValueError";
const TYPE_ERROR: &str = "builtins.TypeError";
const NO_SUCH_METHOD: &str = "builtins.AttributeError";
const MISSING_ERROR: &str = "odoo.exceptions.MissingError";
const USER_ERROR: &str = "odoo.exceptions.UserError";

fn not_set<T>(field: &str) -> Result<T, Fault> {
    let message = "The operation cannot be completed: a mandatory field is not set";
    fail!("odoo.exceptions.ValidationError", "{message} ({field})")
}

fn missing(model: &str, ids: &[i64]) -> Fault {
    let unknown: Vec<String> = ids.iter().map(i64::to_string).collect();
    let comma = if unknown.len() == 1 { "," } else { "" }; // a Python tuple
    let record = format!("{model}({}{comma})", unknown.join(", "));
    Fault {
        name: MISSING_ERROR,
        message: format!(
            "Record does not exist or has been deleted.\n(Record: {record}, User: {UID})"
        ),
    }
}

type Outcome = Result<Value, Fault>;
type Record = Map<String, Value>;
/// One term of a domain, as a test on a record.
type Leaf = Box<dyn Fn(&Value) -> bool>;

/// The models stored as plain records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Product,
    Uom,
    Warehouse,
    Location,
    Quant,
    Partner,
    FiscalPosition,
    Pricelist,
    Currency,
    Team,
    Company,
}

impl Model {
    fn name(self) -> &'static str {
        match self {
            Model::Product => "product.product",
            Model::Uom => "uom.uom",
            Model::Warehouse => "stock.warehouse",
            Model::Location => "stock.location",
            Model::Quant => "stock.quant",
            Model::Partner => "res.partner",
            Model::FiscalPosition => "account.fiscal.position",
            Model::Pricelist => "product.pricelist",
            Model::Currency => "res.currency",
            Model::Team => "crm.team",
            Model::Company => "res.company",
        }
    }

    fn of(name: &str) -> Option<Model> {
        [
            Model::Product,
            Model::Uom,
            Model::Warehouse,
            Model::Location,
            Model::Quant,
            Model::Partner,
            Model::FiscalPosition,
            Model::Pricelist,
            Model::Currency,
            Model::Team,
            Model::Company,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }

    /// Fields that are many2one, with their model.
    fn many2one(self, field: &str) -> Option<&'static str> {
        Some(match (self, field) {
            (_, "company_id") => "res.company",
            (_, "currency_id") => "res.currency",
            (_, "warehouse_id") => "stock.warehouse",
            (_, "product_id") => "product.product",
            (_, "location_id" | "lot_stock_id") => "stock.location",
            (_, "uom_id") => "uom.uom",
            (_, "parent_id" | "commercial_partner_id") => "res.partner",
            (_, "property_account_position_id") => "account.fiscal.position",
            (_, "property_product_pricelist") => "product.pricelist",
            _ => return None,
        })
    }
}

#[derive(Default)]
struct Odoo {
    last_id: i64,
    /// Plain records by id: their model and fields.
    records: BTreeMap<i64, (Model, Value)>,
    orders: Vec<Order>,
    pickings: Vec<Picking>,
    lock_confirmed: bool,
    webhook: Option<String>,
    calls: Vec<Call>,
    delays: HashMap<(String, String), Duration>,
    slow: HashMap<(String, String), Duration>,
    down: bool,
    /// The HTTP status of each notification sent, None when it timed out.
    answers: Vec<Option<u16>>,
}

/// A validated delivery or return, to apply at its commit.
struct Change {
    order: usize,
    kind: &'static str,
    /// (line index, quantity)
    lines: Vec<(usize, f64)>,
    /// (quant id, new quantity)
    quants: Vec<(i64, f64)>,
    /// The open picking it completes (a delivery), if any.
    picking: Option<usize>,
    picking_name: String,
    picking_id: i64,
}

impl Call {
    fn new(model: String, method: String, args: &Value, kwargs: &Value) -> Call {
        let or = |v: &Value, default: Value| if v.is_null() { default } else { v.clone() };
        let (args, kwargs) = (or(args, json!([])), or(kwargs, json!({})));
        Call {
            model,
            method,
            args,
            kwargs,
        }
    }
}

fn quant_note(id: i64, q: &Value) -> Notification {
    Notification(json!({
        "_action": "Send Webhook Notification(#41)",
        "_id": id,
        "_model": "stock.quant",
        "location_id": q["location_id"],
        "product_id": q["product_id"],
        "quantity": q["quantity"],
    }))
}

fn picking_note(id: i64, state: &str) -> Notification {
    Notification(json!({
        "_action": "Send Webhook Notification(#42)",
        "_id": id,
        "_model": "stock.picking",
        "state": state,
    }))
}

impl Odoo {
    fn next_id(&mut self) -> i64 {
        self.last_id += 1;
        self.last_id
    }

    fn add(&mut self, model: Model, mut fields: Value) -> i64 {
        let id = self.next_id();
        fields["id"] = json!(id);
        self.records.insert(id, (model, fields));
        id
    }

    fn get(&self, model: Model, id: i64) -> &Value {
        match self.records.get(&id) {
            Some((m, v)) if *m == model => v,
            _ => panic!("no {} {id}", model.name()),
        }
    }

    fn find(&self, model: Model, id: i64) -> Option<&Value> {
        match self.records.get(&id) {
            Some((m, v)) if *m == model => Some(v),
            _ => None,
        }
    }

    fn all(&self, model: Model) -> Vec<(i64, Value)> {
        self.records
            .iter()
            .filter(|(_, (m, _))| *m == model)
            .map(|(id, (_, v))| (*id, v.clone()))
            .collect()
    }

    fn slow_for(&mut self, params: &Value) -> Option<Duration> {
        let args = &params["args"];
        let key = (
            args[3].as_str().unwrap_or_default().to_string(),
            args[4].as_str().unwrap_or_default().to_string(),
        );
        self.slow.remove(&key)
    }

    /// The display name of a record, as many2one values carry it.
    fn display(&self, id: i64) -> String {
        if let Some(o) = self.orders.iter().find(|o| o.id == id) {
            return o.name.clone();
        }
        match self.records.get(&id) {
            Some((Model::Product, p)) => format!(
                "[{}] {}",
                p["default_code"].as_str().unwrap_or(""),
                p["name"].as_str().unwrap_or("")
            ),
            Some((_, v)) => v["name"]
                .as_str()
                .or(v["code"].as_str())
                .unwrap_or("")
                .to_string(),
            None => String::new(),
        }
    }

    fn m2o(&self, id: &Value) -> Value {
        match id.as_i64() {
            Some(id) if id > 0 => json!([id, self.display(id)]),
            _ => json!(false),
        }
    }

    /// Records the call, applies it, and takes any delay set for it.
    fn handle(&mut self, params: &Value) -> (Outcome, Option<Duration>) {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let (service, method, args) = (&params["service"], &params["method"], &params["args"]);
        let call = match (service.as_str(), method.as_str()) {
            (Some("object"), Some("execute_kw")) => {
                Call::new(text(&args[3]), text(&args[4]), &args[5], &args[6])
            }
            _ => Call::new(text(service), text(method), args, &Value::Null),
        };
        let outcome = match (service.as_str(), method.as_str()) {
            (Some("common"), Some("login")) if credentials(args, LOGIN) => Ok(json!(UID)),
            (Some("common"), Some("login")) => Ok(json!(false)),
            (Some("object"), Some("execute_kw")) if credentials(args, UID) => self.execute(&call),
            (Some("object"), Some("execute_kw")) => {
                fail!("odoo.exceptions.AccessDenied", "Access Denied")
            }
            _ => {
                let name = format!("{}.{}", call.model, call.method);
                fail!(NO_SUCH_METHOD, "the fake has no {name}")
            }
        };
        let delay = self
            .delays
            .remove(&(call.model.clone(), call.method.clone()));
        self.calls.push(call);
        (outcome, delay)
    }

    fn execute(&mut self, call: &Call) -> Outcome {
        let (Value::Array(args), Value::Object(kwargs)) = (&call.args, &call.kwargs) else {
            return fail!(
                TYPE_ERROR,
                "execute_kw takes a list of args, a dict of kwargs"
            );
        };
        let arg = |i: usize| args.get(i).unwrap_or(&Value::Null);
        let allowed = match call.method.as_str() {
            "search_read" => "domain fields offset limit order context",
            _ => "context",
        };
        if let Some(k) = unknown_key(kwargs, allowed) {
            let method = &call.method;
            return fail!(
                TYPE_ERROR,
                "{method}() got an unexpected keyword argument '{k}'"
            );
        }
        let context = kwargs.get("context").cloned().unwrap_or(json!({}));
        match (call.model.as_str(), call.method.as_str()) {
            (model, "search_read") if fields_of(model).is_some() => {
                self.search_read(model, args, kwargs, &context)
            }
            ("sale.order", "create") => self.create_order(arg(0)),
            ("sale.order", "action_confirm") => self.confirm(arg(0)),
            ("sale.order", "action_cancel") => {
                let quiet = context["disable_cancel_warning"] == true;
                self.cancel(arg(0), quiet)
            }
            ("sale.order.line", "write") => self.write_lines(arg(0), arg(1)),
            (model, method) => fail!(NO_SUCH_METHOD, "the fake does not serve {model}.{method}"),
        }
    }

    /// `search_read(domain, fields, offset, limit, order)`, positional or
    /// keyword.
    fn search_read(
        &self,
        model: &str,
        args: &[Value],
        kwargs: &Record,
        context: &Value,
    ) -> Outcome {
        let get = |name: &str, i: usize| kwargs.get(name).or(args.get(i)).unwrap_or(&Value::Null);
        let domain = get("domain", 0);
        let names_active = domain
            .as_array()
            .is_some_and(|d| d.iter().any(|t| t[0] == "active"));
        let leaves = leaves(model, domain)?;
        let fields = match get("fields", 1) {
            Value::Null => Vec::new(),
            Value::Array(f) => f.clone(),
            other => return fail!(VALUE_ERROR, "fields must be a list, not {other}"),
        };
        let known = fields_of(model).unwrap_or_default();
        if let Some(bad) = fields.iter().find(|f| {
            !f.as_str()
                .is_some_and(|f| listed(known, f) && !f.contains('.'))
        }) {
            return fail!(VALUE_ERROR, "Invalid field {bad} on model {model}");
        }
        let offset = get("offset", 2).as_u64().unwrap_or(0) as usize;
        let limit = match get("limit", 3).as_u64() {
            None | Some(0) => usize::MAX,
            Some(limit) => limit as usize,
        };
        let descending = match get("order", 4) {
            Value::Null => false,
            Value::String(order) => {
                let mut words = order.split_whitespace();
                let field = words.next().unwrap_or_default();
                let direction = words.next().unwrap_or("asc").to_ascii_lowercase();
                if field != "id" || !["asc", "desc"].contains(&direction.as_str()) {
                    return fail!(
                        VALUE_ERROR,
                        "Invalid \"order\" specified ({order}) (the fake sorts by id)"
                    );
                }
                direction == "desc"
            }
            other => return fail!(VALUE_ERROR, "order must be a string, not {other}"),
        };
        let with_archived = context["active_test"] == false || names_active;
        let mut rows = self.rows(model);
        rows.retain(|row| {
            (with_archived || row.get("active") != Some(&json!(false)))
                && leaves.iter().all(|leaf| leaf(row))
        });
        if descending {
            rows.reverse();
        }
        let rows = rows.into_iter().skip(offset).take(limit);
        Ok(rows.map(|row| project(row, &fields)).collect())
    }

    /// Every record of a model, by id, with all its fields (see
    /// `fields_of`), many2one values as `[id, name]`.
    fn rows(&self, model: &str) -> Vec<Value> {
        let mut rows = Vec::new();
        match model {
            "sale.order" => {
                for o in &self.orders {
                    let order_ref = Some(&o.client_order_ref).filter(|r| !r.is_empty());
                    let line_ids: Vec<i64> = o.lines.iter().map(|l| l.id).collect();
                    let currency =
                        self.get(Model::Pricelist, o.pricelist_id)["currency_id"].clone();
                    rows.push(json!({"id": o.id, "name": o.name, "state": o.state,
                        "client_order_ref": order_ref.map_or(json!(false), |r| json!(r)),
                        "order_line": line_ids, "partner_id": self.m2o(&json!(o.partner_id)),
                        "warehouse_id": self.m2o(&json!(o.warehouse_id)),
                        "company_id": self.m2o(&json!(o.company_id)),
                        "pricelist_id": self.m2o(&json!(o.pricelist_id)),
                        "currency_id": self.m2o(&currency),
                        "fiscal_position_id": self.m2o(&json!(o.fiscal_position_id)),
                        "team_id": self.m2o(&json!(o.team_id)),
                        "locked": o.locked}));
                }
            }
            "sale.order.line" => {
                for o in &self.orders {
                    for l in &o.lines {
                        rows.push(json!({"id": l.id, "order_id": [o.id, o.name],
                            "product_id": self.m2o(&json!(l.product_id)),
                            "product_uom_qty": l.qty, "price_unit": l.price_unit,
                            "qty_delivered": l.qty_delivered, "state": o.state}));
                    }
                }
            }
            "stock.picking" => {
                for p in &self.pickings {
                    rows.push(json!({"id": p.id, "name": p.name, "state": p.state,
                        "sale_id": self.m2o(&json!(p.sale_id)),
                        "picking_type_code": p.kind}));
                }
            }
            _ => {
                let m = Model::of(model).expect("a model of fields_of");
                for (id, record) in self.all(m) {
                    let mut row = record.clone();
                    let Value::Object(map) = &mut row else {
                        continue;
                    };
                    for (field, value) in map.iter_mut() {
                        if m.many2one(field).is_some() {
                            *value = self.m2o(value);
                        }
                    }
                    if m == Model::Partner {
                        let commercial = record["parent_id"].as_i64().unwrap_or(id);
                        map.insert("commercial_partner_id".into(), self.m2o(&json!(commercial)));
                    }
                    if m == Model::Quant {
                        let location =
                            self.get(Model::Location, record["location_id"].as_i64().unwrap());
                        map.insert("location_id.usage".into(), location["usage"].clone());
                    }
                    rows.push(row);
                }
            }
        }
        rows.sort_by_key(|row| row["id"].as_i64());
        rows
    }

    fn exists(&self, model: &str, id: i64) -> Result<&Value, Fault> {
        let m = Model::of(model).expect("a record model");
        self.find(m, id).ok_or_else(|| missing(model, &[id]))
    }

    fn create_order(&mut self, vals: &Value) -> Outcome {
        let fields = "partner_id warehouse_id client_order_ref order_line pricelist_id \
            fiscal_position_id team_id company_id";
        let vals = as_vals("sale.order", vals, fields)?;
        let id_in = |field: &str| match vals.get(field) {
            None | Some(Value::Bool(false)) => Ok(None),
            Some(v) => match v.as_i64().filter(|id| *id > 0) {
                Some(id) => Ok(Some(id)),
                None => fail!(VALUE_ERROR, "{field}: not a record id: {v}"),
            },
        };
        let Some(partner_id) = id_in("partner_id")? else {
            return not_set("sale.order.partner_id");
        };
        let partner = self.exists("res.partner", partner_id)?.clone();
        let company_id = id_in("company_id")?.unwrap_or(DEFAULTS.company);
        self.exists("res.company", company_id)?;
        let warehouse_id = match id_in("warehouse_id")? {
            Some(w) => w,
            None => return not_set("sale.order.warehouse_id"),
        };
        let warehouse = self.exists("stock.warehouse", warehouse_id)?.clone();
        let commercial = partner["parent_id"].as_i64().unwrap_or(partner_id);
        let commercial_partner = self.exists("res.partner", commercial)?.clone();
        // Computed from the customer unless given, as Odoo 17 does.
        let fiscal_position_id = match vals.get("fiscal_position_id") {
            Some(_) => id_in("fiscal_position_id")?,
            None => commercial_partner["property_account_position_id"].as_i64(),
        };
        if let Some(fp) = fiscal_position_id {
            self.exists("account.fiscal.position", fp)?;
        }
        let pricelist_id = match id_in("pricelist_id")? {
            Some(p) => p,
            None => commercial_partner["property_product_pricelist"]
                .as_i64()
                .unwrap_or(DEFAULTS.public_pricelist),
        };
        let pricelist = self.exists("product.pricelist", pricelist_id)?.clone();
        let team_id = id_in("team_id")?;
        if let Some(t) = team_id {
            self.exists("crm.team", t)?;
        }
        // Records of another company are refused (check_company).
        let mut owners = vec![
            ("warehouse_id", warehouse["company_id"].clone()),
            ("pricelist_id", pricelist["company_id"].clone()),
            ("partner_id", partner["company_id"].clone()),
        ];
        if let Some(fp) = fiscal_position_id {
            owners.push((
                "fiscal_position_id",
                self.get(Model::FiscalPosition, fp)["company_id"].clone(),
            ));
        }
        if let Some(t) = team_id {
            owners.push(("team_id", self.get(Model::Team, t)["company_id"].clone()));
        }
        for (field, owner) in owners {
            if owner.as_i64().is_some_and(|c| c != company_id) {
                return fail!(
                    USER_ERROR,
                    "Incompatible companies on records:\n- 'New' belongs to company {:?} and '{field}' belongs to another company.",
                    self.display(company_id)
                );
            }
        }
        let client_order_ref = match vals.get("client_order_ref") {
            None | Some(Value::Null | Value::Bool(false)) => String::new(),
            Some(Value::String(r)) => r.clone(),
            Some(other) => return fail!(VALUE_ERROR, "client_order_ref: not a string: {other}"),
        };
        let commands = match vals.get("order_line").unwrap_or(&json!([])) {
            Value::Array(commands) => commands.clone(),
            other => return fail!(VALUE_ERROR, "order_line: not a list of commands: {other}"),
        };
        let mut lines = Vec::new();
        for command in &commands {
            if command[0] != 0 {
                return fail!(
                    VALUE_ERROR,
                    "the fake takes only (0, 0, vals) lines: {command}"
                );
            }
            let line = as_vals(
                "sale.order.line",
                &command[2],
                "product_id product_uom_qty price_unit",
            )?;
            let Some(product_id) = line.get("product_id").and_then(Value::as_i64) else {
                return not_set("sale.order.line.product_id");
            };
            let product = self.exists("product.product", product_id)?;
            let list_price = product["list_price"].as_f64().unwrap_or(0.0);
            let price = match line.get("price_unit") {
                None => list_price,
                Some(p) if p.is_number() => p.as_f64().unwrap(),
                Some(p) => return fail!(VALUE_ERROR, "price_unit: not a number: {p}"),
            };
            lines.push((product_id, qty(line)?.unwrap_or(1.0), price));
        }
        // Valid: from here on nothing fails.
        let id = self.next_id();
        let currency = pricelist["currency_id"].as_i64().unwrap();
        let mut order = Order {
            id,
            name: format!("S{:05}", self.orders.len() + 1),
            client_order_ref,
            partner_id,
            warehouse_id,
            company_id,
            pricelist_id,
            currency: self.get(Model::Currency, currency)["name"]
                .as_str()
                .unwrap()
                .to_string(),
            fiscal_position_id,
            team_id,
            state: "draft".to_string(),
            locked: false,
            lines: Vec::new(),
        };
        for (product_id, qty, price_unit) in lines {
            let id = self.next_id();
            order.lines.push(OrderLine {
                id,
                product_id,
                qty,
                price_unit,
                qty_delivered: 0.0,
            });
        }
        self.orders.push(order);
        Ok(json!(id))
    }

    /// Confirms draft orders (all or none); each gets its delivery, and is
    /// locked when "Lock Confirmed Sales" is on.
    fn confirm(&mut self, ids: &Value) -> Outcome {
        let indices = self.order_indices(ids)?;
        if let Some(&i) = indices.iter().find(|&&i| self.orders[i].state != "draft") {
            let message = "The following orders are not in a state requiring confirmation";
            return fail!(USER_ERROR, "{message}: {}", self.orders[i].name);
        }
        for i in indices {
            self.orders[i].state = "sale".to_string();
            self.orders[i].locked = self.lock_confirmed;
            let id = self.next_id();
            let name = format!("WH/OUT/{:05}", self.pickings.len() + 1);
            self.pickings.push(Picking {
                id,
                name,
                state: "assigned".into(),
                sale_id: self.orders[i].id,
                kind: "outgoing",
            });
        }
        Ok(json!(true))
    }

    /// Cancels orders, refusing locked ones; a non-draft order gets the
    /// cancel wizard unless the warning is disabled.
    fn cancel(&mut self, ids: &Value, quiet: bool) -> Outcome {
        let indices = self.order_indices(ids)?;
        if indices.iter().any(|&i| self.orders[i].locked) {
            return fail!(
                USER_ERROR,
                "You cannot cancel a locked order. Please unlock it first if you want to cancel it."
            );
        }
        if !quiet && indices.iter().any(|&i| self.orders[i].state != "draft") {
            let [i] = indices[..] else {
                return fail!(VALUE_ERROR, "Expected singleton: sale.order{ids}");
            };
            let name = format!("Cancel Sales Order {}", self.orders[i].name);
            let context = json!({"default_order_id": self.orders[i].id});
            return Ok(json!({"name": name, "type": "ir.actions.act_window",
                "res_model": "sale.order.cancel", "view_mode": "form", "target": "new",
                "context": context}));
        }
        for i in indices {
            self.orders[i].state = "cancel".to_string();
            let sale = self.orders[i].id;
            for p in self.pickings.iter_mut().filter(|p| p.sale_id == sale) {
                if p.state != "done" {
                    p.state = "cancel".into();
                }
            }
        }
        Ok(json!(true))
    }

    fn write_lines(&mut self, ids: &Value, vals: &Value) -> Outcome {
        let ids = parse_ids(ids)?;
        let vals = as_vals("sale.order.line", vals, "product_uom_qty price_unit")?;
        let qty = qty(vals)?;
        let price = match vals.get("price_unit") {
            None => None,
            Some(p) if p.is_number() => p.as_f64(),
            Some(p) => return fail!(VALUE_ERROR, "price_unit: not a number: {p}"),
        };
        let mut found = Vec::new();
        for (o, order) in self.orders.iter().enumerate() {
            for (l, line) in order.lines.iter().enumerate() {
                if ids.contains(&line.id) {
                    found.push((o, l));
                }
            }
        }
        if found.len() != ids.len() {
            let known: Vec<i64> = found
                .iter()
                .map(|&(o, l)| self.orders[o].lines[l].id)
                .collect();
            let unknown: Vec<i64> = ids.iter().filter(|i| !known.contains(i)).copied().collect();
            return Err(missing("sale.order.line", &unknown));
        }
        for &(o, l) in &found {
            let order = &self.orders[o];
            if order.locked {
                let mut names = Vec::new();
                if qty.is_some() {
                    names.push("Quantity");
                }
                if price.is_some() {
                    names.push("Unit Price");
                }
                return fail!(
                    USER_ERROR,
                    "It is forbidden to modify the following fields in a locked order:\n{}",
                    names.join("\n")
                );
            }
            if let Some(q) = qty {
                if order.state == "sale" && q < order.lines[l].qty_delivered {
                    return fail!(USER_ERROR, "The ordered quantity of a sale order line cannot be decreased below the amount already delivered. Instead, create a return in your inventory.");
                }
            }
        }
        for (o, l) in found {
            let product = self.orders[o].lines[l].product_id;
            let list_price = self.get(Model::Product, product)["list_price"]
                .as_f64()
                .unwrap_or(0.0);
            let line = &mut self.orders[o].lines[l];
            if let Some(q) = qty {
                line.qty = q;
                // _compute_price_unit depends on product_uom_qty.
                line.price_unit = price.unwrap_or(list_price);
            } else if let Some(p) = price {
                line.price_unit = p;
            }
        }
        Ok(json!(true))
    }

    /// Positions in `self.orders` of the given ids, all of which must exist.
    fn order_indices(&self, ids: &Value) -> Result<Vec<usize>, Fault> {
        let ids = parse_ids(ids)?;
        let index = |id: &i64| self.orders.iter().position(|o| o.id == *id);
        let unknown: Vec<i64> = ids.iter().filter(|i| index(i).is_none()).copied().collect();
        if !unknown.is_empty() {
            return Err(missing("sale.order", &unknown));
        }
        Ok(ids.iter().filter_map(index).collect())
    }

    /// Checks a delivery (`outgoing`) or return (`incoming`) of the order
    /// `reference` and builds its change and its notifications.
    fn prepare_move(
        &mut self,
        reference: &str,
        lines: &[(i64, f64)],
        kind: &'static str,
    ) -> (Change, Vec<Notification>) {
        let o = self
            .orders
            .iter()
            .position(|o| o.client_order_ref == reference && o.state == "sale")
            .unwrap_or_else(|| panic!("no confirmed order {reference}"));
        let order = self.orders[o].clone();
        let location = self.get(Model::Warehouse, order.warehouse_id)["lot_stock_id"]
            .as_i64()
            .unwrap();
        let mut change = Change {
            order: o,
            kind,
            lines: Vec::new(),
            quants: Vec::new(),
            picking: None,
            picking_name: String::new(),
            picking_id: 0,
        };
        for &(product, qty) in lines {
            let l = order
                .lines
                .iter()
                .position(|l| l.product_id == product)
                .expect("the order has the product");
            change.lines.push((l, qty));
            let quant = self
                .all(Model::Quant)
                .into_iter()
                .find(|(_, q)| q["product_id"] == product && q["location_id"] == location);
            let (id, q) = match quant {
                Some(found) => found,
                None => {
                    let id = self.add(
                        Model::Quant,
                        json!({"product_id": product, "location_id": location,
                            "warehouse_id": order.warehouse_id, "quantity": 0.0,
                            "reserved_quantity": 0.0}),
                    );
                    (id, self.get(Model::Quant, id).clone())
                }
            };
            let now = q["quantity"].as_f64().unwrap();
            let after = if kind == "outgoing" {
                now - qty
            } else {
                now + qty
            };
            change.quants.push((id, after));
        }
        if kind == "outgoing" {
            let p = self
                .pickings
                .iter()
                .position(|p| {
                    p.sale_id == order.id && p.kind == "outgoing" && p.state == "assigned"
                })
                .expect("an open delivery");
            change.picking = Some(p);
            change.picking_name = self.pickings[p].name.clone();
            change.picking_id = self.pickings[p].id;
        } else {
            change.picking_id = self.next_id();
            change.picking_name = format!("WH/IN/{:05}", self.pickings.len() + 1);
        }
        let mut notes = vec![picking_note(change.picking_id, "done")];
        for (id, after) in &change.quants {
            let mut q = self.get(Model::Quant, *id).clone();
            q["quantity"] = json!(after);
            notes.push(quant_note(*id, &q));
        }
        (change, notes)
    }

    /// Commits a delivery or return: quants, picking, delivered quantities.
    fn apply(&mut self, change: Change) {
        for (id, after) in change.quants {
            self.records.get_mut(&id).unwrap().1["quantity"] = json!(after);
        }
        let order = &mut self.orders[change.order];
        let mut rest = false;
        for (l, qty) in &change.lines {
            let line = &mut order.lines[*l];
            if change.kind == "outgoing" {
                line.qty_delivered += qty;
                rest |= line.qty_delivered < line.qty;
            } else {
                line.qty_delivered -= qty;
            }
        }
        let sale_id = order.id;
        match change.picking {
            Some(p) => {
                self.pickings[p].state = "done".into();
                if rest {
                    let id = self.next_id();
                    let name = format!("WH/OUT/{:05}", self.pickings.len() + 1);
                    self.pickings.push(Picking {
                        id,
                        name,
                        state: "assigned".into(),
                        sale_id,
                        kind: "outgoing",
                    });
                }
            }
            None => self.pickings.push(Picking {
                id: change.picking_id,
                name: change.picking_name,
                state: "done".into(),
                sale_id,
                kind: "incoming",
            }),
        }
    }
}

/// Whether `[db, login or uid, key, ...]` carries the configured credentials.
fn credentials(args: &Value, user: impl Into<Value>) -> bool {
    args[0] == DB && args[1] == user.into() && args[2] == API_KEY
}

/// Fields of each readable model, including searchable dotted paths.
fn fields_of(model: &str) -> Option<&'static str> {
    Some(match model {
        "product.product" => "id default_code name active uom_id list_price",
        "uom.uom" => "id name rounding",
        "stock.warehouse" => "id code name active company_id lot_stock_id",
        "stock.location" => "id name usage warehouse_id",
        "stock.quant" => {
            "id product_id warehouse_id location_id location_id.usage quantity reserved_quantity"
        }
        "res.partner" => {
            "id name ref active parent_id company_id commercial_partner_id \
             property_account_position_id property_product_pricelist"
        }
        "account.fiscal.position" => "id name active company_id",
        "product.pricelist" => "id name active currency_id company_id",
        "res.currency" => "id name active",
        "crm.team" => "id name active company_id",
        "res.company" => "id name currency_id",
        "sale.order" => {
            "id name state client_order_ref order_line partner_id warehouse_id company_id \
             pricelist_id currency_id fiscal_position_id team_id locked"
        }
        "sale.order.line" => {
            "id order_id product_id product_uom_qty price_unit qty_delivered state"
        }
        "stock.picking" => "id name state sale_id picking_type_code",
        _ => return None,
    })
}

/// Whether `name` is in the space-separated `list`.
fn listed(list: &str, name: &str) -> bool {
    list.split_whitespace().any(|n| n == name)
}

/// The first key of `map` not among the space-separated `allowed`.
fn unknown_key<'a>(map: &'a Record, allowed: &str) -> Option<&'a String> {
    map.keys().find(|k| !listed(allowed, k))
}

/// A vals dict whose keys are all among `fields`.
fn as_vals<'a>(model: &str, vals: &'a Value, fields: &str) -> Result<&'a Record, Fault> {
    let Value::Object(vals) = vals else {
        return fail!(VALUE_ERROR, "{model}: vals must be a dict, not {vals}");
    };
    match unknown_key(vals, fields) {
        Some(k) => fail!(
            VALUE_ERROR,
            "Invalid field '{k}' on model '{model}' (in the fake)"
        ),
        None => Ok(vals),
    }
}

/// `product_uom_qty` from vals, integer or float.
fn qty(vals: &Record) -> Result<Option<f64>, Fault> {
    match vals.get("product_uom_qty") {
        None => Ok(None),
        Some(qty) if qty.is_number() => Ok(qty.as_f64()),
        Some(qty) => fail!(VALUE_ERROR, "product_uom_qty: not a number: {qty}"),
    }
}

/// An id or a list of ids, as Odoo's `browse` takes them.
fn parse_ids(ids: &Value) -> Result<Vec<i64>, Fault> {
    let list = match ids {
        Value::Array(list) => list.iter().map(Value::as_i64).collect(),
        id => id.as_i64().map(|id| vec![id]),
    };
    let Some(list) = list else {
        return fail!(VALUE_ERROR, "not a record id or list of ids: {ids}");
    };
    Ok(list)
}

/// A domain as tests on records, implicitly ANDed.
fn leaves(model: &str, domain: &Value) -> Result<Vec<Leaf>, Fault> {
    let terms = match domain {
        Value::Null => &[][..],
        Value::Array(terms) => terms.as_slice(),
        _ => return fail!(VALUE_ERROR, "Invalid domain {domain}"),
    };
    let mut leaves: Vec<Leaf> = Vec::new();
    for term in terms.iter().filter(|term| *term != "&") {
        let triple = term.as_array().is_some_and(|t| t.len() == 3);
        let (Some(field), Some(op), true) = (term[0].as_str(), term[1].as_str(), triple) else {
            return fail!(
                VALUE_ERROR,
                "Invalid leaf {term} (the fake takes ANDed triples)"
            );
        };
        if !listed(fields_of(model).unwrap_or_default(), field) {
            return fail!(VALUE_ERROR, "Invalid field {model}.{field} in leaf {term}");
        }
        let values = match (op, &term[2]) {
            ("in" | "not in", Value::Array(values)) => values.clone(),
            ("=" | "!=" | "in" | "not in", value) => vec![value.clone()],
            _ => {
                return fail!(
                    VALUE_ERROR,
                    "Invalid operator {op:?} (in the fake) in {term}"
                )
            }
        };
        let (field, negated) = (field.to_string(), op == "!=" || op == "not in");
        leaves.push(Box::new(move |row: &Value| {
            values.iter().any(|v| same(&row[&field], v)) != negated
        }));
    }
    Ok(leaves)
}

/// Equality in a domain: numbers by value, a many2one `[id, "name"]` by id,
/// `false` matching an unset value.
fn same(value: &Value, wanted: &Value) -> bool {
    let value = match value {
        Value::Array(m2o) if m2o.len() == 2 && m2o[1].is_string() => &m2o[0],
        Value::Null => &Value::Bool(false),
        value => value,
    };
    match (value.as_f64(), wanted.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => value == wanted,
    }
}

/// Keeps `id` and the requested fields; every plain field if none are
/// requested.
fn project(mut row: Value, fields: &[Value]) -> Value {
    let wanted = |k: &String| fields.is_empty() || fields.iter().any(|f| f == k);
    if let Value::Object(row) = &mut row {
        row.retain(|k, _| k == "id" || (!k.contains('.') && wanted(k)));
    }
    row
}
