//! `/token`: the token issuer (`upstream.auth`), reached through us because the client cannot
//! reach it. GET and POST (OAuth2 form) go up with query, body and `Authorization` intact.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{forward, upstream_url, Proxy, RoutePolicy};
use crate::error::ProxyError;

pub async fn token(
    req: HttpRequest,
    payload: web::Payload,
    proxy: web::Data<Proxy>,
) -> Result<HttpResponse, ProxyError> {
    let path = match req.query_string() {
        "" => "/token".to_owned(),
        query => format!("/token?{query}"),
    };
    let url = upstream_url(&proxy.config.upstream.auth, &path)?;
    let policy = RoutePolicy {
        upstream: "auth",
        follow_redirects: false,
        rewrite_to_mirror: false,
    };
    forward(&req, payload, &proxy, url, policy).await
}
