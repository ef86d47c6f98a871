//! Hostile input, as an outside drill sends it: control characters and
//! over-long text in every free-text field (the same answer on SQLite and on
//! Postgres), numbers at and past every limit, writes refused on a SKU never
//! seen, and calls that never reach a handler. Each is refused with the code
//! the README's Errors table names, says which field, and changes nothing.

use prost::Message;
use stockpool::api::pb;
use stockpool::config::StoreConfig;
use tonic::{Code, Status};

use crate::errors::{app_with_stock, refused};
use crate::helpers::{line, line_at, raw_grpc, spawn_app_with, TestApp};
use crate::postgres::pg::TestDb;

/// A server over SQLite, then one over a Postgres database of its own (when
/// a server is reachable; under CI it must be), each with 150 TEE in
/// WH-EAST and the confirmed order `shopify/open-1`.
async fn on_both_stores(check: impl AsyncFn(&mut TestApp, &str)) {
    let mut app = app_with_stock().await;
    check(&mut app, "sqlite").await;
    app.stop().await;
    let Some(db) = TestDb::create().await else {
        return;
    };
    let url = db.url.clone();
    let mut app = spawn_app_with(move |c| c.store = StoreConfig::Postgres { url }).await;
    app.set_stock("TEE", "WH-EAST", 150).await;
    app.reserve("shopify", "open-1", &[("TEE", 2)], 0)
        .await
        .unwrap();
    check(&mut app, "postgres").await;
    app.stop().await;
}

/// Rules, warehouses and channels as listed: what Admin refusals must leave.
async fn catalog(app: &mut TestApp) -> (Vec<pb::Rule>, Vec<pb::Warehouse>, Vec<pb::Channel>) {
    let rules = app
        .admin
        .list_rules(pb::ListRulesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rules;
    let warehouses = app
        .admin
        .list_warehouses(pb::ListWarehousesRequest {})
        .await
        .unwrap()
        .into_inner()
        .warehouses;
    let channels = app
        .admin
        .list_channels(pb::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels;
    (rules, warehouses, channels)
}

/// Sends a request with `text` in the named field of one RPC.
async fn send_text(app: &mut TestApp, rpc: &str, field: &str, text: &str) -> Result<(), Status> {
    let t = text.to_string();
    let with = |name: &str| {
        if name == field {
            t.clone()
        } else {
            String::new()
        }
    };
    match rpc {
        "AdjustStock" => app
            .inventory
            .adjust_stock(pb::AdjustStockRequest {
                sku: "TEE".into(),
                warehouse: "WH-EAST".into(),
                delta: 1,
                reason: with("reason"),
                movement_id: with("movement_id"),
            })
            .await
            .map(drop),
        "SetStock" => app
            .inventory
            .set_stock(pb::SetStockRequest {
                sku: "TEE".into(),
                warehouse: "WH-EAST".into(),
                on_hand: 151,
                reason: with("reason"),
                movement_id: with("movement_id"),
                ..Default::default()
            })
            .await
            .map(drop),
        "Release" => app
            .inventory
            .release(pb::ReleaseRequest {
                channel: "shopify".into(),
                order_id: "open-1".into(),
                lines: vec![],
                reason: with("reason"),
            })
            .await
            .map(drop),
        "Fulfill" => app
            .inventory
            .fulfill(pb::FulfillRequest {
                channel: "shopify".into(),
                order_id: "open-1".into(),
                lines: vec![],
                shipment_id: with("shipment_id"),
            })
            .await
            .map(drop),
        "Restock" => app
            .inventory
            .restock(pb::RestockRequest {
                channel: "shopify".into(),
                order_id: "open-1".into(),
                refund_id: with("refund_id"),
                lines: vec![],
            })
            .await
            .map(drop),
        "PutRule" => app
            .admin
            .put_rule(pb::PutRuleRequest {
                rule: Some(pb::Rule {
                    channel: "amazon".into(),
                    buffer: Some(7),
                    ..Default::default()
                }),
                changed_by: with("changed_by"),
                comment: with("comment"),
            })
            .await
            .map(drop),
        "DeleteRule" => app
            .admin
            .delete_rule(pb::DeleteRuleRequest {
                channel: "amazon".into(),
                sku: String::new(),
                changed_by: with("changed_by"),
                comment: with("comment"),
            })
            .await
            .map(drop),
        "UpsertWarehouse" => app
            .admin
            .upsert_warehouse(pb::Warehouse {
                code: "WH-NORTH".into(),
                name: with("name"),
            })
            .await
            .map(drop),
        "UpsertChannel" => app
            .admin
            .upsert_channel(pb::Channel {
                code: "ebay".into(),
                name: with("name"),
            })
            .await
            .map(drop),
        other => unreachable!("no RPC {other}"),
    }
}

/// Every free-text field of every RPC.
const TEXT_FIELDS: [(&str, &str); 13] = [
    ("AdjustStock", "reason"),
    ("AdjustStock", "movement_id"),
    ("SetStock", "reason"),
    ("SetStock", "movement_id"),
    ("Release", "reason"),
    ("Fulfill", "shipment_id"),
    ("Restock", "refund_id"),
    ("PutRule", "changed_by"),
    ("PutRule", "comment"),
    ("DeleteRule", "changed_by"),
    ("DeleteRule", "comment"),
    ("UpsertWarehouse", "name"),
    ("UpsertChannel", "name"),
];

#[tokio::test]
async fn control_characters_and_overlong_text_are_invalid_argument_naming_the_field_on_both_stores()
{
    on_both_stores(async |app, store| {
        let long = "x".repeat(201);
        for (rpc, field) in TEXT_FIELDS {
            for (text, problem) in [
                ("PO-1\0", "U+0000"),
                ("\u{1b}[2J", "U+001B"),
                ("a\u{7f}", "U+007F"),
                (long.as_str(), "at most 200"),
            ] {
                let before = (app.fingerprint().await, catalog(app).await);
                let err = send_text(app, rpc, field, text).await.expect_err("refused");
                assert_eq!(
                    err.code(),
                    Code::InvalidArgument,
                    "{store}: {rpc}.{field} = {text:?}: {err:?}"
                );
                assert!(
                    err.message().starts_with(field) && err.message().contains(problem),
                    "{store}: {rpc}.{field}: {:?}",
                    err.message()
                );
                assert_eq!(
                    (app.fingerprint().await, catalog(app).await),
                    before,
                    "{store}: {rpc}.{field}: a refused request changed something"
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_note_with_line_breaks_and_any_script_is_kept_the_same_on_both_stores() {
    on_both_stores(async |app, store| {
        let reason = "Zählung\tLager 3\r\nпересчёт ✓";
        app.inventory
            .adjust_stock(pb::AdjustStockRequest {
                sku: "TEE".into(),
                warehouse: "WH-EAST".into(),
                delta: 3,
                reason: reason.into(),
                movement_id: "count-2026-11-27/ü".into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{store}: {e:?}"));
        let ledger = app.engine.ledger(None, 0, i64::MAX).await.unwrap();
        let last = &ledger.last().unwrap().entry;
        assert_eq!(last.reason, reason, "{store}");
        assert_eq!(last.reference, "count-2026-11-27/ü", "{store}");
    })
    .await;
}

#[tokio::test]
async fn a_refused_write_on_a_sku_never_seen_leaves_no_trace_of_it() {
    let mut app = app_with_stock().await;
    refused(&mut app, Code::Aborted, "not the expected 4", async |app| {
        app.inventory
            .set_stock(pb::SetStockRequest {
                sku: "NEVER-SEEN".into(),
                warehouse: "WH-WEST".into(),
                on_hand: 5,
                expected_version: Some(4),
                ..Default::default()
            })
            .await
    })
    .await;
    refused(
        &mut app,
        Code::FailedPrecondition,
        "would take it below 0",
        async |app| {
            app.inventory
                .adjust_stock(pb::AdjustStockRequest {
                    sku: "ALSO-NEVER-SEEN".into(),
                    warehouse: "WH-WEST".into(),
                    delta: -1,
                    ..Default::default()
                })
                .await
        },
    )
    .await;
    let listed: Vec<String> = app.stock(&[]).await.into_iter().map(|l| l.sku).collect();
    assert!(listed.iter().all(|s| s == "TEE"), "{listed:?}");
    assert_eq!(
        app.engine
            .skus()
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        ["TEE"]
    );

    // Expected version 0 on a SKU never seen is right: the count applies.
    app.inventory
        .set_stock(pb::SetStockRequest {
            sku: "NEVER-SEEN".into(),
            warehouse: "WH-WEST".into(),
            on_hand: 5,
            expected_version: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(app.engine.skus().len(), 2);
}

#[tokio::test]
async fn numbers_at_and_past_every_limit_are_refused_without_wrapping() {
    let mut app = app_with_stock().await;
    let adjust = |delta: i64| pb::AdjustStockRequest {
        sku: "TEE".into(),
        warehouse: "WH-EAST".into(),
        delta,
        ..Default::default()
    };
    for delta in [
        i64::MIN,
        i64::MIN + 1,
        -1_000_000_001,
        1_000_000_001,
        i64::MAX,
    ] {
        refused(
            &mut app,
            Code::InvalidArgument,
            &format!("delta must be a non-zero change of at most 1000000000 units, got {delta}"),
            async |app| app.inventory.adjust_stock(adjust(delta)).await,
        )
        .await;
    }
    app.set_stock("TEE", "WH-WEST", 999_999_999).await;
    refused(
        &mut app,
        Code::FailedPrecondition,
        "would take it above the 1000000000 a pool may hold",
        async |app| {
            app.inventory
                .adjust_stock(pb::AdjustStockRequest {
                    warehouse: "WH-WEST".into(),
                    ..adjust(2)
                })
                .await
        },
    )
    .await;
    for on_hand in [i64::MIN, -1, 1_000_000_001, i64::MAX] {
        refused(
            &mut app,
            Code::InvalidArgument,
            "on_hand must be between 0 and 1000000000",
            async |app| {
                app.inventory
                    .set_stock(pb::SetStockRequest {
                        sku: "TEE".into(),
                        warehouse: "WH-EAST".into(),
                        on_hand,
                        ..Default::default()
                    })
                    .await
            },
        )
        .await;
    }
    refused(
        &mut app,
        Code::InvalidArgument,
        "expected_version must not be negative",
        async |app| {
            app.inventory
                .set_stock(pb::SetStockRequest {
                    sku: "TEE".into(),
                    warehouse: "WH-EAST".into(),
                    on_hand: 1,
                    expected_version: Some(i64::MIN),
                    ..Default::default()
                })
                .await
        },
    )
    .await;
    for quantity in [i64::MIN, i64::MAX] {
        refused(
            &mut app,
            Code::InvalidArgument,
            "lines[0].quantity",
            async |app| app.reserve("shopify", "big", &[("TEE", quantity)], 0).await,
        )
        .await;
    }
    refused(
        &mut app,
        Code::InvalidArgument,
        "hold_seconds",
        async |app| {
            app.reserve("shopify", "long", &[("TEE", 1)], u32::MAX)
                .await
        },
    )
    .await;
    for (fence, buffer) in [(Some(i64::MAX), None), (None, Some(i64::MIN))] {
        refused(
            &mut app,
            Code::InvalidArgument,
            "must be between 0",
            async |app| {
                app.admin
                    .put_rule(pb::PutRuleRequest {
                        rule: Some(pb::Rule {
                            channel: "amazon".into(),
                            fence,
                            buffer,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
            },
        )
        .await;
    }
    refused(&mut app, Code::InvalidArgument, "after_id", async |app| {
        app.admin
            .list_outbox(pb::ListOutboxRequest {
                after_id: i64::MIN,
                ..Default::default()
            })
            .await
    })
    .await;
    refused(&mut app, Code::InvalidArgument, "limit", async |app| {
        app.admin
            .list_outbox(pb::ListOutboxRequest {
                limit: u32::MAX,
                ..Default::default()
            })
            .await
    })
    .await;
    refused(&mut app, Code::InvalidArgument, "ids", async |app| {
        app.admin
            .retry_outbox(pb::RetryOutboxRequest {
                ids: vec![i64::MIN],
            })
            .await
    })
    .await;
    let err = app
        .inventory
        .watch_channel_stock(pb::WatchChannelStockRequest {
            channel: "shopify".into(),
            after_seq: u64::MAX,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
}

#[tokio::test]
async fn naming_an_unknown_warehouse_or_channel_is_invalid_argument() {
    let mut app = app_with_stock().await;
    refused(
        &mut app,
        Code::InvalidArgument,
        "lines[0].warehouse \"WH-MOON\" is not a declared warehouse",
        async |app| {
            app.inventory
                .fulfill(pb::FulfillRequest {
                    channel: "shopify".into(),
                    order_id: "open-1".into(),
                    lines: vec![line_at("TEE", 1, "WH-MOON")],
                    shipment_id: String::new(),
                })
                .await
        },
    )
    .await;
    refused(
        &mut app,
        Code::InvalidArgument,
        "lines[1].warehouse \"WH-MOON\"",
        async |app| {
            app.inventory
                .release(pb::ReleaseRequest {
                    channel: "shopify".into(),
                    order_id: "open-1".into(),
                    lines: vec![line("TEE", 1), line_at("TEE", 1, "WH-MOON")],
                    reason: String::new(),
                })
                .await
        },
    )
    .await;
    refused(
        &mut app,
        Code::InvalidArgument,
        "lines[0].warehouse \"WH-MOON\"",
        async |app| {
            app.inventory
                .restock(pb::RestockRequest {
                    channel: "shopify".into(),
                    order_id: "open-1".into(),
                    refund_id: "r-1".into(),
                    lines: vec![line_at("TEE", 1, "WH-MOON")],
                })
                .await
        },
    )
    .await;
    refused(
        &mut app,
        Code::InvalidArgument,
        "\"ebay\" is not a declared channel",
        async |app| {
            app.admin
                .delete_rule(pb::DeleteRuleRequest {
                    channel: "ebay".into(),
                    ..Default::default()
                })
                .await
        },
    )
    .await;
}

#[tokio::test]
async fn calls_that_never_reach_a_handler_get_the_readme_s_codes_and_no_internals() {
    let app = app_with_stock().await;
    let url = app.grpc_url.clone();

    for path in ["/stockpool.v1.Inventory/Nope", "/nope.v1.Nothing/Call"] {
        let status = raw_grpc(&url, path, &[], None).await;
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
        assert!(
            status.message().contains(path),
            "{path}: {:?}",
            status.message()
        );
    }

    let big = pb::GetStockRequest {
        skus: vec!["S".repeat(64); 80_000],
        ..Default::default()
    }
    .encode_to_vec();
    assert!(big.len() > 5_000_000);
    let status = raw_grpc(&url, "/stockpool.v1.Inventory/GetStock", &big, None).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("4194304 bytes"), "{status:?}");

    let not_utf8 = [0x0a, 0x02, 0xff, 0xfe];
    for garbage in [&[0xff; 32][..], &not_utf8[..], &[0x0a, 0x7f][..]] {
        let status = raw_grpc(&url, "/stockpool.v1.Inventory/AdjustStock", garbage, None).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        for internal in ["wire type", "varint", "UTF-8", "buffer", "Protobuf"] {
            assert!(!status.message().contains(internal), "{status:?}");
        }
    }

    // A well-formed call over the same raw path still works.
    let ok = raw_grpc(
        &url,
        "/stockpool.v1.Inventory/GetStock",
        &pb::GetStockRequest {
            skus: vec!["TEE".into()],
            ..Default::default()
        }
        .encode_to_vec(),
        None,
    )
    .await;
    assert_eq!(ok.code(), Code::Ok, "{ok:?}");
}
