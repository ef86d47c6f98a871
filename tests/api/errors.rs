//! Every error case of API.md that applies: the status code, a message a
//! person can act on, and nothing changed.

use stockpool::api::pb;
use tonic::{Code, Request, Status};

use crate::helpers::{line, line_at, spawn_app, spawn_app_with, tokens, TestApp};

/// Runs a refused call and checks code, message and that nothing changed.
pub(crate) async fn refused<T: std::fmt::Debug>(
    app: &mut TestApp,
    code: Code,
    fragment: &str,
    call: impl AsyncFnOnce(&mut TestApp) -> Result<T, Status>,
) {
    let before = app.fingerprint().await;
    let err = call(app).await.expect_err("the call should be refused");
    assert_eq!(err.code(), code, "{err:?}");
    assert!(
        err.message().contains(fragment),
        "message {:?} should contain {fragment:?}",
        err.message()
    );
    assert_eq!(
        app.fingerprint().await,
        before,
        "a refused request changed something"
    );
}

/// 150 TEE in WH-EAST and one confirmed shopify order, `open-1`, of 2.
pub(crate) async fn app_with_stock() -> TestApp {
    let mut app = spawn_app().await;
    app.set_stock("TEE", "WH-EAST", 150).await;
    app.reserve("shopify", "open-1", &[("TEE", 2)], 0)
        .await
        .unwrap();
    app
}

fn reserve(channel: &str, order: &str, lines: Vec<pb::Line>) -> pb::ReserveRequest {
    pb::ReserveRequest {
        channel: channel.into(),
        order_id: order.into(),
        lines,
        hold_seconds: 0,
        ..Default::default()
    }
}

#[tokio::test]
async fn malformed_reserves_are_invalid_argument() {
    let mut app = app_with_stock().await;
    let long = "x".repeat(65);
    let cases: Vec<(pb::ReserveRequest, &str)> = vec![
        (
            reserve("", "o1", vec![line("TEE", 1)]),
            "channel must not be empty",
        ),
        (
            reserve("shopify", &long, vec![line("TEE", 1)]),
            "order_id is 65 characters long",
        ),
        (
            reserve("shopify", "o1", vec![]),
            "lines must name at least one SKU",
        ),
        (
            reserve("shopify", "o1", vec![line("TEE", 0)]),
            "lines[0].quantity must be at least 1, got 0",
        ),
        (
            reserve("shopify", "o1", vec![line("TEE", -3)]),
            "lines[0].quantity must be at least 1, got -3",
        ),
        (
            reserve("shopify", "o1", vec![line("", 1)]),
            "lines[0].sku must not be empty",
        ),
        (
            reserve("shopify", "o1", vec![line("TEE SHIRT", 1)]),
            "lines[0].sku",
        ),
        (
            reserve("shopify", "o1", vec![line("TEE", 1), line("TEE", 2)]),
            "names TEE again",
        ),
        (
            reserve("shopify", "o1", vec![line_at("TEE", 1, "WH-EAST")]),
            "must be empty on Reserve",
        ),
        (
            reserve("ebay", "o1", vec![line("TEE", 1)]),
            "\"ebay\" is not a declared channel",
        ),
        (
            reserve(
                "shopify",
                "o1",
                (0..201).map(|i| line(&format!("S{i}"), 1)).collect(),
            ),
            "at most 200",
        ),
    ];
    for (request, fragment) in cases {
        refused(&mut app, Code::InvalidArgument, fragment, async |app| {
            app.inventory.reserve(request).await
        })
        .await;
    }
    let mut too_long_hold = reserve("shopify", "o1", vec![line("TEE", 1)]);
    too_long_hold.hold_seconds = 8 * 24 * 3600;
    refused(
        &mut app,
        Code::InvalidArgument,
        "hold_seconds",
        async |app| app.inventory.reserve(too_long_hold).await,
    )
    .await;
}

#[tokio::test]
async fn an_order_that_does_not_fit_is_refused_whole_naming_each_short_sku() {
    let mut app = app_with_stock().await;
    app.set_stock("CAP", "WH-WEST", 1).await;
    let request = reserve(
        "shopify",
        "big",
        vec![line("TEE", 60), line("CAP", 3), line("MUG", 1)],
    );
    refused(
        &mut app,
        Code::FailedPrecondition,
        "CAP wanted 3, available 1; MUG wanted 1, available 0",
        async |app| app.inventory.reserve(request).await,
    )
    .await;
}

#[tokio::test]
async fn reserve_is_refused_when_it_would_eat_another_channels_fence() {
    let mut app = app_with_stock().await;
    // 148 free in WH-EAST; b2b fences 100 of them.
    let request = reserve("shopify", "greedy", vec![line("TEE", 49)]);
    refused(
        &mut app,
        Code::FailedPrecondition,
        "TEE wanted 49, available 48",
        async |app| app.inventory.reserve(request).await,
    )
    .await;
    let b2b = app.reserve("b2b", "po-1", &[("TEE", 148)], 0).await;
    assert!(
        b2b.is_ok(),
        "b2b may use its own fence and the rest: {b2b:?}"
    );
}

#[tokio::test]
async fn lifecycle_refusals_are_failed_precondition_or_not_found() {
    let mut app = app_with_stock().await;
    app.inventory
        .release(pb::ReleaseRequest {
            channel: "shopify".into(),
            order_id: "open-1".into(),
            lines: vec![],
            reason: "".into(),
        })
        .await
        .unwrap();
    app.reserve("shopify", "open-2", &[("TEE", 2)], 0)
        .await
        .unwrap();
    app.reserve("shopify", "held-1", &[("TEE", 1)], 600)
        .await
        .unwrap();

    let confirm = |o: &str| pb::ConfirmRequest {
        channel: "shopify".into(),
        order_id: o.into(),
    };
    refused(
        &mut app,
        Code::FailedPrecondition,
        "is RELEASED: cannot confirm it",
        async |app| app.inventory.confirm(confirm("open-1")).await,
    )
    .await;
    refused(
        &mut app,
        Code::NotFound,
        "no reservation shopify/nope",
        async |app| app.inventory.confirm(confirm("nope")).await,
    )
    .await;
    refused(
        &mut app,
        Code::NotFound,
        "no reservation shopify/nope",
        async |app| {
            app.inventory
                .get_reservation(pb::GetReservationRequest {
                    channel: "shopify".into(),
                    order_id: "nope".into(),
                })
                .await
        },
    )
    .await;
    let fulfill = |o: &str, lines: Vec<pb::Line>| pb::FulfillRequest {
        channel: "shopify".into(),
        order_id: o.into(),
        lines,
        shipment_id: String::new(),
    };
    refused(
        &mut app,
        Code::FailedPrecondition,
        "cannot fulfill 3 of TEE: only 2 open",
        async |app| {
            app.inventory
                .fulfill(fulfill("open-2", vec![line("TEE", 3)]))
                .await
        },
    )
    .await;
    refused(
        &mut app,
        Code::FailedPrecondition,
        "holds no units of CAP",
        async |app| {
            app.inventory
                .fulfill(fulfill("open-2", vec![line("CAP", 1)]))
                .await
        },
    )
    .await;
    refused(
        &mut app,
        Code::FailedPrecondition,
        "is HELD: cannot fulfill it",
        async |app| app.inventory.fulfill(fulfill("held-1", vec![])).await,
    )
    .await;
    refused(
        &mut app,
        Code::InvalidArgument,
        "refund_id must not be empty",
        async |app| {
            app.inventory
                .restock(pb::RestockRequest {
                    channel: "shopify".into(),
                    order_id: "open-2".into(),
                    refund_id: String::new(),
                    lines: vec![],
                })
                .await
        },
    )
    .await;
}

#[tokio::test]
async fn stock_movement_refusals_name_the_problem() {
    let mut app = app_with_stock().await;
    let level = app
        .stock(&["TEE"])
        .await
        .into_iter()
        .find(|l| l.warehouse == "WH-EAST")
        .unwrap();
    let adjust = |warehouse: &str, delta: i64, movement: &str| pb::AdjustStockRequest {
        sku: "TEE".into(),
        warehouse: warehouse.into(),
        delta,
        reason: "damage".into(),
        movement_id: movement.into(),
    };
    refused(
        &mut app,
        Code::InvalidArgument,
        "\"WH-MOON\" is not a declared warehouse",
        async |app| app.inventory.adjust_stock(adjust("WH-MOON", 1, "")).await,
    )
    .await;
    refused(
        &mut app,
        Code::InvalidArgument,
        "delta must be a non-zero change",
        async |app| app.inventory.adjust_stock(adjust("WH-EAST", 0, "")).await,
    )
    .await;
    refused(
        &mut app,
        Code::FailedPrecondition,
        "would take it below 0",
        async |app| {
            app.inventory
                .adjust_stock(adjust("WH-EAST", -151, ""))
                .await
        },
    )
    .await;
    app.inventory
        .adjust_stock(adjust("WH-EAST", 5, "receipt-7"))
        .await
        .unwrap();
    refused(
        &mut app,
        Code::AlreadyExists,
        "movement_id \"receipt-7\" was already used",
        async |app| {
            app.inventory
                .adjust_stock(adjust("WH-EAST", 6, "receipt-7"))
                .await
        },
    )
    .await;
    let replay = app
        .inventory
        .adjust_stock(adjust("WH-EAST", 5, "receipt-7"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        replay.on_hand,
        level.on_hand + 5,
        "a replayed movement is applied once"
    );

    let set = |on_hand: i64, expected: Option<i64>| pb::SetStockRequest {
        sku: "TEE".into(),
        warehouse: "WH-EAST".into(),
        on_hand,
        reason: "count".into(),
        expected_version: expected,
        movement_id: String::new(),
    };
    refused(&mut app, Code::Aborted, "is at version", async |app| {
        app.inventory
            .set_stock(set(10, Some(level.version as i64)))
            .await
    })
    .await;
    refused(
        &mut app,
        Code::InvalidArgument,
        "on_hand must be between 0",
        async |app| app.inventory.set_stock(set(-1, None)).await,
    )
    .await;
}

#[tokio::test]
async fn a_count_below_reserved_is_accepted_and_reports_the_shortfall() {
    let mut app = app_with_stock().await;
    let level = app.set_stock("TEE", "WH-EAST", 1).await;
    assert_eq!(
        (level.on_hand, level.reserved, level.free, level.shortfall),
        (1, 2, 0, 1)
    );
}

#[tokio::test]
async fn malformed_rules_are_invalid_argument() {
    let mut app = app_with_stock().await;
    let put = |rule: pb::Rule| pb::PutRuleRequest {
        rule: Some(rule),
        changed_by: "ops".into(),
        comment: String::new(),
    };
    let amazon = pb::Rule {
        channel: "amazon".into(),
        ..Default::default()
    };
    let cases = vec![
        (
            pb::Rule {
                share_percent: Some(0),
                ..amazon.clone()
            },
            "share_percent must be between 1 and 100, got 0",
        ),
        (
            pb::Rule {
                share_percent: Some(101),
                ..amazon.clone()
            },
            "share_percent must be between 1 and 100, got 101",
        ),
        (
            pb::Rule {
                fence: Some(-1),
                ..amazon.clone()
            },
            "fence must be between 0",
        ),
        (
            pb::Rule {
                warehouses: vec!["WH-MOON".into()],
                ..amazon.clone()
            },
            "\"WH-MOON\" is not a declared warehouse",
        ),
        (
            pb::Rule {
                channel: "ebay".into(),
                ..amazon.clone()
            },
            "\"ebay\" is not a declared channel",
        ),
    ];
    for (rule, fragment) in cases {
        refused(&mut app, Code::InvalidArgument, fragment, async |app| {
            app.admin.put_rule(put(rule)).await
        })
        .await;
    }
    let rules_before = app
        .admin
        .list_rules(pb::ListRulesRequest::default())
        .await
        .unwrap()
        .into_inner();
    refused(
        &mut app,
        Code::NotFound,
        "no rule \"shopify/TEE\"",
        async |app| {
            app.admin
                .delete_rule(pb::DeleteRuleRequest {
                    channel: "shopify".into(),
                    sku: "TEE".into(),
                    ..Default::default()
                })
                .await
        },
    )
    .await;
    assert_eq!(
        app.admin
            .list_rules(pb::ListRulesRequest::default())
            .await
            .unwrap()
            .into_inner(),
        rules_before
    );
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated_and_wrong_roles_are_denied() {
    let mut app = spawn_app_with(|c| c.tokens = tokens()).await;
    let stock = pb::SetStockRequest {
        sku: "TEE".into(),
        warehouse: "WH-WEST".into(),
        on_hand: 10,
        ..Default::default()
    };
    app.inventory
        .set_stock(with_token(stock.clone(), "ops-token-0123456789"))
        .await
        .unwrap();
    let before: i64 = app
        .engine
        .get_stock(&[])
        .iter()
        .map(|l| l.pool.on_hand)
        .sum();

    let err = app.inventory.set_stock(stock.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("missing authorization"),
        "{}",
        err.message()
    );
    let err = app
        .inventory
        .set_stock(with_token(stock.clone(), "guess"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = app
        .inventory
        .set_stock(with_token(stock, "read-token-0123456789"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("may not move stock"),
        "{}",
        err.message()
    );

    let amazon_order = reserve("amazon", "a-1", vec![line("TEE", 1)]);
    let err = app
        .inventory
        .reserve(with_token(amazon_order, "shopify-token-0123456789"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("may not act for channel amazon"),
        "{}",
        err.message()
    );
    let shopify_order = reserve("shopify", "s-1", vec![line("TEE", 1)]);
    app.inventory
        .reserve(with_token(shopify_order, "shopify-token-0123456789"))
        .await
        .unwrap();

    let levels = app
        .inventory
        .get_stock(with_token(
            pb::GetStockRequest {
                skus: vec!["TEE".into()],
                ..Default::default()
            },
            "read-token-0123456789",
        ))
        .await
        .unwrap()
        .into_inner()
        .levels;
    assert_eq!(levels.iter().map(|l| l.on_hand).sum::<i64>(), before);
    assert_eq!(levels.iter().map(|l| l.reserved).sum::<i64>(), 1);
}
