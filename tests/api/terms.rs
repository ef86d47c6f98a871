//! API.md "Prices and customers on Reserve": `Line.unit_price`,
//! `currency`, `customer_ref` and `prices_include_tax` are validated,
//! stored (surviving a restart, on both stores), echoed, and part of the
//! replay comparison.

use stockpool::api::pb;
use tonic::Code;

use crate::helpers::{line, spawn_app, spawn_app_with, TestApp};

fn priced(sku: &str, quantity: i64, unit_price: &str) -> pb::Line {
    pb::Line {
        unit_price: unit_price.into(),
        ..line(sku, quantity)
    }
}

fn order(id: &str, lines: Vec<pb::Line>, currency: &str, customer_ref: &str) -> pb::ReserveRequest {
    pb::ReserveRequest {
        channel: "b2b".into(),
        order_id: id.into(),
        lines,
        currency: currency.into(),
        customer_ref: customer_ref.into(),
        prices_include_tax: false,
        hold_seconds: 0,
    }
}

async fn app() -> TestApp {
    let mut app = spawn_app().await;
    for sku in ["TEE", "MUG"] {
        app.set_stock(sku, "WH-CENTRAL", 500).await;
    }
    app
}

async fn reserve(
    app: &mut TestApp,
    r: pb::ReserveRequest,
) -> Result<pb::ReserveResponse, tonic::Status> {
    app.inventory.reserve(r).await.map(|r| r.into_inner())
}

fn price_of<'a>(r: &'a pb::Reservation, sku: &str) -> &'a str {
    &r.allocations
        .iter()
        .find(|a| a.sku == sku)
        .expect("an allocation of the SKU")
        .unit_price
}

#[tokio::test]
async fn prices_currency_customer_and_tax_flag_are_echoed_and_read_back_after_a_restart() {
    let mut app = app().await;
    let mut request = order(
        "PO-1",
        vec![priced("TEE", 3, "19.90"), line("MUG", 2)],
        "EUR",
        "ACME-001",
    );
    request.prices_include_tax = true;
    let answer = reserve(&mut app, request).await.unwrap();
    let r = answer.reservation.unwrap();
    assert_eq!(
        (
            r.currency.as_str(),
            r.customer_ref.as_str(),
            r.prices_include_tax
        ),
        ("EUR", "ACME-001", true)
    );
    assert_eq!(price_of(&r, "TEE"), "19.90");
    assert_eq!(price_of(&r, "MUG"), "", "a line without a price has none");

    app.restart().await;
    let stored = app
        .inventory
        .get_reservation(pb::GetReservationRequest {
            channel: "b2b".into(),
            order_id: "PO-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored, r, "stored with the reservation");
}

#[tokio::test]
async fn on_postgres_prices_and_customer_are_stored_too() {
    let Some(db) = crate::postgres::pg::TestDb::create().await else {
        return;
    };
    let url = db.url.clone();
    let mut app = spawn_app_with(move |c| {
        c.store = stockpool::config::StoreConfig::Postgres { url };
    })
    .await;
    app.set_stock("TEE", "WH-CENTRAL", 50).await;
    let r = reserve(
        &mut app,
        order(
            "PO-2",
            vec![priced("TEE", 1, "0.000001")],
            "USD",
            "gid://acct/9",
        ),
    )
    .await
    .unwrap()
    .reservation
    .unwrap();
    app.restart().await;
    let stored = app
        .inventory
        .get_reservation(pb::GetReservationRequest {
            channel: "b2b".into(),
            order_id: "PO-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored, r);
    assert_eq!(price_of(&stored, "TEE"), "0.000001");
}

#[tokio::test]
async fn the_same_order_with_the_same_prices_is_a_replay_and_with_other_prices_already_exists() {
    let mut app = app().await;
    let first = order("PO-3", vec![priced("TEE", 3, "19.90")], "EUR", "ACME-001");
    reserve(&mut app, first.clone()).await.unwrap();

    let mut same_value = first.clone();
    same_value.lines[0].unit_price = "19.9".into();
    let replay = reserve(&mut app, same_value).await.unwrap();
    assert!(replay.replayed, "19.9 is the price 19.90 is");
    assert_eq!(
        price_of(replay.reservation.as_ref().unwrap(), "TEE"),
        "19.90"
    );

    let before = app.fingerprint().await;
    let mut changes: Vec<(pb::ReserveRequest, &str)> = Vec::new();
    let mut other_price = first.clone();
    other_price.lines[0].unit_price = "18.00".into();
    changes.push((other_price, "TEE at 19.90 EUR"));
    let mut other_currency = first.clone();
    other_currency.currency = "USD".into();
    changes.push((other_currency, "not TEE at 19.90 USD"));
    let mut other_customer = first.clone();
    other_customer.customer_ref = "ACME-002".into();
    changes.push((other_customer, "customer \"ACME-002\""));
    let mut tax = first.clone();
    tax.prices_include_tax = true;
    changes.push((tax, "prices including tax"));
    let mut unpriced = first.clone();
    unpriced.lines[0].unit_price.clear();
    changes.push((unpriced, "currency EUR"));
    for (request, says) in changes {
        let e = reserve(&mut app, request).await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        assert!(
            e.message()
                .contains("already exists with other prices or customer")
                && e.message().contains(says),
            "{says}: {}",
            e.message()
        );
    }
    assert_eq!(app.fingerprint().await, before, "nothing changed");
}

#[tokio::test]
async fn malformed_prices_currencies_and_customer_refs_are_invalid_argument_and_change_nothing() {
    let mut app = app().await;
    let before = app.fingerprint().await;
    let cases: Vec<(pb::ReserveRequest, &str)> = vec![
        (
            order(
                "o1",
                vec![line("MUG", 1), priced("TEE", 1, "-1")],
                "EUR",
                "",
            ),
            "lines[1].unit_price \"-1\" is not a price",
        ),
        (
            order("o1", vec![priced("TEE", 1, "19,90")], "EUR", ""),
            "lines[0].unit_price \"19,90\" is not a price",
        ),
        (
            order("o1", vec![priced("TEE", 1, "1e3")], "EUR", ""),
            "is not a price",
        ),
        (
            order("o1", vec![priced("TEE", 1, "1.1234567")], "EUR", ""),
            "7 decimals; at most 6",
        ),
        (
            order("o1", vec![priced("TEE", 1, "19.90")], "", ""),
            "currency must be set when a line has a price",
        ),
        (
            order("o1", vec![priced("TEE", 1, "19.90")], "eur", ""),
            "in capitals: \"EUR\"",
        ),
        (
            order("o1", vec![priced("TEE", 1, "19.90")], "EURO", ""),
            "currency \"EURO\" is not an ISO 4217 currency code",
        ),
        (
            order("o1", vec![line("TEE", 1)], "ABC", ""),
            "currency \"ABC\" is not an ISO 4217 currency code",
        ),
        (
            order("o1", vec![line("TEE", 1)], "", "ACME\u{0}1"),
            "customer_ref contains the control character",
        ),
        (
            order("o1", vec![line("TEE", 1)], "", &"a".repeat(201)),
            "customer_ref is 201 characters long; at most 200",
        ),
    ];
    for (request, says) in cases {
        let e = reserve(&mut app, request).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{says}: {e:?}");
        assert!(e.message().contains(says), "{says}: {}", e.message());
    }
    assert_eq!(app.fingerprint().await, before);
}
