//! The one error type of the request path, and the one place that decides which status and
//! registry-style JSON body (`{"errors":[{"code","message","detail"}]}`) each error becomes.

use std::{any::Any, cell::Cell, fmt, rc::Rc, time::Duration};

use actix_web::{
    body::BoxBody, error::PayloadError, http::StatusCode, HttpResponse, ResponseError,
};
use derive_more::{Display, Error};
use serde_json::json;

use crate::held_body::HeldBody;

/// Why a request target is refused (`proxy::target` finds these).
#[derive(Debug, Clone, PartialEq, Eq, Display)]
pub enum Rejection {
    /// The target cannot be read one way only: bad percent-encoding, an encoded slash, a dot
    /// segment, a backslash, a control character (NUL, CR, LF...), or a query that is not
    /// well formed.
    #[display("ambiguous request target: {_0}")]
    Ambiguous(String),
    #[display("invalid repository name: {_0}")]
    Name(String),
    /// A manifest reference that is neither a tag nor a digest.
    #[display("invalid manifest reference: {_0}")]
    Reference(String),
    #[display("invalid digest: {_0}")]
    Digest(String),
    #[display("invalid upload session: {_0}")]
    Upload(String),
    /// Well formed, but not a registry API endpoint hubferry carries.
    #[display("not a registry API endpoint: {_0}")]
    Unsupported(String),
}

/// A request's id: in the access line, in the log line of its error, and in its error answer
/// (`detail.request_id`, and `X-Request-Id`), so a user's report leads to the log. 64 bits, the
/// first 32 random per worker and the rest counted, written as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(u64);

impl RequestId {
    /// The next id of this worker.
    pub fn next() -> RequestId {
        thread_local! {
            static NEXT: Cell<u64> = Cell::new({
                let mut seed = [0u8; 4];
                // Without OS randomness ids are still unique per worker, only guessable.
                let _ = getrandom::getrandom(&mut seed);
                u64::from(u32::from_be_bytes(seed)) << 32
            });
        }
        NEXT.with(|next| {
            let id = next.get();
            next.set(id.wrapping_add(1));
            RequestId(id)
        })
    }
}

#[cfg(test)]
impl RequestId {
    pub fn fixed(id: u64) -> RequestId {
        RequestId(id)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Whose doing an error is: it decides how loudly it is logged, and what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client's request was refused: its target, its credentials, its limits, its body.
    Client,
    /// An upstream failed: unreachable, slow, a bad redirect, a refused token request.
    Registry,
    /// The mirror itself is at a bound it keeps (password checks, downloads at once).
    Internal,
}

impl ErrorSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorSource::Client => "client",
            ErrorSource::Registry => "upstream",
            ErrorSource::Internal => "internal",
        }
    }
}

/// Which upstream host an error came from; named in every message so an operator reading the
/// log knows where to look.
pub type UpstreamName = &'static str;

/// A registry's name where a `&'static str` is what fits: a metric label, the access log's
/// `Copy` trace of a request (see `Registry::label`).
pub type RegistryName = &'static str;

/// The name of Docker Hub's entry: configured by the `[upstream]` section (and its flags), the
/// only one `/token` without a suffix and `/v1/search` serve. (Here, beside [`RegistryName`],
/// so that the metrics can tell Docker Hub's budget without the registry table.)
pub const DOCKER_HUB: RegistryName = "docker.io";

#[derive(Debug, Display, Error)]
pub enum ProxyError {
    /// The upstream could not be reached at all (refused, reset, DNS, TLS).
    #[display("cannot reach upstream {upstream} ({url}): {reason}")]
    Unreachable {
        upstream: UpstreamName,
        url: String,
        #[error(not(source))]
        reason: String,
    },
    /// The upstream did not connect or answer in time.
    #[display("upstream {upstream} ({url}) did not {phase} within {limit:?}")]
    Timeout {
        upstream: UpstreamName,
        url: String,
        phase: &'static str,
        limit: std::time::Duration,
    },
    /// An egress proxy failed on the way to the upstream: down, refused the destination, or
    /// asked for other credentials. `failure` names the proxy (never its password).
    #[display("{failure} (for upstream {upstream}, {url})")]
    EgressProxy {
        upstream: UpstreamName,
        url: String,
        failure: String,
    },
    /// A redirect chain that does not end: a loop or more hops than allowed.
    #[display("upstream {upstream}: {reason}")]
    BadRedirect {
        upstream: UpstreamName,
        #[error(not(source))]
        reason: String,
    },
    /// The request cannot be forwarded as it is (a path or query that is not a valid URL).
    #[display("bad request: {_0}")]
    BadRequest(#[error(not(source))] String),
    /// Docker Hub does not serve the catalog, so neither do we.
    #[display("the catalog is not available through this mirror")]
    CatalogUnsupported,
    /// `?ns=` (or `/token/<name>`) names no configured upstream, or a token realm no upstream
    /// named.
    #[display("{_0}")]
    UnknownUpstream(#[error(not(source))] String),
    /// A path or query refused before anything was forwarded (see `proxy::target`).
    #[display("{_0}")]
    Rejected(#[error(not(source))] Rejection),
    /// An image the operator's lists do not serve (see `policy::images`); the message is theirs.
    #[display("{message} ({image})")]
    ImageDenied { image: String, message: String },
    /// The client's address is not allowed to use this mirror (`access.allow`/`access.deny`).
    #[display("access from {client} is not allowed by this mirror")]
    Denied { client: std::net::IpAddr },
    /// The client is over one of its limits (see `crate::middleware::access_control`); `retry_after` in seconds.
    #[display("too many requests from {client}: {limit}; retry in {retry_after}s")]
    TooManyRequests {
        client: std::net::IpAddr,
        limit: String,
        retry_after: u64,
    },
    /// The client asked to switch protocols or open a tunnel, which hubferry never does (see
    /// `upgrade`).
    #[display("this mirror switches no protocol and opens no tunnel: {asked} is not served")]
    Switch { asked: &'static str },
    /// Managed auth: the client has no valid token of ours (or, at `/token`, wrong
    /// credentials); `challenge` tells it where to get one.
    #[display("{reason}")]
    Unauthorized { challenge: String, reason: String },
    /// Managed auth serves pulls only: hubferry pushes nothing with its own account.
    #[display("this mirror serves pulls only: {method} is not supported")]
    PullOnly { method: String },
    /// Work the mirror bounds is at its bound (password checks; blob downloads,
    /// `limits.max_streams`); `retry_after` in seconds.
    #[display("too many {what} at once; retry in {retry_after}s")]
    Overloaded { what: String, retry_after: u64 },
    /// Managed auth: an upstream's token issuer refused hubferry's own request for a token.
    /// Never names the credentials, only whose they are.
    #[display("upstream {upstream} refused hubferry's token request ({status}); check its configured credentials")]
    UpstreamToken { upstream: String, status: u16 },
    /// The client's request body failed before its end (`what`: "upload", "token form"): the
    /// client's doing, so a 4xx, never an upstream error.
    #[display("{what} from the client {fault} after {received} bytes")]
    ClientBody {
        what: &'static str,
        received: u64,
        fault: BodyFault,
        unread: UnreadBody,
    },
}

/// The client's payload, kept until the error answer is written. actix-http closes the
/// connection after an answer only while the request's payload is still held and unfinished;
/// once dropped, it reads a chunked one to its end first to keep the connection, and from a
/// client that stalled that end never comes.
#[derive(Clone, Default)]
pub struct UnreadBody(Option<Rc<dyn Any>>);

impl UnreadBody {
    pub fn holding(payload: Rc<dyn Any>) -> UnreadBody {
        UnreadBody(Some(payload))
    }
}

impl std::fmt::Debug for UnreadBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "UnreadBody(held)"
        } else {
            "UnreadBody(none)"
        })
    }
}

/// How a client's request body failed.
#[derive(Debug, Display, Clone, PartialEq, Eq)]
pub enum BodyFault {
    /// Nothing came for this long while more was announced.
    #[display("stalled for {_0:?}")]
    Stalled(Duration),
    /// A body read whole (a small form) was not all there within this limit.
    #[display("did not arrive whole within {_0:?}")]
    Late(Duration),
    /// Its framing was invalid (a bad chunk size line): nothing after it can be read. Says how.
    #[display("was malformed ({_0})")]
    Malformed(String),
    /// The client closed or reset the connection (or its HTTP/2 stream) before the end.
    #[display("ended early ({_0})")]
    Cut(String),
}

impl BodyFault {
    /// What a failure of the client's payload stream means. actix-http reports a connection
    /// that ends before the body does as `Incomplete`; the patched actix-http (see
    /// `patches/actix-http`) reports chunked framing it cannot read as an I/O error of kind
    /// `InvalidInput`; other framing it cannot read is `EncodingCorrupted`.
    pub fn of(err: &PayloadError) -> BodyFault {
        match err {
            PayloadError::EncodingCorrupted
            | PayloadError::Overflow
            | PayloadError::UnknownLength => BodyFault::Malformed(err.to_string()),
            PayloadError::Io(io) if io.kind() == std::io::ErrorKind::InvalidInput => {
                BodyFault::Malformed(io.to_string())
            }
            PayloadError::Incomplete(None) => BodyFault::Cut("the connection closed".into()),
            other => BodyFault::Cut(other.to_string()),
        }
    }
}

impl From<Rejection> for ProxyError {
    fn from(rejection: Rejection) -> Self {
        ProxyError::Rejected(rejection)
    }
}

impl ProxyError {
    /// The registry error code clients print (distribution spec error codes).
    fn code(&self) -> &'static str {
        match self {
            ProxyError::Unreachable { .. }
            | ProxyError::Timeout { .. }
            | ProxyError::EgressProxy { .. }
            | ProxyError::BadRedirect { .. } => "UNAVAILABLE",
            ProxyError::BadRequest(_) => "NAME_INVALID",
            ProxyError::CatalogUnsupported => "UNSUPPORTED",
            ProxyError::ImageDenied { .. } => "DENIED",
            ProxyError::UnknownUpstream(_) => "NAME_UNKNOWN",
            ProxyError::Rejected(rejection) => match rejection {
                // The spec has no code for a target that reads two ways; UNSUPPORTED covers "an
                // invalid set of parameters".
                Rejection::Ambiguous(_) | Rejection::Unsupported(_) => "UNSUPPORTED",
                Rejection::Name(_) => "NAME_INVALID",
                // The OCI spec has no TAG_INVALID (distribution's means something else).
                Rejection::Reference(_) => "MANIFEST_INVALID",
                Rejection::Digest(_) => "DIGEST_INVALID",
                Rejection::Upload(_) => "BLOB_UPLOAD_INVALID",
            },
            ProxyError::Denied { .. } => "DENIED",
            ProxyError::TooManyRequests { .. } => "TOOMANYREQUESTS",
            ProxyError::Switch { .. } => "UNSUPPORTED",
            ProxyError::Unauthorized { .. } => "UNAUTHORIZED",
            // distribution's own pull-through cache answers writes this way (405 UNSUPPORTED):
            // the operation does not exist here, whoever asks; DENIED would read as "log in
            // with more rights", which cannot help.
            ProxyError::PullOnly { .. } => "UNSUPPORTED",
            ProxyError::UpstreamToken { .. } | ProxyError::Overloaded { .. } => "UNAVAILABLE",
            // The body did not arrive as announced (its length, or its chunk sizes).
            ProxyError::ClientBody { .. } => "SIZE_INVALID",
        }
    }
}

impl ProxyError {
    /// Whose doing this error is.
    pub fn error_source(&self) -> ErrorSource {
        match self {
            ProxyError::Unreachable { .. }
            | ProxyError::Timeout { .. }
            | ProxyError::EgressProxy { .. }
            | ProxyError::BadRedirect { .. }
            | ProxyError::UpstreamToken { .. } => ErrorSource::Registry,
            ProxyError::Overloaded { .. } => ErrorSource::Internal,
            ProxyError::BadRequest(_)
            | ProxyError::CatalogUnsupported
            | ProxyError::UnknownUpstream(_)
            | ProxyError::Rejected(_)
            | ProxyError::ImageDenied { .. }
            | ProxyError::Denied { .. }
            | ProxyError::TooManyRequests { .. }
            | ProxyError::Switch { .. }
            | ProxyError::Unauthorized { .. }
            | ProxyError::PullOnly { .. }
            | ProxyError::ClientBody { .. } => ErrorSource::Client,
        }
    }

    /// What the client is told: short, and without what only the operator should read. Upstream
    /// URLs, causes and addresses go to the log (`Display`), never into an answer: a URL may be
    /// a signed capability, a cause names hosts and addresses of the mirror's network.
    pub fn client_message(&self) -> String {
        match self {
            ProxyError::Unreachable { upstream, .. } => {
                format!("the mirror cannot reach upstream {upstream}")
            }
            ProxyError::Timeout {
                upstream, phase, ..
            } => format!("upstream {upstream} did not {phase} in time"),
            ProxyError::BadRedirect { upstream, .. } => {
                format!("upstream {upstream} sent a redirect the mirror does not follow")
            }
            // Which proxy, and why, is in the log: its address is of the mirror's network.
            ProxyError::EgressProxy { upstream, .. } => {
                format!("the mirror's egress proxy failed on the way to upstream {upstream}")
            }
            ProxyError::Denied { .. } => "access is not allowed by this mirror".to_owned(),
            ProxyError::TooManyRequests {
                limit, retry_after, ..
            } => format!("too many requests: {limit}; retry in {retry_after}s"),
            other => other.to_string(),
        }
    }

    /// Writes the log line of this error: everything, for the operator, with the request's id.
    /// Client errors are routine (`info`); the others say something is wrong (`warn`).
    pub fn log(&self, request: RequestId) {
        let source = self.error_source();
        let level = match source {
            ErrorSource::Client => log::Level::Info,
            ErrorSource::Registry | ErrorSource::Internal => log::Level::Warn,
        };
        log::log!(
            level,
            request_id:% = request,
            source = source.as_str(),
            code = self.code();
            "{self}"
        );
    }

    /// The body of this error's answer: a registry error (`{"errors":[{"code","message",
    /// "detail"}]}`) with the client's message and, once the access log gave the request one,
    /// its id in `detail`.
    pub fn body(&self, request: Option<RequestId>) -> BoxBody {
        let detail = match request {
            Some(id) => json!({ "request_id": id.to_string() }),
            None => serde_json::Value::Null,
        };
        let json = json!({
            "errors": [{ "code": self.code(), "message": self.client_message(), "detail": detail }]
        });
        let body = BoxBody::new(json.to_string());
        match self {
            ProxyError::ClientBody { unread, .. } if unread.0.is_some() => {
                BoxBody::new(HeldBody::new(body, unread.clone()))
            }
            _ => body,
        }
    }

    /// The kind of upstream failure, for the `upstream_errors` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Unreachable { .. } => "connect",
            ProxyError::Timeout { .. } => "timeout",
            ProxyError::EgressProxy { .. } => "proxy",
            ProxyError::BadRedirect { .. } => "redirect",
            ProxyError::BadRequest(_)
            | ProxyError::UnknownUpstream(_)
            | ProxyError::CatalogUnsupported
            | ProxyError::Rejected(_)
            | ProxyError::ImageDenied { .. } => "request",
            ProxyError::Denied { .. } | ProxyError::TooManyRequests { .. } => "request",
            ProxyError::Switch { .. } => "request",
            ProxyError::Unauthorized { .. } | ProxyError::PullOnly { .. } => "request",
            ProxyError::UpstreamToken { .. } => "auth",
            ProxyError::Overloaded { .. } | ProxyError::ClientBody { .. } => "request",
        }
    }
}

impl ResponseError for ProxyError {
    fn status_code(&self) -> StatusCode {
        match self {
            ProxyError::Unreachable { .. }
            | ProxyError::EgressProxy { .. }
            | ProxyError::BadRedirect { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::CatalogUnsupported
            | ProxyError::UnknownUpstream(_)
            | ProxyError::Rejected(Rejection::Unsupported(_)) => StatusCode::NOT_FOUND,
            ProxyError::Rejected(_) => StatusCode::BAD_REQUEST,
            ProxyError::ImageDenied { .. } => StatusCode::FORBIDDEN,
            ProxyError::Denied { .. } => StatusCode::FORBIDDEN,
            ProxyError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Switch { .. } => StatusCode::BAD_REQUEST,
            ProxyError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::PullOnly { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UpstreamToken { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ClientBody {
                fault: BodyFault::Stalled(_) | BodyFault::Late(_),
                ..
            } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ClientBody { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// The answer without a request id; the access log gives it one and logs the error
    /// (`middleware::access_log`), which every route's answer passes through.
    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut res = HttpResponse::build(status);
        res.content_type(actix_web::http::header::ContentType::json());
        if let ProxyError::ClientBody { .. } = self {
            // The rest of the body is unread, so the connection cannot carry another request;
            // RFC 9110 §15.5.9 asks a 408 to say it closes.
            res.force_close();
        }
        if let ProxyError::TooManyRequests { retry_after, .. }
        | ProxyError::Overloaded { retry_after, .. } = self
        {
            res.insert_header((
                actix_web::http::header::RETRY_AFTER,
                retry_after.to_string(),
            ));
        }
        if let ProxyError::Unauthorized { challenge, .. } = self {
            res.insert_header((
                actix_web::http::header::WWW_AUTHENTICATE,
                challenge.as_str(),
            ));
        }
        res.body(self.body(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    #[actix_rt::test]
    async fn errors_become_registry_json() {
        let err = ProxyError::Unreachable {
            upstream: "registry",
            url: "https://registry-1.docker.io/v2/".into(),
            reason: "connection refused".into(),
        };
        let res = err.error_response();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "application/json"
        );
        let body = to_bytes(res.into_body()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
        assert_eq!(body["errors"][0]["detail"], serde_json::Value::Null);
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("registry"), "{message}");
    }

    /// Upstream URLs, causes and addresses are the operator's to read: the log line (`Display`)
    /// has them, the client's answer has the error's code, a short message and the request id.
    #[actix_rt::test]
    async fn what_only_the_log_gets_stays_out_of_answers() {
        let id = RequestId::fixed(0x1234);
        for err in [
            ProxyError::Unreachable {
                upstream: "blob CDN",
                url: "http://10.1.2.3:9000/blob".into(),
                reason: "connection refused by 10.1.2.3:9000".into(),
            },
            ProxyError::Timeout {
                upstream: "registry",
                url: "http://10.1.2.3:9000/v2/".into(),
                phase: "send response headers",
                limit: Duration::from_secs(30),
            },
            ProxyError::BadRedirect {
                upstream: "registry",
                reason: "redirect to http://10.1.2.3:9000/x refused".into(),
            },
            ProxyError::Denied {
                client: "10.1.2.3".parse().unwrap(),
            },
            ProxyError::TooManyRequests {
                client: "10.1.2.3".parse().unwrap(),
                limit: "60 manifest requests per minute".into(),
                retry_after: 3,
            },
        ] {
            assert!(
                err.to_string().contains("10.1.2.3"),
                "the log line has it: {err}"
            );
            let body = to_bytes(err.body(Some(id))).await.unwrap();
            let text = String::from_utf8(body.to_vec()).unwrap();
            assert!(!text.contains("10.1.2.3"), "{text}");
            let body: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                body["errors"][0]["detail"]["request_id"],
                "0000000000001234"
            );
            assert_eq!(body["errors"][0]["code"], err.code());
        }
    }

    #[test]
    fn errors_know_whose_doing_they_are() {
        let upstream = ProxyError::Unreachable {
            upstream: "registry",
            url: String::new(),
            reason: String::new(),
        };
        assert_eq!(upstream.error_source(), ErrorSource::Registry);
        let busy = ProxyError::Overloaded {
            what: "downloads".into(),
            retry_after: 1,
        };
        assert_eq!(busy.error_source(), ErrorSource::Internal);
        assert_eq!(
            ProxyError::from(Rejection::Name("X".into())).error_source(),
            ErrorSource::Client
        );
    }

    #[test]
    fn request_ids_differ_and_read_as_hex() {
        let (a, b) = (RequestId::next(), RequestId::next());
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 16);
        assert!(text.bytes().all(|c| c.is_ascii_hexdigit()), "{text}");
    }

    #[test]
    fn statuses() {
        let timeout = ProxyError::Timeout {
            upstream: "auth",
            url: "x".into(),
            phase: "answer",
            limit: std::time::Duration::from_secs(1),
        };
        assert_eq!(timeout.status_code(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            ProxyError::CatalogUnsupported.status_code(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(ProxyError::CatalogUnsupported.code(), "UNSUPPORTED");
    }

    #[test]
    fn rejections_are_client_errors_with_spec_codes() {
        for (rejection, status, code) in [
            (Rejection::Ambiguous("x".into()), 400, "UNSUPPORTED"),
            (Rejection::Name("x".into()), 400, "NAME_INVALID"),
            (Rejection::Reference("x".into()), 400, "MANIFEST_INVALID"),
            (Rejection::Digest("x".into()), 400, "DIGEST_INVALID"),
            (Rejection::Upload("x".into()), 400, "BLOB_UPLOAD_INVALID"),
            (Rejection::Unsupported("x".into()), 404, "UNSUPPORTED"),
        ] {
            let err = ProxyError::from(rejection);
            assert_eq!(err.status_code().as_u16(), status, "{err}");
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[actix_rt::test]
    async fn managed_auth_refusals() {
        let err = ProxyError::Unauthorized {
            challenge: r#"Bearer realm="http://m/token",service="hubferry""#.into(),
            reason: "a token is required".into(),
        };
        let res = err.error_response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            res.headers().get("www-authenticate").unwrap(),
            r#"Bearer realm="http://m/token",service="hubferry""#
        );
        let body = to_bytes(res.into_body()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
        let push = ProxyError::PullOnly {
            method: "PUT".into(),
        };
        assert_eq!(push.status_code(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(push.code(), "UNSUPPORTED");
        let upstream = ProxyError::UpstreamToken {
            upstream: "docker.io".into(),
            status: 401,
        };
        assert_eq!(upstream.status_code(), StatusCode::BAD_GATEWAY);
    }

    #[actix_rt::test]
    async fn a_failed_client_body_is_a_client_error_that_closes_the_connection() {
        let stalled = ProxyError::ClientBody {
            what: "upload",
            received: 6,
            fault: BodyFault::Stalled(std::time::Duration::from_secs(2)),
            unread: UnreadBody::default(),
        };
        assert_eq!(
            stalled.to_string(),
            "upload from the client stalled for 2s after 6 bytes"
        );
        let res = stalled.error_response();
        assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            res.head().connection_type(),
            actix_web::http::ConnectionType::Close
        );
        let body = to_bytes(res.into_body()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["errors"][0]["code"], "SIZE_INVALID");
        for (fault, status) in [
            (BodyFault::Late(std::time::Duration::from_secs(2)), 408),
            (BodyFault::Malformed("bad chunk".into()), 400),
            (BodyFault::Cut("reset".into()), 400),
        ] {
            let err = ProxyError::ClientBody {
                what: "token form",
                received: 0,
                fault,
                unread: UnreadBody::default(),
            };
            assert_eq!(err.status_code().as_u16(), status, "{err}");
        }
    }

    #[actix_rt::test]
    async fn a_client_error_holds_the_unread_body_until_its_answer_is_written() {
        let payload: Rc<dyn Any> = Rc::new(());
        let err = ProxyError::ClientBody {
            what: "upload",
            received: 0,
            fault: BodyFault::Stalled(std::time::Duration::from_secs(1)),
            unread: UnreadBody::holding(payload.clone()),
        };
        let res = err.error_response();
        drop(err);
        assert_eq!(Rc::strong_count(&payload), 2, "the answer holds it");
        let body = to_bytes(res.into_body()).await.unwrap();
        assert!(body.starts_with(b"{\"errors\""));
        assert_eq!(Rc::strong_count(&payload), 1, "written, and let go");
    }

    #[test]
    fn payload_errors_say_whose_fault_a_body_failure_is() {
        assert!(matches!(
            BodyFault::of(&PayloadError::EncodingCorrupted),
            BodyFault::Malformed(_)
        ));
        assert!(matches!(
            BodyFault::of(&PayloadError::Incomplete(None)),
            BodyFault::Cut(_)
        ));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(matches!(
            BodyFault::of(&PayloadError::Io(reset)),
            BodyFault::Cut(_)
        ));
        let bad_chunk = std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad chunk size");
        assert_eq!(
            BodyFault::of(&PayloadError::Io(bad_chunk)),
            BodyFault::Malformed("bad chunk size".into())
        );
    }

    #[actix_rt::test]
    async fn refused_clients_get_403_denied_or_429_with_retry_after() {
        let client: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let res = ProxyError::Denied { client }.error_response();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let body = to_bytes(res.into_body()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["errors"][0]["code"], "DENIED");
        let err = ProxyError::TooManyRequests {
            client,
            limit: "10 manifest requests per minute".into(),
            retry_after: 7,
        };
        let res = err.error_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers().get("retry-after").unwrap(), "7");
        let body = to_bytes(res.into_body()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    }
}
