//! The origin clients are told to use: the token realm and the `Location`s pointed back at the
//! mirror are built from it. A request's `Host` is client input: a forged one would send the
//! client's credentials to whoever it names (harrisonwang/wharf CVE-2025-63761), so it is only
//! believed when it is one of the configured `server_names`, as nginx's `server_name` does.

use std::fmt;

use url::{Host, Url};

/// One configured server name: a host, and a port when only that port is meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerName {
    /// Normalised: lowercase, IDNA-mapped, IPv6 in brackets.
    host: String,
    port: Option<u16>,
}

impl ServerName {
    /// Parses `host` or `host:port` (`[v6]:port` for IPv6), as a `Host` header is written.
    pub fn parse(text: &str) -> Result<ServerName, String> {
        let (host, port) = split_authority(text.trim()).ok_or_else(|| {
            format!("'{text}' is not a host name with an optional port, such as mirror.example.com or mirror.example.com:5000")
        })?;
        Ok(ServerName { host, port })
    }

    /// Whether a request for `host` (with its explicit port, else the scheme's `default_port`)
    /// is for this name. A name without a port matches every port.
    fn matches(&self, host: &str, port: Option<u16>, default_port: u16) -> bool {
        self.host == host && self.port.is_none_or(|p| p == port.unwrap_or(default_port))
    }

    /// Whether a request's `Host` (or `:authority`), reached over `proto`, is this name, with
    /// the same rules as `server_names` (case-insensitive; a name with a port matches it only).
    pub fn matches_request_host(&self, request_host: &str, proto: &str) -> bool {
        let default_port = if proto == "https" { 443 } else { 80 };
        split_authority(request_host)
            .is_some_and(|(host, port)| self.matches(&host, port, default_port))
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// Splits an authority (`host[:port]`) into its normalised host and explicit port; `None` when
/// it is not one (userinfo, a path, a bad port, characters no host name has).
fn split_authority(text: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = match text.rfind(':') {
        // A colon inside `[...]` belongs to an IPv6 address, not a port.
        Some(i) if !text[i..].contains(']') => (&text[..i], Some(&text[i + 1..])),
        _ => (text, None),
    };
    let port = match port {
        None => None,
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Some(digits.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    // `Host::parse` takes an IPv6 address only in brackets, and refuses `/`, `@`, `?`, `#`,
    // spaces and the other characters that would make the realm point somewhere else; it lets
    // a few more through in domains (`"`, `{`...) than DNS names have.
    let host = match Host::parse(host).ok()? {
        Host::Domain(domain) => domain,
        ip => ip.to_string(),
    };
    let dns_name = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    (!host.is_empty() && dns_name).then_some((host, port))
}

/// The origin (`scheme://host[:port]`, no trailing slash) for a request that reached us over
/// `proto` (`http` or `https`) with `Host` (or HTTP/2 `:authority`) `request_host`:
/// `public_url` when set, never the request; else the request's host when it is one of
/// `server_names`; else the first of them. With neither configured, the request's host as it
/// came (nginx's `$host`, as the config hubferry replaces used it; start-up warns about it).
pub fn public_base(
    public_url: Option<&Url>,
    server_names: &[ServerName],
    request_host: Option<&str>,
    proto: &str,
) -> String {
    if let Some(url) = public_url {
        return url.as_str().trim_end_matches('/').to_owned();
    }
    let Some(first) = server_names.first() else {
        return format!("{proto}://{}", request_host.unwrap_or("localhost"));
    };
    let default_port = if proto == "https" { 443 } else { 80 };
    let requested = request_host.and_then(split_authority);
    if let Some((host, port)) = requested {
        if server_names
            .iter()
            .any(|name| name.matches(&host, port, default_port))
        {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            return format!("{proto}://{host}{port}");
        }
    }
    format!("{proto}://{first}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<ServerName> {
        list.iter().map(|n| ServerName::parse(n).unwrap()).collect()
    }

    #[test]
    fn server_names_parse_and_normalise() {
        for (text, shown) in [
            ("mirror.example.com", "mirror.example.com"),
            ("Mirror.Example.COM:5000", "mirror.example.com:5000"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("[::1]:5000", "[::1]:5000"),
            ("[::1]", "[::1]"),
            (" localhost ", "localhost"),
        ] {
            assert_eq!(ServerName::parse(text).unwrap().to_string(), shown);
        }
        for bad in [
            "",
            "http://mirror.example.com",
            "mirror.example.com/x",
            "user@mirror.example.com",
            "mirror.example.com:",
            "mirror.example.com:99999",
            "mirror.example.com:5x",
            "::1",
            "a b",
        ] {
            assert!(ServerName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn public_url_wins_over_everything() {
        let url = Url::parse("https://mirror.example.com/").unwrap();
        for host in [Some("evil.example"), Some("mirror.test"), None] {
            assert_eq!(
                public_base(Some(&url), &names(&["mirror.test"]), host, "http"),
                "https://mirror.example.com"
            );
        }
    }

    #[test]
    fn only_configured_hosts_are_believed() {
        let list = names(&["mirror.test", "other.test:5000", "127.0.0.1:8443"]);
        let base = |host: Option<&str>, proto| public_base(None, &list, host, proto);
        assert_eq!(base(Some("evil.example"), "http"), "http://mirror.test");
        assert_eq!(
            base(Some("MIRROR.test:8080"), "http"),
            "http://mirror.test:8080"
        );
        assert_eq!(
            base(Some("other.test:5000"), "http"),
            "http://other.test:5000"
        );
        // A name with a port matches that port only (implicit ports count).
        assert_eq!(base(Some("other.test:5001"), "http"), "http://mirror.test");
        assert_eq!(base(Some("other.test"), "http"), "http://mirror.test");
        assert_eq!(
            base(Some("127.0.0.1:8443"), "https"),
            "https://127.0.0.1:8443"
        );
        let https = names(&["secure.test:443"]);
        assert_eq!(
            public_base(None, &https, Some("secure.test"), "https"),
            "https://secure.test"
        );
        // Whatever the header holds, the realm names a configured host.
        for hostile in [
            "mirror.test@evil.example",
            "evil.example/mirror.test",
            "mirror.test\"evil",
            "mirror.test:80:80",
            "",
        ] {
            assert_eq!(
                base(Some(hostile), "http"),
                "http://mirror.test",
                "{hostile}"
            );
        }
        assert_eq!(base(None, "https"), "https://mirror.test");
    }

    #[test]
    fn without_configuration_the_request_host_is_used() {
        assert_eq!(
            public_base(None, &[], Some("host.example:5000"), "http"),
            "http://host.example:5000"
        );
        assert_eq!(public_base(None, &[], None, "https"), "https://localhost");
    }
}
