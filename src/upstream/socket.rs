//! The upstream connection's socket as awc holds it, and how a response learns which socket
//! it came on, so that its body can be spliced from that socket straight to the client
//! (`stream::splice`).
//!
//! awc does not say which pooled connection a request went out on. But it writes the request
//! head inside the poll of the future that sends it, on the thread that polls it: so while
//! [`Claiming`] polls that future, the socket that is written to is the request's, and it is
//! noted. Only sockets that carry plain HTTP are noted; TLS bytes cannot be spliced.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    io,
    os::fd::{AsRawFd, RawFd},
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
};

use actix_rt::net::{ActixStream, Ready, TcpStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::stream::splice::UpstreamFd;

thread_local! {
    /// Where the socket written to is noted, while a [`Claiming`] future is being polled.
    static CLAIM: RefCell<Option<Rc<Cell<Option<UpstreamFd>>>>> = const { RefCell::new(None) };
}

/// A TCP connection to an upstream (or to the proxy that reaches it), as the connector hands
/// it to awc.
#[derive(Debug)]
pub struct UpstreamSocket {
    stream: TcpStream,
    /// Whether awc speaks plain HTTP over it (not TLS).
    plain: bool,
    /// While set, awc's reads see no data (see [`UpstreamFd::hold_reads`]).
    held: Rc<Cell<bool>>,
}

impl UpstreamSocket {
    pub fn new(stream: TcpStream, plain: bool) -> Self {
        UpstreamSocket {
            stream,
            plain,
            held: Rc::default(),
        }
    }

    fn note_if_claimed(&self) {
        if !self.plain {
            return;
        }
        CLAIM.with(|claim| {
            if let Some(claim) = claim.borrow().as_ref() {
                claim.set(Some(UpstreamFd {
                    fd: self.stream.as_raw_fd(),
                    hold_reads: self.held.clone(),
                }));
            }
        });
    }
}

impl AsyncRead for UpstreamSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.held.get() {
            // The body is being spliced from this socket: awc must not take bytes from it. Its
            // reader is not polled again, so no wake-up is registered.
            return Poll::Pending;
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.note_if_claimed();
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.note_if_claimed();
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl ActixStream for UpstreamSocket {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_read_ready(&self.stream, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_write_ready(&self.stream, cx)
    }
}

impl AsRawFd for UpstreamSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

pin_project_lite::pin_project! {
    /// Polls `sending` (a future that sends one request with awc) and notes the plain-HTTP
    /// socket its request was written to.
    pub struct Claiming<F> {
        #[pin]
        sending: F,
        claim: Rc<Cell<Option<UpstreamFd>>>,
    }
}

impl<F> Claiming<F> {
    pub fn new(sending: F) -> Self {
        Claiming {
            sending,
            claim: Rc::default(),
        }
    }
}

impl<F: Future> Future for Claiming<F> {
    /// The future's output, and the socket its request went out on when that carries plain
    /// HTTP (the last one written, if awc asked again on another connection).
    type Output = (F::Output, Option<UpstreamFd>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outer = CLAIM.with(|claim| claim.replace(Some(this.claim.clone())));
        let polled = this.sending.poll(cx);
        CLAIM.with(|claim| *claim.borrow_mut() = outer);
        polled.map(|output| (output, this.claim.take()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn connected_pair() -> (TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (peer, _) = listener.accept().unwrap();
        (stream, peer)
    }

    #[actix_rt::test]
    async fn the_socket_written_while_claiming_is_noted() {
        let (stream, _peer) = connected_pair().await;
        let fd = stream.as_raw_fd();
        let mut socket = UpstreamSocket::new(stream, true);
        let ((), noted) = Claiming::new(async {
            socket.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        })
        .await;
        assert_eq!(noted.map(|n| n.fd), Some(fd));
        // Outside a claim, writes note nothing (and fail nothing).
        socket.write_all(b"more").await.unwrap();
    }

    #[actix_rt::test]
    async fn a_socket_carrying_tls_is_never_noted() {
        let (stream, _peer) = connected_pair().await;
        let mut socket = UpstreamSocket::new(stream, false);
        let ((), noted) = Claiming::new(async {
            socket.write_all(b"\x16\x03\x01").await.unwrap();
        })
        .await;
        assert!(noted.is_none());
    }

    #[actix_rt::test]
    async fn held_reads_see_no_data() {
        use std::io::Write;
        use tokio::io::AsyncReadExt;
        let (stream, mut peer) = connected_pair().await;
        let mut socket = UpstreamSocket::new(stream, true);
        let ((), noted) = Claiming::new(async {
            socket.write_all(b"x").await.unwrap();
        })
        .await;
        peer.write_all(b"body").unwrap();
        let noted = noted.unwrap();
        // The bytes are there to read ...
        socket.stream.readable().await.unwrap();
        noted.hold_reads.set(true);
        let mut buf = [0; 4];
        let mut read_buf = ReadBuf::new(&mut buf);
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        // ... but a held socket gives awc none of them.
        assert!(Pin::new(&mut socket)
            .poll_read(&mut cx, &mut read_buf)
            .is_pending());
        assert!(read_buf.filled().is_empty());
        noted.hold_reads.set(false);
        socket.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"body");
    }
}
