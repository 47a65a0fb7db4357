//! The registry API (`/v2` and below) and everything no other route claims (the seed's
//! `location /`), both forwarded to `upstream.registry`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{checked_query, forward, upstream_url, Proxy, RoutePolicy};
use crate::{
    error::ProxyError,
    image_policy,
    request_target::{self, Endpoint},
};

/// Request filter: only paths of the registry API, checked against its grammar, go up, in the
/// form that was checked; anything else under `/v2` is answered here (404 `UNSUPPORTED`) rather
/// than forwarded for the upstream to interpret.
pub async fn v2(
    req: HttpRequest,
    payload: web::Payload,
    proxy: web::Data<Proxy>,
) -> Result<HttpResponse, ProxyError> {
    let checked = request_target::registry_path(req.uri().path())?;
    if checked.endpoint == Endpoint::Catalog {
        return Err(ProxyError::CatalogUnsupported);
    }
    if let Some(name) = checked.name() {
        // Every endpoint of a repository, blobs by digest included: a denied image's layers
        // must not be reachable by someone who knows their digests.
        proxy
            .config
            .images
            .check(image_policy::DEFAULT_UPSTREAM, name)
            .map_err(|message| ProxyError::ImageDenied {
                image: name.to_owned(),
                message,
            })?;
    }
    let query = checked_query(&req)?;
    let url = upstream_url(&proxy.config.upstream.registry, &checked.path, query)?;
    let policy = RoutePolicy {
        upstream: "registry",
        follow_redirects: true,
        rewrite_to_mirror: true,
    };
    forward(&req, payload, &proxy, url, policy).await
}

/// Docker Hub does not serve `/v2/_catalog`; answering here saves a round trip and keeps the
/// mirror from being used to enumerate a private upstream.
pub async fn catalog() -> Result<HttpResponse, ProxyError> {
    Err(ProxyError::CatalogUnsupported)
}

pub async fn other(
    req: HttpRequest,
    payload: web::Payload,
    proxy: web::Data<Proxy>,
) -> Result<HttpResponse, ProxyError> {
    request_target::plain_path(req.uri().path())?;
    let query = checked_query(&req)?;
    let url = upstream_url(&proxy.config.upstream.registry, req.uri().path(), query)?;
    let policy = RoutePolicy {
        upstream: "registry",
        follow_redirects: false,
        rewrite_to_mirror: false,
    };
    forward(&req, payload, &proxy, url, policy).await
}
