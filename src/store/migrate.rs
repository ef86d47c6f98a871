//! `stockpool migrate --from sqlite://DIR --to postgres://…`: copies every
//! table of a SQLite store (pools, ledger, reservations, movement ids,
//! warehouses, channels, rules, rule history, channel events, the Odoo
//! outbox) into an empty Postgres database, in one transaction, keeping
//! ids. The Postgres schema comes from its own migrations; each column is
//! read from SQLite as text and cast to the Postgres column's type, so
//! integers, booleans (0/1) and JSON keep their values. Nothing here is
//! used while serving.

use std::path::Path;

use sqlx::{Connection, Row};

use super::{PostgresStore, StoreError};

/// The tables copied, parents before children.
const TABLES: &[&str] = &[
    "warehouses",
    "channels",
    "rules",
    "pools",
    "ledger",
    "reservations",
    "movements",
    "rule_history",
    "channel_events",
    "outbox",
];

/// Most bind parameters in one INSERT (Postgres takes 65535).
const MAX_PARAMS: usize = 30_000;

/// Rows copied per table, in [`TABLES`] order.
pub type Copied = Vec<(&'static str, u64)>;

/// Errors of a migration, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("--from must be sqlite://DIR (the data directory of the SQLite store), got {0:?}")]
    From(String),
    #[error("--to must be a postgres:// or postgresql:// URL")]
    To,
    #[error("no SQLite store at {0}: check --from")]
    NoSource(String),
    #[error(
        "the target database is not empty (table {0} has rows): migrate into a new, empty database"
    )]
    NotEmpty(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("copying {table}: {source}")]
    Copy {
        table: String,
        #[source]
        source: sqlx::Error,
    },
}

/// The data directory of `sqlite://DIR`.
pub fn sqlite_dir(from: &str) -> Result<&Path, MigrateError> {
    from.strip_prefix("sqlite://")
        .filter(|d| !d.is_empty())
        .map(Path::new)
        .ok_or_else(|| MigrateError::From(from.to_string()))
}

/// Copies the SQLite store in `data_dir` into the empty Postgres database
/// at `url` (its schema created first). All or nothing.
pub async fn sqlite_to_postgres(data_dir: &Path, url: &str) -> Result<Copied, MigrateError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(MigrateError::To);
    }
    let file = data_dir.join("stockpool.db");
    if !file.is_file() {
        return Err(MigrateError::NoSource(file.display().to_string()));
    }
    // Brings the SQLite schema up to date (a store of an older version).
    let source = super::SqliteStore::open(data_dir).await?;
    drop(source);
    // Creates the Postgres schema by its migrations.
    let target = PostgresStore::connect(url).await?;
    target.close().await;

    let copy_err = |table: &str| {
        let table = table.to_string();
        move |source| MigrateError::Copy {
            table: table.clone(),
            source,
        }
    };
    let mut lite = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&file)
            .read_only(true),
    )
    .await
    .map_err(copy_err("the SQLite store"))?;
    let mut pg = sqlx::PgConnection::connect(url)
        .await
        .map_err(copy_err("the Postgres database"))?;
    let mut tx = pg
        .begin()
        .await
        .map_err(copy_err("the Postgres database"))?;
    let mut copied = Vec::new();
    for &table in TABLES {
        let has_rows: bool = sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {table})"))
            .fetch_one(&mut *tx)
            .await
            .map_err(copy_err(table))?;
        if has_rows {
            return Err(MigrateError::NotEmpty(table.to_string()));
        }
        // The Postgres columns and their types; SQLite's columns must be
        // among them.
        let pg_columns: Vec<(String, String, bool)> = sqlx::query(
            "SELECT column_name::text, data_type::text, is_identity = 'YES' \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await
        .map_err(copy_err(table))?
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
        let lite_columns: Vec<String> =
            sqlx::query(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .fetch_all(&mut lite)
                .await
                .map_err(copy_err(table))?
                .into_iter()
                .map(|r| r.get::<String, _>(0))
                .collect();
        let columns: Vec<&(String, String, bool)> = pg_columns
            .iter()
            .filter(|(name, _, _)| lite_columns.contains(name))
            .collect();
        let select = format!(
            "SELECT {} FROM {table}",
            columns
                .iter()
                .map(|(c, _, _)| format!("CAST(\"{c}\" AS TEXT)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows: Vec<Vec<Option<String>>> = sqlx::query(&select)
            .fetch_all(&mut lite)
            .await
            .map_err(copy_err(table))?
            .into_iter()
            .map(|r| {
                (0..columns.len())
                    .map(|i| r.get::<Option<String>, _>(i))
                    .collect()
            })
            .collect();
        let identity = columns.iter().any(|(_, _, id)| *id);
        let names = columns
            .iter()
            .map(|(c, _, _)| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let per_insert = (MAX_PARAMS / columns.len().max(1)).max(1);
        for chunk in rows.chunks(per_insert) {
            let mut sql = format!(
                "INSERT INTO {table} ({names}){} VALUES ",
                if identity {
                    " OVERRIDING SYSTEM VALUE"
                } else {
                    ""
                }
            );
            let mut n = 0;
            for (r, _) in chunk.iter().enumerate() {
                if r > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for (c, (_, ty, _)) in columns.iter().enumerate() {
                    n += 1;
                    if c > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("${n}::text::{}", pg_type(ty)));
                }
                sql.push(')');
            }
            let mut q = sqlx::query(&sql);
            for row in chunk {
                for value in row {
                    q = q.bind(value.clone());
                }
            }
            q.execute(&mut *tx).await.map_err(copy_err(table))?;
        }
        for (c, _, id) in &columns {
            if *id {
                sqlx::query(&format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{c}'), \
                     COALESCE((SELECT max(\"{c}\") FROM {table}), 0) + 1, false)"
                ))
                .execute(&mut *tx)
                .await
                .map_err(copy_err(table))?;
            }
        }
        copied.push((table, rows.len() as u64));
    }
    tx.commit().await.map_err(copy_err("the commit"))?;
    Ok(copied)
}

/// The SQL type to cast a text value to for an information_schema type.
fn pg_type(data_type: &str) -> &str {
    match data_type {
        "character varying" => "varchar",
        "timestamp with time zone" => "timestamptz",
        "timestamp without time zone" => "timestamp",
        "double precision" => "float8",
        "ARRAY" => "text[]",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_must_name_a_sqlite_directory() {
        assert_eq!(
            sqlite_dir("sqlite:///var/lib/sp").unwrap(),
            Path::new("/var/lib/sp")
        );
        assert_eq!(sqlite_dir("sqlite://data").unwrap(), Path::new("data"));
        let e = sqlite_dir("/var/lib/sp").unwrap_err().to_string();
        assert!(e.contains("sqlite://DIR"), "{e}");
        assert!(sqlite_dir("sqlite://").is_err());
    }
}
