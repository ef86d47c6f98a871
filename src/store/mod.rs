//! Durability: the [`Store`] trait, its SQLite and Postgres implementations,
//! the group-commit writer, and loading state at start.
//!
//! The store records what the engine decided; it never decides allocation.
//! Pool changes are written as deltas (`on_hand + d`), so a batch that
//! commits after an earlier one failed is still correct on its own.

mod fold;
pub mod lease;
pub mod migrate;
mod postgres;
mod sqlite;
mod sqlite_batch;
mod writer;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{
    Channel, ChannelCode, OrderId, OrderTerms, Pool, Reservation, Rule, Sku, Warehouse,
    WarehouseCode,
};

pub use lease::{Campaign, Elector, Leader, Lease, LeaseTimings, Tenure};
pub use postgres::{redact_url, PostgresStore};
pub use sqlite::{DataDirLock, SqliteStore};
pub use writer::{
    CommitError, GroupCommit, JobGuard, Level, Published, Sequencer, SkuLevels, Ticket,
};

/// Not an API: the SQLite commit's encoding, for `benches/sqlite_writer.rs`,
/// which runs the same statements on a connection of its own.
#[doc(hidden)]
pub use sqlite_batch::{
    encode as encode_sqlite_batch, Encoded as EncodedSqliteBatch, Param as SqliteParam,
};

/// What can go wrong below the engine.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// The connection was lost during COMMIT and the database could not yet
    /// be asked whether it went through (Postgres).
    #[error("commit outcome unknown: {0}")]
    InDoubt(String),
    /// Nothing was attempted: an earlier commit's outcome is still unknown,
    /// and nothing is written or reloaded until the database answers
    /// (Postgres).
    #[error("{0}")]
    Blocked(String),
    /// Nothing was written: this server's tenure as the active one ended
    /// (another server took over, or its lease lapsed), so its commits are
    /// refused, by the fencing step or before it (Postgres).
    #[error("{0}")]
    Fenced(String),
    /// Nothing was attempted: this server's lease lapsed because the
    /// database could not be reached to renew it, and it has not learned
    /// whether another server took over (Postgres).
    #[error("{0}")]
    Isolated(String),
}

/// What a failed commit tells about the store, and about the writes in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The store could not be reached or could not commit now (a lost
    /// connection, no connection in time, a server shutting down, a full
    /// disk): nothing was written, and a retry may succeed.
    Unavailable,
    /// The connection was lost during COMMIT and the outcome is not known:
    /// the writes may have landed.
    InDoubt,
    /// The database refused the data itself (a constraint, a value it
    /// cannot store): nothing was written, and the same writes will be
    /// refused again. A bug: validation at the boundary should have caught
    /// it.
    Rejected,
    /// This server is no longer the active one: nothing was written, and
    /// nothing it commits again will be. The write belongs on the active
    /// server.
    Deposed,
    /// This server could not renew its lease in time (the database is
    /// unreachable) and commits nothing until it has: nothing was written.
    /// It may be the active one again once the database answers, or find
    /// that another server took over.
    Isolated,
}

impl StoreError {
    /// How this error bears on the commit that failed with it.
    pub fn failure(&self) -> Failure {
        match self {
            StoreError::InDoubt(_) => Failure::InDoubt,
            StoreError::Fenced(_) => Failure::Deposed,
            StoreError::Isolated(_) => Failure::Isolated,
            StoreError::Blocked(_) | StoreError::Migrate(_) => Failure::Unavailable,
            StoreError::Corrupt(_) => Failure::Rejected,
            StoreError::Database(e) => match e {
                sqlx::Error::Database(db) if refuses_the_data(db.as_ref()) => Failure::Rejected,
                sqlx::Error::Encode(_) | sqlx::Error::TypeNotFound { .. } => Failure::Rejected,
                _ => Failure::Unavailable,
            },
        }
    }
}

/// Whether the database refused the statement for what it holds rather
/// than for its own state. Postgres: SQLSTATE classes 22 (data exception,
/// e.g. a NUL in text), 23 (integrity constraint) and 42 (a statement it
/// cannot run). SQLite: TOOBIG, CONSTRAINT, MISMATCH, RANGE and their
/// extended codes.
fn refuses_the_data(e: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = e.code() else {
        return false;
    };
    if e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        return ["22", "23", "42"]
            .iter()
            .any(|class| code.starts_with(class));
    }
    // SQLite's result codes: the primary code is the low byte.
    code.parse::<u32>()
        .is_ok_and(|n| matches!(n & 0xff, 18 | 19 | 20 | 25))
}

/// A pool as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRow {
    pub sku: Sku,
    pub warehouse: WarehouseCode,
    pub pool: Pool,
}

/// Why stock moved; the ledger's `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovementKind {
    Reserve,
    Release,
    Expire,
    Fulfill,
    Restock,
    Adjust,
    Count,
}

impl MovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Reserve => "reserve",
            MovementKind::Release => "release",
            MovementKind::Expire => "expire",
            MovementKind::Fulfill => "fulfill",
            MovementKind::Restock => "restock",
            MovementKind::Adjust => "adjust",
            MovementKind::Count => "count",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "reserve" => MovementKind::Reserve,
            "release" => MovementKind::Release,
            "expire" => MovementKind::Expire,
            "fulfill" => MovementKind::Fulfill,
            "restock" => MovementKind::Restock,
            "adjust" => MovementKind::Adjust,
            "count" => MovementKind::Count,
            _ => return None,
        })
    }
}

/// One append-only ledger line: a change to one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub at_ms: i64,
    pub sku: Sku,
    pub warehouse: WarehouseCode,
    pub kind: MovementKind,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    /// Levels after the change, as the engine saw them.
    pub on_hand_after: i64,
    pub reserved_after: i64,
    /// Free text: the movement's reason, the release reason.
    pub reason: String,
    /// What caused it: `channel/order_id`, a movement id, a shipment or refund id.
    pub reference: String,
}

/// A ledger line as read back, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub id: i64,
    pub entry: LedgerEntry,
}

/// An applied stock movement id (AdjustStock/SetStock idempotency), with a
/// fingerprint of its parameters so a reuse with other parameters is caught.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementRecord {
    pub movement_id: String,
    pub fingerprint: String,
}

/// One change of what a channel is told it can sell of one SKU. `seq` grows
/// per channel, without gaps, and survives restarts: watchers resume by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEvent {
    pub channel: ChannelCode,
    pub seq: u64,
    pub sku: Sku,
    pub published: i64,
    pub atp: i64,
    /// Units of this SKU in the channel's own open reservations (API.md
    /// `ChannelStockUpdate.open`): what a channel that counts its own
    /// sold-but-unshipped units needs to set an absolute level.
    pub open: i64,
    pub at_ms: i64,
}

/// One PutRule or DeleteRule, for RuleHistory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleChange {
    pub at_ms: i64,
    pub changed_by: String,
    pub comment: String,
    pub channel: ChannelCode,
    /// None: the channel default.
    pub sku: Option<Sku>,
    /// The rule before the change (None: there was none).
    pub before: Option<Rule>,
    /// The rule after the change (None: deleted).
    pub after: Option<Rule>,
}

/// One write inside a commit. A commit applies a slice of them atomically.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Add to a pool (creating it at zero first); bumps its version by 1.
    PoolDelta {
        sku: Sku,
        warehouse: WarehouseCode,
        on_hand: i64,
        reserved: i64,
    },
    /// A physical count: set `on_hand` (creating the pool); bumps version by 1.
    PoolSetOnHand {
        sku: Sku,
        warehouse: WarehouseCode,
        on_hand: i64,
    },
    Ledger(LedgerEntry),
    /// Insert or replace the whole reservation (keyed by channel and order id);
    /// shared with the engine, which keeps the same reservation in memory.
    Reservation(Arc<Reservation>),
    Movement(MovementRecord),
    Warehouse(Warehouse),
    Channel(Channel),
    /// Insert or replace the rule keyed by (channel, sku or none).
    PutRule(Rule),
    DeleteRule {
        channel: ChannelCode,
        sku: Option<Sku>,
    },
    /// Append to the rule history.
    RuleChange(Box<RuleChange>),
    /// Append level changes to the channels' event logs.
    ChannelEvents(Vec<ChannelEvent>),
    /// Append an entry to the Odoo outbox (its id is assigned by the store).
    Outbox(Box<NewOutboxEntry>),
    /// Record the outcome of a push (or an ops retry) on an outbox entry.
    OutboxUpdate(OutboxUpdate),
}

/// What happened to a reservation that Odoo must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxEvent {
    /// Confirmed: at Reserve with no hold, or by Confirm.
    Confirmed,
    Released,
    Fulfilled,
}

impl OutboxEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxEvent::Confirmed => "confirmed",
            OutboxEvent::Released => "released",
            OutboxEvent::Fulfilled => "fulfilled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "confirmed" => OutboxEvent::Confirmed,
            "released" => OutboxEvent::Released,
            "fulfilled" => OutboxEvent::Fulfilled,
            _ => return None,
        })
    }
}

/// Where an outbox entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxState {
    /// Waiting for its first push or for its next retry.
    Pending,
    Pushed,
    /// Given up on (too many attempts, or a cause no retry can fix) until
    /// ops retry it.
    Dead,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Pushed => "pushed",
            OutboxState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => OutboxState::Pending,
            "pushed" => OutboxState::Pushed,
            "dead" => OutboxState::Dead,
            _ => return None,
        })
    }
}

/// One SKU of one warehouse as Odoo should hold it after an outbox entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboxLine {
    pub warehouse: WarehouseCode,
    pub sku: Sku,
    /// Units still ordered: allocated minus released.
    pub ordered: i64,
    /// Units of those already shipped.
    pub fulfilled: i64,
}

/// An outbox entry as the engine writes it. It carries the whole target
/// state of the reservation, not a delta, so a push converges Odoo to it
/// whatever Odoo already holds, and pushing it twice changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxEntry {
    pub at_ms: i64,
    pub reservation_id: String,
    pub channel: ChannelCode,
    pub order_id: OrderId,
    pub event: OutboxEvent,
    pub lines: Vec<OutboxLine>,
    /// The reservation's prices, currency and customer: what a new sale
    /// order is written with.
    pub terms: OrderTerms,
}

/// An outbox entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub entry: NewOutboxEntry,
    pub state: OutboxState,
    pub attempts: u32,
    /// Why the last attempt failed ('' when none did).
    pub last_error: String,
    pub next_attempt_at_ms: i64,
    pub updated_at_ms: i64,
}

/// The new standing of one outbox entry, written whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxUpdate {
    pub id: i64,
    pub state: OutboxState,
    pub attempts: u32,
    pub last_error: String,
    pub next_attempt_at_ms: i64,
    pub at_ms: i64,
}

/// Counts for the outbox gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub pending: u64,
    pub dead: u64,
    /// When the oldest pending entry was written.
    pub oldest_pending_at_ms: Option<i64>,
}

/// Everything the engine loads at start.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// In declared (first-inserted) order.
    pub warehouses: Vec<Warehouse>,
    /// In declared (first-inserted) order.
    pub channels: Vec<Channel>,
    pub rules: Vec<Rule>,
    /// Empty after [`Store::load_streaming`]: the pools went to its sink.
    pub pools: Vec<PoolRow>,
    pub reservations: Vec<Reservation>,
    pub movements: Vec<MovementRecord>,
    /// The newest event of every (channel, SKU): what each channel was last
    /// told. A channel's next seq follows the highest seq here.
    pub published: Vec<ChannelEvent>,
}

/// Where a load sends the pools as they stream from the store, so that a
/// million SKUs are never also held as a list of rows: at start-up that list
/// was as big as the engine's own state, and its freed pages stayed
/// resident.
pub trait PoolSink: Send {
    /// Called once, before the first pool, with the stored warehouses in
    /// declared order and about how many pools will follow (0: unknown).
    fn expect(&mut self, warehouses: &[Warehouse], pools: usize);
    /// One stored pool. Pools come ordered by SKU, then warehouse.
    fn pool(&mut self, row: PoolRow);
}

impl PoolSink for Vec<PoolRow> {
    fn expect(&mut self, _warehouses: &[Warehouse], pools: usize) {
        self.reserve(pools);
    }

    fn pool(&mut self, row: PoolRow) {
        self.push(row);
    }
}

/// Durable storage. Implementations must make `commit` atomic and durable
/// (on disk) before returning Ok.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Loads the whole state.
    async fn load(&self) -> Result<Snapshot, StoreError>;
    /// Loads the whole state in one read, handing the pools to `pools` as
    /// they stream rather than in the snapshot. The stores stream; this
    /// default (for wrappers and fakes) loads whole and hands them over.
    async fn load_streaming(&self, pools: &mut dyn PoolSink) -> Result<Snapshot, StoreError> {
        let mut snapshot = self.load().await?;
        pools.expect(&snapshot.warehouses, snapshot.pools.len());
        for row in std::mem::take(&mut snapshot.pools) {
            pools.pool(row);
        }
        Ok(snapshot)
    }
    /// Applies `ops` in one transaction, in order.
    async fn commit(&self, ops: &[Op]) -> Result<(), StoreError>;
    /// The stored pools of these SKUs (to reload memory after a failed commit).
    async fn load_pools(&self, skus: &[Sku]) -> Result<Vec<PoolRow>, StoreError>;
    /// One stored reservation.
    async fn load_reservation(
        &self,
        channel: &ChannelCode,
        order_id: &OrderId,
    ) -> Result<Option<Reservation>, StoreError>;
    /// The history of one rule (channel default when `sku` is None), oldest
    /// first; all rules of the channel when `all_skus` is set.
    async fn rule_history(
        &self,
        channel: &ChannelCode,
        sku: Option<&Sku>,
        all_skus: bool,
    ) -> Result<Vec<RuleChange>, StoreError>;
    /// Events of `channel` with seq > `after_seq`, by seq, at most `limit`.
    async fn channel_events(
        &self,
        channel: &ChannelCode,
        after_seq: u64,
        limit: i64,
    ) -> Result<Vec<ChannelEvent>, StoreError>;
    /// Ledger lines with id > `after_id`, oldest first, of one SKU or all.
    async fn ledger(
        &self,
        sku: Option<&Sku>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, StoreError>;
    /// Ledger lines with id > `after_id`, oldest first, of one SKU or all,
    /// of one warehouse or all: at most `limit`. Filters by warehouse over
    /// [`Self::ledger`] reads (the ledger is indexed by SKU).
    async fn movements(
        &self,
        sku: Option<&Sku>,
        warehouse: Option<&WarehouseCode>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        let Some(warehouse) = warehouse else {
            return self.ledger(sku, after_id, limit).await;
        };
        let limit = usize::try_from(limit.max(0)).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut after = after_id;
        while out.len() < limit {
            let chunk = self.ledger(sku, after, 1000).await?;
            let Some(last) = chunk.last() else { break };
            after = last.id;
            let full = chunk.len() == 1000;
            out.extend(
                chunk
                    .into_iter()
                    .filter(|r| &r.entry.warehouse == warehouse),
            );
            if !full {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }
    /// The entries to push now: of each reservation, its oldest pending
    /// entry, when that one is due by `now_ms`. Oldest first, at most `limit`.
    async fn outbox_due(&self, now_ms: i64, limit: i64) -> Result<Vec<OutboxEntry>, StoreError>;
    /// Entries with id > `after_id` in one state (or any), oldest first.
    async fn outbox_list(
        &self,
        state: Option<OutboxState>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError>;
    /// The entries of these ids that exist, by id.
    async fn outbox_entries(&self, ids: &[i64]) -> Result<Vec<OutboxEntry>, StoreError>;
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;
    /// Whether this store's server is still the one that acts: false once a
    /// fenced store's tenure has ended. Work with effects outside the
    /// database (pushes to Odoo, writes to Redis) stops then.
    fn is_current(&self) -> bool {
        true
    }
    /// Where this store's server stands as the active one; a fenced store
    /// answers from its tenure, without asking the database.
    fn standing(&self) -> Standing {
        Standing::Current
    }
}

/// Where a store's server stands as the one that commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// It holds its lease (or needs none): it commits.
    Current,
    /// Its lease lapsed because the database could not be reached in time:
    /// it commits nothing until a renewal gets through. Why, as a sentence.
    Isolated(String),
    /// Its tenure ended (another server took over, or it gave the lease
    /// up): it commits nothing again. Why, as a sentence.
    Deposed(String),
}

impl Standing {
    /// The refusal of a commit (or of a write before it touches memory):
    /// None when the store is current.
    pub fn refusal(self) -> Option<StoreError> {
        match self {
            Standing::Current => None,
            Standing::Isolated(why) => Some(StoreError::Isolated(why)),
            Standing::Deposed(why) => Some(StoreError::Fenced(why)),
        }
    }
}
