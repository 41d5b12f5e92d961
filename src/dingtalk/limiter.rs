//! The client-side rate limiter: one GCRA bucket per API path of one app (governor), spaced
//! a little wider than `1/qps` so that network jitter never pushes DingTalk's one-second
//! window over its limit. A correctly configured client therefore never meets 90018 from
//! its own traffic.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Spacing factor over the exact `1/qps` period.
const SAFETY_FACTOR: f64 = 1.05;

/// Per-path limiter of one app.
pub(super) struct PathLimiter {
    limiter: DefaultKeyedRateLimiter<&'static str>,
}

impl PathLimiter {
    /// At most `qps` calls per second on each path, one at a time (burst 1).
    pub fn new(qps: NonZeroU32) -> Self {
        let period = Duration::from_secs_f64(SAFETY_FACTOR / f64::from(qps.get()));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(qps))
            .allow_burst(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// Waits for a slot on `path`; returns how long it waited.
    pub async fn acquire(&self, path: &'static str) -> Duration {
        let started = tokio::time::Instant::now();
        self.limiter.until_key_ready(&path).await;
        started.elapsed()
    }
}
