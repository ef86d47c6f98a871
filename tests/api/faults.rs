//! Failures below the engine: a store that refuses commits on demand. No
//! acknowledged write is lost, callers are told, and memory is reloaded to
//! equal the store before new writes on the SKU are admitted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::{count_in, Flaky};
use stockpool::domain::{ChannelCode, OrderId, Quantity, Sku, WarehouseCode};
use stockpool::engine::{Engine, EngineError, ManualClock, ReserveCmd, SystemClock};
use stockpool::store::{SqliteStore, Store};

fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}

fn order(channel: &str, id: &str, s: &str, q: i64) -> ReserveCmd {
    ReserveCmd {
        channel: ChannelCode::parse(channel).unwrap(),
        order_id: OrderId::parse(id).unwrap(),
        lines: vec![(sku(s), Quantity::parse("quantity", q).unwrap())],
        hold_seconds: 0,
        terms: Default::default(),
    }
}

async fn engine_on(dir: &std::path::Path) -> (Engine, Arc<Flaky>) {
    let store = Arc::new(Flaky::new(SqliteStore::open(dir).await.unwrap()));
    let engine = Engine::open(store.clone(), crate::helpers::seed(), Arc::new(SystemClock))
        .await
        .unwrap();
    (engine, store)
}

async fn count(engine: &Engine, s: &str, w: &str, on_hand: i64) {
    count_in(engine, s, w, on_hand)
        .await
        .expect("the count is saved");
}

async fn wait_consistent(engine: &Engine) {
    for _ in 0..500 {
        if engine.is_consistent() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("memory was never reloaded");
}

#[tokio::test]
async fn a_failed_commit_is_unavailable_and_memory_is_reloaded_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine_on(dir.path()).await;
    count(&engine, "TEE", "WH-WEST", 10).await;

    store.failing.store(true, Ordering::SeqCst);
    let err = engine
        .reserve(order("shopify", "o-1", "TEE", 4))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("not saved"), "{err}");

    wait_consistent(&engine).await;
    assert_eq!(
        engine.get_stock(&[sku("TEE")])[1].pool.reserved,
        0,
        "memory forgot the unsaved reservation"
    );
    assert!(matches!(
        engine
            .get_reservation(
                &ChannelCode::parse("shopify").unwrap(),
                &OrderId::parse("o-1").unwrap()
            )
            .await,
        Err(EngineError::ReservationNotFound { .. })
    ));

    store.failing.store(false, Ordering::SeqCst);
    let (r, replayed) = engine
        .reserve(order("shopify", "o-1", "TEE", 4))
        .await
        .unwrap();
    assert!(
        !replayed,
        "the failed attempt left no trace, so the retry is a first reservation"
    );
    assert_eq!(r.allocations[0].quantity, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_reservation_is_lost_when_commits_fail_mid_load() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine_on(dir.path()).await;
    count(&engine, "HOT", "WH-WEST", 300).await;

    let mut tasks = Vec::new();
    for t in 0..8 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..60 {
                let id = format!("t{t}-{i}");
                match engine.reserve(order("shopify", &id, "HOT", 1)).await {
                    Ok(_) => acked.push(id),
                    Err(EngineError::Unavailable(_) | EngineError::Reloading(_)) => {}
                    Err(EngineError::Domain(_)) => {}
                    Err(e) => panic!("unexpected error {e:?}"),
                }
            }
            acked
        }));
    }
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        store.failing.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
        store.failing.store(false, Ordering::SeqCst);
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    store.failing.store(false, Ordering::SeqCst);
    wait_consistent(&engine).await;

    crate::helpers::assert_store_holds_exactly(store.as_ref(), &acked, "HOT").await;
    let memory: Vec<_> = engine
        .get_stock(&[sku("HOT")])
        .into_iter()
        .map(|l| l.pool)
        .collect();
    let reopened = Engine::open(store.clone(), crate::helpers::seed(), Arc::new(SystemClock))
        .await
        .unwrap();
    let from_store: Vec<_> = reopened
        .get_stock(&[sku("HOT")])
        .into_iter()
        .map(|l| l.pool)
        .collect();
    assert_eq!(memory, from_store, "memory equals the store afterwards");
}

#[tokio::test]
async fn a_lapsed_hold_is_expired_by_the_sweep_and_its_units_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let clock = Arc::new(ManualClock::new(1_000_000));
    let engine = Engine::open(store, crate::helpers::seed(), clock.clone())
        .await
        .unwrap();
    count(&engine, "CAP", "WH-WEST", 5).await;
    let mut cmd = order("shopify", "cart", "CAP", 5);
    cmd.hold_seconds = 60;
    engine.reserve(cmd).await.unwrap();

    clock.advance_ms(59_999);
    assert_eq!(
        engine.expire_due().await,
        0,
        "the hold has a millisecond left"
    );
    assert_eq!(engine.get_stock(&[sku("CAP")])[1].pool.free(), 0);

    clock.advance_ms(1);
    assert_eq!(engine.expire_due().await, 1);
    assert_eq!(engine.get_stock(&[sku("CAP")])[1].pool.free(), 5);
    let r = engine
        .get_reservation(
            &ChannelCode::parse("shopify").unwrap(),
            &OrderId::parse("cart").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, stockpool::domain::Status::Expired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_decided_on_a_count_that_failed_to_commit_is_not_saved() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine_on(dir.path()).await;
    let gate = store.gate.lock().await;
    store.fail_once.store(true, Ordering::SeqCst);

    let counting = tokio::spawn({
        let engine = engine.clone();
        async move { count_in(&engine, "NEW", "WH-WEST", 10).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reserving = tokio::spawn({
        let engine = engine.clone();
        async move {
            engine
                .reserve(order("shopify", "rides-on-the-count", "NEW", 10))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(gate);

    assert!(matches!(
        counting.await.unwrap(),
        Err(EngineError::Unavailable(_))
    ));
    let reserved = reserving.await.unwrap();
    assert!(
        matches!(reserved, Err(EngineError::Unavailable(_))),
        "{reserved:?}"
    );
    wait_consistent(&engine).await;

    let stored = store.load().await.unwrap();
    assert!(
        stored.reservations.is_empty(),
        "a reservation on stock that was never saved was saved"
    );
    assert!(stored.pools.iter().all(|p| p.sku.as_str() != "NEW"));
    let level = &engine.get_stock(&[sku("NEW")])[1];
    assert_eq!(
        (level.pool.on_hand, level.pool.reserved),
        (0, 0),
        "memory equals the store again"
    );
}

/// One pool delta of `s` in WH-WEST: a job for the writer alone.
fn delta(s: &str) -> stockpool::store::Op {
    stockpool::store::Op::PoolDelta {
        sku: sku(s),
        warehouse: WarehouseCode::parse("WH-WEST").unwrap(),
        on_hand: 1,
        reserved: 0,
    }
}

async fn wait_for_attempts(store: &Flaky, n: usize) {
    for _ in 0..1000 {
        if store.commits.load(Ordering::SeqCst) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the writer never tried commit {n}");
}

#[tokio::test]
async fn while_the_store_cannot_commit_every_waiting_write_is_refused_after_one_attempt_and_writes_resume_with_the_first_that_succeeds(
) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Flaky::new(SqliteStore::open(dir.path()).await.unwrap()));
    let (writer, _task) = stockpool::store::GroupCommit::spawn(store.clone());
    store.failing.store(true, Ordering::SeqCst);

    // One commit is under way (held at the gate) when the store goes away;
    // eight writers queue behind it.
    let gate = store.gate.lock().await;
    let first = writer.enqueue(vec![delta("SKU-0")]);
    wait_for_attempts(&store, 1).await;
    let queued: Vec<_> = (1..=8)
        .map(|i| writer.enqueue(vec![delta(&format!("SKU-{i}"))]))
        .collect();
    drop(gate);
    assert!(first.wait().await.is_err());
    for ticket in queued {
        let err = ticket.wait().await.expect_err("refused");
        assert!(err.to_string().contains("not attempted"), "{err}");
    }
    assert_eq!(
        store.commits.load(Ordering::SeqCst),
        1,
        "the queued writes were refused without a commit attempt each"
    );

    // Still down: the next write probes the store; one that arrives while
    // the probe is under way is refused without waiting for it.
    let gate = store.gate.lock().await;
    let probe = writer.enqueue(vec![delta("SKU-9")]);
    wait_for_attempts(&store, 2).await;
    let meanwhile = writer.enqueue(vec![delta("SKU-10")]);
    let err = meanwhile
        .wait()
        .await
        .expect_err("refused while the probe is held");
    assert!(err.to_string().contains("not attempted"), "{err}");

    // The store is back while the probe is under way: it succeeds, and so
    // does the very next write, each with one attempt.
    store.failing.store(false, Ordering::SeqCst);
    drop(gate);
    probe.wait().await.expect("the probe commits");
    writer
        .enqueue(vec![delta("SKU-11")])
        .wait()
        .await
        .expect("writes resume at once");
    assert_eq!(store.commits.load(Ordering::SeqCst), 3);
    let stored: Vec<String> = store
        .load()
        .await
        .unwrap()
        .pools
        .into_iter()
        .map(|p| p.sku.to_string())
        .collect();
    assert_eq!(stored, ["SKU-11", "SKU-9"]);
}

#[tokio::test]
async fn a_reserve_whose_commit_surely_failed_is_answered_without_reading_the_store_back() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine_on(dir.path()).await;
    count(&engine, "TEE", "WH-WEST", 10).await;
    store.failing.store(true, Ordering::SeqCst);
    store.reads_failing.store(true, Ordering::SeqCst);

    let err = engine
        .reserve(order("shopify", "o-1", "TEE", 4))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Unavailable(_)), "{err:?}");
    assert_eq!(
        store.read_backs.load(Ordering::SeqCst),
        0,
        "nothing was written, so there is nothing to read back"
    );
    assert!(matches!(
        engine
            .get_reservation(
                &ChannelCode::parse("shopify").unwrap(),
                &OrderId::parse("o-1").unwrap()
            )
            .await,
        Err(EngineError::ReservationNotFound { .. })
    ));
}

#[tokio::test]
async fn a_reserve_whose_commit_answer_was_lost_is_read_back_once_the_store_answers_and_its_retry_is_a_replay(
) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine_on(dir.path()).await;
    count(&engine, "TEE", "WH-WEST", 10).await;
    let shopify = ChannelCode::parse("shopify").unwrap();
    let o1 = OrderId::parse("o-1").unwrap();

    // The reservation commits, the answer is lost, and the store cannot be
    // read for now: the caller is told at once.
    store.lose_answer_once.store(true, Ordering::SeqCst);
    store.reads_failing.store(true, Ordering::SeqCst);
    let err = engine
        .reserve(order("shopify", "o-1", "TEE", 4))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Unavailable(_)), "{err:?}");

    // Until the store answers, the order is neither guessed absent nor
    // decided again: calls on it are refused as busy.
    let busy = engine.reserve(order("shopify", "o-1", "TEE", 4)).await;
    assert!(
        matches!(busy, Err(EngineError::OrderBusy { .. })),
        "{busy:?}"
    );

    store.reads_failing.store(false, Ordering::SeqCst);
    wait_consistent(&engine).await;
    let mut replay = None;
    for _ in 0..200 {
        match engine.reserve(order("shopify", "o-1", "TEE", 4)).await {
            Err(EngineError::OrderBusy { .. }) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            other => {
                replay = Some(other.unwrap());
                break;
            }
        }
    }
    let (r, replayed) = replay.expect("the order settles");
    assert!(replayed, "the landed reservation is found, not made twice");
    assert_eq!(engine.get_reservation(&shopify, &o1).await.unwrap(), r);
    assert_eq!(
        engine.get_stock(&[sku("TEE")])[1].pool.reserved,
        4,
        "its units are reserved once"
    );
    let stored = store.load().await.unwrap();
    assert_eq!(stored.reservations.len(), 1);
}

/// Starts `cmd` on its own task, waits until its commit is at the store
/// (held there by the gate), then drops the caller, as a client that
/// cancels or whose deadline passes does.
async fn reserve_and_walk_away(engine: &Engine, store: &Flaky, cmd: ReserveCmd, attempts: usize) {
    let caller = tokio::spawn({
        let engine = engine.clone();
        async move { engine.reserve(cmd).await }
    });
    wait_for_attempts(store, attempts).await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_whose_caller_left_before_its_commit_failed_leaves_nothing_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine_on(dir.path()).await;
    count(&engine, "TEE", "WH-WEST", 10).await;
    let attempts = store.commits.load(Ordering::SeqCst);

    let gate = store.gate.lock().await;
    store.fail_once.store(true, Ordering::SeqCst);
    reserve_and_walk_away(
        &engine,
        &store,
        order("shopify", "gone", "TEE", 4),
        attempts + 1,
    )
    .await;
    drop(gate);

    // The commit fails behind the caller's back; memory must follow.
    for _ in 0..500 {
        if engine.get_stock(&[sku("TEE")])[1].pool.reserved == 0 && engine.is_consistent() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        engine.get_stock(&[sku("TEE")])[1].pool.reserved,
        0,
        "the refused commit is not in memory although no one waited for it"
    );
    assert!(engine.is_consistent());
    assert!(matches!(
        engine
            .get_reservation(
                &ChannelCode::parse("shopify").unwrap(),
                &OrderId::parse("gone").unwrap()
            )
            .await,
        Err(EngineError::ReservationNotFound { .. })
    ));
    let (r, replayed) = engine
        .reserve(order("shopify", "gone", "TEE", 4))
        .await
        .expect("the client's retry is a first reservation");
    assert!(!replayed);
    assert_eq!(r.allocations[0].quantity, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_whose_caller_left_before_its_commit_succeeded_still_expires() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Flaky::new(SqliteStore::open(dir.path()).await.unwrap()));
    let clock = Arc::new(ManualClock::new(1_000_000));
    let engine = Engine::open(store.clone(), crate::helpers::seed(), clock.clone())
        .await
        .unwrap();
    count(&engine, "CAP", "WH-WEST", 5).await;
    let attempts = store.commits.load(Ordering::SeqCst);

    let gate = store.gate.lock().await;
    let mut cmd = order("shopify", "cart", "CAP", 5);
    cmd.hold_seconds = 60;
    reserve_and_walk_away(&engine, &store, cmd, attempts + 1).await;
    drop(gate);

    let channel = ChannelCode::parse("shopify").unwrap();
    let cart = OrderId::parse("cart").unwrap();
    for _ in 0..500 {
        if engine.get_reservation(&channel, &cart).await.is_ok() && engine.is_consistent() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(engine.get_stock(&[sku("CAP")])[1].pool.free(), 0);
    clock.advance_ms(60_000);
    let mut expired = 0;
    for _ in 0..500 {
        expired += engine.expire_due().await;
        if expired > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(expired, 1, "the committed hold is tracked for expiry");
    assert_eq!(engine.get_stock(&[sku("CAP")])[1].pool.free(), 5);
}
