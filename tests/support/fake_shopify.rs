//! A fake Shopify for the adapter's tests and bench, as strict as the real
//! Admin GraphQL API 2026-04 where the adapter touches it:
//!
//! - `POST /admin/api/2026-04/graphql.json` only, with the access token in
//!   `X-Shopify-Access-Token` (401 otherwise); the query is parsed as
//!   GraphQL (operations, variables, aliases, inline fragments,
//!   directives) and answered with exactly the fields selected;
//! - cost-based throttling: a leaky bucket (maximum, restore rate), every
//!   answer's `extensions.cost`; a call over what the bucket holds is
//!   `THROTTLED` (recorded), over the maximum `MAX_COST_EXCEEDED`;
//! - `inventorySetQuantities` refuses a call without `@idempotent(key:)`,
//!   a quantity without `changeFromQuantity`, the removed
//!   `ignoreCompareQuantity`, more than 250 quantities, a name other than
//!   `available`/`on_hand`, an unknown reason; a stale `changeFromQuantity`
//!   is `CHANGE_FROM_QUANTITY_STALE`; any user error applies nothing; a
//!   key reused with other input is `IDEMPOTENCY_KEY_PARAMETER_MISMATCH`, a
//!   key reused with the same input replays the first answer;
//! - quantities by name with Shopify's relations at one location:
//!   `on_hand = available + committed + unavailable`; an order placed
//!   moves units from available to committed (refused when not enough is
//!   available: the storefront does not oversell), a fulfilment takes them
//!   off committed and on_hand, a cancel puts them back to available;
//! - webhooks: payloads in Shopify's REST shape, signed with the app's
//!   client secret (`X-Shopify-Hmac-Sha256`), delivered when the test says.
//!
//! Included with `#[path]` by the test binaries and the lag bench.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
    Json, Router,
};
use serde_json::{json, Map, Value};

pub const TOKEN: &str = "shpat_test_token";
pub const SECRET: &str = "shopify-app-client-secret";
pub const LOCATION: &str = "gid://shopify/Location/655441491";
const REASONS: &[&str] = &[
    "correction",
    "cycle_count_available",
    "damaged",
    "movement_created",
    "movement_updated",
    "movement_received",
    "movement_canceled",
    "other",
    "promotion",
    "quality_control",
    "received",
    "reservation_created",
    "reservation_deleted",
    "reservation_updated",
    "restock",
    "safety_stock",
    "shrinkage",
];

// ---------------------------------------------------------------- GraphQL

#[derive(Debug, Clone)]
enum Selection {
    Field(Field),
    Fragment {
        on: Option<String>,
        selection: Vec<Selection>,
    },
}

/// A directive and its arguments.
type Directive = (String, Map<String, Value>);

#[derive(Debug, Clone)]
struct Field {
    alias: Option<String>,
    name: String,
    args: Map<String, Value>,
    directives: Vec<Directive>,
    selection: Vec<Selection>,
}

impl Field {
    fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Punct(char),
    Spread,
    Name(String),
    Int(i64),
    Float(f64),
    Str(String),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' | ',' | '\u{feff}' => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '{' | '}' | '(' | ')' | ':' | '[' | ']' | '!' | '$' | '@' | '=' | '|' | '&' => {
                out.push(Tok::Punct(c));
                i += 1;
            }
            '.' => {
                if chars.get(i + 1) == Some(&'.') && chars.get(i + 2) == Some(&'.') {
                    out.push(Tok::Spread);
                    i += 3;
                } else {
                    return Err(format!("Parse error on \".\" at {i}"));
                }
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err("Parse error: unterminated string".into());
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let e = *chars.get(i).ok_or("Parse error: bad escape")?;
                            i += 1;
                            match e {
                                '"' => s.push('"'),
                                '\\' => s.push('\\'),
                                '/' => s.push('/'),
                                'n' => s.push('\n'),
                                't' => s.push('\t'),
                                'r' => s.push('\r'),
                                'b' => s.push('\u{8}'),
                                'f' => s.push('\u{c}'),
                                'u' => {
                                    let hex: String =
                                        chars[i..(i + 4).min(chars.len())].iter().collect();
                                    let code = u32::from_str_radix(&hex, 16)
                                        .map_err(|_| "Parse error: bad \\u")?;
                                    s.push(char::from_u32(code).ok_or("Parse error: bad \\u")?);
                                    i += 4;
                                }
                                other => return Err(format!("Parse error: bad escape \\{other}")),
                            }
                        }
                        c => s.push(c),
                    }
                }
                out.push(Tok::Str(s));
            }
            c if c == '-' || c.is_ascii_digit() => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_digit()
                        || matches!(chars[i], '.' | 'e' | 'E' | '+' | '-'))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                if let Ok(n) = text.parse::<i64>() {
                    out.push(Tok::Int(n));
                } else {
                    out.push(Tok::Float(
                        text.parse()
                            .map_err(|_| format!("Parse error on {text:?}"))?,
                    ));
                }
            }
            c if c == '_' || c.is_ascii_alphabetic() => {
                let start = i;
                while i < chars.len() && (chars[i] == '_' || chars[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                out.push(Tok::Name(chars[start..i].iter().collect()));
            }
            other => return Err(format!("Parse error on {other:?}")),
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    vars: &'a Map<String, Value>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Result<Tok, String> {
        let t = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or("Parse error: unexpected end of document")?;
        self.pos += 1;
        Ok(t)
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "Parse error: expected {c:?}, got {:?}",
                self.peek()
            ))
        }
    }
    fn name(&mut self) -> Result<String, String> {
        match self.next()? {
            Tok::Name(n) => Ok(n),
            other => Err(format!("Parse error: expected a name, got {other:?}")),
        }
    }

    /// `query|mutation [Name] [(vars)] [directives] { ... }` or `{ ... }`.
    fn operation(&mut self) -> Result<(String, Vec<Selection>), String> {
        let kind = match self.peek() {
            Some(Tok::Punct('{')) => "query".to_string(),
            _ => self.name()?,
        };
        if kind != "query" && kind != "mutation" {
            return Err(format!(
                "Parse error: {kind} is not an operation this API serves"
            ));
        }
        if let Some(Tok::Name(_)) = self.peek() {
            self.name()?;
        }
        if self.eat('(') {
            while !self.eat(')') {
                self.expect('$')?;
                self.name()?;
                self.expect(':')?;
                self.skip_type()?;
                if self.eat('=') {
                    self.value()?;
                }
            }
        }
        self.directives()?;
        let selection = self.selection_set()?;
        if self.pos != self.toks.len() {
            return Err(
                "This API takes one operation per document, and no fragment definitions".into(),
            );
        }
        Ok((kind, selection))
    }

    fn skip_type(&mut self) -> Result<(), String> {
        if self.eat('[') {
            self.skip_type()?;
            self.expect(']')?;
        } else {
            self.name()?;
        }
        self.eat('!');
        Ok(())
    }

    fn selection_set(&mut self) -> Result<Vec<Selection>, String> {
        self.expect('{')?;
        let mut out = Vec::new();
        while !self.eat('}') {
            if self.peek() == Some(&Tok::Spread) {
                self.pos += 1;
                let on = if self.peek() == Some(&Tok::Name("on".into())) {
                    self.pos += 1;
                    Some(self.name()?)
                } else if let Some(Tok::Name(n)) = self.peek() {
                    return Err(format!(
                        "Fragment {n} is not defined (named fragments are not used here)"
                    ));
                } else {
                    None
                };
                self.directives()?;
                out.push(Selection::Fragment {
                    on,
                    selection: self.selection_set()?,
                });
                continue;
            }
            let first = self.name()?;
            let (alias, name) = if self.eat(':') {
                (Some(first), self.name()?)
            } else {
                (None, first)
            };
            let args = if self.peek() == Some(&Tok::Punct('(')) {
                self.arguments()?
            } else {
                Map::new()
            };
            let directives = self.directives()?;
            let selection = if self.peek() == Some(&Tok::Punct('{')) {
                self.selection_set()?
            } else {
                Vec::new()
            };
            out.push(Selection::Field(Field {
                alias,
                name,
                args,
                directives,
                selection,
            }));
        }
        Ok(out)
    }

    fn arguments(&mut self) -> Result<Map<String, Value>, String> {
        self.expect('(')?;
        let mut out = Map::new();
        while !self.eat(')') {
            let name = self.name()?;
            self.expect(':')?;
            let v = self.value()?;
            out.insert(name, v);
        }
        Ok(out)
    }

    fn directives(&mut self) -> Result<Vec<Directive>, String> {
        let mut out = Vec::new();
        while self.eat('@') {
            let name = self.name()?;
            let args = if self.peek() == Some(&Tok::Punct('(')) {
                self.arguments()?
            } else {
                Map::new()
            };
            out.push((name, args));
        }
        Ok(out)
    }

    fn value(&mut self) -> Result<Value, String> {
        Ok(match self.next()? {
            Tok::Punct('$') => {
                let n = self.name()?;
                self.vars.get(&n).cloned().unwrap_or(Value::Null)
            }
            Tok::Int(n) => json!(n),
            Tok::Float(f) => json!(f),
            Tok::Str(s) => Value::String(s),
            Tok::Name(n) if n == "true" => Value::Bool(true),
            Tok::Name(n) if n == "false" => Value::Bool(false),
            Tok::Name(n) if n == "null" => Value::Null,
            Tok::Name(n) => Value::String(n),
            Tok::Punct('[') => {
                let mut list = Vec::new();
                while !self.eat(']') {
                    list.push(self.value()?);
                }
                Value::Array(list)
            }
            Tok::Punct('{') => {
                let mut obj = Map::new();
                while !self.eat('}') {
                    let k = self.name()?;
                    self.expect(':')?;
                    obj.insert(k, self.value()?);
                }
                Value::Object(obj)
            }
            other => return Err(format!("Parse error: unexpected {other:?}")),
        })
    }
}

fn parse(query: &str, vars: &Map<String, Value>) -> Result<(String, Vec<Selection>), String> {
    Parser {
        toks: lex(query)?,
        pos: 0,
        vars,
    }
    .operation()
}

/// `value` with only the fields `selection` asks for (under their aliases).
fn project(
    value: &Value,
    selection: &[Selection],
    resolve: &dyn Fn(&Value, &Field) -> Result<Value, String>,
) -> Result<Value, String> {
    match value {
        Value::Array(items) => Ok(Value::Array(
            items
                .iter()
                .map(|v| project(v, selection, resolve))
                .collect::<Result<_, _>>()?,
        )),
        Value::Object(obj) if !selection.is_empty() => {
            let mut out = Map::new();
            project_into(obj, selection, resolve, &mut out)?;
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

fn project_into(
    obj: &Map<String, Value>,
    selection: &[Selection],
    resolve: &dyn Fn(&Value, &Field) -> Result<Value, String>,
    out: &mut Map<String, Value>,
) -> Result<(), String> {
    let typename = obj.get("__typename").and_then(Value::as_str).unwrap_or("");
    for s in selection {
        match s {
            Selection::Fragment { on, selection } => {
                if on.as_deref().is_none_or(|t| t == typename) {
                    project_into(obj, selection, resolve, out)?;
                }
            }
            Selection::Field(f) => {
                let raw = if f.name == "__typename" {
                    json!(typename)
                } else {
                    let v = resolve(&Value::Object(obj.clone()), f)?;
                    if v.is_null()
                        && !obj.contains_key(&f.name)
                        && !matches!(f.name.as_str(), "inventoryLevel")
                    {
                        return Err(format!(
                            "Field '{}' doesn't exist on type '{typename}'",
                            f.name
                        ));
                    }
                    v
                };
                out.insert(f.key().to_string(), project(&raw, &f.selection, resolve)?);
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ shop

/// One item's quantities at the location.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Level {
    pub available: i64,
    pub committed: i64,
    /// reserved, damaged, safety stock, quality control together.
    pub unavailable: i64,
}

impl Level {
    pub fn on_hand(&self) -> i64 {
        self.available + self.committed + self.unavailable
    }
}

/// A write the adapter made, as Shopify applied it.
#[derive(Debug, Clone)]
pub struct Write {
    pub at: Instant,
    pub sku: String,
    pub on_hand: i64,
    pub available: i64,
    pub reference: String,
}

/// One request as the bucket saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub cost: f64,
    /// Whether it asked for more than the bucket held (THROTTLED).
    pub over_budget: bool,
}

#[derive(Debug, Clone)]
struct Item {
    sku: String,
    variant: String,
    levels: BTreeMap<String, Level>,
}

#[derive(Debug)]
struct Shop {
    items: BTreeMap<String, Item>,
    bucket_max: f64,
    bucket: f64,
    restore: f64,
    refilled: Instant,
    calls: Vec<Call>,
    writes: Vec<Write>,
    idempotency: HashMap<String, (String, Value)>,
    orders: BTreeMap<String, Value>,
}

/// The fake. Cheap to clone.
#[derive(Clone)]
pub struct FakeShopify {
    pub addr: SocketAddr,
    shop: Arc<Mutex<Shop>>,
    down: Arc<AtomicBool>,
    /// Serve no `nodes` root field (as a shop's API that only offers the
    /// product queries would).
    no_nodes: Arc<AtomicBool>,
    next_id: Arc<AtomicU64>,
}

fn gid(kind: &str, n: u64) -> String {
    format!("gid://shopify/{kind}/{n}")
}

impl FakeShopify {
    /// A shop with a bucket of `bucket` points restoring `restore` a second.
    pub async fn start(bucket: f64, restore: f64) -> FakeShopify {
        let shop = Arc::new(Mutex::new(Shop {
            items: BTreeMap::new(),
            bucket_max: bucket,
            bucket,
            restore,
            refilled: Instant::now(),
            calls: Vec::new(),
            writes: Vec::new(),
            idempotency: HashMap::new(),
            orders: BTreeMap::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeShopify {
            addr,
            shop,
            down: Arc::new(AtomicBool::new(false)),
            no_nodes: Arc::new(AtomicBool::new(false)),
            next_id: Arc::new(AtomicU64::new(1_000_000)),
        };
        let app = Router::new()
            .route("/admin/api/{version}/graphql.json", post(graphql))
            .with_state(fake.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        fake
    }

    /// A shop with Shopify's standard figures (bucket 2000, 100/s).
    pub async fn standard() -> FakeShopify {
        Self::start(2000.0, 100.0).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shop> {
        self.shop.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A variant with `sku`, stocked at the location with nothing on hand.
    pub fn add_variant(&self, sku: &str) -> String {
        let (v, i) = (self.id(), self.id());
        let item = gid("InventoryItem", i);
        let mut levels = BTreeMap::new();
        levels.insert(LOCATION.to_string(), Level::default());
        self.lock().items.insert(
            item.clone(),
            Item {
                sku: sku.to_string(),
                variant: gid("ProductVariant", v),
                levels,
            },
        );
        item
    }

    /// Stops serving the `nodes` root field.
    pub fn refuse_nodes(&self) {
        self.no_nodes.store(true, Ordering::SeqCst);
    }

    /// While down, every call is answered 503.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn level(&self, sku: &str) -> Level {
        let shop = self.lock();
        shop.items
            .values()
            .find(|i| i.sku == sku)
            .and_then(|i| i.levels.get(LOCATION).copied())
            .unwrap_or_default()
    }

    pub fn set_level(&self, sku: &str, level: Level) {
        let mut shop = self.lock();
        if let Some(i) = shop.items.values_mut().find(|i| i.sku == sku) {
            i.levels.insert(LOCATION.to_string(), level);
        }
    }

    /// Empties the bucket (it restores from now).
    pub fn drain(&self) {
        let mut shop = self.lock();
        shop.bucket = 0.0;
        shop.refilled = Instant::now();
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn writes(&self) -> Vec<Write> {
        self.lock().writes.clone()
    }

    /// The storefront sells `lines` if every one is available: units move
    /// from available to committed, and the order's payload is returned
    /// (REST shape, as orders/create sends it). None: sold out.
    pub fn place_order(&self, lines: &[(&str, i64)], price: &str) -> Option<Value> {
        let id = self.id();
        let mut shop = self.lock();
        for (sku, q) in lines {
            let level = shop
                .items
                .values()
                .find(|i| i.sku == *sku)?
                .levels
                .get(LOCATION)?;
            if level.available < *q {
                return None;
            }
        }
        let mut line_items = Vec::new();
        for (sku, q) in lines {
            let item = shop.items.values_mut().find(|i| i.sku == *sku).unwrap();
            let level = item.levels.get_mut(LOCATION).unwrap();
            level.available -= q;
            level.committed += q;
            line_items.push(json!({
                "id": self.id(), "sku": sku, "quantity": q, "current_quantity": q,
                "fulfillable_quantity": q, "price": price, "variant_id": 1, "title": sku,
                "requires_shipping": true, "fulfillment_status": null,
            }));
        }
        let order = json!({
            "id": id, "name": format!("#{}", id % 100_000), "currency": "EUR",
            "taxes_included": true, "financial_status": "paid", "cancelled_at": null,
            "created_at": "2026-11-27T08:36:31+01:00", "updated_at": "2026-11-27T08:36:31+01:00",
            "customer": { "id": 7_000_000 + id % 1000 }, "line_items": line_items, "refunds": [],
            "fulfillments": [],
        });
        shop.orders.insert(id.to_string(), order.clone());
        Some(order)
    }

    /// Ships the whole order: committed and on_hand drop. The
    /// fulfillments/create payload.
    pub fn fulfill(&self, order: &Value) -> Value {
        let fid = self.id();
        let mut shop = self.lock();
        let lines = order["line_items"].as_array().cloned().unwrap_or_default();
        for li in &lines {
            let sku = li["sku"].as_str().unwrap_or("");
            let q = li["quantity"].as_i64().unwrap_or(0);
            if let Some(item) = shop.items.values_mut().find(|i| i.sku == sku) {
                let level = item.levels.get_mut(LOCATION).unwrap();
                level.committed -= q;
            }
        }
        json!({ "id": fid, "order_id": order["id"], "status": "success", "location_id": 655441491,
                "line_items": lines })
    }

    /// Cancels the order: committed units back to available. The
    /// orders/cancelled payload.
    pub fn cancel(&self, order: &Value) -> Value {
        let mut shop = self.lock();
        for li in order["line_items"].as_array().into_iter().flatten() {
            let sku = li["sku"].as_str().unwrap_or("");
            let q = li["quantity"].as_i64().unwrap_or(0);
            if let Some(item) = shop.items.values_mut().find(|i| i.sku == sku) {
                let level = item.levels.get_mut(LOCATION).unwrap();
                level.committed -= q;
                level.available += q;
            }
        }
        let mut cancelled = order.clone();
        cancelled["cancelled_at"] = json!("2026-11-27T09:00:00+01:00");
        cancelled["financial_status"] = json!("refunded");
        cancelled
    }

    fn refill(shop: &mut Shop) {
        let now = Instant::now();
        let gained = shop.restore * now.duration_since(shop.refilled).as_secs_f64();
        shop.bucket = (shop.bucket + gained).min(shop.bucket_max);
        shop.refilled = now;
    }

    fn cost(shop: &Shop, requested: f64) -> Value {
        json!({
            "requestedQueryCost": requested,
            "actualQueryCost": requested,
            "throttleStatus": {
                "maximumAvailable": shop.bucket_max,
                "currentlyAvailable": shop.bucket.floor(),
                "restoreRate": shop.restore,
            }
        })
    }
}

/// Signs and posts a webhook to the adapter; the status it answered.
pub async fn deliver(adapter: SocketAddr, topic: &str, body: &Value, webhook_id: &str) -> u16 {
    let text = body.to_string();
    let sig = stockpool::adapters::shopify::webhook::sign(SECRET, text.as_bytes());
    post_raw(adapter, topic, &text, Some(&sig), webhook_id).await
}

/// Posts a webhook with the signature given (None: without one).
pub async fn post_raw(
    adapter: SocketAddr,
    topic: &str,
    body: &str,
    signature: Option<&str>,
    webhook_id: &str,
) -> u16 {
    let mut req = format!(
        "POST /webhooks HTTP/1.1\r\nHost: {adapter}\r\nContent-Type: application/json\r\n\
         X-Shopify-Topic: {topic}\r\nX-Shopify-Shop-Domain: demo.myshopify.com\r\n\
         X-Shopify-API-Version: 2026-04\r\nX-Shopify-Webhook-Id: {webhook_id}\r\n\
         X-Shopify-Triggered-At: 2026-11-27T08:36:31.000Z\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(sig) = signature {
        req.push_str(&format!("X-Shopify-Hmac-Sha256: {sig}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(adapter).await else {
        return 0;
    };
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    if read.is_err() {
        return 0;
    }
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn gql_error(message: impl Into<String>, code: &str) -> Value {
    json!({ "errors": [{ "message": message.into(), "extensions": { "code": code } }] })
}

async fn graphql(
    State(fake): State<FakeShopify>,
    axum::extract::Path(version): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    if fake.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response();
    }
    if version != "2026-04" {
        return (StatusCode::NOT_FOUND, Json(json!({"errors": "Not Found"}))).into_response();
    }
    if headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok())
        != Some(TOKEN)
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"})),
        )
            .into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"errors": "Bad Request"})),
        )
            .into_response();
    };
    let query = request["query"].as_str().unwrap_or("").to_string();
    let vars = request["variables"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let (kind, selection) = match parse(&query, &vars) {
        Ok(p) => p,
        Err(e) => return Json(gql_error(e, "BAD_REQUEST")).into_response(),
    };
    let fields: Vec<&Field> = selection
        .iter()
        .filter_map(|s| match s {
            Selection::Field(f) => Some(f),
            _ => None,
        })
        .collect();
    // The fake's cost model: 2 + 2 per variant asked for; 3 per inventory
    // item read (item, level, quantities); 10 per mutation.
    let mut cost = 0.0;
    for f in &fields {
        cost += match (kind.as_str(), f.name.as_str()) {
            ("query", "productVariants") => {
                2.0 + 2.0 * f.args.get("first").and_then(Value::as_f64).unwrap_or(0.0)
            }
            ("query", "nodes") => {
                3.0 * f
                    .args
                    .get("ids")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len) as f64
            }
            ("mutation", _) => 10.0,
            _ => 1.0,
        };
    }
    let mut shop = fake.lock();
    FakeShopify::refill(&mut shop);
    if cost > shop.bucket_max {
        let mut answer = json!({ "errors": [{
            "message": format!("Query cost is {cost}, which exceeds the single query max cost limit ({}).", shop.bucket_max),
            "extensions": { "code": "MAX_COST_EXCEEDED", "cost": cost, "maxCost": shop.bucket_max }
        }]});
        answer["extensions"] = json!({ "cost": FakeShopify::cost(&shop, cost) });
        return Json(answer).into_response();
    }
    let over = cost > shop.bucket;
    shop.calls.push(Call {
        at: Instant::now(),
        cost,
        over_budget: over,
    });
    if over {
        let mut answer = gql_error("Throttled", "THROTTLED");
        answer["errors"][0]["extensions"]["documentation"] =
            json!("https://shopify.dev/api/usage/rate-limits");
        let mut c = FakeShopify::cost(&shop, cost);
        c["actualQueryCost"] = Value::Null;
        answer["extensions"] = json!({ "cost": c });
        return Json(answer).into_response();
    }
    shop.bucket -= cost;
    let mut data = Map::new();
    for f in fields {
        let result = match (kind.as_str(), f.name.as_str()) {
            ("query", "productVariants") => variants(&shop, f),
            ("query", "nodes") if !fake.no_nodes.load(Ordering::SeqCst) => nodes(&shop, f),
            ("mutation", "inventorySetQuantities") => set_quantities(&mut shop, f),
            (k, n) => Err(format!(
                "Field '{n}' doesn't exist on type '{}'",
                if k == "query" {
                    "QueryRoot"
                } else {
                    "Mutation"
                }
            )),
        };
        match result {
            Ok(v) => {
                data.insert(f.key().to_string(), v);
            }
            Err(e) => {
                let mut answer = gql_error(e, "BAD_REQUEST");
                answer["extensions"] = json!({ "cost": FakeShopify::cost(&shop, cost) });
                return Json(answer).into_response();
            }
        }
    }
    Json(json!({ "data": data, "extensions": { "cost": FakeShopify::cost(&shop, cost) } }))
        .into_response()
}

fn item_value(id: &str, item: &Item) -> Value {
    let levels: Map<String, Value> = item
        .levels
        .iter()
        .map(|(loc, l)| {
            (
                loc.clone(),
                json!({ "__typename": "InventoryLevel", "available": l.available, "committed": l.committed,
                        "unavailable": l.unavailable, "on_hand": l.on_hand() }),
            )
        })
        .collect();
    json!({ "__typename": "InventoryItem", "id": id, "sku": item.sku, "tracked": true, "levels": levels })
}

/// Fields that take arguments below the root.
fn resolve(obj: &Value, f: &Field) -> Result<Value, String> {
    match f.name.as_str() {
        "inventoryLevel" => {
            let loc = f
                .args
                .get("locationId")
                .and_then(Value::as_str)
                .ok_or("inventoryLevel needs locationId")?;
            Ok(obj["levels"].get(loc).cloned().unwrap_or(Value::Null))
        }
        "quantities" => {
            let names = f
                .args
                .get("names")
                .and_then(Value::as_array)
                .ok_or("quantities needs names")?;
            let mut out = Vec::new();
            for n in names {
                let n = n.as_str().unwrap_or("");
                let q = match n {
                    "available" | "committed" | "on_hand" => obj[n].as_i64().unwrap_or(0),
                    "reserved" | "damaged" | "safety_stock" | "quality_control" | "incoming" => 0,
                    other => {
                        return Err(format!("'{other}' is not a valid inventory quantity name"))
                    }
                };
                out.push(json!({ "__typename": "InventoryQuantity", "name": n, "quantity": q }));
            }
            Ok(Value::Array(out))
        }
        name => Ok(obj.get(name).cloned().unwrap_or(Value::Null)),
    }
}

fn variants(shop: &Shop, f: &Field) -> Result<Value, String> {
    let first = f
        .args
        .get("first")
        .and_then(Value::as_i64)
        .ok_or("productVariants needs first")?;
    if !(1..=250).contains(&first) {
        return Err(format!(
            "The first argument must be between 1 and 250, got {first}"
        ));
    }
    let query = f.args.get("query").and_then(Value::as_str).unwrap_or("");
    let mut wanted = Vec::new();
    for term in query.split(" OR ") {
        let term = term.trim();
        let Some(v) = term.strip_prefix("sku:") else {
            return Err(format!(
                "the fake understands sku:... terms joined by OR, got {term:?}"
            ));
        };
        let v = if let Some(q) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            q.replace("\\\"", "\"").replace("\\\\", "\\")
        } else {
            v.to_string()
        };
        wanted.push(v);
    }
    let nodes: Vec<Value> = shop
        .items
        .iter()
        .filter(|(_, i)| wanted.contains(&i.sku))
        .take(first as usize)
        .map(|(id, i)| {
            json!({ "__typename": "ProductVariant", "id": i.variant, "sku": i.sku,
                    "inventoryItem": item_value(id, i) })
        })
        .collect();
    let conn = json!({ "__typename": "ProductVariantConnection", "nodes": nodes,
                       "pageInfo": { "hasNextPage": false } });
    project(&conn, &f.selection, &resolve)
}

fn nodes(shop: &Shop, f: &Field) -> Result<Value, String> {
    let ids = f
        .args
        .get("ids")
        .and_then(Value::as_array)
        .ok_or("nodes needs ids")?;
    if ids.len() > 250 {
        return Err(format!(
            "The ids argument has {} ids, more than the 250 allowed",
            ids.len()
        ));
    }
    let list: Vec<Value> = ids
        .iter()
        .map(|id| {
            let id = id.as_str().unwrap_or("");
            shop.items
                .get(id)
                .map(|i| item_value(id, i))
                .unwrap_or(Value::Null)
        })
        .collect();
    project(&Value::Array(list), &f.selection, &resolve)
}

fn set_quantities(shop: &mut Shop, f: &Field) -> Result<Value, String> {
    let key = f
        .directives
        .iter()
        .find(|(n, _)| n == "idempotent")
        .and_then(|(_, a)| a.get("key"))
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or("inventorySetQuantities requires the @idempotent(key:) directive as of 2026-04")?
        .to_string();
    let input = f
        .args
        .get("input")
        .and_then(Value::as_object)
        .ok_or("inventorySetQuantities needs input")?;
    if input.contains_key("ignoreCompareQuantity") {
        return Err("InventorySetQuantitiesInput has no argument 'ignoreCompareQuantity' in 2026-04: pass changeFromQuantity".into());
    }
    let quantities = input
        .get("quantities")
        .and_then(Value::as_array)
        .ok_or("input.quantities is required")?;
    if quantities.len() > 250 {
        return Err(format!(
            "The input array size of {} is greater than the maximum allowed of 250.",
            quantities.len()
        ));
    }
    for (i, q) in quantities.iter().enumerate() {
        if q.get("changeFromQuantity").is_none() {
            return Err(format!("input.quantities.{i}.changeFromQuantity is required as of 2026-04 (pass null to skip the check)"));
        }
        if q.get("compareQuantity").is_some() {
            return Err(format!("input.quantities.{i}.compareQuantity was replaced by changeFromQuantity in 2026-04"));
        }
    }
    let fingerprint = Value::Object(input.clone()).to_string();
    let respond = |payload: Value| project(&payload, &f.selection, &resolve);
    if let Some((seen, answer)) = shop.idempotency.get(&key) {
        if *seen == fingerprint {
            return respond(answer.clone());
        }
        return respond(
            json!({ "__typename": "InventorySetQuantitiesPayload", "inventoryAdjustmentGroup": null,
            "userErrors": [{ "code": "IDEMPOTENCY_KEY_PARAMETER_MISMATCH", "field": ["input"],
                             "message": "The same idempotency key cannot be used with different operation parameters." }] }),
        );
    }
    let name = input.get("name").and_then(Value::as_str).unwrap_or("");
    let reason = input.get("reason").and_then(Value::as_str).unwrap_or("");
    let reference = input
        .get("referenceDocumentUri")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut errors = Vec::new();
    let err = |code: &str, field: Vec<Value>, message: &str| json!({ "code": code, "field": field, "message": message });
    if name != "available" && name != "on_hand" {
        errors.push(err(
            "INVALID_NAME",
            vec![json!("input"), json!("name")],
            "The quantity name must be either 'available' or 'on_hand'.",
        ));
    }
    if !REASONS.contains(&reason) {
        errors.push(err(
            "INVALID_REASON",
            vec![json!("input"), json!("reason")],
            "The specified reason is invalid.",
        ));
    }
    if !reference.is_empty() && !reference.contains(':') {
        errors.push(err(
            "INVALID_REFERENCE_DOCUMENT",
            vec![json!("input"), json!("referenceDocumentUri")],
            "The specified reference document is invalid.",
        ));
    }
    let mut planned = Vec::new();
    for (i, q) in quantities.iter().enumerate() {
        let at = |leaf: &str| {
            vec![
                json!("input"),
                json!("quantities"),
                json!(i.to_string()),
                json!(leaf),
            ]
        };
        let item = q["inventoryItemId"].as_str().unwrap_or("");
        let loc = q["locationId"].as_str().unwrap_or("");
        let Some(quantity) = q["quantity"].as_i64() else {
            errors.push(err(
                "INVALID_QUANTITY_NEGATIVE",
                at("quantity"),
                "The quantity is required.",
            ));
            continue;
        };
        let Some(it) = shop.items.get(item) else {
            errors.push(err(
                "INVALID_INVENTORY_ITEM",
                at("inventoryItemId"),
                "The specified inventory item could not be found.",
            ));
            continue;
        };
        if loc != LOCATION {
            errors.push(err(
                "INVALID_LOCATION",
                at("locationId"),
                "The specified location could not be found.",
            ));
            continue;
        }
        let Some(level) = it.levels.get(loc) else {
            errors.push(err(
                "ITEM_NOT_STOCKED_AT_LOCATION",
                at("inventoryItemId"),
                "The specified inventory item is not stocked at the location.",
            ));
            continue;
        };
        if name == "on_hand" && quantity < 0 {
            errors.push(err(
                "INVALID_QUANTITY_NEGATIVE",
                at("quantity"),
                "The quantity can't be negative.",
            ));
            continue;
        }
        if quantity > 1_000_000_000 {
            errors.push(err(
                "INVALID_QUANTITY_TOO_HIGH",
                at("quantity"),
                "The total quantity can't be higher than 1,000,000,000.",
            ));
            continue;
        }
        let persisted = if name == "on_hand" {
            level.on_hand()
        } else {
            level.available
        };
        if let Some(from) = q["changeFromQuantity"].as_i64() {
            if from != persisted {
                errors.push(err(
                    "CHANGE_FROM_QUANTITY_STALE",
                    at("changeFromQuantity"),
                    "The changeFromQuantity value does not match persisted value.",
                ));
                continue;
            }
        }
        planned.push((item.to_string(), quantity));
    }
    let payload = if errors.is_empty() {
        let mut changes = Vec::new();
        for (item, quantity) in planned {
            let it = shop.items.get_mut(&item).unwrap();
            let level = it.levels.get_mut(LOCATION).unwrap();
            let before = if name == "on_hand" {
                level.on_hand()
            } else {
                level.available
            };
            // Setting on_hand moves the difference into available.
            level.available += quantity - before;
            let (sku, after) = (it.sku.clone(), *level);
            changes.push(json!({ "__typename": "InventoryChange", "name": name, "delta": quantity - before, "quantityAfterChange": quantity }));
            shop.writes.push(Write {
                at: Instant::now(),
                sku,
                on_hand: after.on_hand(),
                available: after.available,
                reference: reference.clone(),
            });
        }
        json!({ "__typename": "InventorySetQuantitiesPayload",
                "inventoryAdjustmentGroup": { "__typename": "InventoryAdjustmentGroup", "reason": reason,
                    "referenceDocumentUri": reference, "changes": changes },
                "userErrors": [] })
    } else {
        json!({ "__typename": "InventorySetQuantitiesPayload", "inventoryAdjustmentGroup": null, "userErrors": errors })
    };
    shop.idempotency.insert(key, (fingerprint, payload.clone()));
    respond(payload)
}
