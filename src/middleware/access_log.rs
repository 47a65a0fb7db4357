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
    body::{BodySize, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web, Error, HttpMessage, HttpRequest,
};
use bytes::Bytes;
use serde_json::json;

use crate::{config::LogFormat, error::UpstreamName, worker::Worker};

/// Which upstream answered a request and how many redirects were followed, for the access log
/// (the route fills it in as it forwards).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTrace {
    pub upstream: UpstreamName,
    pub redirects: u32,
}

/// Everything one access-log line says.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    pub peer: Option<IpAddr>,
    pub method: String,
    /// Path and query as the client sent them.
    pub target: String,
    pub version: &'static str,
    pub status: u16,
    pub route: &'static str,
    pub bytes: u64,
    pub micros: u64,
    pub upstream: Option<&'static str>,
    pub redirects: u32,
}

impl AccessRecord {
    /// `peer "METHOD target VERSION" status bytes 12.346ms upstream=name redirects=N`. Built by
    /// hand, not with `format!`: it runs once per request, and the formatting machinery for an
    /// IP address and a float costs more than the rest of the line.
    pub fn text(&self) -> String {
        let mut line = String::with_capacity(self.target.len() + 112);
        match self.peer {
            Some(IpAddr::V4(ip)) => {
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        line.push('.');
                    }
                    push_number(&mut line, u64::from(octet));
                }
            }
            Some(ip) => line.push_str(&ip.to_string()),
            None => line.push('-'),
        }
        line.push_str(" \"");
        line.push_str(&self.method);
        line.push(' ');
        line.push_str(&self.target);
        line.push(' ');
        line.push_str(self.version);
        line.push_str("\" ");
        push_number(&mut line, u64::from(self.status));
        line.push(' ');
        push_number(&mut line, self.bytes);
        line.push(' ');
        push_number(&mut line, self.micros / 1000);
        line.push('.');
        let fraction = self.micros % 1000;
        if fraction < 100 {
            line.push('0');
        }
        if fraction < 10 {
            line.push('0');
        }
        push_number(&mut line, fraction);
        line.push_str("ms upstream=");
        line.extend(
            self.upstream
                .unwrap_or("-")
                .chars()
                .map(|c| if c == ' ' { '_' } else { c }),
        );
        line.push_str(" redirects=");
        push_number(&mut line, u64::from(self.redirects));
        line
    }

    pub fn json(&self) -> String {
        json!({
            "type": "access",
            "peer": self.peer.map(|ip| ip.to_string()),
            "method": self.method,
            "path": self.target,
            "version": self.version,
            "status": self.status,
            "route": self.route,
            "bytes": self.bytes,
            "duration_ms": self.micros as f64 / 1000.0,
            "upstream": self.upstream,
            "redirects": self.redirects,
        })
        .to_string()
    }
}

fn push_number(line: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only.
    line.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
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
    let res = match next.call(req).await {
        Ok(res) => res,
        // actix-web answers an error after this middleware: log the status it will send (the
        // handlers answer their own errors, so this is only a middleware's).
        Err(err) => {
            let status = err.as_response_error().status_code().as_u16();
            if let Some((record, started, worker)) = pending.answered(status, None) {
                write(record, started, &worker);
            }
            return Err(err);
        }
    };
    let (record, started, worker) = pending
        .answered(res.status().as_u16(), Some(res.request()))
        .expect("a request is answered once");
    Ok(res.map_body(move |_, body| LoggedBody {
        body,
        record: Some(record),
        started,
        worker,
    }))
}

/// What the request filter and the routes learn about a request that its line reports, kept
/// (in the request's extensions) where the access log still reads it if the request is dropped.
#[derive(Debug, Default)]
pub struct Notes {
    client: Cell<Option<IpAddr>>,
    trace: Cell<Option<UpstreamTrace>>,
}

impl Notes {
    /// The client a trusted proxy forwarded for, when it is not the peer (see `guard`).
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
}

/// A request's record until its response exists; written with [`NO_RESPONSE`] if dropped first.
struct Pending {
    notes: Rc<Notes>,
    started: Instant,
    record: Option<AccessRecord>,
    worker: web::Data<Worker>,
}

impl Pending {
    fn new(req: &ServiceRequest) -> Pending {
        let worker = req
            .app_data::<web::Data<Worker>>()
            .expect("Worker state is registered on every App")
            .clone();
        let target = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.path().to_owned(), |pq| pq.as_str().to_owned());
        let notes = Rc::new(Notes::default());
        req.extensions_mut().insert(notes.clone());
        Pending {
            notes,
            started: Instant::now(),
            record: Some(AccessRecord {
                peer: req.peer_addr().map(|a| a.ip()),
                method: req.method().to_string(),
                target,
                version: version_text(req.version()),
                status: NO_RESPONSE,
                // Before routing: every route is known by its path too.
                route: route_label(Some(req.path()), req.path()),
                bytes: 0,
                micros: 0,
                upstream: None,
                redirects: 0,
            }),
            worker,
        }
    }

    /// The record completed with `status` (and the route `request`, the one the response
    /// carries, matched), and taken: nothing is written when `self` is dropped.
    fn answered(
        &mut self,
        status: u16,
        request: Option<&HttpRequest>,
    ) -> Option<(AccessRecord, Instant, web::Data<Worker>)> {
        let mut record = self.record.take()?;
        self.complete(&mut record, status);
        if let Some(request) = request {
            record.route = route_label(request.match_pattern().as_deref(), request.path());
        }
        Some((record, self.started, self.worker.clone()))
    }

    fn complete(&self, record: &mut AccessRecord, status: u16) {
        // Behind a trusted proxy, the client it forwarded for.
        if let Some(client) = self.notes.client.get() {
            record.peer = Some(client);
        }
        if let Some(trace) = self.notes.trace.get() {
            record.upstream = Some(trace.upstream);
            record.redirects = trace.redirects;
        }
        record.status = status;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            self.complete(&mut record, NO_RESPONSE);
            write(record, self.started, &self.worker);
        }
    }
}

/// Counts the request and writes its line.
fn write(mut record: AccessRecord, started: Instant, worker: &Worker) {
    record.micros = started.elapsed().as_micros() as u64;
    worker
        .metrics
        .request_done(record.route, record.status, record.bytes);
    let line = match worker.config.log_format {
        LogFormat::Text => record.text(),
        LogFormat::Json => record.json(),
    };
    log::info!(target: "hubferry::access", "{line}");
}

pin_project_lite::pin_project! {
    /// A response body that counts what it yields and writes the access record when dropped.
    pub struct LoggedBody<B> {
        #[pin]
        body: B,
        record: Option<AccessRecord>,
        started: Instant,
        worker: web::Data<Worker>,
    }

    impl<B> PinnedDrop for LoggedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(record) = this.record.take() {
                write(record, *this.started, this.worker);
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
        if let (Poll::Ready(Some(Ok(chunk))), Some(record)) = (&polled, this.record.as_mut()) {
            record.bytes += chunk.len() as u64;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            peer: Some("192.0.2.1".parse().unwrap()),
            method: "GET".into(),
            target: "/v2/library/alpine/blobs/sha256:abc".into(),
            version: "HTTP/1.1",
            status: 200,
            route: "registry",
            bytes: 1024,
            micros: 12_346,
            upstream: Some("blob CDN"),
            redirects: 1,
        }
    }

    #[test]
    fn text_line_says_everything() {
        assert_eq!(
            record().text(),
            r#"192.0.2.1 "GET /v2/library/alpine/blobs/sha256:abc HTTP/1.1" 200 1024 12.346ms upstream=blob_CDN redirects=1"#
        );
    }

    #[test]
    fn text_line_pads_and_handles_every_peer() {
        let mut r = record();
        r.micros = 5;
        r.bytes = 0;
        r.peer = Some("2001:db8::1".parse().unwrap());
        r.upstream = None;
        assert_eq!(
            r.text(),
            r#"2001:db8::1 "GET /v2/library/alpine/blobs/sha256:abc HTTP/1.1" 200 0 0.005ms upstream=- redirects=1"#
        );
        r.micros = 1_234_050;
        r.peer = None;
        assert!(r.text().starts_with(r#"- "GET "#));
        assert!(r.text().contains(" 1234.050ms "));
    }

    #[test]
    fn json_line_is_one_object() {
        let value: serde_json::Value = serde_json::from_str(&record().json()).unwrap();
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes"], 1024);
        assert_eq!(value["upstream"], "blob CDN");
        assert_eq!(value["redirects"], 1);
        assert_eq!(value["route"], "registry");
        assert_eq!(value["duration_ms"], 12.346);
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
