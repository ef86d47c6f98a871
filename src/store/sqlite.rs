//! The embedded store: one SQLite file through sqlx, so that stockpool runs
//! with nothing but cargo.
//!
//! It owns the file, its schema (`migrations/sqlite`) and the mapping between
//! rows and domain types. It writes what the engine decided and reads it back;
//! it never decides allocation, and it does not re-validate what the domain
//! already checked.
//!
//! SQLite allows one writer at a time, so one connection writes and a few
//! others read: in WAL mode readers and the writer never block each other.
//!
//! One server process per data directory: `serve` holds [`DataDirLock`]
//! while it runs, and a second one on the same directory refuses to start
//! (two engines over one file would each trust a memory the other changes).

use std::fmt::Display;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Sqlite};
use tokio_stream::StreamExt;

use super::sqlite_batch::Param;
use super::{
    ChannelEvent, LedgerEntry, LedgerRow, MovementKind, MovementRecord, NewOutboxEntry, Op,
    OutboxEntry, OutboxEvent, OutboxLine, OutboxState, OutboxStats, PoolRow, PoolSink, RuleChange,
    Snapshot, Store, StoreError,
};
use crate::domain::{
    Allocation, Channel, ChannelCode, Currency, CustomerRef, InvalidInput, OrderId, OrderTerms,
    Pool, Refund, Reservation, Rule, Sku, Status, Warehouse, WarehouseCode,
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// The database file inside the data directory.
const FILE_NAME: &str = "stockpool.db";
/// Read connections: loads, ledger pages and reloads after a failed commit
/// run beside the writer.
const READERS: u32 = 4;
/// How long a statement waits for a lock held by another connection or
/// process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the WAL is checkpointed into the database file in the
/// background.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL pages (4 KiB) past which the writer checkpoints after a commit
/// (SQLite's default is 1,000).
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;
/// The writer's page cache, in KiB (SQLite's default is 2 MiB). Orders
/// spread over a catalog touch pages all over the pools, ledger and event
/// indexes; with the default cache the writer re-read them from the OS on
/// almost every commit. Not more: at the end of every transaction SQLite
/// scans the cache's whole hash table (`pcache1TruncateUnsafe`), which at
/// 64 MiB was 7% of the writer's time under the catalog load.
const WRITER_CACHE_KIB: u32 = 8 * 1024;
/// SKUs bound per `IN (...)` list, well below SQLite's variable limit.
const SKUS_PER_QUERY: usize = 500;

/// The lock file in the data directory, beside the database.
const LOCK_FILE: &str = "stockpool.lock";

/// The exclusive lock of one server on a data directory (an advisory lock
/// on `<data_dir>/stockpool.lock`, which also holds the holder's process
/// id). The operating system releases it when the process ends, however it
/// ends.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock on `data_dir` (creating the directory), or says which
    /// process holds it.
    pub fn acquire(data_dir: &Path) -> std::io::Result<DataDirLock> {
        use std::io::{Read, Seek, Write};
        std::fs::create_dir_all(data_dir).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot create the data directory {}: {e}",
                    data_dir.display()
                ),
            )
        })?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => String::new(),
                    pid => format!(" (process {pid})"),
                };
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "another stockpool server{holder} is already using the data directory {}: \
                         one directory serves one process; stop it first, or give this one its own \
                         --data-dir (several servers share one Postgres database instead, see \
                         README \"High availability\")",
                        data_dir.display()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot lock {}: {e}", path.display()),
                ))
            }
        }
        // Best effort: the process id is only for the message above.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{}", std::process::id());
        let _ = file.flush();
        Ok(DataDirLock { _file: file })
    }
}

/// The SQLite file `stockpool.db` in a data directory.
pub struct SqliteStore {
    /// The only connection that writes. Commits take the write lock up
    /// front (`BEGIN IMMEDIATE`), so a commit never fails half-way because
    /// another writer got there first.
    writer: SqlitePool,
    /// Connections that only read; WAL lets them see the last commit while
    /// the writer works.
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating) `<data_dir>/stockpool.db`, creating the directory
    /// too, and runs the migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            sqlx::Error::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "cannot create the data directory {}: {e}",
                    data_dir.display()
                ),
            ))
        })?;
        Self::open_file(&data_dir.join(FILE_NAME)).await
    }

    /// Writes a consistent copy of `<data_dir>/stockpool.db` to `target`
    /// with `VACUUM INTO`: one read transaction, so committed rows still in
    /// the WAL are in the copy and a server may keep writing meanwhile.
    /// Refuses a missing store and an existing `target` (nothing is
    /// overwritten). Restoring is copying `target` to `DIR/stockpool.db`
    /// before the server starts.
    pub async fn backup(data_dir: &Path, target: &Path) -> Result<(), StoreError> {
        use sqlx::ConnectOptions;
        let source = data_dir.join(FILE_NAME);
        let refuse = |text: String| {
            StoreError::from(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                text,
            )))
        };
        if !source.is_file() {
            return Err(refuse(format!(
                "no store to back up: {} does not exist (check --data-dir)",
                source.display()
            )));
        }
        if target.exists() {
            return Err(refuse(format!(
                "{} already exists: give a new file name (a backup never overwrites)",
                target.display()
            )));
        }
        let target = target
            .to_str()
            .ok_or_else(|| refuse(format!("{} is not a UTF-8 path", target.display())))?;
        let mut conn = SqliteConnectOptions::new()
            .filename(&source)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT)
            .connect()
            .await?;
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    /// Opens (creating) the database file at `path` and runs the migrations.
    pub async fn open_file(path: &Path) -> Result<Self, StoreError> {
        // FULL: the WAL is synced on every commit, so an acknowledged write
        // survives a power loss, not only a crash of the process.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // The writer checkpoints only when the background checkpoints fall
        // behind by WRITER_CHECKPOINT_PAGES: a checkpoint inside a commit
        // holds up every caller of that batch.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                options
                    .clone()
                    .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES.to_string())
                    .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
                    // A statement that may fail after changing some rows
                    // keeps the pages it changed in a statement journal,
                    // spilled to a temporary file past 64 KiB: in memory,
                    // a batch's journal is a copy, not a file write.
                    .pragma("temp_store", "MEMORY"),
            )
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options)
            .await?;
        tokio::spawn(checkpoints(reader.clone()));
        Ok(SqliteStore { writer, reader })
    }

    /// Closes every connection, waiting for those in use. The last one to
    /// close checkpoints the WAL into the database file.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// Copies committed pages from the WAL into the database file every
/// [`CHECKPOINT_EVERY`], beside the writer (`PASSIVE`: it neither waits for
/// nor blocks a commit), until the store is closed. Under a steady stream of
/// commits it never quite catches up, so the WAL is not started over; the
/// writer's own checkpoint, past [`WRITER_CHECKPOINT_PAGES`], then has only
/// the last pages to copy, and starts it over.
async fn checkpoints(reader: SqlitePool) {
    while !reader.is_closed() {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&reader)
            .await
        {
            if !reader.is_closed() {
                tracing::warn!(error = %crate::telemetry::chain(&e), "WAL checkpoint failed; retrying");
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let mut pools = Vec::new();
        let snapshot = self.load_streaming(&mut pools).await?;
        Ok(Snapshot { pools, ..snapshot })
    }

    async fn load_streaming(&self, sink: &mut dyn PoolSink) -> Result<Snapshot, StoreError> {
        // One read transaction: every table is read at the same commit.
        let mut tx = self.reader.begin().await?;

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

        // The biggest table by far: handed over row by row as it streams.
        sink.expect(&warehouses, 0);
        {
            let mut decoder = PoolDecoder::default();
            let mut rows = sqlx::query_as::<_, PoolRecord>(SELECT_POOLS).fetch(&mut *tx);
            while let Some(row) = rows.next().await {
                sink.pool(decoder.decode(row?)?);
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

    /// One round trip to the writer connection for the whole batch (see
    /// `sqlite_batch`). A statement that fails stops the query before its
    /// `COMMIT`; the open transaction is then rolled back.
    async fn commit(&self, ops: &[Op]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let batch = super::sqlite_batch::encode(ops, now_ms())?;
        let mut conn = self.writer.acquire().await?;
        let mut query = sqlx::query(&batch.sql).persistent(batch.persistent);
        for param in batch.params {
            query = match param {
                Param::Int(v) => query.bind(v),
                Param::Text(v) => query.bind(v),
                Param::Null => query.bind(None::<i64>),
            };
        }
        let Err(e) = query.execute(&mut *conn).await else {
            return Ok(());
        };
        // Nothing is left open when the failure was BEGIN or COMMIT itself,
        // or an `OR ROLLBACK` statement's, and ROLLBACK then says so: that
        // is not an error here.
        if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
            if !rollback.to_string().contains("no transaction is active") {
                tracing::error!(error = %crate::telemetry::chain(&rollback), "ROLLBACK after a failed commit failed; closing the writer connection");
                let _ = conn.detach().close().await;
            }
        }
        Err(e.into())
    }

    async fn load_pools(&self, skus: &[Sku]) -> Result<Vec<PoolRow>, StoreError> {
        let mut tx = self.reader.begin().await?;
        let mut out = Vec::new();
        for chunk in skus.chunks(SKUS_PER_QUERY) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT sku, warehouse, on_hand, reserved, version FROM pools WHERE sku IN (",
            );
            let mut list = query.separated(", ");
            for sku in chunk {
                list.push_bind(sku.as_str());
            }
            query.push(") ORDER BY sku, warehouse");
            // Not cached: every list length is a different statement.
            let rows = query
                .build_query_as::<PoolRecord>()
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?;
            let mut decoder = PoolDecoder::default();
            for row in rows {
                out.push(decoder.decode(row)?);
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn load_reservation(
        &self,
        channel: &ChannelCode,
        order_id: &OrderId,
    ) -> Result<Option<Reservation>, StoreError> {
        sqlx::query_as::<_, ReservationRecord>(SELECT_RESERVATION)
            .bind(channel.as_str())
            .bind(order_id.as_str())
            .fetch_optional(&self.reader)
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
                .fetch_all(&self.reader)
                .await?
        } else {
            sqlx::query_as::<_, RuleChangeRecord>(SELECT_HISTORY_OF_RULE)
                .bind(channel.as_str())
                .bind(sku.map_or("", Sku::as_str))
                .fetch_all(&self.reader)
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
            .fetch_all(&self.reader)
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
                    .fetch_all(&self.reader)
                    .await?
            }
            None => {
                sqlx::query_as::<_, LedgerRecord>(SELECT_LEDGER)
                    .bind(after_id)
                    .bind(limit)
                    .fetch_all(&self.reader)
                    .await?
            }
        };
        rows.into_iter().map(LedgerRecord::into_row).collect()
    }

    async fn outbox_due(&self, now_ms: i64, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        sqlx::query_as::<_, OutboxRecord>(SELECT_OUTBOX_DUE)
            .bind(now_ms)
            .bind(limit.max(0))
            .fetch_all(&self.reader)
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
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .map(OutboxRecord::into_entry)
            .collect()
    }

    async fn outbox_entries(&self, ids: &[i64]) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(SKUS_PER_QUERY) {
            let mut query = QueryBuilder::<Sqlite>::new(OUTBOX_COLUMNS);
            query.push(" WHERE id IN (");
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            query.push(") ORDER BY id");
            let rows = query
                .build_query_as::<OutboxRecord>()
                .persistent(false)
                .fetch_all(&self.reader)
                .await?;
            for row in rows {
                out.push(row.into_entry()?);
            }
        }
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let (pending, dead, oldest) =
            sqlx::query_as::<_, (i64, i64, Option<i64>)>(SELECT_OUTBOX_STATS)
                .fetch_one(&self.reader)
                .await?;
        Ok(OutboxStats {
            pending: u64::try_from(pending).unwrap_or(0),
            dead: u64::try_from(dead).unwrap_or(0),
            oldest_pending_at_ms: oldest,
        })
    }
}

const SELECT_RULES: &str = "\
    SELECT channel, sku, warehouses, fence, share_percent, buffer, max_published, min_published \
    FROM rules ORDER BY channel, sku";

const SELECT_POOLS: &str = "\
    SELECT sku, warehouse, on_hand, reserved, version FROM pools ORDER BY sku, warehouse";

const SELECT_RESERVATIONS: &str = "\
    SELECT channel, order_id, id, status, created_at_ms, expires_at_ms, \
        lines_json, allocations_json, shipments_json, refunds_json, \
        currency, customer_ref, prices_include_tax, unit_prices_json \
    FROM reservations ORDER BY created_at_ms, channel, order_id";

const SELECT_RESERVATION: &str = "\
    SELECT channel, order_id, id, status, created_at_ms, expires_at_ms, \
        lines_json, allocations_json, shipments_json, refunds_json, \
        currency, customer_ref, prices_include_tax, unit_prices_json \
    FROM reservations WHERE channel = ?1 AND order_id = ?2";

const SELECT_LEDGER: &str = "\
    SELECT id, at_ms, sku, warehouse, kind, on_hand_delta, reserved_delta, \
        on_hand_after, reserved_after, reason, reference \
    FROM ledger WHERE id > ?1 ORDER BY id LIMIT ?2";

const SELECT_LEDGER_OF_SKU: &str = "\
    SELECT id, at_ms, sku, warehouse, kind, on_hand_delta, reserved_delta, \
        on_hand_after, reserved_after, reason, reference \
    FROM ledger WHERE sku = ?1 AND id > ?2 ORDER BY id LIMIT ?3";

const SELECT_EVENTS: &str = "\
    SELECT channel, seq, sku, published, atp, at_ms, open FROM channel_events \
    WHERE channel = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";

const SELECT_LATEST_EVENTS: &str = "\
    SELECT e.channel, e.seq, e.sku, e.published, e.atp, e.at_ms, e.open \
    FROM channel_events e \
    JOIN (SELECT channel, sku, MAX(seq) AS seq FROM channel_events GROUP BY channel, sku) m \
        ON e.channel = m.channel AND e.seq = m.seq \
    ORDER BY e.channel, e.seq";

const SELECT_HISTORY_OF_RULE: &str = "\
    SELECT at_ms, changed_by, comment, channel, sku, before_json, after_json \
    FROM rule_history WHERE channel = ?1 AND sku = ?2 ORDER BY id";

const SELECT_HISTORY_OF_CHANNEL: &str = "\
    SELECT at_ms, changed_by, comment, channel, sku, before_json, after_json \
    FROM rule_history WHERE channel = ?1 ORDER BY id";

/// The columns every outbox read selects, in `OutboxRecord`'s shape.
macro_rules! outbox_select {
    () => {
        "SELECT id, created_at_ms, reservation_id, channel, order_id, event, lines_json, state, \
            attempts, last_error, next_attempt_at_ms, updated_at_ms, terms_json FROM outbox"
    };
}

const OUTBOX_COLUMNS: &str = outbox_select!();

const SELECT_OUTBOX_DUE: &str = concat!(
    outbox_select!(),
    " o \
    WHERE state = 'pending' AND next_attempt_at_ms <= ?1 \
      AND NOT EXISTS (SELECT 1 FROM outbox p \
          WHERE p.state = 'pending' AND p.reservation_id = o.reservation_id AND p.id < o.id) \
    ORDER BY id LIMIT ?2"
);

const SELECT_OUTBOX_LIST: &str = concat!(
    outbox_select!(),
    " WHERE (?1 IS NULL OR state = ?1) AND id > ?2 ORDER BY id LIMIT ?3"
);

const SELECT_OUTBOX_STATS: &str = "\
    SELECT \
        (SELECT COUNT(*) FROM outbox WHERE state = 'pending'), \
        (SELECT COUNT(*) FROM outbox WHERE state = 'dead'), \
        (SELECT MIN(created_at_ms) FROM outbox WHERE state = 'pending')";

// Row types and conversions below are shared with the Postgres store
// (`pub(super)`): both stores map rows to domain types with the same code, so
// they report the same data the same way, corrupt rows included.

#[derive(sqlx::FromRow)]
pub(super) struct EventRecord {
    channel: String,
    seq: i64,
    sku: String,
    published: i64,
    atp: i64,
    at_ms: i64,
    open: i64,
}

impl EventRecord {
    pub(super) fn into_event(self) -> Result<ChannelEvent, StoreError> {
        let row = format!("channel event {}/{}", self.channel, self.seq);
        Ok(ChannelEvent {
            channel: code_of(self.channel, "channel_events.channel")?,
            seq: u64::try_from(self.seq).map_err(|e| corrupt(&row, "seq", e))?,
            sku: code_of(self.sku, "channel_events.sku")?,
            published: self.published,
            atp: self.atp,
            open: self.open,
            at_ms: self.at_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RuleChangeRecord {
    at_ms: i64,
    changed_by: String,
    comment: String,
    channel: String,
    sku: String,
    before_json: Option<String>,
    after_json: Option<String>,
}

impl RuleChangeRecord {
    pub(super) fn into_change(self) -> Result<RuleChange, StoreError> {
        let row = format!(
            "rule change {}/{} at {}",
            self.channel, self.sku, self.at_ms
        );
        let rule = |json: Option<String>, column: &str| -> Result<Option<Rule>, StoreError> {
            json.map(|j| from_json::<Rule>(&j, &row, column))
                .transpose()
        };
        Ok(RuleChange {
            at_ms: self.at_ms,
            changed_by: self.changed_by,
            comment: self.comment,
            channel: code_of(self.channel, "rule_history.channel")?,
            sku: if self.sku.is_empty() {
                None
            } else {
                Some(code_of(self.sku, "rule_history.sku")?)
            },
            before: rule(self.before_json, "before_json")?,
            after: rule(self.after_json, "after_json")?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RuleRecord {
    channel: String,
    sku: String,
    warehouses: String,
    fence: Option<i64>,
    share_percent: Option<i64>,
    buffer: Option<i64>,
    max_published: Option<i64>,
    min_published: Option<i64>,
}

impl RuleRecord {
    pub(super) fn into_rule(self) -> Result<Rule, StoreError> {
        let key = format!(
            "rule {}/{}",
            self.channel,
            if self.sku.is_empty() {
                "(default)"
            } else {
                &self.sku
            }
        );
        let sku = match self.sku.as_str() {
            "" => None,
            _ => Some(code_of(self.sku, &key)?),
        };
        let warehouses = match self.warehouses.as_str() {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|w| code_of(w.to_string(), &key))
                .collect::<Result<_, _>>()?,
        };
        let share_percent = self
            .share_percent
            .map(u32::try_from)
            .transpose()
            .map_err(|e| corrupt(&key, "share_percent", e))?;
        Ok(Rule {
            channel: Some(code_of(self.channel, &key)?),
            sku,
            warehouses,
            fence: self.fence,
            share_percent,
            buffer: self.buffer,
            max_published: self.max_published,
            min_published: self.min_published,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct PoolRecord {
    pub(super) sku: String,
    pub(super) warehouse: String,
    pub(super) on_hand: i64,
    pub(super) reserved: i64,
    pub(super) version: i64,
}

/// Turns the pool rows of a load into [`PoolRow`]s as they stream, with one
/// allocation per code rather than two per row: the rows come ordered by SKU,
/// so a SKU's rows share the first one's code, and every row of a warehouse
/// shares one code. At a million SKUs in 3 warehouses that is five million
/// fewer small allocations, whose freed holes would otherwise stay resident
/// beside the SKUs that outlive the load.
#[derive(Default)]
pub(super) struct PoolDecoder {
    sku: Option<Sku>,
    warehouses: Vec<WarehouseCode>,
}

impl PoolDecoder {
    pub(super) fn decode(&mut self, row: PoolRecord) -> Result<PoolRow, StoreError> {
        let key = || format!("pool {}/{}", row.sku, row.warehouse);
        let version = u64::try_from(row.version).map_err(|e| corrupt(&key(), "version", e))?;
        let sku = match &self.sku {
            Some(sku) if sku.as_str() == row.sku => sku.clone(),
            _ => {
                let sku = Sku::try_from(row.sku.clone())
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", key())))?;
                self.sku = Some(sku.clone());
                sku
            }
        };
        let warehouse = match self.warehouses.iter().find(|w| w.as_str() == row.warehouse) {
            Some(w) => w.clone(),
            None => {
                let w = WarehouseCode::try_from(row.warehouse.clone())
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", key())))?;
                self.warehouses.push(w.clone());
                w
            }
        };
        Ok(PoolRow {
            sku,
            warehouse,
            pool: Pool {
                on_hand: row.on_hand,
                reserved: row.reserved,
                version,
            },
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ReservationRecord {
    channel: String,
    order_id: String,
    id: String,
    status: String,
    created_at_ms: i64,
    expires_at_ms: i64,
    lines_json: String,
    allocations_json: String,
    shipments_json: String,
    refunds_json: String,
    currency: String,
    customer_ref: String,
    prices_include_tax: bool,
    unit_prices_json: String,
}

impl ReservationRecord {
    pub(super) fn into_reservation(self) -> Result<Reservation, StoreError> {
        let key = format!("reservation {}/{}", self.channel, self.order_id);
        let status = Status::parse(&self.status)
            .ok_or_else(|| corrupt(&key, "status", format!("unknown status {:?}", self.status)))?;
        let lines: Vec<(Sku, i64)> = from_json(&self.lines_json, &key, "lines_json")?;
        let allocations: Vec<Allocation> =
            from_json(&self.allocations_json, &key, "allocations_json")?;
        let shipments: Vec<String> = from_json(&self.shipments_json, &key, "shipments_json")?;
        let refunds: Vec<Refund> = from_json(&self.refunds_json, &key, "refunds_json")?;
        let unit_prices = from_json(&self.unit_prices_json, &key, "unit_prices_json")?;
        let currency = match self.currency.as_str() {
            "" => None,
            c => Some(Currency::parse("currency", c).map_err(|e| corrupt(&key, "currency", e))?),
        };
        let customer_ref = match self.customer_ref.as_str() {
            "" => None,
            c => Some(
                CustomerRef::parse("customer_ref", c)
                    .map_err(|e| corrupt(&key, "customer_ref", e))?,
            ),
        };
        let terms = OrderTerms::new(currency, customer_ref, self.prices_include_tax, unit_prices)
            .map_err(|e| corrupt(&key, "unit_prices_json", e))?;
        Ok(Reservation {
            id: self.id,
            channel: code_of(self.channel, &key)?,
            order_id: code_of(self.order_id, &key)?,
            status,
            lines,
            allocations,
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            shipments,
            refunds,
            terms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct LedgerRecord {
    id: i64,
    at_ms: i64,
    sku: String,
    warehouse: String,
    kind: String,
    on_hand_delta: i64,
    reserved_delta: i64,
    on_hand_after: i64,
    reserved_after: i64,
    reason: String,
    reference: String,
}

impl LedgerRecord {
    pub(super) fn into_row(self) -> Result<LedgerRow, StoreError> {
        let key = format!("ledger line {}", self.id);
        let kind = MovementKind::parse(&self.kind)
            .ok_or_else(|| corrupt(&key, "kind", format!("unknown kind {:?}", self.kind)))?;
        Ok(LedgerRow {
            id: self.id,
            entry: LedgerEntry {
                at_ms: self.at_ms,
                sku: code_of(self.sku, &key)?,
                warehouse: code_of(self.warehouse, &key)?,
                kind,
                on_hand_delta: self.on_hand_delta,
                reserved_delta: self.reserved_delta,
                on_hand_after: self.on_hand_after,
                reserved_after: self.reserved_after,
                reason: self.reason,
                reference: self.reference,
            },
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct OutboxRecord {
    id: i64,
    created_at_ms: i64,
    reservation_id: String,
    channel: String,
    order_id: String,
    event: String,
    lines_json: String,
    state: String,
    attempts: i32,
    last_error: String,
    next_attempt_at_ms: i64,
    updated_at_ms: i64,
    terms_json: String,
}

impl OutboxRecord {
    pub(super) fn into_entry(self) -> Result<OutboxEntry, StoreError> {
        let key = format!("outbox entry {}", self.id);
        let event = OutboxEvent::parse(&self.event)
            .ok_or_else(|| corrupt(&key, "event", format!("unknown event {:?}", self.event)))?;
        let state = OutboxState::parse(&self.state)
            .ok_or_else(|| corrupt(&key, "state", format!("unknown state {:?}", self.state)))?;
        let lines: Vec<OutboxLine> = from_json(&self.lines_json, &key, "lines_json")?;
        let terms: OrderTerms = from_json(&self.terms_json, &key, "terms_json")?;
        Ok(OutboxEntry {
            id: self.id,
            entry: NewOutboxEntry {
                at_ms: self.created_at_ms,
                reservation_id: self.reservation_id,
                channel: code_of(self.channel, &key)?,
                order_id: code_of(self.order_id, &key)?,
                event,
                lines,
                terms,
            },
            state,
            attempts: u32::try_from(self.attempts).map_err(|e| corrupt(&key, "attempts", e))?,
            last_error: self.last_error,
            next_attempt_at_ms: self.next_attempt_at_ms,
            updated_at_ms: self.updated_at_ms,
        })
    }
}

/// A stored code parsed back into its type; `row` names where it was read.
pub(super) fn code_of<T: TryFrom<String, Error = InvalidInput>>(
    raw: String,
    row: &str,
) -> Result<T, StoreError> {
    T::try_from(raw).map_err(|e| StoreError::Corrupt(format!("{row}: {e}")))
}

pub(super) fn corrupt(row: &str, column: &str, cause: impl Display) -> StoreError {
    StoreError::Corrupt(format!("{row}: {column}: {cause}"))
}

fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    row: &str,
    column: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(row, column, e))
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::WarehouseCode;

    async fn scratch() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).await.expect("open store");
        (dir, store)
    }

    #[tokio::test]
    async fn open_creates_the_data_directory_and_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("nested").join("data");
        let store = SqliteStore::open(&data).await.expect("open store");
        assert!(data.join(FILE_NAME).is_file());
        store.close().await;
    }

    #[tokio::test]
    async fn every_connection_syncs_each_commit_to_disk() {
        let (_dir, store) = scratch().await;
        for pool in [&store.writer, &store.reader] {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(pool)
                .await
                .unwrap();
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(pool)
                .await
                .unwrap();
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(
                (mode.as_str(), sync, fk),
                ("wal", 2, 1),
                "journal_mode, synchronous=FULL, foreign_keys"
            );
        }
        let pages: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(pages, i64::from(WRITER_CHECKPOINT_PAGES));
    }

    #[tokio::test]
    async fn committed_pages_reach_the_database_file_without_the_writer_checkpointing() {
        let (dir, store) = scratch().await;
        let file = dir.path().join(FILE_NAME);
        tokio::time::sleep(CHECKPOINT_EVERY * 3).await;
        let before = std::fs::metadata(&file).unwrap().len();
        let ops: Vec<Op> = (0..2_000)
            .map(|i| Op::PoolDelta {
                sku: Sku::parse(format!("SKU-{i}")).unwrap(),
                warehouse: WarehouseCode::parse("WH-EAST").unwrap(),
                on_hand: 1,
                reserved: 0,
            })
            .collect();
        store.commit(&ops).await.unwrap();
        let mut grown = false;
        for _ in 0..50 {
            tokio::time::sleep(CHECKPOINT_EVERY).await;
            if std::fs::metadata(&file).unwrap().len() > before {
                grown = true;
                break;
            }
        }
        assert!(
            grown,
            "the background checkpoint copied the commit into {file:?}"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn the_ledger_refuses_updates_and_deletes() {
        let (_dir, store) = scratch().await;
        let entry = LedgerEntry {
            at_ms: 1,
            sku: Sku::parse("TEE").unwrap(),
            warehouse: WarehouseCode::parse("WH-EAST").unwrap(),
            kind: MovementKind::Adjust,
            on_hand_delta: 5,
            reserved_delta: 0,
            on_hand_after: 5,
            reserved_after: 0,
            reason: "receipt".into(),
            reference: "m-1".into(),
        };
        store.commit(&[Op::Ledger(entry)]).await.unwrap();
        for sql in ["UPDATE ledger SET on_hand_delta = 6", "DELETE FROM ledger"] {
            let err = sqlx::query(sql)
                .execute(&store.writer)
                .await
                .expect_err(sql);
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
        assert_eq!(store.ledger(None, 0, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_unreadable_reservation_is_reported_by_its_key() {
        let (_dir, store) = scratch().await;
        sqlx::query(
            "INSERT INTO reservations (channel, order_id, id, status, created_at_ms, expires_at_ms, \
                lines_json, allocations_json, shipments_json, refunds_json) \
             VALUES ('shopify', 'ORD-1', 'r-1', 'HELD', 1, 2, '{}', '[]', '[]', '[]')",
        )
        .execute(&store.writer)
        .await
        .unwrap();
        let channel = ChannelCode::parse("shopify").unwrap();
        let order = OrderId::parse("ORD-1").unwrap();
        for result in [
            store.load().await.map(|_| ()),
            store.load_reservation(&channel, &order).await.map(|_| ()),
        ] {
            match result {
                Err(StoreError::Corrupt(msg)) => {
                    assert!(
                        msg.contains("reservation shopify/ORD-1") && msg.contains("lines_json"),
                        "{msg}"
                    )
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_rule_without_a_channel_is_refused() {
        let (_dir, store) = scratch().await;
        let err = store
            .commit(&[Op::PutRule(Rule::default())])
            .await
            .expect_err("no channel");
        let text = format!("{:?}", err);
        assert!(
            text.contains("NOT NULL") && text.contains("rules.channel"),
            "{text}"
        );
    }
}
