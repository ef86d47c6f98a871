//! The service around the engine: availability and its explanation, admin,
//! health, and the HTTP side port.

use stockpool::api::pb;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::helpers::{http_get, spawn_app};

#[tokio::test]
async fn availability_explains_fence_share_and_buffer_step_by_step() {
    let mut app = spawn_app().await;
    app.set_stock("TEE", "WH-EAST", 100).await;
    app.set_stock("TEE", "WH-WEST", 20).await;

    let items = app
        .inventory
        .get_availability(pb::GetAvailabilityRequest {
            skus: vec!["TEE".into()],
            channel: "amazon".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;

    assert_eq!(items.len(), 1);
    let a = &items[0];
    // b2b fences 100 over WH-CENTRAL (empty) then WH-EAST: 100 protected.
    // amazon: ATP 20, share 60% -> 12, buffer 5 -> 7.
    assert_eq!((a.atp, a.published), (20, 7));
    let steps: Vec<(&str, i64)> = a
        .explain
        .iter()
        .map(|s| (s.step.as_str(), s.value))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("free", 120),
            ("protected", -100),
            ("atp", 20),
            ("share", 12),
            ("buffer", -5),
            ("published", 7)
        ]
    );
    assert!(
        a.explain[1].detail.contains("fence b2b"),
        "{:?}",
        a.explain[1]
    );
    assert!(
        a.explain[3].detail.contains("60%") && a.explain[3].detail.contains("amazon default rule"),
        "{:?}",
        a.explain[3]
    );
}

#[tokio::test]
async fn availability_for_every_channel_lists_each_declared_channel() {
    let mut app = spawn_app().await;
    app.set_stock("TEE", "WH-EAST", 10).await;
    let items = app
        .inventory
        .get_availability(pb::GetAvailabilityRequest {
            skus: vec!["TEE".into()],
            channel: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    let channels: Vec<&str> = items.iter().map(|i| i.channel.as_str()).collect();
    assert_eq!(channels, vec!["shopify", "amazon", "b2b"]);
    let b2b = &items[2];
    assert_eq!(b2b.atp, 10, "b2b's own fence is not protected from b2b");
}

#[tokio::test]
async fn a_rule_change_takes_effect_at_once_and_survives_a_restart() {
    let mut app = spawn_app().await;
    app.set_stock("TEE", "WH-WEST", 50).await;
    let rule = pb::Rule {
        channel: "shopify".into(),
        sku: "TEE".into(),
        max_published: Some(10),
        ..Default::default()
    };
    app.admin
        .put_rule(pb::PutRuleRequest {
            rule: Some(rule.clone()),
            changed_by: "ana".into(),
            comment: "cap".into(),
        })
        .await
        .unwrap();
    let published = |items: Vec<pb::ChannelAvailability>| items[0].published;
    let request = pb::GetAvailabilityRequest {
        skus: vec!["TEE".into()],
        channel: "shopify".into(),
        ..Default::default()
    };
    assert_eq!(
        published(
            app.inventory
                .get_availability(request.clone())
                .await
                .unwrap()
                .into_inner()
                .items
        ),
        10
    );

    app.restart().await;

    assert_eq!(
        published(
            app.inventory
                .get_availability(request)
                .await
                .unwrap()
                .into_inner()
                .items
        ),
        10
    );
    let rules = app
        .admin
        .list_rules(pb::ListRulesRequest {
            channel: "shopify".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .rules;
    assert_eq!(rules, vec![rule]);
}

#[tokio::test]
async fn warehouses_and_channels_added_at_runtime_are_kept_in_declared_order() {
    let mut app = spawn_app().await;
    app.admin
        .upsert_warehouse(pb::Warehouse {
            code: "WH-NORTH".into(),
            name: "North".into(),
        })
        .await
        .unwrap();
    app.admin
        .upsert_channel(pb::Channel {
            code: "ebay".into(),
            name: "eBay".into(),
        })
        .await
        .unwrap();
    app.restart().await;

    let warehouses = app
        .admin
        .list_warehouses(pb::ListWarehousesRequest {})
        .await
        .unwrap()
        .into_inner()
        .warehouses;
    let codes: Vec<&str> = warehouses.iter().map(|w| w.code.as_str()).collect();
    assert_eq!(codes, vec!["WH-EAST", "WH-WEST", "WH-CENTRAL", "WH-NORTH"]);
    let channels = app
        .admin
        .list_channels(pb::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels;
    let codes: Vec<&str> = channels.iter().map(|c| c.code.as_str()).collect();
    assert_eq!(codes, vec!["shopify", "amazon", "b2b", "ebay"]);
    app.set_stock("TEE", "WH-NORTH", 4).await;
    assert!(app.reserve("ebay", "e-1", &[("TEE", 4)], 0).await.is_ok());
}

#[tokio::test]
async fn grpc_health_reports_serving() {
    let app = spawn_app().await;
    let channel = tonic::transport::Channel::from_shared(app.grpc_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: "stockpool.v1.Inventory".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
}

#[tokio::test]
async fn the_http_port_answers_healthz_and_readyz() {
    let app = spawn_app().await;
    let health = http_get(app.http_addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = http_get(app.http_addr, "/readyz").await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains("ready"),
        "{ready}"
    );
}
