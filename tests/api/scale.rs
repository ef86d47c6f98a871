//! Reading at scale (API.md): GetStock and GetAvailability page through
//! every SKU, ListReservations and ListMovements read what the engine and
//! the ledger hold, BatchSetStock counts many pools in one call, and the
//! CLI's `stock import` goes through it.

use std::collections::BTreeSet;

use stockpool::api::pb;
use tonic::{Code, Request};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

fn count(sku: &str, warehouse: &str, on_hand: i64) -> pb::SetStockRequest {
    pb::SetStockRequest {
        sku: sku.into(),
        warehouse: warehouse.into(),
        on_hand,
        reason: "count".into(),
        ..Default::default()
    }
}

/// Stocks `n` SKUs (SKU-00000, ...) in WH-EAST through BatchSetStock.
async fn stock_many(app: &mut TestApp, n: usize) {
    let skus: Vec<String> = (0..n).map(|i| format!("SKU-{i:05}")).collect();
    for chunk in skus.chunks(10_000) {
        let results = app
            .inventory
            .batch_set_stock(pb::BatchSetStockRequest {
                items: chunk.iter().map(|s| count(s, "WH-EAST", 7)).collect(),
            })
            .await
            .expect("batch set stock")
            .into_inner()
            .results;
        assert!(results.iter().all(|r| r.error_code.is_empty()));
    }
}

#[tokio::test]
async fn availability_of_33k_skus_pages_through_every_sku_in_answers_a_default_client_reads() {
    let mut app = spawn_app().await;
    stock_many(&mut app, 33_000).await;
    // The test's client keeps tonic's default 4 MiB limit on answers.
    let mut seen = BTreeSet::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let resp = app
            .inventory
            .get_availability(pb::GetAvailabilityRequest {
                page_token,
                ..Default::default()
            })
            .await
            .expect("a page fits the default limit")
            .into_inner();
        pages += 1;
        let skus: BTreeSet<String> = resp.items.iter().map(|i| i.sku.clone()).collect();
        assert!(skus.len() <= 1000, "a default page holds 1000 SKUs");
        // Each SKU comes with every channel on the same page.
        assert_eq!(resp.items.len(), skus.len() * 3, "shopify, amazon, b2b");
        for sku in skus {
            assert!(seen.insert(sku), "no SKU on two pages");
        }
        if resp.next_page_token.is_empty() {
            break;
        }
        page_token = resp.next_page_token;
    }
    assert_eq!((seen.len(), pages), (33_000, 33));
}

#[tokio::test]
async fn get_stock_pages_keep_each_sku_with_all_its_warehouses_and_end_with_an_empty_token() {
    let mut app = spawn_app().await;
    stock_many(&mut app, 5).await;
    app.set_stock("SKU-00001", "WH-WEST", 3).await;
    let first = app
        .inventory
        .get_stock(pb::GetStockRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let skus: Vec<&str> = first.levels.iter().map(|l| l.sku.as_str()).collect();
    assert_eq!(
        skus,
        ["SKU-00000"; 3]
            .iter()
            .chain(&["SKU-00001"; 3])
            .copied()
            .collect::<Vec<_>>()
    );
    assert!(!first.next_page_token.is_empty());
    let mut token = first.next_page_token;
    let mut rest = Vec::new();
    while !token.is_empty() {
        let page = app
            .inventory
            .get_stock(pb::GetStockRequest {
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        rest.extend(page.levels.into_iter().map(|l| l.sku));
        token = page.next_page_token;
    }
    rest.dedup();
    assert_eq!(rest, ["SKU-00002", "SKU-00003", "SKU-00004"]);
}

#[tokio::test]
async fn a_page_token_not_issued_a_page_too_large_and_too_many_named_skus_are_invalid() {
    let mut app = spawn_app().await;
    stock_many(&mut app, 3).await;
    let e = app
        .inventory
        .get_stock(pb::GetStockRequest {
            page_token: "bm90LWEtdG9rZW4".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("page_token"), "{}", e.message());
    let e = app
        .inventory
        .get_availability(pb::GetAvailabilityRequest {
            page_size: 10_001,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("at most 10000"), "{}", e.message());
    let e = app
        .inventory
        .get_stock(pb::GetStockRequest {
            skus: (0..1001).map(|i| format!("S{i}")).collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("at most 1000 SKUs"), "{}", e.message());
    // A token of one call is refused by the other.
    let token = app
        .inventory
        .get_stock(pb::GetStockRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let e = app
        .inventory
        .get_availability(pb::GetAvailabilityRequest {
            page_token: token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_bad_item_of_a_batch_fails_alone_naming_itself_and_the_others_apply_with_ledger_lines() {
    let mut app = spawn_app().await;
    let ledger_before = app.engine.ledger(None, 0, i64::MAX).await.unwrap().len();
    let mut stale = count("MUG", "WH-EAST", 4);
    stale.expected_version = Some(9);
    let mut keyed = count("CAP", "WH-WEST", 2);
    keyed.movement_id = "count-cap-1".into();
    let results = app
        .inventory
        .batch_set_stock(pb::BatchSetStockRequest {
            items: vec![
                count("TEE", "WH-EAST", 10),
                count("TEE", "WH-NOWHERE", 1),
                stale,
                count("bad sku!", "WH-EAST", 1),
                keyed.clone(),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let codes: Vec<&str> = results.iter().map(|r| r.error_code.as_str()).collect();
    assert_eq!(
        codes,
        ["", "INVALID_ARGUMENT", "ABORTED", "INVALID_ARGUMENT", ""]
    );
    assert!(
        results[1]
            .error_message
            .starts_with("items[1] (TEE at WH-NOWHERE)"),
        "{}",
        results[1].error_message
    );
    assert!(
        results[3].error_message.contains("items[3]"),
        "{}",
        results[3].error_message
    );
    assert_eq!(results[0].level.as_ref().unwrap().on_hand, 10);
    assert!(results[1].level.is_none());
    let ledger = app.engine.ledger(None, 0, i64::MAX).await.unwrap();
    assert_eq!(
        ledger.len(),
        ledger_before + 2,
        "one ledger line per applied count"
    );
    assert_eq!(
        app.stock(&["MUG"])
            .await
            .iter()
            .map(|l| l.on_hand)
            .sum::<i64>(),
        0
    );
    // The same movement id again is a replay.
    let again = app
        .inventory
        .batch_set_stock(pb::BatchSetStockRequest { items: vec![keyed] })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(again[0].replayed && again[0].error_code.is_empty());
}

#[tokio::test]
async fn a_batch_of_more_than_10000_items_is_refused_whole_and_changes_nothing() {
    let mut app = spawn_app().await;
    let before = app.fingerprint().await;
    let e = app
        .inventory
        .batch_set_stock(pb::BatchSetStockRequest {
            items: (0..10_001)
                .map(|i| count(&format!("S{i}"), "WH-EAST", 1))
                .collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("at most 10000"), "{}", e.message());
    assert_eq!(app.fingerprint().await, before);
}

async fn reserve(app: &mut TestApp, channel: &str, order: &str, sku: &str) {
    app.reserve(channel, order, &[(sku, 1)], 0)
        .await
        .expect("reserve");
}

#[tokio::test]
async fn reservations_list_newest_first_filtered_and_paged() {
    let mut app = spawn_app().await;
    app.set_stock("TEE", "WH-EAST", 500).await;
    app.set_stock("MUG", "WH-EAST", 500).await;
    for i in 0..5 {
        reserve(&mut app, "shopify", &format!("S{i}"), "TEE").await;
    }
    reserve(&mut app, "amazon", "A1", "MUG").await;
    app.inventory
        .release(pb::ReleaseRequest {
            channel: "shopify".into(),
            order_id: "S0".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut orders = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .inventory
            .list_reservations(pb::ListReservationsRequest {
                channel: "shopify".into(),
                page_size: 2,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.reservations.len() <= 2);
        orders.extend(
            page.reservations
                .into_iter()
                .map(|r| (r.created_at_ms, r.id, r.order_id)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(orders.len(), 5);
    let mut sorted = orders.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(orders, sorted, "newest first");
    let released = app
        .inventory
        .list_reservations(pb::ListReservationsRequest {
            statuses: vec![pb::ReservationStatus::Released as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .reservations;
    assert_eq!(
        released
            .iter()
            .map(|r| r.order_id.as_str())
            .collect::<Vec<_>>(),
        ["S0"]
    );
    let of_mug = app
        .inventory
        .list_reservations(pb::ListReservationsRequest {
            sku: "MUG".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .reservations;
    assert_eq!(
        of_mug
            .iter()
            .map(|r| r.order_id.as_str())
            .collect::<Vec<_>>(),
        ["A1"]
    );
}

#[tokio::test]
async fn movements_read_the_ledger_oldest_first_by_sku_and_warehouse_from_an_id() {
    let mut app = spawn_app().await;
    app.set_stock("TEE", "WH-EAST", 10).await;
    app.set_stock("TEE", "WH-WEST", 4).await;
    app.set_stock("MUG", "WH-EAST", 1).await;
    reserve(&mut app, "shopify", "S1", "TEE").await;
    let tee = app
        .inventory
        .list_movements(pb::ListMovementsRequest {
            sku: "TEE".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .movements;
    let kinds: Vec<(&str, &str)> = tee
        .iter()
        .map(|m| (m.kind.as_str(), m.warehouse.as_str()))
        .collect();
    assert_eq!(kinds[..2], [("count", "WH-EAST"), ("count", "WH-WEST")]);
    assert_eq!(tee.last().unwrap().kind, "reserve");
    assert_eq!(tee.last().unwrap().reference, "shopify/S1");
    assert!(tee.windows(2).all(|w| w[0].id < w[1].id));
    let west = app
        .inventory
        .list_movements(pb::ListMovementsRequest {
            sku: "TEE".into(),
            warehouse: "WH-WEST".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .movements;
    assert!(west.iter().all(|m| m.warehouse == "WH-WEST"));
    assert_eq!(
        (
            west[0].kind.as_str(),
            west[0].on_hand_delta,
            west[0].on_hand_after
        ),
        ("count", 4, 4)
    );
    let after = app
        .inventory
        .list_movements(pb::ListMovementsRequest {
            sku: "TEE".into(),
            after_id: tee[0].id,
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .movements;
    assert_eq!(after.iter().map(|m| m.id).collect::<Vec<_>>(), [tee[1].id]);
    let e = app
        .inventory
        .list_movements(pb::ListMovementsRequest {
            limit: 1001,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

const OPS: &str = "ops-token-0123456789";
const SHOPIFY: &str = "shopify-token-0123456789";

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test]
async fn a_channel_token_lists_only_its_own_reservations_and_not_the_ledger() {
    let mut app = spawn_app_with(|c| c.tokens = crate::helpers::tokens()).await;
    let lr = |channel: &str| pb::ListReservationsRequest {
        channel: channel.into(),
        ..Default::default()
    };
    let own = app
        .inventory
        .list_reservations(with_token(lr("shopify"), SHOPIFY))
        .await;
    assert!(own.is_ok());
    for other in ["amazon", ""] {
        let e = app
            .inventory
            .list_reservations(with_token(lr(other), SHOPIFY))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "channel {other:?}");
    }
    let e = app
        .inventory
        .list_movements(with_token(pb::ListMovementsRequest::default(), SHOPIFY))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(app
        .inventory
        .list_movements(with_token(pb::ListMovementsRequest::default(), OPS))
        .await
        .is_ok());
    let e = app
        .inventory
        .batch_set_stock(with_token(
            pb::BatchSetStockRequest {
                items: vec![count("TEE", "WH-EAST", 1)],
            },
            SHOPIFY,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}
