//! Falling back on a registry's other endpoints: a GET or HEAD of a manifest or a blob (or of
//! `/v2/`) that meets no connection, a timeout, a 5xx or a 429 at one endpoint goes to the
//! next, before any byte of an answer went to the client. A blob or a manifest by digest is the same bytes
//! wherever it comes from (the client checks the digest); a tag is what the next endpoint says
//! it is, which for a mirror of the same registry is the same.
//!
//! The client's credentials are for the first endpoint's token issuer: another origin gets the
//! request without them (as a redirect to another origin does), so a fallback serves what it
//! serves to anyone. A fallback whose answer is a Bearer challenge gets hubferry's own request
//! for an anonymous token from the realm it names (each endpoint's realm, learned from its own
//! challenge; reached under the egress policy like a redirect), and the request again with it.
//! A fallback that still refuses (401, 403) has not failed, but cannot answer either: the next
//! one is tried, and when none answers the client gets the first endpoint's answer or error.

use std::{cell::Cell, rc::Rc, sync::Arc};

use actix_web::http::{
    header::{self, HeaderMap, HeaderValue},
    Method, StatusCode,
};
use futures_util::FutureExt;
use url::Url;

use crate::{
    error::ProxyError,
    metrics::Metrics,
    net::redact::shown,
    stream::resume::{ResumePolicy, Resumer},
    upstream::{
        challenge::{parse_challenge, token_answer},
        client::{self, host_header, Outgoing, RequestBody, Timeouts, UpstreamClient},
        endpoints::{rebase, Breakers},
        redirect::{self, Followed, RedirectPolicy},
        registries::Registry,
    },
};

/// What a fallback's answer says about the endpoint.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// An answer to relay.
    Answer,
    /// The endpoint failed: counted against its breaker, the next one is tried.
    Failed,
    /// A fallback that wants credentials: the next one is tried, the breaker is untouched.
    NotForAnyone,
}

fn outcome(result: &Result<Followed, ProxyError>, fallback: bool) -> Outcome {
    match result {
        Ok(followed) => match followed.response.status() {
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => Outcome::Failed,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if fallback => Outcome::NotForAnyone,
            _ => Outcome::Answer,
        },
        Err(
            ProxyError::Unreachable { .. }
            | ProxyError::Timeout { .. }
            | ProxyError::EgressProxy { .. },
        ) => Outcome::Failed,
        // A redirect refused or looping: the endpoint answered, with something unusable.
        Err(_) => Outcome::Answer,
    }
}

/// `first` (for the registry's first endpoint) sent to `endpoint` instead: the same path and
/// query, its own `Host`, and no credentials when it is another origin.
fn on_endpoint(first: &Outgoing, base: &Url, endpoint: &Url) -> Option<Outgoing> {
    let url = rebase(&first.url, base, endpoint)?;
    let mut out = first.clone();
    if url.origin() != first.url.origin() {
        for name in [header::AUTHORIZATION, header::COOKIE] {
            out.headers.remove(name);
        }
    }
    if let Ok(host) = host_header(&url).parse() {
        out.headers.insert(header::HOST, host);
    }
    out.url = url;
    Some(out)
}

/// Whether a request to `path` may go to another endpoint: a manifest or a blob (not an
/// upload) of a repository, and the API's base `/v2/`, which clients ask first (a pull whose
/// first question fails never asks the second).
pub fn may_fall_back(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let mut from_end = rest.rsplitn(3, '/');
    let (Some(reference), Some(kind), Some(name)) =
        (from_end.next(), from_end.next(), from_end.next())
    else {
        return false;
    };
    !name.is_empty()
        && !reference.is_empty()
        && (kind == "manifests" || (kind == "blobs" && reference != "uploads"))
}

/// What [`Failover`] borrows, owned: a resumer's refetch outlives the handler that made it.
pub struct OwnedFailover {
    pub client: UpstreamClient,
    pub registry: Registry,
    pub breakers: Arc<Breakers>,
    pub redirects: RedirectPolicy,
    pub timeouts: Timeouts,
    pub metrics: Arc<Metrics>,
}

impl OwnedFailover {
    fn borrowed(&self) -> Failover<'_> {
        Failover {
            client: &self.client,
            registry: &self.registry,
            breakers: &self.breakers,
            redirects: &self.redirects,
            timeouts: &self.timeouts,
            metrics: &self.metrics,
        }
    }
}

/// A resumer (see `redirect::resumer`) that asks again through the registry's endpoints: a
/// download broken at one may go on from another when the first fails, its answer checked as
/// any resumed answer is (the same range of the same representation).
pub fn resumer(
    owned: OwnedFailover,
    first: &Outgoing,
    policy: ResumePolicy,
    resumed: Rc<Cell<u32>>,
) -> Resumer {
    let (timeouts, metrics) = (owned.timeouts, owned.metrics.clone());
    let owned = Rc::new(owned);
    let fetch = move |out: Outgoing| {
        let owned = owned.clone();
        async move { owned.borrowed().follow(out).await }.boxed_local()
    };
    redirect::resumer_with(first, fetch, timeouts, policy, &metrics, resumed)
}

/// Everything a fallback needs besides the request.
pub struct Failover<'a> {
    pub client: &'a UpstreamClient,
    pub registry: &'a Registry,
    pub breakers: &'a Breakers,
    pub redirects: &'a RedirectPolicy,
    pub timeouts: &'a Timeouts,
    pub metrics: &'a Metrics,
}

impl Failover<'_> {
    /// Sends `first` (a bodiless GET or HEAD, see [`may_fall_back`]) to the registry's
    /// endpoints in the breakers' order, following redirects, until one answers.
    pub async fn follow(&self, first: Outgoing) -> Result<Followed, ProxyError> {
        let registry = self.registry.label();
        let endpoints: Vec<&Url> = self.registry.endpoints().collect();
        let order = self.breakers.order(registry);
        let mut first_unanswered: Option<Result<Followed, ProxyError>> = None;
        for (tried, &index) in order.iter().enumerate() {
            let out = match index {
                0 => first.clone(),
                _ => match on_endpoint(&first, &self.registry.registry, endpoints[index]) {
                    Some(out) => out,
                    None => continue,
                },
            };
            let again = (index != 0).then(|| out.clone());
            let mut result = redirect::follow(
                self.client,
                out,
                self.redirects,
                self.timeouts,
                self.metrics,
            )
            .await;
            if let (Some(mut again), Some(challenge)) = (again, bearer_challenge(&result)) {
                if let Some(token) = self.anonymous_token(&challenge, &again).await {
                    again.headers.insert(header::AUTHORIZATION, token);
                    result = redirect::follow(
                        self.client,
                        again,
                        self.redirects,
                        self.timeouts,
                        self.metrics,
                    )
                    .await;
                }
            }
            let outcome = outcome(&result, index != 0);
            self.note(index, &outcome, endpoints[index]);
            if outcome == Outcome::Answer {
                if tried > 0 {
                    log::info!(
                        "{} {}: answered by {}, an endpoint to fall back on",
                        first.method,
                        shown(&first.url),
                        endpoints[index]
                    );
                }
                return result;
            }
            if let Some(next) = order.get(tried + 1) {
                log::warn!(
                    "{} {}: endpoint {} {}; trying {}",
                    first.method,
                    shown(&first.url),
                    endpoints[index],
                    why(&result),
                    endpoints[*next]
                );
            }
            first_unanswered.get_or_insert(result);
        }
        first_unanswered.unwrap_or_else(|| {
            Err(ProxyError::Unreachable {
                upstream: first.upstream,
                url: shown(&first.url),
                reason: "no endpoint to send it to".into(),
            })
        })
    }

    /// A token of a fallback's own for `out`, from the realm its `challenge` names, asked for
    /// anonymously with the challenge's `service` and `scope`; `None` when there is none to
    /// have (the answer is then the fallback's refusal).
    async fn anonymous_token(&self, challenge: &str, out: &Outgoing) -> Option<HeaderValue> {
        let challenge = parse_challenge(challenge)?;
        if !challenge.scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let param = |name: &str| {
            challenge
                .params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        let mut realm = Url::parse(param("realm")?).ok()?;
        if !matches!(realm.scheme(), "http" | "https") {
            return None;
        }
        for name in ["service", "scope"] {
            if let Some(value) = param(name) {
                realm.query_pairs_mut().append_pair(name, value);
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host_header(&realm).parse().ok()?);
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("hubferry/", env!("CARGO_PKG_VERSION"))),
        );
        let asking = Outgoing {
            upstream: "auth",
            registry: out.registry,
            method: Method::GET,
            url: realm,
            headers,
        };
        let sent = client::send(
            self.client,
            &asking,
            RequestBody::None,
            self.timeouts,
            self.metrics,
        );
        let mut response = match sent.await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => {
                log::info!(
                    "{}: no anonymous token ({})",
                    shown(&asking.url),
                    response.status()
                );
                return None;
            }
            Err(err) => {
                log::info!("no anonymous token: {err}");
                return None;
            }
        };
        let reading = response.body().limit(MAX_TOKEN_ANSWER);
        let body = actix_rt::time::timeout(self.timeouts.body_idle, reading)
            .await
            .ok()?
            .ok()?;
        let (token, _) = token_answer(&body)?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// The breaker and the metrics after an endpoint's outcome.
    fn note(&self, index: usize, outcome: &Outcome, endpoint: &Url) {
        let registry = self.registry.label();
        match outcome {
            Outcome::Answer => self.breakers.answered(registry, index),
            Outcome::Failed => {
                if self.breakers.failed(registry, index) {
                    log::warn!(
                        "endpoint {endpoint} of {registry} failed too often in a row: skipped \
                         for its cooldown"
                    );
                }
            }
            Outcome::NotForAnyone => return,
        }
        if let Some(state) = self.breakers.state_of(registry, index) {
            self.metrics.endpoint_state(
                registry,
                &state.endpoint,
                state.up,
                *outcome == Outcome::Failed,
            );
        }
    }
}

/// Largest token answer read (Docker Hub's are about 1 KiB; a JWT with many scopes a few).
const MAX_TOKEN_ANSWER: usize = 64 * 1024;

/// A fallback's Bearer challenge, when its answer is a 401 with one.
fn bearer_challenge(result: &Result<Followed, ProxyError>) -> Option<String> {
    let followed = result.as_ref().ok()?;
    if followed.response.status() != StatusCode::UNAUTHORIZED {
        return None;
    }
    followed
        .response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .filter_map(|value| value.to_str().ok())
        .find(|value| {
            value
                .get(..7)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer "))
        })
        .map(str::to_owned)
}

fn why(result: &Result<Followed, ProxyError>) -> String {
    match result {
        Ok(followed) => format!("answered {}", followed.response.status()),
        Err(err) => format!("failed: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_and_blobs_may_fall_back_uploads_may_not() {
        for path in [
            "/v2/",
            "/v2/library/nginx/manifests/latest",
            "/v2/library/nginx/manifests/sha256:abc",
            "/v2/owner/image/blobs/sha256:abc",
        ] {
            assert!(may_fall_back(path), "{path}");
        }
        for path in [
            "/v2",
            "/v2/library/nginx/tags/list",
            "/v2/library/nginx/blobs/uploads/",
            "/v2/library/nginx/blobs/uploads/5f1c",
            "/v2/_catalog",
            "/token",
            "/v2/manifests/latest",
        ] {
            assert!(!may_fall_back(path), "{path}");
        }
    }

    #[test]
    fn another_origin_gets_no_credentials() {
        let mut headers = actix_web::http::header::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
        headers.insert(header::COOKIE, "c=1".parse().unwrap());
        headers.insert(header::ACCEPT, "application/json".parse().unwrap());
        headers.insert(header::HOST, "registry-1.docker.io".parse().unwrap());
        let first = Outgoing {
            upstream: "registry",
            registry: "docker.io",
            method: actix_web::http::Method::GET,
            url: Url::parse("https://registry-1.docker.io/v2/library/a/manifests/1").unwrap(),
            headers,
        };
        let base = Url::parse("https://registry-1.docker.io").unwrap();
        let other =
            on_endpoint(&first, &base, &Url::parse("https://mirror.gcr.io").unwrap()).unwrap();
        assert_eq!(
            other.url.as_str(),
            "https://mirror.gcr.io/v2/library/a/manifests/1"
        );
        assert!(other.headers.get(header::AUTHORIZATION).is_none());
        assert!(other.headers.get(header::COOKIE).is_none());
        assert_eq!(other.headers.get(header::HOST).unwrap(), "mirror.gcr.io");
        assert_eq!(
            other.headers.get(header::ACCEPT).unwrap(),
            "application/json"
        );
        // The same origin under another path keeps them.
        let same = on_endpoint(
            &first,
            &base,
            &Url::parse("https://registry-1.docker.io/other").unwrap(),
        )
        .unwrap();
        assert!(same.headers.get(header::AUTHORIZATION).is_some());
    }
}
