//! The in-memory engine: every SKU's pools, the reservations, and the
//! catalog, behind per-SKU locks.
//!
//! A write locks the SKUs it touches (several in sorted order, so two orders
//! never deadlock), asks the domain for a decision, applies it in memory,
//! enqueues the matching store ops while still holding the locks (so the
//! store sees changes in the order memory did), lets the locks go, and
//! answers only once the commit is durable. A failed commit marks its SKUs
//! for reload: no new write on them is admitted until memory has been
//! replaced from the store. The engine talks to no network.

mod admin;
mod clock;
mod erp;
mod error;
mod outbox;
mod reservations;
mod stock;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use dashmap::DashMap as SipDashMap;
use smallvec::SmallVec;
use tokio::sync::{mpsc, Mutex as AsyncMutex};

use crate::domain::{
    Catalog, Channel, ChannelCode, OrderId, Pool, Reservation, Sku, WarehouseCode, BUILTIN_CHANNELS,
};
use crate::store::{
    ChannelEvent, CommitError, GroupCommit, JobGuard, LedgerEntry, MovementKind, Op, PoolRow,
    PoolSink, Sequencer, SkuLevels, Standing, Store, Ticket,
};

pub use admin::{Seed, SimulatedChange};
pub use clock::{Clock, ManualClock, SystemClock};
pub use erp::{AwaitingDelivery, ErpDelivery, ErpStock, FollowedPool};
pub use error::EngineError;
pub use reservations::{
    FulfillCmd, ReleaseCmd, ReservationFilter, ReserveCmd, RestockCmd, Restocked,
};
pub use stock::{AdjustCmd, ChannelAvailability, Level, SetCmd, StockLevel};

/// The engine's maps hash with foldhash: several times faster than the
/// standard SipHash on short keys, and still seeded at random per process,
/// so keys a client chooses (SKUs, order ids) cannot be picked to collide.
type DashMap<K, V> = SipDashMap<K, V, foldhash::fast::RandomState>;

/// A reservation's identity: one order of one channel.
pub type ResKey = (ChannelCode, OrderId);

/// The mutable state of one SKU.
#[derive(Debug, Default)]
struct SkuState {
    /// By warehouse index (declared order); shorter than the warehouse list
    /// when later warehouses never held this SKU.
    pools: Vec<Pool>,
    /// Set when a commit touching this SKU failed: memory may hold a change
    /// the store does not, so writes are refused until it is reloaded.
    needs_reload: bool,
    /// Units in each channel's open reservations (by channel index; shorter
    /// when later channels hold none): `ChannelStockUpdate.open`. Kept with
    /// the pools, under the same lock, so a level and its open figure are
    /// read together.
    open: Vec<i64>,
}

impl SkuState {
    fn pool_mut(&mut self, warehouse: usize) -> &mut Pool {
        if self.pools.len() <= warehouse {
            self.pools.resize(warehouse + 1, Pool::default());
        }
        &mut self.pools[warehouse]
    }

    fn add_open(&mut self, channel: usize, units: i64) {
        if self.open.len() <= channel {
            self.open.resize(channel + 1, 0);
        }
        self.open[channel] += units;
    }
}

/// One SKU's lock, and the two counters the writer and the callers read
/// without it (a hot SKU is locked once per write, to decide).
#[derive(Debug, Default)]
struct SkuCell {
    /// A std mutex: it is never held across an await, and decisions under
    /// it take microseconds.
    state: Mutex<SkuState>,
    /// Commits enqueued for this SKU and not yet answered. Raised under the
    /// lock; lowered without it once answered. A reload waits for zero, so
    /// it never overwrites a change that is still on its way.
    pending: AtomicU32,
    /// Bumped when a commit touching this SKU fails, only under the lock
    /// (so no decision is half made on either side of the bump); read by the
    /// writer without it. A queued commit decided under an older epoch was
    /// decided on the failed change and is not written.
    epoch: AtomicU64,
}

impl SkuCell {
    fn lock(&self) -> MutexGuard<'_, SkuState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A reservation slot. The async mutex is held from decision to commit, so
/// operations on one order are serialized and a failed commit can restore
/// exactly the state before it.
type Slot = Arc<AsyncMutex<Option<Reservation>>>;

/// A change to one pool, as an operation wants it applied.
#[derive(Debug, Clone)]
struct PoolChange {
    sku: Sku,
    warehouse: usize,
    on_hand: i64,
    reserved: i64,
    kind: MovementKind,
    reason: String,
    reference: String,
}

/// What changed without its levels reaching the writer (an admin change,
/// a reload, a write before the sequencer was installed): the publisher
/// recomputes these SKUs' published levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    Skus(Vec<Sku>),
    /// A channel default, a channel or a warehouse changed: every SKU.
    All,
}

/// The engine. Cheap to clone: every clone shares the same state.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    /// Warehouses, channels and rules; replaced whole (copy on write) by the
    /// rare admin change, read by every decision.
    catalog: RwLock<Arc<Catalog>>,
    /// Serializes admin changes from decision to commit.
    admin: AsyncMutex<()>,
    skus: DashMap<Sku, Arc<SkuCell>>,
    reservations: DashMap<ResKey, Slot>,
    /// Applied (or in-flight) stock movement ids and their fingerprints.
    movements: DashMap<String, String>,
    /// HELD reservations by expiry, for the sweeper.
    holds: Mutex<BTreeSet<(i64, ResKey)>>,
    writer: GroupCommit,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Where changes that reach the writer without their levels are
    /// announced (the publisher), once subscribed; and what every channel
    /// was last told, from the store. Written once: a read lock.
    feed: RwLock<Feed>,
    /// Set once the writer has a sequencer: from then on every write hands
    /// the levels it leaves to the writer with its ops, and announces
    /// nothing after its commit.
    sequenced: AtomicBool,
    /// Whether reservation changes write Odoo outbox entries.
    outbox: AtomicBool,
    /// Whether the ERP is the master of physical stock (see `erp`).
    erp_master: AtomicBool,
    /// Per SKU, the reservations that may hold units of it: the ones the
    /// ERP may deliver are among them. Pruned as they are read.
    awaiting: DashMap<Sku, BTreeSet<ResKey>>,
}

#[derive(Default)]
struct Feed {
    tx: Option<mpsc::UnboundedSender<Changed>>,
    published: Vec<ChannelEvent>,
}

/// The engine's side of a load: each SKU's stored pools go straight into
/// its cell as they stream, so a million SKUs are never also held as rows.
#[derive(Default)]
struct PoolLoad {
    skus: DashMap<Sku, Arc<SkuCell>>,
    /// The stored warehouses in declared order. A pool's index among them is
    /// its index in the catalog, which is built from them in this order (the
    /// seed only appends).
    warehouses: Vec<WarehouseCode>,
    /// The SKU whose rows are arriving (rows come ordered by SKU), gathered
    /// here and put in the map once, when the next SKU starts.
    current: Option<(Sku, SkuState)>,
}

impl PoolLoad {
    fn flush(&mut self) {
        let Some((sku, state)) = self.current.take() else {
            return;
        };
        match self.skus.entry(sku) {
            dashmap::Entry::Vacant(slot) => {
                slot.insert(Arc::new(SkuCell {
                    state: Mutex::new(state),
                    ..SkuCell::default()
                }));
            }
            // Rows of one SKU that did not arrive together.
            dashmap::Entry::Occupied(cell) => {
                let mut held = cell.get().lock();
                for (w, pool) in state.pools.into_iter().enumerate() {
                    if pool != Pool::default() {
                        *held.pool_mut(w) = pool;
                    }
                }
            }
        }
    }

    /// Every loaded SKU's cell.
    fn finish(&mut self) -> DashMap<Sku, Arc<SkuCell>> {
        self.flush();
        std::mem::take(&mut self.skus)
    }
}

impl PoolSink for PoolLoad {
    fn expect(&mut self, warehouses: &[crate::domain::Warehouse], pools: usize) {
        self.warehouses = warehouses.iter().map(|w| w.code.clone()).collect();
        // Sized once, so the map never grows through copies of itself.
        let skus = pools / warehouses.len().max(1);
        self.skus = DashMap::with_capacity_and_hasher(skus, Default::default());
    }

    fn pool(&mut self, row: PoolRow) {
        let Some(w) = self.warehouses.iter().position(|c| *c == row.warehouse) else {
            tracing::warn!(sku = %row.sku, warehouse = %row.warehouse, "stock in an undeclared warehouse ignored");
            return;
        };
        if self.current.as_ref().is_none_or(|(sku, _)| *sku != row.sku) {
            self.flush();
            let state = SkuState {
                // Room for every warehouse at once: no regrowth, no holes.
                pools: Vec::with_capacity(self.warehouses.len()),
                ..SkuState::default()
            };
            self.current = Some((row.sku, state));
        }
        if let Some((_, state)) = &mut self.current {
            *state.pool_mut(w) = row.pool;
        }
    }
}

impl Engine {
    /// Loads the whole state from `store`, applies the configured `seed`
    /// (warehouses, channels and default rules not yet stored), and starts
    /// the group-commit writer.
    pub async fn open(
        store: Arc<dyn Store>,
        seed: Seed,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, EngineError> {
        let mut loading = PoolLoad::default();
        let mut snapshot = store
            .load_streaming(&mut loading)
            .await
            .map_err(EngineError::Load)?;
        let (writer, _task) = GroupCommit::spawn(store.clone());

        let mut catalog = Catalog::default();
        for w in snapshot.warehouses {
            catalog.upsert_warehouse(w);
        }
        for c in snapshot.channels {
            catalog.upsert_channel(c);
        }
        for r in snapshot.rules {
            catalog.put_rule(r);
        }
        let seed_ops = admin::seed_ops(&mut catalog, seed, clock.now_ms())?;

        let skus = loading.finish();
        debug_assert!(
            loading
                .warehouses
                .iter()
                .enumerate()
                .all(|(i, code)| catalog.warehouse_index(code) == Some(i)),
            "the catalog keeps the stored warehouses' order"
        );

        let reservations: DashMap<ResKey, Slot> = DashMap::default();
        let mut holds = BTreeSet::new();
        let awaiting: DashMap<Sku, BTreeSet<ResKey>> = DashMap::default();
        for r in &snapshot.reservations {
            let Some(c) = catalog.channel_index(&r.channel) else {
                continue;
            };
            for a in r.allocations.iter().filter(|a| a.open() > 0) {
                skus.entry(a.sku.clone())
                    .or_default()
                    .lock()
                    .add_open(c, a.open());
            }
        }
        for r in snapshot.reservations {
            let key = (r.channel.clone(), r.order_id.clone());
            if r.status == crate::domain::Status::Held {
                holds.insert((r.expires_at_ms, key.clone()));
            }
            for a in r.allocations.iter().filter(|a| a.held() > 0) {
                awaiting
                    .entry(a.sku.clone())
                    .or_default()
                    .insert(key.clone());
            }
            reservations.insert(key, Arc::new(AsyncMutex::new(Some(r))));
        }
        let movements = std::mem::take(&mut snapshot.movements)
            .into_iter()
            .map(|m| (m.movement_id, m.fingerprint))
            .collect();

        let engine = Engine {
            inner: Arc::new(Inner {
                catalog: RwLock::new(Arc::new(catalog)),
                admin: AsyncMutex::new(()),
                skus,
                reservations,
                movements,
                holds: Mutex::new(holds),
                writer,
                store,
                clock,
                feed: RwLock::new(Feed {
                    tx: None,
                    published: snapshot.published,
                }),
                sequenced: AtomicBool::new(false),
                outbox: AtomicBool::new(false),
                erp_master: AtomicBool::new(false),
                awaiting,
            }),
        };
        if !seed_ops.is_empty() {
            engine
                .inner
                .writer
                .enqueue(seed_ops)
                .wait()
                .await
                .map_err(EngineError::Unavailable)?;
        }
        Ok(engine)
    }

    /// Subscribes the (single) publisher to changes without levels of
    /// their own; returns the feed and what every channel was last told, as
    /// stored.
    pub fn subscribe(&self) -> (mpsc::UnboundedReceiver<Changed>, Vec<ChannelEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut feed = self.inner.feed.write().unwrap_or_else(|p| p.into_inner());
        feed.tx = Some(tx);
        (rx, std::mem::take(&mut feed.published))
    }

    /// Installs the writer's sequencer: from now on each write's levels
    /// are numbered and stored in its own commit.
    pub fn sequence_with(&self, sequencer: Arc<dyn Sequencer>) {
        self.inner.writer.install(sequencer);
        self.inner.sequenced.store(true, Ordering::SeqCst);
    }

    /// Queues the current levels of `skus` for the sequencer, without any
    /// write. Each chunk is read and queued under its SKUs' locks, so it
    /// sits in the queue where memory's order puts it; SKUs waiting for a
    /// reload are left out (the reload announces them). A queued chunk is
    /// dropped if a commit it was read after fails first.
    pub fn publish_levels(&self, skus: &[Sku]) -> Vec<Ticket> {
        let mut sorted = skus.to_vec();
        sorted.sort();
        sorted.dedup();
        sorted
            .chunks(256)
            .filter_map(|chunk| {
                let cells: Vec<Arc<SkuCell>> = chunk.iter().map(|s| self.cell(s, false)).collect();
                let guards: Vec<_> = cells.iter().map(|c| c.lock()).collect();
                let levels = self.levels_locked(chunk, &guards);
                if levels.is_empty() {
                    return None;
                }
                let epochs = cells
                    .iter()
                    .map(|c| (c.clone(), c.epoch.load(Ordering::SeqCst)))
                    .collect();
                let ticket = self.inner.writer.enqueue_guarded(
                    Vec::new(),
                    levels,
                    Box::new(ReadGuard(epochs)),
                );
                drop(guards);
                Some(ticket)
            })
            .collect()
    }

    /// Every channel's levels of the locked `skus` that do not wait for a
    /// reload, with the catalog in force now.
    fn levels_locked(&self, skus: &[Sku], guards: &[MutexGuard<'_, SkuState>]) -> Vec<SkuLevels> {
        let catalog = self.catalog();
        let at_ms = self.now_ms();
        skus.iter()
            .zip(guards)
            .filter(|(_, g)| !g.needs_reload)
            .map(|(sku, g)| SkuLevels {
                sku: sku.clone(),
                levels: stock::channel_levels(&catalog, sku, &g.pools, &g.open),
                at_ms,
            })
            .collect()
    }

    fn notify(&self, changed: Changed) {
        self.notify_with(|| changed);
    }

    /// [`Self::notify`], building the change only when a publisher listens.
    fn notify_with(&self, changed: impl FnOnce() -> Changed) {
        let feed = self.inner.feed.read().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = &feed.tx {
            let _ = tx.send(changed());
        }
    }

    /// Commits records of the edges (outbox updates) through the same
    /// writer; they change no stock.
    pub fn record(&self, ops: Vec<Op>) -> Ticket {
        self.inner.writer.enqueue(ops)
    }

    /// The current catalog snapshot.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.inner
            .catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The engine's clock, in ms since the Unix epoch.
    pub fn now(&self) -> i64 {
        self.now_ms()
    }

    /// The SKU's cell, created when `create` (a first stock movement).
    fn cell(&self, sku: &Sku, create: bool) -> Arc<SkuCell> {
        if let Some(c) = self.inner.skus.get(sku) {
            return c.clone();
        }
        if create {
            self.inner.skus.entry(sku.clone()).or_default().clone()
        } else {
            Arc::new(SkuCell::default())
        }
    }

    /// Whether the SKU has a cell (it held stock, or a movement on it is
    /// under way).
    fn is_known(&self, sku: &Sku) -> bool {
        self.inner.skus.contains_key(sku)
    }

    /// Copies of one SKU's pools (empty when it never held stock).
    fn pools_of(&self, sku: &Sku) -> Vec<Pool> {
        self.inner
            .skus
            .get(sku)
            .map(|c| c.lock().pools.clone())
            .unwrap_or_default()
    }

    /// Copies of one SKU's pools and its open units per channel index.
    fn pools_and_open(&self, sku: &Sku) -> (Vec<Pool>, Vec<i64>) {
        self.inner
            .skus
            .get(sku)
            .map(|c| {
                let g = c.lock();
                (g.pools.clone(), g.open.clone())
            })
            .unwrap_or_default()
    }

    /// Counts `deltas` (from [`open_deltas`], a reservation of `channel`)
    /// in that channel's open units of each locked SKU.
    fn track_open(
        skus: &[Sku],
        guards: &mut [MutexGuard<'_, SkuState>],
        channel: usize,
        deltas: &[(Sku, i64)],
    ) {
        for (sku, delta) in deltas {
            let i = skus
                .binary_search(sku)
                .expect("open change on a locked SKU");
            guards[i].add_open(channel, *delta);
        }
    }

    /// Open units per channel index of `skus`, counted from the reservations
    /// in memory (after a reload: the counters may hold a failed change).
    /// Each reservation's lock is taken, so a reservation being restored
    /// after a failed commit is read once restored.
    async fn open_from_reservations(&self, skus: &[Sku]) -> Vec<Vec<i64>> {
        let catalog = self.catalog();
        let slots: Vec<Slot> = self
            .inner
            .reservations
            .iter()
            .map(|e| e.value().clone())
            .collect();
        let mut out = vec![Vec::new(); skus.len()];
        for slot in slots {
            let guard = slot.lock().await;
            let Some(r) = guard.as_ref() else { continue };
            let Some(c) = catalog.channel_index(&r.channel) else {
                continue;
            };
            for a in r.allocations.iter().filter(|a| a.open() > 0) {
                if let Ok(i) = skus.binary_search(&a.sku) {
                    let open: &mut Vec<i64> = &mut out[i];
                    if open.len() <= c {
                        open.resize(c + 1, 0);
                    }
                    open[c] += a.open();
                }
            }
        }
        out
    }

    /// Every SKU that ever held stock, sorted. A SKU whose only movement
    /// failed to commit has no pools and is left out.
    pub fn skus(&self) -> Vec<Sku> {
        let mut v: Vec<Sku> = self
            .inner
            .skus
            .iter()
            .filter(|e| !e.value().lock().pools.is_empty())
            .map(|e| e.key().clone())
            .collect();
        v.sort();
        v
    }

    /// Number of reservations in memory.
    pub fn reservation_count(&self) -> usize {
        self.inner.reservations.len()
    }

    /// Applies `changes` to the locked pools and builds the ops that record
    /// them, the ledger lines dated `at_ms` (read under the locks, so a
    /// SKU's ledger is dated in the order its changes were made). `guards`
    /// are the locked SKUs, `skus` their codes, both sorted.
    fn apply_changes(
        catalog: &Catalog,
        at_ms: i64,
        skus: &[Sku],
        guards: &mut [MutexGuard<'_, SkuState>],
        changes: impl IntoIterator<Item = PoolChange>,
        ops: &mut Vec<Op>,
    ) {
        for ch in changes {
            let i = skus.binary_search(&ch.sku).expect("change on a locked SKU");
            let pool = guards[i].pool_mut(ch.warehouse);
            // A shipment after a short count cannot take on_hand below 0:
            // the ledger records what was actually taken.
            let on_hand = ch.on_hand.max(-pool.on_hand.max(0));
            pool.on_hand += on_hand;
            pool.reserved += ch.reserved;
            pool.version += 1;
            let warehouse = catalog.warehouses[ch.warehouse].code.clone();
            ops.push(Op::PoolDelta {
                sku: ch.sku.clone(),
                warehouse: warehouse.clone(),
                on_hand,
                reserved: ch.reserved,
            });
            ops.push(Op::Ledger(LedgerEntry {
                at_ms,
                sku: ch.sku.clone(),
                warehouse,
                kind: ch.kind,
                on_hand_delta: on_hand,
                reserved_delta: ch.reserved,
                on_hand_after: pool.on_hand,
                reserved_after: pool.reserved,
                reason: ch.reason,
                reference: ch.reference,
            }));
        }
    }

    /// Locks `cells` (already sorted by SKU) and refuses when one of them
    /// waits for a reload, or when this server may not commit now (its
    /// lease lapsed or was taken over): refused here, before memory
    /// changes, a write leaves nothing to reload.
    fn lock_all<'a>(
        &self,
        skus: &[Sku],
        cells: &'a [Arc<SkuCell>],
    ) -> Result<SmallVec<[MutexGuard<'a, SkuState>; 4]>, EngineError> {
        if let Some(refused) = self.inner.store.standing().refusal() {
            return Err(EngineError::Unavailable(CommitError::new(&refused)));
        }
        let guards: SmallVec<[_; 4]> = cells.iter().map(|c| c.lock()).collect();
        if let Some(i) = guards.iter().position(|g| g.needs_reload) {
            return Err(EngineError::Reloading(skus[i].clone()));
        }
        Ok(guards)
    }

    /// Enqueues `ops` while the SKU locks are held and counts the commit as
    /// pending on each SKU. The commit is written only if no earlier commit
    /// on these SKUs fails first. Once a sequencer is installed, the levels
    /// the locked SKUs are left at go with it, so their channel events are
    /// stored in the same commit.
    fn enqueue_locked(
        &self,
        skus: &[Sku],
        cells: &[Arc<SkuCell>],
        guards: &mut [MutexGuard<'_, SkuState>],
        ops: Vec<Op>,
    ) -> Ticket {
        let mut epochs = SmallVec::with_capacity(cells.len());
        for (cell, _locked) in cells.iter().zip(guards.iter_mut()) {
            cell.pending.fetch_add(1, Ordering::SeqCst);
            epochs.push((cell.clone(), cell.epoch.load(Ordering::SeqCst)));
        }
        let levels = if self.inner.sequenced.load(Ordering::SeqCst) {
            self.levels_locked(skus, guards)
        } else {
            Vec::new()
        };
        self.inner
            .writer
            .enqueue_guarded(ops, levels, Box::new(EpochGuard(epochs)))
    }

    /// Runs a write to its end, whether or not the caller still waits. A
    /// caller that stops waiting (a client that cancels, or whose deadline
    /// passes, drops the request) does not cut the write short: what
    /// follows its commit (the pending count, the reload after a failure,
    /// the slot restored, the hold tracked, the publish) always runs, so
    /// memory never keeps a change the store refused. The write runs on
    /// the caller's task and moves to a task of its own only if the caller
    /// leaves.
    async fn to_completion<T, F, Fut>(&self, work: F) -> Result<T, EngineError>
    where
        F: FnOnce(Engine) -> Fut,
        Fut: std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
        T: Send + 'static,
    {
        Finish(Some(Box::pin(work(self.clone())))).await
    }

    /// Waits for a ticket enqueued by [`Self::enqueue_locked`] on `skus`; on
    /// failure marks them for reload and starts the reload.
    async fn settle(
        &self,
        skus: &[Sku],
        cells: &[Arc<SkuCell>],
        ticket: Ticket,
    ) -> Result<(), EngineError> {
        let result = ticket.wait().await;
        for c in cells {
            if result.is_err() {
                c.lock().needs_reload = true;
            }
            c.pending.fetch_sub(1, Ordering::SeqCst);
        }
        match result {
            Ok(()) => {
                // With a sequencer the commit carried the levels.
                if !self.inner.sequenced.load(Ordering::SeqCst) {
                    self.notify_with(|| Changed::Skus(skus.to_vec()));
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, skus = ?skus, "commit failed; reloading the SKUs from the store");
                let engine = self.clone();
                let skus = skus.to_vec();
                tokio::spawn(async move { engine.reload(skus).await });
                Err(EngineError::Unavailable(e))
            }
        }
    }

    /// Replaces the memory of those of `skus` that wait for a reload with
    /// what the store holds, once no commit on them is in flight. Retries
    /// while the store is unreachable. Several reloads of one SKU may run
    /// (one per failed commit): the first replaces memory, and a reload
    /// whose read predates a later failure on the SKU reads again, so no
    /// reload ever writes back rows older than memory.
    async fn reload(&self, skus: Vec<Sku>) {
        let cells: Vec<Arc<SkuCell>> = skus.iter().map(|s| self.cell(s, true)).collect();
        let mut backoff = Duration::from_millis(5);
        loop {
            // The epoch of each SKU still waiting; none left: done.
            let epochs: Option<Vec<Option<u64>>> = {
                let guards: Vec<_> = cells.iter().map(|c| c.lock()).collect();
                (!cells.iter().any(|c| c.pending.load(Ordering::SeqCst) > 0)).then(|| {
                    guards
                        .iter()
                        .zip(&cells)
                        .map(|(g, c)| g.needs_reload.then(|| c.epoch.load(Ordering::SeqCst)))
                        .collect()
                })
            };
            let Some(epochs) = epochs else {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            };
            if epochs.iter().all(Option::is_none) {
                return;
            }
            let rows = match self.inner.store.load_pools(&skus).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::chain(&e), "reload failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(reservations::RETRY_MAX);
                    continue;
                }
            };
            let open = self.open_from_reservations(&skus).await;
            let catalog = self.catalog();
            let mut guards: Vec<_> = cells.iter().map(|c| c.lock()).collect();
            let unchanged = guards.iter().zip(&cells).zip(&epochs).all(|((g, c), e)| {
                c.pending.load(Ordering::SeqCst) == 0
                    && e.is_none_or(|e| g.needs_reload && c.epoch.load(Ordering::SeqCst) == e)
            });
            if !unchanged {
                continue;
            }
            let reloading: Vec<bool> = epochs.iter().map(Option::is_some).collect();
            for ((g, open), _) in guards
                .iter_mut()
                .zip(open)
                .zip(&reloading)
                .filter(|(_, r)| **r)
            {
                g.pools.clear();
                g.open = open;
            }
            for row in rows {
                let (Ok(i), Some(w)) = (
                    skus.binary_search(&row.sku),
                    catalog.warehouse_index(&row.warehouse),
                ) else {
                    continue;
                };
                if reloading[i] {
                    *guards[i].pool_mut(w) = row.pool;
                }
            }
            for (g, _) in guards.iter_mut().zip(&reloading).filter(|(_, r)| **r) {
                g.needs_reload = false;
            }
            drop(guards);
            tracing::info!(skus = ?skus, "SKUs reloaded from the store");
            self.notify(Changed::Skus(skus));
            return;
        }
    }

    /// Whether this engine's server still acts on its memory: false once
    /// its store's tenure as the active server has ended (another server
    /// took over, or the lease lapsed). Work with effects beyond the store
    /// checks it first.
    pub fn is_current(&self) -> bool {
        self.inner.store.is_current()
    }

    /// Where this engine's server stands: current, isolated (its lease
    /// lapsed; writes are refused, memory kept) or deposed.
    pub fn standing(&self) -> Standing {
        self.inner.store.standing()
    }

    /// Waits while this server is isolated: true once it is current again,
    /// false once it is deposed. Background work with effects beyond the
    /// store pauses on it rather than stopping.
    pub async fn until_current(&self) -> bool {
        loop {
            match self.inner.store.standing() {
                Standing::Current => return true,
                Standing::Deposed(_) => return false,
                Standing::Isolated(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Whether every SKU's memory matches the store (no reload pending).
    pub fn is_consistent(&self) -> bool {
        self.inner.skus.iter().all(|c| !c.lock().needs_reload)
    }
}

/// How a reservation's open units (allocated, not yet fulfilled or
/// released) moved per SKU from `before` (None: a new reservation) to
/// `after`, leaving out the SKUs where they did not. Counted from the
/// reservation rather than from the pool deltas: with the ERP as master a
/// channel's Fulfill closes units without moving a pool, and the ERP's
/// delivery moves a pool for units already closed.
fn open_deltas(before: Option<&Reservation>, after: &Reservation) -> Vec<(Sku, i64)> {
    let mut deltas: Vec<(Sku, i64)> = Vec::new();
    let mut add = |sku: &Sku, units: i64| match deltas.iter_mut().find(|(s, _)| s == sku) {
        Some((_, d)) => *d += units,
        None => deltas.push((sku.clone(), units)),
    };
    for a in &after.allocations {
        add(&a.sku, a.open());
    }
    for a in before.map(|b| b.allocations.as_slice()).unwrap_or_default() {
        add(&a.sku, -a.open());
    }
    deltas.retain(|(_, d)| *d != 0);
    deltas
}

/// The SKU epochs a queued commit was decided under (inline for the few
/// SKUs of one order).
struct EpochGuard(SmallVec<[(Arc<SkuCell>, u64); 2]>);

impl JobGuard for EpochGuard {
    fn still_valid(&self) -> bool {
        self.0
            .iter()
            .all(|(cell, epoch)| cell.epoch.load(Ordering::SeqCst) == *epoch)
    }

    fn failed(&self) {
        for (cell, _) in &self.0 {
            let mut g = cell.lock();
            cell.epoch.fetch_add(1, Ordering::SeqCst);
            g.needs_reload = true;
        }
    }
}

/// The SKU epochs levels were read under: a read of memory that held a
/// change which then failed to commit is not published. Its own failure
/// changes nothing in memory.
struct ReadGuard(Vec<(Arc<SkuCell>, u64)>);

impl JobGuard for ReadGuard {
    fn still_valid(&self) -> bool {
        self.0
            .iter()
            .all(|(cell, epoch)| cell.epoch.load(Ordering::SeqCst) == *epoch)
    }

    fn failed(&self) {}
}

/// A channel code from the built-in list (always valid).
fn builtin_channels() -> impl Iterator<Item = Channel> {
    BUILTIN_CHANNELS.iter().map(|c| Channel {
        code: ChannelCode::parse(*c).expect("built-in channel codes are valid"),
        name: c.to_string(),
    })
}

/// A future finished on a task of its own if it is dropped before it is
/// done: see [`Engine::to_completion`].
struct Finish<F: std::future::Future + Send + 'static>(Option<std::pin::Pin<Box<F>>>)
where
    F::Output: Send;

impl<F> std::future::Future for Finish<F>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        // Taken out while polled: a write that panics is not finished again.
        let mut work = self
            .0
            .take()
            .expect("a Finish is not polled after it is done");
        match work.as_mut().poll(cx) {
            std::task::Poll::Ready(out) => std::task::Poll::Ready(out),
            std::task::Poll::Pending => {
                self.0 = Some(work);
                std::task::Poll::Pending
            }
        }
    }
}

impl<F> Drop for Finish<F>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send,
{
    fn drop(&mut self) {
        if let Some(work) = self.0.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    work.await;
                });
            }
        }
    }
}
