//! The registry API (`/v2` and below) and everything no other route claims (the `location /` of
//! the nginx config hubferry replaces), each forwarded to the registry of the upstream the request is for.

use std::borrow::Cow;

use actix_web::{web, HttpRequest, HttpResponse};

use actix_web::HttpMessage;

use super::{
    checked_query, client_credentials, forward, managed, resolve, upstream_url, MirrorView, Proxy,
    RoutePolicy,
};
use crate::{
    credentials::Carried,
    error::ProxyError,
    request_target::{self, Endpoint, RegistryPath},
    scope,
    upstream::RequestBody,
    upstreams::Via,
};

/// Request filter: only paths of the registry API, checked against its grammar, go up, in the
/// form that was checked (with the repository name the upstream knows it by); anything else
/// under `/v2` is answered here (404 `UNSUPPORTED`) rather than forwarded for the upstream to
/// interpret.
pub async fn v2(
    req: HttpRequest,
    payload: web::Payload,
    proxy: web::Data<Proxy>,
) -> Result<HttpResponse, ProxyError> {
    // The request filter checked it already when per-client limits or the download cap
    // needed its endpoint; checked again otherwise.
    let checked = match req.extensions_mut().remove::<RegistryPath>() {
        Some(checked) => checked,
        None => request_target::registry_path(req.uri().path())?,
    };
    if checked.endpoint == Endpoint::Catalog {
        return Err(ProxyError::CatalogUnsupported);
    }
    let name = (!checked.name.is_empty()).then_some(checked.name.as_str());
    if let Some(managed) = &proxy.managed {
        managed::admit(&req, &proxy, managed, name)?;
        if name.is_none() {
            return Ok(managed::ping());
        }
    }
    let mut query = checked_query(&req)?.map(Cow::Borrowed);
    let (upstream, via) = resolve(&req, &proxy.config, query.as_deref(), name)?;
    let prefixed = via == Via::Prefix;
    let mut upstream_scope = None;
    let path =
        match name {
            Some(name) => {
                let prefix = prefixed.then_some(upstream.name.as_str());
                let upstream_name = scope::upstream_name(name, prefix, upstream.library);
                // Every endpoint of a repository, blobs by digest included: a denied image's
                // layers must not be reachable by someone who knows their digests.
                proxy
                    .config
                    .images
                    .check(&upstream.name, &upstream_name)
                    .map_err(|message| ProxyError::ImageDenied {
                        image: format!("{}/{upstream_name}", upstream.name),
                        message,
                    })?;
                // A cross-repository mount (`?mount=<digest>&from=<repository>`) reads the blob
                // from `from`: that repository must be one this mirror serves too, under the name
                // the upstream knows it by.
                if checked.endpoint == Endpoint::Upload {
                    if let Some(raw) = query.as_deref() {
                        let from_name = |from: &str| {
                            let prefix = prefixed.then_some(upstream.name.as_str());
                            scope::upstream_name(from, prefix, upstream.library).into_owned()
                        };
                        for (key, from) in url::form_urlencoded::parse(raw.as_bytes()) {
                            if key != "from" {
                                continue;
                            }
                            let from = from_name(&from);
                            proxy.config.images.check(&upstream.name, &from).map_err(
                                |message| ProxyError::ImageDenied {
                                    image: format!("{}/{from}", upstream.name),
                                    message,
                                },
                            )?;
                        }
                        let mapped = scope::map_form_values(raw, "from", from_name);
                        if mapped != raw {
                            query = Some(Cow::Owned(mapped.into_owned()));
                        }
                    }
                }
                // Only managed mode asks the upstream for tokens of its own.
                if proxy.managed.is_some() {
                    upstream_scope = Some(managed::pull_scope(&upstream_name));
                }
                if upstream_name == name {
                    checked.path.clone()
                } else {
                    checked.with_name(&upstream_name)
                }
            }
            None => checked.path.clone(),
        };
    let url = upstream_url(&upstream.registry, &path, query.as_deref())?;
    let managed_scope = proxy.managed.as_ref().zip(upstream_scope);
    let credentials = match (&proxy.managed, &managed_scope) {
        (Some(_), Some((managed, scope))) => Carried::ours(Some(
            managed::upstream_authorization(&req, &proxy, managed, upstream, scope).await?,
        )),
        (Some(_), None) => Carried::nothing(),
        (None, _) => client_credentials(&req, &proxy.config, upstream),
    };
    let policy = RoutePolicy {
        upstream: "registry",
        registry: upstream.label(),
        follow_redirects: true,
        rewrite_to_mirror: Some(MirrorView { upstream, prefixed }),
        credentials,
        method: None,
        plain_answer: false,
    };
    let body = RequestBody::from_client(&req, payload)?;
    let response = forward(&req, body, &proxy, url, policy).await?;
    if let Some((managed, scope)) = managed_scope {
        if response.status() == actix_web::http::StatusCode::UNAUTHORIZED {
            // Our upstream token was refused (revoked, or the clocks disagree): the client's
            // retry, after it fetches a new token of ours, gets a fresh one.
            managed.upstream_tokens.forget(&upstream.name, &scope);
        }
    }
    Ok(response)
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
    // In managed mode nothing reaches an upstream before admission, whatever the path.
    if let Some(managed) = &proxy.managed {
        managed::admit(&req, &proxy, managed, None)?;
    }
    let query = checked_query(&req)?;
    let (upstream, _) = resolve(&req, &proxy.config, query, None)?;
    let url = upstream_url(&upstream.registry, req.uri().path(), query)?;
    let credentials = match &proxy.managed {
        Some(_) => Carried::nothing(),
        None => client_credentials(&req, &proxy.config, upstream),
    };
    let policy = RoutePolicy {
        upstream: "registry",
        registry: upstream.label(),
        follow_redirects: false,
        rewrite_to_mirror: None,
        credentials,
        method: None,
        plain_answer: false,
    };
    let body = RequestBody::from_client(&req, payload)?;
    forward(&req, body, &proxy, url, policy).await
}
