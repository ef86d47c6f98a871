//! The outbox dispatcher: takes of each reservation its oldest pending
//! entry, pushes several reservations at once, and records each outcome
//! before that reservation's next entry is taken, so Odoo sees one
//! reservation's changes in the order they happened.
//!
//! A failed push is retried with exponential backoff and jitter while Odoo
//! is unreachable, slow or failing; after `max_attempts`, or at once when
//! Odoo itself refused (a locked order, a validation error: no retry can
//! change its answer), the entry is dead-lettered with Odoo's message for
//! ops to list and retry. A sale order created on a retry is looked at
//! again `duplicate_check` later: the attempt that got no answer may still
//! have committed one, which that second look cancels. Reservations never
//! wait for any of this: the outbox row was committed with the change.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::push::{PushError, Pusher};
use super::OdooConfig;
use crate::engine::Engine;
use crate::store::{OutboxEntry, OutboxState, OutboxUpdate};
use crate::telemetry;

/// Longest `last_error` kept per entry.
const MAX_ERROR_LEN: usize = 1000;

/// Pushes the outbox to Odoo until stopped.
pub struct Dispatcher {
    engine: Engine,
    pusher: Arc<Pusher>,
    max_attempts: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    concurrency: usize,
    poll: Duration,
    duplicate_check: Duration,
}

/// What one push came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Pushed,
    /// Pushed, but the order was created on a retry: push again after
    /// `after` to find a duplicate the unanswered attempt may have left.
    Check {
        after: Duration,
    },
    Retry {
        error: String,
        after: Duration,
    },
    Dead {
        error: String,
    },
}

impl Dispatcher {
    pub fn new(engine: Engine, pusher: Arc<Pusher>, config: &OdooConfig) -> Dispatcher {
        Dispatcher {
            engine,
            pusher,
            max_attempts: config.max_attempts,
            backoff_initial: config.backoff_initial,
            backoff_max: config.backoff_max,
            concurrency: config.concurrency,
            poll: config.poll,
            duplicate_check: config.duplicate_check,
        }
    }

    /// Runs rounds until `stop` turns true; a push in flight is finished.
    /// Nothing is pushed before `quiet_until`: the previous active server
    /// may still be pushing (the fencing epoch stops its commits, not its
    /// calls to Odoo), and a push of the same entry by both could create
    /// its order twice.
    pub async fn run(
        self,
        quiet_until: Option<std::time::Instant>,
        mut stop: watch::Receiver<bool>,
    ) {
        let this = Arc::new(self);
        if let Some(until) = quiet_until {
            let wait = until.saturating_duration_since(std::time::Instant::now());
            if !wait.is_zero() {
                tracing::info!(
                    ?wait,
                    "the previous active server may still be pushing to Odoo: the first push waits"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
        }
        loop {
            // Only the active server pushes: a deposed one stops here, an
            // isolated one (its lease lapsed) waits to be renewed.
            if *stop.borrow() {
                return;
            }
            if !this.engine.is_current() {
                let resumed = tokio::select! {
                    current = this.engine.until_current() => current,
                    _ = stop.changed() => false,
                };
                if !resumed {
                    return;
                }
                continue;
            }
            let busy = match this.round().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %telemetry::chain(&e), "could not read the Odoo outbox; retrying");
                    false
                }
            };
            this.update_gauges().await;
            if busy {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(this.poll) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Pushes what is due now, `concurrency` reservations at a time; returns
    /// how many entries it handled.
    async fn round(self: &Arc<Self>) -> Result<usize, crate::engine::EngineError> {
        let limit = i64::try_from(self.concurrency * 8).unwrap_or(64);
        let due = self.engine.outbox_due(limit).await?;
        let n = due.len();
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = JoinSet::new();
        for entry in due {
            let this = self.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                this.handle(entry).await;
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok(n)
    }

    async fn handle(&self, entry: OutboxEntry) {
        // Checked before every push, so a server that resumes after a pause
        // past its lease pushes nothing its successor pushes too.
        if !self.engine.is_current() {
            return;
        }
        let attempts = entry.attempts.saturating_add(1);
        let outcome = match self.pusher.push(&entry).await {
            Ok(p) if p.created && entry.attempts > 0 => Outcome::Check {
                after: self.duplicate_check,
            },
            Ok(_) => Outcome::Pushed,
            Err(PushError::Permanent(error)) => Outcome::Dead { error },
            Err(PushError::Retry(e)) if attempts >= self.max_attempts => Outcome::Dead {
                error: format!("gave up after {attempts} attempts: {e}"),
            },
            Err(PushError::Retry(e)) => Outcome::Retry {
                error: e.to_string(),
                after: backoff(self.backoff_initial, self.backoff_max, attempts, jitter()),
            },
        };
        let e = &entry.entry;
        let now = self.engine.now();
        let update = match &outcome {
            Outcome::Pushed => {
                tracing::debug!(id = entry.id, channel = %e.channel, order_id = %e.order_id, event = e.event.as_str(), "pushed to Odoo");
                OutboxUpdate {
                    id: entry.id,
                    state: OutboxState::Pushed,
                    attempts,
                    last_error: String::new(),
                    next_attempt_at_ms: now,
                    at_ms: now,
                }
            }
            Outcome::Check { after } => {
                tracing::info!(id = entry.id, channel = %e.channel, order_id = %e.order_id, attempts, check_in_s = after.as_secs(), "created the Odoo sale order on a retry; looking again later for a duplicate from the attempt that got no answer");
                OutboxUpdate {
                    id: entry.id,
                    state: OutboxState::Pending,
                    attempts,
                    last_error: format!(
                        "created the sale order after an attempt that got no answer; looking for a duplicate {} s later",
                        after.as_secs()
                    ),
                    next_attempt_at_ms: now + i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2),
                    at_ms: now,
                }
            }
            Outcome::Retry { error, after } => {
                tracing::warn!(id = entry.id, channel = %e.channel, order_id = %e.order_id, attempts, retry_in_ms = after.as_millis() as u64, %error, "Odoo push failed; will retry");
                OutboxUpdate {
                    id: entry.id,
                    state: OutboxState::Pending,
                    attempts,
                    last_error: truncate(error),
                    next_attempt_at_ms: now
                        + i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2),
                    at_ms: now,
                }
            }
            Outcome::Dead { error } => {
                tracing::error!(id = entry.id, channel = %e.channel, order_id = %e.order_id, attempts, %error, "Odoo push dead-lettered; fix the cause, then RetryOutbox");
                OutboxUpdate {
                    id: entry.id,
                    state: OutboxState::Dead,
                    attempts,
                    last_error: truncate(error),
                    next_attempt_at_ms: now,
                    at_ms: now,
                }
            }
        };
        if let Err(err) = self.engine.outbox_record(update).await {
            // Left pending: it is pushed again, which converges to the same.
            tracing::warn!(id = entry.id, error = %telemetry::chain(&err), "could not record an Odoo push outcome");
            return;
        }
        telemetry::odoo_push(match outcome {
            Outcome::Pushed => "pushed",
            Outcome::Check { .. } => "checking",
            Outcome::Retry { .. } => "retried",
            Outcome::Dead { .. } => "dead_lettered",
        });
    }

    async fn update_gauges(&self) {
        match self.engine.outbox_stats().await {
            Ok(stats) => {
                let age = stats
                    .oldest_pending_at_ms
                    .map_or(0.0, |at| ((self.engine.now() - at).max(0) as f64) / 1000.0);
                telemetry::odoo_outbox(stats.pending, stats.dead, age);
            }
            Err(e) => {
                tracing::debug!(error = %telemetry::chain(&e), "could not count the Odoo outbox")
            }
        }
    }
}

/// The delay before attempt `attempts + 1`: `initial` doubled per failed
/// attempt, at most `max`, scaled by `jitter` in [0.5, 1] so retries of
/// many entries spread out instead of hitting Odoo together.
fn backoff(initial: Duration, max: Duration, attempts: u32, jitter: f64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    let raw = initial.saturating_mul(1u32 << doublings).min(max);
    raw.mul_f64(jitter.clamp(0.5, 1.0))
}

/// A factor in [0.5, 1), from the random bits of a v4 UUID.
fn jitter() -> f64 {
    let bits = (uuid::Uuid::new_v4().as_u128() >> 64) as u64;
    0.5 + (bits >> 11) as f64 / (1u64 << 53) as f64 / 2.0
}

fn truncate(error: &str) -> String {
    if error.len() <= MAX_ERROR_LEN {
        return error.to_string();
    }
    let mut end = MAX_ERROR_LEN;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &error[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_up_to_the_maximum() {
        let ms =
            |a| backoff(Duration::from_millis(100), Duration::from_secs(1), a, 1.0).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(5), ms(40)],
            [100, 200, 400, 800, 1000, 1000]
        );
    }

    #[test]
    fn jitter_spreads_retries_over_the_upper_half_of_the_delay() {
        let d = backoff(Duration::from_millis(100), Duration::from_secs(1), 2, 0.5);
        assert_eq!(d.as_millis(), 100);
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.5..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn a_long_error_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_ERROR_LEN + '…'.len_utf8() && cut.ends_with('…'));
    }
}
