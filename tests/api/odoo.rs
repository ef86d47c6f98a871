//! The Odoo connection against a strict fake Odoo 17: priced sale orders
//! with the right customer, currency and fiscal position; Odoo as master
//! of physical stock whatever the order deliveries, counts and channel
//! fulfills arrive in; notifications sent before Odoo commits; one sale
//! order per reservation whatever Odoo's latency; Odoo's refusals
//! dead-lettered at once; the start-up check; pushes while Odoo is down,
//! ops retrying the dead letter, and the reconciliation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stockpool::api::pb;
use stockpool::domain::{ChannelCode, Currency, CustomerRef, StockMaster, WarehouseCode};
use stockpool::engine::{Engine, SetCmd, SystemClock};
use stockpool::odoo::{Connector, Inbound, OdooConfig, WarehouseRef};
use stockpool::store::SqliteStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::fake_odoo::{Commit, FakeOdoo, Notification, DEFAULTS};
use crate::helpers::{line, seed, spawn_app_with, TestApp};

const SECRET: &str = "webhook-secret-0123456789";

/// Odoo's side of the seed world: the three warehouses (one configured by
/// id, two by their Odoo short name), a contact per channel, and products.
struct World {
    odoo: FakeOdoo,
    warehouses: HashMap<&'static str, i64>,
    products: HashMap<String, i64>,
    /// The contact each channel sells to by default.
    partners: HashMap<&'static str, i64>,
}

fn ch(c: &str) -> ChannelCode {
    ChannelCode::parse(c).unwrap()
}

fn wh(c: &str) -> WarehouseCode {
    WarehouseCode::parse(c).unwrap()
}

impl World {
    async fn new(products: &[&str]) -> World {
        let odoo = FakeOdoo::start().await;
        let warehouses = [
            ("WH-EAST", "EAST"),
            ("WH-WEST", "WEST"),
            ("WH-CENTRAL", "CENT"),
        ]
        .into_iter()
        .map(|(ours, theirs)| (ours, odoo.add_warehouse(theirs)))
        .collect();
        let products = products
            .iter()
            .map(|p| (p.to_string(), odoo.add_product(p)))
            .collect();
        let partners = [
            ("shopify", "Shopify customers"),
            ("amazon", "Amazon"),
            ("b2b", "B2B portal"),
        ]
        .into_iter()
        .map(|(channel, name)| (channel, odoo.add_partner(name, None)))
        .collect();
        World {
            odoo,
            warehouses,
            products,
            partners,
        }
    }

    fn config(&self) -> OdooConfig {
        let o = &self.odoo;
        let mut c = OdooConfig::for_tests(&o.url(), o.db(), o.login(), o.api_key());
        for (channel, partner) in &self.partners {
            c.set_partner(ch(channel), *partner);
        }
        c.warehouses
            .insert(wh("WH-EAST"), WarehouseRef::Id(self.warehouses["WH-EAST"]));
        c.warehouses
            .insert(wh("WH-WEST"), WarehouseRef::Code("WEST".into()));
        c.warehouses
            .insert(wh("WH-CENTRAL"), WarehouseRef::Code("CENT".into()));
        c.webhook_secret = Some(SECRET.into());
        c
    }

    /// A server connected to this Odoo, whose notifications go to it, with
    /// 10 units of TEE and MUG in WH-EAST and 100 in WH-CENTRAL.
    async fn app(&self, adjust: impl FnOnce(&mut OdooConfig)) -> TestApp {
        let mut app = self.bare_app(adjust).await;
        stock_up(&mut app, &["TEE", "MUG"]).await;
        app
    }

    /// A server connected to this Odoo, holding no stock.
    async fn bare_app(&self, adjust: impl FnOnce(&mut OdooConfig)) -> TestApp {
        let mut odoo = self.config();
        adjust(&mut odoo);
        let app = spawn_app_with(|c| c.odoo = Some(odoo)).await;
        self.odoo.set_webhook(&format!(
            "http://{}/odoo/webhook?secret={SECRET}",
            app.http_addr
        ));
        app
    }

    fn product(&self, sku: &str) -> i64 {
        self.products[sku]
    }

    /// The mutating calls Odoo received for one order, in order:
    /// `create`, `action_confirm`, `write <qty>`, `action_cancel`.
    fn writes_of(&self, reference: &str) -> Vec<String> {
        let Some(order) = self.odoo.order_by_ref(reference) else {
            return Vec::new();
        };
        let line_ids: Vec<i64> = order.lines.iter().map(|l| l.id).collect();
        let first_id = |args: &serde_json::Value| args[0][0].as_i64();
        self.odoo
            .writes()
            .into_iter()
            .filter_map(|c| match (c.model.as_str(), c.method.as_str()) {
                ("sale.order", "create")
                    if c.args[0]["client_order_ref"].as_str() == Some(reference) =>
                {
                    Some("create".to_string())
                }
                ("sale.order", m) if first_id(&c.args) == Some(order.id) => Some(m.to_string()),
                ("sale.order.line", "write")
                    if first_id(&c.args).is_some_and(|id| line_ids.contains(&id)) =>
                {
                    Some(format!("write {}", c.args[1]["product_uom_qty"]))
                }
                _ => None,
            })
            .collect()
    }
}

/// 10 units of `sku` in WH-EAST and 100 in WH-CENTRAL (b2b's fence), the
/// same in Odoo and in stockpool.
async fn stock_both(world: &World, app: &mut TestApp, sku: &str) {
    let p = world.product(sku);
    world.odoo.set_quant(p, world.warehouses["WH-EAST"], 10.0);
    world
        .odoo
        .set_quant(p, world.warehouses["WH-CENTRAL"], 100.0);
    stock_up(app, &[sku]).await;
}

/// 10 units of each SKU in WH-EAST, where shopify and amazon ship from
/// first, and 100 in WH-CENTRAL, which covers b2b's fence of 100.
async fn stock_up(app: &mut TestApp, skus: &[&str]) {
    for sku in skus {
        app.set_stock(sku, "WH-EAST", 10).await;
        app.set_stock(sku, "WH-CENTRAL", 100).await;
    }
}

async fn outbox(app: &mut TestApp, state: pb::OutboxState) -> Vec<pb::OutboxEntry> {
    app.admin
        .list_outbox(pb::ListOutboxRequest {
            state: state as i32,
            after_id: 0,
            limit: 1000,
        })
        .await
        .expect("list outbox")
        .into_inner()
        .entries
}

/// Polls the outbox until `done` holds (at most 30 s).
async fn wait_for(
    app: &mut TestApp,
    what: &str,
    done: impl Fn(&[pb::OutboxEntry]) -> bool,
) -> Vec<pb::OutboxEntry> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = outbox(app, pb::OutboxState::Unspecified).await;
        if done(&all) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn all_pushed(entries: &[pb::OutboxEntry]) -> bool {
    !entries.is_empty()
        && entries
            .iter()
            .all(|e| e.state == pb::OutboxState::Pushed as i32)
}

fn is_dead(e: &pb::OutboxEntry) -> bool {
    e.state == pb::OutboxState::Dead as i32
}

async fn release(app: &mut TestApp, channel: &str, order: &str, lines: Vec<pb::Line>) {
    app.inventory
        .release(pb::ReleaseRequest {
            channel: channel.into(),
            order_id: order.into(),
            lines,
            reason: "customer cancelled".into(),
        })
        .await
        .expect("release");
}

/// A priced line.
fn priced(sku: &str, quantity: i64, unit_price: &str) -> pb::Line {
    pb::Line {
        unit_price: unit_price.into(),
        ..line(sku, quantity)
    }
}

async fn reserve_priced(
    app: &mut TestApp,
    channel: &str,
    order: &str,
    lines: Vec<pb::Line>,
    currency: &str,
    customer_ref: &str,
) -> pb::Reservation {
    app.inventory
        .reserve(pb::ReserveRequest {
            channel: channel.into(),
            order_id: order.into(),
            lines,
            currency: currency.into(),
            customer_ref: customer_ref.into(),
            ..Default::default()
        })
        .await
        .expect("reserve")
        .into_inner()
        .reservation
        .unwrap()
}

/// The level of one SKU in one warehouse.
async fn level(app: &mut TestApp, sku: &str, warehouse: &str) -> pb::StockLevel {
    app.stock(&[sku])
        .await
        .into_iter()
        .find(|l| l.warehouse == warehouse)
        .unwrap()
}

/// Sends a notification as Odoo does, then waits until stockpool has read
/// Odoo for it.
async fn notify(world: &World, app: &TestApp, n: &Notification) {
    assert_eq!(world.odoo.send(n).await, Some(200), "{n:?}");
    app.odoo.as_ref().expect("Odoo configured").idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priced_shopify_amazon_and_b2b_orders_carry_the_channels_prices_currency_customer_and_fiscal_position(
) {
    let world = World::new(&["TEE", "MUG"]).await;
    let o = &world.odoo;
    let marketplace = o.add_fiscal_position("Marketplace facilitator (Amazon remits)");
    let exempt = o.add_fiscal_position("Tax exempt (resale certificate)");
    let acme = o.add_partner("ACME Wholesale", Some("ACME-001"));
    o.set_partner_fiscal_position(acme, exempt);
    // A contact of ACME with the same reference: ACME is the customer.
    o.add_contact_of(acme, "ACME purchasing", Some("ACME-001"));
    let usd = o.add_pricelist("USD", DEFAULTS.usd);
    let b2b_team = o.add_team("Wholesale");
    let mut app = world
        .app(|c| {
            c.channel_mut(ch("amazon")).fiscal_position = Some(marketplace);
            c.channel_mut(ch("b2b")).team = Some(b2b_team);
        })
        .await;

    let shopify = reserve_priced(
        &mut app,
        "shopify",
        "#1001",
        vec![priced("TEE", 2, "19.90"), priced("MUG", 1, "7.5")],
        "EUR",
        "gid://shopify/Customer/7012",
    )
    .await;
    assert_eq!(
        (shopify.currency.as_str(), shopify.customer_ref.as_str()),
        ("EUR", "gid://shopify/Customer/7012")
    );
    let tee = shopify.allocations.iter().find(|a| a.sku == "TEE").unwrap();
    assert_eq!(tee.unit_price, "19.90", "echoed as given");
    reserve_priced(
        &mut app,
        "amazon",
        "114-3941689-8772232",
        vec![priced("TEE", 1, "24.99")],
        "USD",
        "amzn1.account.AE6",
    )
    .await;
    reserve_priced(
        &mut app,
        "b2b",
        "PO-7781",
        vec![priced("MUG", 40, "3.10")],
        "EUR",
        "ACME-001",
    )
    .await;
    wait_for(&mut app, "three orders pushed", |all| {
        all.len() == 3 && all_pushed(all)
    })
    .await;

    let price = |order: &crate::fake_odoo::Order, sku: &str| {
        order
            .lines
            .iter()
            .find(|l| l.product_id == world.product(sku))
            .map(|l| (l.qty, l.price_unit))
            .unwrap()
    };
    let retail = o.order_by_ref("shopify:#1001:WH-EAST").unwrap();
    assert_eq!(
        retail.partner_id, world.partners["shopify"],
        "a customer Odoo does not know: the channel's partner"
    );
    assert_eq!(retail.currency, "EUR");
    assert_eq!(retail.fiscal_position_id, None);
    assert_eq!(price(&retail, "TEE"), (2.0, 19.9));
    assert_eq!(price(&retail, "MUG"), (1.0, 7.5));

    let marketplace_order = o
        .order_by_ref("amazon:114-3941689-8772232:WH-EAST")
        .unwrap();
    assert_eq!(marketplace_order.partner_id, world.partners["amazon"]);
    assert_eq!(
        (
            marketplace_order.currency.as_str(),
            marketplace_order.pricelist_id
        ),
        ("USD", usd),
        "the order is in the channel's currency, through a pricelist in it"
    );
    assert_eq!(
        marketplace_order.fiscal_position_id,
        Some(marketplace),
        "Amazon remits the tax: the channel's fiscal position"
    );
    assert_eq!(price(&marketplace_order, "TEE"), (1.0, 24.99));

    let wholesale = o.order_by_ref("b2b:PO-7781:WH-CENTRAL").unwrap();
    assert_eq!(
        wholesale.partner_id, acme,
        "the B2B account is its own customer"
    );
    assert_eq!(
        wholesale.fiscal_position_id,
        Some(exempt),
        "computed by Odoo from the tax-exempt customer"
    );
    assert_eq!(wholesale.team_id, Some(b2b_team));
    assert_eq!(price(&wholesale, "MUG"), (40.0, 3.1));
    for order in [&retail, &marketplace_order, &wholesale] {
        assert_eq!(order.state, "sale", "{order:?}");
    }

    // A partial release lowers the quantity and keeps the channel's price
    // (Odoo recomputes the list price when only the quantity is written).
    release(&mut app, "shopify", "#1001", vec![line("TEE", 1)]).await;
    wait_for(&mut app, "the release pushed", |all| {
        all.len() == 4 && all_pushed(all)
    })
    .await;
    let retail = o.order_by_ref("shopify:#1001:WH-EAST").unwrap();
    assert_eq!(price(&retail, "TEE"), (1.0, 19.9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_reference_two_odoo_companies_share_is_dead_lettered_naming_both() {
    let world = World::new(&["TEE"]).await;
    let a = world.odoo.add_partner("ACME East", Some("ACME-002"));
    let b = world.odoo.add_partner("ACME West", Some("ACME-002"));
    let mut app = world.app(|_| {}).await;
    reserve_priced(
        &mut app,
        "b2b",
        "PO-1",
        vec![priced("TEE", 1, "5")],
        "EUR",
        "ACME-002",
    )
    .await;
    let dead = wait_for(&mut app, "a dead letter", |all| all.iter().any(is_dead)).await;
    assert_eq!(dead[0].attempts, 1);
    assert!(
        dead[0]
            .last_error
            .contains("2 Odoo contacts have Reference \"ACME-002\"")
            && dead[0].last_error.contains(&format!("{a}, {b}")),
        "{}",
        dead[0].last_error
    );
    assert!(world.odoo.orders().is_empty(), "no guess in the books");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Picking,
    Quant,
    Fulfill,
}

fn permutations() -> Vec<[Step; 3]> {
    use Step::*;
    vec![
        [Picking, Quant, Fulfill],
        [Picking, Fulfill, Quant],
        [Quant, Picking, Fulfill],
        [Quant, Fulfill, Picking],
        [Fulfill, Picking, Quant],
        [Fulfill, Quant, Picking],
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_all_six_orders_of_picking_quant_and_fulfill_on_hand_ends_at_odoos_count_and_free_never_rises_above_its_end(
) {
    let skus: Vec<String> = (0..6).map(|i| format!("ARR-{i}")).collect();
    let names: Vec<&str> = skus.iter().map(String::as_str).collect();
    let world = World::new(&names).await;
    let east = world.warehouses["WH-EAST"];
    // One read per notification, so each step is followed before the next.
    let mut app = world
        .bare_app(|c| c.webhook_recheck = c.webhook_delay)
        .await;
    for (i, sku) in names.iter().enumerate() {
        stock_both(&world, &mut app, sku).await;
        app.reserve("shopify", &format!("ARR-{i}"), &[(sku, 3)], 0)
            .await
            .unwrap();
    }
    wait_for(&mut app, "every order in Odoo", |all| {
        all.len() == 6 && all_pushed(all)
    })
    .await;

    for (i, steps) in permutations().into_iter().enumerate() {
        let (sku, order) = (names[i], format!("ARR-{i}"));
        let product = world.product(sku);
        let reference = format!("shopify:{order}:WH-EAST");
        let ledger_before = app
            .engine
            .ledger(Some(&stockpool::domain::Sku::parse(sku).unwrap()), 0, 100)
            .await
            .unwrap()
            .len();
        // Odoo validates the delivery: quant, picking and delivered
        // quantity in one commit; the notifications come as `steps` say.
        let notes = world
            .odoo
            .deliver(&reference, &[(product, 3.0)], Commit::Held)
            .await;
        let (picking, quant) = (&notes[0], &notes[1]);
        let mut frees = Vec::new();
        for step in steps {
            match step {
                Step::Picking => notify(&world, &app, picking).await,
                Step::Quant => notify(&world, &app, quant).await,
                Step::Fulfill => {
                    app.inventory
                        .fulfill(pb::FulfillRequest {
                            channel: "shopify".into(),
                            order_id: order.clone(),
                            lines: Vec::new(),
                            shipment_id: format!("ship-{order}"),
                        })
                        .await
                        .expect("the channel's Fulfill is accepted in any order");
                }
            }
            frees.push(level(&mut app, sku, "WH-EAST").await.free);
        }
        // Late repeats change nothing.
        notify(&world, &app, quant).await;
        notify(&world, &app, picking).await;

        let end = level(&mut app, sku, "WH-EAST").await;
        assert_eq!(world.odoo.on_hand(product, east), 7.0);
        assert_eq!(
            (end.on_hand, end.reserved, end.free),
            (7, 0, 7),
            "{steps:?}: on-hand is Odoo's count, nothing reserved"
        );
        assert!(
            frees.iter().all(|f| *f <= end.free),
            "{steps:?}: free after each step {frees:?} must not exceed its final {}",
            end.free
        );
        let r = app
            .inventory
            .get_reservation(pb::GetReservationRequest {
                channel: "shopify".into(),
                order_id: order.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            pb::ReservationStatus::Fulfilled as i32,
            "{steps:?}"
        );
        assert_eq!(r.allocations[0].fulfilled, 3);
        let moved: Vec<(i64, i64)> = app
            .engine
            .ledger(Some(&stockpool::domain::Sku::parse(sku).unwrap()), 0, 100)
            .await
            .unwrap()
            .into_iter()
            .skip(ledger_before)
            .map(|l| (l.entry.on_hand_delta, l.entry.reserved_delta))
            .collect();
        assert_eq!(
            moved,
            [(-3, -3)],
            "{steps:?}: the delivery is one movement, and no unit leaves twice"
        );
    }

    // A return received in Odoo and refunded twice by the channel (Shopify's
    // refund and Stripe's, under different ids) is on hand once.
    let (sku, product) = (names[0], world.product(names[0]));
    let notes = world
        .odoo
        .receive_return("shopify:ARR-0:WH-EAST", &[(product, 2.0)], Commit::Held)
        .await;
    for refund in ["shopify-refund-9001", "stripe-re_3Nb2"] {
        app.inventory
            .restock(pb::RestockRequest {
                channel: "shopify".into(),
                order_id: "ARR-0".into(),
                refund_id: refund.into(),
                lines: vec![line(sku, 2)],
            })
            .await
            .expect("restock");
        assert_eq!(
            level(&mut app, sku, "WH-EAST").await.on_hand,
            7,
            "a refund alone moves nothing: Odoo receives the goods"
        );
    }
    for n in &notes {
        notify(&world, &app, n).await;
    }
    notify(&world, &app, &notes[1]).await;
    let end = level(&mut app, sku, "WH-EAST").await;
    assert_eq!(world.odoo.on_hand(product, east), 9.0);
    assert_eq!((end.on_hand, end.reserved, end.free), (9, 0, 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_sent_before_odoos_commit_ends_with_the_committed_count() {
    let world = World::new(&["TEE"]).await;
    let tee = world.product("TEE");
    let mut app = world
        .bare_app(|c| {
            c.webhook_delay = Duration::from_millis(100);
            c.webhook_recheck = Duration::from_millis(1200);
        })
        .await;
    stock_both(&world, &mut app, "TEE").await;
    app.reserve("shopify", "1001", &[("TEE", 3)], 0)
        .await
        .unwrap();
    wait_for(&mut app, "the order in Odoo", all_pushed).await;

    // Odoo sends the picking's and the quant's notifications from inside
    // its transaction and commits 500 ms after they were answered: the
    // first read, 100 ms after, still sees the old count.
    world
        .odoo
        .deliver(
            "shopify:1001:WH-EAST",
            &[(tee, 3.0)],
            Commit::AfterWebhooks(Duration::from_millis(500)),
        )
        .await;
    assert_eq!(
        world.odoo.webhook_answers(),
        [Some(200), Some(200)],
        "answered within Odoo's 1 s, without reading Odoo"
    );
    app.odoo.as_ref().unwrap().idle().await;
    let end = level(&mut app, "TEE", "WH-EAST").await;
    assert_eq!(
        (end.on_hand, end.reserved),
        (7, 0),
        "the read after the commit wins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_odoo_commits_after_the_clients_timeout_ends_with_exactly_one_confirmed_order(
) {
    let world = World::new(&["TEE"]).await;
    let mut app = world
        .app(|c| {
            c.timeout = Duration::from_millis(300);
            c.duplicate_check = Duration::from_millis(2500);
        })
        .await;
    // The first create commits 2 s after it was sent, long after the client
    // gave up at 300 ms and created the order again.
    world
        .odoo
        .delay_before_commit("sale.order", "create", Duration::from_secs(2));

    app.reserve("shopify", "2002", &[("TEE", 4)], 0)
        .await
        .unwrap();
    let pushed = wait_for(&mut app, "the entry pushed", all_pushed).await;

    let orders = world.odoo.orders_by_ref("shopify:2002:WH-EAST");
    let states: Vec<&str> = orders.iter().map(|o| o.state.as_str()).collect();
    assert_eq!(
        states.iter().filter(|s| **s == "sale").count(),
        1,
        "exactly one confirmed order: {orders:#?}"
    );
    assert_eq!(
        states.len(),
        2,
        "the late create committed a second one: {orders:#?}"
    );
    assert!(
        states.contains(&"cancel"),
        "the duplicate was found and cancelled: {orders:#?}"
    );
    assert!(
        pushed[0].attempts >= 3,
        "timed out, created, looked again: {pushed:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_after_odoo_created_the_order_does_not_create_it_twice() {
    let world = World::new(&["TEE"]).await;
    let mut app = world
        .app(|c| {
            c.timeout = Duration::from_millis(300);
            c.duplicate_check = Duration::from_millis(100);
        })
        .await;
    world
        .odoo
        .delay_after_commit("sale.order", "create", Duration::from_secs(2));

    app.reserve("shopify", "2001", &[("TEE", 4)], 0)
        .await
        .unwrap();
    let pushed = wait_for(&mut app, "the entry pushed", all_pushed).await;

    assert_eq!(pushed.len(), 1);
    assert_eq!(
        pushed[0].attempts, 2,
        "the first attempt timed out: {pushed:#?}"
    );
    assert_eq!(world.odoo.creates_of("shopify:2001:WH-EAST"), 1);
    assert_eq!(
        world.writes_of("shopify:2001:WH-EAST"),
        ["create", "action_confirm"],
        "the retry found the order and only confirmed it"
    );
    assert_eq!(
        world
            .odoo
            .order_by_ref("shopify:2001:WH-EAST")
            .unwrap()
            .state,
        "sale"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_lock_confirmed_sales_a_release_is_dead_lettered_on_the_first_attempt_with_odoos_message(
) {
    let world = World::new(&["TEE"]).await;
    world.odoo.lock_confirmed_sales(true);
    let mut app = world.app(|c| c.max_attempts = 30).await;
    app.reserve("shopify", "3001", &[("TEE", 3)], 0)
        .await
        .unwrap();
    app.reserve("shopify", "3002", &[("TEE", 1)], 0)
        .await
        .unwrap();
    wait_for(&mut app, "both orders in Odoo", |all| {
        all.len() == 2 && all_pushed(all)
    })
    .await;

    release(&mut app, "shopify", "3001", vec![line("TEE", 1)]).await;
    release(&mut app, "shopify", "3002", Vec::new()).await;
    let all = wait_for(&mut app, "two dead letters", |all| {
        all.iter().filter(|e| is_dead(e)).count() == 2
    })
    .await;
    let dead: HashMap<&str, &pb::OutboxEntry> = all
        .iter()
        .filter(|e| is_dead(e))
        .map(|e| (e.order_id.as_str(), e))
        .collect();
    assert_eq!(dead["3001"].attempts, 1, "no retry: {:#?}", dead["3001"]);
    assert!(
        dead["3001"]
            .last_error
            .contains("It is forbidden to modify the following fields in a locked order"),
        "{}",
        dead["3001"].last_error
    );
    assert!(
        dead["3001"].last_error.contains("shopify:3001:WH-EAST"),
        "names the order: {}",
        dead["3001"].last_error
    );
    assert_eq!(dead["3002"].attempts, 1);
    assert!(
        dead["3002"]
            .last_error
            .contains("You cannot cancel a locked order"),
        "{}",
        dead["3002"].last_error
    );
    assert_eq!(
        world
            .odoo
            .order_by_ref("shopify:3001:WH-EAST")
            .unwrap()
            .lines[0]
            .qty,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_below_what_odoo_delivered_lowers_the_line_only_to_the_delivered_quantity() {
    let world = World::new(&["TEE"]).await;
    let tee = world.product("TEE");
    let mut app = world.bare_app(|_| {}).await;
    stock_both(&world, &mut app, "TEE").await;
    app.reserve("shopify", "4001", &[("TEE", 5)], 0)
        .await
        .unwrap();
    wait_for(&mut app, "the order in Odoo", all_pushed).await;
    // Odoo ships 4 whose notifications stockpool has not followed yet; the
    // channel releases 2 of the 5 meanwhile.
    let notes = world
        .odoo
        .deliver("shopify:4001:WH-EAST", &[(tee, 4.0)], Commit::Held)
        .await;
    release(&mut app, "shopify", "4001", vec![line("TEE", 2)]).await;
    let all = wait_for(&mut app, "the release pushed", |all| {
        all.len() == 2 && all_pushed(all)
    })
    .await;
    assert!(all.iter().all(|e| e.attempts == 1), "{all:#?}");
    let order = world.odoo.order_by_ref("shopify:4001:WH-EAST").unwrap();
    assert_eq!(
        (order.lines[0].qty, order.lines[0].qty_delivered),
        (4.0, 4.0)
    );

    for n in &notes {
        notify(&world, &app, n).await;
    }
    let end = level(&mut app, "TEE", "WH-EAST").await;
    assert_eq!((end.on_hand, end.reserved), (6, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_odoo_is_down_reservations_go_on_and_every_push_arrives_once_in_order_when_it_is_back(
) {
    let world = World::new(&["TEE", "MUG"]).await;
    let mut app = world
        .app(|c| {
            c.max_attempts = 10_000;
            c.backoff_max = Duration::from_millis(100);
        })
        .await;
    world.odoo.set_down(true);

    // Every kind of change, all while Odoo is down.
    app.reserve("shopify", "1001", &[("TEE", 3)], 0)
        .await
        .expect("confirmed at once");
    app.reserve("amazon", "A-1", &[("TEE", 2)], 600)
        .await
        .expect("held");
    app.inventory
        .confirm(pb::ConfirmRequest {
            channel: "amazon".into(),
            order_id: "A-1".into(),
        })
        .await
        .expect("confirm");
    app.reserve("shopify", "1002", &[("TEE", 2), ("MUG", 1)], 0)
        .await
        .expect("two lines");
    release(&mut app, "shopify", "1002", vec![line("TEE", 1)]).await;
    app.reserve("shopify", "1003", &[("TEE", 1)], 0)
        .await
        .expect("to be cancelled");
    release(&mut app, "shopify", "1003", Vec::new()).await;
    app.reserve("shopify", "1004", &[("MUG", 1)], 600)
        .await
        .expect("held, never confirmed");
    release(&mut app, "shopify", "1004", Vec::new()).await;

    // Each reservation's first entry is retried; its later ones wait.
    let waiting = wait_for(&mut app, "failed attempts while Odoo is down", |all| {
        all.len() == 6 && all.iter().filter(|e| e.attempts >= 2).count() == 4
    })
    .await;
    for e in &waiting {
        assert_eq!(e.state, pb::OutboxState::Pending as i32, "{e:?}");
        if e.event == "released" {
            assert_eq!(e.attempts, 0, "waits behind its confirmation: {e:?}");
        } else {
            assert!(e.last_error.contains("503"), "{e:?}");
        }
    }
    assert!(world.odoo.orders().is_empty(), "nothing reached Odoo");

    world.odoo.set_down(false);
    let pushed = wait_for(&mut app, "every entry pushed", all_pushed).await;
    let events: Vec<(String, String)> = pushed
        .iter()
        .map(|e| (format!("{}:{}", e.channel, e.order_id), e.event.clone()))
        .collect();
    assert_eq!(
        events,
        [
            ("shopify:1001", "confirmed"),
            ("amazon:A-1", "confirmed"),
            ("shopify:1002", "confirmed"),
            ("shopify:1002", "released"),
            ("shopify:1003", "confirmed"),
            ("shopify:1003", "released"),
        ]
        .map(|(o, e)| (o.to_string(), e.to_string())),
        "a hold released before confirmation is never pushed"
    );

    assert_eq!(
        world.writes_of("shopify:1001:WH-EAST"),
        ["create", "action_confirm"]
    );
    assert_eq!(
        world.writes_of("amazon:A-1:WH-EAST"),
        ["create", "action_confirm"]
    );
    assert_eq!(
        world.writes_of("shopify:1002:WH-EAST"),
        ["create", "action_confirm", "write 1"],
        "the partial release lowers the line after the order exists"
    );
    assert_eq!(
        world.writes_of("shopify:1003:WH-EAST"),
        ["create", "action_confirm", "action_cancel"]
    );
    assert!(world.odoo.order_by_ref("shopify:1004:WH-EAST").is_none());
    for reference in [
        "shopify:1001:WH-EAST",
        "amazon:A-1:WH-EAST",
        "shopify:1002:WH-EAST",
    ] {
        assert_eq!(world.odoo.creates_of(reference), 1, "{reference}");
    }

    let order = world.odoo.order_by_ref("shopify:1002:WH-EAST").unwrap();
    assert_eq!(
        (order.partner_id, order.warehouse_id),
        (world.partners["shopify"], world.warehouses["WH-EAST"])
    );
    assert_eq!(order.state, "sale");
    let mut lines: Vec<(i64, f64)> = order.lines.iter().map(|l| (l.product_id, l.qty)).collect();
    lines.sort_by_key(|l| l.0);
    let mut want = vec![(world.product("TEE"), 1.0), (world.product("MUG"), 1.0)];
    want.sort_by_key(|l| l.0);
    assert_eq!(lines, want);
    assert_eq!(
        world
            .odoo
            .order_by_ref("amazon:A-1:WH-EAST")
            .unwrap()
            .partner_id,
        world.partners["amazon"]
    );
    assert_eq!(
        world
            .odoo
            .order_by_ref("shopify:1003:WH-EAST")
            .unwrap()
            .state,
        "cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sku_odoo_does_not_know_is_dead_lettered_at_once_and_pushed_when_ops_retry_it() {
    let world = World::new(&["TEE"]).await;
    let mut app = world.app(|_| {}).await;
    stock_up(&mut app, &["GHOST"]).await;

    app.reserve("shopify", "3001", &[("GHOST", 1)], 0)
        .await
        .unwrap();
    let dead = wait_for(&mut app, "a dead letter", |all| {
        all.first().is_some_and(is_dead)
    })
    .await;
    assert_eq!(
        dead[0].attempts, 1,
        "no retry for a product Odoo does not know"
    );
    assert!(
        dead[0]
            .last_error
            .contains("no product with internal reference GHOST"),
        "{}",
        dead[0].last_error
    );
    assert_eq!(outbox(&mut app, pb::OutboxState::Dead).await.len(), 1);
    assert!(world.odoo.order_by_ref("shopify:3001:WH-EAST").is_none());

    // Refused retries change nothing.
    let refused = |r: Result<tonic::Response<pb::RetryOutboxResponse>, tonic::Status>| {
        r.expect_err("refused")
    };
    let e = refused(
        app.admin
            .retry_outbox(pb::RetryOutboxRequest { ids: vec![] })
            .await,
    );
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = refused(
        app.admin
            .retry_outbox(pb::RetryOutboxRequest {
                ids: vec![dead[0].id, 999_999],
            })
            .await,
    );
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("999999"), "{}", e.message());
    assert_eq!(
        outbox(&mut app, pb::OutboxState::Dead).await.len(),
        1,
        "all or nothing"
    );

    // Ops fix the product in Odoo and retry.
    world.odoo.add_product("GHOST");
    let retried = app
        .admin
        .retry_outbox(pb::RetryOutboxRequest {
            ids: vec![dead[0].id],
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(
        (retried[0].state, retried[0].attempts),
        (pb::OutboxState::Pending as i32, 0)
    );
    let pushed = wait_for(&mut app, "the retried entry pushed", all_pushed).await;
    assert_eq!(pushed[0].last_error, "");
    assert_eq!(world.odoo.creates_of("shopify:3001:WH-EAST"), 1);

    let e = refused(
        app.admin
            .retry_outbox(pb::RetryOutboxRequest {
                ids: vec![dead[0].id],
            })
            .await,
    );
    assert_eq!(e.code(), Code::FailedPrecondition, "already pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_product_is_dead_lettered_at_once_saying_so() {
    let world = World::new(&["TEE"]).await;
    world.odoo.set_active(world.product("TEE"), false);
    let mut app = world.app(|_| {}).await;
    app.reserve("shopify", "3101", &[("TEE", 1)], 0)
        .await
        .unwrap();
    let dead = wait_for(&mut app, "a dead letter", |all| {
        all.first().is_some_and(is_dead)
    })
    .await;
    assert_eq!(dead[0].attempts, 1);
    assert!(
        dead[0].last_error.contains("TEE is archived"),
        "{}",
        dead[0].last_error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_odoo_configured_no_outbox_entry_is_written() {
    let mut app = spawn_app_with(|_| {}).await;
    stock_up(&mut app, &["TEE"]).await;
    app.reserve("shopify", "4001", &[("TEE", 1)], 0)
        .await
        .unwrap();
    assert!(outbox(&mut app, pb::OutboxState::Unspecified)
        .await
        .is_empty());
}

/// Builds a server over `config`; the error of a refused start.
async fn start_error(odoo: OdooConfig) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut config = stockpool::config::Config::for_tests(dir.path());
    config.seed = seed();
    config.odoo = Some(odoo);
    match stockpool::server::Application::build(config).await {
        Ok(_) => panic!("the server started"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_a_warehouse_mapping_odoo_does_not_have_naming_it() {
    let world = World::new(&["TEE"]).await;

    let mut by_id = world.config();
    by_id
        .warehouses
        .insert(wh("WH-WEST"), WarehouseRef::Id(999_999));
    let e = start_error(by_id).await;
    assert!(
        e.contains("odoo.warehouses.WH-WEST: Odoo has no warehouse with id 999999"),
        "{e}"
    );

    let mut by_code = world.config();
    by_code
        .warehouses
        .insert(wh("WH-WEST"), WarehouseRef::Code("NORTH".into()));
    let e = start_error(by_code).await;
    assert!(
        e.contains("odoo.warehouses.WH-WEST: Odoo has no warehouse with short name \"NORTH\""),
        "{e}"
    );

    // An unmapped code longer than a short name can be is refused without
    // asking Odoo, even when Odoo is down.
    world.odoo.set_down(true);
    let mut unmapped = world.config();
    unmapped.warehouses.remove(&wh("WH-CENTRAL"));
    let e = start_error(unmapped).await;
    assert!(
        e.contains("warehouse WH-CENTRAL is not under [odoo.warehouses]")
            && e.contains("longer than the 5 characters"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_a_partner_fiscal_position_pricelist_or_team_odoo_does_not_have() {
    let world = World::new(&["TEE"]).await;
    let old_team = world.odoo.add_team("Old team");
    world.odoo.set_active(old_team, false);
    let eur = world.odoo.add_pricelist("EUR", DEFAULTS.eur);
    let mut config = world.config();
    config.set_partner(ch("b2b"), 999_001);
    let amazon = config.channel_mut(ch("amazon"));
    amazon.fiscal_position = Some(999_002);
    amazon
        .pricelists
        .insert(Currency::parse("c", "USD").unwrap(), eur);
    let shopify = config.channel_mut(ch("shopify"));
    shopify.team = Some(old_team);
    shopify
        .customers
        .insert(CustomerRef::parse("c", "VIP-1").unwrap(), 999_003);
    let e = start_error(config).await;
    for wanted in [
        "odoo.channels.b2b.partner: Odoo has no active contact with id 999001".to_string(),
        "odoo.channels.amazon.fiscal_position: Odoo has no active fiscal position with id 999002"
            .to_string(),
        format!("odoo.channels.amazon.pricelists.USD: Odoo's pricelist {eur} is in EUR, not USD"),
        format!("odoo.channels.shopify.team: Odoo has no active sales team with id {old_team}"),
        "odoo.channels.shopify.customers.\"VIP-1\": Odoo has no active contact with id 999003"
            .to_string(),
    ] {
        assert!(e.contains(&wanted), "{wanted}\nnot in\n{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_odoo_is_down_at_start_the_server_starts_and_checks_before_the_first_push() {
    let world = World::new(&["TEE"]).await;
    world.odoo.set_down(true);
    let mut app = world
        .app(|c| {
            c.max_attempts = 10_000;
            c.backoff_max = Duration::from_millis(50);
        })
        .await;
    app.reserve("shopify", "5101", &[("TEE", 1)], 0)
        .await
        .expect("Odoo being down never blocks a reservation");
    wait_for(&mut app, "a failed attempt", |all| {
        all.iter().any(|e| e.attempts >= 1)
    })
    .await;
    world.odoo.set_down(false);
    wait_for(&mut app, "the entry pushed", all_pushed).await;
    assert_eq!(world.odoo.creates_of("shopify:5101:WH-EAST"), 1);
}

/// POSTs `body` to the HTTP port; the status code and the body.
async fn post(app: &TestApp, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_with_a_wrong_or_missing_secret_is_refused_and_changes_nothing() {
    let world = World::new(&["TEE"]).await;
    let mut app = world.app(|_| {}).await;
    let (tee, east) = (world.product("TEE"), world.warehouses["WH-EAST"]);
    world.odoo.set_quant(tee, east, 2.0);
    let before = app.fingerprint().await;
    let body = world.odoo.quant_notification(tee, east).0.to_string();

    for (path, headers) in [
        ("/odoo/webhook?secret=wrong-secret-0123456789", vec![]),
        ("/odoo/webhook", vec![]),
        (
            "/odoo/webhook",
            vec![("X-Stockpool-Secret", "wrong-secret-0123456789")],
        ),
        ("/odoo/webhook?secret=", vec![]),
    ] {
        let (status, answer) = post(&app, path, &headers, &body).await;
        assert_eq!(status, 401, "{path} {headers:?}: {answer}");
        assert!(answer.contains("wrong secret"), "{answer}");
    }
    app.odoo.as_ref().unwrap().idle().await;
    assert_eq!(app.fingerprint().await, before);
    assert!(
        world.odoo.calls().iter().all(|c| c.model != "stock.quant"),
        "Odoo is not even asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quant_notification_sets_each_warehouse_to_odoos_count_rounded_to_the_unit_of_measure() {
    let world = World::new(&["TEE", "MUG"]).await;
    let flour = world.odoo.add_product_in("FLOUR", DEFAULTS.kg);
    let mut app = world.app(|_| {}).await;
    let (tee, east, central) = (
        world.product("TEE"),
        world.warehouses["WH-EAST"],
        world.warehouses["WH-CENTRAL"],
    );
    world.odoo.set_quant(tee, east, 7.0);
    world.odoo.set_quant(tee, central, 2.0);
    // WH-WEST has no quant in Odoo: 0 there.
    app.set_stock("TEE", "WH-WEST", 10).await;
    let mug_before = app.stock(&["MUG"]).await;

    let path = format!("/odoo/webhook?secret={SECRET}");
    let body = world.odoo.quant_notification(tee, east).0.to_string();
    let (status, answer) = post(&app, &path, &[], &body).await;
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["model"], "stock.quant");
    assert_eq!(answer["product_id"], tee);
    app.odoo.as_ref().unwrap().idle().await;

    let levels: HashMap<String, i64> = app
        .stock(&["TEE"])
        .await
        .into_iter()
        .map(|l| (l.warehouse, l.on_hand))
        .collect();
    assert_eq!(
        (levels["WH-EAST"], levels["WH-WEST"], levels["WH-CENTRAL"]),
        (7, 0, 2)
    );
    assert_eq!(
        app.stock(&["MUG"]).await,
        mug_before,
        "other products are left alone"
    );

    // The same notification again (or a late one) changes nothing more.
    let before = app.fingerprint().await;
    let (status, _) = post(
        &app,
        "/odoo/webhook",
        &[("X-Stockpool-Secret", SECRET)],
        &body,
    )
    .await;
    assert_eq!(status, 200);
    app.odoo.as_ref().unwrap().idle().await;
    assert_eq!(app.fingerprint().await, before);

    // 0.7 + 0.2 + 0.1 kg on three shelves is 1 unit, not 0.999… floored to 0.
    for (shelf, kg) in [("A", 0.7), ("B", 0.2), ("C", 0.1)] {
        let location = world.odoo.add_location(east, shelf);
        world.odoo.set_quant_at(flour, location, kg);
    }
    let n = world.odoo.quant_notification(flour, east);
    notify(&world, &app, &n).await;
    assert_eq!(level(&mut app, "FLOUR", "WH-EAST").await.on_hand, 1);

    for (body, status, says) in [
        (r#"{"_model":"res.partner","_id":3}"#, 422, "stock.quant"),
        (r#"{"_model":"stock.quant"}"#, 422, "_id"),
        ("not json", 400, "not JSON"),
    ] {
        let (got, answer) = post(&app, &path, &[], body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer.contains(says), "{answer}");
    }
}

/// An engine over its own SQLite file with the seed world and `stock`
/// (SKU, warehouse, on_hand) set.
async fn engine_with(dir: &std::path::Path, stock: &[(&str, &str, i64)]) -> Engine {
    let store = SqliteStore::open(dir).await.unwrap();
    engine_over(Arc::new(store), stock).await
}

/// An engine over `store` with the seed world and `stock` set.
async fn engine_over(
    store: Arc<dyn stockpool::store::Store>,
    stock: &[(&str, &str, i64)],
) -> Engine {
    let engine = Engine::open(store, seed(), Arc::new(SystemClock))
        .await
        .unwrap();
    for (sku, warehouse, on_hand) in stock {
        engine
            .set_stock(SetCmd {
                sku: stockpool::domain::Sku::parse(*sku).unwrap(),
                warehouse: WarehouseCode::parse(*warehouse).unwrap(),
                on_hand: *on_hand,
                reason: "test".into(),
                expected_version: None,
                movement_id: None,
            })
            .await
            .unwrap();
    }
    engine
}

/// The inbound side over `engine`, as the server builds it.
async fn inbound(engine: &Engine, config: &OdooConfig) -> Arc<Inbound> {
    Connector::prepare(config, engine)
        .await
        .expect("the configuration matches the fake")
        .inbound()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_reports_drift_and_corrects_on_hand_only_when_configured() {
    let world = World::new(&["TEE", "MUG"]).await;
    let (tee, mug) = (world.product("TEE"), world.product("MUG"));
    world.odoo.set_quant(tee, world.warehouses["WH-EAST"], 10.0);
    world.odoo.set_quant(tee, world.warehouses["WH-WEST"], 6.0);
    world
        .odoo
        .set_quant(mug, world.warehouses["WH-CENTRAL"], 4.0);
    let stock = [
        ("TEE", "WH-EAST", 10),  // agrees
        ("TEE", "WH-WEST", 8),   // Odoo counted 6
        ("MUG", "WH-EAST", 3),   // Odoo has none there
        ("LOCAL", "WH-EAST", 2), // Odoo does not know the product
    ];
    for correct in [false, true] {
        let mut config = world.config();
        config.reconcile_correct = correct;
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_with(dir.path(), &stock).await;
        let sync = inbound(&engine, &config).await;

        let drift = sync.reconcile().await.unwrap();
        let mut differing: Vec<(String, String, i64, i64)> = drift
            .differing
            .iter()
            .map(|c| (c.sku.clone(), c.warehouse.clone(), c.before, c.after))
            .collect();
        differing.sort();
        assert_eq!(
            differing,
            vec![
                ("MUG".into(), "WH-CENTRAL".into(), 0, 4),
                ("MUG".into(), "WH-EAST".into(), 3, 0),
                ("TEE".into(), "WH-WEST".into(), 8, 6),
            ]
        );
        assert_eq!(drift.unknown_in_odoo, vec!["LOCAL".to_string()]);
        assert_eq!(drift.compared, 4);

        let on_hand = |sku: &str, warehouse: &str| {
            engine
                .get_stock(&[stockpool::domain::Sku::parse(sku).unwrap()])
                .into_iter()
                .find(|l| l.warehouse.as_str() == warehouse)
                .map_or(0, |l| l.pool.on_hand)
        };
        let now = [
            on_hand("TEE", "WH-WEST"),
            on_hand("MUG", "WH-EAST"),
            on_hand("MUG", "WH-CENTRAL"),
        ];
        if correct {
            assert_eq!(now, [6, 0, 4]);
            let again = sync.reconcile().await.unwrap();
            assert!(again.differing.is_empty(), "{again:?}");
        } else {
            assert_eq!(now, [8, 3, 0], "reporting only changes nothing");
        }
        assert_eq!(on_hand("LOCAL", "WH-EAST"), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciliation_books_a_delivery_whose_notifications_were_lost() {
    let world = World::new(&["TEE"]).await;
    let tee = world.product("TEE");
    let mut app = world.bare_app(|_| {}).await;
    stock_both(&world, &mut app, "TEE").await;
    app.reserve("shopify", "6001", &[("TEE", 3)], 0)
        .await
        .unwrap();
    wait_for(&mut app, "the order in Odoo", all_pushed).await;
    world
        .odoo
        .deliver("shopify:6001:WH-EAST", &[(tee, 3.0)], Commit::Held)
        .await;

    let sync = inbound(&app.engine, &world.config()).await;
    let drift = sync.reconcile().await.unwrap();
    assert_eq!(drift.undelivered, vec!["TEE".to_string()]);
    let end = level(&mut app, "TEE", "WH-EAST").await;
    assert_eq!((end.on_hand, end.reserved, end.free), (7, 0, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_outbox_survives_a_restart_while_odoo_is_down() {
    let Some(db) = crate::postgres::pg::TestDb::create().await else {
        return;
    };
    let world = World::new(&["TEE"]).await;
    let mut odoo = world.config();
    odoo.max_attempts = 10_000;
    let url = db.url.clone();
    let mut app = spawn_app_with(move |c| {
        c.store = stockpool::config::StoreConfig::Postgres { url };
        c.odoo = Some(odoo);
    })
    .await;
    stock_up(&mut app, &["TEE"]).await;
    world.odoo.set_down(true);
    reserve_priced(
        &mut app,
        "shopify",
        "5001",
        vec![priced("TEE", 2, "12.50")],
        "EUR",
        "",
    )
    .await;
    app.reserve("amazon", "A-5", &[("TEE", 1)], 0)
        .await
        .unwrap();
    release(&mut app, "shopify", "5001", vec![line("TEE", 1)]).await;
    wait_for(&mut app, "a failed attempt", |all| {
        all.iter().any(|e| e.attempts >= 1)
    })
    .await;

    app.restart().await;
    world.odoo.set_down(false);
    let pushed = wait_for(&mut app, "every entry pushed after the restart", all_pushed).await;
    assert_eq!(pushed.len(), 3);
    assert_eq!(
        world.writes_of("shopify:5001:WH-EAST"),
        ["create", "action_confirm", "write 1"]
    );
    assert_eq!(
        world.writes_of("amazon:A-5:WH-EAST"),
        ["create", "action_confirm"]
    );
    let order = world.odoo.order_by_ref("shopify:5001:WH-EAST").unwrap();
    assert_eq!(
        (order.lines[0].qty, order.lines[0].price_unit),
        (1.0, 12.5),
        "the price survived the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_whose_commit_fails_leaves_no_outbox_entry_and_its_retry_leaves_one() {
    use std::sync::atomic::Ordering;
    use stockpool::domain::{OrderId, Quantity, Sku};
    use stockpool::engine::ReserveCmd;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(crate::helpers::Flaky::new(
        SqliteStore::open(dir.path()).await.unwrap(),
    ));
    let engine = engine_over(
        store.clone(),
        &[("TEE", "WH-EAST", 10), ("TEE", "WH-CENTRAL", 100)],
    )
    .await;
    engine.enable_outbox();
    let order = || ReserveCmd {
        channel: ChannelCode::parse("shopify").unwrap(),
        order_id: OrderId::parse("6001").unwrap(),
        lines: vec![(
            Sku::parse("TEE").unwrap(),
            Quantity::parse("quantity", 2).unwrap(),
        )],
        hold_seconds: 0,
        terms: Default::default(),
    };

    store.fail_once.store(true, Ordering::SeqCst);
    engine.reserve(order()).await.expect_err("the commit fails");
    assert!(engine.outbox_list(None, 0, 100).await.unwrap().is_empty());

    while !engine.is_consistent() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine.reserve(order()).await.expect("the retry commits");
    let entries = engine.outbox_list(None, 0, 100).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].entry.lines[0].ordered, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_odoo_as_master_a_fulfill_takes_the_units_off_on_hand_itself() {
    let world = World::new(&["TEE"]).await;
    let mut app = world.app(|c| c.stock_master = StockMaster::Stockpool).await;
    app.reserve("shopify", "7001", &[("TEE", 3)], 0)
        .await
        .unwrap();
    app.inventory
        .fulfill(pb::FulfillRequest {
            channel: "shopify".into(),
            order_id: "7001".into(),
            lines: Vec::new(),
            shipment_id: "s-1".into(),
        })
        .await
        .unwrap();
    let east = level(&mut app, "TEE", "WH-EAST").await;
    assert_eq!((east.on_hand, east.reserved), (7, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_a_failover_each_hold_expires_once_and_each_reservation_reaches_odoo_once() {
    use crate::ha::{converge, short_lease, stored_orders, twice_in_ledger, Node};
    use stockpool::ha::Role;
    let Some(db) = crate::postgres::pg::TestDb::create().await else {
        return;
    };
    let world = World::new(&["TEE"]).await;
    // Pushes take a while: some are in flight when the active server is
    // deposed.
    world
        .odoo
        .delay_after_commit("sale.order", "create", Duration::from_millis(150));
    let odoo = world.config();
    let proxy = crate::postgres::Proxy::start().await;
    let mut old = Node::start_with(&proxy.url(&db), short_lease(), |c| {
        c.odoo = Some(odoo.clone())
    })
    .await;
    old.wait_role(Role::Active).await;
    let mut new = Node::start_with(&db.url, short_lease(), |c| c.odoo = Some(odoo.clone())).await;
    let mut inventory = old.inventory();
    for (warehouse, on_hand) in [("WH-EAST", 500), ("WH-CENTRAL", 100)] {
        inventory
            .set_stock(pb::SetStockRequest {
                sku: "TEE".into(),
                warehouse: warehouse.into(),
                on_hand,
                reason: "count".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let reserve = |order_id: String, hold_seconds: u32| pb::ReserveRequest {
        channel: "shopify".into(),
        order_id,
        lines: vec![line("TEE", 1)],
        hold_seconds,
        ..Default::default()
    };
    const EACH: usize = 12;
    for i in 0..EACH {
        inventory
            .reserve(reserve(format!("c-{i}"), 0))
            .await
            .unwrap();
        inventory
            .reserve(reserve(format!("h-{i}"), 1))
            .await
            .unwrap();
    }

    // Deposed: its connections to Postgres die, and it cannot connect again
    // for a while; its lease session is gone, so the standby takes over at
    // once, while the old server still believes it is active.
    proxy
        .refusing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    proxy.cut_connections();
    new.wait_role(Role::Active).await;
    proxy
        .refusing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    old.wait_role(Role::Standby).await;

    converge(
        "every hold expired and every confirmed order pushed",
        || async {
            let stored = stored_orders(&db).await;
            let held_out = (0..EACH)
                .all(|i| stored.get(&format!("h-{i}")).map(String::as_str) == Some("EXPIRED"));
            let pushed = (0..EACH).all(|i| {
                world
                    .odoo
                    .order_by_ref(&format!("shopify:c-{i}:WH-EAST"))
                    .is_some()
            });
            let mut admin = new.admin();
            let pending = admin
                .list_outbox(pb::ListOutboxRequest {
                    state: pb::OutboxState::Pending as i32,
                    after_id: 0,
                    limit: 1000,
                })
                .await
                .map(|r| r.into_inner().entries.len());
            held_out && pushed && pending.is_ok_and(|n| n == 0)
        },
    )
    .await;
    assert!(
        twice_in_ledger(&db, "expire").await.is_empty(),
        "each hold expired once"
    );
    assert!(twice_in_ledger(&db, "reserve").await.is_empty());
    let creates = |reference: &str| {
        world
            .odoo
            .writes()
            .iter()
            .filter(|c| {
                c.model == "sale.order"
                    && c.method == "create"
                    && c.args[0]["client_order_ref"].as_str() == Some(reference)
            })
            .count()
    };
    for i in 0..EACH {
        let reference = format!("shopify:c-{i}:WH-EAST");
        assert_eq!(creates(&reference), 1, "{reference} created once in Odoo");
        assert_eq!(world.odoo.orders_by_ref(&reference).len(), 1, "{reference}");
        assert_eq!(
            world.writes_of(&format!("shopify:h-{i}:WH-EAST")),
            Vec::<String>::new(),
            "an expired hold never reaches Odoo"
        );
    }
    let mut conn = crate::ha::look(&db).await;
    let doubled: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT reservation_id, event, count(*) FROM outbox GROUP BY 1, 2 HAVING count(*) > 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        doubled.is_empty(),
        "one outbox entry per change: {doubled:?}"
    );
    old.stop().await;
    new.stop().await;
}
