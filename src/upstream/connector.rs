//! The TCP connector of the upstream client: resolve, apply the egress [`Policy`], connect,
//! directly or through the proxy the [`Route`] names. awc then speaks TLS and HTTP over what
//! it returns, so a tunnel through a proxy (HTTP CONNECT, SOCKS5) is just another socket.
//!
//! Where hubferry connects itself, the policy judges the addresses it is about to use, after
//! resolution (no DNS rebinding between check and use). Where a proxy connects (CONNECT,
//! `socks5h`, absolute-form requests), hubferry judges what it can: an address literal as it
//! is, a name by what it resolves to here. The proxy may resolve it otherwise; that is the
//! point of `socks5h`, and the README says so.

use std::{fmt, net::SocketAddr, rc::Rc};

use actix_rt::net::TcpStream;
use actix_service::Service;
use actix_tls::connect::{
    tcp::TcpConnectorService, ConnectError, ConnectInfo, Connection, Host, ResolverService,
};
use async_http_proxy::{http_connect_tokio, http_connect_tokio_with_basic_auth, HttpError};
use awc::http::Uri;
use futures_util::future::LocalBoxFuture;
use tokio_socks::{tcp::Socks5Stream, Error as SocksError};

use crate::upstream::{
    egress::Policy,
    proxy::{Proxy, ProxyKind, Route},
};

/// An egress proxy failed: down, refused the destination, or wants other credentials. Carried
/// through awc as a resolver error so the upstream client can name the proxy, not the registry
/// (see `upstream::client`).
#[derive(Debug)]
pub struct ProxyFailed {
    /// As [`Proxy`] displays it: no password.
    pub proxy: String,
    pub reason: String,
}

impl fmt::Display for ProxyFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "egress proxy {} {}", self.proxy, self.reason)
    }
}

impl std::error::Error for ProxyFailed {}

fn proxy_failed(proxy: &Proxy, reason: String) -> ConnectError {
    ConnectError::Resolver(Box::new(ProxyFailed {
        proxy: proxy.to_string(),
        reason,
    }))
}

/// A host and port to resolve or connect to that is not a request's URI (a proxy's address).
struct HostPort {
    host: String,
    port: u16,
}

impl Host for HostPort {
    fn hostname(&self) -> &str {
        &self.host
    }

    fn port(&self) -> Option<u16> {
        Some(self.port)
    }
}

/// One worker's connector for one [`Route`]: cheap to clone (awc clones it per connection).
#[derive(Clone)]
pub struct EgressConnector {
    policy: Rc<Policy>,
    resolver: ResolverService,
    route: Rc<Route>,
}

impl EgressConnector {
    pub fn new(policy: Rc<Policy>, resolver: ResolverService, route: Rc<Route>) -> Self {
        EgressConnector {
            policy,
            resolver,
            route,
        }
    }

    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The addresses of `host` (a URL's spelling: IPv6 in brackets), from the resolver.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let info = ConnectInfo::new(HostPort {
            host: bare.to_owned(),
            port,
        });
        let mut resolved = self.resolver.call(info).await?;
        let addrs: Vec<_> = resolved.take_addrs().collect();
        if addrs.is_empty() {
            return Err(ConnectError::NoRecords);
        }
        Ok(addrs)
    }

    /// The policy, where a proxy connects to `host`: a trusted upstream passes unresolved (its
    /// name may not even resolve here); any other is resolved here when it can be, and refused
    /// when every address it has here is one a redirect may not lead to.
    pub async fn check_remote(&self, host: &str, port: u16) -> Result<(), ConnectError> {
        if self.policy.trusts(host, port) {
            return Ok(());
        }
        match self.resolve(host, port).await {
            Ok(addrs) => self.allowed(host, port, addrs).map(drop),
            Err(err) => {
                log::debug!("{host}:{port} does not resolve here ({err}); the proxy resolves it");
                Ok(())
            }
        }
    }

    /// The addresses of `host` the policy lets hubferry (or a proxy) connect to.
    fn allowed(
        &self,
        host: &str,
        port: u16,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, ConnectError> {
        self.policy
            .filter(host, port, addrs)
            .map_err(|refused| ConnectError::Resolver(Box::new(refused)))
    }

    /// A TCP connection to `host`, straight.
    async fn direct(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let addrs = self.resolve(host, port).await?;
        let allowed = self.allowed(host, port, addrs)?;
        let info = ConnectInfo::new(HostPort {
            host: host.to_owned(),
            port,
        })
        .set_addrs(allowed);
        let connection = TcpConnectorService::default().call(info).await?;
        Ok(connection.into_parts().0)
    }

    /// A connection to the proxy itself, its failures named as its own.
    async fn to_proxy(&self, proxy: &Proxy) -> Result<TcpStream, ConnectError> {
        self.direct(&proxy.host, proxy.port)
            .await
            .map_err(|err| proxy_failed(proxy, format!("cannot be reached: {}", reason(&err))))
    }

    /// A tunnel to `host:port` through `proxy`.
    async fn through(
        &self,
        proxy: &Proxy,
        host: &str,
        port: u16,
    ) -> Result<TcpStream, ConnectError> {
        match proxy.kind {
            ProxyKind::Http => {
                self.check_remote(host, port).await?;
                let mut stream = self.to_proxy(proxy).await?;
                let asked = match &proxy.login {
                    Some(login) => {
                        http_connect_tokio_with_basic_auth(
                            &mut stream,
                            host,
                            port,
                            &login.user,
                            &login.password,
                        )
                        .await
                    }
                    None => http_connect_tokio(&mut stream, host, port).await,
                };
                asked.map_err(|err| proxy_failed(proxy, connect_refusal(&err, host, port)))?;
                Ok(stream)
            }
            ProxyKind::Socks5h => {
                self.check_remote(host, port).await?;
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                let stream = self.to_proxy(proxy).await?;
                match bare.parse() {
                    Ok(ip) => socks(proxy, stream, SocketAddr::new(ip, port)).await,
                    Err(_) => socks(proxy, stream, (bare, port)).await,
                }
            }
            ProxyKind::Socks5 => {
                let addrs = self.resolve(host, port).await?;
                let allowed = self.allowed(host, port, addrs)?;
                let mut last = None;
                for addr in allowed {
                    let stream = self.to_proxy(proxy).await?;
                    match socks(proxy, stream, addr).await {
                        Ok(stream) => return Ok(stream),
                        Err(err) => last = Some(err),
                    }
                }
                Err(last.unwrap_or(ConnectError::NoRecords))
            }
        }
    }
}

/// The SOCKS5 handshake on `stream`, with the proxy's login when it has one.
async fn socks<'t, T>(
    proxy: &Proxy,
    stream: TcpStream,
    target: T,
) -> Result<TcpStream, ConnectError>
where
    T: tokio_socks::IntoTargetAddr<'t>,
{
    let tunnel = match &proxy.login {
        Some(login) => {
            Socks5Stream::connect_with_password_and_socket(
                stream,
                target,
                &login.user,
                &login.password,
            )
            .await
        }
        None => Socks5Stream::connect_with_socket(stream, target).await,
    };
    tunnel
        .map(Socks5Stream::into_inner)
        .map_err(|err| proxy_failed(proxy, socks_refusal(&err)))
}

/// An HTTP proxy's 407, to a CONNECT or to an absolute-form request alike.
pub const ASKS_FOR_CREDENTIALS: &str =
    "asks for credentials (407 Proxy Authentication Required); give them in the proxy URL";

/// What a CONNECT that did not open a tunnel means, for the operator.
fn connect_refusal(err: &HttpError, host: &str, port: u16) -> String {
    match err {
        HttpError::HttpCode200(407) => ASKS_FOR_CREDENTIALS.to_owned(),
        HttpError::HttpCode200(code) => {
            format!("refused the tunnel to {host}:{port} (CONNECT answered {code})")
        }
        HttpError::IoError(err) => format!("broke off the CONNECT to {host}:{port}: {err}"),
        HttpError::EndOfFile => format!("closed the connection on CONNECT to {host}:{port}"),
        other => {
            format!("answered CONNECT to {host}:{port} with something that is not HTTP: {other}")
        }
    }
}

/// What a SOCKS5 handshake that failed means, for the operator.
fn socks_refusal(err: &SocksError) -> String {
    match err {
        SocksError::NoAcceptableAuthMethods => {
            "asks for credentials it was not given (SOCKS5: no acceptable auth method); give them in \
             the proxy URL"
                .to_owned()
        }
        SocksError::PasswordAuthFailure(_) => "refused the user name and password".to_owned(),
        SocksError::Io(err) => format!("broke off the SOCKS5 handshake: {err}"),
        other => format!("refused the connection (SOCKS5: {other})"),
    }
}

/// An error's text with its cause: awc's own display of a resolver or I/O error hides it.
fn reason(err: &ConnectError) -> String {
    match err {
        ConnectError::Resolver(inner) => format!("its name does not resolve: {inner}"),
        ConnectError::Io(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

/// What awc gets: on Linux, the socket that tells `stream::splice` which connection a
/// response came on.
#[cfg(target_os = "linux")]
type Socket = crate::upstream::socket::UpstreamSocket;
#[cfg(not(target_os = "linux"))]
type Socket = TcpStream;

#[cfg(target_os = "linux")]
fn socket(stream: TcpStream, plain: bool) -> Socket {
    Socket::new(stream, plain)
}

#[cfg(not(target_os = "linux"))]
fn socket(stream: TcpStream, _plain: bool) -> Socket {
    stream
}

impl Service<ConnectInfo<Uri>> for EgressConnector {
    type Response = Connection<Uri, Socket>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_service::always_ready!();

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let uri = req.request().clone();
            let https = uri.scheme_str() == Some("https");
            let (host, port) = (req.hostname().to_owned(), req.port());
            let stream = match this.route.proxy_for(https, &host, port) {
                Some(proxy) => this.through(&proxy.clone(), &host, port).await?,
                None => match this.route.proxy_at(&host, port) {
                    // An absolute-form request: the connection is to the proxy itself.
                    Some(proxy) => this.to_proxy(&proxy.clone()).await?,
                    None => this.direct(&host, port).await?,
                },
            };
            Ok(Connection::new(uri, socket(stream, !https)))
        })
    }
}
