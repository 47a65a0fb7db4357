//! Falling back on a registry's other endpoints: a GET or HEAD of a manifest or a blob (or of
//! `/v2/`) that meets no connection, a timeout, a 5xx or a 429 at one endpoint goes to the
//! next, before any byte of an answer went to the client. A blob or a manifest by digest is the same bytes
//! wherever it comes from (the client checks the digest); a tag is what the next endpoint says
//! it is, which for a mirror of the same registry is the same.
//!
//! The client's credentials are for the first endpoint's token issuer: another origin gets the
//! request without them (as a redirect to another origin does), so a fallback serves what it
//! serves to anyone. A fallback that asks for credentials (401, 403) has not failed, but cannot
//! answer either: the next one is tried, and when none answers the client gets the first
//! endpoint's answer or error.

use actix_web::http::{header, StatusCode};
use url::Url;

use crate::{
    error::ProxyError,
    metrics::Metrics,
    net::redact::shown,
    upstream::{
        client::{host_header, Outgoing, Timeouts, UpstreamClient},
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
            let result = redirect::follow(
                self.client,
                out,
                self.redirects,
                self.timeouts,
                self.metrics,
            )
            .await;
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
