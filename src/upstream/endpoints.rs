//! A registry's endpoints (`[[upstreams]] endpoints`: the registry, then the ones to fall back
//! on) and a circuit breaker for each: after `failures` failures in a row an endpoint is
//! skipped for `cooldown`, then asked again by the next request (one probe): an answer closes
//! the breaker, a failure opens it for another cooldown. Shared by every worker.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use url::Url;

use crate::upstream::registries::{Registries, RegistryName};

/// When an endpoint counts as failed, and for how long it is then skipped.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Failures in a row that open the breaker (at least 1).
    pub failures: u32,
    pub cooldown: Duration,
}

struct Breaker {
    registry: RegistryName,
    /// The endpoint's URL as configured (a metric label and a landing-page row).
    endpoint: String,
    failures_in_a_row: AtomicU32,
    /// Unix milliseconds until which it is skipped; 0: closed.
    open_until: AtomicU64,
}

/// One endpoint's state, for the metrics and the landing page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointState {
    pub registry: RegistryName,
    pub endpoint: String,
    /// Its breaker is closed: fewer failures in a row than open it. An open breaker whose
    /// cooldown is over stays down until a probe is answered.
    pub up: bool,
    pub failures_in_a_row: u32,
}

pub struct Breakers {
    policy: BreakerPolicy,
    /// Every registry's endpoints, in the order configured.
    breakers: Vec<Breaker>,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Breakers {
    /// A breaker for each endpoint of each registry that has more than one.
    pub fn new(registries: &Registries, policy: BreakerPolicy) -> Breakers {
        let breakers = registries
            .all()
            .iter()
            .filter(|r| !r.fallbacks.is_empty())
            .flat_map(|r| {
                r.endpoints().map(|url| Breaker {
                    registry: r.label(),
                    endpoint: url.as_str().trim_end_matches('/').to_owned(),
                    failures_in_a_row: AtomicU32::new(0),
                    open_until: AtomicU64::new(0),
                })
            })
            .collect();
        Breakers { policy, breakers }
    }

    fn of(&self, registry: RegistryName) -> impl Iterator<Item = &Breaker> {
        self.breakers.iter().filter(move |b| b.registry == registry)
    }

    /// The order to try `registry`'s endpoints in, by index into its endpoint list: those not
    /// skipped, in the configured order. When every one is skipped, all of them, in order: a
    /// request that may succeed is better than an answer that cannot.
    pub fn order(&self, registry: RegistryName) -> Vec<usize> {
        let now = now_millis();
        let open: Vec<bool> = self
            .of(registry)
            .map(|b| b.open_until.load(Ordering::Relaxed) > now)
            .collect();
        let usable: Vec<usize> = (0..open.len()).filter(|&i| !open[i]).collect();
        if usable.is_empty() {
            (0..open.len()).collect()
        } else {
            usable
        }
    }

    /// An answer from endpoint `index`: its breaker closes.
    pub fn answered(&self, registry: RegistryName, index: usize) {
        if let Some(b) = self.of(registry).nth(index) {
            b.failures_in_a_row.store(0, Ordering::Relaxed);
            b.open_until.store(0, Ordering::Relaxed);
        }
    }

    /// A failure of endpoint `index`; true when it opens the breaker (now skipped for the
    /// cooldown).
    pub fn failed(&self, registry: RegistryName, index: usize) -> bool {
        let Some(b) = self.of(registry).nth(index) else {
            return false;
        };
        let failures = b.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.policy.failures.max(1) {
            let until = now_millis() + self.policy.cooldown.as_millis() as u64;
            b.open_until.store(until, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Every endpoint's state now.
    pub fn states(&self) -> Vec<EndpointState> {
        self.breakers.iter().map(|b| self.state(b)).collect()
    }

    /// Endpoint `index` of `registry`'s state now.
    pub fn state_of(&self, registry: RegistryName, index: usize) -> Option<EndpointState> {
        self.of(registry).nth(index).map(|b| self.state(b))
    }

    fn state(&self, b: &Breaker) -> EndpointState {
        let failures_in_a_row = b.failures_in_a_row.load(Ordering::Relaxed);
        EndpointState {
            registry: b.registry,
            endpoint: b.endpoint.clone(),
            up: failures_in_a_row < self.policy.failures.max(1),
            failures_in_a_row,
        }
    }
}

/// `url` (made from `from`, the registry's first endpoint) on the endpoint `to`: the same path
/// below the base and the same query.
pub fn rebase(url: &Url, from: &Url, to: &Url) -> Option<Url> {
    let from_path = from.path().trim_end_matches('/');
    let rest = url.path().strip_prefix(from_path)?;
    let mut text = format!("{}{rest}", to.as_str().trim_end_matches('/'));
    if let Some(query) = url.query() {
        text.push('?');
        text.push_str(query);
    }
    Url::parse(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::registries::Registry;

    fn registries() -> Registries {
        let hub = Registry {
            name: "docker.io".into(),
            registry: Url::parse("https://registry-1.docker.io").unwrap(),
            fallbacks: vec![
                Url::parse("https://mirror.gcr.io").unwrap(),
                Url::parse("https://third.example/base/").unwrap(),
            ],
            realm: None,
            library: true,
            host_names: Vec::new(),
            forward_credentials: false,
            credentials: None,
            proxy: None,
        };
        Registries::new(vec![hub], 0)
    }

    #[test]
    fn a_breaker_opens_after_failures_in_a_row_and_closes_on_an_answer() {
        let policy = BreakerPolicy {
            failures: 2,
            cooldown: Duration::from_secs(60),
        };
        let breakers = Breakers::new(&registries(), policy);
        assert_eq!(breakers.order("docker.io"), [0, 1, 2]);
        assert!(!breakers.failed("docker.io", 0));
        breakers.answered("docker.io", 0);
        assert!(!breakers.failed("docker.io", 0));
        assert!(breakers.failed("docker.io", 0));
        assert_eq!(breakers.order("docker.io"), [1, 2]);
        let states = breakers.states();
        assert_eq!(states.len(), 3);
        assert!(!states[0].up && states[1].up);
        assert_eq!(states[0].endpoint, "https://registry-1.docker.io");
        // Every endpoint skipped: all are tried anyway.
        for i in [1, 2] {
            breakers.failed("docker.io", i);
            breakers.failed("docker.io", i);
        }
        assert_eq!(breakers.order("docker.io"), [0, 1, 2]);
        breakers.answered("docker.io", 1);
        assert_eq!(breakers.order("docker.io"), [1]);
        // A registry with one endpoint has no breaker.
        assert_eq!(breakers.order("ghcr.io"), Vec::<usize>::new());
    }

    #[test]
    fn a_cooldown_that_is_over_lets_the_next_request_probe() {
        let policy = BreakerPolicy {
            failures: 1,
            cooldown: Duration::ZERO,
        };
        let breakers = Breakers::new(&registries(), policy);
        assert!(breakers.failed("docker.io", 0));
        assert_eq!(breakers.order("docker.io"), [0, 1, 2]);
    }

    #[test]
    fn urls_move_to_another_endpoint_whole() {
        let from = Url::parse("https://registry-1.docker.io").unwrap();
        let url = Url::parse(
            "https://registry-1.docker.io/v2/library/nginx/manifests/latest?ns=docker.io",
        )
        .unwrap();
        let to = Url::parse("https://mirror.gcr.io").unwrap();
        assert_eq!(
            rebase(&url, &from, &to).unwrap().as_str(),
            "https://mirror.gcr.io/v2/library/nginx/manifests/latest?ns=docker.io"
        );
        let to = Url::parse("https://third.example/base/").unwrap();
        assert_eq!(
            rebase(&url, &from, &to).unwrap().as_str(),
            "https://third.example/base/v2/library/nginx/manifests/latest?ns=docker.io"
        );
        let from = Url::parse("https://third.example/base").unwrap();
        let url = Url::parse("https://third.example/base/v2/").unwrap();
        let to = Url::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!(
            rebase(&url, &from, &to).unwrap().as_str(),
            "http://127.0.0.1:5000/v2/"
        );
    }
}
