//! Metrics and logs: metric names and descriptions live here, so every
//! series exists from the first scrape and no module invents its own.

use std::time::Duration;

/// Records one group commit: how many jobs it carried and how long it took.
pub fn record_commit(jobs: usize, took: Duration, ok: bool) {
    metrics::histogram!("stockpool_commit_batch_size").record(jobs as f64);
    metrics::histogram!("stockpool_commit_duration_seconds").record(took.as_secs_f64());
    if !ok {
        metrics::counter!("stockpool_commit_failures_total").increment(1);
    }
}
