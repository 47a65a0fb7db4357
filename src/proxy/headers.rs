//! Header policies for the exchange with the registry, as pure functions over header maps:
//! what goes up (hop-by-hop headers out, the upstream's `Host`, forwarding headers in) and
//! what comes back down. The CDN hop has its own (`upstream::cdn`), as do token challenges
//! (`challenge`) and `Location`s (`location`).

use std::net::IpAddr;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::net::ip_text::DottedQuad;

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1), plus the
/// proxy-only ones. They are removed in both directions.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// What the upstream does not get of the client's headers besides the hop-by-hop ones: Host,
/// X-Forwarded-For and X-Real-IP are set anew; the framing is the body's; `Expect` is ours.
static REPLACED_UPSTREAM: [HeaderName; 5] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::EXPECT,
    X_FORWARDED_FOR,
    X_REAL_IP,
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_where(headers, |_| false);
}

/// Removes hop-by-hop headers (as [`strip_hop_by_hop`]) and every header `also` picks. The
/// names present are found in one pass and only those removed: removing a name that is absent
/// still hashes it, and most of these are absent from most messages.
fn remove_where(headers: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) {
    let mut found: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name) || *name == header::UPGRADE || also(name))
        .cloned()
        .collect();
    if found.contains(&header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::try_from(name.trim()).ok())
            .collect();
        found.extend(named);
    }
    for name in found {
        headers.remove(name);
    }
}

/// Who is asking, as the forwarding headers describe them.
#[derive(Debug, Clone, Copy)]
pub struct Downstream<'a> {
    /// The address the connection came from (appended to `X-Forwarded-For`).
    pub peer_ip: Option<IpAddr>,
    /// The client behind trusted proxies, when there are any (`X-Real-IP`); else the peer.
    pub client_ip: Option<IpAddr>,
    /// `http` or `https`: how the client reached us.
    pub proto: &'a str,
}

/// The request headers an upstream receives: the client's own, untouched, except hop-by-hop
/// ones, framing (the body we send decides it), `Expect` (answered by us), and the upstream's
/// own `Host`; plus `X-Real-IP`, `X-Forwarded-For` (appended to) and `X-Forwarded-Proto`, as the
/// nginx config hubferry replaces sets them.
pub fn upstream_request_headers(
    incoming: &HeaderMap,
    downstream: Downstream<'_>,
    upstream_host: &str,
) -> HeaderMap {
    let mut headers = incoming.clone();
    remove_where(&mut headers, |name| REPLACED_UPSTREAM.contains(name));
    if let Ok(host) = HeaderValue::from_str(upstream_host) {
        headers.insert(header::HOST, host);
    }
    let peer = downstream.peer_ip.map(ip_text);
    if let Some(value) =
        forwarded_for(incoming, peer.as_deref()).and_then(|v| HeaderValue::from_str(&v).ok())
    {
        headers.insert(X_FORWARDED_FOR, value);
    }
    let real_ip = match downstream.client_ip {
        Some(client) if Some(client) != downstream.peer_ip => Some(ip_text(client)),
        _ => peer,
    };
    if let Some(ip) = real_ip {
        headers.insert(
            X_REAL_IP,
            HeaderValue::from_str(&ip).expect("an IP is a valid header"),
        );
    }
    if let Ok(proto) = HeaderValue::from_str(downstream.proto) {
        headers.insert(X_FORWARDED_PROTO, proto);
    }
    headers
}

/// An address as text, as `Display` writes it. IPv4 without the formatting machinery, which
/// cost more than the rest of the forwarding headers together.
fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => DottedQuad::default().write(v4).to_owned(),
        IpAddr::V6(_) => ip.to_string(),
    }
}

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// nginx's `$proxy_add_x_forwarded_for`: the existing list (all header lines) with the peer
/// appended.
fn forwarded_for(incoming: &HeaderMap, peer: Option<&str>) -> Option<String> {
    let mut hops: Vec<&str> = incoming
        .get_all(X_FORWARDED_FOR)
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    hops.extend(peer);
    (!hops.is_empty()).then(|| hops.join(", "))
}

/// The headers a client receives from an upstream response: all of them but hop-by-hop ones.
/// Framing (`Content-Length`) is decided by the body the relay builds.
pub fn client_response_headers(mut upstream: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut upstream);
    upstream
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::header_map as map;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("accept", "application/json"),
        ]);
        strip_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(left, vec!["accept"]);
    }

    #[test]
    fn upstream_gets_its_host_and_forwarding_headers() {
        let incoming = map(&[
            ("host", "mirror.example.com"),
            ("authorization", "Bearer abc"),
            ("accept", "application/vnd.oci.image.index.v1+json"),
            (
                "accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            ),
            ("range", "bytes=10-"),
            ("if-range", "\"etag\""),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-real-ip", "spoofed"),
            ("content-length", "0"),
            ("expect", "100-continue"),
            ("connection", "close"),
        ]);
        let mut downstream = Downstream {
            peer_ip: Some("192.0.2.7".parse().unwrap()),
            client_ip: None,
            proto: "http",
        };
        let headers = upstream_request_headers(&incoming, downstream, "registry-1.docker.io");
        assert_eq!(headers.get("host").unwrap(), "registry-1.docker.io");
        assert_eq!(headers.get("authorization").unwrap(), "Bearer abc");
        assert_eq!(headers.get_all("accept").count(), 2);
        assert_eq!(headers.get("range").unwrap(), "bytes=10-");
        assert_eq!(headers.get("if-range").unwrap(), "\"etag\"");
        assert_eq!(
            headers.get("x-forwarded-for").unwrap(),
            "10.0.0.1, 192.0.2.7"
        );
        assert_eq!(headers.get("x-real-ip").unwrap(), "192.0.2.7");
        assert_eq!(headers.get("x-forwarded-proto").unwrap(), "http");
        for gone in ["content-length", "expect", "connection"] {
            assert!(headers.get(gone).is_none(), "{gone} must not be forwarded");
        }
        // Behind a trusted proxy: the real client is X-Real-IP; each hop stays in XFF.
        downstream.client_ip = Some("10.0.0.1".parse().unwrap());
        let headers = upstream_request_headers(&incoming, downstream, "registry-1.docker.io");
        assert_eq!(headers.get("x-real-ip").unwrap(), "10.0.0.1");
        assert_eq!(
            headers.get("x-forwarded-for").unwrap(),
            "10.0.0.1, 192.0.2.7"
        );
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "192.0.2.255",
            "10.20.3.4",
            "::1",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn forwarded_for_joins_every_line() {
        let incoming = map(&[
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3"),
        ]);
        let got = forwarded_for(&incoming, Some("::1"));
        assert_eq!(got.as_deref(), Some("1.1.1.1, 2.2.2.2, 3.3.3.3, ::1"));
        assert_eq!(forwarded_for(&HeaderMap::new(), None), None);
    }
}
