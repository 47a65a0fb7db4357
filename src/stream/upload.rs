//! A client's request body on its way upstream (a push's blob or manifest, a token request
//! streamed through), and the deadlines of sending it. A body adds phases a bodiless request
//! does not have: the client must keep sending, and the upstream must keep taking what it was
//! given, each within `timeouts.body_idle` of the last move (an upload of many GB has no sensible
//! total limit); once the whole body is sent, the upstream's response headers must come within
//! `timeouts.response_headers`. A failure on the client's side (a stall, bad chunked framing,
//! the client leaving) is the client's doing: a 4xx, not an upstream error.
//!
//! The body stream only records whose move it is; one timer in [`UploadDeadline`] does the
//! timing, so a chunk costs a clock read and no timer update.

use std::{
    any::Any,
    cell::{Cell, RefCell},
    future::Future,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::Duration,
};

use actix_rt::time::{sleep, Instant, Sleep};
use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_util::Stream;

use crate::error::{BodyFault, ProxyError, UnreadBody, UpstreamName};

/// Whose move it is in sending the body, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// The body was not asked for yet: the upstream client is waiting for a pooled connection,
    /// connecting or sending the head. As for a bodiless request, `timeouts.response_headers`
    /// bounds the lot (`timeouts.connect` the connecting).
    NotAsked(Instant),
    /// The client's, to send the next chunk.
    Client(Instant),
    /// The upstream's, to take the chunk it was handed.
    Registry(Instant),
    /// The whole body is sent: the upstream's response headers are due.
    Sent(Instant),
    /// The client's body failed (see `Progress::fault`).
    Failed,
}

/// Shared by the body stream and its deadline. Both are polled by the one task sending the
/// request (awc runs on its worker's thread), so `Rc` and `Cell`s are enough.
#[derive(Debug)]
struct Progress {
    turn: Cell<Turn>,
    received: Cell<u64>,
    fault: RefCell<Option<BodyFault>>,
}

/// The two limits an upload runs under (the upstream's `timeouts.body_idle` and
/// `timeouts.response_headers`).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Longest wait for the client's next bytes.
    pub body_idle: Duration,
    /// Time the upstream has to answer once the whole body is sent.
    pub response_headers: Duration,
}

/// Wraps the client's payload as an upstream request body, and returns the deadline of sending
/// it. Race the two with `futures_util::future::select(send, deadline)`: it polls the send
/// first, so the deadline sees at once what that poll did to the body.
/// The deadline shares the payload, so that a client error can hold it (see `UnreadBody`).
pub fn watch<S>(
    payload: S,
    deadlines: Deadlines,
    upstream: UpstreamName,
    shown_url: String,
) -> (UploadBody<S>, UploadDeadline)
where
    S: Unpin + 'static,
{
    let progress = Rc::new(Progress {
        turn: Cell::new(Turn::NotAsked(Instant::now())),
        received: Cell::new(0),
        fault: RefCell::new(None),
    });
    let payload = Rc::new(RefCell::new(payload));
    let body = UploadBody {
        payload: payload.clone(),
        progress: progress.clone(),
    };
    let deadline = UploadDeadline {
        progress,
        payload,
        timer: Box::pin(sleep(deadlines.response_headers)),
        idle: deadlines.body_idle,
        headers: deadlines.response_headers,
        upstream,
        url: shown_url,
    };
    (body, deadline)
}

/// The client's payload, passed through as it comes, recording how far it got.
pub struct UploadBody<S> {
    payload: Rc<RefCell<S>>,
    progress: Rc<Progress>,
}

impl<S> Stream for UploadBody<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let progress = &*self.progress;
        // Only this stream borrows it; the deadline only holds it.
        let polled = Pin::new(&mut *self.payload.borrow_mut()).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                progress
                    .received
                    .set(progress.received.get() + chunk.len() as u64);
                progress.turn.set(Turn::Registry(Instant::now()));
            }
            Poll::Ready(Some(Err(err))) => {
                *progress.fault.borrow_mut() = Some(BodyFault::of(err));
                progress.turn.set(Turn::Failed);
            }
            Poll::Ready(None) => progress.turn.set(Turn::Sent(Instant::now())),
            // The client's turn starts when it is first asked, not at every spurious poll.
            Poll::Pending => {
                if !matches!(progress.turn.get(), Turn::Client(_)) {
                    progress.turn.set(Turn::Client(Instant::now()));
                }
            }
        }
        polled
    }
}

/// Resolves to the error to answer with when a phase of sending the body overruns, or as soon as
/// the client's body fails; pending for as long as each side keeps its deadline.
pub struct UploadDeadline {
    progress: Rc<Progress>,
    payload: Rc<dyn Any>,
    // Moved later only when it fires early (see `poll`), not at every chunk.
    timer: Pin<Box<Sleep>>,
    idle: Duration,
    headers: Duration,
    upstream: UpstreamName,
    url: String,
}

impl UploadDeadline {
    /// The client's failure, when its body is what broke the send.
    pub fn client_fault(&self) -> Option<ProxyError> {
        let fault = self.progress.fault.borrow().clone()?;
        Some(self.client_error(fault))
    }

    fn client_error(&self, fault: BodyFault) -> ProxyError {
        ProxyError::ClientBody {
            what: "upload",
            received: self.progress.received.get(),
            fault,
            unread: UnreadBody::holding(self.payload.clone()),
        }
    }

    fn upstream_timeout(&self, phase: &'static str, limit: Duration) -> ProxyError {
        ProxyError::Timeout {
            upstream: self.upstream,
            url: self.url.clone(),
            phase,
            limit,
        }
    }
}

impl Future for UploadDeadline {
    type Output = ProxyError;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ProxyError> {
        let due = match self.progress.turn.get() {
            Turn::Failed => {
                let fault = self.progress.fault.borrow().clone();
                let fault = fault.unwrap_or_else(|| BodyFault::Malformed("unreadable".into()));
                return Poll::Ready(self.client_error(fault));
            }
            Turn::Client(since) | Turn::Registry(since) => since + self.idle,
            Turn::NotAsked(since) | Turn::Sent(since) => since + self.headers,
        };
        loop {
            if due < self.timer.deadline() {
                self.timer.as_mut().reset(due);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if due <= Instant::now() {
                break;
            }
            // The body moved since the timer was set: wait out the rest.
            self.timer.as_mut().reset(due);
        }
        Poll::Ready(match self.progress.turn.get() {
            Turn::Client(_) => self.client_error(BodyFault::Stalled(self.idle)),
            Turn::NotAsked(_) => self.upstream_timeout("take the request", self.headers),
            Turn::Sent(_) => self.upstream_timeout("send response headers", self.headers),
            _ => self.upstream_timeout("take the request body", self.idle),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{
        future::{select, Either},
        StreamExt,
    };

    fn timeouts(idle_ms: u64, headers_ms: u64) -> Deadlines {
        Deadlines {
            response_headers: Duration::from_millis(headers_ms),
            body_idle: Duration::from_millis(idle_ms),
        }
    }

    fn url() -> String {
        "http://registry.test/v2/a/blobs/uploads/1".to_owned()
    }

    /// Reads `body` the way an upstream does: a chunk, then `taking` per chunk to take it.
    async fn upstream_reads<S>(mut body: Pin<&mut UploadBody<S>>, taking: Duration) -> u64
    where
        S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    {
        let mut taken = 0;
        while let Some(Ok(chunk)) = body.next().await {
            taken += chunk.len() as u64;
            actix_rt::time::sleep(taking).await;
        }
        taken
    }

    /// Races an upstream reading at `taking` per chunk against the deadline.
    async fn race<S>(payload: S, t: Deadlines, taking: Duration) -> Either<u64, ProxyError>
    where
        S: Stream<Item = Result<Bytes, PayloadError>> + Unpin + 'static,
    {
        let (body, deadline) = watch(payload, t, "registry", url());
        let body = std::pin::pin!(body);
        let reading = std::pin::pin!(upstream_reads(body, taking));
        match select(reading, deadline).await {
            Either::Left((taken, _)) => Either::Left(taken),
            Either::Right((err, _)) => Either::Right(err),
        }
    }

    type Chunks = Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>;

    fn chunks(n: usize, every: Duration) -> Chunks {
        Box::pin(futures_util::stream::unfold(0, move |i| async move {
            if i == n {
                return None;
            }
            actix_rt::time::sleep(every).await;
            Some((Ok(Bytes::from_static(b"chunk")), i + 1))
        }))
    }

    #[actix_rt::test]
    async fn a_steady_upload_runs_past_the_idle_limit() {
        // 10 chunks 30 ms apart against a 100 ms limit.
        let got = race(
            chunks(10, Duration::from_millis(30)),
            timeouts(100, 1000),
            Duration::ZERO,
        )
        .await;
        assert!(matches!(got, Either::Left(50)), "{got:?}");
    }

    #[actix_rt::test]
    async fn a_client_that_stops_sending_is_a_client_stall() {
        let stalls = chunks(1, Duration::ZERO).chain(futures_util::stream::pending());
        let got = race(stalls, timeouts(50, 1000), Duration::ZERO).await;
        match got {
            Either::Right(ProxyError::ClientBody {
                received: 5,
                fault: BodyFault::Stalled(_),
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[actix_rt::test]
    async fn an_upstream_that_stops_taking_the_body_times_out() {
        let got = race(
            chunks(3, Duration::ZERO),
            timeouts(50, 1000),
            Duration::from_secs(3600),
        )
        .await;
        match got {
            Either::Right(err @ ProxyError::Timeout { .. }) => {
                assert!(err.to_string().contains("take the request body"), "{err}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[actix_rt::test]
    async fn response_headers_are_due_once_the_body_is_sent() {
        let (body, deadline) = watch(chunks(2, Duration::ZERO), timeouts(1000, 50), "auth", url());
        let body = std::pin::pin!(body);
        // Sends the body, then waits for an answer that never comes.
        let silent = async move {
            upstream_reads(body, Duration::ZERO).await;
            std::future::pending::<()>().await
        };
        let err = match select(std::pin::pin!(silent), deadline).await {
            Either::Right((err, _)) => err,
            Either::Left(_) => unreachable!(),
        };
        assert!(err.to_string().contains("send response headers"), "{err}");
        assert!(err.to_string().contains("within 50ms"), "{err}");
    }

    #[actix_rt::test]
    async fn a_body_never_asked_for_times_out_like_a_bodiless_request() {
        let (_body, deadline) = watch(
            chunks(1, Duration::ZERO),
            timeouts(1000, 50),
            "registry",
            url(),
        );
        let err = deadline.await;
        assert!(
            err.to_string()
                .contains("did not take the request within 50ms"),
            "{err}"
        );
    }

    #[actix_rt::test]
    async fn a_broken_client_body_is_the_clients_fault() {
        let broken = chunks(1, Duration::ZERO).chain(futures_util::stream::iter([Err(
            PayloadError::EncodingCorrupted,
        )]));
        let (body, deadline) = watch(broken, timeouts(1000, 1000), "registry", url());
        let mut body = std::pin::pin!(body);
        while let Some(Ok(_)) = body.next().await {}
        match deadline.client_fault() {
            Some(ProxyError::ClientBody {
                received: 5,
                fault: BodyFault::Malformed(_),
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(deadline.await.to_string().contains("was malformed"));
    }
}
