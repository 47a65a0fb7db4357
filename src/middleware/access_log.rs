//! The access log and the request metrics, written once per request when its response body is
//! finished (or abandoned), so the byte count is what was really streamed.

use std::{
    cell::Cell,
    net::IpAddr,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::Instant,
};

use actix_web::{
    body::{BodySize, EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{HeaderName, HeaderValue},
        Method, Uri,
    },
    middleware::Next,
    web, Error, HttpMessage, HttpRequest,
};
use bytes::Bytes;
use log::kv::Value;

#[cfg(target_os = "linux")]
use crate::stream::splice::Delivered;
use crate::{
    error::{ProxyError, RegistryName, RequestId, UpstreamName},
    logging::ACCESS_TARGET,
    net::ip_text::DottedQuad,
    worker::Worker,
};

/// Which upstream answered a request and how many redirects were followed, for the access log
/// (the route fills it in as it forwards).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTrace {
    pub upstream: UpstreamName,
    pub registry: RegistryName,
    pub redirects: u32,
}

/// Everything one access-log line says.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// Also in the log line and the answer of the request's error, if it has one.
    pub request_id: RequestId,
    /// The peer, or the client a trusted proxy forwarded for.
    pub client: Option<IpAddr>,
    pub method: Method,
    /// Path and query as the client sent them (a `Uri` clone shares the request's bytes).
    pub target: Uri,
    pub version: &'static str,
    pub status: u16,
    pub route: &'static str,
    pub bytes: u64,
    pub micros: u64,
    pub outcome: Outcome,
    /// Broken upstream downloads asked for again from where they broke.
    pub resumes: u32,
    pub registry: Option<RegistryName>,
    /// The upstream's role (`registry`, `auth`, `index`, `blob CDN`).
    pub upstream: Option<&'static str>,
    pub redirects: u32,
}

/// How a request's exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The response was sent to its end.
    Complete,
    /// The response was dropped part-way: the client left, or a shutdown cut it.
    Aborted,
    /// The response body failed part-way (its upstream broke or stalled, resumes ran out).
    Failed,
    /// No response at all: the request was dropped before it was answered (status 499).
    Unanswered,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Aborted => "aborted",
            Outcome::Failed => "failed",
            Outcome::Unanswered => "unanswered",
        }
    }
}

impl AccessRecord {
    /// Hands `emit` the record as a log record whose key-values are the fields, in the order
    /// the text line shows them (see `logging::format`). Nothing is formatted here: the
    /// formatter writes each value into the line buffer.
    fn with_log_record(&self, emit: impl FnOnce(&log::Record<'_>)) {
        let mut dotted = DottedQuad::default();
        let client = match &self.client {
            Some(IpAddr::V4(v4)) => Value::from(dotted.write(*v4)),
            Some(v6) => Value::from_display(v6),
            None => Value::null(),
        };
        let path = self
            .target
            .path_and_query()
            .map_or_else(|| self.target.path(), |pq| pq.as_str());
        let kvs: [(&str, Value<'_>); 15] = [
            ("type", Value::from("access")),
            ("client", client),
            ("method", Value::from(self.method.as_str())),
            ("path", Value::from(path)),
            ("version", Value::from(self.version)),
            ("status", Value::from(self.status)),
            ("bytes", Value::from(self.bytes)),
            ("duration_ms", Value::from(self.micros as f64 / 1000.0)),
            ("request_id", Value::from_display(&self.request_id)),
            ("route", Value::from(self.route)),
            ("outcome", Value::from(self.outcome.as_str())),
            ("resumes", Value::from(self.resumes)),
            (
                "registry",
                self.registry.map_or_else(Value::null, Value::from),
            ),
            (
                "upstream",
                self.upstream.map_or_else(Value::null, Value::from),
            ),
            ("redirects", Value::from(self.redirects)),
        ];
        emit(
            &log::Record::builder()
                .level(log::Level::Info)
                .target(ACCESS_TARGET)
                .args(format_args!(""))
                .key_values(&kvs)
                .build(),
        );
    }
}

/// The route a request matched, by the pattern it was registered under (see
/// `routes::configure`); the `/v2` scope has no pattern of its own, so its path decides.
fn route_label(pattern: Option<&str>, path: &str) -> &'static str {
    match pattern {
        Some("/v2/_catalog") => "catalog",
        Some("/token") => "token",
        Some("/token/{upstream}" | "/token/{upstream}/{realm}") => "registry_token",
        Some("/v1/search") => "search",
        _ if path == "/v2" || path.starts_with("/v2/") => "registry",
        _ => "other",
    }
}

fn version_text(version: actix_web::http::Version) -> &'static str {
    use actix_web::http::Version;
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The status logged for a request that never got a response: its handler was dropped before
/// it answered, because the connection ended (the client reset it, or a shutdown past its grace
/// cut it). 499 is nginx's "client closed request", which log tools already know.
pub const NO_RESPONSE: u16 = 499;

/// Middleware: notes the request, lets it run, and wraps the response body so the record is
/// completed and written when the body is done. A request whose handler is dropped before it
/// answers is logged then, with [`NO_RESPONSE`]: every request gets exactly one line.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let mut pending = Pending::new(&req);
    let request_id = pending.request_id();
    let res = match next.call(req).await {
        Ok(res) => res,
        // actix-web answers an error after this middleware: log the status it will send (the
        // handlers and the request filters answer their own errors, so this is only another
        // middleware's).
        Err(err) => {
            if let Some(err) = err.as_error::<ProxyError>() {
                err.log(request_id);
            }
            let status = err.as_response_error().status_code().as_u16();
            if let Some(answered) = pending.answered(status, None) {
                answered.write(Outcome::Complete);
            }
            return Err(err);
        }
    };
    let answered = pending
        .answered(res.status().as_u16(), Some(res.request()))
        .expect("a request is answered once");
    let res = with_request_id(res, request_id);
    Ok(res.map_body(move |_, body| LoggedBody {
        size: body.size(),
        body,
        answered: Some(answered),
        ended: None,
    }))
}

/// An error's answer gets the request's id (in its body and as `X-Request-Id`), and the error
/// its log line, here: the error itself was answered before the id was at hand. Every other
/// answer passes as it is.
fn with_request_id<B: MessageBody>(
    mut res: ServiceResponse<B>,
    request_id: RequestId,
) -> ServiceResponse<EitherBody<B>> {
    let Some(err) = res
        .response()
        .error()
        .and_then(|e| e.as_error::<ProxyError>())
    else {
        return res.map_into_left_body();
    };
    err.log(request_id);
    let body = err.body(Some(request_id));
    let id = HeaderValue::from_str(&request_id.to_string()).expect("hex digits are ASCII");
    res.headers_mut().insert(X_REQUEST_ID, id);
    res.map_body(|_, _| EitherBody::right(body))
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the request filter and the routes learn about a request that its line reports, kept
/// (in the request's extensions) where the access log still reads it if the request is dropped.
#[derive(Debug, Default)]
pub struct Notes {
    client: Cell<Option<IpAddr>>,
    trace: Cell<Option<UpstreamTrace>>,
    /// Shared with the download's resumer, which counts on it while the body streams.
    resumes: Rc<Cell<u32>>,
    /// Shared with a spliced body, which writes to the client without yielding the bytes.
    #[cfg(target_os = "linux")]
    delivered: Rc<Delivered>,
}

impl Notes {
    /// The client a trusted proxy forwarded for, when it is not the peer (see `access_control`).
    pub fn client(req: &impl HttpMessage, client: IpAddr) {
        if let Some(notes) = req.extensions().get::<Rc<Notes>>() {
            notes.client.set(Some(client));
        }
    }

    /// Which upstream the request went to, and the redirects followed so far.
    pub fn trace(req: &impl HttpMessage, trace: UpstreamTrace) {
        if let Some(notes) = req.extensions().get::<Rc<Notes>>() {
            notes.trace.set(Some(trace));
        }
    }

    /// Where a spliced body counts what it wrote to the client itself (see `splice`).
    #[cfg(target_os = "linux")]
    pub fn delivered(req: &impl HttpMessage) -> Rc<Delivered> {
        req.extensions()
            .get::<Rc<Notes>>()
            .map(|notes| notes.delivered.clone())
            .unwrap_or_default()
    }

    /// Bytes of the body that reached the client without passing through its stream.
    fn delivered_bytes(&self) -> u64 {
        #[cfg(target_os = "linux")]
        return self.delivered.bytes.get();
        #[cfg(not(target_os = "linux"))]
        0
    }

    /// Whether the body failed because the client went away.
    fn client_left(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.delivered.client_left.get();
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Where the request's download counts its resumes (see `resume`).
    pub fn resumes(req: &impl HttpMessage) -> Rc<Cell<u32>> {
        req.extensions()
            .get::<Rc<Notes>>()
            .map(|notes| notes.resumes.clone())
            .unwrap_or_default()
    }
}

/// A request's record until its response exists; written with [`NO_RESPONSE`] if dropped first.
struct Pending {
    notes: Rc<Notes>,
    started: Instant,
    record: Option<AccessRecord>,
    worker: web::Data<Worker>,
}

/// A request's record once it is answered, until its response is done.
struct Answered {
    record: AccessRecord,
    notes: Rc<Notes>,
    started: Instant,
    worker: web::Data<Worker>,
}

impl Pending {
    fn request_id(&self) -> RequestId {
        self.record
            .as_ref()
            .expect("asked before the request is answered")
            .request_id
    }

    fn new(req: &ServiceRequest) -> Pending {
        let worker = req
            .app_data::<web::Data<Worker>>()
            .expect("Worker state is registered on every App")
            .clone();
        let notes = Rc::new(Notes::default());
        req.extensions_mut().insert(notes.clone());
        Pending {
            notes,
            started: Instant::now(),
            record: Some(AccessRecord {
                request_id: RequestId::next(),
                client: req.peer_addr().map(|a| a.ip()),
                method: req.method().clone(),
                target: req.uri().clone(),
                version: version_text(req.version()),
                status: NO_RESPONSE,
                // Before routing: every route is known by its path too.
                route: route_label(Some(req.path()), req.path()),
                bytes: 0,
                micros: 0,
                outcome: Outcome::Unanswered,
                resumes: 0,
                registry: None,
                upstream: None,
                redirects: 0,
            }),
            worker,
        }
    }

    /// The record completed with `status` (and the route `request`, the one the response
    /// carries, matched), and taken: nothing is written when `self` is dropped.
    fn answered(&mut self, status: u16, request: Option<&HttpRequest>) -> Option<Answered> {
        let mut record = self.record.take()?;
        self.complete(&mut record, status);
        if let Some(request) = request {
            record.route = route_label(request.match_pattern().as_deref(), request.path());
        }
        Some(Answered {
            record,
            notes: self.notes.clone(),
            started: self.started,
            worker: self.worker.clone(),
        })
    }

    fn complete(&self, record: &mut AccessRecord, status: u16) {
        // Behind a trusted proxy, the client it forwarded for.
        if let Some(client) = self.notes.client.get() {
            record.client = Some(client);
        }
        if let Some(trace) = self.notes.trace.get() {
            record.upstream = Some(trace.upstream);
            record.registry = Some(trace.registry);
            record.redirects = trace.redirects;
        }
        record.status = status;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            self.complete(&mut record, NO_RESPONSE);
            let answered = Answered {
                record,
                notes: self.notes.clone(),
                started: self.started,
                worker: self.worker.clone(),
            };
            answered.write(Outcome::Unanswered);
        }
    }
}

impl Answered {
    /// Counts the request and writes its line.
    fn write(mut self, outcome: Outcome) {
        let record = &mut self.record;
        record.micros = self.started.elapsed().as_micros() as u64;
        record.outcome = outcome;
        record.resumes = self.notes.resumes.get();
        self.worker
            .metrics
            .request_done(record.route, record.status, record.bytes);
        if log::log_enabled!(target: ACCESS_TARGET, log::Level::Info) {
            record.with_log_record(|line| log::logger().log(line));
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts what it yields and writes the access record when dropped.
    pub struct LoggedBody<B> {
        #[pin]
        body: B,
        size: BodySize,
        answered: Option<Answered>,
        // How the body ended, once it has.
        ended: Option<Outcome>,
    }

    impl<B> PinnedDrop for LoggedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(mut answered) = this.answered.take() {
                answered.record.bytes += answered.notes.delivered_bytes();
                let outcome = match *this.ended {
                    Some(outcome) => outcome,
                    // actix-web does not poll a body it knows to be empty, nor a HEAD answer's.
                    None if answered.record.method == Method::HEAD => Outcome::Complete,
                    None => match *this.size {
                        BodySize::None | BodySize::Sized(0) => Outcome::Complete,
                        BodySize::Sized(len) if answered.record.bytes >= len => Outcome::Complete,
                        _ => Outcome::Aborted,
                    },
                };
                answered.write(outcome);
            }
        }
    }
}

impl<B: MessageBody> MessageBody for LoggedBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(answered) = this.answered.as_mut() {
                    answered.record.bytes += chunk.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => {
                let client_left = this
                    .answered
                    .as_ref()
                    .is_some_and(|a| a.notes.client_left());
                *this.ended = Some(if client_left {
                    Outcome::Aborted
                } else {
                    Outcome::Failed
                });
            }
            Poll::Ready(None) => {
                this.ended.get_or_insert(Outcome::Complete);
            }
            Poll::Pending => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogFormat;

    fn record() -> AccessRecord {
        AccessRecord {
            request_id: RequestId::fixed(0xab),
            client: Some("192.0.2.1".parse().unwrap()),
            method: Method::GET,
            target: "/v2/library/alpine/blobs/sha256:abc".parse().unwrap(),
            version: "HTTP/1.1",
            status: 200,
            route: "registry",
            bytes: 1024,
            micros: 12_346,
            outcome: Outcome::Complete,
            resumes: 0,
            registry: Some("docker.io"),
            upstream: Some("blob CDN"),
            redirects: 1,
        }
    }

    /// The record's line in `format`, after `[time LEVEL target] ` in text.
    fn line(record: &AccessRecord, format: LogFormat) -> String {
        let mut out = Vec::new();
        record.with_log_record(|r| {
            crate::logging::format::write_record(&mut out, format, &"T", r).unwrap()
        });
        let line = String::from_utf8(out).unwrap();
        match format {
            LogFormat::Text => line
                .strip_prefix("[T INFO  hubferry::access] ")
                .unwrap()
                .trim_end()
                .to_owned(),
            LogFormat::Json => line,
        }
    }

    #[test]
    fn text_line_says_everything() {
        assert_eq!(
            line(&record(), LogFormat::Text),
            r#"192.0.2.1 "GET /v2/library/alpine/blobs/sha256:abc HTTP/1.1" 200 1024 12.346ms request_id=00000000000000ab route=registry outcome=complete resumes=0 registry=docker.io upstream=blob_CDN redirects=1"#
        );
    }

    #[test]
    fn text_line_pads_and_handles_every_peer() {
        let mut r = record();
        r.micros = 5;
        r.bytes = 0;
        r.client = Some("2001:db8::1".parse().unwrap());
        r.upstream = None;
        r.registry = None;
        r.outcome = Outcome::Unanswered;
        r.status = NO_RESPONSE;
        assert_eq!(
            line(&r, LogFormat::Text),
            r#"2001:db8::1 "GET /v2/library/alpine/blobs/sha256:abc HTTP/1.1" 499 0 0.005ms request_id=00000000000000ab route=registry outcome=unanswered resumes=0 registry=- upstream=- redirects=1"#
        );
        r.micros = 1_234_050;
        r.client = None;
        assert!(line(&r, LogFormat::Text).starts_with(r#"- "GET "#));
        assert!(line(&r, LogFormat::Text).contains(" 1234.050ms "));
    }

    #[test]
    fn json_line_is_one_object() {
        let mut r = record();
        r.resumes = 2;
        r.outcome = Outcome::Failed;
        r.target = "/v2/x/manifests/1?ns=ghcr.io".parse().unwrap();
        let value: serde_json::Value = serde_json::from_str(&line(&r, LogFormat::Json)).unwrap();
        assert_eq!(value["type"], "access");
        assert_eq!(value["target"], ACCESS_TARGET);
        assert_eq!(value["client"], "192.0.2.1");
        assert_eq!(value["path"], "/v2/x/manifests/1?ns=ghcr.io");
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes"], 1024);
        assert_eq!(value["registry"], "docker.io");
        assert_eq!(value["upstream"], "blob CDN");
        assert_eq!(value["redirects"], 1);
        assert_eq!(value["resumes"], 2);
        assert_eq!(value["outcome"], "failed");
        assert_eq!(value["route"], "registry");
        assert_eq!(value["duration_ms"], 12.346);
        assert_eq!(value["request_id"], "00000000000000ab");
    }

    #[test]
    fn routes_are_named_by_pattern() {
        assert_eq!(route_label(Some("/v2/_catalog"), "/v2/_catalog"), "catalog");
        assert_eq!(
            route_label(None, "/v2/library/alpine/manifests/latest"),
            "registry"
        );
        assert_eq!(route_label(None, "/v2"), "registry");
        assert_eq!(route_label(Some("/token"), "/token"), "token");
        assert_eq!(
            route_label(Some("/token/{upstream}/{realm}"), "/token/ghcr.io/0123"),
            "registry_token"
        );
        assert_eq!(
            route_label(Some("/token/{upstream}"), "/token/quay.io"),
            "registry_token"
        );
        assert_eq!(route_label(Some("/v1/search"), "/v1/search"), "search");
        assert_eq!(route_label(None, "/v2foo"), "other");
        assert_eq!(route_label(None, "/"), "other");
    }
}

#[cfg(test)]
mod request_id_tests {
    use super::*;
    use actix_web::{body::to_bytes, test::TestRequest};

    #[actix_rt::test]
    async fn an_error_answer_gets_the_request_id() {
        let res = TestRequest::default()
            .to_srv_request()
            .error_response(ProxyError::CatalogUnsupported);
        assert!(res.response().error().is_some());
        let res = with_request_id(res, RequestId::fixed(7));
        assert_eq!(
            res.headers().get("x-request-id").unwrap(),
            "0000000000000007"
        );
        let body = to_bytes(res.into_body()).await.ok().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["errors"][0]["detail"]["request_id"],
            "0000000000000007"
        );
    }
}
