//! Who should hold the SQLite writer connection: sqlx, as the store does, or
//! a thread of our own with rusqlite (on the same bundled libsqlite3)? The
//! same group-commit transaction as `benches/store.rs` (N one-line orders of
//! one hot SKU: a pool delta, a ledger line and a reservation each, for N of
//! 1, 32 and 256), committed three ways, each on a fresh database made by
//! `SqliteStore::open` (so the migrations ran and its WAL checkpoints run
//! beside it), all with the store's durability: WAL, `synchronous=FULL`,
//! `foreign_keys`, `wal_autocheckpoint=10000`:
//!
//! - `sqlx_values`: what ships, `SqliteStore::commit`, one multi-statement
//!   query (`BEGIN IMMEDIATE`, one multi-row `VALUES` statement per kind of
//!   row and chunk, `COMMIT`) handed to sqlx's worker thread;
//! - `thread_values`: the same statements and the same bound values
//!   (`encode_sqlite_batch`, what the store sends), run by a dedicated OS
//!   thread that owns a rusqlite connection, each statement
//!   `prepare_cached`;
//! - `thread_rows`: that thread again, with one `prepare_cached`
//!   INSERT/UPSERT per row and plain binds, no JSON (pools folded first, as
//!   the store does: one pool row per batch).
//!
//! Each batch is timed from the tokio task that commits it, as the
//! group-commit writer does: the hand-off to the thread (a std channel) and
//! the wake-up back (a `tokio::sync::oneshot`) are in the figure, so is the
//! encoding done in the task. After each variant, a pass of a few hundred
//! batches counts the context switches of every thread of the process
//! (`/proc/self/task/*/status`) per batch and prints them, by thread name.
//!
//! `cargo bench --bench sqlite_writer` (the databases are in a temporary
//! directory: `TMPDIR` picks the disk whose flush is measured;
//! `TMPDIR=/dev/shm` takes the flush out and leaves the CPU and the
//! hand-offs, which is what tells the three apart on a busy machine).
//! Figures and the decision they led to: README, "How fast".

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rusqlite::{params, Connection};
use stockpool::store::{encode_sqlite_batch, Op, SqliteParam, SqliteStore, Store};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// Batches per size in the context-switch pass.
const COUNTED: u64 = 200;

/// What the writer thread is asked to commit.
enum Work {
    /// `encode_sqlite_batch`'s query and values: one statement per kind
    /// and chunk.
    Same {
        sql: String,
        params: Vec<rusqlite::types::Value>,
    },
    /// The ops themselves: one statement per row.
    Rows(Vec<Op>),
}

struct Job {
    work: Work,
    done: oneshot::Sender<rusqlite::Result<()>>,
}

/// One way to commit a batch, called from a tokio task.
#[derive(Clone)]
enum Writer {
    Sqlx(Arc<SqliteStore>),
    Thread { jobs: mpsc::Sender<Job>, same: bool },
}

impl Writer {
    async fn commit(&self, ops: Vec<Op>) {
        match self {
            Writer::Sqlx(store) => store.commit(&ops).await.unwrap(),
            Writer::Thread { jobs, same } => {
                let work = if *same {
                    // Encoded in the task, as `SqliteStore::commit` does.
                    let batch = encode_sqlite_batch(&ops, 1_700_000_000_000).unwrap();
                    Work::Same {
                        sql: batch.sql.into_owned(),
                        params: batch.params.into_iter().map(value).collect(),
                    }
                } else {
                    Work::Rows(ops)
                };
                let (done, answer) = oneshot::channel();
                jobs.send(Job { work, done }).expect("writer thread alive");
                answer.await.expect("writer thread answers").unwrap();
            }
        }
    }
}

/// A value of the store's encoding, owned, for the writer thread.
fn value(param: SqliteParam<'_>) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match param {
        SqliteParam::Int(v) => Value::Integer(v),
        SqliteParam::Text(v) => Value::Text(v.into_owned()),
        SqliteParam::Null => Value::Null,
    }
}

/// The writer thread's connection, set up as `SqliteStore::open_file` sets
/// up its writer.
fn connect(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)
        .unwrap();
    conn.set_prepared_statement_cache_capacity(64);
    conn
}

/// The dedicated writer: owns its connection, commits one job at a time
/// until every sender is gone.
fn writer_thread(path: PathBuf, jobs: mpsc::Receiver<Job>) {
    let conn = connect(&path);
    for job in jobs {
        let outcome = transaction(&conn, &job.work);
        if outcome.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        let _ = job.done.send(outcome);
    }
}

fn transaction(conn: &Connection, work: &Work) -> rusqlite::Result<()> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    match work {
        Work::Same { sql, params } => {
            // The query is `BEGIN IMMEDIATE;`, one statement per line, and
            // `COMMIT;`; the values are bound in order across them.
            let mut lines = sql.lines();
            assert_eq!(lines.next(), Some("BEGIN IMMEDIATE;"));
            assert_eq!(lines.next_back(), Some("COMMIT;"));
            let mut values = params.iter();
            for statement in lines {
                let statement = statement.strip_suffix(';').expect("one statement a line");
                let mut prepared = conn.prepare_cached(statement)?;
                let count = prepared.parameter_count();
                prepared.execute(rusqlite::params_from_iter(values.by_ref().take(count)))?;
            }
            assert!(values.next().is_none());
        }
        Work::Rows(ops) => rows(conn, ops)?,
    }
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok(())
}

/// One statement per row: the pools folded (summed deltas, one version bump
/// per delta), then the ledger lines and the reservations in op order.
fn rows(conn: &Connection, ops: &[Op]) -> rusqlite::Result<()> {
    // (sku, warehouse) → (on_hand delta, reserved delta, version bumps).
    type Folded<'a> = ((&'a str, &'a str), (i64, i64, i64));
    let mut pools: Vec<Folded<'_>> = Vec::new();
    for op in ops {
        if let Op::PoolDelta {
            sku,
            warehouse,
            on_hand,
            reserved,
        } = op
        {
            let key = (sku.as_str(), warehouse.as_str());
            match pools.iter_mut().find(|(k, _)| *k == key) {
                Some((_, f)) => *f = (f.0 + on_hand, f.1 + reserved, f.2 + 1),
                None => pools.push((key, (*on_hand, *reserved, 1))),
            }
        }
    }
    let mut pool = conn.prepare_cached(
        "INSERT INTO pools (sku, warehouse, on_hand, reserved, version) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (sku, warehouse) DO UPDATE SET \
             on_hand = on_hand + excluded.on_hand, \
             reserved = reserved + excluded.reserved, \
             version = version + excluded.version",
    )?;
    for ((sku, warehouse), (on_hand, reserved, bumps)) in pools {
        pool.execute(params![sku, warehouse, on_hand, reserved, bumps])?;
    }
    let mut ledger = conn.prepare_cached(
        "INSERT INTO ledger (at_ms, sku, warehouse, kind, on_hand_delta, reserved_delta, \
             on_hand_after, reserved_after, reason, reference) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for op in ops {
        if let Op::Ledger(e) = op {
            ledger.execute(params![
                e.at_ms,
                e.sku.as_str(),
                e.warehouse.as_str(),
                e.kind.as_str(),
                e.on_hand_delta,
                e.reserved_delta,
                e.on_hand_after,
                e.reserved_after,
                e.reason,
                e.reference,
            ])?;
        }
    }
    let mut reservation = conn.prepare_cached(
        "INSERT INTO reservations (channel, order_id, id, status, created_at_ms, expires_at_ms, \
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
             unit_prices_json = excluded.unit_prices_json",
    )?;
    for op in ops {
        if let Op::Reservation(r) = op {
            reservation.execute(params![
                r.channel.as_str(),
                r.order_id.as_str(),
                r.id,
                r.status.as_str(),
                r.created_at_ms,
                r.expires_at_ms,
                json(&r.lines),
                json(&r.allocations),
                json(&r.shipments),
                json(&r.refunds),
                r.terms.currency.as_ref().map_or("", |c| c.as_str()),
                r.terms.customer_ref.as_ref().map_or("", |c| c.as_str()),
                r.terms.prices_include_tax,
                json(&r.terms.unit_prices),
            ])?;
        }
    }
    for op in ops {
        assert!(
            matches!(
                op,
                Op::PoolDelta { .. } | Op::Ledger(_) | Op::Reservation(_)
            ),
            "only the hot workload's ops"
        );
    }
    Ok(())
}

/// A column that holds JSON, written as the store writes it.
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

/// Context switches so far of each thread of this process, by thread name:
/// (voluntary, involuntary).
fn switches() -> BTreeMap<String, (u64, u64)> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let name = field("Name:").unwrap_or_default();
        // Numbered threads (sqlx's workers) count as one name.
        let name = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        let count = |f: &str| field(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let entry = by_name.entry(name.to_string()).or_insert((0, 0));
        entry.0 += count("voluntary_ctxt_switches:");
        entry.1 += count("nonvoluntary_ctxt_switches:");
    }
    by_name
}

/// Commits `COUNTED` batches of each size from one tokio task and prints
/// the mean time and the context switches per batch, by thread.
fn count_switches(rt: &Runtime, name: &str, writer: &Writer, next: &Arc<AtomicU64>) {
    for orders in support::BATCHES {
        let (writer, next) = (writer.clone(), next.clone());
        let (elapsed, before, after) = rt
            .block_on(rt.spawn(async move {
                let before = switches();
                let mut elapsed = Duration::ZERO;
                for _ in 0..COUNTED {
                    let ops = support::hot_batch(&next, orders);
                    let start = Instant::now();
                    writer.commit(ops).await;
                    elapsed += start.elapsed();
                }
                (elapsed, before, switches())
            }))
            .unwrap();
        let per = |n: u64| n as f64 / COUNTED as f64;
        let mut total = (0, 0);
        let mut threads = Vec::new();
        for (thread, (v, i)) in &after {
            let (v0, i0) = before.get(thread).copied().unwrap_or((0, 0));
            let (v, i) = (v - v0.min(*v), i - i0.min(*i));
            total = (total.0 + v, total.1 + i);
            if v + i >= COUNTED / 10 {
                threads.push(format!("{thread} {:.1}+{:.1}", per(v), per(i)));
            }
        }
        println!(
            "switches {name}/{orders}: {:.1} µs a batch, {:.1} voluntary + {:.1} involuntary \
             context switches a batch ({})",
            elapsed.as_secs_f64() * 1e6 / COUNTED as f64,
            per(total.0),
            per(total.1),
            threads.join(", ")
        );
    }
}

/// Every variant wrote the same rows: as many reservations and ledger lines
/// as the hot pool counted reservations, and one version bump each.
fn check(path: &Path, name: &str) {
    let conn = Connection::open(path).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |row| row.get::<_, i64>(0)).unwrap();
    let reservations = count("SELECT COUNT(*) FROM reservations WHERE json_valid(lines_json)");
    let ledger = count("SELECT COUNT(*) FROM ledger");
    let reserved = count("SELECT reserved FROM pools WHERE sku = 'HOT'");
    let version = count("SELECT version FROM pools WHERE sku = 'HOT'");
    assert!(reservations > 0, "{name}: nothing committed");
    assert_eq!(
        [ledger, reserved, version],
        [reservations; 3],
        "{name}: ledger lines, pool reserved and version against reservations"
    );
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group("sqlite_writer");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for name in ["sqlx_values", "thread_values", "thread_rows"] {
        // A fresh database each: the schema from the store's migrations,
        // and the store's background checkpoints running on it.
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(rt.block_on(SqliteStore::open(dir.path())).unwrap());
        let (writer, thread) = match name {
            "sqlx_values" => (Writer::Sqlx(store.clone()), None),
            _ => {
                let (jobs, receiver) = mpsc::channel();
                let path = dir.path().join("stockpool.db");
                let thread = std::thread::Builder::new()
                    .name("rusqlite-writer".into())
                    .spawn(move || writer_thread(path, receiver))
                    .unwrap();
                let same = name == "thread_values";
                (Writer::Thread { jobs, same }, Some(thread))
            }
        };
        for orders in support::BATCHES {
            group.throughput(Throughput::Elements(orders));
            group.bench_with_input(BenchmarkId::new(name, orders), &orders, |b, &orders| {
                b.iter_custom(|iters| {
                    let (writer, next) = (writer.clone(), next.clone());
                    rt.block_on(rt.spawn(async move {
                        let mut elapsed = Duration::ZERO;
                        for _ in 0..iters {
                            let ops = support::hot_batch(&next, orders);
                            let start = Instant::now();
                            writer.commit(ops).await;
                            elapsed += start.elapsed();
                        }
                        elapsed
                    }))
                    .unwrap()
                })
            });
        }
        count_switches(&rt, name, &writer, &next);
        drop(writer);
        if let Some(thread) = thread {
            thread.join().unwrap();
        }
        rt.block_on(store.close());
        check(&dir.path().join("stockpool.db"), name);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
