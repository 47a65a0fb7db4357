//! Gathers the chunks of a body relayed to an HTTP/1.1 client that has shown it is fast.
//!
//! Chunks otherwise pass through as they were read: the patched actix-http writes a chunk of
//! 8 KiB or more from its own memory instead of copying it into the connection's write buffer
//! (patches/actix-http/PATCHES.md), and reads upstream grow for a consumer that keeps up and
//! stay small for one that does not, so neither a fast nor a slow client needs its chunks cut.
//! What still helps a fast client is gathering: an upstream that hands over small pieces (TLS
//! records of 16 KiB, say) would otherwise cost one `send` per piece. Gathering copies, so it is
//! kept for clients that take data fast; a slow client would hold the gathered copy until it
//! is sent, as memory.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;

/// Largest chunk gathered for a fast client. Chunks read larger pass as they are.
pub const FAST_CHUNK: usize = 128 * 1024;

/// A client is fast when it takes data at this rate or more …
const FAST_RATE: u64 = 32_000_000;
/// … for this many bytes in a row: more than a socket's send buffer can hold (Linux's default
/// `tcp_wmem` maximum is 4 MiB), so a slow client whose kernel buffers swallow the first
/// megabytes is not mistaken for a fast one.
const PROVEN_AFTER: u64 = 8 << 20;
/// A fast client that takes data slower than this is no longer gathered for.
const SLOW_RATE: u64 = 8_000_000;
/// The rate is judged over windows of this much time spent waiting for the client, or of this
/// many bytes, whichever comes first: single chunks come in bursts (a full socket buffer, a
/// busy core) even when the client keeps up well on average.
const WINDOW_TIME: Duration = Duration::from_millis(10);
const WINDOW_BYTES: u64 = 1 << 20;

/// How fast the client has been taking chunks; decides whether they are gathered.
#[derive(Debug, Default)]
pub struct Pace {
    window_bytes: u64,
    window_time: Duration,
    /// Bytes taken in windows at `FAST_RATE` or more since the last slower window.
    fast_run: u64,
    fast: bool,
}

impl Pace {
    /// The client took a chunk of `bytes` within `took`: from handing it over to being asked
    /// for the next one (actix-http asks once the write buffer is drained into the socket), so
    /// time spent waiting for the upstream does not count against the client.
    pub fn taken(&mut self, bytes: usize, took: Duration) {
        self.window_bytes += bytes as u64;
        self.window_time += took;
        if self.window_time < WINDOW_TIME && self.window_bytes < WINDOW_BYTES {
            return;
        }
        let bytes = std::mem::take(&mut self.window_bytes);
        let nanos = std::mem::take(&mut self.window_time).as_nanos().max(1);
        let at_least = |rate: u64| u128::from(bytes) * 1_000_000_000 >= u128::from(rate) * nanos;
        if self.fast {
            if !at_least(SLOW_RATE) {
                *self = Pace::default();
            }
        } else if at_least(FAST_RATE) {
            self.fast_run += bytes;
            self.fast = self.fast_run >= PROVEN_AFTER;
        } else {
            self.fast_run = 0;
        }
    }

    /// How far chunks are gathered for the client now: not at all until it is fast.
    pub fn gather_limit(&self) -> Option<usize> {
        self.fast.then_some(FAST_CHUNK)
    }
}

/// A body stream whose small chunks are gathered, once the client has proven fast, from what
/// is already read up to `FAST_CHUNK`. Never waits to gather: what is there is sent. Errors and
/// the end come through after every byte before them.
pub struct ClientChunks<S, E> {
    inner: S,
    /// Read from `inner` but not yet handed on: a chunk that did not fit into a gathered one,
    /// or an error that came after gathered bytes.
    held: Option<Result<Bytes, E>>,
    ended: bool,
    pace: Pace,
    /// When the last chunk was handed on, and its size.
    handed: Option<(Instant, usize)>,
}

impl<S, E> ClientChunks<S, E> {
    pub fn new(inner: S) -> Self {
        ClientChunks {
            inner,
            held: None,
            ended: false,
            pace: Pace::default(),
            handed: None,
        }
    }
}

impl<S, E> ClientChunks<S, E>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    /// The next item: held over first, then from the upstream stream.
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, E>>> {
        if let Some(item) = self.held.take() {
            return Poll::Ready(Some(item));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        let item = std::task::ready!(Pin::new(&mut self.inner).poll_next(cx));
        self.ended = item.is_none();
        Poll::Ready(item)
    }

    /// Adds whatever is already read, without waiting, to `first` up to `limit` bytes.
    fn gather(&mut self, first: Bytes, limit: usize, cx: &mut Context<'_>) -> Bytes {
        let mut gathered: Option<BytesMut> = None;
        let mut len = first.len();
        while !self.ended && self.held.is_none() {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(next))) if len + next.len() <= limit => {
                    len += next.len();
                    gathered
                        .get_or_insert_with(|| {
                            let mut buf = BytesMut::with_capacity(limit);
                            buf.extend_from_slice(&first);
                            buf
                        })
                        .extend_from_slice(&next);
                }
                Poll::Ready(Some(item)) => self.held = Some(item),
                Poll::Ready(None) => self.ended = true,
                // The waker is registered; the client gets what is here now.
                Poll::Pending => break,
            }
        }
        match gathered {
            Some(buf) => buf.freeze(),
            None => first,
        }
    }
}

impl<S, E> Stream for ClientChunks<S, E>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some((at, bytes)) = this.handed.take() {
            this.pace.taken(bytes, at.elapsed());
        }
        let mut chunk = match std::task::ready!(this.poll_item(cx)) {
            Some(Ok(chunk)) => chunk,
            other => return Poll::Ready(other),
        };
        if let Some(limit) = this.pace.gather_limit() {
            if chunk.len() < limit {
                chunk = this.gather(chunk, limit, cx);
            }
        }
        this.handed = Some((Instant::now(), chunk.len()));
        Poll::Ready(Some(Ok(chunk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_client_is_fast_only_after_megabytes_taken_fast() {
        let mut pace = Pace::default();
        // 1 MiB in 1 ms is 1 GB/s; 7 of them are not yet enough.
        for _ in 0..7 {
            pace.taken(1 << 20, ms(1));
            assert_eq!(pace.gather_limit(), None);
        }
        pace.taken(1 << 20, ms(1));
        assert_eq!(pace.gather_limit(), Some(FAST_CHUNK));
    }

    /// 1 MiB in 1 ms (1 GB/s), `n` times.
    fn taken_fast(pace: &mut Pace, n: usize) {
        for _ in 0..n {
            pace.taken(1 << 20, ms(1));
        }
    }

    #[test]
    fn a_slow_window_restarts_the_proof() {
        let mut pace = Pace::default();
        taken_fast(&mut pace, 7);
        // 12 KiB in 20 ms is 0.6 MB/s: what a socket buffer swallowed is no proof.
        pace.taken(12 * 1024, ms(20));
        pace.taken(1 << 20, ms(1));
        assert_eq!(pace.gather_limit(), None);
    }

    #[test]
    fn bursts_are_judged_on_average() {
        let mut pace = Pace::default();
        // 128 KiB chunks, every other one after a 5 ms stall: about 51 MB/s on average,
        // although half the chunks alone are slower than the fast rate.
        for n in 0..200 {
            pace.taken(
                FAST_CHUNK,
                if n % 2 == 0 {
                    ms(5)
                } else {
                    Duration::from_micros(100)
                },
            );
        }
        assert_eq!(pace.gather_limit(), Some(FAST_CHUNK));
    }

    #[test]
    fn a_fast_client_that_slows_down_is_no_longer_gathered_for() {
        let mut pace = Pace::default();
        taken_fast(&mut pace, 8);
        // 1 MiB in 20 ms (52 MB/s): slower than before, still not slow.
        pace.taken(1 << 20, ms(20));
        assert_eq!(pace.gather_limit(), Some(FAST_CHUNK));
        // 128 KiB in 100 ms: slow.
        pace.taken(FAST_CHUNK, ms(100));
        assert_eq!(pace.gather_limit(), None);
        pace.taken(1 << 20, ms(1));
        assert_eq!(pace.gather_limit(), None);
    }

    #[test]
    fn a_zero_duration_counts_as_fast_not_as_a_division_by_zero() {
        let mut pace = Pace::default();
        pace.taken(PROVEN_AFTER as usize, Duration::ZERO);
        assert_eq!(pace.gather_limit(), Some(FAST_CHUNK));
    }

    fn chunks(sizes: &[usize]) -> Vec<Result<Bytes, &'static str>> {
        let mut next = 0u8;
        sizes
            .iter()
            .map(|&n| {
                let bytes: Vec<u8> = (0..n)
                    .map(|_| {
                        next = next.wrapping_add(1);
                        next
                    })
                    .collect();
                Ok(Bytes::from(bytes))
            })
            .collect()
    }

    fn joined(items: &[Result<Bytes, &'static str>]) -> Vec<u8> {
        items
            .iter()
            .filter_map(|item| item.as_ref().ok())
            .flat_map(|chunk| chunk.iter().copied())
            .collect()
    }

    #[actix_rt::test]
    async fn chunks_pass_as_read_until_the_client_is_fast() {
        let sizes = [512 * 1024, 100, 32 * 1024, 5000];
        let input = chunks(&sizes);
        let expected = joined(&input);
        let out: Vec<_> = ClientChunks::new(futures_util::stream::iter(input))
            .collect()
            .await;
        let out_sizes: Vec<usize> = out.iter().map(|c| c.as_ref().unwrap().len()).collect();
        assert_eq!(out_sizes, sizes);
        assert_eq!(joined(&out), expected);
    }

    #[actix_rt::test]
    async fn a_fast_client_gets_what_is_ready_gathered_up_to_the_limit() {
        let input = chunks(&[32 * 1024, 32 * 1024, 256 * 1024, 16 * 1024, 16 * 1024]);
        let expected = joined(&input);
        let mut stream = ClientChunks::new(futures_util::stream::iter(input));
        stream.pace.fast = true;
        let out: Vec<_> = stream.collect().await;
        let sizes: Vec<usize> = out.iter().map(|c| c.as_ref().unwrap().len()).collect();
        // Gathered up to the limit, a large chunk passed whole, small ones gathered again.
        assert_eq!(sizes, [64 * 1024, 256 * 1024, 32 * 1024]);
        assert_eq!(joined(&out), expected);
    }

    #[actix_rt::test]
    async fn an_error_comes_after_the_bytes_before_it_and_ends_the_stream() {
        let mut input = chunks(&[1000, 1000]);
        input.push(Err("broken"));
        let expected = joined(&input);
        let mut stream = ClientChunks::new(futures_util::stream::iter(input));
        stream.pace.fast = true;
        let out: Vec<_> = stream.collect().await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].as_ref().unwrap()[..], expected[..]);
        assert_eq!(out[1], Err("broken"));
    }

    #[actix_rt::test]
    async fn gathering_never_waits_for_more() {
        // One chunk now, the next only after a pause: the first goes out alone.
        let late = futures_util::stream::iter(chunks(&[1000]))
            .chain(futures_util::stream::once(async {
                actix_rt::time::sleep(ms(50)).await;
                Ok(Bytes::from_static(b"late"))
            }))
            .boxed_local();
        let mut stream = ClientChunks::new(late);
        stream.pace.fast = true;
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.len(), 1000);
        assert_eq!(stream.next().await.unwrap().unwrap(), "late");
        assert!(stream.next().await.is_none());
    }
}
