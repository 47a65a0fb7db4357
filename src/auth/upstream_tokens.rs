//! Managed auth: the tokens hubferry holds for itself at each upstream, one per
//! (upstream, scope), kept until shortly before they expire. A pull asks for the same scope for
//! its manifest and every blob, often in parallel: one slot per key, locked while its token is
//! fetched, so parallel misses wait for the one fetch instead of each asking the issuer (which
//! rate-limits token requests, and Docker Hub counts them).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::auth::users::Secret;

/// Keys kept before expired slots are swept: a client cannot grow the table without bound by
/// asking for many repositories.
const MAX_SLOTS: usize = 4096;

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

#[derive(Debug)]
struct Cached {
    token: Secret,
    valid_until: Instant,
}

#[derive(Debug, Default)]
pub struct UpstreamTokens {
    slots: Mutex<HashMap<(String, String), Slot>>,
}

impl UpstreamTokens {
    /// The cached token for `upstream` and `scope`, or the one `fetch` gets (with its lifetime,
    /// `expires_in`), which is then cached. A failed fetch caches nothing.
    pub async fn get_or_fetch<E, F, Fut>(
        &self,
        upstream: &str,
        scope: &str,
        fetch: F,
    ) -> Result<Secret, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Secret, Duration), E>>,
    {
        let slot = self.slot(upstream, scope);
        let mut cached = slot.lock().await;
        if let Some(hit) = cached.as_ref().filter(|c| c.valid_until > Instant::now()) {
            return Ok(hit.token.clone());
        }
        let (token, expires_in) = fetch().await?;
        *cached = Some(Cached {
            token: token.clone(),
            valid_until: Instant::now() + usable_for(expires_in),
        });
        Ok(token)
    }

    /// Drops a token the upstream refused (revoked, or its clock disagrees with ours).
    pub fn forget(&self, upstream: &str, scope: &str) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(&(upstream.to_owned(), scope.to_owned())) {
            if let Ok(mut cached) = slot.try_lock() {
                *cached = None;
            }
        }
    }

    fn slot(&self, upstream: &str, scope: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let key = (upstream.to_owned(), scope.to_owned());
        if let Some(slot) = slots.get(&key) {
            return slot.clone();
        }
        if slots.len() >= MAX_SLOTS {
            let now = Instant::now();
            // Keep slots in use (someone holds or waits on them) and tokens still valid.
            slots.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot
                        .try_lock()
                        .map(|c| c.as_ref().is_some_and(|c| c.valid_until > now))
                        .unwrap_or(true)
            });
            if slots.len() >= MAX_SLOTS {
                slots.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
        }
        slots.entry(key).or_default().clone()
    }
}

/// How long a token of lifetime `expires_in` is used: a margin before its end (a quarter of
/// it, at most 30 s) so a request sent just before expiry does not arrive just after.
pub fn usable_for(expires_in: Duration) -> Duration {
    expires_in - (expires_in / 4).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn tokens_are_used_until_shortly_before_they_expire() {
        assert_eq!(
            usable_for(Duration::from_secs(300)),
            Duration::from_secs(270)
        );
        assert_eq!(usable_for(Duration::from_secs(60)), Duration::from_secs(45));
        assert_eq!(usable_for(Duration::ZERO), Duration::ZERO);
    }

    #[actix_rt::test]
    async fn one_fetch_per_scope_until_forgotten_or_expired() {
        let tokens = UpstreamTokens::default();
        let fetches = Cell::new(0);
        let fetch = |lifetime: u64| {
            fetches.set(fetches.get() + 1);
            let n = fetches.get();
            async move { Ok::<_, ()>((Secret::new(format!("t{n}")), Duration::from_secs(lifetime))) }
        };
        let a = "repository:a/b:pull";
        let first = tokens.get_or_fetch("docker.io", a, || fetch(300)).await;
        let again = tokens.get_or_fetch("docker.io", a, || fetch(300)).await;
        assert_eq!(first, again);
        assert_eq!(fetches.get(), 1);
        // Another scope, another upstream: their own tokens.
        tokens
            .get_or_fetch("docker.io", "repository:c/d:pull", || fetch(300))
            .await
            .unwrap();
        tokens
            .get_or_fetch("ghcr.io", a, || fetch(300))
            .await
            .unwrap();
        assert_eq!(fetches.get(), 3);
        tokens.forget("docker.io", a);
        let refetched = tokens.get_or_fetch("docker.io", a, || fetch(300)).await;
        assert_eq!(refetched.unwrap().expose(), "t4");
        // A token with no usable life is fetched every time; failures are not cached.
        tokens.get_or_fetch("x", a, || fetch(0)).await.unwrap();
        tokens.get_or_fetch("x", a, || fetch(0)).await.unwrap();
        assert_eq!(fetches.get(), 6);
        let failed = tokens
            .get_or_fetch("y", a, || async { Err::<(Secret, Duration), _>("no") })
            .await;
        assert_eq!(failed, Err("no"));
    }
}
