//! The store contract, written once and run against every backend.
//!
//! Each `suite` function takes a [`Backend`] and checks one promise of the
//! `Store` trait or of the group-commit writer over it. A backend joins by
//! implementing [`Backend`] and adding one `store_suite!` line; the suite
//! itself does not change. A suite function missing from `store_suite!` is
//! dead code, which the lints refuse.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use stockpool::domain::{
    Allocation, Channel, ChannelCode, Currency, CustomerRef, OrderId, OrderTerms, Pool, Refund,
    Reservation, Rule, Sku, Status, Take, UnitPrice, Warehouse, WarehouseCode,
};
use stockpool::store::{
    ChannelEvent, GroupCommit, JobGuard, LedgerEntry, LedgerRow, Level, MovementKind,
    MovementRecord, NewOutboxEntry, Op, OutboxEntry, OutboxEvent, OutboxLine, OutboxState,
    OutboxStats, OutboxUpdate, PoolRow, PostgresStore, Published, RuleChange, Sequencer, SkuLevels,
    Snapshot, SqliteStore, Store, StoreError,
};

#[path = "support/pg.rs"]
mod pg;

/// A fresh, empty database of one backend, opened as often as a test asks.
#[async_trait]
trait Backend: Send + Sync {
    /// A store over this backend's database; the first call sees it empty,
    /// later calls see what earlier stores committed.
    async fn open(&self) -> Arc<dyn Store>;
    /// Closes every store opened so far; they are not used again.
    async fn close(&self);
}

struct Sqlite {
    dir: tempfile::TempDir,
    opened: Mutex<Vec<Arc<SqliteStore>>>,
}

impl Sqlite {
    fn new() -> Self {
        Sqlite {
            dir: tempfile::tempdir().expect("temp dir"),
            opened: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Backend for Sqlite {
    async fn open(&self) -> Arc<dyn Store> {
        let store = Arc::new(
            SqliteStore::open(self.dir.path())
                .await
                .expect("open sqlite store"),
        );
        self.opened.lock().unwrap().push(store.clone());
        store
    }

    async fn close(&self) {
        let opened: Vec<_> = self.opened.lock().unwrap().drain(..).collect();
        for store in opened {
            store.close().await;
        }
    }
}

/// A database of its own on the test Postgres server (see `support/pg.rs`).
struct Postgres {
    db: pg::TestDb,
    opened: Mutex<Vec<Arc<PostgresStore>>>,
}

impl Postgres {
    /// None when the server is unreachable outside CI: the test is skipped.
    async fn new() -> Option<Self> {
        Some(Postgres {
            db: pg::TestDb::create().await?,
            opened: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl Backend for Postgres {
    async fn open(&self) -> Arc<dyn Store> {
        let store = Arc::new(
            PostgresStore::connect(&self.db.url)
                .await
                .expect("connect to the test database"),
        );
        self.opened.lock().unwrap().push(store.clone());
        store
    }

    async fn close(&self) {
        let opened: Vec<_> = self.opened.lock().unwrap().drain(..).collect();
        for store in opened {
            store.close().await;
        }
    }
}

/// Runs the whole suite against one backend, each test on a fresh database:
/// `store_suite!(module, backend)`, where `backend` is an expression (it may
/// `.await`) giving `Some` fresh [`Backend`], or `None` when that backend's
/// server is unavailable and the test is skipped (its helper says so loudly
/// and refuses to skip under CI). A new backend needs one line here.
macro_rules! store_suite {
    ($module:ident, $make:expr) => {
        store_suite!(@tests $module, $make, [
            a_new_store_loads_empty,
            a_snapshot_round_trips_everything,
            pool_deltas_accumulate_and_bump_the_version_by_one_each,
            a_count_sets_on_hand_keeps_reserved_and_bumps_the_version,
            a_reservation_is_replaced_whole_by_its_channel_and_order_id,
            renaming_keeps_the_declared_position,
            a_rule_is_replaced_by_its_key_and_deleted_alone,
            load_pools_returns_only_the_named_skus,
            an_empty_commit_changes_nothing,
            a_failed_op_rolls_back_the_whole_commit,
            the_ledger_is_append_only_and_read_by_sku_after_an_id,
            data_survives_closing_and_reopening_the_store,
            the_writer_commits_queued_jobs_together_and_acknowledges_each,
            a_failing_job_gets_an_error_while_its_batch_neighbours_commit,
            a_refused_batchs_jobs_are_retried_each_with_the_channel_events_of_its_own_levels,
            ops_on_one_pool_apply_in_order_within_one_commit,
            a_reservation_written_twice_in_one_commit_keeps_its_last_state,
            a_movement_id_repeated_within_one_commit_fails_it,
            a_commit_of_more_rows_than_one_statement_takes_keeps_them_all_in_op_order,
            rule_history_is_read_per_rule_or_per_channel_oldest_first,
            channel_events_are_paged_by_seq_and_the_newest_per_sku_is_loaded,
            outbox_entries_come_due_oldest_first_one_per_reservation,
            outbox_entries_are_listed_by_state_and_counted,
            rule_changes_within_one_commit_end_as_the_last_one_left_them,
            an_outbox_entry_updated_twice_in_one_commit_keeps_its_last_standing,
            a_commit_holding_every_kind_of_op_writes_each_of_them,
        ]);
    };
    (@tests $module:ident, $make:expr, [$($name:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(backend) = $make else { return };
                    super::suite::$name(&backend).await;
                    backend.close().await;
                }
            )*
        }
    };
}

store_suite!(sqlite, Some(Sqlite::new()));
store_suite!(postgres, Postgres::new().await);

fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}

fn wh(s: &str) -> WarehouseCode {
    WarehouseCode::parse(s).unwrap()
}

fn ch(s: &str) -> ChannelCode {
    ChannelCode::parse(s).unwrap()
}

fn order(s: &str) -> OrderId {
    OrderId::parse(s).unwrap()
}

fn delta(s: &str, w: &str, on_hand: i64, reserved: i64) -> Op {
    Op::PoolDelta {
        sku: sku(s),
        warehouse: wh(w),
        on_hand,
        reserved,
    }
}

fn movement(id: &str) -> Op {
    Op::Movement(MovementRecord {
        movement_id: id.into(),
        fingerprint: format!("fp-{id}"),
    })
}

/// Shopify's published figure `published` of `s`, as a write leaves it.
fn levels(s: &str, published: i64) -> Vec<SkuLevels> {
    vec![SkuLevels {
        sku: sku(s),
        levels: vec![Level {
            channel: ch("shopify"),
            atp: published,
            published,
            open: 0,
        }],
        at_ms: 1_700_000_000_000,
    }]
}

/// A job the engine still stands by.
struct Valid;

impl JobGuard for Valid {
    fn still_valid(&self) -> bool {
        true
    }
    fn failed(&self) {}
}

/// A sequencer that numbers the newest level of every SKU it is given,
/// changed or not, and remembers what committed.
#[derive(Default)]
struct Numbering {
    seq: Mutex<u64>,
    committed: Mutex<Vec<Vec<(u64, String, i64)>>>,
}

impl Sequencer for Numbering {
    fn sequence(&self, given: &[&SkuLevels]) -> Published {
        let mut newest: Vec<&SkuLevels> = Vec::new();
        for l in given {
            newest.retain(|n| n.sku != l.sku);
            newest.push(l);
        }
        let mut seq = *self.seq.lock().unwrap();
        let mut events = Vec::new();
        for l in &newest {
            for level in &l.levels {
                seq += 1;
                events.push(ChannelEvent {
                    channel: level.channel.clone(),
                    seq,
                    sku: l.sku.clone(),
                    published: level.published,
                    atp: level.atp,
                    open: level.open,
                    at_ms: l.at_ms,
                });
            }
        }
        Published {
            skus: newest.iter().map(|l| l.sku.clone()).collect(),
            events,
        }
    }

    fn committed(&self, pass: Published) {
        let mut seq = self.seq.lock().unwrap();
        *seq = pass.events.iter().map(|e| e.seq).max().unwrap_or(*seq);
        self.committed.lock().unwrap().push(
            pass.events
                .iter()
                .map(|e| (e.seq, e.sku.to_string(), e.published))
                .collect(),
        );
    }

    fn in_doubt(&self, _: &Published) {}
}

fn ledger_line(
    s: &str,
    w: &str,
    kind: MovementKind,
    on_hand_delta: i64,
    reference: &str,
) -> LedgerEntry {
    LedgerEntry {
        at_ms: 1_700_000_000_000,
        sku: sku(s),
        warehouse: wh(w),
        kind,
        on_hand_delta,
        reserved_delta: 0,
        on_hand_after: on_hand_delta,
        reserved_after: 0,
        reason: "receipt".into(),
        reference: reference.into(),
    }
}

fn pool_of(snapshot: &Snapshot, s: &str, w: &str) -> Option<Pool> {
    snapshot
        .pools
        .iter()
        .find(|p| p.sku.as_str() == s && p.warehouse.as_str() == w)
        .map(|p| p.pool)
}

/// A B2B account's order priced in EUR, prices without tax.
fn priced_terms() -> OrderTerms {
    OrderTerms::new(
        Some(Currency::parse("currency", "EUR").unwrap()),
        Some(CustomerRef::parse("customer_ref", "ACME-0042").unwrap()),
        false,
        vec![
            (sku("TEE-BLK-M"), UnitPrice::parse("p", "19.90").unwrap()),
            (sku("MUG"), UnitPrice::parse("p", "7.5").unwrap()),
        ],
    )
    .unwrap()
}

/// A reservation that has been through everything: split over two
/// warehouses, partly shipped, partly released and partly refunded.
fn worked_reservation() -> Reservation {
    Reservation {
        id: "res-0001".into(),
        channel: ch("shopify"),
        order_id: order("#1001"),
        status: Status::Confirmed,
        lines: vec![(sku("MUG"), 1), (sku("TEE-BLK-M"), 5)],
        allocations: vec![
            // Shipped by the channel, one unit of it delivered by the ERP.
            Allocation {
                sku: sku("TEE-BLK-M"),
                warehouse: wh("WH-EAST"),
                quantity: 3,
                fulfilled: 2,
                released: 0,
                restocked: 1,
                shipped: 2,
                delivered: 1,
            },
            Allocation {
                released: 1,
                ..Allocation::new(sku("TEE-BLK-M"), wh("WH-WEST"), 2)
            },
            // Delivered by the ERP before the channel said so.
            Allocation {
                fulfilled: 1,
                delivered: 1,
                ..Allocation::new(sku("MUG"), wh("WH-EAST"), 1)
            },
        ],
        created_at_ms: 1_700_000_000_000,
        expires_at_ms: 0,
        shipments: vec!["ship-1".into(), "ship-2".into()],
        refunds: vec![Refund {
            refund_id: "re_1".into(),
            restocked: vec![Take {
                allocation: 0,
                quantity: 1,
            }],
        }],
        terms: priced_terms(),
    }
}

/// Forwards to a store, recording the op count of every commit it is asked
/// for; while the test holds `gate`, commits wait, so jobs pile up in the
/// writer's queue.
struct Recording {
    inner: Arc<dyn Store>,
    commits: Mutex<Vec<usize>>,
    gate: tokio::sync::Mutex<()>,
    entered: tokio::sync::Notify,
}

impl Recording {
    fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Recording {
            inner,
            commits: Mutex::new(Vec::new()),
            gate: tokio::sync::Mutex::new(()),
            entered: tokio::sync::Notify::new(),
        })
    }

    fn commits(&self) -> Vec<usize> {
        self.commits.lock().unwrap().clone()
    }
}

#[async_trait]
impl Store for Recording {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load().await
    }
    async fn commit(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.commits.lock().unwrap().push(ops.len());
        self.entered.notify_one();
        let _open = self.gate.lock().await;
        self.inner.commit(ops).await
    }
    async fn load_pools(&self, skus: &[Sku]) -> Result<Vec<PoolRow>, StoreError> {
        self.inner.load_pools(skus).await
    }
    async fn load_reservation(
        &self,
        channel: &ChannelCode,
        order_id: &OrderId,
    ) -> Result<Option<Reservation>, StoreError> {
        self.inner.load_reservation(channel, order_id).await
    }
    async fn rule_history(
        &self,
        channel: &ChannelCode,
        sku: Option<&Sku>,
        all_skus: bool,
    ) -> Result<Vec<RuleChange>, StoreError> {
        self.inner.rule_history(channel, sku, all_skus).await
    }
    async fn channel_events(
        &self,
        channel: &ChannelCode,
        after_seq: u64,
        limit: i64,
    ) -> Result<Vec<ChannelEvent>, StoreError> {
        self.inner.channel_events(channel, after_seq, limit).await
    }
    async fn ledger(
        &self,
        sku: Option<&Sku>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        self.inner.ledger(sku, after_id, limit).await
    }
    async fn outbox_due(&self, now_ms: i64, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox_due(now_ms, limit).await
    }
    async fn outbox_list(
        &self,
        state: Option<OutboxState>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox_list(state, after_id, limit).await
    }
    async fn outbox_entries(&self, ids: &[i64]) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox_entries(ids).await
    }
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.inner.outbox_stats().await
    }
}

mod suite {
    use super::*;

    pub async fn a_new_store_loads_empty(backend: &dyn Backend) {
        let store = backend.open().await;
        let s = store.load().await.unwrap();
        assert!(s.warehouses.is_empty() && s.channels.is_empty() && s.rules.is_empty());
        assert!(s.pools.is_empty() && s.reservations.is_empty() && s.movements.is_empty());
        assert!(store.ledger(None, 0, 100).await.unwrap().is_empty());
        assert_eq!(
            store
                .load_reservation(&ch("shopify"), &order("#1"))
                .await
                .unwrap(),
            None
        );
    }

    pub async fn a_snapshot_round_trips_everything(backend: &dyn Backend) {
        let store = backend.open().await;
        let warehouses = vec![
            Warehouse {
                code: wh("WH-WEST"),
                name: "West".into(),
            },
            Warehouse {
                code: wh("WH-EAST"),
                name: "East".into(),
            },
            Warehouse {
                code: wh("WH-NORTH"),
                name: "North".into(),
            },
        ];
        let channels = vec![
            Channel {
                code: ch("shopify"),
                name: "Shopify".into(),
            },
            Channel {
                code: ch("b2b"),
                name: "B2B portal".into(),
            },
            Channel {
                code: ch("amazon"),
                name: "Amazon".into(),
            },
        ];
        let default_rule = Rule {
            channel: Some(ch("b2b")),
            sku: None,
            warehouses: vec![wh("WH-EAST"), wh("WH-WEST")],
            fence: Some(50),
            share_percent: None,
            buffer: None,
            max_published: None,
            min_published: None,
        };
        let sku_rule = Rule {
            channel: Some(ch("b2b")),
            sku: Some(sku("TEE-BLK-M")),
            warehouses: Vec::new(),
            fence: None,
            share_percent: Some(40),
            buffer: Some(5),
            max_published: Some(0),
            min_published: Some(3),
        };
        let bare_rule = Rule {
            channel: Some(ch("amazon")),
            ..Rule::default()
        };
        let reservation = worked_reservation();
        let held = Reservation {
            id: "res-0002".into(),
            channel: ch("amazon"),
            order_id: order("114-3941689-8772232"),
            status: Status::Held,
            lines: vec![(sku("MUG"), 2)],
            allocations: vec![Allocation::new(sku("MUG"), wh("WH-WEST"), 2)],
            created_at_ms: 1_700_000_001_000,
            expires_at_ms: 1_700_000_901_000,
            shipments: Vec::new(),
            refunds: Vec::new(),
            terms: Default::default(),
        };

        let mut ops: Vec<Op> = warehouses.iter().cloned().map(Op::Warehouse).collect();
        ops.extend(channels.iter().cloned().map(Op::Channel));
        ops.extend([default_rule.clone(), sku_rule.clone(), bare_rule.clone()].map(Op::PutRule));
        ops.extend([
            delta("TEE-BLK-M", "WH-EAST", 120, 6),
            delta("TEE-BLK-M", "WH-WEST", 30, 2),
            delta("MUG", "WH-EAST", 8, 1),
            Op::Reservation(Arc::new(reservation.clone())),
            Op::Reservation(Arc::new(held.clone())),
            movement("mv-2"),
            movement("mv-1"),
        ]);
        store.commit(&ops).await.unwrap();

        let s = store.load().await.unwrap();
        assert_eq!(s.warehouses, warehouses, "warehouses in declared order");
        assert_eq!(s.channels, channels, "channels in declared order");

        let mut rules = s.rules.clone();
        rules.sort_by(|a, b| (&a.channel, &a.sku).cmp(&(&b.channel, &b.sku)));
        assert_eq!(rules, vec![bare_rule, default_rule, sku_rule]);

        let mut pools = s.pools.clone();
        pools.sort_by(|a, b| (&a.sku, &a.warehouse).cmp(&(&b.sku, &b.warehouse)));
        let row = |s: &str, w: &str, on_hand, reserved| PoolRow {
            sku: sku(s),
            warehouse: wh(w),
            pool: Pool {
                on_hand,
                reserved,
                version: 1,
            },
        };
        assert_eq!(
            pools,
            vec![
                row("MUG", "WH-EAST", 8, 1),
                row("TEE-BLK-M", "WH-EAST", 120, 6),
                row("TEE-BLK-M", "WH-WEST", 30, 2)
            ]
        );

        let mut reservations = s.reservations.clone();
        reservations.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(reservations, vec![reservation.clone(), held.clone()]);
        assert_eq!(
            store
                .load_reservation(&reservation.channel, &reservation.order_id)
                .await
                .unwrap(),
            Some(reservation)
        );

        let mut movements = s.movements.clone();
        movements.sort_by(|a, b| a.movement_id.cmp(&b.movement_id));
        assert_eq!(
            movements,
            vec![
                MovementRecord {
                    movement_id: "mv-1".into(),
                    fingerprint: "fp-mv-1".into()
                },
                MovementRecord {
                    movement_id: "mv-2".into(),
                    fingerprint: "fp-mv-2".into()
                },
            ]
        );
    }

    pub async fn pool_deltas_accumulate_and_bump_the_version_by_one_each(backend: &dyn Backend) {
        let store = backend.open().await;
        store
            .commit(&[delta("TEE", "WH-EAST", 10, 0)])
            .await
            .unwrap();
        store
            .commit(&[
                delta("TEE", "WH-EAST", 0, 4),
                delta("TEE", "WH-EAST", -1, -1),
            ])
            .await
            .unwrap();
        store
            .commit(&[delta("TEE", "WH-WEST", 0, 0)])
            .await
            .unwrap();

        let s = store.load().await.unwrap();
        assert_eq!(
            pool_of(&s, "TEE", "WH-EAST"),
            Some(Pool {
                on_hand: 9,
                reserved: 3,
                version: 3
            })
        );
        assert_eq!(
            pool_of(&s, "TEE", "WH-WEST"),
            Some(Pool {
                on_hand: 0,
                reserved: 0,
                version: 1
            }),
            "a zero delta still counts as a change"
        );
    }

    pub async fn a_count_sets_on_hand_keeps_reserved_and_bumps_the_version(backend: &dyn Backend) {
        let store = backend.open().await;
        let count = |s: &str, on_hand| Op::PoolSetOnHand {
            sku: sku(s),
            warehouse: wh("WH-EAST"),
            on_hand,
        };
        store
            .commit(&[delta("TEE", "WH-EAST", 10, 7)])
            .await
            .unwrap();
        store.commit(&[count("TEE", 4)]).await.unwrap();
        store.commit(&[count("NEW", 12)]).await.unwrap();

        let s = store.load().await.unwrap();
        assert_eq!(
            pool_of(&s, "TEE", "WH-EAST"),
            Some(Pool {
                on_hand: 4,
                reserved: 7,
                version: 2
            }),
            "a count below reserved is stored as counted"
        );
        assert_eq!(
            pool_of(&s, "NEW", "WH-EAST"),
            Some(Pool {
                on_hand: 12,
                reserved: 0,
                version: 1
            })
        );
    }

    pub async fn a_reservation_is_replaced_whole_by_its_channel_and_order_id(
        backend: &dyn Backend,
    ) {
        let store = backend.open().await;
        let first = worked_reservation();
        store
            .commit(&[Op::Reservation(Arc::new(first.clone()))])
            .await
            .unwrap();

        let mut later = first.clone();
        later.status = Status::Fulfilled;
        later.allocations[0].fulfilled = 3;
        later.allocations[1].released = 2;
        later.shipments.push("ship-3".into());
        later.refunds.clear();
        store
            .commit(&[Op::Reservation(Arc::new(later.clone()))])
            .await
            .unwrap();

        let mut same_order_other_channel = first.clone();
        same_order_other_channel.id = "res-0099".into();
        same_order_other_channel.channel = ch("b2b");
        store
            .commit(&[Op::Reservation(Arc::new(same_order_other_channel.clone()))])
            .await
            .unwrap();

        assert_eq!(
            store
                .load_reservation(&first.channel, &first.order_id)
                .await
                .unwrap(),
            Some(later)
        );
        assert_eq!(
            store
                .load_reservation(&ch("b2b"), &first.order_id)
                .await
                .unwrap(),
            Some(same_order_other_channel)
        );
        assert_eq!(store.load().await.unwrap().reservations.len(), 2);
    }

    pub async fn renaming_keeps_the_declared_position(backend: &dyn Backend) {
        let store = backend.open().await;
        let w = |code: &str, name: &str| {
            Op::Warehouse(Warehouse {
                code: wh(code),
                name: name.into(),
            })
        };
        let c = |code: &str, name: &str| {
            Op::Channel(Channel {
                code: ch(code),
                name: name.into(),
            })
        };
        store
            .commit(&[
                w("WH-B", "B"),
                w("WH-A", "A"),
                c("shopify", "Shopify"),
                c("amazon", "Amazon"),
            ])
            .await
            .unwrap();
        store
            .commit(&[
                w("WH-B", "B renamed"),
                w("WH-C", "C"),
                c("shopify", "Shop"),
                c("b2b", "B2B"),
            ])
            .await
            .unwrap();

        let s = store.load().await.unwrap();
        let warehouses: Vec<_> = s
            .warehouses
            .iter()
            .map(|w| (w.code.as_str(), w.name.as_str()))
            .collect();
        assert_eq!(
            warehouses,
            [("WH-B", "B renamed"), ("WH-A", "A"), ("WH-C", "C")]
        );
        let channels: Vec<_> = s
            .channels
            .iter()
            .map(|c| (c.code.as_str(), c.name.as_str()))
            .collect();
        assert_eq!(
            channels,
            [("shopify", "Shop"), ("amazon", "Amazon"), ("b2b", "B2B")]
        );
    }

    pub async fn a_rule_is_replaced_by_its_key_and_deleted_alone(backend: &dyn Backend) {
        let store = backend.open().await;
        let rule = |channel: &str, s: Option<&str>, fence: Option<i64>| Rule {
            channel: Some(ch(channel)),
            sku: s.map(sku),
            fence,
            ..Rule::default()
        };
        store
            .commit(&[
                Op::PutRule(rule("b2b", None, Some(10))),
                Op::PutRule(rule("b2b", Some("TEE"), Some(20))),
                Op::PutRule(rule("amazon", None, Some(30))),
            ])
            .await
            .unwrap();
        store
            .commit(&[Op::PutRule(rule("b2b", None, None))])
            .await
            .unwrap();
        store
            .commit(&[Op::DeleteRule {
                channel: ch("b2b"),
                sku: Some(sku("TEE")),
            }])
            .await
            .unwrap();
        store
            .commit(&[Op::DeleteRule {
                channel: ch("shopify"),
                sku: None,
            }])
            .await
            .unwrap();

        let mut rules = store.load().await.unwrap().rules;
        rules.sort_by(|a, b| (&a.channel, &a.sku).cmp(&(&b.channel, &b.sku)));
        assert_eq!(
            rules,
            vec![rule("amazon", None, Some(30)), rule("b2b", None, None)]
        );
    }

    pub async fn load_pools_returns_only_the_named_skus(backend: &dyn Backend) {
        let store = backend.open().await;
        store
            .commit(&[
                delta("A", "WH-EAST", 1, 0),
                delta("A", "WH-WEST", 2, 0),
                delta("B", "WH-EAST", 3, 0),
                delta("C", "WH-EAST", 4, 0),
            ])
            .await
            .unwrap();

        let mut rows = store
            .load_pools(&[sku("C"), sku("A"), sku("UNKNOWN")])
            .await
            .unwrap();
        rows.sort_by(|a, b| (&a.sku, &a.warehouse).cmp(&(&b.sku, &b.warehouse)));
        let found: Vec<_> = rows
            .iter()
            .map(|r| (r.sku.as_str(), r.warehouse.as_str(), r.pool.on_hand))
            .collect();
        assert_eq!(
            found,
            [
                ("A", "WH-EAST", 1),
                ("A", "WH-WEST", 2),
                ("C", "WH-EAST", 4)
            ]
        );
        assert!(store.load_pools(&[]).await.unwrap().is_empty());

        let many: Vec<Sku> = (0..1200)
            .map(|i| sku(&format!("S-{i}")))
            .chain([sku("B")])
            .collect();
        let rows = store.load_pools(&many).await.unwrap();
        assert_eq!(rows.len(), 1, "a long SKU list is read whole");
    }

    pub async fn an_empty_commit_changes_nothing(backend: &dyn Backend) {
        let store = backend.open().await;
        store.commit(&[]).await.unwrap();
        let s = store.load().await.unwrap();
        assert!(s.pools.is_empty() && s.movements.is_empty());
    }

    pub async fn a_failed_op_rolls_back_the_whole_commit(backend: &dyn Backend) {
        let store = backend.open().await;
        store
            .commit(&[movement("mv-1"), delta("TEE", "WH-EAST", 10, 0)])
            .await
            .unwrap();
        let before = store.load().await.unwrap();

        let result = store
            .commit(&[
                delta("TEE", "WH-EAST", 5, 0),
                Op::Ledger(ledger_line(
                    "TEE",
                    "WH-EAST",
                    MovementKind::Adjust,
                    5,
                    "mv-2",
                )),
                Op::Warehouse(Warehouse {
                    code: wh("WH-EAST"),
                    name: "East".into(),
                }),
                Op::Reservation(Arc::new(worked_reservation())),
                movement("mv-1"),
                movement("mv-3"),
            ])
            .await;
        assert!(
            result.is_err(),
            "a duplicate movement id must fail the commit"
        );

        let after = store.load().await.unwrap();
        assert_eq!(
            pool_of(&after, "TEE", "WH-EAST"),
            pool_of(&before, "TEE", "WH-EAST")
        );
        assert_eq!(after.movements, before.movements);
        assert!(after.warehouses.is_empty() && after.reservations.is_empty());
        assert!(store.ledger(None, 0, 100).await.unwrap().is_empty());

        store
            .commit(&[movement("mv-3"), delta("TEE", "WH-EAST", 1, 0)])
            .await
            .unwrap();
        let s = store.load().await.unwrap();
        assert_eq!(
            pool_of(&s, "TEE", "WH-EAST"),
            Some(Pool {
                on_hand: 11,
                reserved: 0,
                version: 2
            }),
            "the store takes commits again after a failed one"
        );
    }

    pub async fn the_ledger_is_append_only_and_read_by_sku_after_an_id(backend: &dyn Backend) {
        let store = backend.open().await;
        let a1 = ledger_line("A", "WH-EAST", MovementKind::Adjust, 10, "mv-1");
        let b1 = ledger_line("B", "WH-EAST", MovementKind::Count, 4, "mv-2");
        let mut a2 = ledger_line("A", "WH-WEST", MovementKind::Reserve, 0, "shopify/#1001");
        a2.reserved_delta = 2;
        a2.reserved_after = 2;
        a2.reason = String::new();
        store
            .commit(&[Op::Ledger(a1.clone()), Op::Ledger(b1.clone())])
            .await
            .unwrap();
        store.commit(&[Op::Ledger(a2.clone())]).await.unwrap();

        let all = store.ledger(None, 0, 100).await.unwrap();
        let entries: Vec<_> = all.iter().map(|r| r.entry.clone()).collect();
        assert_eq!(
            entries,
            vec![a1.clone(), b1.clone(), a2.clone()],
            "in commit order"
        );
        assert!(
            all.windows(2).all(|w| w[0].id < w[1].id),
            "ids grow: {all:?}"
        );

        let of_a: Vec<_> = store.ledger(Some(&sku("A")), 0, 100).await.unwrap();
        assert_eq!(
            of_a.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(),
            vec![a1, a2.clone()]
        );
        let after_first = store
            .ledger(Some(&sku("A")), of_a[0].id, 100)
            .await
            .unwrap();
        assert_eq!(after_first, vec![of_a[1].clone()]);
        assert!(store
            .ledger(Some(&sku("A")), of_a[1].id, 100)
            .await
            .unwrap()
            .is_empty());

        let page = store.ledger(None, 0, 2).await.unwrap();
        assert_eq!(page, all[..2].to_vec(), "limit caps the page");
        let next = store.ledger(None, page[1].id, 2).await.unwrap();
        assert_eq!(
            next,
            all[2..].to_vec(),
            "the next page starts after the last id read"
        );

        store.commit(&[Op::Ledger(b1)]).await.unwrap();
        let grown = store.ledger(None, 0, 100).await.unwrap();
        assert_eq!(&grown[..3], &all[..], "earlier lines never change");
        assert!(grown[3].id > all[2].id);
    }

    pub async fn data_survives_closing_and_reopening_the_store(backend: &dyn Backend) {
        let store = backend.open().await;
        store
            .commit(&[
                Op::Warehouse(Warehouse {
                    code: wh("WH-EAST"),
                    name: "East".into(),
                }),
                Op::Channel(Channel {
                    code: ch("shopify"),
                    name: "Shopify".into(),
                }),
                Op::PutRule(Rule {
                    channel: Some(ch("shopify")),
                    buffer: Some(2),
                    ..Rule::default()
                }),
                delta("TEE", "WH-EAST", 10, 3),
                Op::Ledger(ledger_line(
                    "TEE",
                    "WH-EAST",
                    MovementKind::Adjust,
                    10,
                    "mv-1",
                )),
                Op::Reservation(Arc::new(worked_reservation())),
                movement("mv-1"),
            ])
            .await
            .unwrap();
        let before = store.load().await.unwrap();
        let ledger_before = store.ledger(None, 0, 100).await.unwrap();
        drop(store);
        backend.close().await;

        let store = backend.open().await;
        let after = store.load().await.unwrap();
        assert_eq!(after.warehouses, before.warehouses);
        assert_eq!(after.channels, before.channels);
        assert_eq!(after.rules, before.rules);
        assert_eq!(after.pools, before.pools);
        assert_eq!(after.reservations, before.reservations);
        assert_eq!(after.movements, before.movements);
        assert_eq!(store.ledger(None, 0, 100).await.unwrap(), ledger_before);

        store
            .commit(&[delta("TEE", "WH-EAST", 1, 0)])
            .await
            .unwrap();
        let s = store.load().await.unwrap();
        assert_eq!(
            pool_of(&s, "TEE", "WH-EAST"),
            Some(Pool {
                on_hand: 11,
                reserved: 3,
                version: 2
            })
        );
    }

    pub async fn the_writer_commits_queued_jobs_together_and_acknowledges_each(
        backend: &dyn Backend,
    ) {
        const JOBS: usize = 300;
        let store = Recording::new(backend.open().await);
        let (writer, task) = GroupCommit::spawn(store.clone());

        // Hold commits back until every job is queued.
        let held = store.gate.lock().await;
        let plug = writer.enqueue(vec![delta("HOT", "WH-EAST", 0, 0)]);
        store.entered.notified().await;
        let queued = Arc::new(AtomicUsize::new(0));
        let mut callers = Vec::new();
        for i in 0..JOBS {
            let writer = writer.clone();
            let queued = queued.clone();
            callers.push(tokio::spawn(async move {
                let ticket = writer.enqueue(vec![
                    delta("HOT", "WH-EAST", 1, 0),
                    movement(&format!("mv-{i}")),
                ]);
                queued.fetch_add(1, Ordering::SeqCst);
                ticket.wait().await
            }));
        }
        while queued.load(Ordering::SeqCst) < JOBS {
            tokio::task::yield_now().await;
        }
        drop(held);

        plug.wait().await.unwrap();
        for caller in callers {
            caller
                .await
                .unwrap()
                .expect("every job is acknowledged as committed");
        }
        assert_eq!(
            store.commits(),
            vec![1, 2 * JOBS],
            "the queued jobs went in one transaction"
        );

        let s = store.load().await.unwrap();
        assert_eq!(
            pool_of(&s, "HOT", "WH-EAST"),
            Some(Pool {
                on_hand: JOBS as i64,
                reserved: 0,
                version: JOBS as u64 + 1
            })
        );
        assert_eq!(s.movements.len(), JOBS);

        drop(writer);
        task.await.unwrap();
    }

    pub async fn a_failing_job_gets_an_error_while_its_batch_neighbours_commit(
        backend: &dyn Backend,
    ) {
        let store = Recording::new(backend.open().await);
        let (writer, task) = GroupCommit::spawn(store.clone());

        let held = store.gate.lock().await;
        let plug = writer.enqueue(vec![movement("mv-taken")]);
        store.entered.notified().await;
        let before = writer.enqueue(vec![delta("TEE", "WH-EAST", 5, 0), movement("mv-a")]);
        let failing = writer.enqueue(vec![delta("TEE", "WH-EAST", 100, 0), movement("mv-taken")]);
        let after = writer.enqueue(vec![delta("TEE", "WH-EAST", 7, 0), movement("mv-b")]);
        drop(held);

        plug.wait().await.unwrap();
        before
            .wait()
            .await
            .expect("the job before the failing one commits");
        let err = failing
            .wait()
            .await
            .expect_err("a duplicate movement id fails its job");
        assert!(
            err.to_string().contains("movement"),
            "the error says what failed: {err}"
        );
        after
            .wait()
            .await
            .expect("the job after the failing one commits");
        assert_eq!(
            store.commits(),
            vec![1, 6, 2, 2, 2],
            "one batch, then each job alone"
        );

        let s = store.load().await.unwrap();
        assert_eq!(
            pool_of(&s, "TEE", "WH-EAST"),
            Some(Pool {
                on_hand: 12,
                reserved: 0,
                version: 2
            })
        );
        let mut ids: Vec<_> = s.movements.iter().map(|m| m.movement_id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["mv-a", "mv-b", "mv-taken"]);

        drop(writer);
        task.await.unwrap();
    }

    pub async fn a_refused_batchs_jobs_are_retried_each_with_the_channel_events_of_its_own_levels(
        backend: &dyn Backend,
    ) {
        let store = Recording::new(backend.open().await);
        let (writer, task) = GroupCommit::spawn(store.clone());
        let numbering = Arc::new(Numbering::default());
        writer.install(numbering.clone());

        let held = store.gate.lock().await;
        let plug = writer.enqueue(vec![movement("mv-taken")]);
        store.entered.notified().await;
        let job = |ops, sku, published| {
            writer.enqueue_guarded(ops, levels(sku, published), Box::new(Valid))
        };
        let before = job(
            vec![delta("TEE", "WH-EAST", 5, 0), movement("mv-a")],
            "TEE",
            5,
        );
        let failing = job(
            vec![delta("TEE", "WH-EAST", 100, 0), movement("mv-taken")],
            "TEE",
            105,
        );
        let after = job(
            vec![delta("MUG", "WH-EAST", 7, 0), movement("mv-b")],
            "MUG",
            7,
        );
        drop(held);

        plug.wait().await.unwrap();
        before
            .wait()
            .await
            .expect("the job before the failing one commits");
        failing
            .wait()
            .await
            .expect_err("a duplicate movement id fails its job");
        after
            .wait()
            .await
            .expect("the job after the failing one commits");
        assert_eq!(
            store.commits(),
            vec![1, 7, 3, 3, 3],
            "the batch and each retried job carried their channel events"
        );
        assert_eq!(
            *numbering.committed.lock().unwrap(),
            vec![
                vec![(1, "TEE".to_string(), 5)],
                vec![(2, "MUG".to_string(), 7)]
            ],
            "what committed was handed on, numbered without the refused job's gap"
        );
        let stored: Vec<(u64, String, i64)> = store
            .channel_events(&ch("shopify"), 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.sku.to_string(), e.published))
            .collect();
        assert_eq!(
            stored,
            vec![(1, "TEE".to_string(), 5), (2, "MUG".to_string(), 7)],
            "each event was stored by the commit of the job whose levels called for it"
        );

        drop(writer);
        task.await.unwrap();
    }

    pub async fn ops_on_one_pool_apply_in_order_within_one_commit(backend: &dyn Backend) {
        let store = backend.open().await;
        let count = |s: &str, on_hand| Op::PoolSetOnHand {
            sku: sku(s),
            warehouse: wh("WH-EAST"),
            on_hand,
        };
        store
            .commit(&[delta("TEE", "WH-EAST", 50, 5)])
            .await
            .unwrap();
        store
            .commit(&[
                delta("TEE", "WH-EAST", 10, 1),
                count("TEE", 20),
                delta("TEE", "WH-EAST", -3, 2),
                delta("MUG", "WH-EAST", 4, 0),
                count("MUG", 9),
                count("NEW", 7),
                delta("NEW", "WH-EAST", 1, 1),
                delta("OLD", "WH-EAST", 2, 0),
                delta("OLD", "WH-EAST", 3, 1),
            ])
            .await
            .unwrap();

        let s = store.load().await.unwrap();
        let pool = |on_hand, reserved, version| {
            Some(Pool {
                on_hand,
                reserved,
                version,
            })
        };
        assert_eq!(
            pool_of(&s, "TEE", "WH-EAST"),
            pool(17, 8, 4),
            "the count replaces what came before it, not the delta after it"
        );
        assert_eq!(pool_of(&s, "MUG", "WH-EAST"), pool(9, 0, 2));
        assert_eq!(pool_of(&s, "NEW", "WH-EAST"), pool(8, 1, 2));
        assert_eq!(pool_of(&s, "OLD", "WH-EAST"), pool(5, 1, 2));
    }

    pub async fn a_reservation_written_twice_in_one_commit_keeps_its_last_state(
        backend: &dyn Backend,
    ) {
        let store = backend.open().await;
        let held = worked_reservation();
        let mut confirmed = held.clone();
        confirmed.status = Status::Fulfilled;
        confirmed.shipments.push("ship-3".into());
        let mut other = held.clone();
        other.id = "res-other".into();
        other.order_id = order("#1002");
        store
            .commit(&[
                Op::Reservation(Arc::new(held.clone())),
                Op::Reservation(Arc::new(other.clone())),
                Op::Reservation(Arc::new(confirmed.clone())),
            ])
            .await
            .unwrap();
        assert_eq!(
            store
                .load_reservation(&held.channel, &held.order_id)
                .await
                .unwrap(),
            Some(confirmed)
        );
        assert_eq!(
            store
                .load_reservation(&other.channel, &other.order_id)
                .await
                .unwrap(),
            Some(other)
        );
    }

    pub async fn a_movement_id_repeated_within_one_commit_fails_it(backend: &dyn Backend) {
        let store = backend.open().await;
        let result = store
            .commit(&[
                delta("TEE", "WH-EAST", 5, 0),
                movement("mv-1"),
                delta("TEE", "WH-EAST", 5, 0),
                movement("mv-1"),
            ])
            .await;
        assert!(
            result.is_err(),
            "the second use of mv-1 must fail the commit"
        );
        let s = store.load().await.unwrap();
        assert!(s.pools.is_empty() && s.movements.is_empty(), "{s:?}");
    }

    /// 150 rows of a kind are more than one statement of the SQLite store
    /// takes (64): every row lands, in op order, and none of the unused
    /// rows of the last statement.
    pub async fn a_commit_of_more_rows_than_one_statement_takes_keeps_them_all_in_op_order(
        backend: &dyn Backend,
    ) {
        let store = backend.open().await;
        let mut ops: Vec<Op> = (0..150)
            .map(|i| {
                Op::Warehouse(Warehouse {
                    code: wh(&format!("WH-{i:03}")),
                    name: format!("Warehouse {i}"),
                })
            })
            .collect();
        ops.extend((0..150).map(|i| {
            Op::Ledger(ledger_line(
                "TEE",
                "WH-000",
                MovementKind::Adjust,
                i,
                &format!("mv-{i}"),
            ))
        }));
        ops.extend((0..150).map(|i| movement(&format!("mv-{i}"))));
        store.commit(&ops).await.unwrap();

        let s = store.load().await.unwrap();
        let declared: Vec<String> = s.warehouses.iter().map(|w| w.code.to_string()).collect();
        let expected: Vec<String> = (0..150).map(|i| format!("WH-{i:03}")).collect();
        assert_eq!(
            declared, expected,
            "warehouses keep the order they were declared in"
        );
        assert_eq!(s.movements.len(), 150);
        let ledger = store.ledger(None, 0, 1_000).await.unwrap();
        let references: Vec<&str> = ledger.iter().map(|l| l.entry.reference.as_str()).collect();
        let expected: Vec<String> = (0..150).map(|i| format!("mv-{i}")).collect();
        assert_eq!(references, expected, "ledger ids follow the op order");
        assert!(
            ledger.windows(2).all(|w| w[0].id < w[1].id),
            "ids only grow"
        );
    }

    pub async fn rule_changes_within_one_commit_end_as_the_last_one_left_them(
        backend: &dyn Backend,
    ) {
        let store = backend.open().await;
        let rule = |channel: &str, fence: i64| Rule {
            channel: Some(ch(channel)),
            sku: Some(sku("TEE")),
            fence: Some(fence),
            ..Rule::default()
        };
        let delete = |channel: &str| Op::DeleteRule {
            channel: ch(channel),
            sku: Some(sku("TEE")),
        };
        store
            .commit(&[Op::PutRule(rule("amazon", 1)), Op::PutRule(rule("b2b", 1))])
            .await
            .unwrap();
        store
            .commit(&[
                // put, then deleted: gone
                Op::PutRule(rule("amazon", 2)),
                delete("amazon"),
                // deleted, then put twice: the last put
                delete("b2b"),
                Op::PutRule(rule("b2b", 3)),
                Op::PutRule(rule("b2b", 4)),
                // put, deleted, put again: there
                Op::PutRule(rule("shopify", 5)),
                delete("shopify"),
                Op::PutRule(rule("shopify", 6)),
            ])
            .await
            .unwrap();
        let mut rules = store.load().await.unwrap().rules;
        rules.sort_by(|a, b| a.channel.cmp(&b.channel));
        assert_eq!(rules, vec![rule("b2b", 4), rule("shopify", 6)]);
    }

    pub async fn rule_history_is_read_per_rule_or_per_channel_oldest_first(backend: &dyn Backend) {
        let store = backend.open().await;
        let rule = |s: Option<&str>, buffer: i64| Rule {
            channel: Some(ch("b2b")),
            sku: s.map(sku),
            buffer: Some(buffer),
            ..Rule::default()
        };
        let change =
            |at_ms: i64, s: Option<&str>, before: Option<Rule>, after: Option<Rule>| RuleChange {
                at_ms,
                changed_by: "ops@example.com".into(),
                comment: format!("change at {at_ms}"),
                channel: ch("b2b"),
                sku: s.map(sku),
                before,
                after,
            };
        let c1 = change(1, None, None, Some(rule(None, 5)));
        let c2 = change(2, Some("TEE"), None, Some(rule(Some("TEE"), 1)));
        let c3 = change(3, None, Some(rule(None, 5)), Some(rule(None, 7)));
        let c4 = change(4, Some("TEE"), Some(rule(Some("TEE"), 1)), None);
        let mut other = change(5, None, None, Some(rule(None, 2)));
        other.channel = ch("amazon");
        store
            .commit(&[
                Op::RuleChange(Box::new(c1.clone())),
                Op::RuleChange(Box::new(c2.clone())),
                Op::RuleChange(Box::new(other.clone())),
            ])
            .await
            .unwrap();
        store
            .commit(&[
                Op::RuleChange(Box::new(c3.clone())),
                Op::RuleChange(Box::new(c4.clone())),
            ])
            .await
            .unwrap();

        let b2b = ch("b2b");
        assert_eq!(
            store.rule_history(&b2b, None, false).await.unwrap(),
            vec![c1.clone(), c3.clone()],
            "the channel default's history"
        );
        assert_eq!(
            store
                .rule_history(&b2b, Some(&sku("TEE")), false)
                .await
                .unwrap(),
            vec![c2.clone(), c4.clone()]
        );
        assert_eq!(
            store.rule_history(&b2b, None, true).await.unwrap(),
            vec![c1, c2, c3, c4],
            "every rule of the channel, in commit order"
        );
        assert_eq!(
            store.rule_history(&ch("amazon"), None, true).await.unwrap(),
            vec![other]
        );
    }

    pub async fn channel_events_are_paged_by_seq_and_the_newest_per_sku_is_loaded(
        backend: &dyn Backend,
    ) {
        let store = backend.open().await;
        let event = |channel: &str, seq: u64, s: &str, published: i64| ChannelEvent {
            channel: ch(channel),
            seq,
            sku: sku(s),
            published,
            atp: published + 1,
            open: seq as i64 % 3,
            at_ms: 1_700_000_000_000 + seq as i64,
        };
        let shopify: Vec<_> = vec![
            event("shopify", 1, "TEE", 10),
            event("shopify", 2, "MUG", 3),
            event("shopify", 3, "TEE", 9),
        ];
        let amazon = vec![event("amazon", 1, "TEE", 4)];
        store
            .commit(&[
                Op::ChannelEvents(shopify[..2].to_vec()),
                Op::ChannelEvents(amazon.clone()),
            ])
            .await
            .unwrap();
        store
            .commit(&[Op::ChannelEvents(shopify[2..].to_vec())])
            .await
            .unwrap();

        let c = ch("shopify");
        assert_eq!(store.channel_events(&c, 0, 100).await.unwrap(), shopify);
        assert_eq!(
            store.channel_events(&c, 1, 1).await.unwrap(),
            shopify[1..2].to_vec(),
            "after a seq, at most limit"
        );
        assert!(store.channel_events(&c, 3, 100).await.unwrap().is_empty());
        assert!(store.channel_events(&c, 0, 0).await.unwrap().is_empty());

        let published = store.load().await.unwrap().published;
        assert_eq!(
            published,
            vec![amazon[0].clone(), shopify[1].clone(), shopify[2].clone()],
            "the newest event per channel and SKU, by channel then seq"
        );

        let taken = store
            .commit(&[Op::ChannelEvents(vec![event("shopify", 3, "MUG", 1)])])
            .await;
        assert!(taken.is_err(), "a seq is written once per channel");
    }

    fn outbox_entry(reservation: &str, event: OutboxEvent, at_ms: i64, ordered: i64) -> Op {
        Op::Outbox(Box::new(NewOutboxEntry {
            at_ms,
            reservation_id: reservation.to_string(),
            channel: ch("shopify"),
            order_id: order(reservation),
            event,
            lines: vec![OutboxLine {
                warehouse: wh("WH-EAST"),
                sku: sku("TEE"),
                ordered,
                fulfilled: 0,
            }],
            terms: priced_terms(),
        }))
    }

    fn update(id: i64, state: OutboxState, attempts: u32, next_at: i64) -> Op {
        Op::OutboxUpdate(OutboxUpdate {
            id,
            state,
            attempts,
            last_error: if state == OutboxState::Pushed {
                String::new()
            } else {
                format!("attempt {attempts} failed")
            },
            next_attempt_at_ms: next_at,
            at_ms: next_at,
        })
    }

    pub async fn an_outbox_entry_updated_twice_in_one_commit_keeps_its_last_standing(
        backend: &dyn Backend,
    ) {
        let store = backend.open().await;
        store
            .commit(&[
                outbox_entry("#1", OutboxEvent::Confirmed, 10, 2),
                outbox_entry("#2", OutboxEvent::Confirmed, 11, 1),
            ])
            .await
            .unwrap();
        let ids: Vec<i64> = store
            .outbox_list(None, 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        store
            .commit(&[
                update(ids[0], OutboxState::Pending, 1, 20),
                update(ids[1], OutboxState::Dead, 30, 21),
                update(ids[0], OutboxState::Pushed, 2, 22),
            ])
            .await
            .unwrap();
        let standing: Vec<(OutboxState, u32, i64)> = store
            .outbox_list(None, 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.state, e.attempts, e.updated_at_ms))
            .collect();
        assert_eq!(
            standing,
            vec![(OutboxState::Pushed, 2, 22), (OutboxState::Dead, 30, 21)]
        );
    }

    pub async fn outbox_entries_come_due_oldest_first_one_per_reservation(backend: &dyn Backend) {
        let store = backend.open().await;
        store
            .commit(&[
                outbox_entry("A", OutboxEvent::Confirmed, 100, 3),
                outbox_entry("B", OutboxEvent::Confirmed, 101, 1),
                outbox_entry("A", OutboxEvent::Released, 102, 1),
            ])
            .await
            .unwrap();
        let due = store.outbox_due(1_000, 10).await.unwrap();
        let ids: Vec<(String, OutboxEvent)> = due
            .iter()
            .map(|e| (e.entry.reservation_id.clone(), e.entry.event))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("A".to_string(), OutboxEvent::Confirmed),
                ("B".to_string(), OutboxEvent::Confirmed)
            ],
            "A's release waits behind A's confirmation"
        );
        let (a1, b1) = (due[0].id, due[1].id);
        assert_eq!(due[0].entry.lines[0].ordered, 3);
        assert_eq!((due[0].state, due[0].attempts), (OutboxState::Pending, 0));

        // A failed and waits for its retry: A's next entry still waits, and
        // A is not due before its time.
        store
            .commit(&[update(a1, OutboxState::Pending, 1, 5_000)])
            .await
            .unwrap();
        let due = store.outbox_due(1_000, 10).await.unwrap();
        assert_eq!(due.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b1]);
        let due = store.outbox_due(5_000, 10).await.unwrap();
        assert_eq!(due.len(), 2);
        assert_eq!((due[0].id, due[0].attempts), (a1, 1));
        assert_eq!(due[0].last_error, "attempt 1 failed");

        // Once A's first entry is pushed, its release comes due.
        store
            .commit(&[update(a1, OutboxState::Pushed, 2, 5_000)])
            .await
            .unwrap();
        let due = store.outbox_due(5_000, 10).await.unwrap();
        assert_eq!(
            due.iter()
                .map(|e| (e.entry.reservation_id.as_str(), e.entry.event))
                .collect::<Vec<_>>(),
            vec![("B", OutboxEvent::Confirmed), ("A", OutboxEvent::Released)]
        );
        assert_eq!(
            store.outbox_due(5_000, 1).await.unwrap().len(),
            1,
            "at most limit"
        );
    }

    pub async fn outbox_entries_are_listed_by_state_and_counted(backend: &dyn Backend) {
        let store = backend.open().await;
        assert_eq!(store.outbox_stats().await.unwrap(), OutboxStats::default());
        store
            .commit(&[
                outbox_entry("A", OutboxEvent::Confirmed, 100, 1),
                outbox_entry("B", OutboxEvent::Confirmed, 200, 1),
                outbox_entry("C", OutboxEvent::Fulfilled, 300, 1),
            ])
            .await
            .unwrap();
        let all = store.outbox_list(None, 0, 100).await.unwrap();
        assert_eq!(all.len(), 3);
        let (a, b, c) = (all[0].id, all[1].id, all[2].id);
        assert!(a < b && b < c, "ids follow commit order");
        store
            .commit(&[
                update(a, OutboxState::Dead, 12, 400),
                update(b, OutboxState::Pushed, 1, 400),
            ])
            .await
            .unwrap();

        let dead = store
            .outbox_list(Some(OutboxState::Dead), 0, 100)
            .await
            .unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (
                dead[0].id,
                dead[0].attempts,
                dead[0].last_error.as_str(),
                dead[0].updated_at_ms
            ),
            (a, 12, "attempt 12 failed", 400)
        );
        let after_a = store.outbox_list(None, a, 100).await.unwrap();
        assert_eq!(after_a.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b, c]);
        assert_eq!(store.outbox_list(None, 0, 1).await.unwrap().len(), 1);

        let stats = store.outbox_stats().await.unwrap();
        assert_eq!(
            stats,
            OutboxStats {
                pending: 1,
                dead: 1,
                oldest_pending_at_ms: Some(300)
            }
        );
        let picked = store.outbox_entries(&[c, a, 9_999]).await.unwrap();
        assert_eq!(
            picked.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![a, c],
            "the ids that exist, by id"
        );
        assert_eq!(picked[1].entry.event, OutboxEvent::Fulfilled);
    }

    /// One commit of every kind of op at once (the Postgres store writes
    /// all the kinds of rows in one statement): each lands.
    pub async fn a_commit_holding_every_kind_of_op_writes_each_of_them(backend: &dyn Backend) {
        let store = backend.open().await;
        store
            .commit(&[
                delta("MUG", "WH-EAST", 4, 0),
                outbox_entry("#0", OutboxEvent::Confirmed, 10, 1),
            ])
            .await
            .unwrap();
        let earlier = store.outbox_list(None, 0, 10).await.unwrap()[0].id;
        let warehouse = Warehouse {
            code: wh("WH-EAST"),
            name: "East".into(),
        };
        let channel = Channel {
            code: ch("b2b"),
            name: "B2B portal".into(),
        };
        let rule = Rule {
            channel: Some(ch("b2b")),
            sku: Some(sku("TEE")),
            fence: Some(3),
            ..Rule::default()
        };
        let change = RuleChange {
            at_ms: 1_700_000_000_000,
            changed_by: "ops".into(),
            comment: "fence the portal".into(),
            channel: ch("b2b"),
            sku: Some(sku("TEE")),
            before: None,
            after: Some(rule.clone()),
        };
        let reservation = worked_reservation();
        let event = ChannelEvent {
            channel: ch("shopify"),
            seq: 1,
            sku: sku("TEE"),
            published: 7,
            atp: 8,
            open: 1,
            at_ms: 1_700_000_000_000,
        };
        store
            .commit(&[
                Op::Warehouse(warehouse.clone()),
                Op::Channel(channel.clone()),
                Op::PutRule(rule.clone()),
                Op::RuleChange(Box::new(change.clone())),
                delta("TEE", "WH-EAST", 10, 1),
                Op::PoolSetOnHand {
                    sku: sku("MUG"),
                    warehouse: wh("WH-EAST"),
                    on_hand: 9,
                },
                Op::Ledger(ledger_line(
                    "TEE",
                    "WH-EAST",
                    MovementKind::Adjust,
                    10,
                    "mv-1",
                )),
                Op::Reservation(Arc::new(reservation.clone())),
                movement("mv-1"),
                Op::ChannelEvents(vec![event.clone()]),
                outbox_entry("#1", OutboxEvent::Confirmed, 20, 2),
                update(earlier, OutboxState::Pushed, 1, 21),
            ])
            .await
            .unwrap();

        let s = store.load().await.unwrap();
        assert_eq!(s.warehouses, vec![warehouse]);
        assert_eq!(s.channels, vec![channel]);
        assert_eq!(s.rules, vec![rule]);
        assert_eq!(
            pool_of(&s, "TEE", "WH-EAST"),
            Some(Pool {
                on_hand: 10,
                reserved: 1,
                version: 1
            }),
            "a new pool"
        );
        assert_eq!(
            pool_of(&s, "MUG", "WH-EAST"),
            Some(Pool {
                on_hand: 9,
                reserved: 0,
                version: 2
            }),
            "an existing pool, counted"
        );
        assert_eq!(s.reservations, vec![reservation]);
        assert_eq!(
            s.movements
                .iter()
                .map(|m| m.movement_id.as_str())
                .collect::<Vec<_>>(),
            ["mv-1"]
        );
        assert_eq!(s.published, vec![event.clone()]);
        assert_eq!(
            store.channel_events(&ch("shopify"), 0, 10).await.unwrap(),
            vec![event]
        );
        let ledger: Vec<_> = store
            .ledger(None, 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.entry)
            .collect();
        assert_eq!(
            ledger,
            vec![ledger_line(
                "TEE",
                "WH-EAST",
                MovementKind::Adjust,
                10,
                "mv-1"
            )]
        );
        assert_eq!(
            store
                .rule_history(&ch("b2b"), Some(&sku("TEE")), false)
                .await
                .unwrap(),
            vec![change]
        );
        let outbox: Vec<(String, OutboxState, u32)> = store
            .outbox_list(None, 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.entry.order_id.to_string(), e.state, e.attempts))
            .collect();
        assert_eq!(
            outbox,
            vec![
                ("#0".to_string(), OutboxState::Pushed, 1),
                ("#1".to_string(), OutboxState::Pending, 0)
            ],
            "the earlier entry updated, the new one pending"
        );
    }
}
