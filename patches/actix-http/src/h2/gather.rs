//! hubferry: h2's writes gathered into larger ones.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf as _, BytesMut};
use futures_core::ready;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// hubferry: how much is gathered before it is written through.
const GATHER: usize = 64 * 1024;

/// hubferry: the connection's I/O as h2 writes to it: what h2 writes is gathered, up to
/// [`GATHER`] bytes, and written out when that is full or when h2 flushes with nothing written
/// since its last flush.
///
/// h2 flushes after every DATA frame it writes (its write buffer holds one frame's payload at
/// a time), so each frame of a body went out in a write of its own: over TLS, one record per
/// `writev` and one TCP send each, 17 045 of them for a 268 MB download with frames of 16 KB.
/// Here the frames h2 has ready in one go are written together; at the end of each of its
/// rounds h2 flushes again without writing first, and that flush writes everything out, so
/// nothing waits for more data. In case a deferred flush is h2's last, the task is woken to
/// flush again.
pub(crate) struct Gathered<T> {
    io: T,
    buf: BytesMut,
    /// Whether anything was written since the last flush.
    written: bool,
}

impl<T> Gathered<T> {
    pub(crate) fn new(io: T) -> Self {
        Gathered {
            io,
            buf: BytesMut::new(),
            written: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> Gathered<T> {
    /// Writes out everything gathered.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.buf.advance(n),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Gathered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gathered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buf.len() >= GATHER {
            ready!(this.poll_write_out(cx))?;
        }
        if this.buf.capacity() == 0 {
            this.buf.reserve(GATHER);
        }
        let mut taken = 0;
        for slice in bufs {
            let room = GATHER.saturating_sub(this.buf.len());
            if room == 0 {
                break;
            }
            let part = &slice[..slice.len().min(room)];
            this.buf.extend_from_slice(part);
            taken += part.len();
        }
        this.written |= taken > 0;
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if std::mem::take(&mut this.written) && this.buf.len() < GATHER {
            // More may follow in this round; h2 flushes again at its end.
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_write_out(cx))?;
        // Between rounds a connection holds no buffer: many idle HTTP/2 connections cost
        // nothing here.
        this.buf = BytesMut::new();
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        task::Wake,
    };

    use super::*;

    /// hubferry: an I/O that records each write and counts flushes.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write(io: &mut Gathered<Recorder>, cx: &mut Context<'_>, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            match Pin::new(&mut *io).poll_write(cx, rest) {
                Poll::Ready(Ok(n)) => rest = &rest[n..],
                other => panic!("{other:?}"),
            }
        }
    }

    fn flush(io: &mut Gathered<Recorder>, cx: &mut Context<'_>) {
        assert!(matches!(
            Pin::new(&mut *io).poll_flush(cx),
            Poll::Ready(Ok(()))
        ));
    }

    /// hubferry: frames flushed one by one go out in one write, at the flush that follows no
    /// write; the deferred flush wakes the task, so a last one is never left waiting.
    #[test]
    fn frames_flushed_one_by_one_go_out_together() {
        let wakes = Arc::new(Wakes::default());
        let waker = wakes.clone().into();
        let mut cx = Context::from_waker(&waker);
        let mut io = Gathered::new(Recorder::default());
        for frame in [&b"one"[..], b"two", b"three"] {
            write(&mut io, &mut cx, frame);
            flush(&mut io, &mut cx);
        }
        assert!(io.io.writes.is_empty(), "held until h2's round ends");
        assert_eq!(io.io.flushes, 0);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 3, "each deferral wakes the task");

        flush(&mut io, &mut cx);
        assert_eq!(io.io.writes, vec![b"onetwothree".to_vec()]);
        assert_eq!(io.io.flushes, 1);
    }

    /// hubferry: more than `GATHER` bytes between flushes go out in writes of `GATHER`.
    #[test]
    fn a_full_gather_is_written_through() {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut io = Gathered::new(Recorder::default());
        let body = vec![7; GATHER * 2 + 10];
        write(&mut io, &mut cx, &body);
        assert_eq!(io.io.writes.len(), 2);
        assert!(io.io.writes.iter().all(|w| w.len() == GATHER));
        // Full: the flush writes at once.
        let mut io2 = Gathered::new(Recorder::default());
        write(&mut io2, &mut cx, &body[..GATHER]);
        flush(&mut io2, &mut cx);
        assert_eq!(io2.io.writes.len(), 1);
        flush(&mut io, &mut cx);
        flush(&mut io, &mut cx);
        let written: usize = io.io.writes.iter().map(Vec::len).sum();
        assert_eq!(written, body.len());
    }

    /// hubferry: a shutdown writes out what is gathered first.
    #[test]
    fn shutdown_writes_out_first() {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut io = Gathered::new(Recorder::default());
        write(&mut io, &mut cx, b"goaway");
        assert!(Pin::new(&mut io).poll_shutdown(&mut cx).is_ready());
        assert_eq!(io.io.writes, vec![b"goaway".to_vec()]);
    }
}
