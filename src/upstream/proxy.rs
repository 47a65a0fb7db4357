//! Egress proxies: which one, if any, a connection to an upstream goes through. Set by
//! `egress.proxy`, by an upstream's own `proxy`, or (with neither) by the variables curl and Go
//! read: `https_proxy`, `http_proxy`, `all_proxy` and `no_proxy`, lower or upper case.
//!
//! Pure: parsing and matching only. The handshakes are the connector's (`upstream::connector`).

use std::{fmt, net::IpAddr};

use actix_web::http::header::{HeaderMap, HeaderValue};
use base64::Engine;
use ipnet::IpNet;
use url::Url;

/// How hubferry speaks to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `http://`: CONNECT for `https` upstreams, absolute-form requests for `http` ones.
    Http,
    /// `socks5://`: hubferry resolves the upstream's name and hands the proxy an address.
    Socks5,
    /// `socks5h://`: the proxy resolves the name (the answer to a local DNS that lies).
    Socks5h,
}

/// A proxy's user name and password (Basic for HTTP, RFC 1929 for SOCKS5).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyLogin {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for ProxyLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyLogin({}, ***)", self.user)
    }
}

/// One egress proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub kind: ProxyKind,
    /// As a URL writes it: an IPv6 address in brackets.
    pub host: String,
    pub port: u16,
    pub login: Option<ProxyLogin>,
}

impl Proxy {
    /// `http://[user:pass@]host[:port]`, `socks5://...` or `socks5h://...`; a bare `host:port`
    /// is an HTTP proxy, as curl takes it. Ports default to 80 (HTTP) and 1080 (SOCKS5).
    pub fn parse(text: &str) -> Result<Proxy, String> {
        let text = text.trim();
        let with_scheme = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        let url = Url::parse(&with_scheme)
            .map_err(|e| format!("'{}' is not a proxy URL: {e}", redacted(text)))?;
        let (kind, default_port) = match url.scheme() {
            "http" => (ProxyKind::Http, 80),
            "socks5" => (ProxyKind::Socks5, 1080),
            "socks5h" => (ProxyKind::Socks5h, 1080),
            "https" => {
                return Err(format!(
                    "'{}': a proxy spoken to over TLS (https://) is not supported; use http://, \
                     socks5:// or socks5h://",
                    redacted(text)
                ))
            }
            other => {
                return Err(format!(
                    "'{}': unknown proxy scheme {other}:// (http://, socks5:// or socks5h://)",
                    redacted(text)
                ))
            }
        };
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host.to_owned(),
            _ => return Err(format!("'{}' names no proxy host", redacted(text))),
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(format!(
                "'{}': a proxy URL is scheme, host and port only",
                redacted(text)
            ));
        }
        let login = (!url.username().is_empty()).then(|| ProxyLogin {
            user: decoded(url.username()),
            password: decoded(url.password().unwrap_or_default()),
        });
        Ok(Proxy {
            kind,
            host,
            port: url.port().unwrap_or(default_port),
            login,
        })
    }

    /// The host without an IPv6 address's brackets, as a socket address or a resolver wants it.
    pub fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// `Proxy-Authorization` for an HTTP proxy with a login.
    pub fn basic_authorization(&self) -> Option<String> {
        let login = self.login.as_ref()?;
        let pair = format!("{}:{}", login.user, login.password);
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
    }
}

/// As logs and errors name it: scheme, user, host and port, never the password.
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            ProxyKind::Http => "http",
            ProxyKind::Socks5 => "socks5",
            ProxyKind::Socks5h => "socks5h",
        };
        match &self.login {
            Some(login) => write!(
                f,
                "{scheme}://{}:***@{}:{}",
                login.user, self.host, self.port
            ),
            None => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

/// `%XX` escapes of a URL's user or password undone (a password may hold `@` or `:`).
fn decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// A proxy URL as an error may show it: any password replaced.
fn redacted(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            let userinfo = &text[start + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &text[..start + 3], &text[at..]),
                None => text.to_owned(),
            }
        }
        _ => text.to_owned(),
    }
}

/// `egress.proxy` or an upstream's `proxy`: a proxy, or `none` (direct, whatever the
/// environment or the default says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyChoice {
    Direct,
    Via(Proxy),
}

impl ProxyChoice {
    pub fn parse(text: &str) -> Result<ProxyChoice, String> {
        if text.trim().eq_ignore_ascii_case("none") {
            Ok(ProxyChoice::Direct)
        } else {
            Proxy::parse(text).map(ProxyChoice::Via)
        }
    }

    /// The route it makes, with `bypass` as the destinations that go direct anyway.
    pub fn route(&self, bypass: &[Bypass]) -> Route {
        match self {
            ProxyChoice::Direct => Route::direct(),
            ProxyChoice::Via(proxy) => Route::via(proxy.clone(), bypass.to_vec()),
        }
    }
}

/// One `no_proxy` entry: `*`, a domain (which covers its subdomains; a leading dot is the
/// same), an IP address or a CIDR network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bypass {
    All,
    Domain(String),
    Network(IpNet),
}

impl Bypass {
    pub fn parse(text: &str) -> Result<Bypass, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Bypass::All);
        }
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Bypass::Network(net));
        }
        let bare = text.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Bypass::Network(IpNet::from(ip)));
        }
        let domain = text.trim_start_matches("*.").trim_start_matches('.');
        let valid = !domain.is_empty()
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid {
            return Err(format!(
                "'{text}' is not a host name, a .domain suffix, an address, a CIDR network or *"
            ));
        }
        Ok(Bypass::Domain(domain.to_ascii_lowercase()))
    }

    fn covers(&self, host: &str) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match self {
            Bypass::All => true,
            Bypass::Network(net) => bare.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
            Bypass::Domain(domain) => {
                let host = bare.trim_end_matches('.');
                host.eq_ignore_ascii_case(domain)
                    || (host.len() > domain.len()
                        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
                        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain))
            }
        }
    }
}

/// Which proxy each kind of destination goes through, and what goes direct.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// For `https://` upstreams.
    pub https: Option<Proxy>,
    /// For `http://` upstreams.
    pub http: Option<Proxy>,
    pub bypass: Vec<Bypass>,
}

impl Route {
    /// Every destination through `proxy`, but those `bypass` names.
    pub fn via(proxy: Proxy, bypass: Vec<Bypass>) -> Route {
        Route {
            https: Some(proxy.clone()),
            http: Some(proxy),
            bypass,
        }
    }

    /// No proxy at all.
    pub fn direct() -> Route {
        Route::default()
    }

    /// The proxy a connection to `host` (as a URL writes it) goes through, if any. A proxy's
    /// own address never goes through a proxy: an absolute-form request to an HTTP proxy is a
    /// connection to the proxy itself.
    pub fn proxy_for(&self, https: bool, host: &str, port: u16) -> Option<&Proxy> {
        let proxy = if https { &self.https } else { &self.http };
        let proxy = proxy.as_ref()?;
        if self.proxy_at(host, port).is_some() || self.bypass.iter().any(|b| b.covers(host)) {
            return None;
        }
        Some(proxy)
    }

    /// The proxy listening at `host:port`, if one of this route's does.
    pub fn proxy_at(&self, host: &str, port: u16) -> Option<&Proxy> {
        [&self.https, &self.http]
            .into_iter()
            .flatten()
            .find(|p| p.port == port && p.host.eq_ignore_ascii_case(host))
    }

    /// Every proxy of this route.
    pub fn proxies(&self) -> impl Iterator<Item = &Proxy> {
        [&self.https, &self.http].into_iter().flatten()
    }

    /// Whether any destination goes through a proxy.
    pub fn is_direct(&self) -> bool {
        self.https.is_none() && self.http.is_none()
    }

    /// From the conventional variables (`vars` is the environment), as curl reads them: the
    /// lower-case name first, then the upper-case one; `all_proxy` for a scheme without its
    /// own. An empty value is unset. Each problem names its variable.
    pub fn from_env<'a>(var: impl Fn(&str) -> Option<&'a str>) -> Result<Route, Vec<String>> {
        let mut problems = Vec::new();
        let read = |names: [&str; 2]| {
            names.into_iter().find_map(|name| {
                var(name)
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| (name.to_owned(), v.to_owned()))
            })
        };
        let proxy = |names: [&str; 2], problems: &mut Vec<String>| {
            let (name, value) = read(names).or_else(|| read(["all_proxy", "ALL_PROXY"]))?;
            Proxy::parse(&value)
                .map_err(|e| problems.push(format!("{name}: {e}")))
                .ok()
        };
        let https = proxy(["https_proxy", "HTTPS_PROXY"], &mut problems);
        let http = proxy(["http_proxy", "HTTP_PROXY"], &mut problems);
        let mut bypass = Vec::new();
        if let Some((name, value)) = read(["no_proxy", "NO_PROXY"]) {
            for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                match Bypass::parse(entry) {
                    Ok(b) => bypass.push(b),
                    Err(e) => problems.push(format!("{name}: {e}")),
                }
            }
        }
        if problems.is_empty() {
            Ok(Route {
                https,
                http,
                bypass,
            })
        } else {
            Err(problems)
        }
    }
}

/// `headers` with each repeated field as one line, its values joined by `, ` (RFC 9110 §5.3:
/// the same field, for the list-based fields a request repeats). For requests an HTTP proxy
/// parses: tinyproxy keeps one line of a repeated field, so a client's several `Accept` lines
/// reached the registry as one, and distribution then answered a schema 1 manifest.
pub fn fold_repeated_fields(headers: &HeaderMap) -> HeaderMap {
    let mut folded = HeaderMap::with_capacity(headers.len_keys());
    for name in headers.keys() {
        let mut values = headers.get_all(name);
        let first = values.next().expect("a key has a value").clone();
        let value = values.fold(first, |joined, next| {
            let mut bytes = joined.as_bytes().to_vec();
            bytes.extend_from_slice(b", ");
            bytes.extend_from_slice(next.as_bytes());
            HeaderValue::from_bytes(&bytes).unwrap_or(joined)
        });
        folded.insert(name.clone(), value);
    }
    folded
}

/// The variables [`Route::from_env`] reads.
pub const ENV_VARS: [&str; 8] = [
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = Proxy::parse("http://user:p%40ss@proxy.corp:3128").unwrap();
        assert_eq!(p.kind, ProxyKind::Http);
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        let login = p.login.clone().unwrap();
        assert_eq!(
            (login.user.as_str(), login.password.as_str()),
            ("user", "p@ss")
        );
        assert_eq!(p.to_string(), "http://user:***@proxy.corp:3128");
        assert_eq!(
            p.basic_authorization().unwrap(),
            "Basic dXNlcjpwQHNz" // user:p@ss
        );
        let p = Proxy::parse("proxy.corp:8080").unwrap();
        assert_eq!((p.kind, p.port), (ProxyKind::Http, 8080));
        assert_eq!(Proxy::parse("http://proxy").unwrap().port, 80);
        let p = Proxy::parse("socks5h://[::1]").unwrap();
        assert_eq!((p.kind, p.port), (ProxyKind::Socks5h, 1080));
        assert_eq!((p.host.as_str(), p.bare_host()), ("[::1]", "::1"));
        assert_eq!(
            Proxy::parse("socks5://127.0.0.1:1").unwrap().kind,
            ProxyKind::Socks5
        );
        let err = Proxy::parse("https://u:secret@p:1").unwrap_err();
        assert!(err.contains("not supported"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        assert!(Proxy::parse("ftp://p:1")
            .unwrap_err()
            .contains("unknown proxy scheme"));
        assert!(Proxy::parse("http://p:1/path").is_err());
        let err = Proxy::parse("http://u:secret@:1").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn bypass_entries() {
        let route = Route::via(
            Proxy::parse("http://proxy:3128").unwrap(),
            ["internal.corp", ".svc", "10.0.0.0/8", "::1", "*.lan"]
                .iter()
                .map(|e| Bypass::parse(e).unwrap())
                .collect(),
        );
        let through = |host: &str| route.proxy_for(true, host, 443).is_some();
        assert!(!through("internal.corp"));
        assert!(!through("registry.internal.corp"));
        assert!(!through("Registry.Internal.Corp."));
        assert!(through("notinternal.corp"));
        assert!(!through("kube.svc"));
        assert!(!through("10.1.2.3"));
        assert!(through("11.1.2.3"));
        assert!(!through("[::1]"));
        assert!(!through("printer.lan"));
        assert!(through("registry-1.docker.io"));
        // The proxy itself: an absolute-form request's connection.
        assert!(route.proxy_for(false, "proxy", 3128).is_none());
        assert!(route.proxy_for(false, "proxy", 80).is_some());
        let all = Route::via(Proxy::parse("p:1").unwrap(), vec![Bypass::All]);
        assert!(all.proxy_for(true, "anything", 443).is_none());
        assert!(Bypass::parse("a b").is_err());
        assert!(Bypass::parse("10.0.0.0/33").is_err());
    }

    use actix_web::http::header;

    #[test]
    fn repeated_fields_become_one_line() {
        let mut headers = HeaderMap::new();
        for accept in [
            "application/json",
            "application/vnd.oci.image.index.v1+json",
        ] {
            headers.append(header::ACCEPT, HeaderValue::from_static(accept));
        }
        headers.insert(header::HOST, HeaderValue::from_static("registry"));
        let folded = fold_repeated_fields(&headers);
        assert_eq!(folded.len(), 2);
        assert_eq!(
            folded.get("accept").unwrap(),
            "application/json, application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(folded.get("host").unwrap(), "registry");
    }

    #[test]
    fn environment_as_curl_reads_it() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
        };
        let route = Route::from_env(env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:1"),
            ("ALL_PROXY", "socks5h://all:1080"),
            ("NO_PROXY", "localhost,127.0.0.0/8"),
        ]))
        .unwrap();
        assert_eq!(route.https.unwrap().host, "lower");
        assert_eq!(route.http.unwrap().kind, ProxyKind::Socks5h);
        assert_eq!(route.bypass.len(), 2);
        assert!(Route::from_env(env(&[("http_proxy", " ")]))
            .unwrap()
            .is_direct());
        let problems = Route::from_env(env(&[("http_proxy", "gopher://x:1"), ("no_proxy", "a b")]))
            .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("http_proxy: "), "{problems:?}");
        assert!(problems[1].starts_with("no_proxy: "), "{problems:?}");
    }
}
