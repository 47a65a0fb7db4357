//! A blob body moved from a plain-HTTP upstream connection to a plain-HTTP/1.1 client with
//! `splice(2)`, through a pipe: the bytes never enter hubferry's memory. Read into user space
//! and written back out, every byte costs the kernel two copies, and those copies were 95 % of
//! hubferry's CPU time on that path (`docs/benchmarks.md`, "Where the time goes").
//!
//! Only where both ends are bare TCP: an upstream URL with `http://` (a CDN, a registry on the
//! same network, through a tunnelling proxy or not) and a client on the plain listener. TLS on
//! either side, HTTP/2 clients and chunked bodies take the usual path (`stream::relay`).
//!
//! How the pieces fit:
//! - the upstream socket: `upstream::socket` notes which connection awc sent the request on;
//!   the body first yields what awc had already read past the response head, then holds awc's
//!   reads and splices from the socket itself;
//! - the client socket: the connection's `WriteThrough` (actix-http, patched) has the
//!   dispatcher poll this body only once everything before it is written, and counts what the
//!   body wrote itself against the Content-Length;
//! - a break: what reached the pipe goes on to the client, then the rest is asked for again as
//!   any broken download is (`stream::resume`), on the usual path.

use std::{
    cell::Cell,
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd},
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use actix_http::h1::WriteThrough;
use actix_rt::time::{sleep, Instant, Sleep};
use actix_web::{
    body::{BodySize, MessageBody},
    http::{header, header::HeaderMap, StatusCode},
};
use awc::ClientResponse;
use bytes::Bytes;
use futures_util::{Future, Stream};
use rustix::pipe::{
    fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags,
};
use tokio::io::{unix::AsyncFd, Interest};

use crate::{
    error::{RegistryName, UpstreamName},
    metrics::{Metrics, StreamInFlight},
    stream::{
        chunking::ClientChunks,
        resume::{Download, Resume},
    },
};

/// Bodies shorter than this take the usual path: setting up a splice costs a handful of system
/// calls, which a manifest or a small blob does not win back.
pub const MIN_LENGTH: u64 = 512 * 1024;

/// The pipe between the sockets, to start with. 256 KiB moved 1.7–2.0 GB/s on loopback, where
/// the default 64 KiB moved 1.4–1.8 (a relay that did nothing else). While a client is slow,
/// this much at most waits in the kernel's pipe, on top of the upstream socket's receive
/// buffer: the pipe is refilled only once it is empty.
const PIPE_SIZE: usize = 256 * 1024;

/// The pipe once the client has taken a whole full pipe in one write: it can take more, and a
/// larger pipe means fewer turns between the sockets, each moving more. By hand, on a host
/// whose TCP paces (BBR), one client got 4–7 % more with 1 MiB than with 256 KiB
/// (`docs/benchmarks.md`). A client whose socket has little room (a slow one with a small
/// window) keeps the smaller pipe; a slow one with large socket buffers may grow it before it
/// shows it is slow, as the kernel's own buffer tuning would: 768 KiB more in the kernel at
/// most, for that download. The kernel refuses more than `/proc/sys/fs/pipe-max-size` (1 MiB
/// by default) to an unprivileged process.
const FAST_PIPE_SIZE: usize = 1024 * 1024;

/// Whether the pipe should grow: it was full (`capacity` bytes in it) and the client took all
/// of it in one write. Full counts bytes, not the pipe's slots (one per buffer spliced in):
/// where the upstream's bytes arrive in small buffers, the slots can run out first, and the
/// pipe then keeps its first size.
fn client_keeps_up(capacity: usize, in_pipe: usize, taken: usize) -> bool {
    capacity < FAST_PIPE_SIZE && in_pipe == capacity && taken == in_pipe
}

/// Bytes moved in one poll before the body yields the worker to its other connections.
const POLL_BUDGET: usize = 4 * 1024 * 1024;

/// The socket of the plain-HTTP upstream connection a response came on, as
/// `upstream::socket` notes it.
#[derive(Debug, Clone)]
pub struct UpstreamFd {
    pub fd: RawFd,
    /// While set, awc reads nothing more from the socket: the body splices from it instead.
    pub hold_reads: Rc<Cell<bool>>,
}

/// A client connection on the plain listener, as `server::client_socket` records it.
#[derive(Debug, Clone)]
pub struct ClientSocket {
    pub fd: RawFd,
    pub write_through: Rc<WriteThrough>,
}

/// What a spliced body tells the access log: the bytes it wrote to the client itself, and
/// whether the client went away (rather than the upstream failing).
#[derive(Debug, Default)]
pub struct Delivered {
    pub bytes: Cell<u64>,
    pub client_left: Cell<bool>,
}

/// What the relay needs to splice to a client.
#[derive(Clone)]
pub struct SpliceTo {
    pub client: ClientSocket,
    pub delivered: Rc<Delivered>,
}

/// What the body does when the upstream breaks: its names for the logs and metrics, and how to
/// resume.
pub struct OnBreak {
    pub names: (UpstreamName, RegistryName),
    pub metrics: Arc<Metrics>,
    pub resume: Option<Resume>,
    pub idle: Duration,
}

enum Phase {
    /// Yielding what awc read past the head.
    Draining,
    Splicing,
    /// After a break: the rest on the usual path.
    Resuming(Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>>>>),
    Done,
}

/// The response body; see the module's comment.
pub struct Spliced {
    phase: Phase,
    /// awc's response: its body's first bytes, then only the connection (closed when dropped).
    response: Option<ClientResponse>,
    hold_reads: Rc<Cell<bool>>,
    upstream: AsyncFd<OwnedFd>,
    client: AsyncFd<OwnedFd>,
    pipe: (OwnedFd, OwnedFd),
    /// What the pipe holds at most, as the kernel set it.
    pipe_capacity: usize,
    in_pipe: usize,
    length: u64,
    /// Bytes taken from the upstream (yielded or into the pipe), and given to the client.
    read: u64,
    sent: u64,
    polled_before: bool,
    /// The upstream's failure, once it broke: told after the pipe is emptied.
    broken: Option<io::Error>,
    idle: Pin<Box<Sleep>>,
    last_read: Instant,
    on_break: OnBreak,
    in_flight: Option<StreamInFlight>,
    write_through: Rc<WriteThrough>,
    delivered: Rc<Delivered>,
}

/// Whether an upstream answer to a GET can have its body spliced, and its length: a 200 or 206
/// with a Content-Length of at least [`MIN_LENGTH`] and no Transfer-Encoding (awc would decode
/// the chunks; the raw bytes must be the body itself).
pub fn spliceable_length(status: StatusCode, headers: &HeaderMap) -> Option<u64> {
    if !matches!(status, StatusCode::OK | StatusCode::PARTIAL_CONTENT)
        || headers.contains_key(header::TRANSFER_ENCODING)
    {
        return None;
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH);
    let length = lengths.next()?.to_str().ok()?.trim().parse::<u64>().ok()?;
    // Two lengths are the upstream's mistake; the usual path deals with it.
    (lengths.next().is_none() && length >= MIN_LENGTH).then_some(length)
}

/// A new descriptor for the socket `fd`, registered for `interest`. The socket stays owned by
/// awc or by the dispatcher; this one is the body's own, so it stays valid while the body runs.
fn watched(fd: RawFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `fd` is the socket of a connection that is open while this runs: the client's,
    // whose dispatcher runs the handler calling this, or the upstream's, whose response the
    // caller holds.
    let own = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
    // SAFETY: an `OwnedFd` stays open, and the same descriptor, until it is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(own, interest) }?)
}

/// The descriptors a spliced body needs, made before anything is given up to it: when they
/// cannot be (out of descriptors, say), the body goes the usual way.
pub struct Prepared {
    upstream: AsyncFd<OwnedFd>,
    hold_reads: Rc<Cell<bool>>,
    client: AsyncFd<OwnedFd>,
    pipe: (OwnedFd, OwnedFd),
    pipe_capacity: usize,
    to: SpliceTo,
}

impl Prepared {
    /// For the response that came on `upstream`, held by the caller meanwhile.
    pub fn new(upstream: UpstreamFd, to: SpliceTo) -> io::Result<Prepared> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        // A smaller pipe only costs more system calls; the kernel's default (64 KiB) stays
        // when it refuses.
        let pipe_capacity = fcntl_setpipe_size(&write, PIPE_SIZE)
            .or_else(|_| fcntl_getpipe_size(&write))
            .unwrap_or(0);
        Ok(Prepared {
            upstream: watched(upstream.fd, Interest::READABLE)?,
            hold_reads: upstream.hold_reads,
            client: watched(to.client.fd, Interest::WRITABLE)?,
            pipe: (read, write),
            pipe_capacity,
            to,
        })
    }
}

impl Spliced {
    /// The body for `response`, whose body is `length` bytes, on the descriptors `prepared`.
    pub fn new(
        prepared: Prepared,
        response: ClientResponse,
        length: u64,
        on_break: OnBreak,
        in_flight: StreamInFlight,
    ) -> Spliced {
        Spliced {
            phase: Phase::Draining,
            response: Some(response),
            hold_reads: prepared.hold_reads,
            upstream: prepared.upstream,
            client: prepared.client,
            pipe: prepared.pipe,
            pipe_capacity: prepared.pipe_capacity,
            in_pipe: 0,
            length,
            read: 0,
            sent: 0,
            polled_before: false,
            broken: None,
            idle: Box::pin(sleep(on_break.idle)),
            last_read: Instant::now(),
            on_break,
            in_flight: Some(in_flight),
            write_through: prepared.to.client.write_through,
            delivered: prepared.to.delivered,
        }
    }

    /// The upstream failed: said and counted as `IdleGuard` says and counts it; the pipe is
    /// emptied to the client before the rest is asked for.
    fn break_off(&mut self, why: Break) {
        let (upstream, registry) = self.on_break.names;
        let read = self.read;
        let failure = match why {
            Break::Failed(err) => {
                format!("response body from {upstream} failed after {read} bytes: {err}")
            }
            Break::Ended => format!(
                "response body from {upstream} ended after {read} of {} bytes",
                self.length
            ),
            Break::Idle => format!(
                "response body from {upstream} was idle for {:?} after {read} bytes",
                self.on_break.idle
            ),
        };
        log::warn!("{failure}");
        self.on_break
            .metrics
            .upstream_error(upstream, registry, "body");
        self.broken = Some(io::Error::other(failure));
    }

    /// The rest of the body on the usual path, from where the client's bytes end.
    fn resume_after_break(&mut self, failure: io::Error) {
        self.hold_reads.set(false);
        self.response = None;
        let in_flight = self.in_flight.take().expect("resumed once");
        let download =
            Download::broken_after(self.sent, failure, self.on_break.resume.take(), in_flight);
        self.phase = Phase::Resuming(Box::pin(ClientChunks::new(download)));
    }

    /// What awc already read: yielded as it comes, until awc would have to read the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Step {
        let response = self.response.as_mut().expect("held while draining");
        match Pin::new(response).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.read += chunk.len() as u64;
                self.sent += chunk.len() as u64;
                self.last_read = Instant::now();
                return Step::Out(Poll::Ready(Some(Ok(chunk))));
            }
            Poll::Ready(Some(Err(err))) => self.break_off(Break::Failed(err.to_string())),
            Poll::Ready(None) => {
                // Read whole with the head; awc has put the connection back in its pool.
                self.hold_reads.set(false);
                if self.read < self.length {
                    self.break_off(Break::Ended);
                }
            }
            Poll::Pending => {
                self.phase = Phase::Splicing;
                return Step::Again;
            }
        }
        self.phase = Phase::Done;
        Step::Again
    }

    /// Moves bytes from the pipe to the client; `Ready(Err)` when the client is gone.
    fn poll_to_client(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = std::task::ready!(self.client.poll_write_ready(cx))?;
            let pipe = self.pipe.0.as_fd();
            let len = self.in_pipe;
            let moved = ready.try_io(|client| {
                splice(
                    pipe,
                    None,
                    client,
                    None,
                    len,
                    SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
                )
                .map_err(io::Error::from)
            });
            if let Ok(result) = moved {
                return Poll::Ready(result);
            }
        }
    }

    /// Moves bytes from the upstream socket into the pipe; `Ready(Ok(0))` at an early end.
    fn poll_from_upstream(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Break>> {
        let pipe = self.pipe.1.as_fd();
        let len = (self.length - self.read).min(1024 * 1024) as usize;
        loop {
            let mut ready = match self.upstream.poll_read_ready(cx) {
                Poll::Ready(Ok(ready)) => ready,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(Break::Failed(err.to_string()))),
                Poll::Pending => return self.poll_idle(cx),
            };
            let moved = ready.try_io(|upstream| {
                splice(
                    upstream,
                    None,
                    pipe,
                    None,
                    len,
                    SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
                )
                .map_err(io::Error::from)
            });
            if let Ok(result) = moved {
                return Poll::Ready(result.map_err(|err| Break::Failed(err.to_string())));
            }
        }
    }

    /// Waiting for the upstream: `Ready(Err)` once it has sent nothing for the idle limit. The
    /// timer is not re-armed per read; when it fires early, it is moved to the real deadline.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Break>> {
        if self.idle.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let deadline = self.last_read + self.on_break.idle;
        if deadline > Instant::now() {
            self.idle.as_mut().reset(deadline);
            if self.idle.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(Err(Break::Idle))
    }

    /// To [`FAST_PIPE_SIZE`], once: where the kernel refuses, the pipe stays as it is.
    fn grow_pipe(&mut self) {
        self.pipe_capacity = fcntl_setpipe_size(&self.pipe.1, FAST_PIPE_SIZE).unwrap_or(usize::MAX);
    }

    fn poll_splice(&mut self, cx: &mut Context<'_>) -> Step {
        let mut moved = 0;
        while moved < POLL_BUDGET {
            if self.in_pipe > 0 {
                let Poll::Ready(result) = self.poll_to_client(cx) else {
                    return Step::Out(Poll::Pending);
                };
                match result {
                    Ok(n) => {
                        if client_keeps_up(self.pipe_capacity, self.in_pipe, n) {
                            self.grow_pipe();
                        }
                        self.in_pipe -= n;
                        self.sent += n as u64;
                        moved += n;
                        self.write_through.wrote(n as u64);
                        let delivered = &self.delivered.bytes;
                        delivered.set(delivered.get() + n as u64);
                    }
                    Err(err) => {
                        self.delivered.client_left.set(true);
                        self.broken = None;
                        self.phase = Phase::Done;
                        return Step::Out(Poll::Ready(Some(Err(err))));
                    }
                }
            } else if self.broken.is_some() || self.read == self.length {
                // Nothing more from this connection: the end, or the rest from a resume.
                self.phase = Phase::Done;
                return Step::Again;
            } else {
                let Poll::Ready(result) = self.poll_from_upstream(cx) else {
                    return Step::Out(Poll::Pending);
                };
                match result {
                    Ok(0) => self.break_off(Break::Ended),
                    Ok(n) => {
                        self.in_pipe += n;
                        self.read += n as u64;
                        moved += n;
                        self.last_read = Instant::now();
                    }
                    Err(why) => self.break_off(why),
                }
            }
        }
        // Other connections of this worker get their turn; this body is polled again next.
        cx.waker().wake_by_ref();
        Step::Out(Poll::Pending)
    }
}

/// How an upstream broke off.
enum Break {
    Failed(String),
    /// Before its length.
    Ended,
    /// Nothing for the idle limit.
    Idle,
}

/// What a phase of the body came to.
enum Step {
    Out(Poll<Option<io::Result<Bytes>>>),
    /// The phase changed: go on with the next one.
    Again,
}

impl MessageBody for Spliced {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.length)
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = &mut *self;
        // From the first poll on, the dispatcher polls this body only with nothing of its own
        // left to write, so what is spliced follows the head on the wire. The first poll itself
        // has no such promise: it never splices.
        let may_splice = this.polled_before;
        if !this.polled_before {
            this.polled_before = true;
            this.write_through.require_flushed();
            this.hold_reads.set(true);
        }
        loop {
            let step = match &mut this.phase {
                Phase::Draining => this.poll_drain(cx),
                Phase::Splicing if !may_splice => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Phase::Splicing => this.poll_splice(cx),
                Phase::Resuming(rest) => return rest.as_mut().poll_next(cx),
                Phase::Done => match this.broken.take() {
                    Some(failure) => {
                        this.resume_after_break(failure);
                        Step::Again
                    }
                    None => return Poll::Ready(None),
                },
            };
            if let Step::Out(polled) = step {
                return polled;
            }
        }
    }
}

impl Drop for Spliced {
    fn drop(&mut self) {
        self.on_break
            .metrics
            .body_spliced(self.delivered.bytes.get());
        // The connection is closed with the response unless awc already pooled it; either way
        // its reads must not stay held.
        self.hold_reads.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::header_map as headers;

    #[test]
    fn the_pipe_grows_only_for_a_client_that_took_a_full_pipe_at_once() {
        assert!(client_keeps_up(PIPE_SIZE, PIPE_SIZE, PIPE_SIZE));
        // A slow client takes what its socket has room for; a pipe not full says nothing.
        assert!(!client_keeps_up(PIPE_SIZE, PIPE_SIZE, 8 * 1024));
        assert!(!client_keeps_up(PIPE_SIZE, 4096, 4096));
        // Grown already, or refused by the kernel.
        assert!(!client_keeps_up(
            FAST_PIPE_SIZE,
            FAST_PIPE_SIZE,
            FAST_PIPE_SIZE
        ));
        assert!(!client_keeps_up(usize::MAX, PIPE_SIZE, PIPE_SIZE));
    }

    #[test]
    fn only_whole_or_partial_answers_with_one_large_length_are_spliced() {
        let big = (MIN_LENGTH * 4).to_string();
        let length = [("content-length", big.as_str())];
        assert_eq!(
            spliceable_length(StatusCode::OK, &headers(&length)),
            Some(MIN_LENGTH * 4)
        );
        assert_eq!(
            spliceable_length(StatusCode::PARTIAL_CONTENT, &headers(&length)),
            Some(MIN_LENGTH * 4)
        );
        // Bodies awc frames itself, or that are not a blob's bytes.
        let chunked = [
            ("content-length", big.as_str()),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(spliceable_length(StatusCode::OK, &headers(&chunked)), None);
        assert_eq!(
            spliceable_length(StatusCode::NOT_FOUND, &headers(&length)),
            None
        );
        assert_eq!(spliceable_length(StatusCode::OK, &headers(&[])), None);
        // Small bodies, and lengths that are not one number.
        let small = (MIN_LENGTH - 1).to_string();
        assert_eq!(
            spliceable_length(
                StatusCode::OK,
                &headers(&[("content-length", small.as_str())])
            ),
            None
        );
        let twice = [
            ("content-length", big.as_str()),
            ("content-length", big.as_str()),
        ];
        assert_eq!(spliceable_length(StatusCode::OK, &headers(&twice)), None);
        assert_eq!(
            spliceable_length(StatusCode::OK, &headers(&[("content-length", "lots")])),
            None
        );
    }
}
