//! Metrics and logs. Metric names live here, so every series is described
//! once, exists from the first scrape, and no module invents its own.
//!
//! - [`install_metrics`] installs the Prometheus recorder once per process
//!   (tests start many servers in one) and describes every metric; `/metrics`
//!   on the HTTP port renders its handle.
//! - Events are recorded where they happen: commits by the store writer,
//!   reservation outcomes, expired holds and shortfalls by the engine, RPC
//!   counts and latency by [`RpcCall`], which the gRPC edge starts for each
//!   call.
//! - Levels derived from the engine's state (published units, SKUs,
//!   reservations, shortfall) are computed by [`observe_engine`] at scrape
//!   time, not on every change.
//! - The Odoo outbox metrics are present at zero from the start, so dashboards
//!   and alerts work whether or not an Odoo is configured; the dispatcher
//!   and the reconciliation feed them once one is.
//!
//! No label carries a SKU or an order id: label values are channels, outcomes,
//! gRPC methods this server implements and gRPC codes, all bounded.
//!
//! This module records and renders; it must not decide anything.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::Bytes;
use http::Response;
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::ChannelCode;
use crate::engine::Engine;

// Metric names. The HELP text of each is in `describe_metrics`.

/// Counter by `channel` and `outcome` (see [`RESERVE_OUTCOMES`]); fed by the engine's Reserve.
pub const RESERVATIONS: &str = "stockpool_reservations_total";
/// Counter by `channel`; fed by the hold sweeper.
pub const HOLDS_EXPIRED: &str = "stockpool_holds_expired_total";
/// Counter; fed by counts (SetStock) that find less than is reserved.
pub const SHORTFALL_UNITS: &str = "stockpool_stock_shortfall_units_total";
/// Histogram of jobs per group-commit transaction; fed by the store writer.
pub const COMMIT_BATCH_SIZE: &str = "stockpool_commit_batch_size";
/// Histogram; fed by the store writer.
pub const COMMIT_DURATION: &str = "stockpool_commit_duration_seconds";
/// Counter; fed by the store writer.
pub const COMMIT_FAILURES: &str = "stockpool_commit_failures_total";
/// Counter by `method` and `code`; fed by [`RpcCall`].
pub const RPCS: &str = "stockpool_rpcs_total";
/// Gauge, always 1, labelled with the `version` and the `store` kind.
pub const BUILD_INFO: &str = "stockpool_build_info";
/// The standard process series (Prometheus client conventions), read from
/// `/proc/self` at scrape time by [`observe_process`] (Linux only).
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
pub const PROCESS_VSIZE: &str = "process_virtual_memory_bytes";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_START: &str = "process_start_time_seconds";
pub const PROCESS_THREADS: &str = "process_threads";
/// Histogram by `method` and `code`, unary calls only; fed by [`RpcCall`].
pub const RPC_DURATION: &str = "stockpool_rpc_duration_seconds";
/// Gauge by `channel`; set at scrape time by [`observe_engine`].
pub const PUBLISHED_UNITS: &str = "stockpool_published_units";
/// Gauge; set at scrape time by [`observe_engine`].
pub const SKUS: &str = "stockpool_skus";
/// Gauge, every status (the engine counts no "open" subset cheaply); set at
/// scrape time by [`observe_engine`].
pub const RESERVATIONS_IN_MEMORY: &str = "stockpool_reservations_in_memory";
/// Gauge: reserved beyond on hand right now; set at scrape time by [`observe_engine`].
pub const POOL_SHORTFALL_UNITS: &str = "stockpool_pool_shortfall_units";
/// Gauge by `channel`: open WatchChannelStock streams; fed by the publisher.
pub const WATCHERS: &str = "stockpool_watchers";
/// Gauge: outbox entries waiting for Odoo; set by the dispatcher each round.
pub const ODOO_OUTBOX_PENDING: &str = "stockpool_odoo_outbox_pending";
/// Gauge: dead-lettered outbox entries; set by the dispatcher each round.
pub const ODOO_OUTBOX_DEAD: &str = "stockpool_odoo_outbox_dead";
/// Gauge: age of the oldest pending entry; set by the dispatcher.
pub const ODOO_OUTBOX_OLDEST_AGE: &str = "stockpool_odoo_outbox_oldest_age_seconds";
/// Counter by `outcome`: pushes to Odoo; fed by the dispatcher.
pub const ODOO_PUSHES: &str = "stockpool_odoo_pushes_total";
/// Gauge: pools whose on_hand differed from Odoo at the last reconciliation.
pub const ODOO_DRIFT_POOLS: &str = "stockpool_odoo_drift_pools";
/// Gauge: units of difference summed over those pools.
pub const ODOO_DRIFT_UNITS: &str = "stockpool_odoo_drift_units";
/// Counter by `outcome` (ok, failed): reconciliations with Odoo.
pub const ODOO_RECONCILIATIONS: &str = "stockpool_odoo_reconciliations_total";
/// Counter: on_hand corrections made by reconciliations.
pub const ODOO_CORRECTIONS: &str = "stockpool_odoo_corrections_total";
/// Counter by `outcome`: calls of the Odoo stock webhook.
pub const ODOO_WEBHOOKS: &str = "stockpool_odoo_webhooks_total";
/// Counter by `outcome` (applied, failed): reads of Odoo after its
/// notifications; fed by the inbound side.
pub const ODOO_SYNCS: &str = "stockpool_odoo_syncs_total";
/// Counter: duplicate sale orders found in Odoo and cancelled.
pub const ODOO_DUPLICATES: &str = "stockpool_odoo_duplicates_cancelled_total";
/// Counter: failed writes, checks or pings of the Redis mirror; fed by it.
pub const REDIS_MIRROR_ERRORS: &str = "stockpool_redis_mirror_errors_total";
/// Counter: full rebuilds of the Redis mirror; fed by it.
pub const REDIS_RESYNCS: &str = "stockpool_redis_resyncs_total";
/// Gauge: 1 while this server is the active one, 0 while it is a standby.
pub const ACTIVE: &str = "stockpool_active";
/// Gauge: the fencing epoch of the active server, as this server knows it.
pub const LEADER_EPOCH: &str = "stockpool_leader_epoch";
/// Counter: takeovers by this server (becoming active), by outcome.
pub const TAKEOVERS: &str = "stockpool_takeovers_total";
/// Counter: times this server stopped being the active one, by reason.
pub const STEP_DOWNS: &str = "stockpool_step_downs_total";
/// Counter: times the active server's lease lapsed (Postgres unreachable)
/// and it became isolated.
pub const ISOLATIONS: &str = "stockpool_isolations_total";
/// Gauge: 1 while this server is isolated (active, lease lapsed: reads
/// served, writes refused), else 0.
pub const ISOLATED: &str = "stockpool_isolated";

/// The `outcome` label values of [`RESERVATIONS`].
pub const RESERVE_OUTCOMES: [&str; 3] = ["accepted", "rejected", "replayed"];

/// The `outcome` label values of [`ODOO_PUSHES`]: pushed, pushed but to be
/// looked at again for a duplicate, failed and to be retried, given up on
/// (dead letter).
const ODOO_PUSH_OUTCOMES: [&str; 4] = ["pushed", "checking", "retried", "dead_lettered"];

/// Upper bounds for every `_seconds` histogram: 25 µs (an in-memory decision)
/// to 10 s (a store that stalls), about three per decade.
const SECONDS_BUCKETS: [f64; 19] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Upper bounds for jobs per group commit: powers of two up to the writer's
/// largest batch.
const BATCH_BUCKETS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// How often histogram samples are folded into their buckets when nobody
/// scrapes; without it they would pile up in memory.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The recorder's handle, or why it could not be installed. A process has
/// one global recorder, so the outcome of the first attempt is final.
static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the Prometheus recorder the first time it is called and returns
/// its handle every time. Fails when another recorder was installed first.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(COMMIT_BATCH_SIZE.into()),
                        &BATCH_BUCKETS,
                    )
                })
                .and_then(|b| b.install_recorder())
                .map_err(|e| e.to_string())?;
            describe_metrics();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                })
                .map_err(|e| format!("starting the metrics upkeep thread: {e}"))?;
            Ok(handle)
        })
        .clone()
        .map_err(|e| anyhow!("installing the Prometheus recorder: {e}"))
}

/// HELP and TYPE for every metric, and a zero series for each label set
/// known at start (channels are known later: see [`observe_engine`]), so a
/// scrape shows them before the first event.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};

    describe_counter!(
        RESERVATIONS,
        Unit::Count,
        "Reserve calls by channel and outcome: accepted (units held), rejected (did not fit ATP), replayed (a retry answered from the first result)."
    );
    describe_counter!(
        HOLDS_EXPIRED,
        Unit::Count,
        "Held reservations whose hold ran out, by channel."
    );
    describe_counter!(
        SHORTFALL_UNITS,
        Unit::Count,
        "Units reserved beyond what a stock count found on hand, summed over counts."
    );
    describe_histogram!(
        COMMIT_BATCH_SIZE,
        Unit::Count,
        "Commits carried by one group-commit transaction."
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Time to write one group-commit transaction."
    );
    describe_counter!(
        COMMIT_FAILURES,
        Unit::Count,
        "Group-commit transactions that failed."
    );
    describe_counter!(
        RPCS,
        Unit::Count,
        "Finished gRPC calls by service, method and status code; service and method are unknown for paths this server does not implement."
    );
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "Time from request to the end of the response, by gRPC method and status code; streaming methods are not timed."
    );
    describe_gauge!(
        BUILD_INFO,
        Unit::Count,
        "Always 1; the labels say which stockpool version runs on which store kind."
    );
    describe_gauge!(
        PUBLISHED_UNITS,
        Unit::Count,
        "Units each channel is shown, summed over SKUs; computed when scraped."
    );
    describe_gauge!(
        SKUS,
        Unit::Count,
        "SKUs that ever held stock; computed when scraped."
    );
    describe_gauge!(
        RESERVATIONS_IN_MEMORY,
        Unit::Count,
        "Reservations held in memory, every status; computed when scraped."
    );
    describe_gauge!(
        POOL_SHORTFALL_UNITS,
        Unit::Count,
        "Units reserved beyond on hand right now, summed over SKUs and warehouses; computed when scraped."
    );
    describe_gauge!(
        WATCHERS,
        Unit::Count,
        "Open WatchChannelStock streams by channel."
    );
    describe_gauge!(
        ODOO_OUTBOX_PENDING,
        Unit::Count,
        "Outbox entries waiting to be pushed to Odoo (0 when no Odoo is configured)."
    );
    describe_gauge!(
        ODOO_OUTBOX_DEAD,
        Unit::Count,
        "Outbox entries given up on (dead letter) until ops retry them with RetryOutbox."
    );
    describe_gauge!(
        ODOO_OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest outbox entry waiting for Odoo."
    );
    describe_counter!(
        ODOO_PUSHES,
        Unit::Count,
        "Pushes to Odoo by outcome: pushed, checking (created on a retry; looked at again for a duplicate), retried (failed, will retry), dead_lettered (refused by Odoo, or too many attempts)."
    );
    describe_gauge!(
        ODOO_DRIFT_POOLS,
        Unit::Count,
        "Pools whose on_hand differed from Odoo's stock.quant count at the last reconciliation."
    );
    describe_gauge!(
        ODOO_DRIFT_UNITS,
        Unit::Count,
        "Units of difference with Odoo at the last reconciliation, summed over pools."
    );
    describe_counter!(
        ODOO_RECONCILIATIONS,
        Unit::Count,
        "Stock reconciliations with Odoo by outcome (ok, failed)."
    );
    describe_counter!(
        ODOO_CORRECTIONS,
        Unit::Count,
        "on_hand counts corrected to Odoo's by reconciliations (only when configured to correct)."
    );
    describe_counter!(
        ODOO_WEBHOOKS,
        Unit::Count,
        "Calls of the Odoo stock webhook by outcome (accepted, refused, invalid)."
    );
    describe_counter!(
        ODOO_SYNCS,
        Unit::Count,
        "Reads of Odoo's stock after its notifications, by outcome (applied, failed)."
    );
    describe_counter!(
        ODOO_DUPLICATES,
        Unit::Count,
        "Duplicate Odoo sale orders (a create committed after its answer was lost) found and cancelled."
    );
    describe_counter!(
        REDIS_MIRROR_ERRORS,
        Unit::Count,
        "Failed writes, checks or pings of the Redis mirror (reservations never wait for Redis)."
    );
    describe_counter!(
        REDIS_RESYNCS,
        Unit::Count,
        "Full rebuilds of the Redis mirror: at start, and after Redis failed or lost its data."
    );
    describe_gauge!(
        ACTIVE,
        Unit::Count,
        "1 while this server is the active one (takes calls), 0 while it is a standby."
    );
    describe_gauge!(
        LEADER_EPOCH,
        Unit::Count,
        "The fencing epoch of the active server, as this server knows it (0 on SQLite)."
    );
    describe_counter!(
        TAKEOVERS,
        Unit::Count,
        "Takeovers by this server: loaded (serving) or failed (state could not be loaded; the lease was given back)."
    );
    describe_counter!(
        STEP_DOWNS,
        Unit::Count,
        "Times this server stopped being the active one: deposed (another server took over), lapsed (its tenure ended otherwise). A lease that could not be renewed in time isolates the server instead (stockpool_isolations_total)."
    );
    describe_counter!(
        ISOLATIONS,
        Unit::Count,
        "Times the lease of this (active) server lapsed because Postgres could not be reached in time: it then serves reads from memory and refuses writes until a renewal gets through or it learns it was deposed."
    );
    describe_gauge!(
        ISOLATED,
        Unit::Count,
        "1 while this server is isolated (its lease lapsed: reads served from memory, writes refused), else 0."
    );

    metrics::counter!(SHORTFALL_UNITS).increment(0);
    let _ = metrics::histogram!(COMMIT_BATCH_SIZE);
    let _ = metrics::histogram!(COMMIT_DURATION);
    metrics::counter!(COMMIT_FAILURES).increment(0);
    // Present (at zero) from the start, Odoo configured or not, so
    // dashboards and alerts always find them.
    metrics::gauge!(ODOO_OUTBOX_PENDING).set(0.0);
    metrics::gauge!(ODOO_OUTBOX_DEAD).set(0.0);
    metrics::gauge!(ODOO_OUTBOX_OLDEST_AGE).set(0.0);
    for outcome in ODOO_PUSH_OUTCOMES {
        metrics::counter!(ODOO_PUSHES, "outcome" => outcome).increment(0);
    }
    metrics::gauge!(ODOO_DRIFT_POOLS).set(0.0);
    metrics::gauge!(ODOO_DRIFT_UNITS).set(0.0);
    for outcome in ["ok", "failed"] {
        metrics::counter!(ODOO_RECONCILIATIONS, "outcome" => outcome).increment(0);
    }
    metrics::counter!(ODOO_CORRECTIONS).increment(0);
    metrics::counter!(ODOO_DUPLICATES).increment(0);
    for outcome in ["applied", "failed"] {
        metrics::counter!(ODOO_SYNCS, "outcome" => outcome).increment(0);
    }
    metrics::counter!(REDIS_MIRROR_ERRORS).increment(0);
    metrics::counter!(REDIS_RESYNCS).increment(0);
    metrics::gauge!(ACTIVE).set(0.0);
    metrics::gauge!(LEADER_EPOCH).set(0.0);
    metrics::counter!(ISOLATIONS).increment(0);
    metrics::gauge!(ISOLATED).set(0.0);
    for outcome in ["loaded", "failed"] {
        metrics::counter!(TAKEOVERS, "outcome" => outcome).increment(0);
    }
    for reason in ["deposed", "lapsed"] {
        metrics::counter!(STEP_DOWNS, "reason" => reason).increment(0);
    }
    for method in rpc_methods().values() {
        metrics::counter!(
            RPCS,
            "service" => method.service.as_str(),
            "method" => method.name.as_str(),
            "code" => "OK"
        )
        .increment(0);
    }
}

/// Records this server's role: active (at `epoch`) or standby (the active
/// one's epoch as last seen).
pub fn role(active: bool, epoch: u64) {
    metrics::gauge!(ACTIVE).set(if active { 1.0 } else { 0.0 });
    metrics::gauge!(LEADER_EPOCH).set(epoch as f64);
}

/// Sets the levels derived from the engine's state, and creates the zero
/// series of every declared channel (a channel declared at run time gets
/// them at the next scrape).
///
/// Runs on each scrape rather than on each change, which would cost every
/// write. The cost is one pass over every SKU and channel (the formula
/// without its explanation) and one over every pool, each SKU's lock held
/// only while its pools are copied. Callers run it off the async workers.
pub fn observe_engine(engine: &Engine) {
    let catalog = engine.catalog();
    for channel in &catalog.channels {
        let label = channel.code.to_string();
        for outcome in RESERVE_OUTCOMES {
            metrics::counter!(RESERVATIONS, "channel" => label.clone(), "outcome" => outcome)
                .increment(0);
        }
        metrics::counter!(HOLDS_EXPIRED, "channel" => label.clone()).increment(0);
        // Adding 0 creates the series without overwriting the count.
        metrics::gauge!(WATCHERS, "channel" => label).increment(0.0);
    }

    let mut published: HashMap<&ChannelCode, i64> =
        catalog.channels.iter().map(|c| (&c.code, 0)).collect();
    for (_, levels) in engine.levels(&engine.skus()) {
        for level in levels {
            if let Some(units) = published.get_mut(&level.channel) {
                *units += level.published;
            }
        }
    }
    for (channel, units) in published {
        metrics::gauge!(PUBLISHED_UNITS, "channel" => channel.to_string()).set(units as f64);
    }

    let levels = engine.get_stock(&[]);
    let short: i64 = levels.iter().map(|l| l.pool.shortfall()).sum();
    metrics::gauge!(POOL_SHORTFALL_UNITS).set(short as f64);
    metrics::gauge!(SKUS).set(engine.skus().len() as f64);
    metrics::gauge!(RESERVATIONS_IN_MEMORY).set(engine.reservation_count() as f64);
}

/// Records one group commit: how many jobs it carried and how long it took.
pub fn record_commit(jobs: usize, took: Duration, ok: bool) {
    metrics::histogram!(COMMIT_BATCH_SIZE).record(jobs as f64);
    metrics::histogram!(COMMIT_DURATION).record(took.as_secs_f64());
    if !ok {
        metrics::counter!(COMMIT_FAILURES).increment(1);
    }
}

/// Counts a Reserve by channel and outcome (one of [`RESERVE_OUTCOMES`]),
/// once the recorder is installed (before, nothing would keep the count).
/// The counter handles are kept: registering a labelled series costs
/// allocations and a registry lookup, once per Reserve otherwise.
pub fn reservation_outcome(channel: &ChannelCode, outcome: &'static str) {
    type Handles = std::sync::RwLock<HashMap<String, Vec<metrics::Counter>>>;
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    let Some(i) = RESERVE_OUTCOMES.iter().position(|o| *o == outcome) else {
        return;
    };
    if !RECORDER.get().is_some_and(Result::is_ok) {
        return;
    }
    let handles = HANDLES.get_or_init(Default::default);
    if let Some(counters) = handles
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(channel.as_str())
    {
        counters[i].increment(1);
        return;
    }
    let counters: Vec<metrics::Counter> = RESERVE_OUTCOMES
        .iter()
        .map(|o| metrics::counter!(RESERVATIONS, "channel" => channel.to_string(), "outcome" => *o))
        .collect();
    counters[i].increment(1);
    handles
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(channel.to_string(), counters);
}

/// Counts a hold that ran out.
pub fn hold_expired(channel: &ChannelCode) {
    metrics::counter!(HOLDS_EXPIRED, "channel" => channel.to_string()).increment(1);
}

/// Counts units reserved beyond what a count found on hand.
pub fn shortfall(units: i64) {
    metrics::counter!(SHORTFALL_UNITS).increment(units.max(0) as u64);
}

/// A gRPC method this server implements, as labels name it.
struct RpcMethod {
    /// `/package.Service/Method`, as requests name it.
    path: String,
    /// `package.Service`, the `service` label.
    service: String,
    name: String,
    /// Streaming calls last as long as the client listens: their duration is
    /// not a latency, so they are counted but not timed.
    streaming: bool,
    /// This method's counter and histogram per status code (by the code's
    /// number), made on first use once the recorder is installed: building
    /// a labelled series' key and finding it in the registry cost more than
    /// the rest of the call's accounting.
    /// A streaming method has no histogram.
    series: [OnceLock<(metrics::Counter, Option<metrics::Histogram>)>; 17],
}

impl RpcMethod {
    /// The counter and histogram of this method and `code`; none before the
    /// recorder is installed (a handle taken then would count nowhere, for
    /// good).
    fn series(&self, code: tonic::Code) -> Option<&(metrics::Counter, Option<metrics::Histogram>)> {
        let slot = self.series.get(code as usize)?;
        if let Some(series) = slot.get() {
            return Some(series);
        }
        if !RECORDER.get().is_some_and(Result::is_ok) {
            return None;
        }
        let name = crate::api::error::code_name(code);
        let (service, method) = (self.service.clone(), self.name.clone());
        Some(slot.get_or_init(|| {
            (
                metrics::counter!(RPCS, "service" => service.clone(), "method" => method.clone(), "code" => name),
                (!self.streaming).then(|| {
                    metrics::histogram!(RPC_DURATION, "service" => service, "method" => method, "code" => name)
                }),
            )
        }))
    }
}

/// Every gRPC path this server serves (`/package.Service/Method`), read from
/// the compiled descriptors of its services. Labels come from here, never
/// from the request: anyone can send any path.
fn rpc_methods() -> &'static foldhash::HashMap<String, RpcMethod> {
    static METHODS: OnceLock<foldhash::HashMap<String, RpcMethod>> = OnceLock::new();
    METHODS.get_or_init(|| {
        use prost::Message;
        let sets = [
            crate::api::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ];
        let mut methods = foldhash::HashMap::default();
        for bytes in sets {
            let set = prost_types::FileDescriptorSet::decode(bytes)
                .expect("compiled descriptor sets decode");
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        let path =
                            format!("/{}.{}/{}", file.package(), service.name(), method.name());
                        methods.insert(
                            path.clone(),
                            RpcMethod {
                                path,
                                service: format!("{}.{}", file.package(), service.name()),
                                name: method.name().to_string(),
                                streaming: method.client_streaming() || method.server_streaming(),
                                series: Default::default(),
                            },
                        );
                    }
                }
            }
        }
        methods
    })
}

/// One gRPC call, counted into [`RPCS`] by method and status code and, when
/// unary, timed into [`RPC_DURATION`] from its request to the end of its
/// response. The gRPC edge (`api::edge`) starts one per call and hands it
/// the response.
///
/// The code is read where gRPC puts it: in the response headers when the call
/// failed before any message (a "trailers-only" response, which is how tonic
/// answers every error of a unary call), otherwise in the trailers that end
/// the body, which [`RpcBody`] watches for. A body dropped before its
/// trailers (the client went away) is counted as `CANCELLED`; one that ends
/// without trailers as `UNKNOWN`.
pub struct RpcCall {
    /// None for a path this server does not serve.
    method: Option<&'static RpcMethod>,
    started: Instant,
}

impl RpcCall {
    /// A call to `path` starts now.
    pub fn start(path: &str) -> RpcCall {
        let started = Instant::now();
        RpcCall {
            method: rpc_methods().get(path),
            started,
        }
    }

    /// The call's path when it is a method this server serves (then without
    /// a copy of the request's), None for any other path.
    pub fn known_path(&self) -> Option<&'static str> {
        self.method.map(|m| m.path.as_str())
    }

    /// Follows `response` to the call's end: records the call at once when
    /// its status is in the headers (`code`, as [`grpc_status`] reads it),
    /// otherwise when the trailers go by.
    pub fn track<B>(
        self,
        code: Option<tonic::Code>,
        response: Response<B>,
    ) -> Response<RpcBody<B>> {
        let call = match code {
            Some(code) => {
                self.finish(code);
                None
            }
            None => Some(self),
        };
        response.map(|inner| RpcBody { inner, call })
    }

    fn finish(self, code: tonic::Code) {
        let Some(method) = self.method else {
            let code = crate::api::error::code_name(code);
            metrics::counter!(RPCS, "service" => "unknown", "method" => "unknown", "code" => code)
                .increment(1);
            return;
        };
        let Some((calls, duration)) = method.series(code) else {
            return;
        };
        calls.increment(1);
        if let Some(duration) = duration {
            duration.record(self.started.elapsed().as_secs_f64());
        }
    }
}

/// The status code in the headers of a response: that of a trailers-only
/// response; None when the code is still to come in the trailers.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get(tonic::Status::GRPC_STATUS)
        .map(|status| tonic::Code::from_bytes(status.as_bytes()))
}

/// A response body that records its call when the trailers go by.
pub struct RpcBody<B> {
    inner: B,
    /// Taken when recorded, so a call is recorded once.
    call: Option<RpcCall>,
}

impl<B> RpcBody<B> {
    fn finish(&mut self, code: tonic::Code) {
        if let Some(call) = self.call.take() {
            call.finish(code);
        }
    }
}

/// An empty body that records nothing.
impl<B: Default> Default for RpcBody<B> {
    fn default() -> Self {
        RpcBody {
            inner: B::default(),
            call: None,
        }
    }
}

impl<B> http_body::Body for RpcBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = trailers
                        .get(tonic::Status::GRPC_STATUS)
                        .map_or(tonic::Code::Unknown, |v| {
                            tonic::Code::from_bytes(v.as_bytes())
                        });
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => self.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for RpcBody<B> {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

/// An error and its causes, one after another: what logs print.
/// One Odoo push by outcome (one of [`ODOO_PUSH_OUTCOMES`]).
pub fn odoo_push(outcome: &'static str) {
    metrics::counter!(ODOO_PUSHES, "outcome" => outcome).increment(1);
}

/// The outbox as the dispatcher last counted it.
pub fn odoo_outbox(pending: u64, dead: u64, oldest_age_seconds: f64) {
    metrics::gauge!(ODOO_OUTBOX_PENDING).set(pending as f64);
    metrics::gauge!(ODOO_OUTBOX_DEAD).set(dead as f64);
    metrics::gauge!(ODOO_OUTBOX_OLDEST_AGE).set(oldest_age_seconds);
}

/// A finished reconciliation: pools and units differing, and whether they
/// were corrected.
pub fn odoo_reconciled(pools: usize, units: i64, corrected: bool) {
    metrics::counter!(ODOO_RECONCILIATIONS, "outcome" => "ok").increment(1);
    metrics::gauge!(ODOO_DRIFT_POOLS).set(pools as f64);
    metrics::gauge!(ODOO_DRIFT_UNITS).set(units as f64);
    if corrected {
        metrics::counter!(ODOO_CORRECTIONS).increment(pools as u64);
    }
}

pub fn odoo_reconcile_failed() {
    metrics::counter!(ODOO_RECONCILIATIONS, "outcome" => "failed").increment(1);
}

/// One call of the stock webhook by outcome.
pub fn odoo_webhook(outcome: &'static str) {
    metrics::counter!(ODOO_WEBHOOKS, "outcome" => outcome).increment(1);
}

/// One read of Odoo after a notification, by outcome.
pub fn odoo_sync(outcome: &'static str) {
    metrics::counter!(ODOO_SYNCS, "outcome" => outcome).increment(1);
}

/// One duplicate sale order cancelled.
pub fn odoo_duplicate_cancelled() {
    metrics::counter!(ODOO_DUPLICATES).increment(1);
}

pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Structured logs to stderr, text or JSON; `RUST_LOG` filters (default info).
/// The log filter when RUST_LOG is not set.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn";

pub fn init_logging(format: crate::config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    // sqlx says at INFO what is routine on every start (Postgres's notice
    // "_sqlx_migrations already exists, skipping", slow statements of the
    // load): warnings and above only, unless RUST_LOG asks.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person at a terminal, never in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        crate::config::LogFormat::Text => builder.init(),
        crate::config::LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Counts watchers of a channel as they come and go.
pub fn watchers(channel: &ChannelCode, delta: i64) {
    metrics::gauge!(WATCHERS, "channel" => channel.to_string()).increment(delta as f64);
}

/// Sets `stockpool_build_info`. Called at scrape time.
pub fn observe_build(store: &str) {
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "store" => store.to_string())
        .set(1.0);
}

/// The standard process series in Prometheus text format, read from
/// `/proc/self` (empty elsewhere), appended to the scrape. Written here
/// rather than through the recorder: `process_cpu_seconds_total` is a
/// counter of fractional seconds, which the recorder's integer counters
/// cannot hold.
pub fn process_metrics_text() -> String {
    let Some(p) = read_proc() else {
        return String::new();
    };
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n\n"
            ));
        }
    };
    put(
        PROCESS_CPU,
        "counter",
        "User and system CPU time spent, in seconds.",
        Some(p.cpu_seconds),
    );
    put(
        PROCESS_RSS,
        "gauge",
        "Resident memory size in bytes.",
        Some(p.rss_bytes),
    );
    put(
        PROCESS_VSIZE,
        "gauge",
        "Virtual memory size in bytes.",
        Some(p.vsize_bytes),
    );
    put(
        PROCESS_START,
        "gauge",
        "Start time of the process since the Unix epoch in seconds.",
        Some(p.start_time_seconds),
    );
    put(
        PROCESS_THREADS,
        "gauge",
        "Number of OS threads in the process.",
        Some(p.threads),
    );
    put(
        PROCESS_OPEN_FDS,
        "gauge",
        "Number of open file descriptors.",
        p.open_fds,
    );
    put(
        PROCESS_MAX_FDS,
        "gauge",
        "Maximum number of open file descriptors.",
        p.max_fds,
    );
    out
}

/// What `/proc/self` says of this process.
#[derive(Debug, Clone, PartialEq)]
struct ProcStats {
    cpu_seconds: f64,
    rss_bytes: f64,
    vsize_bytes: f64,
    start_time_seconds: f64,
    threads: f64,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

fn read_proc() -> Option<ProcStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let mut p = parse_stat(&stat, &boot)?;
    p.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    p.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        });
    Some(p)
}

/// Clock ticks per second and page size as Linux sets them on every
/// platform stockpool runs on (x86_64, aarch64).
const TICKS: f64 = 100.0;
const PAGE: f64 = 4096.0;

/// `/proc/self/stat` (fields after the command name, which may hold
/// spaces) and `btime` of `/proc/stat`.
fn parse_stat(stat: &str, proc_stat: &str) -> Option<ProcStats> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state(3) ... utime(14) stime(15) ... num_threads(20)
    // starttime(22) vsize(23) rss(24); index = field - 3.
    let num = |field: usize| f.get(field - 3)?.parse::<f64>().ok();
    let btime: f64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(ProcStats {
        cpu_seconds: (num(14)? + num(15)?) / TICKS,
        threads: num(20)?,
        start_time_seconds: btime + num(22)? / TICKS,
        vsize_bytes: num(23)?,
        rss_bytes: num(24)? * PAGE,
        open_fds: None,
        max_fds: None,
    })
}

#[cfg(test)]
mod process_tests {
    use super::*;

    #[test]
    fn the_process_figures_are_read_from_proc_stat_even_with_spaces_in_the_name() {
        let stat = "4242 (stock pool) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 \
                    9 0 123400 104857600 2560 18446744073709551615";
        let p = parse_stat(stat, "cpu 1 2 3\nbtime 1700000000\n").unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.threads, 9.0);
        assert_eq!(p.start_time_seconds, 1_700_001_234.0);
        assert_eq!(p.vsize_bytes, 104_857_600.0);
        assert_eq!(p.rss_bytes, 2560.0 * 4096.0);
    }
}
