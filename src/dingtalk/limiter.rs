//! The client-side rate limiter: calls on each API path of one app are given slots on a
//! fixed grid, one every `1.05/qps` seconds (a little wider than `1/qps`, so that network
//! jitter never pushes DingTalk's one-second window over its limit). A correctly configured
//! client therefore never meets 90018 from its own traffic.
//!
//! Each caller *reserves* the next free slot when it asks, then sleeps until it. A GCRA
//! limiter with a burst of 1 (governor's `until_ready`, used before) instead lets waiters
//! race for the slot when they wake; tokio's timers fire on a 1 ms tick, so the winner is
//! late by up to a millisecond, the next slot is counted from that late moment, and the
//! lateness is lost every time: at 200 calls/s (a 5.25 ms period) that was 10–15% of the
//! throughput. Reserved slots stay on the grid however late their caller wakes, and calls
//! are still never closer than one period apart when sent on time. A slot nobody asked for
//! in time is not saved up (no bursts after an idle spell); a caller that goes away before
//! its slot leaves it unused.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Spacing factor over the exact `1/qps` period.
const SAFETY_FACTOR: f64 = 1.05;

/// Per-path limiter of one app.
pub(super) struct PathLimiter {
    period: Duration,
    /// Per path, the first slot not yet reserved.
    next: Mutex<HashMap<&'static str, Instant>>,
}

impl PathLimiter {
    /// At most `qps` calls per second on each path, one slot every `1.05/qps` s.
    pub fn new(qps: NonZeroU32) -> Self {
        Self {
            period: Duration::from_secs_f64(SAFETY_FACTOR / f64::from(qps.get())),
            next: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves the next slot on `path` and waits for it; returns how long it waited.
    pub async fn acquire(&self, path: &'static str) -> Duration {
        let now = Instant::now();
        tokio::time::sleep_until(self.reserve(path, now)).await;
        now.elapsed()
    }

    /// The next free slot on `path` at `now` (now itself when the path is idle), taken.
    fn reserve(&self, path: &'static str, now: Instant) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let free = next.entry(path).or_insert(now);
        let slot = (*free).max(now);
        *free = slot + self.period;
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_one_period_apart_per_path_and_never_bunch_after_an_idle_spell() {
        let limiter = PathLimiter::new(NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN));
        let period = limiter.period;
        let start = Instant::now();
        // Eight callers at once get eight consecutive slots, however late each one wakes.
        for i in 0..8u32 {
            assert_eq!(limiter.reserve("a", start), start + period * i);
        }
        // A caller arriving late (after 3 periods) still gets the next slot on the grid.
        assert_eq!(limiter.reserve("a", start + period * 3), start + period * 8);
        // Another path has its own grid.
        assert_eq!(limiter.reserve("b", start), start);
        // After an idle second, the next call goes at once, and the one after a period later.
        let later = start + Duration::from_secs(1);
        assert_eq!(limiter.reserve("a", later), later);
        assert_eq!(limiter.reserve("a", later), later + period);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_waits_for_its_slot() {
        let limiter = PathLimiter::new(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN));
        assert_eq!(limiter.acquire("a").await, Duration::ZERO);
        let waited = limiter.acquire("a").await;
        assert!(waited >= limiter.period, "{waited:?}");
    }
}
