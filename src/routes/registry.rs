//! The registry API (`/v2` and below) and everything no other route claims (the `location /` of
//! the nginx config hubferry replaces), each forwarded to the registry of the upstream the request is for.

use std::borrow::Cow;

use actix_web::{web, HttpRequest, HttpResponse};

use actix_web::HttpMessage;

use url::Url;

use super::forward::{
    checked_query, client_credentials, forward, resolve, upstream_url, MirrorView, RoutePolicy,
};
use crate::{
    error::ProxyError,
    proxy::credentials::Carried,
    proxy::scope,
    proxy::target::{self, Endpoint, RegistryPath},
    upstream::client::RequestBody,
    upstream::registries::{Registry, Via},
    worker::Worker,
};

/// A `/v2` request, checked and resolved: the upstream it goes to and the URL it goes up as.
pub(super) struct Resolved<'a> {
    pub upstream: &'a Registry,
    /// Named by path prefix (`/v2/ghcr.io/...`).
    pub prefixed: bool,
    /// The repository as the upstream knows it; `None` for `/v2/` itself.
    pub upstream_name: Option<String>,
    pub url: Url,
}

/// Request filter: only paths of the registry API, checked against its grammar, go up, in the
/// form that was checked (with the repository name the upstream knows it by); anything else
/// under `/v2` is answered here (404 `UNSUPPORTED`) rather than forwarded for the upstream to
/// interpret.
pub(super) fn checked_path(req: &HttpRequest) -> Result<RegistryPath, ProxyError> {
    // The request filter checked it already when per-client limits or the download cap
    // needed its endpoint; checked again otherwise.
    let checked = match req.extensions_mut().remove::<RegistryPath>() {
        Some(checked) => checked,
        None => target::registry_path(req.uri().path())?,
    };
    if checked.endpoint == Endpoint::Catalog {
        return Err(ProxyError::CatalogUnsupported);
    }
    Ok(checked)
}

/// The repository a checked path names, if any (`/v2/` names none).
pub(super) fn repository(checked: &RegistryPath) -> Option<&str> {
    (!checked.name.is_empty()).then_some(checked.name.as_str())
}

/// Which upstream a checked `/v2` request is for and the URL it goes up as, after the image
/// lists had their say.
pub(super) fn resolve_v2<'a>(
    req: &HttpRequest,
    worker: &'a Worker,
    checked: &RegistryPath,
) -> Result<Resolved<'a>, ProxyError> {
    let name = repository(checked);
    let mut query = checked_query(req)?.map(Cow::Borrowed);
    let (upstream, via) = resolve(req, &worker.config, query.as_deref(), name)?;
    let prefixed = via == Via::Prefix;
    let Some(name) = name else {
        let url = upstream_url(&upstream.registry, &checked.path, query.as_deref())?;
        return Ok(Resolved {
            upstream,
            prefixed,
            upstream_name: None,
            url,
        });
    };
    let images = &worker.config.images;
    let prefix = prefixed.then_some(upstream.name.as_str());
    let upstream_name = scope::upstream_name(name, prefix, upstream.library);
    // Every endpoint of a repository, blobs by digest included: a denied image's layers must
    // not be reachable by someone who knows their digests.
    images
        .check(&upstream.name, &upstream_name)
        .map_err(|message| ProxyError::ImageDenied {
            image: format!("{}/{upstream_name}", upstream.name),
            message,
        })?;
    // A cross-repository mount (`?mount=<digest>&from=<repository>`) reads the blob from
    // `from`: that repository must be one this mirror serves too, under the name the upstream
    // knows it by.
    if checked.endpoint == Endpoint::Upload {
        if let Some(raw) = query.as_deref() {
            let from_name =
                |from: &str| scope::upstream_name(from, prefix, upstream.library).into_owned();
            for (key, from) in url::form_urlencoded::parse(raw.as_bytes()) {
                if key != "from" {
                    continue;
                }
                let from = from_name(&from);
                images
                    .check(&upstream.name, &from)
                    .map_err(|message| ProxyError::ImageDenied {
                        image: format!("{}/{from}", upstream.name),
                        message,
                    })?;
            }
            let mapped = scope::map_form_values(raw, "from", from_name);
            if mapped != raw {
                query = Some(Cow::Owned(mapped.into_owned()));
            }
        }
    }
    let path = if upstream_name == name {
        checked.path.clone()
    } else {
        checked.with_name(&upstream_name)
    };
    let url = upstream_url(&upstream.registry, &path, query.as_deref())?;
    Ok(Resolved {
        upstream,
        prefixed,
        upstream_name: Some(upstream_name.into_owned()),
        url,
    })
}

/// Forwards a resolved `/v2` request with `credentials`: redirects to the CDN followed, the
/// challenge and `Location`s pointed back at the mirror.
pub(super) async fn forward_v2(
    req: &HttpRequest,
    payload: web::Payload,
    worker: &Worker,
    resolved: Resolved<'_>,
    credentials: Carried,
) -> Result<HttpResponse, ProxyError> {
    let policy = RoutePolicy {
        upstream: "registry",
        registry: resolved.upstream.label(),
        follow_redirects: true,
        rewrite_to_mirror: Some(MirrorView {
            upstream: resolved.upstream,
            prefixed: resolved.prefixed,
        }),
        credentials,
        method: None,
        plain_answer: false,
    };
    let body = RequestBody::from_client(req, payload)?;
    forward(req, body, worker, resolved.url, policy).await
}

/// `/v2` and below in passthrough mode: the client's credentials go where they are meant for
/// (see `proxy::credentials`).
pub async fn v2(
    req: HttpRequest,
    payload: web::Payload,
    worker: web::Data<Worker>,
) -> Result<HttpResponse, ProxyError> {
    let checked = checked_path(&req)?;
    let resolved = resolve_v2(&req, &worker, &checked)?;
    let credentials = client_credentials(&req, &worker.config, resolved.upstream);
    forward_v2(&req, payload, &worker, resolved, credentials).await
}

/// Docker Hub does not serve `/v2/_catalog`; answering here saves a round trip and keeps the
/// mirror from being used to enumerate a private upstream.
pub async fn catalog() -> Result<HttpResponse, ProxyError> {
    Err(ProxyError::CatalogUnsupported)
}

/// Everything no other route claims, in passthrough mode.
pub async fn other(
    req: HttpRequest,
    payload: web::Payload,
    worker: web::Data<Worker>,
) -> Result<HttpResponse, ProxyError> {
    target::plain_path(req.uri().path())?;
    forward_other(&req, payload, &worker, |upstream| {
        client_credentials(&req, &worker.config, upstream)
    })
    .await
}

/// Forwards a request no other route claims to the registry it is for, with the credentials
/// `credentials` chooses for that registry.
pub(super) async fn forward_other(
    req: &HttpRequest,
    payload: web::Payload,
    worker: &Worker,
    credentials: impl FnOnce(&Registry) -> Carried,
) -> Result<HttpResponse, ProxyError> {
    let query = checked_query(req)?;
    let (upstream, _) = resolve(req, &worker.config, query, None)?;
    let url = upstream_url(&upstream.registry, req.uri().path(), query)?;
    let policy = RoutePolicy {
        upstream: "registry",
        registry: upstream.label(),
        follow_redirects: false,
        rewrite_to_mirror: None,
        credentials: credentials(upstream),
        method: None,
        plain_answer: false,
    };
    let body = RequestBody::from_client(req, payload)?;
    forward(req, body, worker, url, policy).await
}
