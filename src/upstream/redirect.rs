//! The redirect resolver: Docker Hub answers blob GETs with a 307 to a signed CDN URL, which
//! clients behind the mirror cannot reach. We follow such redirects ourselves so the client
//! only ever sees the final answer (200, 206, 304, 404 ...).

use std::{cell::Cell, rc::Rc, sync::Arc};

use actix_web::http::{header, Method, StatusCode};
use futures_util::{future::LocalBoxFuture, FutureExt};
use url::Url;

use crate::{
    error::{ProxyError, UpstreamName},
    metrics::Metrics,
    net::redact::{shown, shown_text},
    stream::resume::{ResumePolicy, Resumer},
    upstream::cdn,
    upstream::client::{self, Outgoing, RequestBody, Timeouts, UpstreamClient, UpstreamResponse},
};

/// Which redirects are followed.
#[derive(Debug, Clone, Copy)]
pub struct RedirectPolicy {
    pub max_hops: u32,
    /// Redirects may lead to loopback, link-local and private addresses.
    pub allow_private: bool,
}

/// What the hops to another origin than the registry's are called: the blob CDN.
pub const CDN: UpstreamName = "blob CDN";

/// What following produced: the final response, how many redirects it took, and who sent it.
pub struct Followed {
    pub response: UpstreamResponse,
    pub hops: u32,
    /// [`CDN`] once a hop left the registry's origin.
    pub upstream: UpstreamName,
}

/// Statuses we follow. The nginx config hubferry replaces follows only 301/302/307; 303 and
/// 308 mean the same thing for a GET or HEAD.
pub fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Resolves a `Location` value (absolute, or relative to the URL that answered) and refuses
/// anything that is not http(s), or that the client could not send.
pub fn resolve_location(current: &Url, location: &str) -> Result<Url, String> {
    let mut next = current
        .join(location.trim())
        .map_err(|e| format!("invalid redirect Location {:?}: {e}", shown_text(location)))?;
    if !matches!(next.scheme(), "http" | "https") || next.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "refusing redirect to {}: only http(s) URLs are followed",
            shown(&next)
        ));
    }
    // A fragment is never sent (RFC 9110 §7.1).
    next.set_fragment(None);
    // The URL parser accepts hosts such as `"` that an HTTP request line cannot carry (found
    // by fuzzing): refuse them here, as a bad redirect, not later as an unreachable upstream.
    if next.as_str().parse::<awc::http::Uri>().is_err() {
        return Err(format!(
            "invalid redirect Location {:?}",
            shown_text(location)
        ));
    }
    Ok(next)
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The request for the next hop: a 303 turns a GET into a GET (HEAD stays HEAD); leaving the
/// origin drops credentials and changes `Host`. Once credentials are dropped they stay dropped.
pub fn next_hop(current: &Outgoing, status: StatusCode, next: Url) -> Outgoing {
    let mut out = current.clone();
    if status == StatusCode::SEE_OTHER && out.method != Method::HEAD {
        out.method = Method::GET;
    }
    let host = client::host_header(&next);
    if same_origin(&current.url, &next) {
        if let Ok(value) = host.parse() {
            out.headers.insert(header::HOST, value);
        }
    } else {
        cdn::cross_origin_hop(&mut out.headers, &host);
        out.upstream = CDN;
    }
    out.url = next;
    out
}

/// Sends a bodiless GET or HEAD and follows redirects up to `policy.max_hops`. A loop or a
/// chain that is too long is an error (502): the client must never be handed the CDN URL.
pub async fn follow(
    client: &UpstreamClient,
    first: Outgoing,
    policy: &RedirectPolicy,
    timeouts: &Timeouts,
    metrics: &Metrics,
) -> Result<Followed, ProxyError> {
    let mut current = first;
    let mut visited = vec![current.url.clone()];
    let mut hops = 0;
    loop {
        let mut response =
            client::send(client, &current, RequestBody::None, timeouts, metrics).await?;
        let status = response.status();
        if !is_followed_redirect(status) {
            return Ok(Followed {
                response,
                hops,
                upstream: current.upstream,
            });
        }
        let Some(location) = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok().map(str::to_owned))
        else {
            // Nothing to follow: pass the answer on as it is.
            return Ok(Followed {
                response,
                hops,
                upstream: current.upstream,
            });
        };
        let bad = |reason: String| {
            metrics.upstream_error(current.upstream, current.registry, "redirect");
            ProxyError::BadRedirect {
                upstream: current.upstream,
                reason,
            }
        };
        let next = resolve_location(&current.url, &location).map_err(bad)?;
        if visited.contains(&next) {
            return Err(bad(format!("redirect loop at {}", shown(&next))));
        }
        if hops >= policy.max_hops {
            return Err(bad(format!(
                "more than {} redirects (last to {})",
                policy.max_hops,
                shown(&next)
            )));
        }
        // Read the (small) redirect body so the connection can go back to the pool.
        let _ = actix_rt::time::timeout(timeouts.body_idle, response.body().limit(64 * 1024)).await;
        hops += 1;
        log::debug!(
            "{} {} -> {status} -> {}",
            current.method,
            shown(&current.url),
            shown(&next)
        );
        current = next_hop(&current, status, next.clone());
        visited.push(next);
    }
}

/// What a download needs to ask again for the rest of a blob after a break: the first
/// request (to the registry, before any redirect) sent again with the range `stream::resume`
/// puts in its headers, following redirects afresh (signed CDN URLs expire).
pub fn resumer(
    client: &UpstreamClient,
    first: &Outgoing,
    redirects: RedirectPolicy,
    timeouts: Timeouts,
    policy: ResumePolicy,
    metrics: &Arc<Metrics>,
    resumed: Rc<Cell<u32>>,
) -> Resumer {
    let (client, fetch_metrics) = (client.clone(), metrics.clone());
    let fetch = move |out: Outgoing| {
        let (client, metrics) = (client.clone(), fetch_metrics.clone());
        async move { follow(&client, out, &redirects, &timeouts, &metrics).await }.boxed_local()
    };
    resumer_with(first, fetch, timeouts, policy, metrics, resumed)
}

/// As [`resumer`], asking again with `fetch`: the first request with the range in its headers,
/// to its answer after redirects (from another endpoint, perhaps: see `failover`).
pub fn resumer_with(
    first: &Outgoing,
    fetch: impl Fn(Outgoing) -> LocalBoxFuture<'static, Result<Followed, ProxyError>> + 'static,
    timeouts: Timeouts,
    policy: ResumePolicy,
    metrics: &Arc<Metrics>,
    resumed: Rc<Cell<u32>>,
) -> Resumer {
    let refetch = {
        let (first, metrics) = (first.clone(), metrics.clone());
        move |headers| {
            let out = Outgoing {
                headers,
                ..first.clone()
            };
            let metrics = metrics.clone();
            let fetching = fetch(out);
            async move {
                let followed = fetching.await?;
                metrics.redirects_followed(followed.hops);
                Ok(followed.response)
            }
            .boxed_local()
        }
    };
    Resumer {
        refetch: Box::new(refetch),
        first_headers: first.headers.clone(),
        shown_url: shown(&first.url),
        upstream: first.upstream,
        registry: first.registry,
        policy,
        body_idle: timeouts.body_idle,
        metrics: metrics.clone(),
        resumed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderMap;

    fn outgoing(url: &str) -> Outgoing {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
        headers.insert(header::RANGE, "bytes=100-".parse().unwrap());
        headers.insert(header::HOST, "registry.example".parse().unwrap());
        Outgoing {
            upstream: "registry",
            registry: "docker.io",
            method: Method::GET,
            url: Url::parse(url).unwrap(),
            headers,
        }
    }

    #[test]
    fn errors_about_a_location_never_carry_its_query() {
        // Errors about a Location never carry its query.
        let base = Url::parse("https://registry.example/v2/a/blobs/sha256:1").unwrap();
        for location in [
            "ftp://u:p@cdn.example/x?sig=SECRET",
            "http://\"/x?sig=SECRET",
            "http://[::1?sig=SECRET",
        ] {
            let err = resolve_location(&base, location).unwrap_err();
            assert!(!err.contains("SECRET") && !err.contains("u:p"), "{err}");
        }
    }

    #[test]
    fn follows_the_usual_redirect_statuses_only() {
        for code in [301, 302, 303, 307, 308] {
            assert!(is_followed_redirect(StatusCode::from_u16(code).unwrap()));
        }
        for code in [200, 206, 304, 300, 305, 404] {
            assert!(!is_followed_redirect(StatusCode::from_u16(code).unwrap()));
        }
    }

    #[test]
    fn locations_resolve_against_the_request_url() {
        let base = Url::parse("https://registry.example/v2/a/blobs/sha256:1").unwrap();
        assert_eq!(
            resolve_location(&base, "/data/x?sig=1").unwrap().as_str(),
            "https://registry.example/data/x?sig=1"
        );
        assert_eq!(
            resolve_location(&base, "other").unwrap().as_str(),
            "https://registry.example/v2/a/blobs/other"
        );
        assert_eq!(
            resolve_location(&base, "https://cdn.example/b?verify=1-2")
                .unwrap()
                .as_str(),
            "https://cdn.example/b?verify=1-2"
        );
        assert!(resolve_location(&base, "file:///etc/passwd").is_err());
        assert!(resolve_location(&base, "ftp://cdn.example/x").is_err());
        assert!(resolve_location(&base, "http://[::1").is_err());
    }

    /// Found by fuzzing (tests/fuzz_props.rs): hosts the URL parser takes but a request cannot
    /// carry, and fragments, which are never sent.
    #[test]
    fn locations_the_client_cannot_send_are_refused() {
        let base = Url::parse("https://registry.example/v2/a/blobs/sha256:1").unwrap();
        assert!(resolve_location(&base, "http://\"/#ci2./#x").is_err());
        assert!(resolve_location(&base, "http://realm=\"p/").is_err());
        assert_eq!(
            resolve_location(&base, "https://cdn.example/b?s=1#frag")
                .unwrap()
                .as_str(),
            "https://cdn.example/b?s=1"
        );
    }

    #[test]
    fn cross_origin_hop_drops_authorization_keeps_range() {
        let first = outgoing("https://registry.example/v2/a/blobs/sha256:1");
        let next = next_hop(
            &first,
            StatusCode::TEMPORARY_REDIRECT,
            Url::parse("https://cdn.example:8443/blob?sig=1").unwrap(),
        );
        assert!(next.headers.get(header::AUTHORIZATION).is_none());
        assert_eq!(next.headers.get(header::HOST).unwrap(), "cdn.example:8443");
        assert_eq!(next.headers.get(header::RANGE).unwrap(), "bytes=100-");
        assert_eq!(next.upstream, "blob CDN");
        assert_eq!(next.method, Method::GET);
    }

    #[test]
    fn same_origin_hop_keeps_authorization() {
        let first = outgoing("https://registry.example/v2/a/blobs/sha256:1");
        let next = next_hop(
            &first,
            StatusCode::MOVED_PERMANENTLY,
            Url::parse("https://registry.example/v2/b/blobs/sha256:1").unwrap(),
        );
        assert_eq!(next.headers.get(header::AUTHORIZATION).unwrap(), "Bearer t");
        assert_eq!(next.upstream, "registry");
    }

    #[test]
    fn see_other_turns_get_into_get_and_keeps_head() {
        let mut first = outgoing("https://registry.example/x");
        let url = Url::parse("https://registry.example/y").unwrap();
        assert_eq!(
            next_hop(&first, StatusCode::SEE_OTHER, url.clone()).method,
            Method::GET
        );
        first.method = Method::HEAD;
        assert_eq!(
            next_hop(&first, StatusCode::SEE_OTHER, url.clone()).method,
            Method::HEAD
        );
        assert_eq!(
            next_hop(&first, StatusCode::TEMPORARY_REDIRECT, url).method,
            Method::HEAD
        );
    }
}
