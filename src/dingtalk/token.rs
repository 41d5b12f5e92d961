//! The access-token cache of one app: fetched once, reused until shortly before it expires,
//! refreshed by exactly one caller while the others wait for it (single flight).

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::secret::Secret;

/// Longest head start for a refresh before expiry (DingTalk's guide: about 10 minutes).
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(600);

/// A cached token and when to stop using it.
#[derive(Clone)]
struct Cached {
    token: Secret,
    refresh_at: Instant,
}

/// One app's token.
#[derive(Default)]
pub(super) struct TokenCache {
    slot: Mutex<Option<Cached>>,
}

impl TokenCache {
    /// The cached token, or a fresh one from `fetch`. The lock is held across the fetch, so
    /// concurrent callers share one refresh.
    pub async fn get<F, Fut, E>(&self, fetch: F) -> Result<Secret, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(Secret, Duration), E>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(cached) = slot.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(cached.token.clone());
        }
        let (token, expires_in) = fetch().await?;
        // Refresh a quarter of the lifetime early, at most 10 minutes: with DingTalk's 7200 s
        // that is 10 minutes; with a short test lifetime it still leaves room.
        let margin = (expires_in / 4).min(MAX_REFRESH_MARGIN);
        *slot = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + expires_in - margin,
        });
        Ok(token)
    }

    /// Forgets `stale` if it is still the cached token (a later caller may already have
    /// replaced it, in which case nothing happens).
    pub async fn invalidate(&self, stale: &Secret) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|cached| &cached.token == stale) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    async fn fetch(counter: &AtomicU32) -> Result<(Secret, Duration), ()> {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        Ok((Secret::new(format!("token{n}")), Duration::from_secs(7200)))
    }

    #[tokio::test(start_paused = true)]
    async fn token_is_reused_until_ten_minutes_before_expiry() {
        let cache = TokenCache::default();
        let fetches = AtomicU32::new(0);
        assert_eq!(
            cache.get(|| fetch(&fetches)).await.unwrap().expose(),
            "token0"
        );
        tokio::time::advance(Duration::from_secs(7200 - 601)).await;
        assert_eq!(
            cache.get(|| fetch(&fetches)).await.unwrap().expose(),
            "token0"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            cache.get(|| fetch(&fetches)).await.unwrap().expose(),
            "token1"
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_only_drops_the_stale_token() {
        let cache = TokenCache::default();
        let fetches = AtomicU32::new(0);
        let first = cache.get(|| fetch(&fetches)).await.unwrap();
        cache.invalidate(&first).await;
        let second = cache.get(|| fetch(&fetches)).await.unwrap();
        // A late caller that still holds the first token must not drop the second.
        cache.invalidate(&first).await;
        assert_eq!(cache.get(|| fetch(&fetches)).await.unwrap(), second);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }
}
