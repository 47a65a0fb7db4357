//! Transparent resume of broken downloads. The long-haul link to Docker Hub's CDN is why people
//! run a mirror, and a multi-GB layer that breaks at 90 % should not start again from zero. When
//! an upstream body stops before its length (reset, early EOF, idle timeout), we ask the
//! registry again for the same blob — a fresh redirect, since signed CDN URLs expire — with
//! `Range: bytes=<next>-<end>`, check that the answer is exactly that part of the same
//! representation, and go on with the same client response. If that cannot be done, the
//! client's connection is aborted: never a short body that looks complete.

use std::{
    cell::Cell,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use actix_web::http::{
    header::{self, HeaderMap, HeaderValue},
    StatusCode,
};
use bytes::Bytes;
use futures_util::{future::LocalBoxFuture, FutureExt, Stream};

use awc::ClientResponse;

use crate::{
    error::{ProxyError, RegistryName, UpstreamName},
    metrics::{Metrics, StreamInFlight},
    stream::idle::IdleGuard,
};

/// How broken downloads are resumed.
#[derive(Debug, Clone, Copy)]
pub struct ResumePolicy {
    /// Tries in a row without progress; 0: resume is off.
    pub attempts: u32,
    /// Wait before the first try, doubled per further try in a row.
    pub backoff: Duration,
}

/// Longest wait between two tries, however many failed in a row.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Whether a request path names a blob by digest (`/v2/<name>/blobs/<algorithm>:<hex>`): its
/// bytes can never change, so asking again for the rest is always asking for the same thing.
/// Manifests by tag can move between two requests and are small: they are not resumed.
pub fn is_blob_by_digest(path: &str) -> bool {
    let mut segments = path.rsplit('/');
    let (Some(digest), Some(kind)) = (segments.next(), segments.next()) else {
        return false;
    };
    kind == "blobs"
        && path.starts_with("/v2/")
        && digest
            .split_once(':')
            .is_some_and(|(alg, hex)| !alg.is_empty() && !hex.is_empty())
}

/// Where a response's body sits in the whole representation: bytes `start..=end` of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
    pub total: Option<u64>,
}

/// `Content-Range: bytes <start>-<end>/<total or *>`.
pub fn parse_content_range(value: &str) -> Option<Span> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.trim().split_once('-')?;
    let start = start.trim().parse::<u64>().ok()?;
    let end = end.trim().parse::<u64>().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    if end < start || total.is_some_and(|t| end >= t) {
        return None;
    }
    Some(Span { start, end, total })
}

/// The span a response carries, when it can be resumed: a 200 with a length (the whole thing)
/// or a 206 with a single, consistent `Content-Range`.
pub fn span_of(status: StatusCode, headers: &HeaderMap) -> Option<Span> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let length = text(header::CONTENT_LENGTH)?.trim().parse::<u64>().ok()?;
    if length == 0 {
        return None;
    }
    match status {
        StatusCode::OK => Some(Span {
            start: 0,
            end: length - 1,
            total: Some(length),
        }),
        StatusCode::PARTIAL_CONTENT => {
            let span = parse_content_range(text(header::CONTENT_RANGE)?)?;
            (span.end - span.start + 1 == length).then_some(span)
        }
        _ => None,
    }
}

/// What identifies the representation the first answer came from. A resumed part must come
/// from the same one, or the client would get a splice of two different files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validator {
    /// Strong entity tags only: a weak one does not promise identical bytes.
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
    digest: Option<HeaderValue>,
}

impl Validator {
    pub fn of(headers: &HeaderMap) -> Validator {
        Validator {
            etag: headers
                .get(header::ETAG)
                .filter(|v| !v.as_bytes().starts_with(b"W/"))
                .cloned(),
            last_modified: headers.get(header::LAST_MODIFIED).cloned(),
            digest: headers.get("docker-content-digest").cloned(),
        }
    }

    /// Why `headers` (of a resumed part) do not come from the same representation, if so.
    fn differs(&self, headers: &HeaderMap) -> Option<String> {
        let then_now = |name: &str, then: &Option<HeaderValue>| match then {
            Some(then) if headers.get(name) != Some(then) => Some(format!(
                "{name} changed from {then:?} to {:?}",
                headers.get(name)
            )),
            _ => None,
        };
        then_now("etag", &self.etag)
            .or_else(|| then_now("docker-content-digest", &self.digest))
            .or_else(|| then_now("last-modified", &self.last_modified))
    }
}

/// The headers that ask for bytes `next..=end` of the representation `validator` names, from
/// the first request's: `If-Range` makes a changed representation answer 200 (refused below)
/// instead of a 206 of the wrong bytes. The client's own `If-Range` was already settled by the
/// first answer.
pub fn range_headers(first: &HeaderMap, next: u64, end: u64, validator: &Validator) -> HeaderMap {
    let mut headers = first.clone();
    let range = HeaderValue::from_str(&format!("bytes={next}-{end}")).expect("digits are ASCII");
    headers.insert(header::RANGE, range);
    headers.remove(header::IF_RANGE);
    if let Some(tag) = validator.etag.as_ref().or(validator.last_modified.as_ref()) {
        headers.insert(header::IF_RANGE, tag.clone());
    }
    headers
}

/// Why a resumed answer cannot continue the stream, and whether trying again could help.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The upstream is having trouble (5xx, 429): another try later may work.
    Retry(String),
    /// The answer is final (200 instead of 206, another range, a changed representation,
    /// credentials no longer accepted): the download cannot be completed.
    Fatal(String),
}

/// Checks that a resumed answer is exactly bytes `next..=span.end` of the same representation.
pub fn check_resumed(
    status: StatusCode,
    headers: &HeaderMap,
    next: u64,
    span: &Span,
    validator: &Validator,
) -> Result<(), Refusal> {
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Refusal::Retry(format!("upstream answered {status}")));
    }
    if status != StatusCode::PARTIAL_CONTENT {
        return Err(Refusal::Fatal(format!(
            "upstream answered {status} instead of 206 to a range request"
        )));
    }
    let got = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range);
    let expected = Span {
        start: next,
        end: span.end,
        total: span.total,
    };
    match got {
        Some(got)
            if got.start == expected.start
                && got.end == expected.end
                && (got.total.is_none()
                    || expected.total.is_none()
                    || got.total == expected.total) => {}
        _ => {
            return Err(Refusal::Fatal(format!(
                "upstream sent Content-Range {:?} for bytes {next}-{}",
                headers.get(header::CONTENT_RANGE),
                span.end
            )))
        }
    }
    match validator.differs(headers) {
        Some(change) => Err(Refusal::Fatal(change)),
        None => Ok(()),
    }
}

/// The wait before try number `tries_in_a_row` (1-based).
fn backoff(first: Duration, tries_in_a_row: u32) -> Duration {
    first
        .saturating_mul(1 << tries_in_a_row.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// Asks the upstream again, with the given headers (the first request's, with the range from
/// [`range_headers`]), through whatever redirects it answers with.
pub type Refetch =
    Box<dyn Fn(HeaderMap) -> LocalBoxFuture<'static, Result<ClientResponse, ProxyError>>>;

/// What a download needs to ask again. The upstream side builds it (`upstream::redirect::
/// resumer`): this module only knows that it can ask.
pub struct Resumer {
    pub refetch: Refetch,
    /// The first request's headers, as sent to the registry (before any redirect).
    pub first_headers: HeaderMap,
    /// The first request's URL as logs show it.
    pub shown_url: String,
    pub upstream: UpstreamName,
    pub registry: RegistryName,
    pub policy: ResumePolicy,
    /// `timeouts.body_idle`, for each resumed body.
    pub body_idle: Duration,
    pub metrics: Arc<Metrics>,
    /// The request's count of resumes, for its access line.
    pub resumed: Rc<Cell<u32>>,
}

/// A resumable download: the span the first answer carried and how to ask for the rest.
pub struct Resume {
    resumer: Resumer,
    span: Span,
    validator: Validator,
}

impl Resume {
    /// `None` when the first answer cannot be resumed (no length, multipart ranges ...).
    pub fn of(resumer: Resumer, status: StatusCode, headers: &HeaderMap) -> Option<Resume> {
        if resumer.policy.attempts == 0 {
            return None;
        }
        Some(Resume {
            span: span_of(status, headers)?,
            validator: Validator::of(headers),
            resumer,
        })
    }
}

type Guarded = Pin<Box<IdleGuard<ClientResponse>>>;

enum State {
    Streaming(Guarded),
    /// Broken before this stream took over (a spliced body's upstream): try again first.
    Broken(Option<std::io::Error>),
    Asking(LocalBoxFuture<'static, Result<ClientResponse, ProxyError>>),
    Done,
}

/// The body the client gets for a download: the upstream body, and when it breaks and the
/// download is resumable, the rest of it from fresh requests, as one stream.
pub struct Download {
    state: State,
    resume: Option<Resume>,
    /// Bytes handed to the client so far.
    sent: u64,
    /// `sent` when the last try began: a try that brings bytes resets the count below.
    sent_at_last_try: u64,
    tries_in_a_row: u32,
    _in_flight: StreamInFlight,
}

impl Download {
    pub fn new(
        body: IdleGuard<ClientResponse>,
        resume: Option<Resume>,
        in_flight: StreamInFlight,
    ) -> Self {
        Download {
            state: State::Streaming(Box::pin(body)),
            resume,
            sent: 0,
            sent_at_last_try: 0,
            tries_in_a_row: 0,
            _in_flight: in_flight,
        }
    }

    /// A download whose first `sent` bytes reached the client some other way (`stream::splice`)
    /// before its upstream broke with `failure`: the rest is asked for again as after any break.
    pub fn broken_after(
        sent: u64,
        failure: std::io::Error,
        resume: Option<Resume>,
        in_flight: StreamInFlight,
    ) -> Self {
        Download {
            state: State::Broken(Some(failure)),
            resume,
            sent,
            sent_at_last_try: 0,
            tries_in_a_row: 0,
            _in_flight: in_flight,
        }
    }

    /// Starts the next try after a break, or says why there is none.
    fn try_again(&mut self, cause: &str) -> Result<(), String> {
        let Some(resume) = &self.resume else {
            return Err(cause.to_owned());
        };
        if self.sent > self.sent_at_last_try {
            self.tries_in_a_row = 0;
        }
        self.sent_at_last_try = self.sent;
        let policy = resume.resumer.policy;
        if self.tries_in_a_row >= policy.attempts {
            return Err(format!(
                "{cause}; gave up after {} tries in a row without progress",
                self.tries_in_a_row
            ));
        }
        self.tries_in_a_row += 1;
        let next = resume.span.start + self.sent;
        let wait = backoff(policy.backoff, self.tries_in_a_row);
        log::warn!(
            "resuming {} at byte {next} of {}-{} in {wait:?} (try {} of {}): {cause}",
            resume.resumer.shown_url,
            resume.span.start,
            resume.span.end,
            self.tries_in_a_row,
            policy.attempts
        );
        let headers = range_headers(
            &resume.resumer.first_headers,
            next,
            resume.span.end,
            &resume.validator,
        );
        let asking = (resume.resumer.refetch)(headers);
        self.state = State::Asking(
            async move {
                actix_rt::time::sleep(wait).await;
                asking.await
            }
            .boxed_local(),
        );
        Ok(())
    }

    /// Takes a resumed answer on as the stream, or says why it cannot be.
    fn take_answer(&mut self, response: ClientResponse) -> Result<(), Refusal> {
        let resume = self
            .resume
            .as_ref()
            .expect("only resumable downloads ask again");
        let next = resume.span.start + self.sent;
        check_resumed(
            response.status(),
            response.headers(),
            next,
            &resume.span,
            &resume.validator,
        )?;
        let mut body = IdleGuard::new(
            response,
            resume.resumer.body_idle,
            (resume.resumer.upstream, resume.resumer.registry),
            "resumed response body",
        );
        body.expected = Some(resume.span.end - next + 1);
        body.metrics = Some(resume.resumer.metrics.clone());
        resume.resumer.metrics.download_resume("resumed");
        resume.resumer.resumed.set(resume.resumer.resumed.get() + 1);
        self.state = State::Streaming(Box::pin(body));
        Ok(())
    }

    fn give_up(&mut self, reason: String) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.state = State::Done;
        if let Some(resume) = &self.resume {
            log::error!(
                "download of {} aborted after {} bytes: {reason}",
                resume.resumer.shown_url,
                self.sent
            );
            resume.resumer.metrics.download_resume("gave_up");
        }
        Poll::Ready(Some(Err(std::io::Error::other(reason))))
    }
}

impl Stream for Download {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let broken = match &mut this.state {
                State::Streaming(body) => match body.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        this.sent += chunk.len() as u64;
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    Poll::Ready(Some(Err(broken))) => broken,
                    Poll::Ready(None) => {
                        this.state = State::Done;
                        return Poll::Ready(None);
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Asking(answer) => {
                    match answer.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(response)) => match this.take_answer(response) {
                            Ok(()) => {}
                            Err(Refusal::Fatal(reason)) => return this.give_up(reason),
                            Err(Refusal::Retry(reason)) => {
                                if let Err(reason) = this.try_again(&reason) {
                                    return this.give_up(reason);
                                }
                            }
                        },
                        Poll::Ready(Err(err)) => {
                            if let Err(reason) = this.try_again(&err.to_string()) {
                                return this.give_up(reason);
                            }
                        }
                    }
                    continue;
                }
                State::Broken(broken) => match broken.take() {
                    Some(broken) => broken,
                    None => return Poll::Ready(None),
                },
                State::Done => return Poll::Ready(None),
            };
            if this.resume.is_none() {
                this.state = State::Done;
                return Poll::Ready(Some(Err(broken)));
            }
            if let Err(reason) = this.try_again(&broken.to_string()) {
                return this.give_up(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::header_map as headers;

    #[test]
    fn only_blobs_by_digest_are_resumed() {
        assert!(is_blob_by_digest("/v2/library/nginx/blobs/sha256:abc"));
        assert!(is_blob_by_digest("/v2/a/b/c/blobs/sha512:0f"));
        assert!(!is_blob_by_digest("/v2/library/nginx/manifests/latest"));
        assert!(!is_blob_by_digest("/v2/library/nginx/manifests/sha256:abc"));
        assert!(!is_blob_by_digest("/v2/library/nginx/blobs/uploads/1234"));
        assert!(!is_blob_by_digest("/v2/library/nginx/blobs/sha256:"));
        assert!(!is_blob_by_digest("/v2/library/nginx/blobs/"));
        assert!(!is_blob_by_digest("/other/blobs/sha256:abc"));
        assert!(!is_blob_by_digest(""));
    }

    #[test]
    fn content_ranges_parse_strictly() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some(Span {
                start: 100,
                end: 199,
                total: Some(1000)
            })
        );
        assert_eq!(
            parse_content_range("bytes 0-0/*"),
            Some(Span {
                start: 0,
                end: 0,
                total: None
            })
        );
        for bad in [
            "bytes 200-100/1000",
            "bytes 0-1000/1000",
            "bytes */1000",
            "items 0-1/2",
            "bytes 0-1",
            "bytes -1-2/3",
            "",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn spans_come_from_whole_and_partial_answers() {
        assert_eq!(
            span_of(StatusCode::OK, &headers(&[("content-length", "10")])),
            Some(Span {
                start: 0,
                end: 9,
                total: Some(10)
            })
        );
        assert_eq!(
            span_of(
                StatusCode::PARTIAL_CONTENT,
                &headers(&[("content-length", "5"), ("content-range", "bytes 5-9/10")])
            ),
            Some(Span {
                start: 5,
                end: 9,
                total: Some(10)
            })
        );
        // A length that disagrees with the range, no length, an empty body, a multipart 206.
        for (status, h) in [
            (
                StatusCode::PARTIAL_CONTENT,
                headers(&[("content-length", "4"), ("content-range", "bytes 5-9/10")]),
            ),
            (StatusCode::OK, headers(&[])),
            (StatusCode::OK, headers(&[("content-length", "0")])),
            (
                StatusCode::PARTIAL_CONTENT,
                headers(&[
                    ("content-length", "300"),
                    ("content-type", "multipart/byteranges; boundary=x"),
                ]),
            ),
            (StatusCode::NOT_FOUND, headers(&[("content-length", "10")])),
        ] {
            assert_eq!(span_of(status, &h), None, "{status} {h:?}");
        }
    }

    fn first() -> HeaderMap {
        headers(&[
            ("authorization", "Bearer t"),
            ("range", "bytes=0-"),
            ("if-range", "\"client\""),
        ])
    }

    #[test]
    fn ranged_requests_ask_for_the_rest_of_the_same_thing() {
        let validator = Validator::of(&headers(&[
            ("etag", "\"abc\""),
            ("last-modified", "Tue, 01 Dec 2026 00:00:00 GMT"),
        ]));
        let out = range_headers(&first(), 500, 999, &validator);
        assert_eq!(out.get("range").unwrap(), "bytes=500-999");
        assert_eq!(out.get("if-range").unwrap(), "\"abc\"");
        assert_eq!(out.get("authorization").unwrap(), "Bearer t");

        let weak = Validator::of(&headers(&[("etag", "W/\"abc\"")]));
        let out = range_headers(&first(), 1, 2, &weak);
        assert!(out.get("if-range").is_none());
        let dated = Validator::of(&headers(&[("last-modified", "x")]));
        assert_eq!(
            range_headers(&first(), 1, 2, &dated)
                .get("if-range")
                .unwrap(),
            "x"
        );
    }

    #[test]
    fn resumed_answers_must_be_the_asked_part_of_the_same_thing() {
        let span = Span {
            start: 0,
            end: 999,
            total: Some(1000),
        };
        let validator = Validator::of(&headers(&[("etag", "\"abc\"")]));
        let good = headers(&[("content-range", "bytes 500-999/1000"), ("etag", "\"abc\"")]);
        assert_eq!(
            check_resumed(StatusCode::PARTIAL_CONTENT, &good, 500, &span, &validator),
            Ok(())
        );
        let fatal = |status, h: &HeaderMap| {
            matches!(
                check_resumed(status, h, 500, &span, &validator),
                Err(Refusal::Fatal(_))
            )
        };
        assert!(fatal(StatusCode::OK, &good));
        assert!(fatal(StatusCode::UNAUTHORIZED, &good));
        assert!(fatal(
            StatusCode::PARTIAL_CONTENT,
            &headers(&[("content-range", "bytes 400-999/1000"), ("etag", "\"abc\"")])
        ));
        assert!(fatal(
            StatusCode::PARTIAL_CONTENT,
            &headers(&[("content-range", "bytes 500-999/2000"), ("etag", "\"abc\"")])
        ));
        assert!(fatal(
            StatusCode::PARTIAL_CONTENT,
            &headers(&[("content-range", "bytes 500-999/1000"), ("etag", "\"new\"")])
        ));
        assert!(fatal(
            StatusCode::PARTIAL_CONTENT,
            &headers(&[("content-range", "bytes 500-999/1000")])
        ));
        assert!(matches!(
            check_resumed(StatusCode::BAD_GATEWAY, &good, 500, &span, &validator),
            Err(Refusal::Retry(_))
        ));
        assert!(matches!(
            check_resumed(StatusCode::TOO_MANY_REQUESTS, &good, 500, &span, &validator),
            Err(Refusal::Retry(_))
        ));
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let first = Duration::from_millis(500);
        assert_eq!(backoff(first, 1), Duration::from_millis(500));
        assert_eq!(backoff(first, 2), Duration::from_secs(1));
        assert_eq!(backoff(first, 3), Duration::from_secs(2));
        assert_eq!(backoff(first, 10), MAX_BACKOFF);
        assert_eq!(backoff(first, u32::MAX), MAX_BACKOFF);
    }
}
