//! The token matrix beyond the calls' own roles: a channel token reads its
//! own channel only (unless configured to read all), and with tokens
//! configured `/metrics` and server reflection answer only a valid token,
//! while health stays open for probes.

use stockpool::api::pb;
use tonic::{Code, Request};

use crate::helpers::{http_get, raw_grpc, spawn_app, spawn_app_with, TestApp};

const OPS: &str = "ops-token-0123456789";
const SHOPIFY: &str = "shopify-token-0123456789";
const READ: &str = "read-token-0123456789";
/// An amazon token configured with `read_all_channels`.
const AMAZON_READS_ALL: &str = "amazon-reads-all-0123456789";

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

async fn app_with_tokens() -> TestApp {
    let mut app = spawn_app_with(|c| {
        use stockpool::api::{Role, Tokens};
        let amazon = stockpool::domain::ChannelCode::parse("amazon").unwrap();
        let shopify = stockpool::domain::ChannelCode::parse("shopify").unwrap();
        let mut t = Tokens::new(
            [
                (OPS, Role::Ops),
                (SHOPIFY, Role::Channel(shopify)),
                (READ, Role::Read),
                (AMAZON_READS_ALL, Role::Channel(amazon)),
            ]
            .into_iter()
            .map(|(token, role)| (token.to_string(), role))
            .collect(),
        );
        t.let_read_all_channels(AMAZON_READS_ALL);
        c.tokens = t;
    })
    .await;
    app.inventory
        .set_stock(with_token(
            pb::SetStockRequest {
                sku: "TEE".into(),
                warehouse: "WH-WEST".into(),
                on_hand: 10,
                ..Default::default()
            },
            OPS,
        ))
        .await
        .unwrap();
    for channel in ["shopify", "amazon"] {
        app.inventory
            .reserve(with_token(
                pb::ReserveRequest {
                    channel: channel.into(),
                    order_id: format!("{channel}-1"),
                    lines: vec![crate::helpers::line("TEE", 1)],
                    ..Default::default()
                },
                OPS,
            ))
            .await
            .unwrap();
    }
    app
}

/// The code each read ends with for `token`.
async fn reads(app: &mut TestApp, token: &str) -> Vec<(String, Code)> {
    let code = |r: Result<tonic::Code, tonic::Status>| r.unwrap_or_else(|e| e.code());
    let mut out = Vec::new();
    for channel in ["shopify", "amazon"] {
        let reservation = app
            .inventory
            .get_reservation(with_token(
                pb::GetReservationRequest {
                    channel: channel.into(),
                    order_id: format!("{channel}-1"),
                },
                token,
            ))
            .await
            .map(|_| Code::Ok);
        out.push((format!("{channel} reservation"), code(reservation)));
        let watch = app
            .inventory
            .watch_channel_stock(with_token(
                pb::WatchChannelStockRequest {
                    channel: channel.into(),
                    after_seq: 0,
                },
                token,
            ))
            .await
            .map(|_| Code::Ok);
        out.push((format!("{channel} stream"), code(watch)));
    }
    let every_channel = app
        .inventory
        .get_availability(with_token(pb::GetAvailabilityRequest::default(), token))
        .await
        .map(|_| Code::Ok);
    out.push((
        "every channel's availability".to_string(),
        code(every_channel),
    ));
    let outbox = app
        .admin
        .list_outbox(with_token(pb::ListOutboxRequest::default(), token))
        .await
        .map(|_| Code::Ok);
    out.push(("the Odoo outbox".to_string(), code(outbox)));
    let rules = app
        .admin
        .list_rules(with_token(
            pb::ListRulesRequest {
                channel: "amazon".into(),
            },
            token,
        ))
        .await
        .map(|_| Code::Ok);
    out.push(("amazon's rules".to_string(), code(rules)));
    let stock = app
        .inventory
        .get_stock(with_token(pb::GetStockRequest::default(), token))
        .await
        .map(|_| Code::Ok);
    out.push(("physical stock".to_string(), code(stock)));
    out
}

#[tokio::test]
async fn a_channel_token_reads_only_its_own_channel_unless_configured_to_read_all() {
    let mut app = app_with_tokens().await;
    let denied = Code::PermissionDenied;
    let expected = [
        ("shopify reservation", Code::Ok),
        ("shopify stream", Code::Ok),
        ("amazon reservation", denied),
        ("amazon stream", denied),
        ("every channel's availability", denied),
        ("the Odoo outbox", denied),
        ("amazon's rules", denied),
        ("physical stock", Code::Ok),
    ]
    .map(|(label, code)| (label.to_string(), code));
    assert_eq!(reads(&mut app, SHOPIFY).await, expected);
    for token in [READ, OPS, AMAZON_READS_ALL] {
        assert!(
            reads(&mut app, token)
                .await
                .iter()
                .all(|(_, code)| *code == Code::Ok),
            "{token}"
        );
    }
    let err = app
        .inventory
        .get_reservation(with_token(
            pb::GetReservationRequest {
                channel: "amazon".into(),
                order_id: "amazon-1".into(),
            },
            SHOPIFY,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "this token may not read channel amazon: it reads channel shopify only"
    );
    // Reading all does not mean acting for all.
    let err = app
        .inventory
        .confirm(with_token(
            pb::ConfirmRequest {
                channel: "shopify".into(),
                order_id: "shopify-1".into(),
            },
            AMAZON_READS_ALL,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn with_tokens_metrics_and_reflection_answer_only_a_valid_token_and_health_stays_open() {
    let app = app_with_tokens().await;
    let scrape = |token: Option<&'static str>| {
        let addr = app.http_addr;
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let auth = token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            tokio::io::AsyncWriteExt::write_all(
                &mut s,
                format!("GET /metrics HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
                .await
                .unwrap();
            out
        }
    };
    for token in [None, Some("not-a-token-at-all")] {
        let answer = scrape(token).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(!answer.contains("stockpool_"), "{answer}");
    }
    for token in [READ, SHOPIFY] {
        let answer = scrape(Some(token)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("stockpool_published_units"), "{answer}");
    }
    for path in ["/healthz", "/readyz"] {
        let answer = http_get(app.http_addr, path).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    }

    let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    let list_services = [0x3a, 0x00]; // list_services: ""
    let status = raw_grpc(&app.grpc_url, reflection, &list_services, None).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = raw_grpc(&app.grpc_url, reflection, &list_services, Some(READ)).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    let health = raw_grpc(&app.grpc_url, "/grpc.health.v1.Health/Check", &[], None).await;
    assert_eq!(health.code(), Code::Ok, "{health:?}");
}

#[tokio::test]
async fn without_tokens_metrics_and_reflection_are_open_on_loopback() {
    let app = spawn_app().await;
    let answer = http_get(app.http_addr, "/metrics").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let status = raw_grpc(
        &app.grpc_url,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        &[0x3a, 0x00],
        None,
    )
    .await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
}
