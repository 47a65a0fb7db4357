//! The per-worker upstream client: building it (rustls, timeouts, no redirects, the egress
//! connector with its guard and proxy) and sending one request, its body framed as the
//! client's was.

use std::{sync::Arc, time::Duration};

use actix_web::{
    body::SizedStream,
    http::{header, header::HeaderMap, Method},
    web,
};
use awc::{
    error::{ConnectError, SendRequestError},
    http::{uri::PathAndQuery, StatusCode, Uri},
};
use bytes::Bytes;
use futures_util::future::{select, Either};
use rustls::{pki_types::CertificateDer, ClientConfig, RootCertStore};
use url::Url;

use crate::{
    error::{ProxyError, RegistryName, UpstreamName},
    metrics::Metrics,
    net::redact,
    stream::upload,
    upstream::{
        connector::{EgressConnector, ProxyFailed, ASKS_FOR_CREDENTIALS},
        egress,
        proxy::{self, ProxyKind},
    },
};

/// How long each phase of an upstream exchange may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response_headers: Duration,
    pub body_idle: Duration,
}

/// TLS settings shared by every worker's client: the standard web roots (so a fresh machine
/// needs no system OpenSSL or CA bundle) plus the operator's extra CAs. HTTP/1.1 only: one
/// pooled connection per stream keeps flow control simple and per-stream memory small.
pub fn tls_config(extra_roots: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| format!("upstream.ca_file: unusable certificate: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One worker's client for one egress route. Redirects are off (the redirect resolver sees
/// every 3xx), the total request timeout is off (we time the phases ourselves), and no default
/// headers are added so the client's own `User-Agent` goes through.
#[derive(Clone)]
pub struct UpstreamClient {
    http: awc::Client,
    connector: EgressConnector,
}

/// `pool` caps the connections this client holds open to upstreams (0: no cap); one blob
/// stream holds one connection for its whole length. `connector` decides where and how it
/// connects.
pub fn build_client(
    tls: Arc<ClientConfig>,
    timeouts: &Timeouts,
    pool: usize,
    connector: EgressConnector,
) -> UpstreamClient {
    let connecting = awc::Connector::new()
        .connector(connector.clone())
        .rustls_0_23(tls)
        .timeout(timeouts.connect)
        .handshake_timeout(timeouts.connect)
        .limit(pool);
    let http = awc::Client::builder()
        .connector(connecting)
        .disable_redirects()
        .disable_timeout()
        .no_default_headers()
        .finish();
    UpstreamClient { http, connector }
}

/// Where a request goes on the wire: its URL, or, for a plain-HTTP upstream behind an HTTP
/// proxy, the proxy with the whole URL as the target (absolute form, RFC 9112 §3.2.2) and the
/// proxy's credentials.
struct Target {
    uri: Uri,
    proxy: Option<(String, Option<String>)>,
}

impl UpstreamClient {
    /// The awc client itself, for exchanges with none of the registry logic: the ACME CA's
    /// (HTTPS only, so a proxy is always a tunnel the connector opens).
    pub fn awc(&self) -> awc::Client {
        self.http.clone()
    }

    async fn target(&self, out: &Outgoing) -> Result<Target, ProxyError> {
        let url = &out.url;
        let plain = url.scheme() == "http";
        let (host, port) = (
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(80),
        );
        let proxy = match self.connector.route().proxy_for(!plain, host, port) {
            Some(proxy) if plain && proxy.kind == ProxyKind::Http => proxy.clone(),
            // Direct, or a tunnel the connector opens: the request is as it would be direct.
            _ => {
                let uri = Uri::try_from(url.as_str()).map_err(|e| ProxyError::Unreachable {
                    upstream: out.upstream,
                    url: redact::shown(url),
                    reason: format!("not a URL the client can send: {e}"),
                })?;
                return Ok(Target { uri, proxy: None });
            }
        };
        // The proxy connects, not hubferry: the policy judges what it can beforehand.
        self.connector
            .check_remote(host, port)
            .await
            .map_err(|err| connect_error(out, err))?;
        let uri = PathAndQuery::try_from(url.as_str())
            .map_err(|e| e.to_string())
            .and_then(|target| {
                Uri::builder()
                    .scheme("http")
                    .authority(format!("{}:{}", proxy.host, proxy.port))
                    .path_and_query(target)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .map_err(|reason| ProxyError::Unreachable {
                upstream: out.upstream,
                url: redact::shown(url),
                reason: format!("not a URL a proxy can be sent: {reason}"),
            })?;
        Ok(Target {
            uri,
            proxy: Some((proxy.to_string(), proxy.basic_authorization())),
        })
    }
}

/// One request to an upstream, fully described.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub upstream: UpstreamName,
    /// The registry it is for (the one whose blob a CDN serves), for the metrics.
    pub registry: RegistryName,
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
}

/// The request body to send up, framed as the client framed it.
pub enum RequestBody {
    None,
    /// A body hubferry read and changed (a token request's form, its scopes mapped).
    Full(Bytes),
    Sized(u64, web::Payload),
    Chunked(web::Payload),
}

impl RequestBody {
    /// Pairs the client's payload with the framing its headers declare.
    pub fn from_client(
        req: &actix_web::HttpRequest,
        payload: web::Payload,
    ) -> Result<Self, ProxyError> {
        let framed_by_stream = req.version() == actix_web::http::Version::HTTP_2;
        Ok(
            match request_framing(req.headers(), req.method(), framed_by_stream)? {
                Framing::Empty => RequestBody::None,
                Framing::Length(len) => RequestBody::Sized(len, payload),
                Framing::Chunked => RequestBody::Chunked(payload),
            },
        )
    }
}

/// How a client framed its request body.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// A length, chunked, or no body at all (a GET must not go up as an empty chunked body).
/// HTTP/2 frames bodies itself and may send no `Content-Length`: a method that carries a body
/// then streams it up chunked.
pub fn request_framing(
    headers: &HeaderMap,
    method: &Method,
    framed_by_stream: bool,
) -> Result<Framing, ProxyError> {
    let chunked = headers
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return Ok(Framing::Chunked);
    }
    match headers.get(header::CONTENT_LENGTH) {
        None if framed_by_stream && anticipates_content(method) => Ok(Framing::Chunked),
        None => Ok(Framing::Empty),
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(0) => Ok(Framing::Empty),
            Some(len) => Ok(Framing::Length(len)),
            None => Err(ProxyError::BadRequest("invalid Content-Length".into())),
        },
    }
}

/// Whether a request with this method is expected to carry content, so that an empty one still
/// says `Content-Length: 0`. Any other bodiless request (a GET, a HEAD) goes up with no length
/// at all, as the client sent it: RFC 9110 §8.6 asks user agents not to send one there.
fn anticipates_content(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// awc's response type without its compression features (which we leave off: bodies are
/// relayed exactly as the upstream encoded them).
pub type UpstreamResponse = awc::ClientResponse;

/// Sends one request. Bodiless requests, and small bodies hubferry holds whole, must have
/// response headers within `timeouts.response_headers`; a streamed body has the deadlines of
/// `upload` (idle between moves either way, then the response headers once it is all sent),
/// since an upload of many GB has no sensible total limit. A client's body that fails is its
/// own error, not counted against the upstream.
pub async fn send(
    client: &UpstreamClient,
    out: &Outgoing,
    body: RequestBody,
    timeouts: &Timeouts,
    metrics: &Metrics,
) -> Result<UpstreamResponse, ProxyError> {
    let started = std::time::Instant::now();
    let result = send_timed(client, out, body, timeouts).await;
    match &result {
        Ok(_) => metrics.upstream_answered(out.upstream, out.registry, started.elapsed()),
        Err(ProxyError::ClientBody { .. }) => {}
        Err(err) => metrics.upstream_error(out.upstream, out.registry, err.kind()),
    }
    result
}

async fn send_timed(
    client: &UpstreamClient,
    out: &Outgoing,
    body: RequestBody,
    timeouts: &Timeouts,
) -> Result<UpstreamResponse, ProxyError> {
    let target = client.target(out).await?;
    let request = || {
        let mut request = client
            .http
            .request(out.method.clone(), target.uri.clone())
            .no_decompress();
        match &target.proxy {
            None => *request.headers_mut() = out.headers.clone(),
            Some((_, credentials)) => {
                *request.headers_mut() = proxy::fold_repeated_fields(&out.headers);
                if let Some(value) = credentials.as_ref().and_then(|c| c.parse().ok()) {
                    request
                        .headers_mut()
                        .insert(header::PROXY_AUTHORIZATION, value);
                }
            }
        }
        request
    };
    let response = match body {
        RequestBody::None if out.method == Method::GET => {
            noting_socket(send_again_if_closed(request, out, timeouts)).await?
        }
        RequestBody::None if out.method == Method::HEAD => {
            send_again_if_closed(request, out, timeouts).await?
        }
        body => send_request(request(), out, body, timeouts).await?,
    };
    match &target.proxy {
        // The proxy's own answer to an absolute-form request, not the registry's.
        Some((proxy, _)) if response.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED => {
            Err(ProxyError::EgressProxy {
                upstream: out.upstream,
                url: redact::shown(&out.url),
                failure: ProxyFailed {
                    proxy: proxy.clone(),
                    reason: ASKS_FOR_CREDENTIALS.to_owned(),
                }
                .to_string(),
            })
        }
        _ => Ok(response),
    }
}

/// A GET's answer, with the plain-HTTP socket it came on in its extensions when its body can
/// be spliced from there (`stream::splice`).
#[cfg(target_os = "linux")]
async fn noting_socket(
    sending: impl std::future::Future<Output = Result<UpstreamResponse, ProxyError>>,
) -> Result<UpstreamResponse, ProxyError> {
    use actix_web::HttpMessage as _;
    let (response, socket) = crate::upstream::socket::Claiming::new(sending).await;
    let response = response?;
    if let Some(socket) = socket {
        if crate::stream::splice::spliceable_length(response.status(), response.headers()).is_some()
        {
            response.extensions_mut().insert(socket);
        }
    }
    Ok(response)
}

#[cfg(not(target_os = "linux"))]
async fn noting_socket(
    sending: impl std::future::Future<Output = Result<UpstreamResponse, ProxyError>>,
) -> Result<UpstreamResponse, ProxyError> {
    sending.await
}

/// A bodiless GET or HEAD, asked again once, on a new connection, when the kept-alive
/// connection it went out on turns out closed before any answer (RFC 9112 §9.3.1 lets a client
/// retry an idempotent request then). A server or proxy may close an idle connection at any
/// moment, and the close can cross the next request on the wire: tinyproxy, for one, closes
/// after every answer without saying so.
async fn send_again_if_closed(
    request: impl Fn() -> awc::ClientRequest,
    out: &Outgoing,
    timeouts: &Timeouts,
) -> Result<UpstreamResponse, ProxyError> {
    let mut asked_again = false;
    loop {
        let sending = request().send_body(awc::body::None::new());
        match actix_rt::time::timeout(timeouts.response_headers, sending).await {
            Ok(Err(SendRequestError::Connect(ConnectError::Disconnected))) if !asked_again => {
                log::debug!(
                    "{} {}: the connection closed before an answer; asking again",
                    out.method,
                    redact::shown(&out.url)
                );
                asked_again = true;
            }
            Ok(result) => return result.map_err(|e| send_error(out, e, timeouts)),
            Err(_) => return Err(headers_timeout(out, timeouts)),
        }
    }
}

fn headers_timeout(out: &Outgoing, timeouts: &Timeouts) -> ProxyError {
    ProxyError::Timeout {
        upstream: out.upstream,
        url: redact::shown(&out.url),
        phase: "send response headers",
        limit: timeouts.response_headers,
    }
}

async fn send_request(
    request: awc::ClientRequest,
    out: &Outgoing,
    body: RequestBody,
    timeouts: &Timeouts,
) -> Result<UpstreamResponse, ProxyError> {
    let sending = match body {
        RequestBody::None if anticipates_content(&out.method) => {
            // awc sends `()` as `Content-Length: 0`, which a POST or PUT needs: without it a
            // server may answer 411 Length Required.
            request.send()
        }
        RequestBody::None => request.send_body(awc::body::None::new()),
        // A token form (read whole, at most 64 KiB): sending it is part of waiting for the
        // answer.
        RequestBody::Full(bytes) => request.send_body(bytes),
        RequestBody::Sized(len, payload) => {
            let (body, deadline) = upload::watch(
                payload,
                upload_deadlines(timeouts),
                out.upstream,
                redact::shown(&out.url),
            );
            let sending = request.send_body(SizedStream::new(len, body));
            return send_upload(sending, deadline, out, timeouts).await;
        }
        RequestBody::Chunked(payload) => {
            let (body, deadline) = upload::watch(
                payload,
                upload_deadlines(timeouts),
                out.upstream,
                redact::shown(&out.url),
            );
            let sending = request.send_stream(body);
            return send_upload(sending, deadline, out, timeouts).await;
        }
    };
    match actix_rt::time::timeout(timeouts.response_headers, sending).await {
        Ok(result) => result.map_err(|e| send_error(out, e, timeouts)),
        Err(_) => Err(headers_timeout(out, timeouts)),
    }
}

/// A streamed body's send, raced against its deadlines (see `upload`). When the send fails
/// because the client's body did, that is the error: awc only says the body broke.
async fn send_upload(
    sending: awc::SendClientRequest,
    deadline: upload::UploadDeadline,
    out: &Outgoing,
    timeouts: &Timeouts,
) -> Result<UpstreamResponse, ProxyError> {
    // The send first: the deadline reads what the send's poll did to the body.
    match select(sending, deadline).await {
        Either::Left((Ok(response), _)) => Ok(response),
        Either::Left((Err(err), deadline)) => Err(deadline
            .client_fault()
            .unwrap_or_else(|| send_error(out, err, timeouts))),
        // The send is dropped here, and the upstream connection with it: a body cut part-way
        // leaves it unusable.
        Either::Right((overrun, _)) => Err(overrun),
    }
}

/// A connector's error that is not awc's own: the policy's refusal, or a proxy's failure.
fn connect_error(out: &Outgoing, err: actix_tls::connect::ConnectError) -> ProxyError {
    send_error_of_connect(out, ConnectError::from(err))
}

fn send_error_of_connect(out: &Outgoing, err: ConnectError) -> ProxyError {
    let url = redact::shown(&out.url);
    match err {
        // A redirect target the egress policy refused (not a DNS failure).
        ConnectError::Resolver(err) if err.downcast_ref::<egress::Refused>().is_some() => {
            ProxyError::BadRedirect {
                upstream: out.upstream,
                reason: format!("{err} (redirected to {url})"),
            }
        }
        ConnectError::Resolver(err) if err.downcast_ref::<ProxyFailed>().is_some() => {
            ProxyError::EgressProxy {
                upstream: out.upstream,
                url,
                failure: err.to_string(),
            }
        }
        other => ProxyError::Unreachable {
            upstream: out.upstream,
            url,
            reason: other.to_string(),
        },
    }
}

fn send_error(out: &Outgoing, err: SendRequestError, timeouts: &Timeouts) -> ProxyError {
    let url = redact::shown(&out.url);
    match err {
        SendRequestError::Connect(ConnectError::Timeout) => ProxyError::Timeout {
            upstream: out.upstream,
            url,
            phase: "accept the connection",
            limit: timeouts.connect,
        },
        SendRequestError::Connect(err @ ConnectError::Resolver(_)) => {
            send_error_of_connect(out, err)
        }
        SendRequestError::Timeout => ProxyError::Timeout {
            upstream: out.upstream,
            url,
            phase: "send response headers",
            limit: timeouts.response_headers,
        },
        other => ProxyError::Unreachable {
            upstream: out.upstream,
            url,
            reason: other.to_string(),
        },
    }
}

fn upload_deadlines(timeouts: &Timeouts) -> upload::Deadlines {
    upload::Deadlines {
        body_idle: timeouts.body_idle,
        response_headers: timeouts.response_headers,
    }
}

/// The `Host` header value for a URL: host, plus the port when it is not the scheme's default.
pub fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let host = match url.host() {
        Some(url::Host::Ipv6(_)) if !host.starts_with('[') => format!("[{host}]"),
        _ => host.to_owned(),
    };
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_framing_follows_the_client() {
        let framing = |h: &HeaderMap| request_framing(h, &Method::PUT, false);
        let mut headers = HeaderMap::new();
        assert_eq!(framing(&headers).unwrap(), Framing::Empty);
        headers.insert(header::CONTENT_LENGTH, "0".parse().unwrap());
        assert_eq!(framing(&headers).unwrap(), Framing::Empty);
        headers.insert(header::CONTENT_LENGTH, "12".parse().unwrap());
        assert_eq!(framing(&headers).unwrap(), Framing::Length(12));
        headers.insert(header::CONTENT_LENGTH, "x".parse().unwrap());
        assert!(framing(&headers).is_err());
        headers.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert_eq!(framing(&headers).unwrap(), Framing::Chunked);
    }

    #[test]
    fn only_methods_that_carry_content_say_an_empty_one_is_empty() {
        for method in [Method::POST, Method::PUT, Method::PATCH] {
            assert!(anticipates_content(&method), "{method}");
        }
        for method in [Method::GET, Method::HEAD, Method::DELETE, Method::OPTIONS] {
            assert!(!anticipates_content(&method), "{method}");
        }
    }

    #[test]
    fn http2_bodies_without_a_length_stream_up() {
        let none = HeaderMap::new();
        assert_eq!(
            request_framing(&none, &Method::PUT, true).unwrap(),
            Framing::Chunked
        );
        assert_eq!(
            request_framing(&none, &Method::PATCH, true).unwrap(),
            Framing::Chunked
        );
        assert_eq!(
            request_framing(&none, &Method::GET, true).unwrap(),
            Framing::Empty
        );
        assert_eq!(
            request_framing(&none, &Method::HEAD, true).unwrap(),
            Framing::Empty
        );
        let mut sized = HeaderMap::new();
        sized.insert(header::CONTENT_LENGTH, "5".parse().unwrap());
        assert_eq!(
            request_framing(&sized, &Method::PUT, true).unwrap(),
            Framing::Length(5)
        );
    }

    #[test]
    fn host_header_keeps_non_default_ports() {
        assert_eq!(
            host_header(&Url::parse("https://a.example/x").unwrap()),
            "a.example"
        );
        assert_eq!(
            host_header(&Url::parse("http://127.0.0.1:5000").unwrap()),
            "127.0.0.1:5000"
        );
        assert_eq!(
            host_header(&Url::parse("http://[::1]:80/").unwrap()),
            "[::1]"
        );
        assert_eq!(
            host_header(&Url::parse("http://[::1]:81/").unwrap()),
            "[::1]:81"
        );
    }
}
