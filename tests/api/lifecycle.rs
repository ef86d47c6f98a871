//! The reservation lifecycle over gRPC: replay, confirm, partial fulfil and
//! release, restock capped at what shipped, hold expiry.

use std::time::Duration;

use stockpool::api::pb::{self, ReservationStatus};
use tonic::Code;

use crate::helpers::{line, line_at, spawn_app};

#[tokio::test]
async fn a_replayed_reserve_returns_the_first_answer_and_changes_nothing() {
    let mut app = spawn_app().await;
    app.set_stock("TEE-BLK-M", "WH-WEST", 10).await;
    let first = app
        .reserve("shopify", "#1001", &[("TEE-BLK-M", 2)], 0)
        .await
        .unwrap();
    assert!(!first.replayed);
    let before = app.fingerprint().await;

    let again = app
        .reserve("shopify", "#1001", &[("TEE-BLK-M", 2)], 0)
        .await
        .unwrap();

    assert!(again.replayed);
    assert_eq!(again.reservation, first.reservation);
    assert_eq!(app.fingerprint().await, before);
}

#[tokio::test]
async fn the_same_order_with_other_lines_is_already_exists_and_changes_nothing() {
    let mut app = spawn_app().await;
    app.set_stock("TEE-BLK-M", "WH-WEST", 10).await;
    app.reserve("shopify", "#1002", &[("TEE-BLK-M", 2)], 0)
        .await
        .unwrap();
    let before = app.fingerprint().await;

    let err = app
        .reserve("shopify", "#1002", &[("TEE-BLK-M", 3)], 0)
        .await
        .unwrap_err();

    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(
        err.message()
            .contains("already exists with other lines (TEE-BLK-M x2)"),
        "{}",
        err.message()
    );
    assert_eq!(app.fingerprint().await, before);
}

#[tokio::test]
async fn an_order_ships_from_one_warehouse_when_one_can_ship_it_whole() {
    let mut app = spawn_app().await;
    app.set_stock("A", "WH-EAST", 1).await;
    app.set_stock("A", "WH-WEST", 5).await;
    app.set_stock("B", "WH-WEST", 5).await;

    let r = app
        .reserve("shopify", "one-box", &[("A", 2), ("B", 1)], 0)
        .await
        .unwrap()
        .reservation
        .unwrap();

    assert!(
        r.allocations.iter().all(|a| a.warehouse == "WH-WEST"),
        "{:?}",
        r.allocations
    );
}

#[tokio::test]
async fn an_order_no_warehouse_can_ship_whole_is_split_by_priority() {
    let mut app = spawn_app().await;
    app.set_stock("A", "WH-EAST", 2).await;
    app.set_stock("A", "WH-WEST", 5).await;
    // b2b's fence of 100 lays on WH-CENTRAL first and leaves WH-EAST alone.
    app.set_stock("A", "WH-CENTRAL", 100).await;

    let r = app
        .reserve("shopify", "split", &[("A", 6)], 0)
        .await
        .unwrap()
        .reservation
        .unwrap();

    let got: Vec<(String, i64)> = r
        .allocations
        .iter()
        .map(|a| (a.warehouse.clone(), a.quantity))
        .collect();
    assert_eq!(
        got,
        vec![("WH-EAST".to_string(), 2), ("WH-WEST".to_string(), 4)]
    );
}

#[tokio::test]
async fn partial_fulfil_and_release_settle_the_status_and_the_pools() {
    let mut app = spawn_app().await;
    app.set_stock("MUG", "WH-WEST", 10).await;
    app.reserve("shopify", "#2001", &[("MUG", 5)], 0)
        .await
        .unwrap();

    let r = app
        .inventory
        .fulfill(pb::FulfillRequest {
            channel: "shopify".into(),
            order_id: "#2001".into(),
            lines: vec![line("MUG", 2)],
            shipment_id: "ship-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), ReservationStatus::Confirmed);
    assert_eq!(r.allocations[0].fulfilled, 2);

    let again = app
        .inventory
        .fulfill(pb::FulfillRequest {
            channel: "shopify".into(),
            order_id: "#2001".into(),
            lines: vec![line("MUG", 2)],
            shipment_id: "ship-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, r, "a repeated shipment changes nothing");

    let r = app
        .inventory
        .release(pb::ReleaseRequest {
            channel: "shopify".into(),
            order_id: "#2001".into(),
            lines: vec![],
            reason: "customer cancelled the rest".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status(),
        ReservationStatus::Fulfilled,
        "something shipped and nothing is open"
    );
    assert_eq!(
        (r.allocations[0].fulfilled, r.allocations[0].released),
        (2, 3)
    );

    let level = &app.stock(&["MUG"]).await[1];
    assert_eq!((level.on_hand, level.reserved, level.free), (8, 0, 8));
}

#[tokio::test]
async fn a_second_refund_under_another_id_puts_nothing_more_on_hand() {
    let mut app = spawn_app().await;
    app.set_stock("SHOE", "WH-WEST", 10).await;
    app.reserve("shopify", "#3001", &[("SHOE", 2)], 0)
        .await
        .unwrap();
    app.inventory
        .fulfill(pb::FulfillRequest {
            channel: "shopify".into(),
            order_id: "#3001".into(),
            lines: vec![],
            shipment_id: "s1".into(),
        })
        .await
        .unwrap();
    assert_eq!(app.stock(&["SHOE"]).await[1].on_hand, 8);

    let restock = |refund: &str| pb::RestockRequest {
        channel: "shopify".into(),
        order_id: "#3001".into(),
        refund_id: refund.into(),
        lines: vec![line_at("SHOE", 2, "WH-WEST")],
    };
    let shopify = app
        .inventory
        .restock(restock("shopify-refund-9"))
        .await
        .unwrap()
        .into_inner();
    assert!(!shopify.replayed);
    assert_eq!(shopify.restocked.iter().map(|a| a.quantity).sum::<i64>(), 2);
    assert_eq!(app.stock(&["SHOE"]).await[1].on_hand, 10);

    let stripe = app
        .inventory
        .restock(restock("stripe-re_77"))
        .await
        .unwrap()
        .into_inner();
    assert!(!stripe.replayed);
    assert!(
        stripe.restocked.is_empty(),
        "nothing left to restock: {:?}",
        stripe.restocked
    );
    assert_eq!(
        app.stock(&["SHOE"]).await[1].on_hand,
        10,
        "the same return reported twice is counted once"
    );

    let replay = app
        .inventory
        .restock(restock("shopify-refund-9"))
        .await
        .unwrap()
        .into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.restocked, shopify.restocked);
    assert_eq!(app.stock(&["SHOE"]).await[1].on_hand, 10);
}

#[tokio::test]
async fn a_hold_expires_and_its_units_come_back() {
    let mut app = spawn_app().await;
    app.set_stock("CAP", "WH-WEST", 3).await;
    let r = app
        .reserve("shopify", "cart-1", &[("CAP", 3)], 1)
        .await
        .unwrap()
        .reservation
        .unwrap();
    assert_eq!(r.status(), ReservationStatus::Held);
    assert!(r.expires_at_ms > r.created_at_ms);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = app
            .inventory
            .get_reservation(pb::GetReservationRequest {
                channel: "shopify".into(),
                order_id: "cart-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if r.status() == ReservationStatus::Expired {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hold never expired: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.stock(&["CAP"]).await[1].free, 3);

    let err = app
        .inventory
        .confirm(pb::ConfirmRequest {
            channel: "shopify".into(),
            order_id: "cart-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_confirmed_hold_does_not_expire() {
    let mut app = spawn_app().await;
    app.set_stock("CAP", "WH-WEST", 3).await;
    app.reserve("shopify", "cart-2", &[("CAP", 1)], 1)
        .await
        .unwrap();
    let r = app
        .inventory
        .confirm(pb::ConfirmRequest {
            channel: "shopify".into(),
            order_id: "cart-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), ReservationStatus::Confirmed);
    assert_eq!(r.expires_at_ms, 0);

    tokio::time::sleep(Duration::from_millis(1300)).await;

    let level = &app.stock(&["CAP"]).await[1];
    assert_eq!(level.reserved, 1);
}
