//! Metrics and logs. Metric names live here, so every series is described
//! once, exists from the first scrape, and no module invents its own.

use std::time::Duration;

use crate::domain::ChannelCode;

/// An error and its causes, one after another: what logs print.
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

/// Records one group commit: how many jobs it carried and how long it took.
pub fn record_commit(jobs: usize, took: Duration, ok: bool) {
    metrics::histogram!("stockpool_commit_batch_size").record(jobs as f64);
    metrics::histogram!("stockpool_commit_duration_seconds").record(took.as_secs_f64());
    if !ok {
        metrics::counter!("stockpool_commit_failures_total").increment(1);
    }
}

/// Counts a Reserve by channel and outcome (accepted, rejected, replayed).
pub fn reservation_outcome(channel: &ChannelCode, outcome: &'static str) {
    metrics::counter!("stockpool_reservations_total", "channel" => channel.to_string(), "outcome" => outcome)
        .increment(1);
}

/// Counts a hold that ran out.
pub fn hold_expired(channel: &ChannelCode) {
    metrics::counter!("stockpool_holds_expired_total", "channel" => channel.to_string())
        .increment(1);
}

/// Counts units reserved beyond what a count found on hand.
pub fn shortfall(units: i64) {
    metrics::counter!("stockpool_stock_shortfall_units_total").increment(units.max(0) as u64);
}

/// Structured logs to stderr, text or JSON; `RUST_LOG` filters (default info).
pub fn init_logging(format: crate::config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
    metrics::gauge!("stockpool_watchers", "channel" => channel.to_string()).increment(delta as f64);
}
