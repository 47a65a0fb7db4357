//! What hubferry counts, in one registry shared by every worker, exposed in the Prometheus text
//! format on the admin listener.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::error::{RegistryName, UpstreamName, DOCKER_HUB};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: &'static str,
}

/// Which upstream: its role (`registry`, `auth`, `index`, `blob CDN`) and the registry it
/// serves (`docker.io`, `ghcr.io`, ...; the CDN a registry's blobs were redirected to counts
/// for that registry).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: &'static str,
    registry: RegistryName,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: &'static str,
    registry: RegistryName,
    kind: &'static str,
}

/// Whose pull budget: the registry, and the address or account it is counted for
/// (`docker-ratelimit-source`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitLabels {
    registry: RegistryName,
    source: String,
}

/// One endpoint of a registry with several.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    registry: RegistryName,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResumeLabels {
    outcome: &'static str,
}

/// Every metric hubferry exports. Cheap to update from any worker (atomics inside).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    response_bytes: Counter,
    spliced_bytes: Counter,
    upstream_seconds: Family<UpstreamLabels, Histogram>,
    redirects: Counter,
    streams_in_flight: Gauge,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    resumes: Family<ResumeLabels, Counter>,
    ratelimit_limit: Gauge,
    ratelimit_remaining: Gauge,
    ratelimit_window: Gauge,
    upstream_ratelimit_limit: Family<RateLimitLabels, Gauge>,
    upstream_ratelimit_remaining: Family<RateLimitLabels, Gauge>,
    endpoint_up: Family<EndpointLabels, Gauge>,
    tls_certificate_expiry: Gauge,
    endpoint_failures: Family<EndpointLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    /// For the landing page: when the process started serving...
    started: Instant,
    /// ...and each pull budget as last seen, at most `SOURCES_PER_REGISTRY` per registry.
    budgets: Mutex<Vec<RateLimitSeen>>,
}

/// What the landing page shows of the metrics, read at request time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub uptime: Duration,
    pub bytes_served: u64,
    /// Every pull budget seen, in the order first seen.
    pub budgets: Vec<RateLimitSeen>,
}

/// A registry's pull budget for one source as last seen, and how long ago.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSeen {
    pub registry: RegistryName,
    pub source: String,
    pub limit: i64,
    pub remaining: i64,
    /// 0 when the header gave none.
    pub window_seconds: i64,
    /// When, in Unix seconds ([`Metrics::status`] turns it into `ago`).
    pub seen_at: u64,
    pub ago: Duration,
}

/// Sources kept per registry; any more are `other` (a source is the upstream's text: each one
/// is a series and a landing-page row).
const SOURCES_PER_REGISTRY: usize = 8;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hubferry");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Client requests, by route (registry, catalog, token: Docker Hub's, registry_token: \
             another registry's, search, other) and status class",
            requests.clone(),
        );
        let response_bytes = Counter::default();
        registry.register(
            "response_body_bytes",
            "Response body bytes streamed to clients",
            response_bytes.clone(),
        );
        let spliced_bytes = Counter::default();
        registry.register(
            "response_body_spliced_bytes",
            "Of those, bytes moved from an upstream socket to the client's with splice(2), never \
             entering hubferry's memory (plain HTTP on both sides)",
            spliced_bytes.clone(),
        );
        let upstream_seconds = Family::<UpstreamLabels, Histogram>::new_with_constructor(|| {
            // 1 ms .. ~33 s: loopback answers to long-haul Docker Hub round trips.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 16,
            ))
        });
        registry.register(
            "upstream_response_seconds",
            "Time from sending a request upstream to its response headers, by upstream role and \
             registry",
            upstream_seconds.clone(),
        );
        let redirects = Counter::default();
        registry.register(
            "redirects_followed",
            "Upstream redirects (blob downloads to the CDN) followed by hubferry",
            redirects.clone(),
        );
        let streams_in_flight = Gauge::default();
        registry.register(
            "streams_in_flight",
            "Response bodies being streamed from an upstream to a client right now",
            streams_in_flight.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures by upstream role, registry and kind (connect, timeout, redirect, \
             body)",
            upstream_errors.clone(),
        );
        let resumes = Family::<ResumeLabels, Counter>::default();
        registry.register(
            "download_resumes",
            "Broken upstream downloads asked for again from where they broke, by outcome \
             (resumed: the stream went on; gave_up: the client's download was aborted)",
            resumes.clone(),
        );
        let ratelimit_limit = Gauge::default();
        registry.register(
            "docker_ratelimit_limit",
            "Docker Hub pull limit as last seen in a ratelimit-limit header",
            ratelimit_limit.clone(),
        );
        let ratelimit_remaining = Gauge::default();
        registry.register(
            "docker_ratelimit_remaining",
            "Docker Hub pulls remaining as last seen in a ratelimit-remaining header",
            ratelimit_remaining.clone(),
        );
        let ratelimit_window = Gauge::default();
        registry.register(
            "docker_ratelimit_window_seconds",
            "The window of the Docker Hub pull limit (w= in ratelimit-limit)",
            ratelimit_window.clone(),
        );
        let upstream_ratelimit_limit = Family::<RateLimitLabels, Gauge>::default();
        registry.register(
            "upstream_ratelimit_limit",
            "An upstream's pull limit per window (ratelimit-limit), by registry and the address \
             or account it counts (docker-ratelimit-source)",
            upstream_ratelimit_limit.clone(),
        );
        let upstream_ratelimit_remaining = Family::<RateLimitLabels, Gauge>::default();
        registry.register(
            "upstream_ratelimit_remaining",
            "Pulls an upstream has left in its window (ratelimit-remaining), by registry and \
             source",
            upstream_ratelimit_remaining.clone(),
        );
        let endpoint_up = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "upstream_endpoint_up",
            "1 while an endpoint of a registry with several is in use, 0 while its circuit \
             breaker has it skipped (until a probe is answered)",
            endpoint_up.clone(),
        );
        let tls_certificate_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the TLS listener's certificate in service expires (Unix time); 0 while it has \
             none yet (ACME before the first issuance)",
            tls_certificate_expiry.clone(),
        );
        let endpoint_failures = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "upstream_endpoint_failures",
            "Failures of an endpoint of a registry with several (no connection, a timeout, a 5xx \
             or a 429), each of which moved the request to the next endpoint when there was one",
            endpoint_failures.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "client_refusals",
            "Client requests refused by access control or client limits, by reason \
             (denied, manifest_rate, blob_streams, table_full, max_streams, login_failures, \
             login_busy)",
            refusals.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log output did not keep up (a full queue)",
            crate::logging::dropped_lines(),
        );
        // The usual way to tell, in queries and dashboards, which version a target runs.
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; its version label is the version of hubferry running",
            build_info,
        );
        Metrics {
            registry,
            refusals,
            started: Instant::now(),
            budgets: Mutex::new(Vec::new()),
            endpoint_up,
            tls_certificate_expiry,
            endpoint_failures,
            upstream_ratelimit_limit,
            upstream_ratelimit_remaining,
            requests,
            response_bytes,
            spliced_bytes,
            upstream_seconds,
            redirects,
            streams_in_flight,
            upstream_errors,
            resumes,
            ratelimit_limit,
            ratelimit_remaining,
            ratelimit_window,
        }
    }

    /// The Prometheus/OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn request_done(&self, route: &'static str, status: u16, body_bytes: u64) {
        let status = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.response_bytes.inc_by(body_bytes);
    }

    /// Body bytes a response moved to its client with `splice(2)` (`stream::splice`).
    pub fn body_spliced(&self, bytes: u64) {
        self.spliced_bytes.inc_by(bytes);
    }

    pub fn upstream_answered(
        &self,
        upstream: UpstreamName,
        registry: RegistryName,
        elapsed: Duration,
    ) {
        self.upstream_seconds
            .get_or_create(&UpstreamLabels { upstream, registry })
            .observe(elapsed.as_secs_f64());
    }

    pub fn redirects_followed(&self, hops: u32) {
        self.redirects.inc_by(u64::from(hops));
    }

    pub fn upstream_error(
        &self,
        upstream: UpstreamName,
        registry: RegistryName,
        kind: &'static str,
    ) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                upstream,
                registry,
                kind,
            })
            .inc();
    }

    /// A broken download went on from where it broke (`resumed`) or was given up (`gave_up`).
    pub fn download_resume(&self, outcome: &'static str) {
        self.resumes.get_or_create(&ResumeLabels { outcome }).inc();
    }

    /// Records Docker Hub's rate-limit headers when an answer carries them.
    /// A pull budget in an upstream's answer (see `upstream::ratelimit`); Docker Hub's also
    /// sets the `docker_ratelimit_*` gauges. Returns what remained at the last sighting of this
    /// registry and source (`None`: the first).
    pub fn saw_ratelimit(
        &self,
        registry: RegistryName,
        source: &str,
        limit: i64,
        remaining: i64,
        window_seconds: Option<i64>,
    ) -> Option<i64> {
        let now = unix_seconds();
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        let known = budgets.iter().filter(|b| b.registry == registry).count();
        let source = if known >= SOURCES_PER_REGISTRY
            && !budgets
                .iter()
                .any(|b| b.registry == registry && b.source == source)
        {
            "other"
        } else {
            source
        };
        let previous = match budgets
            .iter_mut()
            .find(|b| b.registry == registry && b.source == source)
        {
            Some(seen) => {
                let before = seen.remaining;
                seen.limit = limit;
                seen.remaining = remaining;
                seen.window_seconds = window_seconds.unwrap_or(seen.window_seconds);
                seen.seen_at = now;
                Some(before)
            }
            None => {
                budgets.push(RateLimitSeen {
                    registry,
                    source: source.to_owned(),
                    limit,
                    remaining,
                    window_seconds: window_seconds.unwrap_or(0),
                    seen_at: now,
                    ago: Duration::ZERO,
                });
                None
            }
        };
        drop(budgets);
        let labels = RateLimitLabels {
            registry,
            source: source.to_owned(),
        };
        self.upstream_ratelimit_limit
            .get_or_create(&labels)
            .set(limit);
        self.upstream_ratelimit_remaining
            .get_or_create(&labels)
            .set(remaining);
        if registry == DOCKER_HUB {
            self.ratelimit_limit.set(limit);
            self.ratelimit_remaining.set(remaining);
            if let Some(window) = window_seconds {
                self.ratelimit_window.set(window);
            }
        }
        previous
    }

    pub fn status(&self) -> Status {
        let now = unix_seconds();
        let budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        Status {
            uptime: self.started.elapsed(),
            bytes_served: self.response_bytes.get(),
            budgets: budgets
                .iter()
                .map(|b| RateLimitSeen {
                    ago: Duration::from_secs(now.saturating_sub(b.seen_at)),
                    ..b.clone()
                })
                .collect(),
        }
    }

    /// The gauge the TLS listener keeps at its certificate's expiry.
    pub fn tls_certificate_expiry(&self) -> Gauge {
        self.tls_certificate_expiry.clone()
    }

    /// An endpoint's breaker state (`up`), after a failure when `failed`.
    pub fn endpoint_state(&self, registry: RegistryName, endpoint: &str, up: bool, failed: bool) {
        let labels = EndpointLabels {
            registry,
            endpoint: endpoint.to_owned(),
        };
        self.endpoint_up.get_or_create(&labels).set(i64::from(up));
        let failures = self.endpoint_failures.get_or_create(&labels);
        if failed {
            failures.inc();
        }
    }

    /// A client request refused by `crate::middleware::access_control`.
    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Counts a stream in flight until the returned guard is dropped.
    pub fn stream_started(self: &Arc<Self>) -> StreamInFlight {
        self.streams_in_flight.inc();
        StreamInFlight(self.clone())
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Held for as long as a response body streams; see [`Metrics::stream_started`].
pub struct StreamInFlight(Arc<Metrics>);

impl Drop for StreamInFlight {
    fn drop(&mut self) {
        self.0.streams_in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_up_in_the_exposition() {
        let metrics = Arc::new(Metrics::new());
        metrics.request_done("registry", 200, 1234);
        metrics.request_done("catalog", 404, 10);
        metrics.upstream_answered("registry", "docker.io", Duration::from_millis(3));
        metrics.upstream_answered("registry", "ghcr.io", Duration::from_millis(3));
        metrics.upstream_answered("registry", "ghcr.io", Duration::from_millis(4));
        metrics.redirects_followed(1);
        metrics.upstream_error("blob CDN", "quay.io", "body");
        metrics.download_resume("resumed");
        metrics.refused("denied");
        assert_eq!(
            metrics.saw_ratelimit("docker.io", "203.0.113.7", 100, 80, Some(21600)),
            None
        );
        assert_eq!(
            metrics.saw_ratelimit("docker.io", "203.0.113.7", 100, 76, None),
            Some(80)
        );
        metrics.saw_ratelimit("ghcr.io", "unknown", 5000, 4999, None);
        metrics.endpoint_state("docker.io", "https://mirror.gcr.io", true, false);
        metrics.endpoint_state("docker.io", "https://registry-1.docker.io", false, true);
        let stream = metrics.stream_started();
        let text = metrics.render();
        for line in [
            r#"hubferry_requests_total{route="registry",status="2xx"} 1"#,
            r#"hubferry_requests_total{route="catalog",status="4xx"} 1"#,
            "hubferry_response_body_bytes_total 1244",
            r#"hubferry_upstream_response_seconds_count{upstream="registry",registry="docker.io"} 1"#,
            r#"hubferry_upstream_response_seconds_count{upstream="registry",registry="ghcr.io"} 2"#,
            "hubferry_redirects_followed_total 1",
            r#"hubferry_upstream_errors_total{upstream="blob CDN",registry="quay.io",kind="body"} 1"#,
            "hubferry_log_lines_dropped_total ",
            r#"hubferry_download_resumes_total{outcome="resumed"} 1"#,
            "hubferry_docker_ratelimit_limit 100",
            "hubferry_docker_ratelimit_remaining 76",
            "hubferry_docker_ratelimit_window_seconds 21600",
            r#"hubferry_upstream_ratelimit_remaining{registry="docker.io",source="203.0.113.7"} 76"#,
            r#"hubferry_upstream_ratelimit_limit{registry="docker.io",source="203.0.113.7"} 100"#,
            r#"hubferry_upstream_ratelimit_remaining{registry="ghcr.io",source="unknown"} 4999"#,
            r#"hubferry_upstream_endpoint_up{registry="docker.io",endpoint="https://mirror.gcr.io"} 1"#,
            r#"hubferry_upstream_endpoint_up{registry="docker.io",endpoint="https://registry-1.docker.io"} 0"#,
            r#"hubferry_upstream_endpoint_failures_total{registry="docker.io",endpoint="https://registry-1.docker.io"} 1"#,
            r#"hubferry_upstream_endpoint_failures_total{registry="docker.io",endpoint="https://mirror.gcr.io"} 0"#,
            "hubferry_streams_in_flight 1",
            r#"hubferry_client_refusals_total{reason="denied"} 1"#,
            concat!(
                r#"hubferry_build_info{version=""#,
                env!("CARGO_PKG_VERSION"),
                r#""} 1"#
            ),
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        drop(stream);
        assert!(metrics.render().contains("hubferry_streams_in_flight 0"));
        let status = metrics.status();
        assert_eq!(status.bytes_served, 1244);
        let seen = &status.budgets[0];
        assert_eq!(
            (
                seen.registry,
                seen.limit,
                seen.remaining,
                seen.window_seconds
            ),
            ("docker.io", 100, 76, 21600)
        );
        assert_eq!(status.budgets.len(), 2);
        assert!(Metrics::new().status().budgets.is_empty());
    }

    /// An upstream that names a new source in every answer makes no more than
    /// `SOURCES_PER_REGISTRY` series and rows; the rest count as `other`.
    #[test]
    fn sources_per_registry_are_bounded() {
        let metrics = Metrics::new();
        for i in 0..100 {
            metrics.saw_ratelimit("docker.io", &format!("10.0.0.{i}"), 100, 50, None);
        }
        let budgets = metrics.status().budgets;
        assert_eq!(budgets.len(), SOURCES_PER_REGISTRY + 1);
        assert_eq!(budgets.last().unwrap().source, "other");
    }
}
