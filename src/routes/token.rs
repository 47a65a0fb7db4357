//! `/token`: the token issuer (`upstream.auth`), reached through us because the client cannot
//! reach it. GET and POST (OAuth2 form) go up with query, body and `Authorization` intact.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{checked_query, forward, upstream_url, Proxy, RoutePolicy};
use crate::error::ProxyError;

pub async fn token(
    req: HttpRequest,
    payload: web::Payload,
    proxy: web::Data<Proxy>,
) -> Result<HttpResponse, ProxyError> {
    let query = checked_query(&req)?.filter(|q| !q.is_empty());
    let url = upstream_url(&proxy.config.upstream.auth, "/token", query)?;
    let policy = RoutePolicy {
        upstream: "auth",
        follow_redirects: false,
        rewrite_to_mirror: false,
    };
    forward(&req, payload, &proxy, url, policy).await
}
