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
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};

use super::{
    ChannelEvent, LedgerEntry, LedgerRow, MovementKind, MovementRecord, NewOutboxEntry, Op,
    OutboxEntry, OutboxEvent, OutboxLine, OutboxState, OutboxStats, PoolRow, RuleChange, Snapshot,
    Store, StoreError,
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
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options)
            .await?;
        Ok(SqliteStore { writer, reader })
    }

    /// Closes every connection, waiting for those in use. The last one to
    /// close checkpoints the WAL into the database file.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
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

        let pools = sqlx::query_as::<_, PoolRecord>(SELECT_POOLS)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(PoolRecord::into_row)
            .collect::<Result<Vec<_>, _>>()?;

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
            pools,
            reservations,
            movements,
            published,
        })
    }

    async fn commit(&self, ops: &[Op]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let now_ms = now_ms();
        // On an error the transaction is dropped, which rolls it back.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for op in ops {
            apply(&mut tx, op, now_ms).await?;
        }
        tx.commit().await?;
        Ok(())
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
            for row in rows {
                out.push(row.into_row()?);
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

async fn apply(conn: &mut SqliteConnection, op: &Op, now_ms: i64) -> Result<(), StoreError> {
    let query = match op {
        Op::ChannelEvents(events) => {
            for e in events {
                sqlx::query(INSERT_EVENT)
                    .bind(e.channel.as_str())
                    .bind(i64::try_from(e.seq).map_err(|_| corrupt("channel event", "seq", e.seq))?)
                    .bind(e.sku.as_str())
                    .bind(e.published)
                    .bind(e.atp)
                    .bind(e.at_ms)
                    .execute(&mut *conn)
                    .await?;
            }
            return Ok(());
        }
        Op::RuleChange(c) => sqlx::query(INSERT_RULE_CHANGE)
            .bind(c.at_ms)
            .bind(c.changed_by.as_str())
            .bind(c.comment.as_str())
            .bind(c.channel.as_str())
            .bind(c.sku.as_ref().map_or("", Sku::as_str))
            .bind(c.before.as_ref().map(to_json).transpose()?)
            .bind(c.after.as_ref().map(to_json).transpose()?),
        Op::PoolDelta {
            sku,
            warehouse,
            on_hand,
            reserved,
        } => sqlx::query(POOL_DELTA)
            .bind(sku.as_str())
            .bind(warehouse.as_str())
            .bind(*on_hand)
            .bind(*reserved),
        Op::PoolSetOnHand {
            sku,
            warehouse,
            on_hand,
        } => sqlx::query(POOL_SET_ON_HAND)
            .bind(sku.as_str())
            .bind(warehouse.as_str())
            .bind(*on_hand),
        Op::Ledger(e) => sqlx::query(INSERT_LEDGER)
            .bind(e.at_ms)
            .bind(e.sku.as_str())
            .bind(e.warehouse.as_str())
            .bind(e.kind.as_str())
            .bind(e.on_hand_delta)
            .bind(e.reserved_delta)
            .bind(e.on_hand_after)
            .bind(e.reserved_after)
            .bind(e.reason.as_str())
            .bind(e.reference.as_str()),
        Op::Reservation(r) => sqlx::query(UPSERT_RESERVATION)
            .bind(r.channel.as_str())
            .bind(r.order_id.as_str())
            .bind(r.id.as_str())
            .bind(r.status.as_str())
            .bind(r.created_at_ms)
            .bind(r.expires_at_ms)
            .bind(to_json(&r.lines)?)
            .bind(to_json(&r.allocations)?)
            .bind(to_json(&r.shipments)?)
            .bind(to_json(&r.refunds)?)
            .bind(r.terms.currency.as_ref().map_or("", |c| c.as_str()))
            .bind(r.terms.customer_ref.as_ref().map_or("", |c| c.as_str()))
            .bind(r.terms.prices_include_tax)
            .bind(to_json(&r.terms.unit_prices)?),
        Op::Movement(m) => sqlx::query(INSERT_MOVEMENT)
            .bind(m.movement_id.as_str())
            .bind(m.fingerprint.as_str()),
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
        Op::Outbox(e) => sqlx::query(INSERT_OUTBOX)
            .bind(e.at_ms)
            .bind(e.reservation_id.as_str())
            .bind(e.channel.as_str())
            .bind(e.order_id.as_str())
            .bind(e.event.as_str())
            .bind(to_json(&e.lines)?)
            .bind(to_json(&e.terms)?),
        Op::OutboxUpdate(u) => sqlx::query(UPDATE_OUTBOX)
            .bind(u.id)
            .bind(u.state.as_str())
            .bind(i64::from(u.attempts))
            .bind(u.last_error.as_str())
            .bind(u.next_attempt_at_ms)
            .bind(u.at_ms),
    };
    query.execute(&mut *conn).await?;
    Ok(())
}

const POOL_DELTA: &str = "\
    INSERT INTO pools (sku, warehouse, on_hand, reserved, version) VALUES (?1, ?2, ?3, ?4, 1) \
    ON CONFLICT (sku, warehouse) DO UPDATE SET \
        on_hand = on_hand + excluded.on_hand, \
        reserved = reserved + excluded.reserved, \
        version = version + 1";

const POOL_SET_ON_HAND: &str = "\
    INSERT INTO pools (sku, warehouse, on_hand, reserved, version) VALUES (?1, ?2, ?3, 0, 1) \
    ON CONFLICT (sku, warehouse) DO UPDATE SET on_hand = excluded.on_hand, version = version + 1";

const INSERT_LEDGER: &str = "\
    INSERT INTO ledger (at_ms, sku, warehouse, kind, on_hand_delta, reserved_delta, \
        on_hand_after, reserved_after, reason, reference) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

const UPSERT_RESERVATION: &str = "\
    INSERT INTO reservations (channel, order_id, id, status, created_at_ms, expires_at_ms, \
        lines_json, allocations_json, shipments_json, refunds_json, \
        currency, customer_ref, prices_include_tax, unit_prices_json) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
    ON CONFLICT (channel, order_id) DO UPDATE SET \
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
        unit_prices_json = excluded.unit_prices_json";

const INSERT_MOVEMENT: &str = "INSERT INTO movements (movement_id, fingerprint) VALUES (?1, ?2)";

const UPSERT_WAREHOUSE: &str = "\
    INSERT INTO warehouses (code, name, position) \
    VALUES (?1, ?2, (SELECT COALESCE(MAX(position), 0) + 1 FROM warehouses)) \
    ON CONFLICT (code) DO UPDATE SET name = excluded.name";

const UPSERT_CHANNEL: &str = "\
    INSERT INTO channels (code, name, position) \
    VALUES (?1, ?2, (SELECT COALESCE(MAX(position), 0) + 1 FROM channels)) \
    ON CONFLICT (code) DO UPDATE SET name = excluded.name";

const UPSERT_RULE: &str = "\
    INSERT INTO rules (channel, sku, warehouses, fence, share_percent, buffer, \
        max_published, min_published, updated_at_ms) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
    ON CONFLICT (channel, sku) DO UPDATE SET \
        warehouses = excluded.warehouses, \
        fence = excluded.fence, \
        share_percent = excluded.share_percent, \
        buffer = excluded.buffer, \
        max_published = excluded.max_published, \
        min_published = excluded.min_published, \
        updated_at_ms = excluded.updated_at_ms";

const DELETE_RULE: &str = "DELETE FROM rules WHERE channel = ?1 AND sku = ?2";

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

const INSERT_EVENT: &str = "\
    INSERT INTO channel_events (channel, seq, sku, published, atp, at_ms) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

const SELECT_EVENTS: &str = "\
    SELECT channel, seq, sku, published, atp, at_ms FROM channel_events \
    WHERE channel = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";

const SELECT_LATEST_EVENTS: &str = "\
    SELECT e.channel, e.seq, e.sku, e.published, e.atp, e.at_ms \
    FROM channel_events e \
    JOIN (SELECT channel, sku, MAX(seq) AS seq FROM channel_events GROUP BY channel, sku) m \
        ON e.channel = m.channel AND e.seq = m.seq \
    ORDER BY e.channel, e.seq";

const INSERT_RULE_CHANGE: &str = "\
    INSERT INTO rule_history (at_ms, changed_by, comment, channel, sku, before_json, after_json) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

const SELECT_HISTORY_OF_RULE: &str = "\
    SELECT at_ms, changed_by, comment, channel, sku, before_json, after_json \
    FROM rule_history WHERE channel = ?1 AND sku = ?2 ORDER BY id";

const SELECT_HISTORY_OF_CHANNEL: &str = "\
    SELECT at_ms, changed_by, comment, channel, sku, before_json, after_json \
    FROM rule_history WHERE channel = ?1 ORDER BY id";

const INSERT_OUTBOX: &str = "\
    INSERT INTO outbox (created_at_ms, reservation_id, channel, order_id, event, lines_json, \
        next_attempt_at_ms, updated_at_ms, terms_json) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?1, ?1, ?7)";

const UPDATE_OUTBOX: &str = "\
    UPDATE outbox SET state = ?2, attempts = ?3, last_error = ?4, next_attempt_at_ms = ?5, \
        updated_at_ms = ?6 \
    WHERE id = ?1";

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

impl PoolRecord {
    pub(super) fn into_row(self) -> Result<PoolRow, StoreError> {
        let key = format!("pool {}/{}", self.sku, self.warehouse);
        let version = u64::try_from(self.version).map_err(|e| corrupt(&key, "version", e))?;
        Ok(PoolRow {
            sku: code_of(self.sku, &key)?,
            warehouse: code_of(self.warehouse, &key)?,
            pool: Pool {
                on_hand: self.on_hand,
                reserved: self.reserved,
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
