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

use std::{any::Any, sync::Once, time::Duration};

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
    fn other_connection_types_are_left_alone() {
        assert!(tcp_socket(&"not a socket").is_none());
    }
}
