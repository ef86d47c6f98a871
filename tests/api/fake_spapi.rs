//! A fake Selling Partner API for the Amazon adapter's tests, as strict as
//! the real one where the adapter touches it:
//!
//! - Login with Amazon (`POST /auth/o2/token`): form-encoded
//!   `grant_type=refresh_token` with the app's client id and secret and
//!   the seller's refresh token (`400 invalid_grant` / `401
//!   invalid_client` otherwise); an access token lives `expires_in`
//!   seconds (3600 unless the test shortens it).
//! - Every SP-API call needs a live token in `x-amz-access-token`: a
//!   missing, unknown, revoked or expired one is `403 Unauthorized` in
//!   SP-API's error shape.
//! - Every operation has its own token bucket (rate, burst: the usage
//!   plan, scaled by the test); a call over it is `429 QuotaExceeded`,
//!   and every answer carries `x-amzn-RateLimit-Limit`.
//! - getOrders: `MarketplaceIds` required; exactly one of `CreatedAfter`
//!   and `LastUpdatedAfter`; dates in ISO 8601; `LastUpdatedAfter` and
//!   `LastUpdatedBefore` no later than the two-minute rule allows (the
//!   rule's length is the test's, scaled); anything else `400
//!   InvalidInput`. Pages of `MaxResultsPerPage` (1..=100) with a
//!   `NextToken` that overrides the other criteria; an unknown token is
//!   `400 InvalidInput`. An order is returned as it is now, when its
//!   `LastUpdateDate` is in the window.
//! - getOrderItems: `SellerSKU`, `QuantityOrdered`, `QuantityShipped`,
//!   `ItemPrice { CurrencyCode, Amount }` (the line's total); pages of 2
//!   items, so `NextToken` is exercised.
//! - Listings Items 2021-08-01: patchListingsItem answers `ACCEPTED` for a
//!   well-formed `fulfillment_availability` patch and applies it later
//!   (`apply_delay`; with `drop_every` some accepted patches never apply,
//!   as Amazon sometimes does); a bad patch is `INVALID` with issues; an
//!   unknown SKU 404. getListingsItem with
//!   `includedData=fulfillmentAvailability` shows what is applied.
//! - Feeds 2021-06-30: createFeedDocument, upload to the document's URL
//!   (content type as declared), createFeed `JSON_LISTINGS_FEED` (an
//!   uploaded document only), getFeed (`IN_QUEUE`, `IN_PROGRESS`, then
//!   `DONE` after `feed_delay`, when the messages apply; with
//!   `drop_feed_every` some accepted messages never apply, reported
//!   without an issue all the same), getFeedDocument for the processing
//!   report (issues per `messageId`).
//! - Tokens 2021-03-01: createRestrictedDataToken (with an access token)
//!   for `restrictedResources` this fake knows, `GET /orders/v0/orders`
//!   with `dataElements` among `buyerInfo` and `shippingAddress`; any other
//!   method, path or data element (or none) is `400 InvalidInput`. The RDT
//!   (`expiresIn`, `rdt_life`) is an access token for that operation only
//!   (elsewhere, and once expired, `403 Unauthorized`); getOrders shows
//!   `BuyerInfo` only to an RDT with `buyerInfo`.
//! - An outage on demand: every SP-API call answered 503.
//! - The storefront: an order placed takes its units off the listing at
//!   once (refused when the listing has fewer: Amazon does not oversell);
//!   a cancel puts them back.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use serde_json::{json, Value};
use stockpool::adapters::amazon::iso;

pub const CLIENT_ID: &str = "amzn1.application-oa2-client.test";
pub const CLIENT_SECRET: &str = "lwa-client-secret";
pub const REFRESH_TOKEN: &str = "Atzr|test-refresh-token";
pub const SELLER: &str = "A2TESTSELLER1";
pub const MARKETPLACE: &str = "A1PA6795UKMFR9";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One operation's plan.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub rate: f64,
    pub burst: u32,
}

#[derive(Debug)]
struct Bucket {
    plan: Plan,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + self.plan.rate * now.duration_since(self.at).as_secs_f64())
            .min(f64::from(self.plan.burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// An order line on Amazon.
#[derive(Debug, Clone)]
pub struct Item {
    pub seller_sku: String,
    pub quantity: i64,
    pub shipped: i64,
    /// Per unit, e.g. "19.90".
    pub unit_price: String,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub id: String,
    pub status: String,
    pub purchase_ms: i64,
    pub last_update_ms: i64,
    pub afn: bool,
    pub business: bool,
    pub items: Vec<Item>,
}

#[derive(Debug, Default)]
struct Listing {
    /// What Amazon shows (applied).
    quantity: i64,
    /// Accepted patches, applied at their time, in order.
    pending: Vec<(Instant, i64)>,
}

#[derive(Debug)]
struct Feed {
    document: String,
    created: Instant,
    done: bool,
    result: Option<String>,
}

#[derive(Debug)]
struct Document {
    content_type: String,
    content: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Amazon {
    token_life: Duration,
    tokens: HashMap<String, Instant>,
    grants: u64,
    unauthorized: u64,
    rule: Duration,
    plans: HashMap<&'static str, Plan>,
    buckets: HashMap<&'static str, Bucket>,
    throttled: HashMap<&'static str, u64>,
    calls: HashMap<&'static str, u64>,
    orders: BTreeMap<String, Order>,
    order_seq: u64,
    pages: HashMap<String, Vec<String>>,
    item_pages: HashMap<String, (String, usize)>,
    listings: BTreeMap<String, Listing>,
    apply_delay: Duration,
    drop_every: u64,
    accepted: u64,
    dropped: u64,
    /// Every nth feed message accepted is not applied (0: all apply).
    drop_feed_every: u64,
    feed_accepted: u64,
    feed_dropped: u64,
    feeds: HashMap<String, Feed>,
    documents: HashMap<String, Document>,
    feed_delay: Duration,
    next_id: u64,
    refused_orders: u64,
    /// Every SP-API call answered 503 (an outage).
    down: bool,
    /// Pages served by NextToken (getOrders, getOrderItems).
    next_pages: u64,
    /// Processing reports said to be GZIP-compressed.
    gzip_reports: bool,
    /// How long a Restricted Data Token lives.
    rdt_life: Duration,
    /// RDT → (expiry, data elements it grants on getOrders).
    rdts: HashMap<String, (Instant, Vec<String>)>,
    rdt_grants: u64,
    /// createRestrictedDataToken answered 400.
    rdt_refused: u64,
    /// getOrders answers that carried BuyerInfo.
    buyer_info_served: u64,
    /// The app lacks the role for buyerInfo: createRestrictedDataToken 403.
    deny_rdt: bool,
}

/// The fake. Cheap to clone.
#[derive(Clone)]
pub struct FakeSpApi {
    addr: SocketAddr,
    state: Arc<Mutex<Amazon>>,
}

/// The plans of every operation, from the adapter's configured rates.
pub fn plans(rates: &[(&'static str, f64, u32)]) -> HashMap<&'static str, Plan> {
    rates
        .iter()
        .map(|(op, rate, burst)| {
            (
                *op,
                Plan {
                    rate: *rate,
                    burst: *burst,
                },
            )
        })
        .collect()
}

fn error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Value) {
    (
        status,
        json!({ "errors": [{ "code": code, "message": message, "details": "" }] }),
    )
}

impl FakeSpApi {
    /// Serves on a free loopback port with the plans given, the
    /// two-minute rule shortened to `rule`, tokens living `token_life`.
    pub async fn start(
        plans: HashMap<&'static str, Plan>,
        rule: Duration,
        token_life: Duration,
    ) -> FakeSpApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeSpApi {
            addr,
            state: Arc::new(Mutex::new(Amazon {
                token_life,
                tokens: HashMap::new(),
                grants: 0,
                unauthorized: 0,
                rule,
                plans,
                buckets: HashMap::new(),
                throttled: HashMap::new(),
                calls: HashMap::new(),
                orders: BTreeMap::new(),
                order_seq: 0,
                pages: HashMap::new(),
                item_pages: HashMap::new(),
                listings: BTreeMap::new(),
                apply_delay: Duration::from_millis(30),
                drop_every: 0,
                accepted: 0,
                dropped: 0,
                drop_feed_every: 0,
                feed_accepted: 0,
                feed_dropped: 0,
                feeds: HashMap::new(),
                documents: HashMap::new(),
                feed_delay: Duration::from_millis(100),
                next_id: 1,
                refused_orders: 0,
                down: false,
                next_pages: 0,
                gzip_reports: false,
                rdt_life: Duration::from_secs(3600),
                rdts: HashMap::new(),
                rdt_grants: 0,
                rdt_refused: 0,
                buyer_info_served: 0,
                deny_rdt: false,
            })),
        };
        let app = Router::new().fallback(handle).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Amazon> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn lwa_url(&self) -> String {
        format!("http://{}/auth/o2/token", self.addr)
    }

    pub fn add_listing(&self, sku: &str, quantity: i64) {
        self.lock()
            .listings
            .entry(sku.to_string())
            .or_default()
            .quantity = quantity;
    }

    /// The quantity Amazon shows (what was applied).
    pub fn listing(&self, sku: &str) -> Option<i64> {
        let mut a = self.lock();
        a.apply_due();
        a.listings.get(sku).map(|l| l.quantity)
    }

    /// Every `n`th accepted patch is never applied (0: all apply).
    pub fn drop_every(&self, n: u64) {
        self.lock().drop_every = n;
    }

    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Every `n`th accepted feed message is never applied (0: all apply);
    /// the processing report does not say so, as Amazon's does not.
    pub fn drop_feed_every(&self, n: u64) {
        self.lock().drop_feed_every = n;
    }

    /// Feed messages accepted and not applied.
    pub fn feed_dropped(&self) -> u64 {
        self.lock().feed_dropped
    }

    /// A buyer places an order (Pending); its units leave the listing at
    /// once. Err when the listing has fewer (nothing changes).
    pub fn place_order(
        &self,
        lines: &[(&str, i64, &str)],
        business: bool,
        afn: bool,
    ) -> Result<String, String> {
        let mut a = self.lock();
        a.apply_due();
        if !afn {
            for (sku, q, _) in lines {
                let have = a.listings.get(*sku).map(|l| l.quantity).unwrap_or(0);
                if have < *q {
                    a.refused_orders += 1;
                    return Err(format!("{sku}: {have} listed, {q} wanted"));
                }
            }
            for (sku, q, _) in lines {
                a.listings.get_mut(*sku).unwrap().quantity -= q;
            }
        }
        a.order_seq += 1;
        let n = a.order_seq;
        let id = format!("{:03}-{:07}-{:07}", 100 + n % 900, 1_000_000 + n, 7_654_321);
        let now = now_ms();
        a.orders.insert(
            id.clone(),
            Order {
                id: id.clone(),
                status: "Pending".into(),
                purchase_ms: now,
                last_update_ms: now,
                afn,
                business,
                items: lines
                    .iter()
                    .map(|(sku, q, price)| Item {
                        seller_sku: sku.to_string(),
                        quantity: *q,
                        shipped: 0,
                        unit_price: price.to_string(),
                    })
                    .collect(),
            },
        );
        Ok(id)
    }

    /// Amazon moves the order on: Unshipped (paid), Shipped, Canceled
    /// (units back on the listing).
    pub fn set_status(&self, id: &str, status: &str) {
        let mut a = self.lock();
        a.apply_due();
        let order = a.orders.get_mut(id).expect("a placed order");
        assert!(
            !matches!(order.status.as_str(), "Shipped" | "Canceled"),
            "{id} is {} already",
            order.status
        );
        order.status = status.to_string();
        order.last_update_ms = now_ms();
        if status == "Shipped" {
            for i in &mut order.items {
                i.shipped = i.quantity;
            }
        }
        let back: Vec<(String, i64)> = if status == "Canceled" && !order.afn {
            order
                .items
                .iter()
                .map(|i| (i.seller_sku.clone(), i.quantity))
                .collect()
        } else {
            vec![]
        };
        for (sku, q) in back {
            if let Some(l) = a.listings.get_mut(&sku) {
                l.quantity += q;
            }
        }
    }

    pub fn orders(&self) -> Vec<Order> {
        self.lock().orders.values().cloned().collect()
    }

    pub fn throttled(&self, op: &str) -> u64 {
        self.lock()
            .throttled
            .iter()
            .filter(|(o, _)| **o == op)
            .map(|(_, n)| *n)
            .sum()
    }

    /// 429s per operation.
    pub fn throttles(&self) -> BTreeMap<&'static str, u64> {
        self.lock()
            .throttled
            .iter()
            .map(|(o, n)| (*o, *n))
            .collect()
    }

    pub fn throttled_total(&self) -> u64 {
        self.lock().throttled.values().sum()
    }

    pub fn calls(&self, op: &str) -> u64 {
        self.lock()
            .calls
            .iter()
            .filter(|(o, _)| **o == op)
            .map(|(_, n)| *n)
            .sum()
    }

    pub fn grants(&self) -> u64 {
        self.lock().grants
    }

    pub fn unauthorized(&self) -> u64 {
        self.lock().unauthorized
    }

    /// Every access token given so far stops working (revoked).
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// An outage: every SP-API call (not Login with Amazon) is 503.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Processing reports are announced GZIP-compressed (as Amazon may).
    pub fn gzip_reports(&self, on: bool) {
        self.lock().gzip_reports = on;
    }

    /// Pages asked for by NextToken.
    pub fn next_pages(&self) -> u64 {
        self.lock().next_pages
    }

    /// Restricted Data Tokens live this long from now on.
    pub fn set_rdt_life(&self, life: Duration) {
        self.lock().rdt_life = life;
    }

    /// The app has no role for buyerInfo (Tax Invoicing / Tax
    /// Remittance): every createRestrictedDataToken is 403.
    pub fn deny_rdt(&self, deny: bool) {
        self.lock().deny_rdt = deny;
    }

    /// Restricted Data Tokens given.
    pub fn rdt_grants(&self) -> u64 {
        self.lock().rdt_grants
    }

    /// createRestrictedDataToken calls refused (400).
    pub fn rdt_refused(&self) -> u64 {
        self.lock().rdt_refused
    }

    /// getOrders pages that carried a BuyerInfo.
    pub fn buyer_info_served(&self) -> u64 {
        self.lock().buyer_info_served
    }

    pub fn feeds(&self) -> usize {
        self.lock().feeds.len()
    }
}

impl Amazon {
    fn apply_due(&mut self) {
        let now = Instant::now();
        for l in self.listings.values_mut() {
            while let Some((at, q)) = l.pending.first().copied() {
                if at > now {
                    break;
                }
                l.quantity = q;
                l.pending.remove(0);
            }
        }
        let due: Vec<String> = self
            .feeds
            .iter()
            .filter(|(_, f)| !f.done && f.created.elapsed() >= self.feed_delay)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.process_feed(&id);
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    fn take(&mut self, op: &'static str) -> bool {
        *self.calls.entry(op).or_default() += 1;
        let plan = self.plans.get(op).copied().unwrap_or(Plan {
            rate: 1.0,
            burst: 1,
        });
        let bucket = self.buckets.entry(op).or_insert_with(|| Bucket {
            plan,
            tokens: f64::from(plan.burst),
            at: Instant::now(),
        });
        if bucket.take() {
            true
        } else {
            *self.throttled.entry(op).or_default() += 1;
            false
        }
    }

    /// A listings patch as SP-API validates it: the quantity, or issues.
    fn patch_quantity(body: &Value) -> Result<i64, String> {
        if body
            .get("productType")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err("productType is required".into());
        }
        let patches = body
            .get("patches")
            .and_then(Value::as_array)
            .ok_or("patches is required")?;
        let [p] = patches.as_slice() else {
            return Err("one patch expected".into());
        };
        if !matches!(
            p.get("op").and_then(Value::as_str),
            Some("replace" | "merge")
        ) {
            return Err(format!("op {:?} not allowed here", p.get("op")));
        }
        if p.get("path").and_then(Value::as_str) != Some("/attributes/fulfillment_availability") {
            return Err(format!(
                "path {:?} is not fulfillment_availability",
                p.get("path")
            ));
        }
        let v = p.pointer("/value/0").ok_or("value is required")?;
        if v.get("fulfillment_channel_code").and_then(Value::as_str) != Some("DEFAULT") {
            return Err("fulfillment_channel_code must be DEFAULT for seller-fulfilled".into());
        }
        match v.get("quantity").and_then(Value::as_i64) {
            Some(q) if q >= 0 => Ok(q),
            _ => Err("quantity must be a whole number, 0 or more".into()),
        }
    }

    fn process_feed(&mut self, id: &str) {
        let doc = self.feeds[id].document.clone();
        let content = self.documents[&doc].content.clone().unwrap_or_default();
        let parsed: Value = serde_json::from_slice(&content).unwrap_or(Value::Null);
        let mut issues = Vec::new();
        let mut accepted = 0;
        let header_ok = parsed.pointer("/header/sellerId").and_then(Value::as_str) == Some(SELLER)
            && parsed.pointer("/header/version").and_then(Value::as_str) == Some("2.0");
        let messages = parsed
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !header_ok {
            issues.push(json!({ "code": "4000001", "severity": "ERROR", "message": "header.sellerId and version 2.0 are required" }));
        } else {
            for m in &messages {
                let mid = m.get("messageId").and_then(Value::as_u64).unwrap_or(0);
                let sku = m.get("sku").and_then(Value::as_str).unwrap_or("");
                let result = if m.get("operationType").and_then(Value::as_str) != Some("PATCH") {
                    Err("operationType must be PATCH".to_string())
                } else {
                    Self::patch_quantity(m)
                };
                match (result, self.listings.get_mut(sku)) {
                    (Ok(q), Some(l)) => {
                        accepted += 1;
                        self.feed_accepted += 1;
                        if self.drop_feed_every > 0
                            && self.feed_accepted.is_multiple_of(self.drop_feed_every)
                        {
                            self.feed_dropped += 1;
                        } else {
                            l.quantity = q;
                            l.pending.clear();
                        }
                    }
                    (Ok(_), None) => issues.push(json!({ "messageId": mid, "code": "4000004", "severity": "ERROR", "message": format!("SKU {sku} not found") })),
                    (Err(why), _) => issues.push(json!({ "messageId": mid, "code": "4000002", "severity": "ERROR", "message": why })),
                }
            }
        }
        let report = json!({
            "header": { "sellerId": SELLER, "version": "2.0", "feedId": id },
            "issues": issues,
            "summary": { "errors": issues.len(), "warnings": 0, "messagesProcessed": messages.len(), "messagesAccepted": accepted, "messagesInvalid": messages.len() - accepted },
        });
        let result = self.id("amzn1.tortuga.3.result.");
        self.documents.insert(
            result.clone(),
            Document {
                content_type: "application/json".into(),
                content: Some(report.to_string().into_bytes()),
            },
        );
        let feed = self.feeds.get_mut(id).unwrap();
        feed.done = true;
        feed.result = Some(result);
    }
}

fn query(uri: &Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn money(micros_total: i64, currency: &str) -> Value {
    json!({ "CurrencyCode": currency, "Amount": format!("{}.{:02}", micros_total / 100, micros_total % 100) })
}

fn cents(price: &str) -> i64 {
    let (w, f) = price.split_once('.').unwrap_or((price, "0"));
    w.parse::<i64>().unwrap() * 100 + format!("{f:0<2}")[..2].parse::<i64>().unwrap()
}

fn order_json(o: &Order, buyer_info: bool) -> Value {
    let total: i64 = o
        .items
        .iter()
        .map(|i| cents(&i.unit_price) * i.quantity)
        .sum();
    let mut v = json!({
        "AmazonOrderId": o.id,
        "PurchaseDate": iso::format(o.purchase_ms),
        "LastUpdateDate": iso::format(o.last_update_ms),
        "OrderStatus": o.status,
        "FulfillmentChannel": if o.afn { "AFN" } else { "MFN" },
        "OrderType": "StandardOrder",
        "MarketplaceId": MARKETPLACE,
        "IsBusinessOrder": o.business,
        "NumberOfItemsShipped": o.items.iter().map(|i| i.shipped).sum::<i64>(),
        "NumberOfItemsUnshipped": o.items.iter().map(|i| i.quantity - i.shipped).sum::<i64>(),
        "OrderTotal": money(total, "EUR"),
    });
    if o.business && buyer_info {
        v["BuyerInfo"] = json!({ "BuyerEmail": format!("buyer-{}@marketplace.amazon.de", &o.id[4..11]), "BuyerTaxInfo": { "CompanyLegalName": "ACME GmbH" } });
    }
    v
}

async fn handle(
    State(fake): State<FakeSpApi>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut a = fake.lock();
    a.apply_due();
    // Login with Amazon.
    if method == Method::POST && path == "/auth/o2/token" {
        let form_ok = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        let form: HashMap<String, String> = form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        if !form_ok || get("grant_type") != "refresh_token" {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": "unsupported_grant_type", "error_description": "form-encoded grant_type=refresh_token expected" }))).into_response();
        }
        if get("client_id") != CLIENT_ID || get("client_secret") != CLIENT_SECRET {
            return (StatusCode::UNAUTHORIZED, axum::Json(json!({ "error": "invalid_client", "error_description": "Client authentication failed" }))).into_response();
        }
        if get("refresh_token") != REFRESH_TOKEN {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": "invalid_grant", "error_description": "The request has an invalid grant parameter : refresh_token" }))).into_response();
        }
        let token = a.id("Atza|access-");
        let life = a.token_life;
        a.tokens.insert(token.clone(), Instant::now() + life);
        a.grants += 1;
        return axum::Json(json!({ "access_token": token, "refresh_token": REFRESH_TOKEN, "token_type": "bearer", "expires_in": life.as_secs() })).into_response();
    }
    // Feed documents (presigned URLs): no token.
    if segments.first() == Some(&"s3") && segments.len() == 2 {
        let id = segments[1].to_string();
        let Some(doc) = a.documents.get_mut(&id) else {
            return (StatusCode::NOT_FOUND, "NoSuchKey").into_response();
        };
        if method == Method::PUT {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if ct != doc.content_type {
                return (
                    StatusCode::FORBIDDEN,
                    "SignatureDoesNotMatch: the content type differs from the document's",
                )
                    .into_response();
            }
            doc.content = Some(body.to_vec());
            return StatusCode::OK.into_response();
        }
        if method == Method::GET {
            return match &doc.content {
                Some(c) => (StatusCode::OK, c.clone()).into_response(),
                None => (StatusCode::NOT_FOUND, "NoSuchKey").into_response(),
            };
        }
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let op: &'static str = match (&method, segments.as_slice()) {
        (&Method::GET, ["orders", "v0", "orders"]) => "getOrders",
        (&Method::GET, ["orders", "v0", "orders", _, "orderItems"]) => "getOrderItems",
        (&Method::PATCH, ["listings", "2021-08-01", "items", _, _]) => "patchListingsItem",
        (&Method::GET, ["listings", "2021-08-01", "items", _, _]) => "getListingsItem",
        (&Method::POST, ["feeds", "2021-06-30", "documents"]) => "createFeedDocument",
        (&Method::POST, ["feeds", "2021-06-30", "feeds"]) => "createFeed",
        (&Method::GET, ["feeds", "2021-06-30", "feeds", _]) => "getFeed",
        (&Method::GET, ["feeds", "2021-06-30", "documents", _]) => "getFeedDocument",
        (&Method::POST, ["tokens", "2021-03-01", "restrictedDataToken"]) => {
            "createRestrictedDataToken"
        }
        _ => {
            let (s, v) = error(StatusCode::NOT_FOUND, "NotFound", "Resource not found");
            return (s, axum::Json(v)).into_response();
        }
    };
    if a.down {
        let (s, v) = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "Service temporarily unavailable.",
        );
        return (s, axum::Json(v)).into_response();
    }
    let token = headers
        .get("x-amz-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let rdt = a.rdts.get(token).cloned();
    let live = match &rdt {
        // An RDT is the access token of the restricted operation it was
        // asked for, and of nothing else.
        Some((exp, _)) => op == "getOrders" && Instant::now() < *exp,
        None => a.tokens.get(token).is_some_and(|exp| Instant::now() < *exp),
    };
    if !live {
        a.unauthorized += 1;
        let (s, v) = error(
            StatusCode::FORBIDDEN,
            "Unauthorized",
            "Access to requested resource is denied.",
        );
        return (s, axum::Json(v)).into_response();
    }
    let limit = a.plans.get(op).map(|p| p.rate).unwrap_or(1.0).to_string();
    if !a.take(op) {
        let (s, v) = error(
            StatusCode::TOO_MANY_REQUESTS,
            "QuotaExceeded",
            "You exceeded your quota for the requested resource.",
        );
        return (s, [("x-amzn-RateLimit-Limit", limit)], axum::Json(v)).into_response();
    }
    let q = query(&uri);
    let buyer_info = rdt.is_some_and(|(_, elements)| elements.iter().any(|e| e == "buyerInfo"));
    let (status, value) = a.operation(op, &segments, &q, &headers, &body, &fake.url(), buyer_info);
    (
        status,
        [("x-amzn-RateLimit-Limit", limit)],
        axum::Json(value),
    )
        .into_response()
}

impl Amazon {
    // One argument per part of the request the operations read.
    #[allow(clippy::too_many_arguments)]
    fn operation(
        &mut self,
        op: &'static str,
        segments: &[&str],
        q: &HashMap<String, String>,
        headers: &HeaderMap,
        body: &[u8],
        base: &str,
        buyer_info: bool,
    ) -> (StatusCode, Value) {
        let invalid = |m: &str| error(StatusCode::BAD_REQUEST, "InvalidInput", m);
        match op {
            "getOrders" => {
                if q.get("MarketplaceIds").map(String::as_str) != Some(MARKETPLACE) {
                    return invalid(
                        "MarketplaceIds is required and must be a marketplace of the seller",
                    );
                }
                if let Some(token) = q.get("NextToken") {
                    let Some(ids) = self.pages.remove(token) else {
                        return invalid("Invalid NextToken");
                    };
                    self.next_pages += 1;
                    return self.orders_page(ids, buyer_info);
                }
                let now = now_ms();
                let latest = now - self.rule.as_millis() as i64;
                let (created, updated) = (q.get("CreatedAfter"), q.get("LastUpdatedAfter"));
                let after = match (created, updated) {
                    (Some(_), Some(_)) => {
                        return invalid("CreatedAfter and LastUpdatedAfter cannot both be set")
                    }
                    (None, None) => {
                        return invalid("Either CreatedAfter or LastUpdatedAfter is required")
                    }
                    (_, Some(u)) => match iso::parse(u) {
                        Some(ms) => ms,
                        None => {
                            return invalid(&format!(
                                "LastUpdatedAfter {u:?} is not an ISO 8601 date"
                            ))
                        }
                    },
                    (Some(c), None) => match iso::parse(c) {
                        Some(ms) => ms,
                        None => {
                            return invalid(&format!("CreatedAfter {c:?} is not an ISO 8601 date"))
                        }
                    },
                };
                if after > latest {
                    return invalid("The date must be no later than two minutes before the time the request was submitted");
                }
                let before = match q.get("LastUpdatedBefore").or(q.get("CreatedBefore")) {
                    None => latest,
                    Some(b) => match iso::parse(b) {
                        Some(ms) if ms > latest => return invalid("LastUpdatedBefore must be no later than two minutes before the time the request was submitted"),
                        Some(ms) if ms < after => return invalid("LastUpdatedBefore must be after LastUpdatedAfter"),
                        Some(ms) => ms,
                        None => return invalid(&format!("{b:?} is not an ISO 8601 date")),
                    },
                };
                let size: usize = match q.get("MaxResultsPerPage").map(|s| s.parse::<usize>()) {
                    None => 100,
                    Some(Ok(n)) if (1..=100).contains(&n) => n,
                    _ => return invalid("MaxResultsPerPage must be 1 to 100"),
                };
                let by_created = created.is_some();
                let ids: Vec<String> = self
                    .orders
                    .values()
                    .filter(|o| {
                        let t = if by_created {
                            o.purchase_ms
                        } else {
                            o.last_update_ms
                        };
                        t >= after && t <= before
                    })
                    .map(|o| o.id.clone())
                    .collect();
                let mut pages: Vec<Vec<String>> =
                    ids.chunks(size).map(<[String]>::to_vec).collect();
                if pages.is_empty() {
                    pages.push(vec![]);
                }
                // Chain the pages: each token gives the next one.
                let first = pages.remove(0);
                let mut tokens = Vec::new();
                for page in pages {
                    let t = self.id("next-orders-");
                    tokens.push((t, page));
                }
                let mut result = self.orders_page_with(
                    first,
                    tokens.first().map(|(t, _)| t.clone()),
                    buyer_info,
                );
                for i in 0..tokens.len() {
                    let next = tokens.get(i + 1).map(|(t, _)| t.clone());
                    let (t, page) = tokens[i].clone();
                    let mut ids = page;
                    if let Some(n) = next {
                        ids.push(format!("\u{0}{n}"));
                    }
                    self.pages.insert(t, ids);
                }
                result.1["payload"]["LastUpdatedBefore"] = json!(iso::format(before));
                result
            }
            "getOrderItems" => {
                let id = segments[3];
                let Some(order) = self.orders.get(id).cloned() else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("Order {id} not found"),
                    );
                };
                let start = match q.get("NextToken") {
                    None => 0,
                    Some(t) => match self.item_pages.remove(t) {
                        Some((oid, start)) if oid == id => {
                            self.next_pages += 1;
                            start
                        }
                        _ => return invalid("Invalid NextToken"),
                    },
                };
                let items: Vec<Value> = order
                    .items
                    .iter()
                    .enumerate()
                    .skip(start)
                    .take(2)
                    .map(|(n, i)| {
                        json!({
                            "ASIN": format!("B0{:08}", n),
                            "SellerSKU": i.seller_sku,
                            "OrderItemId": format!("{}{:02}", &order.id[12..], n),
                            "Title": "An item",
                            "QuantityOrdered": i.quantity,
                            "QuantityShipped": i.shipped,
                            "ItemPrice": money(cents(&i.unit_price) * i.quantity, "EUR"),
                        })
                    })
                    .collect();
                let mut payload = json!({ "AmazonOrderId": id, "OrderItems": items });
                if start + 2 < order.items.len() {
                    let t = self.id("next-items-");
                    self.item_pages
                        .insert(t.clone(), (id.to_string(), start + 2));
                    payload["NextToken"] = json!(t);
                }
                (StatusCode::OK, json!({ "payload": payload }))
            }
            "patchListingsItem" | "getListingsItem" => {
                if segments[3] != SELLER {
                    return error(
                        StatusCode::FORBIDDEN,
                        "Unauthorized",
                        "Access to requested resource is denied.",
                    );
                }
                if q.get("marketplaceIds").map(String::as_str) != Some(MARKETPLACE) {
                    return invalid("marketplaceIds is required");
                }
                let sku = segments[4].to_string();
                if !self.listings.contains_key(&sku) {
                    return error(
                        StatusCode::NOT_FOUND,
                        "NOT_FOUND",
                        &format!("SKU '{sku}' not found in marketplace {MARKETPLACE}"),
                    );
                }
                if op == "getListingsItem" {
                    let q_now = self.listings[&sku].quantity;
                    let mut v = json!({ "sku": sku });
                    if q.get("includedData")
                        .is_some_and(|d| d.split(',').any(|p| p == "fulfillmentAvailability"))
                    {
                        v["fulfillmentAvailability"] =
                            json!([{ "fulfillmentChannelCode": "DEFAULT", "quantity": q_now }]);
                    }
                    return (StatusCode::OK, v);
                }
                let ct_ok = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|c| c.starts_with("application/json"));
                let parsed: Option<Value> = serde_json::from_slice(body).ok();
                let (true, Some(parsed)) = (ct_ok, parsed) else {
                    return invalid("a JSON body is required");
                };
                let submission = self.id("sub-");
                match Self::patch_quantity(&parsed) {
                    Ok(quantity) => {
                        self.accepted += 1;
                        let dropped =
                            self.drop_every > 0 && self.accepted.is_multiple_of(self.drop_every);
                        if dropped {
                            self.dropped += 1;
                        } else {
                            let at = Instant::now() + self.apply_delay;
                            self.listings
                                .get_mut(&sku)
                                .unwrap()
                                .pending
                                .push((at, quantity));
                        }
                        (
                            StatusCode::OK,
                            json!({ "sku": sku, "status": "ACCEPTED", "submissionId": submission, "issues": [] }),
                        )
                    }
                    Err(why) => (
                        StatusCode::OK,
                        json!({ "sku": sku, "status": "INVALID", "submissionId": submission, "issues": [{ "code": "90220", "message": why, "severity": "ERROR", "attributeNames": ["fulfillment_availability"] }] }),
                    ),
                }
            }
            "createFeedDocument" => {
                let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let Some(ct) = parsed.get("contentType").and_then(Value::as_str) else {
                    return invalid("contentType is required");
                };
                let id = self.id("amzn1.tortuga.4.eu.");
                self.documents.insert(
                    id.clone(),
                    Document {
                        content_type: ct.to_string(),
                        content: None,
                    },
                );
                (
                    StatusCode::CREATED,
                    json!({ "feedDocumentId": id, "url": format!("{base}/s3/{id}") }),
                )
            }
            "createFeed" => {
                let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                if parsed.get("feedType").and_then(Value::as_str) != Some("JSON_LISTINGS_FEED") {
                    return invalid(
                        "feedType must be a known feed type (this fake knows JSON_LISTINGS_FEED)",
                    );
                }
                if parsed.get("marketplaceIds") != Some(&json!([MARKETPLACE])) {
                    return invalid("marketplaceIds is required");
                }
                let doc = parsed
                    .get("inputFeedDocumentId")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if self
                    .documents
                    .get(doc)
                    .and_then(|d| d.content.as_ref())
                    .is_none()
                {
                    return invalid("inputFeedDocumentId must name an uploaded document");
                }
                let id = self.id("");
                self.feeds.insert(
                    id.clone(),
                    Feed {
                        document: doc.to_string(),
                        created: Instant::now(),
                        done: false,
                        result: None,
                    },
                );
                (StatusCode::ACCEPTED, json!({ "feedId": id }))
            }
            "getFeed" => {
                let id = segments[3];
                let Some(f) = self.feeds.get(id) else {
                    return error(StatusCode::NOT_FOUND, "NotFound", "Feed not found");
                };
                let status = if f.done {
                    "DONE"
                } else if f.created.elapsed() >= self.feed_delay / 2 {
                    "IN_PROGRESS"
                } else {
                    "IN_QUEUE"
                };
                let mut v = json!({ "feedId": id, "feedType": "JSON_LISTINGS_FEED", "marketplaceIds": [MARKETPLACE], "processingStatus": status });
                if let Some(r) = &f.result {
                    v["resultFeedDocumentId"] = json!(r);
                }
                (StatusCode::OK, v)
            }
            "getFeedDocument" => {
                let id = segments[3];
                if !self.documents.contains_key(id) {
                    return error(StatusCode::NOT_FOUND, "NotFound", "Document not found");
                }
                let mut v = json!({ "feedDocumentId": id, "url": format!("{base}/s3/{id}") });
                if self.gzip_reports && id.contains(".result.") {
                    v["compressionAlgorithm"] = json!("GZIP");
                }
                (StatusCode::OK, v)
            }
            "createRestrictedDataToken" => {
                if self.deny_rdt {
                    return error(
                        StatusCode::FORBIDDEN,
                        "Unauthorized",
                        "Application does not have access to one or more requested data elements",
                    );
                }
                let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let resources = parsed
                    .get("restrictedResources")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut refusal = None;
                if resources.is_empty() || resources.len() > 50 {
                    refusal = Some("restrictedResources is required (1 to 50)".to_string());
                }
                let mut elements: Vec<String> = Vec::new();
                for r in &resources {
                    let method = r.get("method").and_then(Value::as_str).unwrap_or("");
                    let path = r.get("path").and_then(Value::as_str).unwrap_or("");
                    let asked: Vec<&str> = r
                        .get("dataElements")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    if !matches!(method, "GET" | "PUT" | "POST" | "DELETE") {
                        refusal =
                            Some(format!("method {method:?} is not GET, PUT, POST or DELETE"));
                    } else if method != "GET" || path != "/orders/v0/orders" {
                        refusal = Some(format!(
                            "{method} {path} is not a restricted resource (this fake knows GET /orders/v0/orders)"
                        ));
                    } else if asked.is_empty() {
                        refusal = Some(format!("dataElements is required for {path}"));
                    } else if let Some(e) = asked
                        .iter()
                        .find(|e| !matches!(**e, "buyerInfo" | "shippingAddress"))
                    {
                        refusal = Some(format!("{e:?} is not a data element of {path}"));
                    } else {
                        elements.extend(asked.iter().map(|e| e.to_string()));
                    }
                }
                if let Some(why) = refusal {
                    self.rdt_refused += 1;
                    return invalid(&why);
                }
                let token = self.id("Atz.sprdt|");
                self.rdts
                    .insert(token.clone(), (Instant::now() + self.rdt_life, elements));
                self.rdt_grants += 1;
                (
                    StatusCode::OK,
                    json!({ "restrictedDataToken": token, "expiresIn": self.rdt_life.as_secs() }),
                )
            }
            _ => unreachable!(),
        }
    }

    fn orders_page(&mut self, mut ids: Vec<String>, buyer_info: bool) -> (StatusCode, Value) {
        let next = match ids.last() {
            Some(l) if l.starts_with('\u{0}') => Some(ids.pop().unwrap()[1..].to_string()),
            _ => None,
        };
        self.orders_page_with(ids, next, buyer_info)
    }

    fn orders_page_with(
        &mut self,
        ids: Vec<String>,
        next: Option<String>,
        buyer_info: bool,
    ) -> (StatusCode, Value) {
        let orders: Vec<Value> = ids
            .iter()
            .filter_map(|id| self.orders.get(id))
            .map(|o| order_json(o, buyer_info))
            .collect();
        if orders.iter().any(|o| o.get("BuyerInfo").is_some()) {
            self.buyer_info_served += 1;
        }
        let mut payload = json!({ "Orders": orders });
        if let Some(n) = next {
            payload["NextToken"] = json!(n);
        }
        (StatusCode::OK, json!({ "payload": payload }))
    }
}
