//! Channel stock streams, rule history and the rule dry run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use stockpool::api::pb;
use stockpool::domain::{ChannelCode, OrderId, Quantity, Sku, WarehouseCode};
use stockpool::engine::{Engine, EngineError, ReserveCmd, SystemClock};
use stockpool::publish::{Publisher, Watch};
use stockpool::store::{ChannelEvent, SqliteStore, Store};
use tonic::Streaming;

use crate::helpers::{seed, spawn_app, Flaky, TestApp};

async fn watch(
    app: &mut TestApp,
    channel: &str,
    after_seq: u64,
) -> Streaming<pb::ChannelStockUpdate> {
    app.inventory
        .watch_channel_stock(pb::WatchChannelStockRequest {
            channel: channel.into(),
            after_seq,
        })
        .await
        .expect("watch starts")
        .into_inner()
}

/// Reads updates until `until` holds for what was read, or fails after 10s.
async fn read_until(
    stream: &mut Streaming<pb::ChannelStockUpdate>,
    until: impl Fn(&[pb::ChannelStockUpdate]) -> bool,
) -> Vec<pb::ChannelStockUpdate> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !until(&got) {
        let next = tokio::time::timeout_at(deadline, stream.message()).await;
        match next {
            Ok(Ok(Some(u))) => got.push(u),
            other => panic!("stream ended or timed out after {got:?}: {other:?}"),
        }
    }
    got
}

/// Nothing more arrives within a short while.
async fn quiet(stream: &mut Streaming<pb::ChannelStockUpdate>) {
    let more = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(more.is_err(), "unexpected update: {more:?}");
}

fn latest(updates: &[pb::ChannelStockUpdate], sku: &str) -> Option<i64> {
    updates
        .iter()
        .rev()
        .find(|u| u.sku == sku)
        .map(|u| u.published)
}

#[tokio::test]
async fn a_watcher_gets_every_level_first_then_each_change_once_committed() {
    let mut app = spawn_app().await;
    app.set_stock("TEE", "WH-WEST", 10).await;
    app.set_stock("CAP", "WH-WEST", 4).await;
    let mut stream = watch(&mut app, "shopify", 0).await;
    let first = read_until(&mut stream, |u| {
        latest(u, "TEE") == Some(10) && latest(u, "CAP") == Some(4)
    })
    .await;
    assert!(
        first.windows(2).all(|w| w[0].seq < w[1].seq),
        "seqs grow: {first:?}"
    );

    app.reserve("shopify", "w-1", &[("TEE", 3)], 0)
        .await
        .unwrap();
    let next = read_until(&mut stream, |u| !u.is_empty()).await;
    assert_eq!(
        (next[0].sku.as_str(), next[0].published, next[0].atp),
        ("TEE", 7, 7)
    );
    assert!(next[0].seq > first.last().unwrap().seq);

    app.reserve("shopify", "w-1", &[("TEE", 3)], 0)
        .await
        .unwrap();
    quiet(&mut stream).await;
}

#[tokio::test]
async fn a_watcher_that_reconnects_with_its_last_seq_misses_nothing_and_gets_nothing_twice() {
    let mut app = spawn_app().await;
    for sku in ["A", "B", "C"] {
        app.set_stock(sku, "WH-WEST", 10).await;
    }
    let mut stream = watch(&mut app, "shopify", 0).await;
    let seen = read_until(&mut stream, |u| {
        ["A", "B", "C"].iter().all(|s| latest(u, s) == Some(10))
    })
    .await;
    let last_seq = seen.last().unwrap().seq;
    drop(stream);

    app.reserve("shopify", "r-1", &[("A", 1)], 0).await.unwrap();
    app.reserve("shopify", "r-2", &[("C", 2)], 0).await.unwrap();
    app.reserve("shopify", "r-3", &[("A", 1)], 0).await.unwrap();

    let mut resumed = watch(&mut app, "shopify", last_seq).await;
    let got = read_until(&mut resumed, |u| {
        latest(u, "A") == Some(8) && latest(u, "C") == Some(8)
    })
    .await;
    assert!(
        got.iter().all(|u| u.seq > last_seq),
        "nothing at or before the resume point: {got:?}"
    );
    assert!(
        got.iter().all(|u| u.sku != "B"),
        "B did not change: {got:?}"
    );
    quiet(&mut resumed).await;
}

#[tokio::test]
async fn sequence_numbers_and_resumption_survive_a_restart() {
    let mut app = spawn_app().await;
    app.set_stock("A", "WH-WEST", 10).await;
    let mut stream = watch(&mut app, "shopify", 0).await;
    let seen = read_until(&mut stream, |u| latest(u, "A") == Some(10)).await;
    let last_seq = seen.last().unwrap().seq;
    drop(stream);
    app.reserve("shopify", "before-restart", &[("A", 4)], 0)
        .await
        .unwrap();
    // Let the change be published (stored) before stopping.
    let mut probe = watch(&mut app, "shopify", last_seq).await;
    let stored = read_until(&mut probe, |u| latest(u, "A") == Some(6)).await;
    drop(probe);

    app.restart().await;

    let mut resumed = watch(&mut app, "shopify", last_seq).await;
    let got = read_until(&mut resumed, |u| latest(u, "A") == Some(6)).await;
    assert_eq!(
        got, stored,
        "the same events, with the same seqs, after the restart"
    );
    app.reserve("shopify", "after-restart", &[("A", 1)], 0)
        .await
        .unwrap();
    let next = read_until(&mut resumed, |u| !u.is_empty()).await;
    assert!(
        next[0].seq > stored.last().unwrap().seq,
        "seqs keep growing across restarts"
    );
    assert_eq!(next[0].published, 5);
}

#[tokio::test]
async fn resuming_ahead_of_the_log_is_out_of_range_and_an_unknown_channel_is_invalid() {
    let mut app = spawn_app().await;
    let err = app
        .inventory
        .watch_channel_stock(pb::WatchChannelStockRequest {
            channel: "shopify".into(),
            after_seq: 999,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert!(
        err.message().contains("after_seq 999 is ahead"),
        "{}",
        err.message()
    );
    let err = app
        .inventory
        .watch_channel_stock(pb::WatchChannelStockRequest {
            channel: "ebay".into(),
            after_seq: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_gets_the_latest_level_per_sku_and_blocks_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let engine = Engine::open(store, seed(), Arc::new(SystemClock))
        .await
        .unwrap();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let (publisher, _task) = Publisher::start(engine.clone(), stop);
    let sku = |s: &str| Sku::parse(s).unwrap();
    for s in ["HOT", "COLD"] {
        crate::helpers::count_in(&engine, s, "WH-WEST", 100)
            .await
            .unwrap();
    }
    let mut slow = publisher
        .watch(&ChannelCode::parse("shopify").unwrap(), 0)
        .unwrap();

    for i in 0..60 {
        let cmd = ReserveCmd {
            channel: ChannelCode::parse("shopify").unwrap(),
            order_id: OrderId::parse(format!("o-{i}")).unwrap(),
            lines: vec![(sku("HOT"), Quantity::parse("q", 1).unwrap())],
            hold_seconds: 0,
            terms: Default::default(),
        };
        engine
            .reserve(cmd)
            .await
            .expect("a watcher that does not read never blocks a reservation");
    }
    // Let the publisher catch up with the last commit.
    let current = publisher.current();
    let mut waited = 0;
    while !publisher
        .current()
        .iter()
        .any(|e| e.channel.as_str() == "shopify" && e.sku.as_str() == "HOT" && e.published == 40)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
        assert!(waited < 500, "publisher never caught up: {current:?}");
    }

    let batch = slow.next().await.unwrap();
    let hot: Vec<_> = batch.iter().filter(|e| e.sku.as_str() == "HOT").collect();
    assert_eq!(hot.len(), 1, "coalesced to one level per SKU: {batch:?}");
    assert_eq!(hot[0].published, 40, "the latest level, not a stale one");
    assert!(batch
        .iter()
        .any(|e| e.sku.as_str() == "COLD" && e.published == 100));
    assert!(
        batch.windows(2).all(|w| w[0].seq < w[1].seq),
        "in seq order: {batch:?}"
    );
}

/// An engine over a store that fails on demand, its publisher, and a
/// shopify watcher that has heard TEE at 10 in WH-WEST.
async fn engine_with_watcher(
    dir: &std::path::Path,
) -> (
    Engine,
    Arc<Flaky>,
    Publisher,
    Watch,
    tokio::sync::watch::Sender<bool>,
) {
    let store = Arc::new(Flaky::new(SqliteStore::open(dir).await.unwrap()));
    let engine = Engine::open(store.clone(), seed(), Arc::new(SystemClock))
        .await
        .unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (publisher, _task) = Publisher::start(engine.clone(), stop);
    crate::helpers::count_in(&engine, "TEE", "WH-WEST", 10)
        .await
        .unwrap();
    let mut watcher = publisher
        .watch(&ChannelCode::parse("shopify").unwrap(), 0)
        .unwrap();
    while !watcher
        .next()
        .await
        .unwrap()
        .iter()
        .any(|e| e.sku.as_str() == "TEE" && e.published == 10)
    {}
    (engine, store, publisher, watcher, stop_tx)
}

fn reserve_tee(id: &str, units: i64) -> ReserveCmd {
    ReserveCmd {
        channel: ChannelCode::parse("shopify").unwrap(),
        order_id: OrderId::parse(id).unwrap(),
        lines: vec![(
            Sku::parse("TEE").unwrap(),
            Quantity::parse("q", units).unwrap(),
        )],
        hold_seconds: 0,
        terms: Default::default(),
    }
}

/// What the watcher already holds, without waiting for anything.
fn already_there(watcher: &mut Watch) -> Option<Vec<ChannelEvent>> {
    use std::future::Future;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(watcher.next()).as_mut().poll(&mut cx) {
        std::task::Poll::Ready(batch) => batch,
        std::task::Poll::Pending => None,
    }
}

async fn shopify_events(store: &Flaky) -> Vec<ChannelEvent> {
    store
        .channel_events(&ChannelCode::parse("shopify").unwrap(), 0, 1000)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_watcher_hears_a_reserve_in_the_same_commit_that_acknowledged_it() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store, _publisher, mut watcher, _stop) = engine_with_watcher(dir.path()).await;

    engine.reserve(reserve_tee("o-1", 3)).await.unwrap();

    let told = already_there(&mut watcher)
        .expect("the new level reached the watcher before the reserve was acknowledged");
    assert_eq!(
        told.iter()
            .map(|e| (e.sku.as_str(), e.published, e.open))
            .collect::<Vec<_>>(),
        [("TEE", 7, 3)]
    );
    assert_eq!(
        shopify_events(&store).await.last(),
        told.last(),
        "the event was stored by the commit that acknowledged the reserve"
    );
}

#[tokio::test]
async fn a_failed_commit_publishes_nothing_and_leaves_no_seq_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store, _publisher, mut watcher, _stop) = engine_with_watcher(dir.path()).await;
    let last_seq = shopify_events(&store).await.last().unwrap().seq;

    store
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = engine.reserve(reserve_tee("o-1", 4)).await.unwrap_err();
    assert!(matches!(err, EngineError::Unavailable(_)), "{err:?}");
    store
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    while !engine.is_consistent() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        already_there(&mut watcher),
        None,
        "nothing of the failed reserve was told"
    );

    engine.reserve(reserve_tee("o-2", 2)).await.unwrap();
    let told = already_there(&mut watcher).expect("the committed reserve was told");
    assert_eq!(
        told.iter()
            .map(|e| (e.seq, e.published))
            .collect::<Vec<_>>(),
        [(last_seq + 1, 8)],
        "the next seq after the last one told, at the committed level"
    );
    let stored = shopify_events(&store).await;
    assert!(
        stored
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as u64 + 1),
        "seqs without gaps: {stored:?}"
    );
    assert!(
        stored.iter().all(|e| e.published != 6),
        "the failed reserve's level was never stored: {stored:?}"
    );
}

/// A commit whose answer was lost may have stored its events: the seqs it
/// gave them are never given again, and none of them is told, so a commit
/// that did land cannot collide with the next one, and a watcher never
/// hears of a level that may not exist.
#[tokio::test]
async fn a_commit_whose_answer_was_lost_leaves_its_seqs_behind_and_tells_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store, _publisher, mut watcher, _stop) = engine_with_watcher(dir.path()).await;
    let last_seq = shopify_events(&store).await.last().unwrap().seq;

    store
        .lose_answer_once
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = engine.reserve(reserve_tee("o-1", 4)).await.unwrap_err();
    assert!(matches!(err, EngineError::Unavailable(_)), "{err:?}");
    while !engine.is_consistent() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let landed = shopify_events(&store).await;
    assert_eq!(
        landed
            .iter()
            .find(|e| e.seq == last_seq + 1)
            .map(|e| e.published),
        Some(6),
        "the commit landed with its event: {landed:?}"
    );

    engine
        .reserve(reserve_tee("o-2", 2))
        .await
        .expect("the next commit does not reuse the landed commit's seq");
    let mut told = Vec::new();
    while told.last().map(|e: &ChannelEvent| e.published) != Some(4) {
        let batch = tokio::time::timeout(Duration::from_secs(5), watcher.next())
            .await
            .expect("the committed reserve is told")
            .expect("the watch goes on");
        told.extend(batch.into_iter().filter(|e| e.sku.as_str() == "TEE"));
    }
    assert!(
        told.iter().all(|e| e.seq > last_seq + 1),
        "nothing numbered by the commit of unknown outcome was told: {told:?}"
    );
    let stored = shopify_events(&store).await;
    assert!(
        stored.windows(2).all(|w| w[0].seq < w[1].seq),
        "seqs only grow: {stored:?}"
    );
}

#[tokio::test]
async fn a_rule_change_republishes_exactly_the_skus_whose_figure_it_changes() {
    let mut app = spawn_app().await;
    app.set_stock("BIG", "WH-WEST", 100).await;
    app.set_stock("SMALL", "WH-WEST", 3).await;
    let mut stream = watch(&mut app, "amazon", 0).await;
    // amazon: 60% less 5 -> BIG 55, SMALL 0.
    read_until(&mut stream, |u| {
        latest(u, "BIG") == Some(55) && latest(u, "SMALL") == Some(0)
    })
    .await;

    let rule = pb::Rule {
        channel: "amazon".into(),
        share_percent: Some(50),
        buffer: Some(5),
        ..Default::default()
    };
    app.admin
        .put_rule(pb::PutRuleRequest {
            rule: Some(rule),
            changed_by: "ana".into(),
            comment: "halve".into(),
        })
        .await
        .unwrap();

    let got = read_until(&mut stream, |u| latest(u, "BIG") == Some(45)).await;
    assert_eq!(got.len(), 1, "SMALL stays 0 and is not re-sent: {got:?}");
    quiet(&mut stream).await;
}

#[tokio::test]
async fn simulate_equals_apply_then_read_and_applies_nothing() {
    let mut app = spawn_app().await;
    let stock = [("A", 100), ("B", 30), ("C", 7), ("D", 0)];
    for (sku, q) in stock {
        if q > 0 {
            app.set_stock(sku, "WH-WEST", q).await;
            app.set_stock(sku, "WH-CENTRAL", q / 2).await;
        }
    }
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.to_string()).collect();
    let read = |items: Vec<pb::ChannelAvailability>| -> HashMap<(String, String), (i64, i64)> {
        items
            .into_iter()
            .map(|i| ((i.sku, i.channel), (i.atp, i.published)))
            .collect()
    };
    let request = pb::GetAvailabilityRequest {
        skus: skus.clone(),
        channel: String::new(),
        ..Default::default()
    };
    let before = read(
        app.inventory
            .get_availability(request.clone())
            .await
            .unwrap()
            .into_inner()
            .items,
    );
    let proposed = vec![
        pb::Rule {
            channel: "amazon".into(),
            share_percent: Some(30),
            ..Default::default()
        },
        pb::Rule {
            channel: "b2b".into(),
            sku: "B".into(),
            fence: Some(20),
            ..Default::default()
        },
        pb::Rule {
            channel: "shopify".into(),
            sku: "C".into(),
            max_published: Some(5),
            ..Default::default()
        },
    ];

    let simulated = app
        .admin
        .simulate_rules(pb::SimulateRulesRequest {
            proposed: proposed.clone(),
            skus: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert_eq!(
        read(
            app.inventory
                .get_availability(request.clone())
                .await
                .unwrap()
                .into_inner()
                .items
        ),
        before,
        "nothing applied"
    );

    for rule in proposed {
        app.admin
            .put_rule(pb::PutRuleRequest {
                rule: Some(rule),
                changed_by: "t".into(),
                comment: String::new(),
            })
            .await
            .unwrap();
    }
    let after = read(
        app.inventory
            .get_availability(request)
            .await
            .unwrap()
            .into_inner()
            .items,
    );
    let mut expected: Vec<(String, String, i64, i64, i64, i64)> = after
        .iter()
        .filter(|(k, v)| before[*k] != **v)
        .map(|((sku, ch), (atp, p))| {
            (
                sku.clone(),
                ch.clone(),
                before[&(sku.clone(), ch.clone())].0,
                *atp,
                before[&(sku.clone(), ch.clone())].1,
                *p,
            )
        })
        .collect();
    let mut got: Vec<_> = simulated
        .into_iter()
        .map(|c| {
            (
                c.sku,
                c.channel,
                c.atp_before,
                c.atp_after,
                c.published_before,
                c.published_after,
            )
        })
        .collect();
    expected.sort();
    got.sort();
    assert!(!expected.is_empty());
    assert_eq!(got, expected);
}

#[tokio::test]
async fn rule_history_records_who_when_before_after_and_why() {
    let mut app = spawn_app().await;
    let put = |share: u32, comment: &str| pb::PutRuleRequest {
        rule: Some(pb::Rule {
            channel: "shopify".into(),
            sku: "TEE".into(),
            share_percent: Some(share),
            ..Default::default()
        }),
        changed_by: "ana".into(),
        comment: comment.into(),
    };
    app.admin.put_rule(put(80, "launch")).await.unwrap();
    app.admin.put_rule(put(50, "low stock")).await.unwrap();
    app.admin
        .delete_rule(pb::DeleteRuleRequest {
            channel: "shopify".into(),
            sku: "TEE".into(),
            changed_by: "ben".into(),
            comment: "back to default".into(),
        })
        .await
        .unwrap();

    let history = app
        .admin
        .rule_history(pb::RuleHistoryRequest {
            channel: "shopify".into(),
            sku: "TEE".into(),
            all_skus: false,
        })
        .await
        .unwrap()
        .into_inner()
        .changes;
    let summary: Vec<(String, Option<u32>, Option<u32>, String)> = history
        .iter()
        .map(|c| {
            (
                c.changed_by.clone(),
                c.before.as_ref().and_then(|r| r.share_percent),
                c.after.as_ref().and_then(|r| r.share_percent),
                c.comment.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("ana".into(), None, Some(80), "launch".into()),
            ("ana".into(), Some(80), Some(50), "low stock".into()),
            ("ben".into(), Some(50), None, "back to default".into()),
        ]
    );
    assert!(history[0].before.is_none() && history[2].after.is_none());
    assert!(history.windows(2).all(|w| w[0].at_ms <= w[1].at_ms) && history[0].at_ms > 0);
}

#[tokio::test]
async fn rules_seeded_from_the_config_start_their_history_as_changes_by_config() {
    let mut app = spawn_app().await;
    let history = app
        .admin
        .rule_history(pb::RuleHistoryRequest {
            channel: "b2b".into(),
            sku: String::new(),
            all_skus: false,
        })
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].changed_by, "config");
    assert!(history[0].before.is_none());
    assert_eq!(history[0].after.as_ref().and_then(|r| r.fence), Some(100));

    app.restart().await;
    let again = app
        .admin
        .rule_history(pb::RuleHistoryRequest {
            channel: "b2b".into(),
            sku: String::new(),
            all_skus: false,
        })
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert_eq!(again, history, "a restart seeds nothing again");
}

/// The newest (published, open) of `sku` in `updates`.
fn latest_open(updates: &[pb::ChannelStockUpdate], sku: &str) -> Option<(i64, i64)> {
    updates
        .iter()
        .rev()
        .find(|u| u.sku == sku)
        .map(|u| (u.published, u.open))
}

#[tokio::test]
async fn the_channels_open_units_go_out_when_they_change_alone_and_survive_a_restart() {
    let mut app = spawn_app().await;
    app.set_stock("TEE", "WH-WEST", 10).await;
    // Shopify is shown at most 5: a reservation of 2 leaves its published
    // figure at 5, so only its open units change.
    app.admin
        .put_rule(pb::PutRuleRequest {
            rule: Some(pb::Rule {
                channel: "shopify".into(),
                max_published: Some(5),
                ..Default::default()
            }),
            changed_by: "test".into(),
            comment: String::new(),
        })
        .await
        .unwrap();
    let mut stream = watch(&mut app, "shopify", 0).await;
    read_until(&mut stream, |u| latest_open(u, "TEE") == Some((5, 0))).await;

    app.reserve("shopify", "o-1", &[("TEE", 2)], 0)
        .await
        .unwrap();
    let got = read_until(&mut stream, |u| !u.is_empty()).await;
    assert_eq!(
        (got[0].published, got[0].open, got[0].atp),
        (5, 2, 8),
        "an update goes out when only open changes"
    );
    assert!(got[0].at_ms > 0, "the update says when it was committed");

    // Another channel's reservation changes neither shopify's figure nor
    // its open units: nothing is sent.
    app.reserve("amazon", "a-1", &[("TEE", 1)], 0)
        .await
        .unwrap();
    quiet(&mut stream).await;

    app.inventory
        .fulfill(pb::FulfillRequest {
            channel: "shopify".into(),
            order_id: "o-1".into(),
            lines: vec![crate::helpers::line("TEE", 1)],
            shipment_id: "ship-1".into(),
        })
        .await
        .unwrap();
    let shipped = read_until(&mut stream, |u| !u.is_empty()).await;
    assert_eq!((shipped[0].published, shipped[0].open), (5, 1));
    let last_seq = shipped[0].seq;
    drop(stream);

    app.restart().await;
    let mut snapshot = watch(&mut app, "shopify", 0).await;
    let all = read_until(&mut snapshot, |u| latest_open(u, "TEE").is_some()).await;
    assert_eq!(
        latest_open(&all, "TEE"),
        Some((5, 1)),
        "a snapshot carries open"
    );
    let mut resumed = watch(&mut app, "shopify", last_seq - 1).await;
    let again = read_until(&mut resumed, |u| !u.is_empty()).await;
    assert_eq!(
        (again[0].seq, again[0].open),
        (last_seq, 1),
        "a resume carries open"
    );

    app.inventory
        .release(pb::ReleaseRequest {
            channel: "shopify".into(),
            order_id: "o-1".into(),
            lines: vec![],
            reason: "cancelled".into(),
        })
        .await
        .unwrap();
    let released = read_until(&mut resumed, |u| u.iter().any(|u| u.seq > last_seq)).await;
    assert_eq!(latest_open(&released, "TEE"), Some((5, 0)));
}

/// The newest open units of `sku` in `updates`.
fn open_of(updates: &[pb::ChannelStockUpdate], sku: &str) -> Option<i64> {
    latest_open(updates, sku).map(|(_, open)| open)
}

#[tokio::test]
async fn with_the_erp_as_master_open_units_follow_the_channels_fulfill_and_the_erps_delivery() {
    use stockpool::domain::StockMaster;
    use stockpool::engine::{ErpDelivery, ErpStock};

    let mut app = spawn_app().await;
    app.engine.set_stock_master(StockMaster::Erp);
    app.set_stock("TEE", "WH-WEST", 10).await;
    let mut stream = watch(&mut app, "shopify", 0).await;
    let first = read_until(&mut stream, |u| open_of(u, "TEE").is_some()).await;
    assert_eq!(open_of(&first, "TEE"), Some(0));
    app.reserve("shopify", "o-1", &[("TEE", 3)], 0)
        .await
        .unwrap();
    app.reserve("shopify", "o-2", &[("TEE", 2)], 0)
        .await
        .unwrap();
    let reserved = read_until(&mut stream, |u| open_of(u, "TEE") == Some(5)).await;
    let published = latest_open(&reserved, "TEE").unwrap().0;

    // The channel ships o-1: Odoo has not delivered, so the units stay
    // claimed (published does not rise) but they are no longer open.
    app.inventory
        .fulfill(pb::FulfillRequest {
            channel: "shopify".into(),
            order_id: "o-1".into(),
            lines: vec![],
            shipment_id: "ship-1".into(),
        })
        .await
        .unwrap();
    let shipped = read_until(&mut stream, |u| open_of(u, "TEE").is_some()).await;
    assert_eq!(latest_open(&shipped, "TEE"), Some((published, 2)));

    // Odoo delivers o-1 (already closed) and o-2 (before the channel said
    // so): on-hand follows Odoo's count, and o-2's units leave open too.
    let wh = || WarehouseCode::parse("WH-WEST").unwrap();
    let delivery = |order: &str, units: i64| ErpDelivery {
        channel: ChannelCode::parse("shopify").unwrap(),
        order_id: OrderId::parse(order).unwrap(),
        warehouse: wh(),
        delivered: units,
        reference: format!("SO-{order}"),
    };
    app.engine
        .follow_erp(ErpStock {
            sku: Sku::parse("TEE").unwrap(),
            counts: vec![(wh(), 5)],
            delivered: vec![delivery("o-1", 3), delivery("o-2", 2)],
            reason: "test delivery".into(),
        })
        .await
        .unwrap();
    let delivered = read_until(&mut stream, |u| open_of(u, "TEE") == Some(0)).await;
    assert_eq!(latest_open(&delivered, "TEE"), Some((published, 0)));
    let level = app.stock(&["TEE"]).await;
    let west = level.iter().find(|l| l.warehouse == "WH-WEST").unwrap();
    assert_eq!((west.on_hand, west.reserved), (5, 0));
}
