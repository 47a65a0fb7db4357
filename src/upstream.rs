//! The per-worker upstream client: building it (rustls, timeouts, no redirects), sending one
//! request, and relaying the answer to the client as a stream that keeps the upstream length.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use actix_rt::time::{sleep, Sleep};
use actix_web::{
    body::{BodyStream, BoxBody, MessageBody, None as NoBody, SizedStream},
    dev::RequestHead,
    error::PayloadError,
    http::{header, header::HeaderMap, Method, StatusCode, Version},
    web, HttpResponse,
};
use awc::error::{ConnectError, SendRequestError};
use bytes::Bytes;
use futures_util::{
    future::{select, Either},
    Stream,
};
use rustls::{pki_types::CertificateDer, ClientConfig, RootCertStore};
use url::Url;

use crate::{
    chunking::ClientChunks,
    config::Timeouts,
    egress,
    error::{ProxyError, UpstreamName},
    metrics::Metrics,
    redirect,
    resume::{Download, Resume, Resumer},
    upload,
    upstreams::RegistryName,
};

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

/// One worker's client. Redirects are off (the redirect resolver sees every 3xx), the total
/// request timeout is off (we time the phases ourselves), and no default headers are added so
/// the client's own `User-Agent` goes through.
/// `pool` caps the connections this worker holds open to upstreams (0: no cap); one blob
/// stream holds one connection for its whole length. `egress` decides where it may connect.
pub fn build_client(
    tls: Arc<ClientConfig>,
    timeouts: &Timeouts,
    pool: usize,
    egress: egress::Policy,
) -> awc::Client {
    let connector = awc::Connector::new()
        .connector(egress::GuardedConnector::new(egress))
        .rustls_0_23(tls)
        .timeout(timeouts.connect)
        .handshake_timeout(timeouts.connect)
        .limit(pool);
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .disable_timeout()
        .no_default_headers()
        .finish()
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
    client: &awc::Client,
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
    client: &awc::Client,
    out: &Outgoing,
    body: RequestBody,
    timeouts: &Timeouts,
) -> Result<UpstreamResponse, ProxyError> {
    let mut request = client
        .request(out.method.clone(), out.url.as_str())
        .no_decompress();
    *request.headers_mut() = out.headers.clone();
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
            let (body, deadline) = upload::watch(payload, timeouts, out.upstream, &out.url);
            let sending = request.send_body(SizedStream::new(len, body));
            return send_upload(sending, deadline, out, timeouts).await;
        }
        RequestBody::Chunked(payload) => {
            let (body, deadline) = upload::watch(payload, timeouts, out.upstream, &out.url);
            let sending = request.send_stream(body);
            return send_upload(sending, deadline, out, timeouts).await;
        }
    };
    match actix_rt::time::timeout(timeouts.response_headers, sending).await {
        Ok(result) => result.map_err(|e| send_error(out, e, timeouts)),
        Err(_) => Err(ProxyError::Timeout {
            upstream: out.upstream,
            url: redirect::shown(&out.url),
            phase: "send response headers",
            limit: timeouts.response_headers,
        }),
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

fn send_error(out: &Outgoing, err: SendRequestError, timeouts: &Timeouts) -> ProxyError {
    let url = redirect::shown(&out.url);
    match err {
        SendRequestError::Connect(ConnectError::Timeout) => ProxyError::Timeout {
            upstream: out.upstream,
            url,
            phase: "accept the connection",
            limit: timeouts.connect,
        },
        // A redirect target the egress policy refused (not a DNS failure).
        SendRequestError::Connect(ConnectError::Resolver(err))
            if err.downcast_ref::<egress::Refused>().is_some() =>
        {
            ProxyError::BadRedirect {
                upstream: out.upstream,
                reason: format!("{err} (redirected to {url})"),
            }
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

/// Builds the client's response from an upstream one: status and the given headers, and the
/// body streamed with the upstream `Content-Length` kept (a HEAD answer keeps it with no body).
/// With a `resumer`, a body that breaks is asked for again from where it broke. `client` is the
/// client's request: its method, and its HTTP version, which decides how the body is cut.
pub fn relay(
    response: UpstreamResponse,
    client: &RequestHead,
    mut headers: HeaderMap,
    timeouts: &Timeouts,
    (upstream, registry): (UpstreamName, RegistryName),
    metrics: &Arc<Metrics>,
    resumer: Option<Resumer>,
) -> HttpResponse {
    let method = &client.method;
    let status = response.status();
    // Read before the length is taken out of `headers` below.
    let resume = resumer.and_then(|r| Resume::of(r, status, &headers));
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // A 304 keeps its Content-Length header as metadata; every other response's framing comes
    // from the body we attach.
    if status != StatusCode::NOT_MODIFIED {
        headers.remove(header::CONTENT_LENGTH);
    }
    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut response = if bodiless {
        match (length, *method == Method::HEAD) {
            (Some(len), true) => HttpResponse::with_body(
                status,
                SizedStream::new(
                    len,
                    futures_util::stream::empty::<Result<Bytes, PayloadError>>(),
                )
                .boxed(),
            ),
            _ => HttpResponse::with_body(status, NoBody::new().boxed()),
        }
    } else {
        let mut body = IdleGuard::new(
            response,
            timeouts.body_idle,
            (upstream, registry),
            "response body",
        );
        body.expected = length;
        body.metrics = Some(metrics.clone());
        let body = Download::new(body, resume, metrics.stream_started());
        if client.version < Version::HTTP_2 {
            HttpResponse::with_body(status, framed(length, ClientChunks::new(body)))
        } else {
            // HTTP/2 cuts the body into its own frames under flow control.
            HttpResponse::with_body(status, framed(length, body))
        }
    };
    // Moved, not copied header by header: this runs for every proxied request.
    *response.headers_mut() = headers;
    response
}

/// A streamed body with the upstream's length kept when it has one.
fn framed<S>(length: Option<u64>, body: S) -> BoxBody
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + 'static,
{
    match length {
        Some(len) => SizedStream::new(len, body).boxed(),
        None => BodyStream::new(body).boxed(),
    }
}

pin_project_lite::pin_project! {
    /// Passes a body through while enforcing the idle timeout between chunks (never a total
    /// timeout: layers are many GB) and checking that a body with a known length is complete,
    /// so a broken upstream aborts the client's response instead of ending it short.
    pub struct IdleGuard<S> {
        #[pin]
        inner: S,
        #[pin]
        idle: Sleep,
        limit: Duration,
        // When the last chunk came. The timer is not re-armed per chunk (thousands per second
        // on a fast blob); when it fires early, it is moved to `last_chunk + limit`.
        last_chunk: actix_rt::time::Instant,
        received: u64,
        pub expected: Option<u64>,
        // Set once the stream has ended or failed: nothing more is yielded after that.
        finished: bool,
        // Where failures are counted (downloads only).
        pub metrics: Option<Arc<Metrics>>,
        upstream: UpstreamName,
        registry: RegistryName,
        what: &'static str,
    }
}

impl<S> IdleGuard<S> {
    pub fn new(
        inner: S,
        limit: Duration,
        (upstream, registry): (UpstreamName, RegistryName),
        what: &'static str,
    ) -> Self {
        IdleGuard {
            inner,
            idle: sleep(limit),
            limit,
            last_chunk: actix_rt::time::Instant::now(),
            received: 0,
            expected: None,
            finished: false,
            metrics: None,
            upstream,
            registry,
            what,
        }
    }
}

impl<S, E> Stream for IdleGuard<S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if *this.finished {
            return Poll::Ready(None);
        }
        let failure = match this.inner.poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                *this.received += chunk.len() as u64;
                *this.last_chunk = actix_rt::time::Instant::now();
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(Some(Err(err))) => std::io::Error::other(format!(
                "{} from {} failed after {} bytes: {err}",
                this.what, this.upstream, this.received
            )),
            Poll::Ready(None) => match *this.expected {
                Some(expected) if *this.received < expected => std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} from {} ended after {} of {expected} bytes",
                        this.what, this.upstream, this.received
                    ),
                ),
                _ => {
                    *this.finished = true;
                    return Poll::Ready(None);
                }
            },
            Poll::Pending => {
                let mut idle = this.idle;
                if idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let deadline = *this.last_chunk + *this.limit;
                if deadline > actix_rt::time::Instant::now() {
                    // Chunks came since the timer was armed: wait out the rest of the limit.
                    idle.as_mut().reset(deadline);
                    if idle.poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "{} from {} was idle for {:?} after {} bytes",
                        this.what, this.upstream, this.limit, this.received
                    ),
                )
            }
        };
        log::warn!("{failure}");
        if let Some(metrics) = this.metrics.as_ref() {
            metrics.upstream_error(this.upstream, this.registry, "body");
        }
        *this.finished = true;
        Poll::Ready(Some(Err(failure)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[actix_rt::test]
    async fn idle_guard_passes_chunks_and_checks_length() {
        let chunks = vec![
            Ok::<_, PayloadError>(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"de")),
        ];
        let mut guard = IdleGuard::new(
            futures_util::stream::iter(chunks),
            Duration::from_secs(5),
            ("registry", "docker.io"),
            "test",
        );
        guard.expected = Some(5);
        let got: Vec<_> = guard.collect().await;
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(Result::is_ok));

        let short = vec![Ok::<_, PayloadError>(Bytes::from_static(b"abc"))];
        let mut guard = IdleGuard::new(
            futures_util::stream::iter(short),
            Duration::from_secs(5),
            ("registry", "docker.io"),
            "test",
        );
        guard.expected = Some(5);
        let got: Vec<_> = guard.collect().await;
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1].as_ref().unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    }

    #[actix_rt::test]
    async fn idle_guard_lets_a_slow_but_steady_stream_run_past_the_limit() {
        // A chunk every 30 ms for ~300 ms, with a 100 ms idle limit: never idle for long.
        let ticks = futures_util::stream::unfold(0u32, |n| async move {
            if n == 10 {
                return None;
            }
            actix_rt::time::sleep(Duration::from_millis(30)).await;
            Some((Ok::<_, PayloadError>(Bytes::from_static(b"x")), n + 1))
        });
        let guard = IdleGuard::new(
            Box::pin(ticks),
            Duration::from_millis(100),
            ("registry", "docker.io"),
            "test",
        );
        let got: Vec<_> = guard.collect().await;
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(Result::is_ok));
    }

    #[actix_rt::test]
    async fn idle_guard_times_out_a_silent_stream() {
        let silent = futures_util::stream::pending::<Result<Bytes, PayloadError>>();
        let mut guard = Box::pin(IdleGuard::new(
            silent,
            Duration::from_millis(50),
            ("registry", "docker.io"),
            "test",
        ));
        let first = guard.next().await.unwrap();
        assert_eq!(first.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    }

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
}
