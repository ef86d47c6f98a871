//! A fresh Postgres database per test, so Postgres tests run in parallel
//! without seeing each other's rows. Included with `#[path]` by every test
//! binary that talks to Postgres; it depends on sqlx and uuid only.
//!
//! The server is `STOCKPOOL_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432`). When it cannot be reached, a test
//! outside CI prints a loud notice and passes without running; under CI
//! (`CI` set to anything but `false` or `0`) it fails, so a green CI run
//! always means the Postgres tests ran.

#![allow(dead_code)]

use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

/// The server tests run against, without a database name.
pub fn server_url() -> String {
    std::env::var("STOCKPOOL_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
        .trim_end_matches('/')
        .to_string()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A database created for one test; dropped (best effort) when this value
/// is dropped, even when the test panicked.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

/// Connects to the maintenance database `postgres`.
async fn maintenance() -> Result<PgConnection, sqlx::Error> {
    let url = format!("{}/postgres", server_url());
    tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url))
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

impl TestDb {
    /// Creates `stockpool_<random>`; None when the server is unreachable
    /// outside CI (after saying so loudly). Panics in CI.
    pub async fn create() -> Option<TestDb> {
        let mut conn = match maintenance().await {
            Ok(conn) => conn,
            Err(e) => {
                if in_ci() {
                    panic!(
                        "Postgres at {} is unreachable ({e}); CI must start it \
                         (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)",
                        server_url()
                    );
                }
                // Written to stderr directly: the test harness captures
                // eprintln! of passing tests, and this must be seen. Once per
                // test binary.
                static NOTICE: std::sync::Once = std::sync::Once::new();
                NOTICE.call_once(|| {
                    use std::io::Write;
                    let _ = writeln!(
                        std::io::stderr(),
                        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                         !! Postgres at {} is unreachable ({e}):\n\
                         !! the Postgres tests are SKIPPED and pass without running.\n\
                         !! Start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
                         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
                        server_url()
                    );
                });
                return None;
            }
        };
        let name = format!("stockpool_{}", uuid::Uuid::new_v4().simple());
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        let _ = conn.close().await;
        let url = format!("{}/{name}", server_url());
        Some(TestDb { name, url })
    }

    /// Runs `sql` in this database on a connection of its own (to set up a
    /// test, or to break the store's connections).
    pub async fn execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        let mut conn = PgConnection::connect(&self.url).await?;
        let done = conn.execute(sql).await?.rows_affected();
        let _ = conn.close().await;
        Ok(done)
    }

    /// Terminates every other connection to this database, as a server
    /// restart or a network cut would; returns how many it ended.
    pub async fn terminate_connections(&self) -> i64 {
        let mut conn = maintenance().await.expect("maintenance connection");
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()) t",
        )
        .bind(&self.name)
        .fetch_one(&mut conn)
        .await
        .expect("terminate connections");
        let _ = conn.close().await;
        ended
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on;
        // a thread of its own with a small runtime drops the database.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = maintenance().await.ok()?;
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .ok()?;
                let _ = conn.close().await;
                Some(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: test database {} was not dropped", self.name);
        }
    }
}
