//! The adapter's durable state, in an SQLite file of its own (WAL,
//! `synchronous=FULL`): nothing here is stockpool's, and all of it can be
//! rebuilt from a stream snapshot except the list for ops.
//!
//! - `cursor`: the last stream `seq` stored, per stream name.
//! - `levels`: the newest level of every SKU (`published`, `open`, `seq`,
//!   `at_ms`), and `written_seq`, the seq last written to the channel. A
//!   SKU is due while `seq > written_seq` or it is marked for
//!   reconciliation: however many updates arrive while the channel is
//!   down, each SKU waits once, at its newest level (coalescing). The
//!   cursor and the levels it covers are stored in one transaction, so a
//!   restart resumes exactly after what is stored.
//! - `unapplied`: what can never apply (an order line without a SKU, an
//!   order stockpool refused), with the reason: listed at `/unapplied`.
//!
//! Adapters add their own tables through [`StateDb::pool`].

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// One SKU's newest level as the stream told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelRow {
    pub sku: String,
    pub published: i64,
    pub open: i64,
    pub seq: u64,
    /// When stockpool committed the change (ms since the epoch).
    pub at_ms: i64,
    /// Set by a reconciliation: write (and count a difference) even when
    /// nothing new arrived.
    pub reconcile: bool,
    /// Whether `seq` was never written (false: only the reconciliation).
    pub fresh: bool,
}

/// An event that can never apply, kept for ops.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unapplied {
    pub id: i64,
    pub at_ms: i64,
    /// Where it came from, e.g. `orders/create`.
    pub source: String,
    /// The channel's own reference, e.g. the order id.
    pub reference: String,
    pub reason: String,
}

/// The state database. Cheap to clone.
#[derive(Clone)]
pub struct StateDb {
    pool: SqlitePool,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS cursor (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS levels (
        sku TEXT PRIMARY KEY,
        published INTEGER NOT NULL,
        open INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        written_seq INTEGER NOT NULL DEFAULT 0,
        reconcile INTEGER NOT NULL DEFAULT 0
    )",
    "CREATE INDEX IF NOT EXISTS levels_due ON levels (seq, written_seq)",
    "CREATE TABLE IF NOT EXISTS unapplied (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        source TEXT NOT NULL,
        reference TEXT NOT NULL,
        reason TEXT NOT NULL,
        UNIQUE (source, reference, reason)
    )",
];

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl StateDb {
    /// Opens (creating) `dir/<name>.db` and its tables.
    pub async fn open(dir: &Path, name: &str) -> anyhow::Result<StateDb> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("state_dir {}: {e}", dir.display()))?;
        let path = dir.join(format!("{name}.db"));
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        Ok(StateDb { pool })
    }

    /// For an adapter's own tables.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The stored cursor of `stream` (0: none, start from a snapshot).
    pub async fn cursor(&self, stream: &str) -> anyhow::Result<u64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM cursor WHERE stream = ?1")
            .bind(stream)
            .fetch_optional(&self.pool)
            .await?;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// Stores `updates` (newest level per SKU wins, by seq) and moves the
    /// cursor of `stream` to `cursor`, in one transaction.
    pub async fn store_levels(
        &self,
        stream: &str,
        cursor: u64,
        updates: &[(String, i64, i64, u64, i64)],
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for (sku, published, open, seq, at_ms) in updates {
            sqlx::query(
                "INSERT INTO levels (sku, published, open, seq, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (sku) DO UPDATE SET published = excluded.published,
                    open = excluded.open, seq = excluded.seq, at_ms = excluded.at_ms
                 WHERE excluded.seq > levels.seq",
            )
            .bind(sku)
            .bind(published)
            .bind(open)
            .bind(*seq as i64)
            .bind(at_ms)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO cursor (stream, seq) VALUES (?1, ?2)
             ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq",
        )
        .bind(stream)
        .bind(cursor as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the stream's numbering (before a snapshot from a server whose
    /// log restarted): the cursor goes to 0 and no SKU is due until the
    /// snapshot brings its level again.
    pub async fn reset_stream(&self, stream: &str) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE levels SET seq = 0, written_seq = 0, reconcile = 0")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM cursor WHERE stream = ?1")
            .bind(stream)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` SKUs due for a write, oldest change first.
    pub async fn due(&self, limit: i64) -> anyhow::Result<Vec<LevelRow>> {
        let rows = sqlx::query(
            "SELECT sku, published, open, seq, at_ms, reconcile, seq > written_seq AS fresh
             FROM levels WHERE seq > written_seq OR reconcile = 1 ORDER BY seq LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| LevelRow {
                sku: r.get("sku"),
                published: r.get("published"),
                open: r.get("open"),
                seq: r.get::<i64, _>("seq").max(0) as u64,
                at_ms: r.get("at_ms"),
                reconcile: r.get::<i64, _>("reconcile") != 0,
                fresh: r.get::<i64, _>("fresh") != 0,
            })
            .collect())
    }

    /// How many SKUs wait for a write.
    pub async fn due_count(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM levels WHERE seq > written_seq OR reconcile = 1",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Marks each (sku, seq) written; a SKU whose level moved on since
    /// stays due for its newer level, and one whose numbering was reset
    /// meanwhile ([`Self::reset_stream`]) is left as the reset made it.
    pub async fn written(&self, done: &[(String, u64)]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for (sku, seq) in done {
            sqlx::query(
                "UPDATE levels SET written_seq = MAX(written_seq, ?2),
                    reconcile = CASE WHEN seq <= ?2 THEN 0 ELSE reconcile END
                 WHERE sku = ?1 AND seq >= ?2",
            )
            .bind(sku)
            .bind(*seq as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks every SKU for reconciliation; returns how many.
    pub async fn mark_all_for_reconcile(&self) -> anyhow::Result<u64> {
        Ok(sqlx::query("UPDATE levels SET reconcile = 1")
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Records an event that can never apply; the same (source, reference,
    /// reason) is listed once. Returns whether it was new.
    pub async fn unapplied(
        &self,
        source: &str,
        reference: &str,
        reason: &str,
    ) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "INSERT INTO unapplied (at_ms, source, reference, reason) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
        )
        .bind(now_ms())
        .bind(source)
        .bind(reference)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The list for ops, newest first.
    pub async fn list_unapplied(&self, limit: i64) -> anyhow::Result<Vec<Unapplied>> {
        let rows = sqlx::query(
            "SELECT id, at_ms, source, reference, reason FROM unapplied ORDER BY id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Unapplied {
                id: r.get("id"),
                at_ms: r.get("at_ms"),
                source: r.get("source"),
                reference: r.get("reference"),
                reason: r.get("reason"),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(sku: &str, published: i64, seq: u64) -> (String, i64, i64, u64, i64) {
        (sku.to_string(), published, 0, seq, 1)
    }

    #[tokio::test]
    async fn each_sku_waits_once_at_its_newest_level_and_the_cursor_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path(), "t").await.unwrap();
        assert_eq!(db.cursor("s").await.unwrap(), 0);
        db.store_levels("s", 3, &[up("A", 5, 1), up("B", 2, 2), up("A", 4, 3)])
            .await
            .unwrap();
        // An older update arriving late does not replace a newer one.
        db.store_levels("s", 3, &[up("A", 9, 1)]).await.unwrap();
        let due = db.due(10).await.unwrap();
        assert_eq!(
            due.iter()
                .map(|r| (r.sku.as_str(), r.published, r.seq))
                .collect::<Vec<_>>(),
            vec![("B", 2, 2), ("A", 4, 3)]
        );
        db.written(&[("A".into(), 3)]).await.unwrap();
        db.store_levels("s", 4, &[up("B", 1, 4)]).await.unwrap();
        db.written(&[("B".into(), 2)]).await.unwrap();
        let due = db.due(10).await.unwrap();
        assert_eq!(
            due.len(),
            1,
            "B moved on after the write: still due at seq 4"
        );
        assert_eq!((due[0].sku.as_str(), due[0].seq), ("B", 4));
        drop(db);
        let db = StateDb::open(dir.path(), "t").await.unwrap();
        assert_eq!(db.cursor("s").await.unwrap(), 4);
        assert_eq!(db.due_count().await.unwrap(), 1);
        assert_eq!(db.mark_all_for_reconcile().await.unwrap(), 2);
        let due = db.due(10).await.unwrap();
        assert!(due.iter().any(|r| r.sku == "A" && r.reconcile && !r.fresh));
    }

    #[tokio::test]
    async fn the_same_unapplied_event_is_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path(), "t").await.unwrap();
        assert!(db.unapplied("orders/create", "1", "no SKU").await.unwrap());
        assert!(!db.unapplied("orders/create", "1", "no SKU").await.unwrap());
        assert_eq!(db.list_unapplied(10).await.unwrap().len(), 1);
    }
}
