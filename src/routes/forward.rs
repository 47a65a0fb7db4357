//! `forward`: the phases every proxied request goes through (upstream request filter → send,
//! following redirects where the route says → upstream response filter → streamed relay), and
//! what a handler asks before it: which upstream a request is for, its upstream URL, whose
//! credentials go with it, the origin clients reach the mirror by.

use actix_web::{
    http::{header, Method},
    HttpMessage, HttpRequest, HttpResponse,
};

use url::Url;

#[cfg(target_os = "linux")]
use crate::stream::splice;
use crate::{
    config::Config,
    error::Rejection,
    error::{ProxyError, UpstreamName},
    middleware::access_control,
    middleware::access_log::{self, UpstreamTrace},
    net::origin,
    proxy::credentials::Carried,
    proxy::headers::{self, Downstream},
    proxy::scope,
    proxy::target,
    proxy::{challenge, location},
    stream::{relay, resume},
    upstream::cdn,
    upstream::client::{self, Outgoing, RequestBody},
    upstream::failover::{self, Failover, OwnedFailover},
    upstream::ratelimit::{self, Budget},
    upstream::realms::{self, Realms},
    upstream::redirect,
    upstream::registries::{self, Registry, RegistryName, Via},
    worker::Worker,
};

/// How a route treats the exchange it forwards.
#[derive(Debug, Clone)]
pub(super) struct RoutePolicy<'a> {
    pub(super) upstream: UpstreamName,
    /// The registry the request is for.
    pub(super) registry: RegistryName,
    /// Follow 3xx answers to GET/HEAD ourselves (blob downloads redirect to the CDN).
    pub(super) follow_redirects: bool,
    /// Rewrite `WWW-Authenticate` challenges and `Location`s that point at this registry.
    pub(super) rewrite_to_mirror: Option<MirrorView<'a>>,
    /// What goes up in `Authorization` and `Cookie`, in place of the client's own: what of
    /// the client's may go there (passthrough), or hubferry's own token (managed auth).
    pub(super) credentials: Carried,
    /// Another method than the client's: an OAuth2 token form that may not carry the client's
    /// password goes up as an anonymous GET.
    pub(super) method: Option<Method>,
    /// hubferry reads the answer itself (a token answer, to mark its tokens): it is asked for
    /// without content coding.
    pub(super) plain_answer: bool,
}

/// The registry a response came from, and how the client named it.
#[derive(Debug, Clone, Copy)]
pub(super) struct MirrorView<'a> {
    pub(super) upstream: &'a Registry,
    /// The client used the path-prefix form (`/v2/ghcr.io/...`): scopes and `Location`s get
    /// the prefix back.
    pub(super) prefixed: bool,
}

/// The request's `Host` (or HTTP/2 `:authority`), as it came.
pub(super) fn request_host(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

/// The upstream a request is for (see `upstream::registries`), given its repository name when it has one.
pub(super) fn resolve<'a>(
    req: &HttpRequest,
    config: &'a Config,
    query: Option<&str>,
    name: Option<&str>,
) -> Result<(&'a Registry, Via), ProxyError> {
    let ns = registries::ns_param(query);
    config
        .registries
        .resolve(
            ns.as_deref(),
            request_host(req).as_deref(),
            downstream_proto(req),
            name,
        )
        .map_err(|unknown| {
            ProxyError::UnknownUpstream(format!(
                "no upstream named {:?} is configured on this mirror",
                unknown.0
            ))
        })
}

/// The upstream URL for a request: the upstream base (which may carry a path prefix), then the
/// path and query exactly as given (still percent-encoded). The url crate resolves dot segments,
/// turns `\` into `/` and re-encodes some characters; a target it would change is refused
/// rather than forwarded as something else than what the routes checked.
pub(crate) fn upstream_url(base: &Url, path: &str, query: Option<&str>) -> Result<Url, ProxyError> {
    let prefix = base.path().trim_end_matches('/');
    // The base's scheme and host were parsed once, at start-up: only the path and query are
    // parsed here (a whole parse, host and IDNA included, was a tenth of a manifest GET's
    // instructions).
    let mut url = base.clone();
    url.set_path(&format!("{prefix}{path}"));
    url.set_query(query);
    let unchanged = url.path().strip_prefix(prefix) == Some(path) && url.query() == query;
    if !unchanged {
        return Err(Rejection::Ambiguous(format!("it would reach the upstream as {url}")).into());
    }
    Ok(url)
}

/// The raw query, when it reads one way only.
pub(super) fn checked_query(req: &HttpRequest) -> Result<Option<&str>, ProxyError> {
    let query = req.uri().query();
    if let Some(query) = query {
        target::query(query)?;
    }
    Ok(query)
}

/// The registry the request's host name stands for, whose credentials the client's are.
pub(super) fn home<'a>(req: &HttpRequest, config: &'a Config) -> &'a Registry {
    config
        .registries
        .home(request_host(req).as_deref(), downstream_proto(req))
}

/// What of the client's credentials may go to `upstream` in passthrough mode (see
/// `credentials`). Most requests carry none: they skip working out whose they would be.
pub(super) fn client_credentials(
    req: &HttpRequest,
    config: &Config,
    upstream: &Registry,
) -> Carried {
    let headers = req.headers();
    if !headers.contains_key(header::AUTHORIZATION) && !headers.contains_key(header::COOKIE) {
        return Carried::nothing();
    }
    Carried::client(headers, upstream, home(req, config))
}

/// The origin clients use to reach us (see `origin::public_base`): the request's `Host`, or
/// HTTP/2's `:authority`, is only a candidate.
pub(super) fn public_base(req: &HttpRequest, config: &Config) -> String {
    let host = request_host(req);
    origin::public_base(
        config.public_url.as_ref(),
        &config.server_names,
        host.as_deref(),
        downstream_proto(req),
    )
}

pub(super) fn downstream_proto(req: &HttpRequest) -> &'static str {
    if req.app_config().secure() {
        "https"
    } else {
        "http"
    }
}

pub(super) async fn forward(
    req: &HttpRequest,
    body: RequestBody,
    worker: &Worker,
    url: Url,
    policy: RoutePolicy<'_>,
) -> Result<HttpResponse, ProxyError> {
    let config = &worker.config;
    let downstream = Downstream {
        peer_ip: req.peer_addr().map(|addr| addr.ip()),
        // Set by the guard when trusted proxies name another client.
        client_ip: req
            .extensions()
            .get::<access_control::ClientIp>()
            .map(|c| c.0),
        proto: downstream_proto(req),
    };
    let mut upstream_headers =
        headers::upstream_request_headers(req.headers(), downstream, &client::host_header(&url));
    policy
        .credentials
        .apply(req.headers(), &mut upstream_headers);
    if policy.plain_answer {
        upstream_headers.remove(header::ACCEPT_ENCODING);
    }
    let out = Outgoing {
        upstream: policy.upstream,
        registry: policy.registry,
        method: policy.method.unwrap_or_else(|| req.method().clone()),
        headers: upstream_headers,
        url,
    };
    let mut trace = UpstreamTrace {
        upstream: policy.upstream,
        registry: policy.registry,
        redirects: 0,
    };
    access_log::Notes::trace(req, trace);
    let client = worker.clients.for_registry(out.registry);
    let followable =
        matches!(body, RequestBody::None) && matches!(out.method, Method::GET | Method::HEAD);
    // A registry with endpoints to fall back on, for what may go to another (looked up only for
    // the requests that can).
    let fallback = (policy.follow_redirects && followable)
        .then(|| config.registries.get(policy.registry))
        .flatten()
        .filter(|r| !r.fallbacks.is_empty() && failover::may_fall_back(req.path()));
    // Only GETs of blobs by digest: the same bytes whenever asked (see `resume`).
    let resumer = (policy.follow_redirects
        && followable
        && out.method == Method::GET
        && config.resume.attempts > 0
        && resume::is_blob_by_digest(req.path()))
    .then(|| match fallback {
        Some(registry) => failover::resumer(
            OwnedFailover {
                client: client.clone(),
                registry: registry.clone(),
                breakers: worker.breakers.clone(),
                redirects: config.redirect,
                timeouts: config.timeouts,
                metrics: worker.metrics.clone(),
            },
            &out,
            config.resume,
            access_log::Notes::resumes(req),
        ),
        None => redirect::resumer(
            client,
            &out,
            config.redirect,
            config.timeouts,
            config.resume,
            &worker.metrics,
            access_log::Notes::resumes(req),
        ),
    });
    let mut from_cdn = false;
    let response = if policy.follow_redirects && followable {
        let followed = match fallback {
            Some(registry) => {
                Failover {
                    client,
                    registry,
                    breakers: &worker.breakers,
                    redirects: &config.redirect,
                    timeouts: &config.timeouts,
                    metrics: &worker.metrics,
                }
                .follow(out)
                .await?
            }
            None => {
                redirect::follow(
                    client,
                    out,
                    &config.redirect,
                    &config.timeouts,
                    &worker.metrics,
                )
                .await?
            }
        };
        worker.metrics.redirects_followed(followed.hops);
        trace.redirects = followed.hops;
        access_log::Notes::trace(req, trace);
        from_cdn = followed.upstream == redirect::CDN;
        followed.response
    } else {
        client::send(client, &out, body, &config.timeouts, &worker.metrics).await?
    };

    // Taken out of the response, not copied: this runs for every proxied request, and the
    // relay needs only the response's status and body.
    let mut upstream_headers = header::HeaderMap::new();
    let response = response.map_body(|head, body| {
        upstream_headers = std::mem::take(&mut head.headers);
        body
    });
    let header_text = |name: &str| upstream_headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(budget) = ratelimit::budget(
        header_text("ratelimit-limit"),
        header_text("ratelimit-remaining"),
        header_text("docker-ratelimit-source"),
    ) {
        note_budget(worker, policy.registry, &budget);
    }
    let mut headers = if from_cdn {
        cdn::cdn_response_headers(&upstream_headers)
    } else {
        headers::client_response_headers(upstream_headers)
    };
    if let Some(view) = policy.rewrite_to_mirror {
        rewrite_to_mirror(&mut headers, req, config, &worker.realms, view);
    }
    let client = relay::ClientSide {
        request: req.head(),
        #[cfg(target_os = "linux")]
        splice_to: req
            .conn_data::<splice::ClientSocket>()
            .map(|client| splice::SpliceTo {
                client: client.clone(),
                delivered: access_log::Notes::delivered(req),
            }),
    };
    Ok(relay::relay(
        response,
        client,
        headers,
        config.timeouts.body_idle,
        (policy.upstream, policy.registry),
        &worker.metrics,
        resumer,
    ))
}

/// Keeps a pull budget an upstream stated, and warns once each time it falls below
/// `upstream.ratelimit_warn_fraction` of its limit.
fn note_budget(worker: &Worker, registry: RegistryName, budget: &Budget) {
    let previous = worker.metrics.saw_ratelimit(
        registry,
        &budget.source,
        budget.limit,
        budget.remaining,
        budget.window_seconds,
    );
    let fraction = worker.config.ratelimit_warn_fraction;
    if ratelimit::falls_low(previous, budget, fraction) {
        log::warn!(
            "upstream {registry} has {} of {} pulls left for {} (below {}% of its limit); pulls \
             will be refused with 429 when none are left",
            budget.remaining,
            budget.limit,
            budget.source,
            fraction * 100.0
        );
    }
}

/// Upstream response filter for registry routes: every Bearer challenge names our token
/// endpoint for this upstream and realm, and absolute `Location`s on the registry come back
/// through us.
pub(super) fn rewrite_to_mirror(
    headers: &mut header::HeaderMap,
    req: &HttpRequest,
    config: &Config,
    realms: &Realms,
    view: MirrorView<'_>,
) {
    if !headers.contains_key(header::WWW_AUTHENTICATE) && !headers.contains_key(header::LOCATION) {
        return; // most answers: nothing to rewrite, no need to work out our public address
    }
    let base = public_base(req, config);
    let prefix = view.prefixed.then_some(view.upstream.name.as_str());
    let challenges: Vec<_> = headers.get_all(header::WWW_AUTHENTICATE).cloned().collect();
    if !challenges.is_empty() {
        headers.remove(header::WWW_AUTHENTICATE);
        for value in challenges {
            learn_service(&value, view.upstream, realms);
            // Lossy, not `to_str`: a challenge with non-ASCII bytes must not slip through unrewritten.
            let rewritten = challenge::rewrite_bearer(
                &String::from_utf8_lossy(value.as_bytes()),
                |named| our_realm(&base, view.upstream, named, realms),
                |scopes| match prefix {
                    Some(prefix) => scope::scope_for_client(scopes, prefix),
                    None => scopes.to_owned(),
                },
            )
            .and_then(|v| header::HeaderValue::from_str(&v).ok())
            .unwrap_or(value);
            headers.append(header::WWW_AUTHENTICATE, rewritten);
        }
    }
    let location = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let public = location::public_location(v, &view.upstream.registry, &base);
            match prefix {
                Some(prefix) => prefixed_location(public.as_deref().unwrap_or(v), &base, prefix),
                None => public,
            }
        })
        .and_then(|v| header::HeaderValue::from_str(&v).ok());
    if let Some(location) = location {
        headers.insert(header::LOCATION, location);
    }
}

/// Remembers the `service` a Bearer challenge names, for token requests dispatched to this
/// upstream from another's realm (see `token`).
pub(super) fn learn_service(value: &header::HeaderValue, upstream: &Registry, realms: &Realms) {
    let text = String::from_utf8_lossy(value.as_bytes());
    let Some(challenge) = challenge::parse_challenge(&text) else {
        return;
    };
    if !challenge.scheme.eq_ignore_ascii_case("bearer") {
        return;
    }
    if let Some((_, service)) = challenge.params.iter().find(|(n, _)| n == "service") {
        realms.learn_service(&upstream.name, service);
    }
}

/// The realm a client is told for a challenge from `upstream` that named `named`: the upstream's
/// configured realm when it has one (Docker Hub: `/token`, as before there were many upstreams);
/// else the realm it named, remembered and reached through `/token/<upstream>/<id>`.
pub(super) fn our_realm(
    base: &str,
    upstream: &Registry,
    named: Option<&str>,
    realms: &Realms,
) -> String {
    if upstream.realm.is_some() {
        return format!("{base}{}", upstream.token_path());
    }
    match named.and_then(realms::parse_realm) {
        Some(realm) => format!(
            "{base}/token/{}/{}",
            upstream.name,
            realms.learn(&upstream.name, &realm)
        ),
        // Nothing we may call: a token endpoint that answers 404 beats leaking the upstream's.
        None => format!("{base}{}", upstream.token_path()),
    }
}

/// A `Location` on the mirror's `/v2/` (absolute on `base`, or a path) for a client that used
/// the path-prefix form: the same with the prefix before the repository name.
pub(super) fn prefixed_location(location: &str, base: &str, prefix: &str) -> Option<String> {
    let base = base.trim_end_matches('/');
    let (origin, path) = match location.strip_prefix(base) {
        Some(path) if path.starts_with('/') => (base, path),
        _ if location.starts_with('/') => ("", location),
        _ => return None,
    };
    let rest = path.strip_prefix("/v2/")?;
    Some(format!("{origin}/v2/{prefix}/{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_url_keeps_path_and_query_raw() {
        let base = Url::parse("https://registry-1.docker.io").unwrap();
        assert_eq!(
            upstream_url(
                &base,
                "/v2/library/alpine/manifests/latest",
                Some("ns=docker.io")
            )
            .unwrap()
            .as_str(),
            "https://registry-1.docker.io/v2/library/alpine/manifests/latest?ns=docker.io"
        );
        let prefixed = Url::parse("http://127.0.0.1:8080/mirror").unwrap();
        assert_eq!(
            upstream_url(&prefixed, "/v2/a%2Fb/tags/list", Some("n=10&last=x"))
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/mirror/v2/a%2Fb/tags/list?n=10&last=x"
        );
        assert_eq!(
            upstream_url(&base, "/token", None).unwrap().as_str(),
            "https://registry-1.docker.io/token"
        );
    }

    #[test]
    fn prefixed_locations_keep_the_client_on_its_names() {
        assert_eq!(
            prefixed_location(
                "http://m:5000/v2/owner/image/blobs/uploads/1?_state=x",
                "http://m:5000",
                "ghcr.io"
            )
            .as_deref(),
            Some("http://m:5000/v2/ghcr.io/owner/image/blobs/uploads/1?_state=x")
        );
        assert_eq!(
            prefixed_location("/v2/o/i/blobs/uploads/2", "http://m", "ghcr.io").as_deref(),
            Some("/v2/ghcr.io/o/i/blobs/uploads/2")
        );
        assert_eq!(
            prefixed_location("https://cdn.example/v2/x", "http://m", "ghcr.io"),
            None
        );
    }

    #[test]
    fn upstream_url_refuses_what_the_url_crate_would_rewrite() {
        let base = Url::parse("https://registry-1.docker.io/prefix").unwrap();
        for (path, query) in [
            ("/v2/../token", None),
            ("/v2/%2e%2e/token", None),
            ("/v2/a\\b", None),
            ("/v2/{x}", None),
            ("/v2/a#b", None),
            ("/v2/a?b", None),
            ("/v2/a b", None),
            ("/v2/", Some("a='1'")),
            ("/v2/", Some("a=<b>")),
        ] {
            assert!(
                upstream_url(&base, path, query).is_err(),
                "{path} {query:?} was rewritten silently"
            );
        }
    }
}
