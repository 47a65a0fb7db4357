//! The idle limit between two chunks of an upstream body, and the check that a body with a
//! known length is complete.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use actix_rt::time::{sleep, Sleep};
use bytes::Bytes;
use futures_util::{Future, Stream};

use crate::{
    error::{RegistryName, UpstreamName},
    metrics::Metrics,
};

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
    use actix_web::error::PayloadError;
    use futures_util::StreamExt;

    /// What a guard expecting `expected` bytes yields for these chunks.
    async fn guarded(chunks: &[&'static [u8]], expected: u64) -> Vec<std::io::Result<Bytes>> {
        let chunks = chunks
            .iter()
            .map(|c| Ok::<_, PayloadError>(Bytes::from_static(c)));
        let mut guard = IdleGuard::new(
            futures_util::stream::iter(chunks),
            Duration::from_secs(5),
            ("registry", "docker.io"),
            "test",
        );
        guard.expected = Some(expected);
        guard.collect().await
    }

    #[actix_rt::test]
    async fn idle_guard_passes_chunks_and_checks_length() {
        let got = guarded(&[b"abc", b"de"], 5).await;
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(Result::is_ok));

        let got = guarded(&[b"abc"], 5).await;
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
}
