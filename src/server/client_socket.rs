//! Options set on every accepted client socket, plain or TLS, from `HttpServer::on_connect`.
//!
//! `TCP_USER_TIMEOUT` (RFC 5482; Linux tcp(7)) of `timeouts.body_idle`: a connection whose sent
//! data stays unacknowledged, or unsent because the client's receive window stays shut, that
//! long is closed by the kernel. That is how a client that stops reading a download is cut:
//! actix-http stops polling a response body while its write buffer is full, so nothing in the
//! body (its idle timer included) runs again, and the blob stream would hold its upstream
//! connection for as long as the client keeps the socket open. The kernel's own retransmission
//! limit (`tcp_retries2`, about 15 minutes) does not apply to a shut window at all: the window
//! probes are answered. The option changes nothing for a connection with nothing to send (an
//! idle keep-alive connection, a client still sending its request), and a slow reader that
//! opens its window now and then makes progress and is not cut.
//!
//! A connection on the plain listener also gets what a blob body needs to be spliced to it
//! (`stream::splice`): its socket, and the `WriteThrough` through which that body and the
//! HTTP/1.1 dispatcher agree on who writes when.
//!
//! A connection from this same host (a TLS terminator in front of hubferry, a node's own
//! containerd) is not paced. BBR, a common default on servers that proxy across long links,
//! paces every send with a timer to keep a bottleneck queue short; between two sockets of one
//! host there is no link and no queue, and the pacing cost a blob download a third of its
//! speed and half again the CPU (`docs/benchmarks.md`, "BBR on loopback"). Such a connection
//! gets cubic (or reno) instead; connections from elsewhere keep what the host chose.

use std::{any::Any, net::IpAddr, sync::Once, time::Duration};

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::{dev::Extensions, rt::net::TcpStream};

/// The `on_connect` hook: sets the options on each new connection's socket.
pub fn on_connect(unread_limit: Duration) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync {
    // Said once, not per connection: the cause is the same for every one.
    static WARNED: Once = Once::new();
    move |connection, extensions| {
        #[cfg(target_os = "linux")]
        if let Some(plain) = connection.downcast_ref::<TcpStream>() {
            record_for_splice(plain, extensions);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = extensions;
        let Some(socket) = tcp_socket(connection) else {
            // A listener kind this does not know: the tests for both kinds fail before this can.
            WARNED.call_once(|| {
                log::warn!("client connections of an unknown type: TCP_USER_TIMEOUT not set")
            });
            return;
        };
        #[cfg(target_os = "linux")]
        unpace_same_host(socket);
        if let Err(err) = set_user_timeout(socket, unread_limit) {
            WARNED.call_once(|| {
                log::warn!("cannot set TCP_USER_TIMEOUT on client connections: {err}")
            });
        }
    }
}

/// What a body spliced to the plain connection `socket` needs (see the module's comment).
#[cfg(target_os = "linux")]
fn record_for_splice(socket: &TcpStream, extensions: &mut Extensions) {
    use std::{os::fd::AsRawFd, rc::Rc};

    use actix_http::h1::WriteThrough;

    let write_through = Rc::new(WriteThrough::new());
    extensions.insert(write_through.clone());
    extensions.insert(crate::stream::splice::ClientSocket {
        fd: socket.as_raw_fd(),
        write_through,
    });
}

/// The TCP socket under a connection from the plain or the TLS listener.
fn tcp_socket(connection: &dyn Any) -> Option<&TcpStream> {
    connection.downcast_ref::<TcpStream>().or_else(|| {
        connection
            .downcast_ref::<TlsStream<TcpStream>>()
            .map(|tls| tls.get_ref().0)
    })
}

/// Gives a connection from this same host a congestion control that does not pace, when the
/// host's would (see the module's comment). Costs one `getsockopt` on a host that does not pace.
#[cfg(target_os = "linux")]
fn unpace_same_host(socket: &TcpStream) {
    let sock = socket2::SockRef::from(socket);
    let Ok(current) = sock.tcp_congestion() else {
        return;
    };
    if !paces(&current) {
        return;
    }
    let (Ok(peer), Ok(local)) = (socket.peer_addr(), socket.local_addr()) else {
        return;
    };
    if !same_host(peer.ip(), local.ip()) {
        return;
    }
    // cubic is the kernel's built-in default, so unprivileged processes may usually choose it
    // (tcp_allowed_congestion_control); reno they always may. Both failing is harmless: the
    // connection keeps its pacing.
    let _ = sock
        .set_tcp_congestion(b"cubic")
        .or_else(|_| sock.set_tcp_congestion(b"reno"));
}

/// Whether the congestion control named `name` (as `TCP_CONGESTION` reads, NUL-padded) paces
/// its sends: BBR in all its versions asks the kernel to; the loss-based ones do not.
#[cfg(target_os = "linux")]
fn paces(name: &[u8]) -> bool {
    name.starts_with(b"bbr")
}

/// Whether a peer at `peer` on a connection to `local` is this host: a loopback address, or
/// the very address it connected to (traffic to one's own address goes through loopback too).
#[cfg(target_os = "linux")]
fn same_host(peer: IpAddr, local: IpAddr) -> bool {
    peer.to_canonical().is_loopback() || peer.to_canonical() == local.to_canonical()
}

#[cfg(target_os = "linux")]
fn set_user_timeout(socket: &TcpStream, limit: Duration) -> std::io::Result<()> {
    socket2::SockRef::from(socket).set_tcp_user_timeout(Some(limit))
}

#[cfg(not(target_os = "linux"))]
fn set_user_timeout(_: &TcpStream, _: Duration) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "only Linux has it: a client that stops reading a download is not cut",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn plain_connections_get_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let accepted = TcpStream::from_std(accepted).unwrap();
        on_connect(Duration::from_secs(7))(&accepted, &mut Extensions::new());
        let set = socket2::SockRef::from(&accepted)
            .tcp_user_timeout()
            .unwrap();
        assert_eq!(set, Some(Duration::from_secs(7)));
        drop(client);
    }

    #[test]
    fn only_bbr_paces() {
        assert!(paces(b"bbr\0\0\0\0\0\0\0\0\0\0\0\0\0"));
        assert!(paces(b"bbr3"));
        for other in [&b"cubic\0\0\0"[..], b"reno", b"dctcp", b""] {
            assert!(!paces(other), "{other:?}");
        }
    }

    #[test]
    fn the_same_host_is_loopback_or_the_address_connected_to() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(same_host(ip("127.0.0.1"), ip("127.0.0.1")));
        assert!(same_host(ip("127.0.0.9"), ip("127.0.0.1")));
        assert!(same_host(ip("::1"), ip("::1")));
        assert!(same_host(ip("::ffff:127.0.0.1"), ip("::ffff:127.0.0.1")));
        assert!(same_host(ip("10.0.0.5"), ip("10.0.0.5")));
        assert!(same_host(ip("::ffff:10.0.0.5"), ip("10.0.0.5")));
        assert!(!same_host(ip("10.0.0.6"), ip("10.0.0.5")));
        assert!(!same_host(ip("2001:db8::1"), ip("2001:db8::2")));
    }

    /// Where the kernel has BBR: a loopback connection accepted from a listener that paces
    /// (an accepted socket inherits the listener's congestion control) no longer does.
    #[actix_rt::test]
    async fn a_loopback_connection_is_not_paced() {
        let listener =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if listener.set_tcp_congestion(b"bbr").is_err() {
            eprintln!("no BBR in this kernel (tcp_available_congestion_control): nothing paces");
            return;
        }
        listener
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        listener.listen(1).unwrap();
        let listener: std::net::TcpListener = listener.into();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let before = socket2::SockRef::from(&accepted).tcp_congestion().unwrap();
        assert!(
            paces(&before),
            "the accepted socket did not inherit bbr: {before:?}"
        );
        accepted.set_nonblocking(true).unwrap();
        let accepted = TcpStream::from_std(accepted).unwrap();
        on_connect(Duration::from_secs(7))(&accepted, &mut Extensions::new());
        let after = socket2::SockRef::from(&accepted).tcp_congestion().unwrap();
        assert!(!paces(&after), "still {after:?}");
        drop(client);
    }

    #[test]
    fn other_connection_types_are_left_alone() {
        assert!(tcp_socket(&"not a socket").is_none());
    }
}
