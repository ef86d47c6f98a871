//! The flash sale: many concurrent clients on one SKU.

use std::collections::HashMap;
use std::sync::Arc;

use stockpool::api::pb;
use tokio::sync::Mutex;
use tonic::Code;

use crate::helpers::{line, spawn_app};

const CLIENTS: usize = 16;
const ORDERS: usize = 5_000;
const CHANNELS: [&str; 3] = ["shopify", "amazon", "b2b"];

/// Order id to (channel, reservation or refusal code).
type Outcomes = HashMap<String, (String, Result<pb::Reservation, Code>)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flash_sale_sells_exactly_the_stock_keeps_the_fence_and_survives_a_restart() {
    let mut app = spawn_app().await;
    for (w, q) in [("WH-EAST", 400), ("WH-WEST", 300), ("WH-CENTRAL", 300)] {
        app.set_stock("HOT-1", w, q).await;
    }

    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let outcomes: Arc<Mutex<Outcomes>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = app.inventory.clone();
        let next = next.clone();
        let outcomes = outcomes.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= ORDERS {
                    return;
                }
                let channel = CHANNELS[i % 3];
                let order_id = format!("flash-{i}");
                let result = client
                    .reserve(pb::ReserveRequest {
                        channel: channel.into(),
                        order_id: order_id.clone(),
                        lines: vec![line("HOT-1", 1)],
                        hold_seconds: 0,
                        ..Default::default()
                    })
                    .await;
                let result = match result {
                    Ok(r) => Ok(r.into_inner().reservation.unwrap()),
                    Err(s) => {
                        assert_eq!(
                            s.code(),
                            Code::FailedPrecondition,
                            "unexpected refusal: {s:?}"
                        );
                        assert!(
                            s.message().contains("HOT-1 wanted 1, available 0"),
                            "{}",
                            s.message()
                        );
                        Err(s.code())
                    }
                };
                outcomes
                    .lock()
                    .await
                    .insert(order_id, (channel.to_string(), result));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let outcomes = outcomes.lock().await.clone();
    assert_eq!(outcomes.len(), ORDERS);
    let accepted = |c: &str| {
        outcomes
            .values()
            .filter(|(ch, r)| ch == c && r.is_ok())
            .count()
    };
    let (shopify, amazon, b2b) = (accepted("shopify"), accepted("amazon"), accepted("b2b"));
    assert_eq!(
        shopify + amazon + b2b,
        1_000,
        "every unit sells, none twice"
    );
    assert!(
        shopify + amazon <= 900,
        "shopify and amazon ate into the b2b fence: {shopify} + {amazon}"
    );
    assert!(b2b >= 100, "b2b got less than its fence: {b2b}");

    let levels = app.stock(&["HOT-1"]).await;
    assert_eq!(levels.iter().map(|l| l.reserved).sum::<i64>(), 1_000);
    assert_eq!(levels.iter().map(|l| l.free).sum::<i64>(), 0);
    for l in &levels {
        assert!(l.reserved <= l.on_hand, "{l:?}");
    }
    let ledger = app.engine.ledger(None, 0, i64::MAX).await.unwrap();
    let reserved_in_ledger: i64 = ledger.iter().map(|r| r.entry.reserved_delta).sum();
    assert_eq!(
        reserved_in_ledger, 1_000,
        "the ledger accounts for every reserved unit"
    );

    app.restart().await;

    assert_eq!(
        app.stock(&["HOT-1"]).await,
        levels,
        "levels survive the restart"
    );
    assert_eq!(
        app.engine.ledger(None, 0, i64::MAX).await.unwrap(),
        ledger,
        "the ledger survives the restart"
    );
    for (order_id, (channel, before)) in &outcomes {
        let after = app
            .inventory
            .get_reservation(pb::GetReservationRequest {
                channel: channel.clone(),
                order_id: order_id.clone(),
            })
            .await;
        match before {
            Ok(r) => assert_eq!(
                &after.expect("accepted order is still there").into_inner(),
                r
            ),
            Err(_) => assert_eq!(
                after.unwrap_err().code(),
                Code::NotFound,
                "refused order {order_id} left a trace"
            ),
        }
    }
    app.stop().await;
}
