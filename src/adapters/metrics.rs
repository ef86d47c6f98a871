//! The adapter metrics, every series labelled by channel, served on the
//! adapter's own port. No label carries a SKU or an order id.

use std::time::Duration;

pub const WEBHOOKS: &str = "stockpool_adapter_webhooks_total";
pub const RPC_DURATION: &str = "stockpool_adapter_rpc_duration_seconds";
pub const LAG: &str = "stockpool_adapter_lag_seconds";
pub const WRITES: &str = "stockpool_adapter_writes_total";
pub const THROTTLES: &str = "stockpool_adapter_throttles_total";
pub const STALE_RETRIES: &str = "stockpool_adapter_stale_retries_total";
pub const UNMAPPED: &str = "stockpool_adapter_unmapped_skus";
pub const UNAPPLIED: &str = "stockpool_adapter_unapplied_total";
pub const DRIFT_ITEMS: &str = "stockpool_adapter_reconcile_drift_items_total";
pub const DRIFT_UNITS: &str = "stockpool_adapter_reconcile_drift_units_total";
pub const RECONCILIATIONS: &str = "stockpool_adapter_reconciliations_total";
pub const PENDING: &str = "stockpool_adapter_levels_pending";
pub const CURSOR: &str = "stockpool_adapter_stream_cursor";
pub const CHANNEL_ERRORS: &str = "stockpool_adapter_channel_errors_total";
pub const CHANNEL_CALLS: &str = "stockpool_adapter_channel_call_duration_seconds";
pub const TOKEN_REFRESHES: &str = "stockpool_adapter_token_refreshes_total";
pub const ORDERS: &str = "stockpool_adapter_orders_total";
pub const INFLIGHT: &str = "stockpool_adapter_order_inflight_seconds";
pub const INFLIGHT_LAST: &str = "stockpool_adapter_order_inflight_last_seconds";
pub const POLL_LAG: &str = "stockpool_adapter_poll_lag_seconds";
pub const FEEDS: &str = "stockpool_adapter_feeds_total";

/// HELP for every series, and zero series for the outcomes known at start.
pub fn describe(channel: &str) {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(WEBHOOKS, "Channel webhooks received, by topic and outcome (applied, duplicate, skipped, unapplied, retry, unauthorized, malformed).");
    describe_histogram!(
        RPC_DURATION,
        "Time of the adapter's calls to stockpool, by RPC."
    );
    describe_histogram!(
        LAG,
        "From a change committed in stockpool to its level written to the channel."
    );
    describe_counter!(
        WRITES,
        "Levels written to the channel, by outcome (written, unchanged, unmapped, failed)."
    );
    describe_counter!(
        THROTTLES,
        "Calls the channel's API refused for its rate limit."
    );
    describe_counter!(STALE_RETRIES, "Writes refused because the channel's quantity changed since it was read, read again and retried.");
    describe_gauge!(UNMAPPED, "SKUs with a level that no channel item carries.");
    describe_counter!(
        UNAPPLIED,
        "Events that can never apply (listed at /unapplied), by reason."
    );
    describe_counter!(
        DRIFT_ITEMS,
        "Items whose channel level differed from stockpool's at a reconciliation, corrected."
    );
    describe_counter!(DRIFT_UNITS, "Units of those differences.");
    describe_counter!(RECONCILIATIONS, "Reconciliation passes started.");
    describe_gauge!(
        PENDING,
        "SKUs whose newest level waits to be written to the channel."
    );
    describe_gauge!(CURSOR, "The last stream seq stored.");
    describe_counter!(
        CHANNEL_ERRORS,
        "Failed calls to the channel's API (outage, server error), retried with backoff."
    );
    describe_histogram!(
        CHANNEL_CALLS,
        "Time of the adapter's calls to the channel's API, by operation."
    );
    describe_counter!(
        TOKEN_REFRESHES,
        "Access tokens obtained from the channel's login service."
    );
    describe_counter!(ORDERS, "Channel orders applied in stockpool, by step (reserved, held_again, confirmed, fulfilled, released, skipped_afn).");
    describe_histogram!(INFLIGHT, "From an order placed on the channel to its reservation in stockpool: the window in which the channel has sold units stockpool does not know of (polled channels).");
    describe_gauge!(
        INFLIGHT_LAST,
        "The last order's in-flight window, in seconds."
    );
    describe_gauge!(
        POLL_LAG,
        "How old the newest order data of the last poll is (its window's end)."
    );
    describe_counter!(
        FEEDS,
        "Bulk level feeds, by outcome (submitted, done, failed)."
    );
    let c = channel.to_string();
    for step in [
        "reserved",
        "held_again",
        "confirmed",
        "fulfilled",
        "released",
        "skipped_afn",
    ] {
        metrics::counter!(ORDERS, "channel" => c.clone(), "step" => step).absolute(0);
    }
    for outcome in ["written", "unchanged", "unmapped", "failed"] {
        metrics::counter!(WRITES, "channel" => c.clone(), "outcome" => outcome).absolute(0);
    }
    metrics::counter!(THROTTLES, "channel" => c.clone()).absolute(0);
    metrics::counter!(STALE_RETRIES, "channel" => c.clone()).absolute(0);
    metrics::counter!(DRIFT_ITEMS, "channel" => c.clone()).absolute(0);
    metrics::counter!(DRIFT_UNITS, "channel" => c.clone()).absolute(0);
    metrics::counter!(CHANNEL_ERRORS, "channel" => c.clone()).absolute(0);
    metrics::gauge!(UNMAPPED, "channel" => c).set(0.0);
}

pub fn webhook(channel: &str, topic: &str, outcome: &'static str) {
    metrics::counter!(WEBHOOKS, "channel" => channel.to_string(), "topic" => topic.to_string(), "outcome" => outcome).increment(1);
}

pub fn rpc(channel: &str, rpc: &'static str, took: Duration) {
    metrics::histogram!(RPC_DURATION, "channel" => channel.to_string(), "rpc" => rpc)
        .record(took.as_secs_f64());
}

pub fn lag(channel: &str, seconds: f64) {
    metrics::histogram!(LAG, "channel" => channel.to_string()).record(seconds.max(0.0));
}

pub fn writes(channel: &str, outcome: &'static str, n: u64) {
    metrics::counter!(WRITES, "channel" => channel.to_string(), "outcome" => outcome).increment(n);
}

pub fn throttled(channel: &str) {
    metrics::counter!(THROTTLES, "channel" => channel.to_string()).increment(1);
}

pub fn stale_retry(channel: &str, n: u64) {
    metrics::counter!(STALE_RETRIES, "channel" => channel.to_string()).increment(n);
}

pub fn unmapped(channel: &str, skus: usize) {
    metrics::gauge!(UNMAPPED, "channel" => channel.to_string()).set(skus as f64);
}

pub fn unapplied(channel: &str, reason: &'static str) {
    metrics::counter!(UNAPPLIED, "channel" => channel.to_string(), "reason" => reason).increment(1);
}

pub fn drift(channel: &str, units: i64) {
    metrics::counter!(DRIFT_ITEMS, "channel" => channel.to_string()).increment(1);
    metrics::counter!(DRIFT_UNITS, "channel" => channel.to_string())
        .increment(units.unsigned_abs());
}

pub fn reconciliation(channel: &str) {
    metrics::counter!(RECONCILIATIONS, "channel" => channel.to_string()).increment(1);
}

pub fn pending(channel: &str, n: i64) {
    metrics::gauge!(PENDING, "channel" => channel.to_string()).set(n as f64);
}

pub fn cursor(channel: &str, seq: u64) {
    metrics::gauge!(CURSOR, "channel" => channel.to_string()).set(seq as f64);
}

pub fn channel_error(channel: &str) {
    metrics::counter!(CHANNEL_ERRORS, "channel" => channel.to_string()).increment(1);
}

pub fn channel_call(channel: &str, op: &'static str, took: Duration) {
    metrics::histogram!(CHANNEL_CALLS, "channel" => channel.to_string(), "op" => op)
        .record(took.as_secs_f64());
}

pub fn token_refresh(channel: &str) {
    metrics::counter!(TOKEN_REFRESHES, "channel" => channel.to_string()).increment(1);
}

pub fn order(channel: &str, step: &'static str) {
    metrics::counter!(ORDERS, "channel" => channel.to_string(), "step" => step).increment(1);
}

pub fn inflight(channel: &str, seconds: f64) {
    let s = seconds.max(0.0);
    metrics::histogram!(INFLIGHT, "channel" => channel.to_string()).record(s);
    metrics::gauge!(INFLIGHT_LAST, "channel" => channel.to_string()).set(s);
}

pub fn poll_lag(channel: &str, seconds: f64) {
    metrics::gauge!(POLL_LAG, "channel" => channel.to_string()).set(seconds.max(0.0));
}

pub fn feed(channel: &str, outcome: &'static str) {
    metrics::counter!(FEEDS, "channel" => channel.to_string(), "outcome" => outcome).increment(1);
}
