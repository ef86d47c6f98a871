//! The production store: Postgres through sqlx (`--database-url postgres://…`).
//!
//! It owns the connection pool, its schema (`migrations/postgres`, the same
//! tables as SQLite in Postgres types) and the translation of a batch of ops
//! into a few array statements. It writes what the engine decided and reads
//! it back; it never decides allocation, and it does not re-validate what the
//! domain already checked. Rows map to domain types with the SQLite store's
//! code, so both stores read the same data the same way.
//!
//! Two things differ from SQLite because the database is across a network:
//!
//! - A batch costs three round trips whatever it holds: `BEGIN` with the
//!   fencing step, the writers' lock and the batch's id; one statement
//!   writing every kind of row (pools, ledger lines, reservations,
//!   movements, events, rule history, outbox), each kind taking its rows as
//!   arrays through `UNNEST`; `COMMIT`. Commits run on a connection of
//!   their own, kept from one to the next, so that the pool's checks of a
//!   connection handed out and given back cost no round trip.
//! - When the connection is lost during `COMMIT`, whether the batch committed
//!   is unknown. Each batch writes a random id into `commits` first; the
//!   store asks another connection whether that id exists and answers
//!   exactly (see [`PostgresStore::commit`]).
//!
//! Several servers may share the database (high availability): a server's
//! store is [`PostgresStore::fenced`] by the lease it holds, and the first
//! statement of each of its commits is the fencing step (`stockpool_fence`,
//! see [`super::lease`] for why a deposed server can then never commit after
//! its successor took over).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection;
use tokio_stream::StreamExt;
use uuid::Uuid;

use super::fold::{fold_pools, PoolFold};
use super::lease::{Elector, LeaseTimings, Tenure};
use super::sqlite::{
    code_of, corrupt, now_ms, to_json, EventRecord, LedgerRecord, OutboxRecord, PoolDecoder,
    PoolRecord, ReservationRecord, RuleChangeRecord, RuleRecord,
};
use super::{
    ChannelEvent, LedgerRow, MovementRecord, Op, OutboxEntry, OutboxState, OutboxStats, PoolRow,
    PoolSink, RuleChange, Snapshot, Standing, Store, StoreError,
};
use crate::domain::{Channel, ChannelCode, OrderId, Reservation, Sku, Warehouse, WarehouseCode};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// The tests' database-per-test helper, shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/support/pg.rs"]
mod test_pg;

/// Connections in the pool: the writer uses one at a time; loads, ledger
/// pages and reloads after a failed commit use the others.
const MAX_CONNECTIONS: u32 = 8;
/// How long a commit or read waits for a connection, connecting included.
/// While Postgres is unreachable, callers learn it within about this long
/// instead of queueing behind a dead server.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a single statement may run (set on every connection). A commit
/// stuck on a lock fails rather than holding the writer indefinitely.
const STATEMENT_TIMEOUT: &str = "5s";
/// How long a commit waits for the server to answer its statements, and
/// then its `COMMIT`: a little more than [`STATEMENT_TIMEOUT`], after which
/// a server that is still there has answered. A connection whose network
/// went silent (no reset, no answer) would otherwise hold the writer until
/// TCP gives up, many minutes later. No answer to `COMMIT` is an unknown
/// outcome, settled as a lost answer is.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(6);
/// `load()` streams every pool in one statement: millions of rows may take
/// longer than [`STATEMENT_TIMEOUT`], so its transaction raises the limit.
const LOAD_STATEMENT_TIMEOUT: &str = "10min";
/// How long a commit whose `COMMIT` failed keeps asking whether it went
/// through before it reports the outcome as unknown. A reachable server
/// answers in milliseconds; the budget stays under a second so that its
/// callers, too, learn of an outage within about a second (an unknown
/// outcome is then settled by the next commit or reload).
const OUTCOME_BUDGET: Duration = Duration::from_millis(800);
/// How long a later call spends asking again about a commit whose outcome
/// is still unknown, before it gives up for this call.
const RECHECK_BUDGET: Duration = Duration::from_secs(1);
/// A kept commit connection idle longer than this is pinged before the
/// next commit uses it (see `PostgresStore::prepare`). Under load commits
/// follow each other far closer; a quiet server pays a round trip it
/// does not notice.
const IDLE_PING: Duration = Duration::from_millis(100);
/// Every this many commits, `commits` rows older than [`PRUNE_AFTER`] are
/// deleted in the same transaction (the first commit prunes too).
const PRUNE_EVERY: u64 = 1024;
/// `commits` rows are only read within seconds of their commit; an hour is a
/// wide margin.
const PRUNE_AFTER: &str = "1 hour";
/// Transaction-level advisory lock taken by every commit ("STOCKPOL"). It
/// serializes writers, so ledger and rule-history ids are handed out in
/// commit order even if a second instance writes to the same database.
const COMMIT_LOCK: i64 = 0x5354_4f43_4b50_4f4c;
/// The SQLSTATE `stockpool_fence` fails with when the epoch moved on.
const FENCED: &str = "SPF01";

/// A Postgres database.
pub struct PostgresStore {
    pool: PgPool,
    /// For the one-off connections that ask about a commit's outcome: they
    /// must not wait behind (or reuse) the pool's possibly broken ones.
    options: PgConnectOptions,
    /// A commit whose outcome was not known when it returned, or a batch
    /// found committed after it was reported failed.
    doubt: tokio::sync::Mutex<Doubt>,
    /// Mirrors `doubt != Clear`, so reads skip the lock in the common case.
    in_doubt: AtomicBool,
    /// Commits begun, to prune `commits` every [`PRUNE_EVERY`].
    commits: AtomicU64,
    /// The connection commits are written on, kept from one commit to the
    /// next outside the pool: a connection taken from the pool costs a
    /// round trip before it is handed out and another when it comes back
    /// (sqlx pings it both times). Never left inside a transaction: a
    /// commit that cannot end its transaction drops it. None until the
    /// first commit, and after one that dropped it.
    writer: tokio::sync::Mutex<Option<Kept>>,
    /// The lease's timings (its `ttl` bounds how long a transaction may sit
    /// idle on any connection of the pool).
    timings: LeaseTimings,
    /// A server's store: the lease whose epoch every commit checks first.
    /// None (tests, tools): commits are not fenced.
    tenure: Option<Tenure>,
}

/// What the store knows about a batch it reported as failed.
#[derive(Debug, Default)]
enum Doubt {
    #[default]
    Clear,
    /// The `COMMIT` of this batch was lost and the database could not be
    /// asked in time. Nothing else is written, and reads that reload memory
    /// are refused, until it can be asked: a retry of part of the batch
    /// would apply it twice if it did commit, and memory reloaded before it
    /// finished could miss it.
    Unknown { id: Uuid, ops: Vec<Op> },
    /// The batch turned out to have committed after all. The writer retries
    /// a failed batch job by job, in order; each retried job is the next run
    /// of the batch's ops (stale jobs may be skipped) and is already written,
    /// so it is acknowledged without writing it again. `next` is where the
    /// following run may start; a commit that is not such a run ends this.
    Committed { ops: Vec<Op>, next: usize },
}

/// What the database says about one batch id.
enum Outcome {
    Committed,
    NotCommitted,
    /// Why it could not be asked.
    Unknown(String),
}

impl PostgresStore {
    /// Connects to `url`, runs the migrations and keeps a pool. Every
    /// connection sets `statement_timeout` and `synchronous_commit = on`
    /// (the default, made explicit: an acknowledged write must be on disk).
    /// Errors never contain the password.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, LeaseTimings::default()).await
    }

    /// [`Self::connect`] for servers that elect an active one with these
    /// lease timings. Every connection also sets
    /// `idle_in_transaction_session_timeout` to the lease: a transaction
    /// left open by a stopped or cut-off process is ended by the database
    /// within a lease, so it cannot hold up its successor's takeover.
    pub async fn connect_with(url: &str, timings: LeaseTimings) -> Result<Self, StoreError> {
        let idle = format!("{}ms", timings.ttl.as_millis().max(1));
        let options = PgConnectOptions::from_str(url)?
            .application_name("stockpool")
            .options([
                ("statement_timeout", STATEMENT_TIMEOUT),
                ("synchronous_commit", "on"),
                ("idle_in_transaction_session_timeout", idle.as_str()),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        // Migrations run on a connection of their own without a statement
        // timeout (the later of two settings wins): a later migration may
        // rewrite a big table.
        let migrating = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone().options([("statement_timeout", "0")]))
            .await?;
        MIGRATOR.run(&migrating).await?;
        migrating.close().await;
        Ok(PostgresStore {
            pool,
            options,
            doubt: tokio::sync::Mutex::new(Doubt::Clear),
            in_doubt: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            writer: tokio::sync::Mutex::new(None),
            timings,
            tenure: None,
        })
    }

    /// This server's side of the election among the servers on this
    /// database, as `identity` (shown to the others as the holder).
    pub fn elector(&self, identity: String) -> Elector {
        Elector::new(&self.options, identity, self.timings)
    }

    /// The store of one tenure: the same connections, commits fenced by
    /// `tenure`'s epoch and refused once it has ended, and an outcome
    /// bookkeeping of its own (nothing in doubt from an earlier tenure
    /// carries over: the state is loaded again at every takeover).
    pub fn fenced(&self, tenure: Tenure) -> PostgresStore {
        PostgresStore {
            pool: self.pool.clone(),
            options: self.options.clone(),
            doubt: tokio::sync::Mutex::new(Doubt::Clear),
            in_doubt: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            writer: tokio::sync::Mutex::new(None),
            timings: self.timings,
            tenure: Some(tenure),
        }
    }

    /// The fencing step: the first statement of every commit's transaction
    /// of a fenced store (None: not fenced). See [`super::lease`].
    fn fence_step(&self) -> Option<String> {
        self.tenure
            .as_ref()
            .map(|t| format!("SELECT stockpool_fence({})", t.epoch()))
    }

    /// Refuses, without asking the database, a commit of a tenure that has
    /// ended (deposed) or lapsed (its lease could not be renewed in time).
    fn check_tenure(&self) -> Result<(), StoreError> {
        match self.standing().refusal() {
            Some(refused) => Err(refused),
            None => Ok(()),
        }
    }

    /// `e` as the store reports it: the fencing step's refusal becomes
    /// [`StoreError::Fenced`] and ends the tenure at once.
    fn fenced_error(&self, e: sqlx::Error) -> StoreError {
        let fenced = match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some(FENCED) => {
                Some(db.message().to_string())
            }
            _ => None,
        };
        match (fenced, &self.tenure) {
            (Some(why), Some(tenure)) => {
                tenure.end(why.clone());
                StoreError::Fenced(why)
            }
            (Some(why), None) => StoreError::Fenced(why),
            (None, _) => e.into(),
        }
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        if let Some(kept) = self.writer.lock().await.take() {
            let _ = kept.conn.close().await;
        }
        self.pool.close().await;
    }

    /// Settles a commit in doubt, if any: asks the database for at most
    /// `budget`. Err while it still cannot tell.
    async fn settle(&self, doubt: &mut Doubt, budget: Duration) -> Result<(), StoreError> {
        let Doubt::Unknown { id, ops } = doubt else {
            return Ok(());
        };
        match self.outcome(*id, budget).await {
            Outcome::Committed => {
                tracing::warn!(batch = %id, "a commit reported as failed had committed; its retried jobs are acknowledged without writing them again");
                *doubt = Doubt::Committed {
                    ops: std::mem::take(ops),
                    next: 0,
                };
                Ok(())
            }
            Outcome::NotCommitted => {
                tracing::info!(batch = %id, "a commit whose outcome was unknown did not commit");
                *doubt = Doubt::Clear;
                self.in_doubt.store(false, Ordering::SeqCst);
                Ok(())
            }
            Outcome::Unknown(why) => Err(StoreError::Blocked(format!(
                "an earlier commit's outcome is still unknown ({why}); nothing is written or reloaded until the database answers"
            ))),
        }
    }

    /// Refuses a read that may reload memory while a commit is in doubt and
    /// the database cannot tell its outcome.
    async fn settle_before_read(&self) -> Result<(), StoreError> {
        if !self.in_doubt.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut doubt = self.doubt.lock().await;
        self.settle(&mut doubt, RECHECK_BUDGET).await
    }

    /// Whether the batch with `id` committed, asked over fresh connections
    /// for at most `budget`.
    ///
    /// The question is an `INSERT` of the same id into `commits`, rolled
    /// back. While the batch's transaction is still open on the server (its
    /// `COMMIT` in flight, or the server not yet aware that the client is
    /// gone) the insert waits on the id's unique index for it to end, so the
    /// answer is never "not committed" for a batch that commits a moment
    /// later: a conflict means it committed, an insert means it never will.
    async fn outcome(&self, id: Uuid, budget: Duration) -> Outcome {
        let deadline = Instant::now() + budget;
        let mut why = String::from("no answer in time");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Outcome::Unknown(why);
            }
            match tokio::time::timeout(left, self.probe(id, left)).await {
                Ok(Ok(true)) => return Outcome::Committed,
                Ok(Ok(false)) => return Outcome::NotCommitted,
                Ok(Err(e)) => {
                    why = crate::telemetry::chain(&e);
                    tokio::time::sleep(left.min(Duration::from_millis(50))).await;
                }
                Err(_) => return Outcome::Unknown(why),
            }
        }
    }

    /// One attempt of [`Self::outcome`]: true when `id` is committed.
    async fn probe(&self, id: Uuid, left: Duration) -> Result<bool, sqlx::Error> {
        let mut conn = connect_once(&self.options, left).await?;
        let lock_ms = left.as_millis().max(1);
        let mut tx = conn
            .begin_with(format!("BEGIN; SET LOCAL lock_timeout = {lock_ms}"))
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO commits (id) VALUES ($1::uuid) ON CONFLICT ON CONSTRAINT commits_pk DO NOTHING",
        )
        .bind(id.to_string())
        .persistent(false)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.rollback().await?;
        let _ = conn.close().await;
        Ok(inserted == 0)
    }

    /// The first round trip of every commit: `BEGIN`, the fencing step,
    /// the writers' lock, the batch's id in `commits` (a UUID and an
    /// integer: safe to inline) and now and then the pruning of old ids, as
    /// one simple query. Its statements run in order, each with a snapshot
    /// of its own, so the batch's statement after it reads everything that
    /// committed before the lock was granted.
    fn begin_step(&self, id: Uuid) -> String {
        let prune = self
            .commits
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PRUNE_EVERY);
        let mut steps = String::from("BEGIN; ");
        if let Some(fence) = self.fence_step() {
            steps.push_str(&fence);
            steps.push_str("; ");
        }
        steps.push_str(&format!(
            "SELECT pg_advisory_xact_lock({COMMIT_LOCK}); \
             INSERT INTO commits (id) VALUES ('{id}')"
        ));
        if prune {
            steps.push_str(&format!(
                "; DELETE FROM commits WHERE committed_at < now() - interval '{PRUNE_AFTER}'"
            ));
        }
        steps
    }

    /// Writes `batch` in one transaction whose first row is `id` in
    /// `commits`, on the kept connection (or a new one), and commits it:
    /// three round trips (the begin step, the batch's statement, `COMMIT`).
    async fn write(
        &self,
        slot: &mut Option<Kept>,
        id: Uuid,
        batch: &Batch<'_>,
    ) -> Result<(), Unwritten> {
        let begin = self.begin_step(id);
        let mut conn = tokio::time::timeout(ANSWER_TIMEOUT, self.prepare(slot, &begin, batch))
            .await
            .map_err(|_| Unwritten::Refused(no_answer("the batch").into()))?
            .map_err(Unwritten::Refused)?;
        match tokio::time::timeout(ANSWER_TIMEOUT, sqlx::Executor::execute(&mut conn, "COMMIT"))
            .await
        {
            Ok(Ok(_)) => {
                *slot = Some(Kept {
                    conn,
                    used: Instant::now(),
                });
                Ok(())
            }
            Ok(Err(lost)) => Err(Unwritten::Lost(lost)),
            Err(_) => Err(Unwritten::Lost(no_answer("COMMIT"))),
        }
    }

    /// Everything of a commit before its `COMMIT`: a live connection, the
    /// begin step and the batch's statements. Err means nothing was
    /// committed; the connection is then kept, its transaction rolled
    /// back, when the database answered, and dropped (its transaction ends
    /// with it) when it did not.
    ///
    /// A kept connection that sat idle longer than [`IDLE_PING`] is pinged
    /// first, as the pool would, so a server that went away while nothing
    /// was written is found within [`ACQUIRE_TIMEOUT`]. One in steady use
    /// is not: if it turns out gone at the begin step (nothing can have
    /// committed on it), the batch is begun again once on a new one.
    async fn prepare(
        &self,
        slot: &mut Option<Kept>,
        begin: &str,
        batch: &Batch<'_>,
    ) -> Result<PgConnection, StoreError> {
        let (mut conn, mut unchecked) = match slot.take() {
            Some(kept) if kept.used.elapsed() < IDLE_PING => (kept.conn, true),
            kept => (self.checked(kept).await?, false),
        };
        loop {
            match sqlx::Executor::execute(&mut conn, begin).await {
                Ok(_) => break,
                Err(e) if unchecked && gone(&e) => {
                    tracing::debug!(error = %e, "the commit connection is gone; beginning the batch on a new one");
                    conn = self.connect_writer().await?;
                    unchecked = false;
                }
                Err(e) => {
                    let gone = gone(&e);
                    let e = self.fenced_error(e);
                    if !gone {
                        roll_back(conn, slot).await;
                    }
                    return Err(e);
                }
            }
        }
        if let Err(e) = batch.execute(&mut conn, now_ms()).await {
            if !matches!(&e, StoreError::Database(e) if gone(e)) {
                roll_back(conn, slot).await;
            }
            return Err(e);
        }
        Ok(conn)
    }

    /// `kept` if it answers a ping, else a connection from the pool: within
    /// [`ACQUIRE_TIMEOUT`] in all, as the pool's own acquire.
    async fn checked(&self, kept: Option<Kept>) -> Result<PgConnection, StoreError> {
        let started = Instant::now();
        if let Some(mut kept) = kept {
            if let Ok(Ok(())) = tokio::time::timeout(ACQUIRE_TIMEOUT, kept.conn.ping()).await {
                return Ok(kept.conn);
            }
        }
        let left = ACQUIRE_TIMEOUT.saturating_sub(started.elapsed());
        tokio::time::timeout(left, self.connect_writer())
            .await
            .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolTimedOut)))
    }

    /// A connection for commits: one taken out of the pool for good (the
    /// pool opens another in its place), so the first commit uses the
    /// connection `connect` opened, and an idle one is checked by the pool
    /// as before, within [`ACQUIRE_TIMEOUT`].
    async fn connect_writer(&self) -> Result<PgConnection, StoreError> {
        Ok(self.pool.acquire().await?.detach())
    }
}

/// The commit connection between two commits.
struct Kept {
    conn: PgConnection,
    /// When it last answered: past [`IDLE_PING`], it is pinged before use.
    used: Instant,
}

/// How a commit attempt ended without committing for certain.
enum Unwritten {
    /// Nothing was committed.
    Refused(StoreError),
    /// `COMMIT` was sent and its answer lost: the batch may have committed.
    Lost(sqlx::Error),
}

/// Ends the transaction on `conn` that a failed statement left open (or
/// aborted), and keeps the connection for the next commit; drops it when
/// even that fails.
async fn roll_back(mut conn: PgConnection, slot: &mut Option<Kept>) {
    if sqlx::Executor::execute(&mut conn, "ROLLBACK").await.is_ok() {
        *slot = Some(Kept {
            conn,
            used: Instant::now(),
        });
    }
}

/// Whether `e` says the connection itself is lost (rather than that the
/// database refused a statement): nothing more can be sent on it.
fn gone(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        // connection_exception, and the server shutting down or
        // terminating this backend.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// The error of a statement the server did not answer in
/// [`ANSWER_TIMEOUT`].
fn no_answer(what: &str) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "Postgres did not answer {what} within {} s",
            ANSWER_TIMEOUT.as_secs()
        ),
    ))
}

/// A new connection outside the pool, given up after `timeout`.
async fn connect_once(
    options: &PgConnectOptions,
    timeout: Duration,
) -> Result<PgConnection, sqlx::Error> {
    tokio::time::timeout(timeout, PgConnection::connect_with(options))
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

#[async_trait]
impl Store for PostgresStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let mut pools = Vec::new();
        let snapshot = self.load_streaming(&mut pools).await?;
        Ok(Snapshot { pools, ..snapshot })
    }

    async fn load_streaming(&self, sink: &mut dyn PoolSink) -> Result<Snapshot, StoreError> {
        self.settle_before_read().await?;
        // One snapshot: every table is read at the same commit.
        let mut tx = self
            .pool
            .begin_with(format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
                 SET LOCAL statement_timeout = '{LOAD_STATEMENT_TIMEOUT}'; \
                 SET LOCAL idle_in_transaction_session_timeout = 0"
            ))
            .await?;

        let warehouses = sqlx::query_as::<_, (String, String)>(
            "SELECT code, name FROM warehouses ORDER BY position",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(code, name)| {
            Ok(Warehouse {
                code: code_of(code, "warehouses.code")?,
                name,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

        let channels = sqlx::query_as::<_, (String, String)>(
            "SELECT code, name FROM channels ORDER BY position",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(code, name)| {
            Ok(Channel {
                code: code_of(code, "channels.code")?,
                name,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

        let rules = sqlx::query_as::<_, RuleRecord>(SELECT_RULES)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(RuleRecord::into_rule)
            .collect::<Result<Vec<_>, _>>()?;

        // The biggest table by far: handed over row by row as it streams,
        // with the planner's estimate of its size first. Tuples are read by
        // position, not by column name: a name lookup per column and row was
        // measurably slower at a million SKUs (benches/startup.rs).
        let estimate: f32 =
            sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'pools'::regclass")
                .fetch_one(&mut *tx)
                .await?;
        sink.expect(&warehouses, estimate.max(0.0) as usize);
        {
            let mut decoder = PoolDecoder::default();
            let mut rows =
                sqlx::query_as::<_, (String, String, i64, i64, i64)>(SELECT_POOLS).fetch(&mut *tx);
            while let Some(row) = rows.next().await {
                let (sku, warehouse, on_hand, reserved, version) = row?;
                let record = PoolRecord {
                    sku,
                    warehouse,
                    on_hand,
                    reserved,
                    version,
                };
                sink.pool(decoder.decode(record)?);
            }
        }

        let reservations = sqlx::query_as::<_, ReservationRecord>(SELECT_RESERVATIONS)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(ReservationRecord::into_reservation)
            .collect::<Result<Vec<_>, _>>()?;

        let movements = sqlx::query_as::<_, (String, String)>(
            "SELECT movement_id, fingerprint FROM movements ORDER BY movement_id",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(movement_id, fingerprint)| MovementRecord {
            movement_id,
            fingerprint,
        })
        .collect();

        let published = sqlx::query_as::<_, EventRecord>(SELECT_LATEST_EVENTS)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(EventRecord::into_event)
            .collect::<Result<Vec<_>, _>>()?;

        tx.commit().await?;
        Ok(Snapshot {
            warehouses,
            channels,
            rules,
            pools: Vec::new(),
            reservations,
            movements,
            published,
        })
    }

    /// Applies `ops` in one transaction, and answers exactly: Ok only when
    /// the batch committed, Err only when it did not, or when the database
    /// cannot be asked in time.
    ///
    /// Any error before `COMMIT` means nothing was committed (the server
    /// commits nothing without it). An error from `COMMIT` itself (the
    /// connection lost, the server terminated) leaves it open, and the
    /// writer's job-by-job retry of a failed batch would apply its deltas
    /// twice if it did commit; so the batch's id is looked up in `commits`
    /// from fresh connections for up to two seconds (see `outcome`): found,
    /// Ok; definitely absent, Err.
    ///
    /// Still unknown after that, the error is returned and the store stays
    /// in doubt: every later commit and every `load`/`load_pools` first asks
    /// again and fails while the database cannot tell. The engine answers
    /// the batch's callers with an error and reloads their SKUs' pools from
    /// `load_pools`, which therefore returns only once the outcome is known,
    /// so reloaded pools equal the database either way. If the batch turns
    /// out committed, the writer's retries of its jobs are acknowledged
    /// without being written again (a retried job is a run of the batch's
    /// ops), and nothing is applied twice. What the engine restores on its
    /// own on a failed commit (the reservation's previous state) is not
    /// reloaded; that gap exists only while the outcome is unknown.
    async fn commit(&self, ops: &[Op]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut doubt = self.doubt.lock().await;
        self.settle(&mut doubt, RECHECK_BUDGET).await?;
        if let Doubt::Committed { ops: batch, next } = &mut *doubt {
            let rest = &batch[*next..];
            let run = (ops.len() <= rest.len())
                .then(|| rest.windows(ops.len()).position(|run| run == ops))
                .flatten();
            if let Some(at) = run {
                *next += at + ops.len();
                if *next == batch.len() {
                    *doubt = Doubt::Clear;
                    self.in_doubt.store(false, Ordering::SeqCst);
                }
                return Ok(());
            }
            *doubt = Doubt::Clear;
            self.in_doubt.store(false, Ordering::SeqCst);
        }

        self.check_tenure()?;
        let batch = Batch::fold(ops)?;
        let id = Uuid::new_v4();
        let mut writer = self.writer.lock().await;
        let lost = match self.write(&mut writer, id, &batch).await {
            Ok(()) => return Ok(()),
            Err(Unwritten::Refused(e)) => return Err(e),
            Err(Unwritten::Lost(lost)) => lost,
        };
        drop(writer);
        tracing::warn!(batch = %id, error = %crate::telemetry::chain(&lost), "COMMIT failed; asking the database whether it went through");
        match self.outcome(id, OUTCOME_BUDGET).await {
            Outcome::Committed => {
                tracing::info!(batch = %id, "the batch committed despite the error");
                Ok(())
            }
            Outcome::NotCommitted => Err(lost.into()),
            Outcome::Unknown(why) => {
                *doubt = Doubt::Unknown {
                    id,
                    ops: ops.to_vec(),
                };
                self.in_doubt.store(true, Ordering::SeqCst);
                Err(StoreError::InDoubt(format!(
                    "COMMIT failed ({}) and the database could not be asked whether it went through ({why})",
                    crate::telemetry::chain(&lost)
                )))
            }
        }
    }

    async fn load_pools(&self, skus: &[Sku]) -> Result<Vec<PoolRow>, StoreError> {
        self.settle_before_read().await?;
        if skus.is_empty() {
            return Ok(Vec::new());
        }
        let skus: Vec<&str> = skus.iter().map(Sku::as_str).collect();
        let mut decoder = PoolDecoder::default();
        sqlx::query_as::<_, PoolRecord>(
            "SELECT sku, warehouse, on_hand, reserved, version FROM pools \
             WHERE sku = ANY($1::text[]) ORDER BY sku, warehouse",
        )
        .bind(&skus)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| decoder.decode(row))
        .collect()
    }

    async fn load_reservation(
        &self,
        channel: &ChannelCode,
        order_id: &OrderId,
    ) -> Result<Option<Reservation>, StoreError> {
        // Read back after a failed commit: never before its outcome is known.
        self.settle_before_read().await?;
        sqlx::query_as::<_, ReservationRecord>(SELECT_RESERVATION)
            .bind(channel.as_str())
            .bind(order_id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(ReservationRecord::into_reservation)
            .transpose()
    }

    async fn rule_history(
        &self,
        channel: &ChannelCode,
        sku: Option<&Sku>,
        all_skus: bool,
    ) -> Result<Vec<RuleChange>, StoreError> {
        let rows = if all_skus {
            sqlx::query_as::<_, RuleChangeRecord>(SELECT_HISTORY_OF_CHANNEL)
                .bind(channel.as_str())
                .fetch_all(&self.pool)
                .await?
        } else {
            sqlx::query_as::<_, RuleChangeRecord>(SELECT_HISTORY_OF_RULE)
                .bind(channel.as_str())
                .bind(sku.map_or("", Sku::as_str))
                .fetch_all(&self.pool)
                .await?
        };
        rows.into_iter()
            .map(RuleChangeRecord::into_change)
            .collect()
    }

    async fn channel_events(
        &self,
        channel: &ChannelCode,
        after_seq: u64,
        limit: i64,
    ) -> Result<Vec<ChannelEvent>, StoreError> {
        sqlx::query_as::<_, EventRecord>(SELECT_EVENTS)
            .bind(channel.as_str())
            .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(EventRecord::into_event)
            .collect()
    }

    /// A `limit` of 0 or less reads nothing.
    async fn ledger(
        &self,
        sku: Option<&Sku>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        let limit = limit.max(0);
        let rows = match sku {
            Some(sku) => {
                sqlx::query_as::<_, LedgerRecord>(SELECT_LEDGER_OF_SKU)
                    .bind(sku.as_str())
                    .bind(after_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query_as::<_, LedgerRecord>(SELECT_LEDGER)
                    .bind(after_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.into_iter().map(LedgerRecord::into_row).collect()
    }

    async fn outbox_due(&self, now_ms: i64, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        sqlx::query_as::<_, OutboxRecord>(SELECT_OUTBOX_DUE)
            .bind(now_ms)
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(OutboxRecord::into_entry)
            .collect()
    }

    async fn outbox_list(
        &self,
        state: Option<OutboxState>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        sqlx::query_as::<_, OutboxRecord>(SELECT_OUTBOX_LIST)
            .bind(state.map(OutboxState::as_str))
            .bind(after_id)
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(OutboxRecord::into_entry)
            .collect()
    }

    async fn outbox_entries(&self, ids: &[i64]) -> Result<Vec<OutboxEntry>, StoreError> {
        sqlx::query_as::<_, OutboxRecord>(SELECT_OUTBOX_BY_IDS)
            .bind(ids)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(OutboxRecord::into_entry)
            .collect()
    }

    fn is_current(&self) -> bool {
        self.tenure.as_ref().is_none_or(Tenure::is_held)
    }

    fn standing(&self) -> Standing {
        let Some(t) = &self.tenure else {
            return Standing::Current;
        };
        if let Some(why) = t.ended() {
            return Standing::Deposed(format!(
                "this server no longer holds the lease of epoch {} ({why})",
                t.epoch()
            ));
        }
        if t.is_held() {
            return Standing::Current;
        }
        let trouble = t
            .trouble()
            .unwrap_or_else(|| "its renewals got no answer".to_string());
        Standing::Isolated(format!(
            "this stockpool server is isolated: it could not renew its lease (epoch {}) in \
             Postgres in time ({trouble}); it refuses writes until Postgres answers again, and \
             steps down to standby if another server took over meanwhile. Nothing was saved; \
             reads are still served from memory. Retry the write on the active server, or here \
             once Postgres is back",
            t.epoch()
        ))
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let (pending, dead, oldest) =
            sqlx::query_as::<_, (i64, i64, Option<i64>)>(SELECT_OUTBOX_STATS)
                .fetch_one(&self.pool)
                .await?;
        Ok(OutboxStats {
            pending: u64::try_from(pending).unwrap_or(0),
            dead: u64::try_from(dead).unwrap_or(0),
            oldest_pending_at_ms: oldest,
        })
    }
}

/// A batch regrouped by kind, in arrays ready to bind. Each kind goes to
/// its own table, so writing the kinds in one statement is the same as
/// writing the ops in order, as long as the order within a kind is kept:
/// pools are folded in op order, ledger and rule-history rows keep their
/// order (their ids), a reservation keeps its last state, an outbox entry
/// its last standing, and the rare catalog ops run one by one in order,
/// before it.
#[derive(Default)]
struct Batch<'a> {
    catalog: Vec<&'a Op>,
    pools: Vec<((&'a str, &'a str), PoolFold)>,
    ledger: LedgerArrays<'a>,
    reservations: ReservationArrays<'a>,
    movements: (Vec<&'a str>, Vec<&'a str>),
    events: EventArrays<'a>,
    rule_changes: RuleChangeArrays<'a>,
    outbox: OutboxArrays<'a>,
    /// The last standing of each updated outbox entry.
    outbox_updates: OutboxUpdateArrays<'a>,
}

#[derive(Default)]
struct OutboxUpdateArrays<'a> {
    id: Vec<i64>,
    state: Vec<&'a str>,
    attempts: Vec<i32>,
    last_error: Vec<&'a str>,
    next_attempt_at_ms: Vec<i64>,
    at_ms: Vec<i64>,
}

#[derive(Default)]
struct OutboxArrays<'a> {
    at_ms: Vec<i64>,
    reservation_id: Vec<&'a str>,
    channel: Vec<&'a str>,
    order_id: Vec<&'a str>,
    event: Vec<&'a str>,
    lines: Vec<String>,
    terms: Vec<String>,
}

#[derive(Default)]
struct LedgerArrays<'a> {
    at_ms: Vec<i64>,
    sku: Vec<&'a str>,
    warehouse: Vec<&'a str>,
    kind: Vec<&'a str>,
    on_hand_delta: Vec<i64>,
    reserved_delta: Vec<i64>,
    on_hand_after: Vec<i64>,
    reserved_after: Vec<i64>,
    reason: Vec<&'a str>,
    reference: Vec<&'a str>,
}

#[derive(Default)]
struct ReservationArrays<'a> {
    channel: Vec<&'a str>,
    order_id: Vec<&'a str>,
    id: Vec<&'a str>,
    status: Vec<&'a str>,
    created_at_ms: Vec<i64>,
    expires_at_ms: Vec<i64>,
    lines: Vec<String>,
    allocations: Vec<String>,
    shipments: Vec<String>,
    refunds: Vec<String>,
    currency: Vec<&'a str>,
    customer_ref: Vec<&'a str>,
    prices_include_tax: Vec<bool>,
    unit_prices: Vec<String>,
}

#[derive(Default)]
struct EventArrays<'a> {
    channel: Vec<&'a str>,
    seq: Vec<i64>,
    sku: Vec<&'a str>,
    published: Vec<i64>,
    atp: Vec<i64>,
    at_ms: Vec<i64>,
    open: Vec<i64>,
}

#[derive(Default)]
struct RuleChangeArrays<'a> {
    at_ms: Vec<i64>,
    changed_by: Vec<&'a str>,
    comment: Vec<&'a str>,
    channel: Vec<&'a str>,
    sku: Vec<&'a str>,
    before: Vec<Option<String>>,
    after: Vec<Option<String>>,
}

impl<'a> Batch<'a> {
    /// Regroups `ops`; fails before any I/O on what cannot be encoded.
    fn fold(ops: &'a [Op]) -> Result<Self, StoreError> {
        let mut b = Batch::default();
        // Last state per reservation key: an upsert may touch a row once.
        let mut last_reservation: HashMap<(&str, &str), &Reservation> = HashMap::new();
        let mut reservation_order: Vec<(&str, &str)> = Vec::new();
        let mut last_update: HashMap<i64, &super::OutboxUpdate> = HashMap::new();
        let mut update_order: Vec<i64> = Vec::new();
        for op in ops {
            match op {
                Op::PoolDelta { .. } | Op::PoolSetOnHand { .. } => {}
                Op::Ledger(e) => {
                    let l = &mut b.ledger;
                    l.at_ms.push(e.at_ms);
                    l.sku.push(e.sku.as_str());
                    l.warehouse.push(e.warehouse.as_str());
                    l.kind.push(e.kind.as_str());
                    l.on_hand_delta.push(e.on_hand_delta);
                    l.reserved_delta.push(e.reserved_delta);
                    l.on_hand_after.push(e.on_hand_after);
                    l.reserved_after.push(e.reserved_after);
                    l.reason.push(e.reason.as_str());
                    l.reference.push(e.reference.as_str());
                }
                Op::Reservation(r) => {
                    let key = (r.channel.as_str(), r.order_id.as_str());
                    if last_reservation.insert(key, r).is_none() {
                        reservation_order.push(key);
                    }
                }
                Op::Movement(m) => {
                    b.movements.0.push(m.movement_id.as_str());
                    b.movements.1.push(m.fingerprint.as_str());
                }
                Op::ChannelEvents(events) => {
                    for e in events {
                        let a = &mut b.events;
                        a.channel.push(e.channel.as_str());
                        a.seq.push(
                            i64::try_from(e.seq)
                                .map_err(|_| corrupt("channel event", "seq", e.seq))?,
                        );
                        a.sku.push(e.sku.as_str());
                        a.published.push(e.published);
                        a.atp.push(e.atp);
                        a.at_ms.push(e.at_ms);
                        a.open.push(e.open);
                    }
                }
                Op::RuleChange(c) => {
                    let a = &mut b.rule_changes;
                    a.at_ms.push(c.at_ms);
                    a.changed_by.push(c.changed_by.as_str());
                    a.comment.push(c.comment.as_str());
                    a.channel.push(c.channel.as_str());
                    a.sku.push(c.sku.as_ref().map_or("", Sku::as_str));
                    a.before.push(c.before.as_ref().map(to_json).transpose()?);
                    a.after.push(c.after.as_ref().map(to_json).transpose()?);
                }
                Op::Outbox(e) => {
                    let a = &mut b.outbox;
                    a.at_ms.push(e.at_ms);
                    a.reservation_id.push(e.reservation_id.as_str());
                    a.channel.push(e.channel.as_str());
                    a.order_id.push(e.order_id.as_str());
                    a.event.push(e.event.as_str());
                    a.lines.push(to_json(&e.lines)?);
                    a.terms.push(to_json(&e.terms)?);
                }
                Op::OutboxUpdate(u) => {
                    // The last standing of an entry wins: an UPDATE may
                    // touch a row once.
                    if last_update.insert(u.id, u).is_none() {
                        update_order.push(u.id);
                    }
                }
                Op::Warehouse(_) | Op::Channel(_) | Op::PutRule(_) | Op::DeleteRule { .. } => {
                    b.catalog.push(op)
                }
            }
        }
        // Sorted: rows are locked in one order by every commit.
        b.pools = fold_pools(ops);
        for id in update_order {
            let u = last_update[&id];
            let a = &mut b.outbox_updates;
            a.id.push(u.id);
            a.state.push(u.state.as_str());
            a.attempts
                .push(i32::try_from(u.attempts).unwrap_or(i32::MAX));
            a.last_error.push(u.last_error.as_str());
            a.next_attempt_at_ms.push(u.next_attempt_at_ms);
            a.at_ms.push(u.at_ms);
        }
        for key in reservation_order {
            let r = last_reservation[&key];
            let a = &mut b.reservations;
            a.channel.push(r.channel.as_str());
            a.order_id.push(r.order_id.as_str());
            a.id.push(r.id.as_str());
            a.status.push(r.status.as_str());
            a.created_at_ms.push(r.created_at_ms);
            a.expires_at_ms.push(r.expires_at_ms);
            a.lines.push(to_json(&r.lines)?);
            a.allocations.push(to_json(&r.allocations)?);
            a.shipments.push(to_json(&r.shipments)?);
            a.refunds.push(to_json(&r.refunds)?);
            a.currency
                .push(r.terms.currency.as_ref().map_or("", |c| c.as_str()));
            a.customer_ref
                .push(r.terms.customer_ref.as_ref().map_or("", |c| c.as_str()));
            a.prices_include_tax.push(r.terms.prices_include_tax);
            a.unit_prices.push(to_json(&r.terms.unit_prices)?);
        }
        Ok(b)
    }

    /// Which kinds of rows the batch holds, as [`PARTS`] bits.
    fn kinds(&self) -> u8 {
        [
            !self.pools.is_empty(),
            !self.ledger.at_ms.is_empty(),
            !self.reservations.channel.is_empty(),
            !self.movements.0.is_empty(),
            !self.events.channel.is_empty(),
            !self.rule_changes.at_ms.is_empty(),
            !self.outbox.at_ms.is_empty(),
            !self.outbox_updates.id.is_empty(),
        ]
        .iter()
        .enumerate()
        .fold(0, |kinds, (bit, present)| {
            kinds | (u8::from(*present) << bit)
        })
    }

    /// Writes the batch: one statement per catalog op (rare), then every
    /// other row in one statement (see [`batch_statement`]).
    async fn execute(&self, conn: &mut PgConnection, now_ms: i64) -> Result<(), StoreError> {
        for op in &self.catalog {
            catalog_op(op, now_ms).execute(&mut *conn).await?;
        }
        let kinds = self.kinds();
        if kinds == 0 {
            return Ok(());
        }
        let p = &self.pools;
        let sku: Vec<&str> = p.iter().map(|((s, _), _)| *s).collect();
        let warehouse: Vec<&str> = p.iter().map(|((_, w), _)| *w).collect();
        let counted: Vec<bool> = p.iter().map(|(_, f)| f.set.is_some()).collect();
        let on_hand: Vec<i64> = p.iter().map(|(_, f)| f.on_hand_value()).collect();
        let reserved: Vec<i64> = p.iter().map(|(_, f)| f.reserved).collect();
        let bumps: Vec<i64> = p.iter().map(|(_, f)| f.bumps).collect();
        // Bound in the order of PARTS, each kind only when present.
        let mut q = sqlx::query(batch_statement(kinds));
        if kinds & POOLS != 0 {
            q = q
                .bind(&sku)
                .bind(&warehouse)
                .bind(&counted)
                .bind(&on_hand)
                .bind(&reserved)
                .bind(&bumps);
        }
        if kinds & LEDGER != 0 {
            let l = &self.ledger;
            q = q
                .bind(&l.at_ms)
                .bind(&l.sku)
                .bind(&l.warehouse)
                .bind(&l.kind)
                .bind(&l.on_hand_delta)
                .bind(&l.reserved_delta)
                .bind(&l.on_hand_after)
                .bind(&l.reserved_after)
                .bind(&l.reason)
                .bind(&l.reference);
        }
        if kinds & RESERVATIONS != 0 {
            let r = &self.reservations;
            q = q
                .bind(&r.channel)
                .bind(&r.order_id)
                .bind(&r.id)
                .bind(&r.status)
                .bind(&r.created_at_ms)
                .bind(&r.expires_at_ms)
                .bind(&r.lines)
                .bind(&r.allocations)
                .bind(&r.shipments)
                .bind(&r.refunds)
                .bind(&r.currency)
                .bind(&r.customer_ref)
                .bind(&r.prices_include_tax)
                .bind(&r.unit_prices);
        }
        if kinds & MOVEMENTS != 0 {
            q = q.bind(&self.movements.0).bind(&self.movements.1);
        }
        if kinds & EVENTS != 0 {
            let e = &self.events;
            q = q
                .bind(&e.channel)
                .bind(&e.seq)
                .bind(&e.sku)
                .bind(&e.published)
                .bind(&e.atp)
                .bind(&e.at_ms)
                .bind(&e.open);
        }
        if kinds & RULE_CHANGES != 0 {
            let c = &self.rule_changes;
            q = q
                .bind(&c.at_ms)
                .bind(&c.changed_by)
                .bind(&c.comment)
                .bind(&c.channel)
                .bind(&c.sku)
                .bind(&c.before)
                .bind(&c.after);
        }
        if kinds & OUTBOX != 0 {
            let o = &self.outbox;
            q = q
                .bind(&o.at_ms)
                .bind(&o.reservation_id)
                .bind(&o.channel)
                .bind(&o.order_id)
                .bind(&o.event)
                .bind(&o.lines)
                .bind(&o.terms);
        }
        if kinds & OUTBOX_UPDATES != 0 {
            let u = &self.outbox_updates;
            q = q
                .bind(&u.id)
                .bind(&u.state)
                .bind(&u.attempts)
                .bind(&u.last_error)
                .bind(&u.next_attempt_at_ms)
                .bind(&u.at_ms);
        }
        q.execute(&mut *conn).await?;
        Ok(())
    }
}

/// The statement of one catalog op (warehouse, channel, rule).
fn catalog_op(
    op: &Op,
    now_ms: i64,
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    match op {
        Op::Warehouse(w) => sqlx::query(UPSERT_WAREHOUSE)
            .bind(w.code.as_str())
            .bind(w.name.as_str()),
        Op::Channel(c) => sqlx::query(UPSERT_CHANNEL)
            .bind(c.code.as_str())
            .bind(c.name.as_str()),
        // A rule without a channel binds NULL and the NOT NULL constraint
        // refuses it, naming the column.
        Op::PutRule(rule) => sqlx::query(UPSERT_RULE)
            .bind(rule.channel.as_ref().map(ChannelCode::as_str))
            .bind(rule.sku.as_ref().map_or("", Sku::as_str))
            .bind(
                rule.warehouses
                    .iter()
                    .map(WarehouseCode::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .bind(rule.fence)
            .bind(rule.share_percent.map(i64::from))
            .bind(rule.buffer)
            .bind(rule.max_published)
            .bind(rule.min_published)
            .bind(now_ms),
        Op::DeleteRule { channel, sku } => sqlx::query(DELETE_RULE)
            .bind(channel.as_str())
            .bind(sku.as_ref().map_or("", Sku::as_str)),
        _ => unreachable!("only catalog ops are collected in Batch::catalog"),
    }
}

/// A batch's rows of every kind are written by one statement: one
/// data-modifying `WITH` item (or three, for pools) per kind present, each
/// taking its rows as arrays through `UNNEST`, numbered from `$1` here and
/// renumbered where the kind lands in the statement. The items run on one
/// snapshot in no set order, which is sound because no two kinds write the
/// same table except the outbox (new entries, and updates of entries
/// committed earlier: never a row of both), within a kind no row is written
/// twice (the fold keeps one row per pool, reservation and outbox update),
/// no kind reads another's rows, and the advisory lock was taken by an
/// earlier statement of the transaction. A statement that fails writes
/// nothing, whichever item failed.
///
/// Pools: existing ones are updated (a counted one takes the count, plus
/// the deltas after it; the others add their deltas) and the rest inserted
/// (a new pool starts at zero, so the same values serve both). Commits are
/// serialized by the advisory lock, so no other writer inserts a pool
/// between the two parts.
const POOLS_PART: &str = "\
    pool_rows AS ( \
        SELECT * FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::int8[], $5::int8[], \
            $6::int8[]) AS u(sku, warehouse, counted, on_hand, reserved, bumps) \
    ), pools_updated AS ( \
        UPDATE pools p SET \
            on_hand = CASE WHEN u.counted THEN u.on_hand ELSE p.on_hand + u.on_hand END, \
            reserved = p.reserved + u.reserved, \
            version = p.version + u.bumps \
        FROM pool_rows u WHERE p.sku = u.sku AND p.warehouse = u.warehouse \
        RETURNING p.sku, p.warehouse \
    ), pools_inserted AS ( \
        INSERT INTO pools (sku, warehouse, on_hand, reserved, version) \
        SELECT u.sku, u.warehouse, u.on_hand, u.reserved, u.bumps FROM pool_rows u \
        WHERE NOT EXISTS (SELECT 1 FROM pools_updated d \
            WHERE d.sku = u.sku AND d.warehouse = u.warehouse) \
    )";

/// Ordered by position in the batch, so ids follow op order.
const LEDGER_PART: &str = "\
    ledger_rows AS ( \
        INSERT INTO ledger (at_ms, sku, warehouse, kind, on_hand_delta, reserved_delta, \
            on_hand_after, reserved_after, reason, reference) \
        SELECT at_ms, sku, warehouse, kind, on_hand_delta, reserved_delta, \
            on_hand_after, reserved_after, reason, reference \
        FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], \
            $7::int8[], $8::int8[], $9::text[], $10::text[]) WITH ORDINALITY \
            AS t(at_ms, sku, warehouse, kind, on_hand_delta, reserved_delta, \
                on_hand_after, reserved_after, reason, reference, n) \
        ORDER BY n \
    )";

const RESERVATIONS_PART: &str = "\
    reservation_rows AS ( \
        INSERT INTO reservations AS r (channel, order_id, id, status, created_at_ms, \
            expires_at_ms, lines_json, allocations_json, shipments_json, refunds_json, \
            currency, customer_ref, prices_include_tax, unit_prices_json) \
        SELECT channel, order_id, id, status, created_at_ms, expires_at_ms, \
            lines::jsonb, allocations::jsonb, shipments::jsonb, refunds::jsonb, \
            currency, customer_ref, prices_include_tax, unit_prices::jsonb \
        FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], \
            $7::text[], $8::text[], $9::text[], $10::text[], \
            $11::text[], $12::text[], $13::bool[], $14::text[]) \
            AS t(channel, order_id, id, status, created_at_ms, expires_at_ms, \
                lines, allocations, shipments, refunds, \
                currency, customer_ref, prices_include_tax, unit_prices) \
        ON CONFLICT ON CONSTRAINT reservations_pk DO UPDATE SET \
            id = excluded.id, \
            status = excluded.status, \
            created_at_ms = excluded.created_at_ms, \
            expires_at_ms = excluded.expires_at_ms, \
            lines_json = excluded.lines_json, \
            allocations_json = excluded.allocations_json, \
            shipments_json = excluded.shipments_json, \
            refunds_json = excluded.refunds_json, \
            currency = excluded.currency, \
            customer_ref = excluded.customer_ref, \
            prices_include_tax = excluded.prices_include_tax, \
            unit_prices_json = excluded.unit_prices_json \
    )";

/// A duplicate id fails the statement, and with it the commit.
const MOVEMENTS_PART: &str = "\
    movement_rows AS ( \
        INSERT INTO movements (movement_id, fingerprint) \
        SELECT * FROM UNNEST($1::text[], $2::text[]) \
    )";

const EVENTS_PART: &str = "\
    event_rows AS ( \
        INSERT INTO channel_events (channel, seq, sku, published, atp, at_ms, open) \
        SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int8[], $5::int8[], \
            $6::int8[], $7::int8[]) \
    )";

/// Ordered by position in the batch, so ids follow op order.
const RULE_CHANGES_PART: &str = "\
    rule_change_rows AS ( \
        INSERT INTO rule_history (at_ms, changed_by, comment, channel, sku, before_json, \
            after_json) \
        SELECT at_ms, changed_by, comment, channel, sku, before::jsonb, after::jsonb \
        FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
            $7::text[]) WITH ORDINALITY \
            AS t(at_ms, changed_by, comment, channel, sku, before, after, n) \
        ORDER BY n \
    )";

/// In array order (`ORDER BY ord`), so ids follow the order of the changes.
const OUTBOX_PART: &str = "\
    outbox_rows AS ( \
        INSERT INTO outbox (created_at_ms, reservation_id, channel, order_id, event, \
            lines_json, next_attempt_at_ms, updated_at_ms, terms_json) \
        SELECT at_ms, reservation_id, channel, order_id, event, lines::jsonb, at_ms, at_ms, \
            terms::jsonb \
        FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
            $7::text[]) \
            WITH ORDINALITY AS u(at_ms, reservation_id, channel, order_id, event, lines, \
                terms, ord) \
        ORDER BY ord \
    )";

/// Each entry at most once (the batch keeps its last standing), and only
/// entries committed before: a new entry's id is not known until it is.
const OUTBOX_UPDATES_PART: &str = "\
    outbox_updated AS ( \
        UPDATE outbox o SET state = u.state, attempts = u.attempts, last_error = u.last_error, \
            next_attempt_at_ms = u.next_attempt_at_ms, updated_at_ms = u.at_ms \
        FROM UNNEST($1::int8[], $2::text[], $3::int4[], $4::text[], $5::int8[], $6::int8[]) \
            AS u(id, state, attempts, last_error, next_attempt_at_ms, at_ms) \
        WHERE o.id = u.id \
    )";

const POOLS: u8 = 1;
const LEDGER: u8 = 1 << 1;
const RESERVATIONS: u8 = 1 << 2;
const MOVEMENTS: u8 = 1 << 3;
const EVENTS: u8 = 1 << 4;
const RULE_CHANGES: u8 = 1 << 5;
const OUTBOX: u8 = 1 << 6;
const OUTBOX_UPDATES: u8 = 1 << 7;

/// Every kind's part, by its bit, in the order their arrays are bound.
const PARTS: [(u8, &str); 8] = [
    (POOLS, POOLS_PART),
    (LEDGER, LEDGER_PART),
    (RESERVATIONS, RESERVATIONS_PART),
    (MOVEMENTS, MOVEMENTS_PART),
    (EVENTS, EVENTS_PART),
    (RULE_CHANGES, RULE_CHANGES_PART),
    (OUTBOX, OUTBOX_PART),
    (OUTBOX_UPDATES, OUTBOX_UPDATES_PART),
];

/// The statement writing the kinds in `kinds` (not 0), built once per set
/// of kinds: its text depends on nothing else, so sqlx prepares it once
/// per connection and reuses it. A hot reserve batch is always the same
/// one (pools, ledger, reservations, channel events).
fn batch_statement(kinds: u8) -> &'static str {
    static TEXTS: [OnceLock<String>; 256] = [const { OnceLock::new() }; 256];
    TEXTS[usize::from(kinds)].get_or_init(|| {
        let mut text = String::from("WITH ");
        let mut bound = 0;
        for (_, part) in PARTS.iter().filter(|(bit, _)| kinds & bit != 0) {
            // Every part binds arrays: none is first once some are bound.
            if bound > 0 {
                text.push_str(", ");
            }
            bound = renumber(part, bound, &mut text);
        }
        text.push_str(" SELECT 1");
        text
    })
}

/// Appends `part` to `out` with each placeholder `$n` as `$(n + offset)`;
/// returns the highest placeholder written.
fn renumber(part: &str, offset: usize, out: &mut String) -> usize {
    let mut highest = offset;
    let mut rest = part;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let n: usize = rest[at + 1..at + 1 + digits]
            .parse()
            .expect("every $ of a part starts a placeholder");
        highest = highest.max(n + offset);
        out.push('$');
        out.push_str(&(n + offset).to_string());
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    highest
}

const UPSERT_WAREHOUSE: &str = "\
    INSERT INTO warehouses (code, name, position) \
    VALUES ($1, $2, (SELECT COALESCE(MAX(position), 0) + 1 FROM warehouses)) \
    ON CONFLICT ON CONSTRAINT warehouses_pk DO UPDATE SET name = excluded.name";

const UPSERT_CHANNEL: &str = "\
    INSERT INTO channels (code, name, position) \
    VALUES ($1, $2, (SELECT COALESCE(MAX(position), 0) + 1 FROM channels)) \
    ON CONFLICT ON CONSTRAINT channels_pk DO UPDATE SET name = excluded.name";

const UPSERT_RULE: &str = "\
    INSERT INTO rules (channel, sku, warehouses, fence, share_percent, buffer, \
        max_published, min_published, updated_at_ms) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
    ON CONFLICT ON CONSTRAINT rules_pk DO UPDATE SET \
        warehouses = excluded.warehouses, \
        fence = excluded.fence, \
        share_percent = excluded.share_percent, \
        buffer = excluded.buffer, \
        max_published = excluded.max_published, \
        min_published = excluded.min_published, \
        updated_at_ms = excluded.updated_at_ms";

const DELETE_RULE: &str = "DELETE FROM rules WHERE channel = $1 AND sku = $2";

const SELECT_RULES: &str = "\
    SELECT channel, sku, warehouses, fence, share_percent, buffer, max_published, min_published \
    FROM rules ORDER BY channel, sku";

const SELECT_POOLS: &str = "\
    SELECT sku, warehouse, on_hand, reserved, version FROM pools ORDER BY sku, warehouse";

const SELECT_RESERVATIONS: &str = "\
    SELECT channel, order_id, id, status, created_at_ms, expires_at_ms, \
        lines_json::text AS lines_json, allocations_json::text AS allocations_json, \
        shipments_json::text AS shipments_json, refunds_json::text AS refunds_json, \
        currency, customer_ref, prices_include_tax, unit_prices_json::text AS unit_prices_json \
    FROM reservations ORDER BY created_at_ms, channel, order_id";

const SELECT_RESERVATION: &str = "\
    SELECT channel, order_id, id, status, created_at_ms, expires_at_ms, \
        lines_json::text AS lines_json, allocations_json::text AS allocations_json, \
        shipments_json::text AS shipments_json, refunds_json::text AS refunds_json, \
        currency, customer_ref, prices_include_tax, unit_prices_json::text AS unit_prices_json \
    FROM reservations WHERE channel = $1 AND order_id = $2";

const SELECT_LEDGER: &str = "\
    SELECT id, at_ms, sku, warehouse, kind, on_hand_delta, reserved_delta, \
        on_hand_after, reserved_after, reason, reference \
    FROM ledger WHERE id > $1 ORDER BY id LIMIT $2";

const SELECT_LEDGER_OF_SKU: &str = "\
    SELECT id, at_ms, sku, warehouse, kind, on_hand_delta, reserved_delta, \
        on_hand_after, reserved_after, reason, reference \
    FROM ledger WHERE sku = $1 AND id > $2 ORDER BY id LIMIT $3";

/// The columns every outbox read selects, in `OutboxRecord`'s shape.
macro_rules! outbox_select {
    () => {
        "SELECT id, created_at_ms, reservation_id, channel, order_id, event, \
            lines_json::text AS lines_json, state, attempts, last_error, next_attempt_at_ms, \
            updated_at_ms, terms_json::text AS terms_json FROM outbox"
    };
}

const SELECT_OUTBOX_DUE: &str = concat!(
    outbox_select!(),
    " o \
    WHERE state = 'pending' AND next_attempt_at_ms <= $1 \
      AND NOT EXISTS (SELECT 1 FROM outbox p \
          WHERE p.state = 'pending' AND p.reservation_id = o.reservation_id AND p.id < o.id) \
    ORDER BY id LIMIT $2"
);

const SELECT_OUTBOX_LIST: &str = concat!(
    outbox_select!(),
    " WHERE ($1::text IS NULL OR state = $1) AND id > $2 ORDER BY id LIMIT $3"
);

const SELECT_OUTBOX_BY_IDS: &str = concat!(outbox_select!(), " WHERE id = ANY($1) ORDER BY id");

const SELECT_OUTBOX_STATS: &str = "\
    SELECT \
        (SELECT COUNT(*) FROM outbox WHERE state = 'pending'), \
        (SELECT COUNT(*) FROM outbox WHERE state = 'dead'), \
        (SELECT MIN(created_at_ms) FROM outbox WHERE state = 'pending')";

const SELECT_EVENTS: &str = "\
    SELECT channel, seq, sku, published, atp, at_ms, open FROM channel_events \
    WHERE channel = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// The newest event of every (channel, SKU), by channel then seq.
const SELECT_LATEST_EVENTS: &str = "\
    SELECT channel, seq, sku, published, atp, at_ms, open FROM ( \
        SELECT DISTINCT ON (channel, sku) channel, seq, sku, published, atp, at_ms, open \
        FROM channel_events ORDER BY channel, sku, seq DESC \
    ) latest ORDER BY channel, seq";

const SELECT_HISTORY_OF_RULE: &str = "\
    SELECT at_ms, changed_by, comment, channel, sku, \
        before_json::text AS before_json, after_json::text AS after_json \
    FROM rule_history WHERE channel = $1 AND sku = $2 ORDER BY id";

const SELECT_HISTORY_OF_CHANNEL: &str = "\
    SELECT at_ms, changed_by, comment, channel, sku, \
        before_json::text AS before_json, after_json::text AS after_json \
    FROM rule_history WHERE channel = $1 ORDER BY id";

/// `url` with its password (in the user part or a `password=` parameter)
/// replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _password)) => format!("{name}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Sku;
    use std::sync::Arc;

    fn delta(s: &str, w: &str, on_hand: i64, reserved: i64) -> Op {
        Op::PoolDelta {
            sku: Sku::parse(s).unwrap(),
            warehouse: WarehouseCode::parse(w).unwrap(),
            on_hand,
            reserved,
        }
    }

    fn count(s: &str, w: &str, on_hand: i64) -> Op {
        Op::PoolSetOnHand {
            sku: Sku::parse(s).unwrap(),
            warehouse: WarehouseCode::parse(w).unwrap(),
            on_hand,
        }
    }

    fn folded(ops: &[Op]) -> Vec<((String, String), PoolFold)> {
        Batch::fold(ops)
            .unwrap()
            .pools
            .into_iter()
            .map(|((s, w), f)| ((s.to_string(), w.to_string()), f))
            .collect()
    }

    #[test]
    fn deltas_of_one_pool_fold_into_one_sum_with_one_bump_each() {
        let pools = folded(&[
            delta("TEE", "WH-EAST", 10, 0),
            delta("MUG", "WH-EAST", 1, 1),
            delta("TEE", "WH-EAST", -1, 3),
            delta("TEE", "WH-WEST", 0, 0),
        ]);
        let key = |s: &str, w: &str| (s.to_string(), w.to_string());
        assert_eq!(
            pools,
            vec![
                (
                    key("MUG", "WH-EAST"),
                    PoolFold {
                        set: None,
                        on_hand: 1,
                        reserved: 1,
                        bumps: 1
                    }
                ),
                (
                    key("TEE", "WH-EAST"),
                    PoolFold {
                        set: None,
                        on_hand: 9,
                        reserved: 3,
                        bumps: 2
                    }
                ),
                (
                    key("TEE", "WH-WEST"),
                    PoolFold {
                        set: None,
                        on_hand: 0,
                        reserved: 0,
                        bumps: 1
                    }
                ),
            ],
            "sorted by pool, a zero delta still bumps"
        );
    }

    #[test]
    fn a_count_between_deltas_drops_the_deltas_before_it_and_keeps_those_after() {
        let pools = folded(&[
            delta("TEE", "WH-EAST", 10, 2),
            count("TEE", "WH-EAST", 4),
            delta("TEE", "WH-EAST", -1, 1),
        ]);
        let fold = pools[0].1;
        assert_eq!(fold.set, Some(3), "count 4, then -1");
        assert_eq!(fold.reserved, 3, "a count leaves reserved alone");
        assert_eq!(fold.bumps, 3);
    }

    #[test]
    fn only_the_last_state_of_a_reservation_in_a_batch_is_written() {
        let first = Reservation {
            id: "res-1".into(),
            channel: ChannelCode::parse("shopify").unwrap(),
            order_id: OrderId::parse("#1001").unwrap(),
            status: crate::domain::Status::Held,
            lines: Vec::new(),
            allocations: Vec::new(),
            created_at_ms: 1,
            expires_at_ms: 1,
            shipments: Vec::new(),
            refunds: Vec::new(),
            terms: Default::default(),
        };
        let mut last = first.clone();
        last.expires_at_ms = 2;
        let ops = [
            Op::Reservation(Arc::new(first)),
            Op::Reservation(Arc::new(last)),
        ];
        let batch = Batch::fold(&ops).unwrap();
        assert_eq!(batch.reservations.expires_at_ms, vec![2]);
    }

    #[test]
    fn every_set_of_kinds_is_one_statement_numbering_its_arrays_in_bind_order() {
        // The arrays each kind binds, in PARTS order.
        let arrays = [6, 10, 14, 2, 7, 7, 7, 6];
        for kinds in 1..=u8::MAX {
            let text = batch_statement(kinds);
            let present = |bit: usize| kinds & (1 << bit) != 0;
            let expected: usize = (0..8).filter(|&b| present(b)).map(|b| arrays[b]).sum();
            let mut numbers: Vec<usize> = text
                .split('$')
                .skip(1)
                .map(|rest| {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().unwrap()
                })
                .collect();
            numbers.sort_unstable();
            numbers.dedup();
            assert_eq!(numbers, (1..=expected).collect::<Vec<_>>(), "{text}");
            for (bit, (_, part)) in PARTS.iter().enumerate() {
                let name = part.trim_start().split(' ').next().unwrap();
                assert_eq!(text.contains(name), present(bit), "{name} in {text}");
            }
            assert!(
                text.starts_with("WITH ") && text.ends_with(") SELECT 1"),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn every_connection_commits_synchronously_and_bounds_its_statements() {
        let Some(db) = test_pg::TestDb::create().await else {
            return;
        };
        let store = PostgresStore::connect(&db.url).await.unwrap();
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(store.pool.acquire().await.unwrap());
        }
        for conn in &mut conns {
            let settings: (String, String, String) = sqlx::query_as(
                "SELECT current_setting('synchronous_commit'), \
                 current_setting('statement_timeout'), current_setting('application_name')",
            )
            .fetch_one(&mut **conn)
            .await
            .unwrap();
            assert_eq!(
                settings,
                ("on".into(), "5s".into(), "stockpool".into()),
                "synchronous_commit, statement_timeout, application_name"
            );
        }
        drop(conns);
        store.close().await;
    }

    #[test]
    fn a_password_never_appears_in_a_redacted_url() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.internal:5432/stock?sslmode=disable"),
            "postgres://app:***@db.internal:5432/stock?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgresql://app@db/stock?password=s3cret&application_name=x"),
            "postgresql://app@db/stock?password=***&application_name=x"
        );
        assert_eq!(
            redact_url("postgres://localhost/stock"),
            "postgres://localhost/stock"
        );
        assert_eq!(
            redact_url("postgres://a:p%40ss@h/d"),
            "postgres://a:***@h/d",
            "an escaped @ in the password"
        );
    }
}
