//! The token issuers, reached through us because the client cannot reach them. `/token` is
//! Docker Hub's (`upstream.auth`), `/token/<upstream>` an upstream's configured realm, and
//! `/token/<upstream>/<id>` a realm that upstream named in a challenge (see `realms`): never a
//! URL the client chose. GET and POST (OAuth2 form) go up with query, body and `Authorization`
//! intact, except that every `scope` names the repository as the upstream knows it
//! (`library/` completion, the path prefix stripped; see `scope`). In managed auth mode every
//! one of these routes is hubferry's own issuer instead (see `managed`).

use std::{rc::Rc, time::Duration};

use actix_web::{
    http::{header, Method},
    web, HttpMessage, HttpRequest, HttpResponse,
};
use bytes::BytesMut;
use futures_util::StreamExt;
use url::Url;

use super::forward::{checked_query, forward, home, upstream_url, RoutePolicy};
use crate::{
    error::Rejection,
    error::{BodyFault, ProxyError, UnreadBody},
    net::redact,
    proxy::challenge,
    proxy::credentials::{self, Carried},
    proxy::scope,
    upstream::client::{self, Outgoing, RequestBody},
    upstream::realms::parse_realm,
    upstream::registries::Registry,
    worker::Worker,
};

/// Largest OAuth2 form body read to map its scopes (a real one is well under 1 KiB).
const MAX_FORM: usize = 64 * 1024;

/// Largest token answer read to mark its tokens (a real one is a few KiB).
const MAX_TOKEN_ANSWER: usize = 256 * 1024;

/// Docker Hub's token issuer, as before there were many upstreams.
pub async fn token(
    req: HttpRequest,
    payload: web::Payload,
    worker: web::Data<Worker>,
) -> Result<HttpResponse, ProxyError> {
    let hub = worker.config.registries.docker_hub();
    let realm = hub.realm.clone().expect("docker.io's realm is configured");
    relay(&req, payload, &worker, hub, realm).await
}

/// The configured realm of an upstream.
pub async fn upstream_token(
    req: HttpRequest,
    payload: web::Payload,
    worker: web::Data<Worker>,
    name: web::Path<String>,
) -> Result<HttpResponse, ProxyError> {
    let upstream = known_upstream(&worker, &name)?;
    let realm = upstream.realm.clone().ok_or_else(|| {
        ProxyError::UnknownUpstream(format!("upstream {name} has no configured token realm"))
    })?;
    relay(&req, payload, &worker, upstream, realm).await
}

/// A realm an upstream named in a challenge. A worker (or replica) that has not seen that
/// challenge asks the upstream's `/v2/` for its challenge first.
pub async fn learned_token(
    req: HttpRequest,
    payload: web::Payload,
    worker: web::Data<Worker>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ProxyError> {
    let (name, id) = path.into_inner();
    let upstream = known_upstream(&worker, &name)?;
    let mut realm = worker.realms.find(&upstream.name, &id);
    if realm.is_none() {
        learn_realms(&req, &worker, upstream).await?;
        realm = worker.realms.find(&upstream.name, &id);
    }
    let realm = realm.ok_or_else(|| {
        ProxyError::UnknownUpstream(format!("upstream {name} named no token realm {id}"))
    })?;
    relay(&req, payload, &worker, upstream, realm).await
}

fn known_upstream<'a>(worker: &'a Worker, name: &str) -> Result<&'a Registry, ProxyError> {
    worker
        .config
        .registries
        .get(name)
        .ok_or_else(|| ProxyError::UnknownUpstream(format!("no upstream named {name:?}")))
}

/// Asks `upstream`'s `/v2/` for its challenge and remembers the realms it names.
async fn learn_realms(
    req: &HttpRequest,
    worker: &Worker,
    upstream: &Registry,
) -> Result<(), ProxyError> {
    let url = upstream_url(&upstream.registry, "/v2/", None)?;
    let mut headers = header::HeaderMap::new();
    if let Ok(host) = header::HeaderValue::from_str(&client::host_header(&url)) {
        headers.insert(header::HOST, host);
    }
    if let Some(agent) = req.headers().get(header::USER_AGENT) {
        headers.insert(header::USER_AGENT, agent.clone());
    }
    let out = Outgoing {
        upstream: "registry",
        registry: upstream.label(),
        method: Method::GET,
        url,
        headers,
    };
    let config = &worker.config;
    let response = client::send(
        worker.clients.for_registry(out.registry),
        &out,
        RequestBody::None,
        &config.timeouts,
        &worker.metrics,
    )
    .await?;
    for value in response.headers().get_all(header::WWW_AUTHENTICATE) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let Some(challenge) = challenge::parse_challenge(&text) else {
            continue;
        };
        let realm = challenge.params.iter().find(|(n, _)| n == "realm");
        if let Some(realm) = realm.and_then(|(_, v)| parse_realm(v)) {
            worker.realms.learn(&upstream.name, &realm);
        }
        if let Some((_, service)) = challenge.params.iter().find(|(n, _)| n == "service") {
            worker.realms.learn_service(&upstream.name, service);
        }
    }
    Ok(())
}

async fn relay(
    req: &HttpRequest,
    payload: web::Payload,
    worker: &Worker,
    upstream: &Registry,
    realm: Url,
) -> Result<HttpResponse, ProxyError> {
    let query = checked_query(req)?.filter(|q| !q.is_empty());
    let (form, payload) = if is_form(req) {
        let limit = worker.config.timeouts.body_idle;
        (Some(read_form(payload, limit).await?), None)
    } else {
        (None, Some(payload))
    };
    // docker and skopeo ping `/v2/` once and take that challenge's realm (the default
    // upstream's) for every repository of the mirror: scopes that name another upstream by
    // its prefix (`repository:ghcr.io/owner/image:pull`) go to that upstream's realm instead,
    // with the service its challenges name, so the token is for the registry that checks it.
    let scopes = [query, form.as_deref()]
        .into_iter()
        .flatten()
        .flat_map(|raw| url::form_urlencoded::parse(raw.as_bytes()))
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .collect::<Vec<_>>();
    let (upstream, realm, service) = match prefixed_upstream(&scopes, worker, upstream) {
        Some(other) => {
            let (realm, service) = realm_and_service(req, worker, other).await?;
            (other, realm, service)
        }
        None => (upstream, realm, None),
    };
    let map = |value: &str| scope::scope_for_upstream(value, &upstream.name, upstream.library);
    let map_all = |raw: &str| {
        let mapped = scope::map_form_values(raw, "scope", map);
        match &service {
            Some(service) => {
                scope::map_form_values(&mapped, "service", |_| service.clone()).into_owned()
            }
            None => mapped.into_owned(),
        }
    };
    let query = query.map(map_all);
    let form = form.map(|form| map_all(&form));
    // The client's credentials go to this issuer only when they are meant for its registry
    // (see `credentials`); otherwise the token is asked for anonymously.
    let home = home(req, &worker.config);
    let trusted = credentials::trusted(upstream, home);
    let mut carried = Carried::client(req.headers(), upstream, home);
    let mut method = None;
    let (query, body) = match form {
        Some(form) => match credentials::token_form(&form, upstream, trusted) {
            Some(form) if form.is_empty() => (query, RequestBody::None),
            Some(form) => (query, RequestBody::Full(form.into())),
            None => {
                log::debug!(
                    "token form for {} asked for anonymously: its credentials are for {}",
                    upstream.name,
                    home.name
                );
                method = Some(Method::GET);
                carried = Carried::nothing();
                let sources = [query.as_deref(), Some(form.as_str())];
                let anonymous = credentials::anonymous_query(sources.into_iter().flatten());
                (
                    (!anonymous.is_empty()).then_some(anonymous),
                    RequestBody::None,
                )
            }
        },
        None => match payload {
            Some(payload) => (query, RequestBody::from_client(req, payload)?),
            None => (query, RequestBody::None),
        },
    };
    let url = realm_url(&realm, query.as_deref())?;
    let policy = RoutePolicy {
        upstream: "auth",
        registry: upstream.label(),
        follow_redirects: false,
        rewrite_to_mirror: None,
        credentials: carried,
        method,
        plain_answer: true,
    };
    let answer = forward(req, body, worker, url, policy).await?;
    mark_tokens(
        answer,
        &upstream.name,
        &realm,
        worker.config.timeouts.body_idle,
    )
    .await
}

/// The issuer's answer with its tokens marked for `registry` (see `credentials`), so that the
/// client's next requests carry them to that registry only. Answers without tokens (errors)
/// pass as they came.
async fn mark_tokens(
    answer: HttpResponse,
    registry: &str,
    realm: &Url,
    limit: std::time::Duration,
) -> Result<HttpResponse, ProxyError> {
    if !answer.status().is_success() {
        return Ok(answer);
    }
    let unreadable = |reason: String| ProxyError::Unreachable {
        upstream: "auth",
        url: redact::shown(realm),
        reason,
    };
    // Asked for without content coding: one that comes coded anyway cannot be read to mark
    // its tokens, and an unmarked token would count as the client's own credentials.
    if answer.head().headers.contains_key(header::CONTENT_ENCODING) {
        return Err(unreadable(
            "its token answer is content-coded, though none was asked for".into(),
        ));
    }
    let (head, body) = answer.into_parts();
    // A few KiB: it must come whole within the idle limit, not a byte per limit.
    let read = actix_web::body::to_bytes_limited(body, MAX_TOKEN_ANSWER);
    let bytes = actix_rt::time::timeout(limit, read)
        .await
        .map_err(|_| ProxyError::Timeout {
            upstream: "auth",
            url: redact::shown(realm),
            phase: "send its token answer",
            limit,
        })?
        .map_err(|_| unreadable(format!("token answer over {MAX_TOKEN_ANSWER} bytes")))?
        .map_err(|e| unreadable(format!("token answer: {e}")))?;
    let body = credentials::mark_answer(&bytes, registry)
        .map(actix_web::web::Bytes::from)
        .unwrap_or(bytes);
    let mut marked = HttpResponse::with_body(head.status(), body);
    for (name, value) in head.headers() {
        if name != header::CONTENT_LENGTH {
            marked.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(marked.map_into_boxed_body())
}

/// The upstream other than `current` that the first prefixed repository scope names.
fn prefixed_upstream<'a>(
    scopes: &[String],
    worker: &'a Worker,
    current: &Registry,
) -> Option<&'a Registry> {
    scopes
        .iter()
        .flat_map(|value| scope::repository_names(value))
        .filter_map(|name| name.split_once('/'))
        .filter(|(_, rest)| !rest.is_empty())
        .find_map(|(first, _)| {
            worker
                .config
                .registries
                .get(first)
                .filter(|u| u.name != current.name)
        })
}

/// `upstream`'s realm (configured, else the first it named) and the service its challenges
/// name, asking its `/v2/` when neither is known yet.
pub(super) async fn realm_and_service(
    req: &HttpRequest,
    worker: &Worker,
    upstream: &Registry,
) -> Result<(Url, Option<String>), ProxyError> {
    let known = |worker: &Worker| {
        let realm = upstream
            .realm
            .clone()
            .or_else(|| worker.realms.first(&upstream.name));
        (realm, worker.realms.service(&upstream.name))
    };
    let (mut realm, mut service) = known(worker);
    if realm.is_none() || service.is_none() {
        learn_realms(req, worker, upstream).await?;
        (realm, service) = known(worker);
    }
    let realm = realm.ok_or_else(|| {
        ProxyError::UnknownUpstream(format!("upstream {} named no token realm", upstream.name))
    })?;
    Ok((realm, service))
}

/// The OAuth2 form of a token request, whole (it is small), within `limit` in all: a client
/// that announces more than it sends, or sends it a byte at a time, is cut off then, rather
/// than holding the request (and, at one byte per `limit`, up to 64 Ki of them).
pub(super) async fn read_form(
    mut payload: web::Payload,
    limit: Duration,
) -> Result<String, ProxyError> {
    let mut form = BytesMut::new();
    let failed = |form: &BytesMut, fault, unread| ProxyError::ClientBody {
        what: "token form",
        received: form.len() as u64,
        fault,
        unread,
    };
    let read = async {
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|e| failed(&form, BodyFault::of(&e), UnreadBody::default()))?;
            if form.len() + chunk.len() > MAX_FORM {
                return Err(ProxyError::BadRequest(format!(
                    "token form over {MAX_FORM} bytes"
                )));
            }
            form.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match actix_rt::time::timeout(limit, read).await {
        Ok(read) => read?,
        Err(_) => {
            let unread = UnreadBody::holding(Rc::new(payload));
            return Err(failed(&form, BodyFault::Late(limit), unread));
        }
    }
    String::from_utf8(form.to_vec())
        .map_err(|_| ProxyError::BadRequest("token form is not UTF-8".into()))
}

/// An OAuth2 token request (`POST` of `application/x-www-form-urlencoded`), whose `scope`
/// field is mapped like the query's.
pub(super) fn is_form(req: &HttpRequest) -> bool {
    *req.method() == Method::POST && req.content_type() == "application/x-www-form-urlencoded"
}

/// The realm with the client's query after its own (a realm may carry a query of its own),
/// refused when the url crate would send something else than what was checked.
pub(super) fn realm_url(realm: &Url, query: Option<&str>) -> Result<Url, ProxyError> {
    let joined = match (realm.query(), query) {
        (Some(own), Some(client)) => Some(format!("{own}&{client}")),
        (own, client) => own.or(client).map(str::to_owned),
    };
    let mut url = realm.clone();
    url.set_query(joined.as_deref());
    if url.query() != joined.as_deref() {
        return Err(Rejection::Ambiguous(format!("it would reach the realm as {url}")).into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_query_follows_the_realm() {
        let realm = Url::parse("https://auth.docker.io/token").unwrap();
        assert_eq!(
            realm_url(&realm, Some("service=s&scope=repository:a/b:pull"))
                .unwrap()
                .as_str(),
            "https://auth.docker.io/token?service=s&scope=repository:a/b:pull"
        );
        assert_eq!(
            realm_url(&realm, None).unwrap().as_str(),
            "https://auth.docker.io/token"
        );
        let with_query = Url::parse("https://public.ecr.aws/token/?a=1").unwrap();
        assert_eq!(
            realm_url(&with_query, Some("scope=x")).unwrap().as_str(),
            "https://public.ecr.aws/token/?a=1&scope=x"
        );
        assert!(realm_url(&realm, Some("a=<b>")).is_err());
    }
}
