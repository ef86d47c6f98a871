//! Pacing calls to a channel's API: exponential backoff with jitter for
//! outages, a cost bucket (a leaky bucket as the API reports it) so a
//! rate-limited API is never asked for more than it has, and a token
//! bucket for APIs that document a rate and a burst per operation.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Exponential backoff: `initial`, doubling, at most `max`, each wait with
/// up to 20% of jitter taken off (so many adapters do not retry in step).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The wait before the next attempt; the one after is longer.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0 * 0.2;
        wait.mul_f64(1.0 - jitter)
    }

    /// After a success: start again from `initial`.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// The API's bucket as it last reported it, and what each kind of call was
/// seen to cost.
///
/// `available()` is an estimate that never runs ahead of the API: it starts
/// from the reported figure and restores from the moment the answer was
/// read (the API restored since it computed the figure, a little earlier).
#[derive(Debug, Default)]
pub struct CostBucket {
    /// (maximum, available at `at`, restore per second, at).
    reported: Option<(f64, f64, f64, Instant)>,
    /// Per kind of call: the most seen cost per unit of size, and the least
    /// seen cost. For a cost of the form `a + b × size` their combination
    /// never underestimates (see [`CostBucket::expected`]).
    per_unit: HashMap<&'static str, (f64, f64)>,
    /// Set after the API refused a call for its budget: from then on a
    /// call of unknown cost waits for a full bucket.
    throttled: bool,
}

impl CostBucket {
    /// Takes the bucket figures of an answer.
    pub fn report(&mut self, maximum: f64, available: f64, restore_per_second: f64) {
        self.reported = Some((maximum, available, restore_per_second, Instant::now()));
    }

    /// Takes what a call of `kind` and `size` (items in it, at least 1)
    /// was said to cost.
    pub fn learn(&mut self, kind: &'static str, size: usize, cost: f64) {
        let unit = cost / size.max(1) as f64;
        let known = self.per_unit.entry(kind).or_insert((0.0, f64::MAX));
        known.0 = known.0.max(unit);
        known.1 = known.1.min(cost);
    }

    pub fn note_throttled(&mut self) {
        self.throttled = true;
    }

    /// The expected cost of a call, if this kind was seen before: the
    /// larger of the least cost seen and the most cost per unit seen times
    /// `size`. For costs `a + b × size` this is never below the real cost:
    /// above the smallest size seen the unit cost (largest there) covers
    /// `a`; below it, the least cost does.
    pub fn expected(&self, kind: &'static str, size: usize) -> Option<f64> {
        self.per_unit
            .get(kind)
            .map(|(unit, least)| (unit * size.max(1) as f64).ceil().max(*least))
    }

    /// The largest size of `kind` a full bucket can pay for (None: unknown).
    pub fn max_size(&self, kind: &'static str) -> Option<usize> {
        let (maximum, ..) = self.reported?;
        let (unit, _) = *self.per_unit.get(kind)?;
        Some(((maximum / unit).floor() as usize).max(1))
    }

    /// The estimated budget now.
    pub fn available(&self) -> Option<f64> {
        self.reported
            .map(|(max, avail, rate, at)| (avail + rate * at.elapsed().as_secs_f64()).min(max))
    }

    /// How long to wait before a call of `kind` and `size` fits the budget
    /// (zero: go). A call of unknown cost goes at once until the API first
    /// throttled, then waits for a full bucket.
    pub fn wait_for(&self, kind: &'static str, size: usize) -> Duration {
        let Some((maximum, _, rate, _)) = self.reported else {
            return Duration::ZERO;
        };
        let need = match self.expected(kind, size) {
            Some(cost) => cost.min(maximum),
            None if self.throttled => maximum,
            None => return Duration::ZERO,
        };
        let have = self.available().unwrap_or(maximum);
        if have >= need || rate <= 0.0 {
            return Duration::ZERO;
        }
        // A little over, so rounding never sends a call a hair early.
        Duration::from_secs_f64((need - have) / rate + 0.02)
    }
}

/// A token bucket as SP-API documents its usage plans: `rate` requests
/// per second restored, at most `burst` held. A call takes one token;
/// [`TokenBucket::take`] says how long to wait for it. After a refusal
/// for the rate ([`TokenBucket::throttled`]) the bucket is emptied and the
/// rate the API named is taken, so the next call waits a full interval.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: rate.max(1e-6),
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn restore(&mut self) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + self.rate * now.duration_since(self.at).as_secs_f64()).min(self.burst);
        self.at = now;
    }

    /// Takes a token: zero when one was there, else how long until it is
    /// (the token is spoken for: the caller waits that long, then goes).
    pub fn take(&mut self) -> Duration {
        self.restore();
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// A call that took a token `in_flight` ago was answered. The API
    /// took that token some time in between, perhaps only now: the
    /// restore counted since it was sent is taken back, so the estimate
    /// never runs ahead of the API's own bucket (the first call of all,
    /// slowed by its connection, would otherwise let a burst through
    /// early).
    pub fn answered(&mut self, in_flight: Duration) {
        self.restore();
        self.tokens -= (self.rate * in_flight.as_secs_f64()).min(self.burst);
    }

    /// Tokens held now (negative: promised to waiting callers).
    pub fn tokens(&mut self) -> f64 {
        self.restore();
        self.tokens
    }

    /// The API refused a call for its rate: nothing is left, and its rate
    /// (from `x-amzn-RateLimit-Limit`, when given and lower) is taken.
    pub fn throttled(&mut self, limit: Option<f64>) {
        if let Some(rate) = limit.filter(|r| *r > 0.0 && r.is_finite()) {
            self.rate = self.rate.min(rate);
        }
        self.restore();
        self.tokens = self.tokens.min(0.0);
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_starts_over_after_a_success() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| b.next_wait().as_millis()).collect();
        assert!((80..=100).contains(&waits[0]), "{waits:?}");
        assert!((160..=200).contains(&waits[1]), "{waits:?}");
        assert!(
            (280..=350).contains(&waits[2]) && (280..=350).contains(&waits[3]),
            "{waits:?}"
        );
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }

    #[test]
    fn a_call_waits_until_the_reported_bucket_has_restored_its_learned_cost() {
        let mut bucket = CostBucket::default();
        assert_eq!(
            bucket.wait_for("read", 10),
            Duration::ZERO,
            "nothing known yet"
        );
        bucket.report(50.0, 10.0, 5.0);
        bucket.learn("read", 10, 30.0);
        let wait = bucket.wait_for("read", 10);
        assert!(
            wait >= Duration::from_secs(4) && wait < Duration::from_millis(4100),
            "{wait:?}"
        );
        assert_eq!(
            bucket.expected("read", 5),
            Some(30.0),
            "never below the least cost seen"
        );
        assert_eq!(bucket.expected("read", 20), Some(60.0));
        // A flat cost (a mutation) is not scaled down for a smaller call.
        bucket.learn("set", 3, 10.0);
        assert_eq!(bucket.expected("set", 1), Some(10.0));
        assert_eq!(bucket.max_size("read"), Some(16));
        // Unknown kinds go at once before any throttle, then wait for a full bucket.
        assert_eq!(bucket.wait_for("write", 1), Duration::ZERO);
        bucket.note_throttled();
        assert!(bucket.wait_for("write", 1) >= Duration::from_secs(8));
    }

    #[test]
    fn a_token_bucket_lets_a_burst_through_then_paces_at_its_rate_and_a_throttle_empties_it() {
        let mut b = TokenBucket::new(2.0, 3);
        for _ in 0..3 {
            assert_eq!(b.take(), Duration::ZERO);
        }
        let wait = b.take();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        let mut b = TokenBucket::new(10.0, 5);
        b.throttled(Some(1.0));
        assert_eq!(b.rate(), 1.0, "the rate the API named is taken");
        assert!(b.take() > Duration::from_millis(900));
    }
}
