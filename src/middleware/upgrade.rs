//! Request filter: hubferry switches no protocol and opens no tunnel. A server may ignore a
//! request's `Upgrade` (RFC 9110 §7.8), and hubferry does, but actix-http reads what follows
//! some such requests in its own way:
//!
//! - `Upgrade: websocket` (with or without `Connection: upgrade`) and `CONNECT` make it read the
//!   request body until the connection closes, whatever `Content-Length` says: a `POST` with a
//!   3-byte body would wait for the client to hang up, then go upstream as a broken upload. These
//!   are refused at once (400 `UNSUPPORTED`) and the connection closed.
//! - Any other `Connection: upgrade` (curl's and Java's `Upgrade: h2c` on plain HTTP) is served as
//!   an ordinary request, but actix-http would answer it with `connection: upgrade` and then
//!   close: the answer says `connection: close` instead, which is what happens.

use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderMap},
        ConnectionType, Method,
    },
    middleware::Next,
    Error,
};

use crate::error::ProxyError;

/// What hubferry does with a request, as far as switching protocols goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Switch {
    /// Nothing asked: served as it is.
    NotAsked,
    /// Served as an ordinary request, and the connection closed after the answer.
    Ignored,
    /// Refused; what was asked.
    Refused(&'static str),
}

/// Judges a request by its method, headers and the connection type actix-http read from them.
pub fn judge(method: &Method, headers: &HeaderMap, connection: ConnectionType) -> Switch {
    if method == Method::CONNECT {
        return Switch::Refused("a CONNECT tunnel");
    }
    let websocket = headers
        .get_all(header::UPGRADE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case("websocket"));
    if websocket {
        return Switch::Refused("an upgrade to WebSocket");
    }
    if connection == ConnectionType::Upgrade {
        return Switch::Ignored;
    }
    Switch::NotAsked
}

/// Middleware: refuses tunnels and WebSocket upgrades, and closes the connection after
/// answering any other request that asked to upgrade it.
pub async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    match judge(req.method(), req.headers(), req.head().connection_type()) {
        Switch::NotAsked => Ok(next.call(req).await?.map_into_left_body()),
        Switch::Ignored => {
            let mut res = next.call(req).await?;
            res.response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            Ok(res.map_into_left_body())
        }
        Switch::Refused(asked) => {
            let mut res = req.error_response(ProxyError::Switch { asked });
            res.response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            Ok(res.map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::header_map as headers;

    #[test]
    fn ordinary_requests_ask_nothing() {
        for method in [Method::GET, Method::HEAD, Method::POST, Method::PUT] {
            assert_eq!(
                judge(&method, &HeaderMap::new(), ConnectionType::KeepAlive),
                Switch::NotAsked
            );
            assert_eq!(
                judge(&method, &HeaderMap::new(), ConnectionType::Close),
                Switch::NotAsked
            );
        }
        // An Upgrade header alone, with no Connection option naming it, asks nothing
        // (RFC 9110 §7.8): actix-http reads such a request normally.
        let h2c = headers(&[("upgrade", "h2c")]);
        assert_eq!(
            judge(&Method::GET, &h2c, ConnectionType::KeepAlive),
            Switch::NotAsked
        );
    }

    #[test]
    fn tunnels_and_websockets_are_refused_however_they_are_spelt() {
        assert!(matches!(
            judge(
                &Method::CONNECT,
                &HeaderMap::new(),
                ConnectionType::KeepAlive
            ),
            Switch::Refused(_)
        ));
        for value in ["websocket", "WebSocket", " websocket ", "h2c, websocket"] {
            let map = headers(&[("upgrade", value)]);
            for connection in [ConnectionType::Upgrade, ConnectionType::KeepAlive] {
                for method in [Method::GET, Method::POST] {
                    assert!(
                        matches!(judge(&method, &map, connection), Switch::Refused(_)),
                        "{method} {value:?} {connection:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn other_upgrades_are_ignored() {
        for value in ["h2c", "TLS/1.0", "x"] {
            let map = headers(&[("upgrade", value)]);
            assert_eq!(
                judge(&Method::POST, &map, ConnectionType::Upgrade),
                Switch::Ignored
            );
        }
        // `Connection: upgrade` with no Upgrade header at all is still answered with a close.
        assert_eq!(
            judge(&Method::GET, &HeaderMap::new(), ConnectionType::Upgrade),
            Switch::Ignored
        );
    }
}
