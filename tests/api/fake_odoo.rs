//! A fake Odoo for integration tests: an axum server on loopback speaking
//! Odoo's external JSON-RPC API (`POST /jsonrpc`, `common.login` and
//! `object.execute_kw`) for the few models and methods the Odoo connector
//! uses, plus controls to seed data, take the server down, delay answers
//! and see what the client did.
//!
//! Faithful where a client can tell: the JSON-RPC envelope; errors as HTTP
//! 200 with `error.data.name` such as `odoo.exceptions.AccessDenied`;
//! credentials checked on every `execute_kw`; many2one values as
//! `[id, "display name"]`; quantities as floats; unknown fields, kwargs and
//! ids refused; nothing applied by a call that fails; sale orders going
//! draft → sale → cancel, with `action_cancel` on a non-draft order
//! returning the cancel wizard (and cancelling nothing) unless the context
//! has `disable_cancel_warning`, as Odoo 16/17 do.
//!
//! Not modelled: access rights, companies, partners (any positive partner
//! id is accepted), units of measure, prices, stock moves, reservations or
//! deliveries (confirming an order leaves quants alone), locations other
//! than one internal stock location per warehouse, domain operators other
//! than `=`, `!=`, `in`, `not in` and `&`, sort orders (results come by
//! ascending id), `create` with a list of vals. Ids come from one counter
//! shared by all models, so an id of the wrong kind of record fails with
//! `MissingError`.

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

const DB: &str = "shop";
const LOGIN: &str = "stockpool@example.com";
const API_KEY: &str = "secret-key";
const UID: i64 = 2;
/// Methods that change data (`unlink` is not served, but would count).
const MUTATING: &str = "create write unlink action_confirm action_cancel";

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
    /// Empty when the order was created without one.
    pub client_order_ref: String,
    pub partner_id: i64,
    pub warehouse_id: i64,
    /// "draft", "sale" or "cancel".
    pub state: String,
    pub lines: Vec<OrderLine>,
}

#[derive(Debug, Clone)]
pub struct OrderLine {
    pub id: i64,
    pub product_id: i64,
    pub qty: f64,
}

/// Handle on a running fake; clones share the same server and data.
#[derive(Clone)]
pub struct FakeOdoo {
    addr: SocketAddr,
    state: Arc<Mutex<Odoo>>,
}

impl FakeOdoo {
    /// Serves on 127.0.0.1 (a free port) until the test's runtime ends.
    pub async fn start() -> FakeOdoo {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeOdoo {
            addr,
            state: Arc::default(),
        };
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

    /// Adds a product (named after its code) and returns its id.
    pub fn add_product(&self, default_code: &str) -> i64 {
        let mut odoo = self.lock();
        let id = odoo.next_id();
        odoo.products.insert(id, default_code.to_string());
        id
    }

    /// Adds a warehouse named "Warehouse CODE", with a stock location.
    pub fn add_warehouse(&self, code: &str) -> i64 {
        let mut odoo = self.lock();
        assert!(
            odoo.warehouses.values().all(|w| w.code != code),
            "warehouse {code} exists"
        );
        let (id, location_id) = (odoo.next_id(), odoo.next_id());
        odoo.warehouses.insert(
            id,
            Warehouse {
                code: code.to_string(),
                location_id,
            },
        );
        id
    }

    /// Sets the one quant of a product in a warehouse's stock location.
    pub fn set_quant(&self, product_id: i64, warehouse_id: i64, quantity: f64, reserved: f64) {
        let mut odoo = self.lock();
        assert!(
            odoo.products.contains_key(&product_id),
            "no product {product_id}"
        );
        assert!(
            odoo.warehouses.contains_key(&warehouse_id),
            "no warehouse {warehouse_id}"
        );
        let id = match odoo.quants.get(&(product_id, warehouse_id)) {
            Some(quant) => quant.id,
            None => odoo.next_id(),
        };
        odoo.quants.insert(
            (product_id, warehouse_id),
            Quant {
                id,
                quantity,
                reserved,
            },
        );
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

    /// How many sale orders were created (committed) with this reference.
    pub fn creates_of(&self, client_order_ref: &str) -> usize {
        let orders = self.orders();
        orders
            .iter()
            .filter(|o| o.client_order_ref == client_order_ref)
            .count()
    }

    fn lock(&self) -> MutexGuard<'_, Odoo> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn jsonrpc(State(fake): State<FakeOdoo>, body: Bytes) -> Response {
    let request = serde_json::from_slice::<Value>(&body);
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

fn not_set<T>(field: &str) -> Result<T, Fault> {
    let message = "The operation cannot be completed: a mandatory field is not set";
    fail!("odoo.exceptions.ValidationError", "{message} ({field})")
}

/// Fails with `MissingError` unless `exists` holds for every id.
fn all_exist(model: &str, ids: &[i64], exists: impl Fn(&i64) -> bool) -> Result<(), Fault> {
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| !exists(id))
        .map(i64::to_string)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let comma = if unknown.len() == 1 { "," } else { "" }; // a Python tuple
    let record = format!("{model}({}{comma})", unknown.join(", "));
    let message = "Record does not exist or has been deleted.";
    fail!(MISSING_ERROR, "{message}\n(Record: {record}, User: {UID})")
}

type Outcome = Result<Value, Fault>;
type Record = Map<String, Value>;
/// One term of a domain, as a test on a record.
type Leaf = Box<dyn Fn(&Value) -> bool>;

#[derive(Default)]
struct Odoo {
    last_id: i64,
    products: BTreeMap<i64, String>,
    warehouses: BTreeMap<i64, Warehouse>,
    quants: BTreeMap<(i64, i64), Quant>,
    orders: Vec<Order>,
    calls: Vec<Call>,
    delays: HashMap<(String, String), Duration>,
    down: bool,
}

struct Warehouse {
    code: String,
    location_id: i64,
}

struct Quant {
    id: i64,
    quantity: f64,
    reserved: f64,
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

impl Odoo {
    fn next_id(&mut self) -> i64 {
        self.last_id += 1;
        self.last_id
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
        match (call.model.as_str(), call.method.as_str()) {
            (model, "search_read") if fields_of(model).is_some() => {
                self.search_read(model, args, kwargs)
            }
            ("sale.order", "create") => self.create_order(arg(0)),
            ("sale.order", "action_confirm") => self.set_state(arg(0), "sale"),
            ("sale.order", "action_cancel") => {
                let context = kwargs.get("context").unwrap_or(&Value::Null);
                let quiet = context["disable_cancel_warning"] == true;
                match self.cancel_wizard(arg(0), quiet)? {
                    Some(wizard) => Ok(wizard),
                    None => self.set_state(arg(0), "cancel"),
                }
            }
            ("sale.order.line", "write") => self.write_lines(arg(0), arg(1)),
            (model, method) => fail!(NO_SUCH_METHOD, "the fake does not serve {model}.{method}"),
        }
    }

    /// `search_read(domain, fields, offset, limit, order)`, positional or
    /// keyword; results come by id whatever the order.
    fn search_read(&self, model: &str, args: &[Value], kwargs: &Record) -> Outcome {
        let get = |name: &str, i: usize| kwargs.get(name).or(args.get(i)).unwrap_or(&Value::Null);
        let domain = leaves(model, get("domain", 0))?;
        let offset = get("offset", 2).as_u64().unwrap_or(0) as usize;
        let limit = match get("limit", 3).as_u64() {
            None | Some(0) => usize::MAX,
            Some(limit) => limit as usize,
        };
        let mut rows = self.rows(model);
        rows.retain(|row| domain.iter().all(|leaf| leaf(row)));
        let rows = rows.into_iter().skip(offset).take(limit);
        Ok(rows.map(|row| project(row, get("fields", 1))).collect())
    }

    /// Every record of a model, by id, with all its fields (see `fields_of`).
    fn rows(&self, model: &str) -> Vec<Value> {
        let product = |id: i64| json!([id, format!("[{0}] {0}", self.products[&id])]);
        let warehouse = |id: i64| json!([id, format!("Warehouse {}", self.warehouses[&id].code)]);
        let mut rows = Vec::new();
        match model {
            "product.product" => {
                for (id, code) in &self.products {
                    rows.push(json!({"id": id, "default_code": code, "name": code}));
                }
            }
            "stock.warehouse" => {
                for (&id, w) in &self.warehouses {
                    rows.push(json!({"id": id, "code": w.code, "name": warehouse(id)[1]}));
                }
            }
            "sale.order" => {
                for (i, o) in self.orders.iter().enumerate() {
                    let order_ref = Some(&o.client_order_ref).filter(|r| !r.is_empty());
                    let line_ids: Vec<i64> = o.lines.iter().map(|l| l.id).collect();
                    let partner = json!([o.partner_id, format!("Partner {}", o.partner_id)]);
                    rows.push(json!({"id": o.id, "name": order_name(i), "state": o.state,
                        "client_order_ref": order_ref.map_or(json!(false), |r| json!(r)),
                        "order_line": line_ids, "partner_id": partner,
                        "warehouse_id": warehouse(o.warehouse_id)}));
                }
            }
            "sale.order.line" => {
                for (i, o) in self.orders.iter().enumerate() {
                    for l in &o.lines {
                        rows.push(json!({"id": l.id, "order_id": [o.id, order_name(i)],
                            "product_id": product(l.product_id), "product_uom_qty": l.qty}));
                    }
                }
            }
            _ => {
                // stock.quant, the last of `fields_of`
                for (&(product_id, warehouse_id), q) in &self.quants {
                    let w = &self.warehouses[&warehouse_id];
                    rows.push(json!({"id": q.id, "product_id": product(product_id),
                        "warehouse_id": warehouse(warehouse_id),
                        "location_id": [w.location_id, format!("{}/Stock", w.code)],
                        "location_id.usage": "internal",
                        "quantity": q.quantity, "reserved_quantity": q.reserved}));
                }
            }
        }
        rows.sort_by_key(|row| row["id"].as_i64());
        rows
    }

    fn create_order(&mut self, vals: &Value) -> Outcome {
        let fields = "partner_id warehouse_id client_order_ref order_line";
        let vals = as_vals("sale.order", vals, fields)?;
        let id_in = |field: &str| vals.get(field).and_then(Value::as_i64).filter(|&id| id > 0);
        let Some(partner_id) = id_in("partner_id") else {
            return not_set("sale.order.partner_id");
        };
        let Some(warehouse_id) = id_in("warehouse_id") else {
            return not_set("sale.order.warehouse_id");
        };
        all_exist("stock.warehouse", &[warehouse_id], |id| {
            self.warehouses.contains_key(id)
        })?;
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
            let line = as_vals("sale.order.line", &command[2], "product_id product_uom_qty")?;
            let Some(product_id) = line.get("product_id").and_then(Value::as_i64) else {
                return not_set("sale.order.line.product_id");
            };
            all_exist("product.product", &[product_id], |id| {
                self.products.contains_key(id)
            })?;
            lines.push((product_id, qty(line)?.unwrap_or(1.0)));
        }
        // Valid: from here on nothing fails.
        let id = self.next_id();
        let mut order = Order {
            id,
            client_order_ref,
            partner_id,
            warehouse_id,
            state: "draft".to_string(),
            lines: Vec::new(),
        };
        for (product_id, qty) in lines {
            let id = self.next_id();
            order.lines.push(OrderLine {
                id,
                product_id,
                qty,
            });
        }
        self.orders.push(order);
        Ok(json!(id))
    }

    /// Confirms (draft → sale) or cancels orders, all or none.
    fn set_state(&mut self, ids: &Value, state: &str) -> Outcome {
        let indices = self.order_indices(ids)?;
        let stuck = indices.iter().find(|&&i| self.orders[i].state != "draft");
        if let (Some(&i), "sale") = (stuck, state) {
            let message = "The following orders are not in a state requiring confirmation";
            return fail!("odoo.exceptions.UserError", "{message}: {}", order_name(i));
        }
        for i in indices {
            self.orders[i].state = state.to_string();
        }
        Ok(json!(true))
    }

    /// Odoo answers `action_cancel` on a non-draft order with the cancel
    /// wizard's window action, unless the context disables the warning.
    fn cancel_wizard(&self, ids: &Value, quiet: bool) -> Result<Option<Value>, Fault> {
        let indices = self.order_indices(ids)?;
        if quiet || indices.iter().all(|&i| self.orders[i].state == "draft") {
            return Ok(None);
        }
        let [i] = indices[..] else {
            return fail!(VALUE_ERROR, "Expected singleton: sale.order{ids}");
        };
        let name = format!("Cancel Sales Order {}", order_name(i));
        let context = json!({"default_order_id": self.orders[i].id});
        Ok(Some(json!({"name": name, "type": "ir.actions.act_window",
            "res_model": "sale.order.cancel", "view_mode": "form", "target": "new",
            "context": context})))
    }

    fn write_lines(&mut self, ids: &Value, vals: &Value) -> Outcome {
        let ids = parse_ids(ids)?;
        let qty = qty(as_vals("sale.order.line", vals, "product_uom_qty")?)?;
        let mut lines: Vec<&mut OrderLine> =
            self.orders.iter_mut().flat_map(|o| &mut o.lines).collect();
        all_exist("sale.order.line", &ids, |id| {
            lines.iter().any(|l| l.id == *id)
        })?;
        for line in lines.iter_mut().filter(|l| ids.contains(&l.id)) {
            line.qty = qty.unwrap_or(line.qty);
        }
        Ok(json!(true))
    }

    /// Positions in `self.orders` of the given ids, all of which must exist.
    fn order_indices(&self, ids: &Value) -> Result<Vec<usize>, Fault> {
        let ids = parse_ids(ids)?;
        let index = |id: &i64| self.orders.iter().position(|o| o.id == *id);
        all_exist("sale.order", &ids, |id| index(id).is_some())?;
        Ok(ids.iter().filter_map(index).collect())
    }
}

/// Whether `[db, login or uid, key, ...]` carries the configured credentials.
fn credentials(args: &Value, user: impl Into<Value>) -> bool {
    args[0] == DB && args[1] == user.into() && args[2] == API_KEY
}

/// "S00001" for the first order created, and so on.
fn order_name(index: usize) -> String {
    format!("S{:05}", index + 1)
}

const QUANT_FIELDS: &str =
    "id product_id warehouse_id location_id location_id.usage quantity reserved_quantity";

/// Fields of each readable model, including searchable dotted paths.
fn fields_of(model: &str) -> Option<&'static str> {
    Some(match model {
        "product.product" => "id default_code name",
        "stock.warehouse" => "id code name",
        "sale.order" => "id name state client_order_ref order_line partner_id warehouse_id",
        "sale.order.line" => "id order_id product_id product_uom_qty",
        "stock.quant" => QUANT_FIELDS,
        _ => return None,
    })
}

/// Whether `name` is in the space-separated `list`.
fn listed(list: &str, name: &str) -> bool {
    list.split(' ').any(|n| n == name)
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

/// Equality in a domain: numbers by value, a many2one `[id, "name"]` by id.
fn same(value: &Value, wanted: &Value) -> bool {
    let value = match value {
        Value::Array(m2o) if m2o.len() == 2 && m2o[1].is_string() => &m2o[0],
        value => value,
    };
    match (value.as_f64(), wanted.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => value == wanted,
    }
}

/// Keeps `id` and the requested fields that exist; every plain field if
/// none are requested.
fn project(mut row: Value, fields: &Value) -> Value {
    let requested = fields.as_array().filter(|f| !f.is_empty());
    let wanted = |k: &String| requested.is_none_or(|fields| fields.iter().any(|f| f == k));
    if let Value::Object(row) = &mut row {
        row.retain(|k, _| k == "id" || (!k.contains('.') && wanted(k)));
    }
    row
}
