//! Managed auth (`auth.mode = "managed"`): hubferry is the token issuer its
//! clients see. `/token` authenticates a client against hubferry's own users and issues one of
//! hubferry's tokens (see `grant`); `/v2` requests must carry one, and go upstream with a token
//! hubferry got from the upstream's issuer with its own configured account (see
//! `upstream_tokens`). The client's credentials never go upstream, and the account's never
//! reach a client: they are only ever in the `Authorization` of hubferry's own token requests.

use actix_web::{
    http::{header, Method, StatusCode},
    web, HttpMessage, HttpRequest, HttpResponse,
};
use serde_json::json;

use super::{
    forward::{checked_query, public_base},
    registry, search, token,
};
use crate::{
    auth::{
        grant::{self, Grant},
        login::Refusal,
        managed::Managed,
        users::{self, Secret, Subject},
    },
    error::ProxyError,
    middleware::access_control,
    net::redact,
    proxy::{challenge, credentials::Carried, target},
    upstream::{
        challenge::token_answer,
        client::{self, Outgoing, RequestBody},
        registries::Registry,
    },
    worker::Worker,
};

/// The `service` hubferry's challenges name: its own tokens are for itself.
const SERVICE: &str = "hubferry";

/// Largest token answer read from an upstream issuer (a real one is a few KiB).
const MAX_TOKEN_ANSWER: usize = 256 * 1024;

/// Upstream tokens that state no lifetime live 60 s (Docker's token spec).
const DEFAULT_EXPIRES_IN: u64 = 60;

/// `/v2` and below in managed mode: admitted by a token of ours, then sent up with hubferry's
/// own token for that upstream. `/v2/` itself is answered here.
pub async fn v2(
    req: HttpRequest,
    payload: web::Payload,
    worker: web::Data<Worker>,
    managed: web::Data<Managed>,
) -> Result<HttpResponse, ProxyError> {
    let checked = registry::checked_path(&req)?;
    let name = registry::repository(&checked);
    admit(&req, &worker, &managed, name)?;
    if name.is_none() {
        return Ok(ping());
    }
    let resolved = registry::resolve_v2(&req, &worker, &checked)?;
    let upstream_name = resolved.upstream_name.as_deref();
    let scope = pull_scope(upstream_name.expect("a named repository has an upstream name"));
    let upstream = resolved.upstream;
    let authorization = upstream_authorization(&req, &worker, &managed, upstream, &scope).await?;
    let response = registry::forward_v2(
        &req,
        payload,
        &worker,
        resolved,
        Carried::ours(Some(authorization)),
    )
    .await?;
    if response.status() == StatusCode::UNAUTHORIZED {
        // Our upstream token was refused (revoked, or the clocks disagree): the client's
        // retry, after it fetches a new token of ours, gets a fresh one.
        managed.upstream_tokens.forget(&upstream.name, &scope);
    }
    Ok(response)
}

/// Everything no other route claims, in managed mode: nothing reaches an upstream before
/// admission, whatever the path, and no credentials go with it.
pub async fn other(
    req: HttpRequest,
    payload: web::Payload,
    worker: web::Data<Worker>,
    managed: web::Data<Managed>,
) -> Result<HttpResponse, ProxyError> {
    target::plain_path(req.uri().path())?;
    admit(&req, &worker, &managed, None)?;
    registry::forward_other(&req, payload, &worker, |_| Carried::nothing()).await
}

/// `/v1/search` in managed mode: a mirror closed to anonymous clients is closed for search too.
pub async fn search(
    req: HttpRequest,
    payload: web::Payload,
    worker: web::Data<Worker>,
    managed: web::Data<Managed>,
) -> Result<HttpResponse, ProxyError> {
    if !managed.auth.anonymous {
        admit_search(&req, &worker, &managed).await?;
    }
    search::forward_search(&req, payload, &worker, Carried::nothing()).await
}

/// `/token`, `/token/<upstream>` and `/token/<upstream>/<id>` (realms clients may still hold):
/// hubferry's own issuer.
pub async fn token_route(
    req: HttpRequest,
    payload: web::Payload,
    worker: web::Data<Worker>,
    managed: web::Data<Managed>,
) -> Result<HttpResponse, ProxyError> {
    token(&req, payload, &worker, &managed).await
}

/// `/token` (and `/token/<upstream>[/<id>]`, realms clients may still hold) in managed mode:
/// GET with Basic credentials (docker, skopeo, containerd without credentials) or the OAuth2
/// POST form with `grant_type=password` (containerd with credentials). Refresh tokens are not
/// issued, so clients keep using their password (what they do when none is offered).
pub async fn token(
    req: &HttpRequest,
    payload: web::Payload,
    worker: &Worker,
    managed: &Managed,
) -> Result<HttpResponse, ProxyError> {
    let query = checked_query(req)?.unwrap_or_default().to_owned();
    let form = if token::is_form(req) {
        Some(token::read_form(payload, worker.config.timeouts.body_idle).await?)
    } else {
        None
    };
    let pairs = |raw: &str| -> Vec<(String, String)> {
        url::form_urlencoded::parse(raw.as_bytes())
            .into_owned()
            .collect()
    };
    let query_pairs = pairs(&query);
    let form_pairs = form.as_deref().map(pairs).unwrap_or_default();
    let field = |name: &str| {
        form_pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let credentials = match field("grant_type").as_deref() {
        Some("password") => Some((
            field("username").unwrap_or_default(),
            field("password").unwrap_or_default(),
        )),
        Some(other) => {
            return Err(refused(format!(
                "grant_type {other:?} is not supported by this mirror; use password"
            )))
        }
        None => req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(users::parse_basic),
    };
    let subject = match credentials {
        Some((user, password)) => log_in(req, worker, managed, &user, &password).await?,
        None if managed.auth.anonymous => Subject::Anonymous,
        None => return Err(refused("this mirror requires credentials".into())),
    };
    let scopes: Vec<&str> = query_pairs
        .iter()
        .chain(&form_pairs)
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .collect();
    let pull = grant::pull_scopes(scopes);
    let ttl = managed.auth.token_ttl.as_secs();
    let issued = grant::now_secs();
    let grant = Grant {
        sub: subject.to_string(),
        exp: issued + ttl,
        pull,
    };
    log::info!(
        "issued a token to {subject} for {}",
        if grant.pull.is_empty() {
            "no repository".to_owned()
        } else {
            grant.pull.join(", ")
        }
    );
    let scope = grant
        .pull
        .iter()
        .map(|name| format!("repository:{name}:pull"))
        .collect::<Vec<_>>()
        .join(" ");
    let token = grant::mint(&managed.key, &grant);
    let issued_at = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(issued),
    )
    .to_string();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "token": token,
            "access_token": token,
            "expires_in": ttl,
            "issued_at": issued_at,
            "scope": scope,
        })))
}

/// Checks a user name and password (see `login`); a refusal is the error the client gets.
pub async fn log_in(
    req: &HttpRequest,
    worker: &Worker,
    managed: &Managed,
    user: &str,
    password: &str,
) -> Result<Subject, ProxyError> {
    let client = client_of(req);
    match managed.logins.check(client, user, password).await {
        Ok(subject) => Ok(subject),
        Err(Refusal::Wrong) => {
            log::info!("failed login as {user:?} from {client}");
            Err(refused("incorrect username or password".into()))
        }
        Err(Refusal::TooMany {
            retry_after,
            by_name,
        }) => {
            worker.metrics.refused("login_failures");
            let per_minute = managed.auth.login_failures_per_minute;
            Err(ProxyError::TooManyRequests {
                client,
                limit: if by_name {
                    format!("more than {per_minute} failed logins per minute as {user:?}")
                } else {
                    format!("more than {per_minute} failed logins per minute")
                },
                retry_after,
            })
        }
        Err(Refusal::Busy { retry_after }) => {
            worker.metrics.refused("login_busy");
            Err(ProxyError::Overloaded {
                what: "password checks".into(),
                retry_after,
            })
        }
    }
}

/// The client's address as the access lists judged it: behind trusted proxies, the client they
/// forwarded for.
fn client_of(req: &HttpRequest) -> std::net::IpAddr {
    req.extensions()
        .get::<access_control::ClientIp>()
        .map(|client| client.0)
        .or_else(|| req.peer_addr().map(|addr| addr.ip()))
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into())
}

/// A 401 from `/token`: Basic, since that is what the endpoint takes.
fn refused(reason: String) -> ProxyError {
    ProxyError::Unauthorized {
        challenge: format!("Basic realm=\"{SERVICE}\""),
        reason,
    }
}

/// Request filter of `/v2` in managed mode: writes are refused (before anything else: no
/// credentials make them possible), then the request must carry a valid token of ours granting
/// a pull of `name` (any valid token for `/v2/` itself). Otherwise 401 with a challenge naming
/// our realm and the scope to ask for, so clients fetch a (new) token and retry.
pub fn admit(
    req: &HttpRequest,
    worker: &Worker,
    managed: &Managed,
    name: Option<&str>,
) -> Result<(), ProxyError> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(ProxyError::PullOnly {
            method: req.method().to_string(),
        });
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(users::parse_bearer);
    let problem = match bearer {
        None => None,
        // A static token used directly (`curl -H "Authorization: Bearer ..."`).
        Some(token) if managed.auth.users.static_token(token).is_some() => return Ok(()),
        Some(token) => match grant::verify(&managed.key, token, grant::now_secs()) {
            Ok(grant) => match name {
                None => return Ok(()),
                Some(name) if grant.allows_pull(name) => return Ok(()),
                Some(_) => Some((
                    "insufficient_scope",
                    "the token does not grant this repository",
                )),
            },
            Err(invalid) => Some(("invalid_token", invalid.describe())),
        },
    };
    // Quoted as every challenge hubferry writes: without `public_url` the realm comes from the
    // request's `Host`, which must not be able to add parameters.
    let realm = format!("{}/token", public_base(req, &worker.config));
    let mut challenge = format!(
        "Bearer realm={},service={}",
        challenge::quote(&realm),
        challenge::quote(SERVICE)
    );
    if let Some(name) = name {
        let scope = format!("repository:{name}:pull");
        challenge.push_str(&format!(",scope={}", challenge::quote(&scope)));
    }
    if let Some((error, _)) = problem {
        challenge.push_str(&format!(",error={}", challenge::quote(error)));
    }
    Err(ProxyError::Unauthorized {
        challenge,
        reason: problem
            .map(|(_, why)| why)
            .unwrap_or("a token from this mirror is required")
            .to_owned(),
    })
}

/// Request filter of `/v1/search` on a mirror closed to anonymous clients. `docker search`
/// sends the user's login as Basic credentials (it asks no token first); a token of ours
/// (scripts) is taken too.
pub async fn admit_search(
    req: &HttpRequest,
    worker: &Worker,
    managed: &Managed,
) -> Result<(), ProxyError> {
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(users::parse_basic);
    match basic {
        Some((user, password)) => log_in(req, worker, managed, &user, &password)
            .await
            .map(drop),
        None => admit(req, worker, managed, None),
    }
}

/// `/v2/` for a client holding a valid token: answered here (the API version check), since
/// the upstream would want a token of its own for nothing.
pub fn ping() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Docker-Distribution-API-Version", "registry/2.0"))
        .json(json!({}))
}

/// The scope hubferry asks `upstream` for, for a pull of `name` (as the upstream names it).
pub fn pull_scope(upstream_name: &str) -> String {
    format!("repository:{upstream_name}:pull")
}

/// `Authorization` for a request to `upstream`: a cached token for `scope`, else one fetched
/// from the upstream's realm with the configured credentials (anonymously when the upstream
/// has none: public images of other registries still work).
pub async fn upstream_authorization(
    req: &HttpRequest,
    worker: &Worker,
    managed: &Managed,
    upstream: &Registry,
    scope: &str,
) -> Result<header::HeaderValue, ProxyError> {
    let token = managed
        .upstream_tokens
        .get_or_fetch(&upstream.name, scope, || {
            fetch_upstream_token(req, worker, upstream, scope)
        })
        .await?;
    header::HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
        ProxyError::UpstreamToken {
            upstream: upstream.name.clone(),
            status: 200,
        }
    })
}

async fn fetch_upstream_token(
    req: &HttpRequest,
    worker: &Worker,
    upstream: &Registry,
    scope: &str,
) -> Result<(Secret, std::time::Duration), ProxyError> {
    let (realm, service) = token::realm_and_service(req, worker, upstream).await?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(service) = &service {
        query.append_pair("service", service);
    }
    query.append_pair("scope", scope);
    let url = token::realm_url(&realm, Some(&query.finish()))?;
    let mut headers = header::HeaderMap::new();
    if let Ok(host) = header::HeaderValue::from_str(&client::host_header(&url)) {
        headers.insert(header::HOST, host);
    }
    headers.insert(
        header::USER_AGENT,
        header::HeaderValue::from_static(concat!("hubferry/", env!("CARGO_PKG_VERSION"))),
    );
    if let Some(credentials) = &upstream.credentials {
        let mut basic =
            header::HeaderValue::from_str(&credentials.basic_header()).map_err(|_| {
                ProxyError::UpstreamToken {
                    upstream: upstream.name.clone(),
                    status: 0,
                }
            })?;
        basic.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, basic);
    }
    let out = Outgoing {
        upstream: "auth",
        registry: upstream.label(),
        method: Method::GET,
        url,
        headers,
    };
    let config = &worker.config;
    let mut response = client::send(
        worker.clients.for_registry(out.registry),
        &out,
        RequestBody::None,
        &config.timeouts,
        &worker.metrics,
    )
    .await?;
    let refused = |status: u16| {
        log::warn!(
            "upstream {} refused hubferry's token request for {scope} ({status})",
            upstream.name
        );
        ProxyError::UpstreamToken {
            upstream: upstream.name.clone(),
            status,
        }
    };
    let status = response.status().as_u16();
    if !response.status().is_success() {
        return Err(refused(status));
    }
    // The answer is small and read whole: `body_idle` is its limit in all, as for a token form.
    let limit = config.timeouts.body_idle;
    let body = match actix_rt::time::timeout(limit, response.body().limit(MAX_TOKEN_ANSWER)).await {
        Ok(body) => body.map_err(|_| refused(status))?,
        Err(_) => {
            worker
                .metrics
                .upstream_error(out.upstream, out.registry, "body");
            return Err(ProxyError::Timeout {
                upstream: out.upstream,
                url: redact::shown(&out.url),
                phase: "send its token answer",
                limit,
            });
        }
    };
    let (token, expires_in) = token_answer(&body).ok_or_else(|| refused(status))?;
    let expires_in = expires_in.unwrap_or(DEFAULT_EXPIRES_IN);
    log::debug!(
        "upstream {} token for {scope}, valid {expires_in}s",
        upstream.name
    );
    Ok((
        Secret::new(token),
        std::time::Duration::from_secs(expires_in),
    ))
}
