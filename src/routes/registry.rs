//! The registry API (`/v2` and below) and everything no other route claims (the seed's
//! `location /`), both forwarded to `upstream.registry`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{forward, upstream_url, Proxy, RoutePolicy};
use crate::error::ProxyError;

pub async fn v2(
    req: HttpRequest,
    payload: web::Payload,
    proxy: web::Data<Proxy>,
) -> Result<HttpResponse, ProxyError> {
    let url = upstream_url(&proxy.config.upstream.registry, path_and_query(&req))?;
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
    let url = upstream_url(&proxy.config.upstream.registry, path_and_query(&req))?;
    let policy = RoutePolicy {
        upstream: "registry",
        follow_redirects: false,
        rewrite_to_mirror: false,
    };
    forward(&req, payload, &proxy, url, policy).await
}

fn path_and_query(req: &HttpRequest) -> &str {
    req.uri().path_and_query().map_or("/", |pq| pq.as_str())
}
