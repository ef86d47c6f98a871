//! `stockpool bench`: a load generator for a running server, over the same
//! gRPC contract as every other client.
//!
//! It stocks its own SKUs (`BENCH-…`, in every declared warehouse), then
//! drives one workload for a while and reports what it measured:
//!
//! - **closed loop** (`--clients N`): N callers, each sending its next
//!   request when the last one is answered;
//! - **open loop** (`--rate R`): requests due at a fixed rate whatever the
//!   server does, each timed from when it was *due*, so a stall shows as
//!   the latency of every request queued behind it rather than as a pause
//!   in the load (coordinated omission).
//!
//! Beside the load a probe reserves one unit of its own SKU every
//! `--probe-every-ms` and a `WatchChannelStock` watcher times how long after
//! the acknowledgement the new level reaches it. Before and after, the
//! server's `/metrics` are read for the group-commit batch sizes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{refused, Conn, Inventory};
use crate::api::pb;

/// What the bench drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// One-unit orders of one SKU: a flash sale.
    Hot,
    /// Orders of 1 to 3 lines over `--skus` SKUs.
    Catalog,
    /// Held orders over `--skus` SKUs, each then confirmed and shipped.
    Lifecycle,
}

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// `stockpool bench` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// What to drive.
    #[arg(long, value_enum, default_value_t = Workload::Hot)]
    pub workload: Workload,
    /// Closed loop: this many concurrent callers (ignored with --rate).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Open loop: orders per second, each timed from when it was due.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// How long to drive the load, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0)]
    pub duration: f64,
    /// HTTP/2 connections the load is spread over.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// SKUs of the catalog and lifecycle workloads.
    #[arg(long, default_value_t = 10_000)]
    pub skus: usize,
    /// The channel the orders are placed on.
    #[arg(long, default_value = "shopify")]
    pub channel: String,
    /// The server's metrics endpoint, for the commit batch sizes.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:9464/metrics"
    )]
    pub metrics: String,
    /// How often the commit-to-watcher probe reserves (0: no probe).
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pub probe_every_ms: u64,
    /// Skip stocking the SKUs (they were stocked by an earlier run).
    #[arg(long)]
    pub no_setup: bool,
    /// `json` for machines (set by the global `-o`).
    #[arg(skip = Format::Text)]
    pub output: Format,
}

/// Units put in every pool of a bench SKU: plenty for any run.
const STOCK: i64 = 1_000_000_000;
/// How long the probe waits for its level change before counting it lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long in-flight requests may take to finish after the load stops.
const DRAIN: Duration = Duration::from_secs(10);

/// Latency figures of one kind of call, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// From samples in nanoseconds (sorted in place).
    fn of(samples: &mut [u64]) -> Latency {
        samples.sort_unstable();
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i] as f64 / 1e6
        };
        Latency {
            count: samples.len() as u64,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: at(1.0),
        }
    }
}

/// The server's group commits during the run, from its histogram.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Batches {
    /// Transactions committed during the run.
    pub commits: u64,
    /// Jobs (writes) per transaction, on average.
    pub mean_jobs: f64,
    /// Upper bound of the histogram bucket holding the median / 99th
    /// percentile transaction.
    pub p50_jobs_at_most: f64,
    pub p99_jobs_at_most: f64,
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    pub workload: Workload,
    /// `closed` or `open`.
    pub mode: &'static str,
    pub clients: usize,
    pub rate: Option<f64>,
    pub seconds: f64,
    /// Orders accepted (lifecycle: orders taken through all three steps).
    pub orders: u64,
    pub orders_per_second: f64,
    /// Calls refused or failed, by gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// Per RPC: Reserve, and Confirm and Fulfill for the lifecycle.
    pub latency: BTreeMap<String, Latency>,
    /// None when the metrics endpoint could not be read.
    pub commit_batches: Option<Batches>,
    /// From the probe's acknowledged Reserve to the watcher's receipt of
    /// the level it caused (0 when the level arrived first); None without
    /// a probe.
    pub watch_lag: Option<Latency>,
    /// Probe changes the watcher never showed within 2 s.
    pub watch_lost: u64,
    /// `/proc/loadavg` at the end: the 1, 5 and 15 minute load averages.
    pub load_average: String,
}

/// Samples shared by the callers.
#[derive(Default)]
struct Samples {
    latency: Mutex<BTreeMap<&'static str, Vec<u64>>>,
    errors: Mutex<BTreeMap<String, u64>>,
    orders: AtomicU64,
}

impl Samples {
    fn record(&self, rpc: &'static str, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(rpc)
            .or_default()
            .push(ns);
    }

    fn error(&self, status: &tonic::Status) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(crate::api::error::code_name(status.code()).to_string())
            .or_default() += 1;
    }
}

/// Runs the bench against `server` and returns its report (printing is the
/// caller's).
pub async fn run(
    server: &str,
    token: Option<&str>,
    ca_file: Option<&std::path::Path>,
    args: &BenchArgs,
) -> anyhow::Result<Report> {
    if args.duration <= 0.0 {
        bail!("--duration must be more than 0 seconds");
    }
    if args.rate.is_some_and(|r| r <= 0.0 || !r.is_finite()) {
        bail!("--rate must be a positive number of orders per second");
    }
    let mut conns = Vec::new();
    for _ in 0..args.connections.max(1) {
        conns.push(Conn::open(server, token, ca_file).await?.inventory());
    }
    let run_id = format!("{:x}", crate::cli::output::now_ms());
    let warehouses = warehouses(&mut conns[0].clone()).await?;
    let skus: Vec<String> = match args.workload {
        Workload::Hot => vec!["BENCH-HOT".to_string()],
        Workload::Catalog | Workload::Lifecycle => (0..args.skus.max(1))
            .map(|i| format!("BENCH-{i}"))
            .collect(),
    };
    let probe_sku = format!("BENCH-PROBE-{run_id}");
    if !args.no_setup {
        stock(&conns, &skus, &warehouses).await?;
    }
    if args.probe_every_ms > 0 {
        stock(&conns[..1], std::slice::from_ref(&probe_sku), &warehouses).await?;
    }

    let before = scrape(&args.metrics).await.ok();
    let samples = Arc::new(Samples::default());
    let stop = Arc::new(AtomicBool::new(false));
    let probe = (args.probe_every_ms > 0).then(|| {
        let inv = conns[0].clone();
        let stop = stop.clone();
        let channel = args.channel.clone();
        let every = Duration::from_millis(args.probe_every_ms);
        let (sku, run) = (probe_sku.clone(), run_id.clone());
        tokio::spawn(async move { probe_lag(inv, channel, sku, run, every, stop).await })
    });

    let load = Load {
        workload: args.workload,
        channel: args.channel.clone(),
        skus: Arc::new(skus),
        run_id,
        next: Arc::new(AtomicU64::new(0)),
        samples: samples.clone(),
    };
    let duration = Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    match args.rate {
        None => closed_loop(&load, &conns, args.clients.max(1), duration).await,
        Some(rate) => open_loop(&load, &conns, rate, duration).await,
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let (watch_lag, watch_lost) = match probe {
        Some(task) => {
            let (mut lags, lost) = task.await.context("the probe stopped")??;
            (Some(Latency::of(&mut lags)), lost)
        }
        None => (None, 0),
    };
    let after = scrape(&args.metrics).await.ok();

    let orders = samples.orders.load(Ordering::SeqCst);
    let errors = samples
        .errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut latency = BTreeMap::new();
    for (rpc, mut v) in
        std::mem::take(&mut *samples.latency.lock().unwrap_or_else(|p| p.into_inner()))
    {
        latency.insert(rpc.to_string(), Latency::of(&mut v));
    }
    Ok(Report {
        workload: args.workload,
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        clients: if args.rate.is_some() {
            0
        } else {
            args.clients.max(1)
        },
        rate: args.rate,
        seconds,
        orders,
        orders_per_second: orders as f64 / seconds,
        errors,
        latency,
        commit_batches: before.zip(after).map(|(b, a)| batches(&b, &a)),
        watch_lag,
        watch_lost,
        load_average: std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    })
}

/// The declared warehouses, as GetStock lists them for any SKU.
async fn warehouses(inv: &mut Inventory) -> anyhow::Result<Vec<String>> {
    let levels = inv
        .get_stock(pb::GetStockRequest {
            skus: vec!["BENCH-HOT".into()],
            ..Default::default()
        })
        .await
        .map_err(refused)?
        .into_inner()
        .levels;
    let codes: Vec<String> = levels.into_iter().map(|l| l.warehouse).collect();
    if codes.is_empty() {
        bail!("the server declares no warehouse");
    }
    Ok(codes)
}

/// Sets every pool of `skus` to [`STOCK`], 64 calls at a time.
async fn stock(conns: &[Inventory], skus: &[String], warehouses: &[String]) -> anyhow::Result<()> {
    let pools: Vec<(String, String)> = skus
        .iter()
        .flat_map(|s| warehouses.iter().map(move |w| (s.clone(), w.clone())))
        .collect();
    let pools = Arc::new(pools);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut inv = conns[i % conns.len()].clone();
        let (pools, next) = (pools.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((sku, warehouse)) = pools.get(i) else {
                    return Ok::<(), anyhow::Error>(());
                };
                inv.set_stock(pb::SetStockRequest {
                    sku: sku.clone(),
                    warehouse: warehouse.clone(),
                    on_hand: STOCK,
                    reason: "stockpool bench".into(),
                    ..Default::default()
                })
                .await
                .map_err(refused)
                .with_context(|| format!("stocking {sku} in {warehouse}"))?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// What every caller shares: the workload, and the order numbers.
#[derive(Clone)]
struct Load {
    workload: Workload,
    channel: String,
    skus: Arc<Vec<String>>,
    run_id: String,
    next: Arc<AtomicU64>,
    samples: Arc<Samples>,
}

impl Load {
    /// Places one order (and, for the lifecycle, confirms and ships it).
    /// `due`: when it should have started; latency counts from there.
    async fn order(&self, inv: &mut Inventory, due: Instant) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let order_id = format!("bench-{}-{n:012}", self.run_id);
        let lines = match self.workload {
            Workload::Hot => vec![line(&self.skus[0])],
            Workload::Catalog | Workload::Lifecycle => {
                let count = 1 + (mix(n) % 3) as usize;
                let mut picked: Vec<usize> = Vec::with_capacity(count);
                let mut k = n;
                while picked.len() < count.min(self.skus.len()) {
                    k = k.wrapping_add(1);
                    let i = (mix(k) % self.skus.len() as u64) as usize;
                    if !picked.contains(&i) {
                        picked.push(i);
                    }
                }
                picked.iter().map(|&i| line(&self.skus[i])).collect()
            }
        };
        let lifecycle = self.workload == Workload::Lifecycle;
        let reserved = inv
            .reserve(pb::ReserveRequest {
                channel: self.channel.clone(),
                order_id: order_id.clone(),
                lines,
                hold_seconds: if lifecycle { 900 } else { 0 },
                ..Default::default()
            })
            .await;
        self.samples.record("Reserve", due.elapsed());
        if let Err(s) = reserved {
            self.samples.error(&s);
            return;
        }
        if lifecycle {
            let started = Instant::now();
            let confirmed = inv
                .confirm(pb::ConfirmRequest {
                    channel: self.channel.clone(),
                    order_id: order_id.clone(),
                })
                .await;
            self.samples.record("Confirm", started.elapsed());
            if let Err(s) = confirmed {
                self.samples.error(&s);
                return;
            }
            let started = Instant::now();
            let shipped = inv
                .fulfill(pb::FulfillRequest {
                    channel: self.channel.clone(),
                    order_id: order_id.clone(),
                    shipment_id: format!("ship-{order_id}"),
                    ..Default::default()
                })
                .await;
            self.samples.record("Fulfill", started.elapsed());
            if let Err(s) = shipped {
                self.samples.error(&s);
                return;
            }
        }
        self.samples.orders.fetch_add(1, Ordering::Relaxed);
    }
}

fn line(sku: &str) -> pb::Line {
    pb::Line {
        sku: sku.to_string(),
        quantity: 1,
        ..Default::default()
    }
}

/// The splitmix64 finalizer: spreads order numbers over the SKUs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn closed_loop(load: &Load, conns: &[Inventory], clients: usize, duration: Duration) {
    let end = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let load = load.clone();
            let mut inv = conns[i % conns.len()].clone();
            tokio::spawn(async move {
                while Instant::now() < end {
                    load.order(&mut inv, Instant::now()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// Requests are started by a thread of their own that sleeps until each is
/// due (the runtime's timer ticks in milliseconds, too coarse here), each
/// in a task of its own so a slow answer delays no later request.
async fn open_loop(load: &Load, conns: &[Inventory], rate: f64, duration: Duration) {
    let handle = tokio::runtime::Handle::current();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let load = load.clone();
    let conns = conns.to_vec();
    let dispatcher = std::thread::spawn(move || {
        let start = Instant::now();
        let total = (rate * duration.as_secs_f64()).round() as u64;
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let (load, done) = (load.clone(), done_tx.clone());
            let mut inv = conns[i as usize % conns.len()].clone();
            handle.spawn(async move {
                load.order(&mut inv, due).await;
                let _ = done.send(());
            });
        }
        total
    });
    let total = tokio::task::spawn_blocking(move || dispatcher.join().unwrap_or(0))
        .await
        .unwrap_or(0);
    let deadline = Instant::now() + DRAIN;
    for _ in 0..total {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, done_rx.recv()).await.is_err() {
            break;
        }
    }
}

/// Reserves one unit of `sku` every `every` until `stop`, and times each
/// level change from the acknowledgement to the watcher's receipt. Returns
/// the lags (ns) and the count of changes never seen.
async fn probe_lag(
    mut inv: Inventory,
    channel: String,
    sku: String,
    run_id: String,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Vec<u64>, u64)> {
    let mut stream = inv
        .watch_channel_stock(pb::WatchChannelStockRequest {
            channel: channel.clone(),
            after_seq: 0,
        })
        .await
        .map_err(refused)
        .context("starting the probe's watcher")?
        .into_inner();
    // Every level of the probe SKU, by published figure, with when it came.
    let seen: Arc<Mutex<BTreeMap<i64, Instant>>> = Arc::default();
    let watcher = {
        let seen = seen.clone();
        let sku = sku.clone();
        tokio::spawn(async move {
            while let Ok(Some(update)) = stream.message().await {
                if update.sku == sku {
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(update.published, Instant::now());
                }
            }
        })
    };
    let (mut lags, mut lost) = (Vec::new(), 0);
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(every).await;
        n += 1;
        let reply = inv
            .reserve(pb::ReserveRequest {
                channel: channel.clone(),
                order_id: format!("bench-probe-{run_id}-{n}"),
                lines: vec![line(&sku)],
                ..Default::default()
            })
            .await
            .map_err(refused)
            .context("the probe's Reserve")?;
        let acked = Instant::now();
        let _ = reply;
        // The published figure this reserve leads to is what the server
        // shows after it: read it, then wait for the watcher to show it.
        let availability = inv
            .get_availability(pb::GetAvailabilityRequest {
                skus: vec![sku.clone()],
                channel: channel.clone(),
                ..Default::default()
            })
            .await
            .map_err(refused)?
            .into_inner();
        let Some(target) = availability.items.first().map(|i| i.published) else {
            bail!("the server did not report availability of {sku}");
        };
        let waited = Instant::now() + PROBE_TIMEOUT;
        loop {
            let at = seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&target)
                .copied();
            if let Some(at) = at {
                let lag = at.saturating_duration_since(acked);
                lags.push(u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX));
                break;
            }
            if Instant::now() > waited {
                lost += 1;
                break;
            }
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
    }
    watcher.abort();
    Ok((lags, lost))
}

/// The metrics text at `url` (plain HTTP).
async fn scrape(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--metrics must be an http:// URL, got {url:?}"))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let path = if path == "/" {
        "/".to_string()
    } else {
        format!("/{path}")
    };
    let mut tcp =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(host))
            .await
            .map_err(|_| anyhow!("connecting to {url} timed out"))??;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut body))
        .await
        .map_err(|_| anyhow!("reading {url} timed out"))??;
    match body.split_once("\r\n\r\n") {
        Some((head, text)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(text.to_string())
        }
        _ => bail!("{url} did not answer 200"),
    }
}

/// The commit histogram's buckets (upper bound, cumulative count), sum and
/// count in a metrics text.
fn batch_histogram(text: &str) -> (Vec<(f64, f64)>, f64, f64) {
    let name = crate::telemetry::COMMIT_BATCH_SIZE;
    let (mut buckets, mut sum, mut count) = (Vec::new(), 0.0, 0.0);
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if let Some(labels) = series.strip_prefix(&format!("{name}_bucket{{")) {
            let le = labels
                .split("le=\"")
                .nth(1)
                .and_then(|l| l.split('"').next())
                .map(|l| {
                    if l == "+Inf" {
                        f64::INFINITY
                    } else {
                        l.parse().unwrap_or(f64::NAN)
                    }
                });
            if let Some(le) = le {
                buckets.push((le, value));
            }
        } else if series == format!("{name}_sum") {
            sum = value;
        } else if series == format!("{name}_count") {
            count = value;
        }
    }
    (buckets, sum, count)
}

/// The commits between two scrapes.
fn batches(before: &str, after: &str) -> Batches {
    let (b0, s0, c0) = batch_histogram(before);
    let (b1, s1, c1) = batch_histogram(after);
    let commits = (c1 - c0).max(0.0);
    let delta: Vec<(f64, f64)> = b1
        .iter()
        .map(|&(le, n)| {
            let was = b0.iter().find(|(l, _)| *l == le).map_or(0.0, |(_, n)| *n);
            (le, n - was)
        })
        .collect();
    let at = |q: f64| {
        delta
            .iter()
            .find(|(_, n)| *n >= q * commits && commits > 0.0)
            .map_or(0.0, |(le, _)| *le)
    };
    Batches {
        commits: commits as u64,
        mean_jobs: if commits > 0.0 {
            (s1 - s0) / commits
        } else {
            0.0
        },
        p50_jobs_at_most: at(0.5),
        p99_jobs_at_most: at(0.99),
    }
}

/// The report as a person reads it.
pub fn print(report: &Report, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    use super::output::{Align, Table};
    let mode = match report.rate {
        Some(rate) => format!("open loop at {rate} orders/s"),
        None => format!("closed loop, {} clients", report.clients),
    };
    println!(
        "workload     {:?}, {mode}, {:.1} s",
        report.workload, report.seconds
    );
    println!(
        "orders       {} ({:.0}/s)",
        report.orders, report.orders_per_second
    );
    if !report.errors.is_empty() {
        let errors: Vec<String> = report
            .errors
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        println!("errors       {}", errors.join(", "));
    }
    println!("load average {}", report.load_average);
    println!();
    let mut t = Table::new(&[
        ("CALL", Align::Left),
        ("COUNT", Align::Right),
        ("P50_MS", Align::Right),
        ("P90_MS", Align::Right),
        ("P99_MS", Align::Right),
        ("P99.9_MS", Align::Right),
        ("MAX_MS", Align::Right),
    ]);
    let rows = report
        .latency
        .iter()
        .map(|(rpc, l)| (rpc.clone(), l))
        .chain(
            report
                .watch_lag
                .as_ref()
                .map(|l| ("commit->watcher".to_string(), l)),
        );
    for (name, l) in rows {
        t.row(vec![
            name,
            l.count.to_string(),
            format!("{:.2}", l.p50_ms),
            format!("{:.2}", l.p90_ms),
            format!("{:.2}", l.p99_ms),
            format!("{:.2}", l.p999_ms),
            format!("{:.2}", l.max_ms),
        ]);
    }
    t.print();
    if report.watch_lost > 0 {
        println!(
            "probe changes the watcher never showed: {}",
            report.watch_lost
        );
    }
    println!();
    match &report.commit_batches {
        Some(b) => println!(
            "commits      {} transactions, {:.1} writes each on average (median <= {}, p99 <= {})",
            b.commits, b.mean_jobs, b.p50_jobs_at_most, b.p99_jobs_at_most
        ),
        None => {
            println!("commits      unknown: the metrics endpoint (--metrics) could not be read")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_read_from_the_sorted_samples() {
        let mut ns: Vec<u64> = (1..=1000).rev().map(|i| i * 1_000_000).collect();
        let l = Latency::of(&mut ns);
        assert_eq!(
            (l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms),
            (1000, 500.0, 900.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(Latency::of(&mut []), Latency::default());
    }

    #[test]
    fn commit_batches_are_the_difference_of_two_scrapes() {
        let scrape = |le1: u64, le4: u64, inf: u64, sum: u64| {
            format!(
                "# TYPE stockpool_commit_batch_size histogram\n\
                 stockpool_commit_batch_size_bucket{{le=\"1\"}} {le1}\n\
                 stockpool_commit_batch_size_bucket{{le=\"4\"}} {le4}\n\
                 stockpool_commit_batch_size_bucket{{le=\"+Inf\"}} {inf}\n\
                 stockpool_commit_batch_size_sum {sum}\n\
                 stockpool_commit_batch_size_count {inf}\n"
            )
        };
        let b = batches(&scrape(5, 5, 5, 5), &scrape(6, 104, 105, 5 + 1 + 300 + 40));
        assert_eq!(b.commits, 100);
        assert!((b.mean_jobs - 3.41).abs() < 1e-9, "{}", b.mean_jobs);
        assert_eq!((b.p50_jobs_at_most, b.p99_jobs_at_most), (4.0, 4.0));
        assert_eq!(batches("", "").commits, 0);
    }
}
