//! Header policies, as pure functions over header maps and strings: what goes up to an
//! upstream, what comes back down, and the two rewrites that keep a client talking to the
//! mirror (the token challenge and absolute `Location`s).

use std::net::IpAddr;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use url::Url;

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1), plus the
/// proxy-only ones. They are removed in both directions.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
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
    strip_hop_by_hop(&mut headers);
    for name in [header::HOST, header::CONTENT_LENGTH, header::EXPECT] {
        headers.remove(name);
    }
    if let Ok(host) = HeaderValue::from_str(upstream_host) {
        headers.insert(header::HOST, host);
    }
    let forwarded_for = forwarded_for(incoming, downstream.peer_ip);
    headers.remove(X_FORWARDED_FOR);
    if let Some(value) = forwarded_for.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.remove(X_REAL_IP);
    if let Some(ip) = downstream.client_ip.or(downstream.peer_ip) {
        headers.insert(
            X_REAL_IP,
            HeaderValue::from_str(&ip.to_string()).expect("an IP is a valid header"),
        );
    }
    if let Ok(proto) = HeaderValue::from_str(downstream.proto) {
        headers.insert(X_FORWARDED_PROTO, proto);
    }
    headers
}

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// nginx's `$proxy_add_x_forwarded_for`: the existing list (all header lines) with the peer
/// appended.
fn forwarded_for(incoming: &HeaderMap, peer_ip: Option<IpAddr>) -> Option<String> {
    let mut hops: Vec<String> = incoming
        .get_all(X_FORWARDED_FOR)
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    hops.extend(peer_ip.map(|ip| ip.to_string()));
    (!hops.is_empty()).then(|| hops.join(", "))
}

/// The request headers that may travel on a redirect hop to another origin (the blob CDN):
/// what selects the bytes and how they are sent, nothing else. The client's registry
/// credentials and cookies must not reach a third party (and S3-style CDNs answer 400 to a
/// second auth mechanism); headers that only mean something to the mirror or to the registry
/// (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `X-Registry-Auth` ...) would tell a third party
/// who the client is or what the mirror is told. An allow list, so a header nobody thought of
/// stays home.
const CDN_REQUEST_HEADERS: [HeaderName; 9] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::USER_AGENT,
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// For a redirect hop to another origin (the blob CDN): only [`CDN_REQUEST_HEADERS`] go, and
/// the CDN gets its own `Host`.
pub fn cross_origin_hop(headers: &mut HeaderMap, next_host: &str) {
    let mut kept = HeaderMap::with_capacity(CDN_REQUEST_HEADERS.len() + 1);
    for name in CDN_REQUEST_HEADERS {
        for value in headers.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    if let Ok(host) = HeaderValue::from_str(next_host) {
        kept.insert(header::HOST, host);
    }
    *headers = kept;
}

/// The response headers a client gets from the blob CDN: what describes the bytes. The rest
/// is the CDN's own business (`Server`, `Via`, `X-Amz-*`, `CF-Ray`, `Set-Cookie` for its
/// domain, `Alt-Svc` naming hosts the client cannot reach) and is not passed on.
const CDN_RESPONSE_HEADERS: [HeaderName; 12] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::CONTENT_ENCODING,
    header::ACCEPT_RANGES,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::DATE,
    HeaderName::from_static("docker-content-digest"),
    HeaderName::from_static("docker-distribution-api-version"),
];

/// The headers a client receives from the blob CDN's answer: [`CDN_RESPONSE_HEADERS`] only.
pub fn cdn_response_headers(cdn: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::with_capacity(CDN_RESPONSE_HEADERS.len());
    for name in CDN_RESPONSE_HEADERS {
        for value in cdn.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// The headers a client receives from an upstream response: all of them but hop-by-hop ones.
/// Framing (`Content-Length`) is decided by the body the relay builds.
pub fn client_response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut headers = upstream.clone();
    strip_hop_by_hop(&mut headers);
    headers
}

/// The `Host` header value for a URL: host, plus the port when it is not the scheme's default.
pub fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let host = match url.host() {
        Some(url::Host::Ipv6(_)) if !host.starts_with('[') => format!("[{host}]"),
        _ => host.to_owned(),
    };
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// One parsed `WWW-Authenticate` challenge: scheme and its auth-params in order.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

/// Parses a challenge `scheme param=value, param="quoted, value"` (RFC 9110 §11.6.1). Returns
/// `None` when the value does not follow the grammar. Values are unquoted.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, mut rest) = match value.find([' ', '\t']) {
        Some(i) => (&value[..i], value[i..].trim_start()),
        None => (value, ""),
    };
    if scheme.is_empty() || !scheme.bytes().all(is_token_byte) {
        return None;
    }
    let mut params = Vec::new();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return None;
        }
        rest = rest[eq + 1..].trim_start();
        let (param_value, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &quoted[end?..])
        } else {
            let end = rest.find([',', ' ', '\t']).unwrap_or(rest.len());
            let token = &rest[..end];
            if token.is_empty() || !token.bytes().all(is_token_byte) {
                return None;
            }
            (token.to_owned(), &rest[end..])
        };
        params.push((name.to_ascii_lowercase(), param_value));
        rest = after.trim_start();
        if let Some(next) = rest.strip_prefix(',') {
            rest = next.trim_start();
        } else if !rest.is_empty() {
            return None;
        }
    }
    Some(Challenge {
        scheme: scheme.to_owned(),
        params,
    })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A quoted-string (RFC 9110 §5.6.4): `"` and `\\` escaped, so the value stays one value.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Rewrites a Bearer challenge so its realm is ours; every other parameter (`service`, `scope`,
/// `error`) is kept exactly, in order. Returns `None` for other schemes (e.g. `Basic`), which
/// pass untouched. A Bearer challenge that does not parse still gets our realm, so the client
/// never learns an upstream token URL it cannot reach.
pub fn rewrite_challenge(value: &str, realm: &str) -> Option<String> {
    rewrite_bearer(value, |_| realm.to_owned(), str::to_owned)
}

/// [`rewrite_challenge`] with the realm chosen from the upstream's own (`None` when it named
/// none, or the challenge does not parse) and each `scope` value passed through `map_scope`
/// (the path-prefix form puts the prefix back on repository names).
pub fn rewrite_bearer(
    value: &str,
    our_realm: impl FnOnce(Option<&str>) -> String,
    map_scope: impl Fn(&str) -> String,
) -> Option<String> {
    let scheme_is_bearer = |s: &str| s.eq_ignore_ascii_case("bearer");
    let challenge = match parse_challenge(value) {
        Some(c) if scheme_is_bearer(&c.scheme) => c,
        Some(_) => return None,
        None => {
            let scheme = value.trim().split([' ', '\t']).next().unwrap_or_default();
            if !scheme_is_bearer(scheme) {
                return None;
            }
            log::warn!("malformed Bearer challenge from upstream: {value:?}");
            Challenge {
                scheme: "Bearer".into(),
                params: Vec::new(),
            }
        }
    };
    let upstream_realm = challenge
        .params
        .iter()
        .find(|(n, _)| n == "realm")
        .map(|(_, v)| v.as_str());
    let mut out = format!("Bearer realm={}", quote(&our_realm(upstream_realm)));
    for (name, value) in challenge.params.iter().filter(|(n, _)| n != "realm") {
        out.push(',');
        out.push_str(name);
        out.push('=');
        if name == "scope" {
            out.push_str(&quote(&map_scope(value)));
        } else {
            out.push_str(&quote(value));
        }
    }
    Some(out)
}

/// An absolute `Location` that points back at the upstream registry (upload URLs, redirects we
/// do not follow) is turned into the same path on the mirror, so a push keeps going through us.
/// Compares host and port only: the registry builds the URL from our `X-Forwarded-Proto`.
pub fn public_location(location: &str, upstream: &Url, public_base: &str) -> Option<String> {
    let target = Url::parse(location).ok()?;
    // Explicit ports (`port()`, not the scheme default) so `http://h/` matches `https://h`.
    // Only http(s): `foo://registry-host` is not the registry, and may have an empty path.
    if !matches!(target.scheme(), "http" | "https")
        || target.host_str() != upstream.host_str()
        || target.port() != upstream.port()
    {
        return None;
    }
    let mut out = format!("{}{}", public_base.trim_end_matches('/'), target.path());
    if let Some(query) = target.query() {
        out.push('?');
        out.push_str(query);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::try_from(*name).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

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
    fn forwarded_for_joins_every_line() {
        let incoming = map(&[
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3"),
        ]);
        let got = forwarded_for(&incoming, Some("::1".parse().unwrap()));
        assert_eq!(got.as_deref(), Some("1.1.1.1, 2.2.2.2, 3.3.3.3, ::1"));
        assert_eq!(forwarded_for(&HeaderMap::new(), None), None);
    }

    #[test]
    fn cross_origin_hop_drops_credentials_keeps_range() {
        let mut headers = map(&[
            ("host", "registry-1.docker.io"),
            ("authorization", "Bearer abc"),
            ("cookie", "a=b"),
            ("range", "bytes=5-"),
            ("if-range", "\"etag\""),
            ("user-agent", "docker/27"),
            ("forwarded", "for=192.0.2.1;host=mirror"),
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-host", "mirror.example.com"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "192.0.2.1"),
            ("x-registry-auth", "eyJ1c2VybmFtZSI6ImEifQ=="),
            ("docker-distribution-api-version", "registry/2.0"),
        ]);
        cross_origin_hop(&mut headers, "cdn.example:8443");
        let mut left: Vec<_> = headers.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(left, ["host", "if-range", "range", "user-agent"]);
        assert_eq!(headers.get("host").unwrap(), "cdn.example:8443");
        assert_eq!(headers.get("range").unwrap(), "bytes=5-");
    }

    #[test]
    fn the_cdns_own_headers_stay_with_the_cdn() {
        let cdn = map(&[
            ("content-type", "application/octet-stream"),
            ("content-length", "10"),
            ("content-range", "bytes 0-9/100"),
            ("etag", "\"abc\""),
            ("accept-ranges", "bytes"),
            ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("server", "AmazonS3"),
            ("via", "1.1 cloudfront"),
            ("x-amz-request-id", "R"),
            ("x-amz-id-2", "I"),
            ("cf-ray", "x"),
            ("set-cookie", "__cf_bm=secret; Domain=.cdn.example"),
            ("alt-svc", "h3=\":443\""),
        ]);
        let mut left: Vec<_> = cdn_response_headers(&cdn)
            .keys()
            .map(|k| k.as_str().to_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "accept-ranges",
                "content-length",
                "content-range",
                "content-type",
                "etag",
                "last-modified"
            ]
        );
    }

    #[test]
    fn host_header_keeps_non_default_ports() {
        assert_eq!(
            host_header(&Url::parse("https://a.example/x").unwrap()),
            "a.example"
        );
        assert_eq!(
            host_header(&Url::parse("http://127.0.0.1:5000").unwrap()),
            "127.0.0.1:5000"
        );
        assert_eq!(
            host_header(&Url::parse("http://[::1]:80/").unwrap()),
            "[::1]"
        );
        assert_eq!(
            host_header(&Url::parse("http://[::1]:81/").unwrap()),
            "[::1]:81"
        );
    }

    #[test]
    fn challenge_keeps_service_and_scope_exactly() {
        let upstream = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#;
        assert_eq!(
            rewrite_challenge(upstream, "https://mirror.example.com/token").unwrap(),
            r#"Bearer realm="https://mirror.example.com/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
        );
    }

    #[test]
    fn bearer_realm_is_chosen_from_the_upstream_one_and_scopes_mapped() {
        let upstream =
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/i:pull""#;
        let out = rewrite_bearer(
            upstream,
            |named| format!("http://m/token/ghcr.io?named={}", named.unwrap_or("none")),
            |scope| scope.replace("repository:", "repository:ghcr.io/"),
        );
        assert_eq!(
            out.unwrap(),
            r#"Bearer realm="http://m/token/ghcr.io?named=https://ghcr.io/token",service="ghcr.io",scope="repository:ghcr.io/o/i:pull""#
        );
        let none = rewrite_bearer(r#"Bearer service="s""#, |n| format!("{n:?}"), str::to_owned);
        assert_eq!(none.unwrap(), r#"Bearer realm="None",service="s""#);
    }

    #[test]
    fn challenge_without_scope_gets_none() {
        let upstream =
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#;
        assert_eq!(
            rewrite_challenge(upstream, "http://m/token").unwrap(),
            r#"Bearer realm="http://m/token",service="registry.docker.io""#
        );
    }

    #[test]
    fn challenge_scope_with_commas_and_extra_params_survive() {
        let upstream = r#"bearer service="registry.docker.io", realm="https://[2001:db8::1]/token" , scope="repository:a/b:pull,push",error="insufficient_scope""#;
        assert_eq!(
            rewrite_challenge(upstream, "http://m/token").unwrap(),
            r#"Bearer realm="http://m/token",service="registry.docker.io",scope="repository:a/b:pull,push",error="insufficient_scope""#
        );
    }

    #[test]
    fn challenge_token_values_and_escapes_parse() {
        let parsed = parse_challenge(r#"Bearer realm=plain,service="a\"b""#).unwrap();
        assert_eq!(
            parsed.params,
            vec![
                ("realm".into(), "plain".into()),
                ("service".into(), "a\"b".into())
            ]
        );
        assert_eq!(
            rewrite_challenge(r#"Bearer service="a\"b""#, "r").unwrap(),
            r#"Bearer realm="r",service="a\"b""#
        );
    }

    #[test]
    fn other_schemes_pass_and_malformed_bearer_is_contained() {
        assert_eq!(rewrite_challenge(r#"Basic realm="Registry""#, "r"), None);
        assert_eq!(
            rewrite_challenge(r#"Bearer realm="unterminated"#, "r").unwrap(),
            r#"Bearer realm="r""#
        );
        assert_eq!(parse_challenge(r#"Bearer realm="x" junk"#), None);
        assert_eq!(parse_challenge(r#"Bearer =x"#), None);
        assert_eq!(parse_challenge(""), None);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn token() -> impl Strategy<Value = String> {
            "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
        }

        /// A challenge and one of the many ways to write it: quoted or bare values, optional
        /// whitespace around commas, any characters inside quotes.
        fn written_challenge() -> impl Strategy<Value = (Challenge, String)> {
            let scheme =
                prop::sample::select(vec!["Bearer", "bearer", "BEARER", "Basic", "X-Ours"]);
            let param = (
                token(),
                any::<String>(),
                any::<bool>(),
                0..3usize,
                0..3usize,
            );
            (scheme, prop::collection::vec(param, 0..6), 0..3usize).prop_map(
                |(scheme, params, pad)| {
                    let ws = |n: usize| [" ", "\t", ""][n];
                    let mut text = format!("{}{scheme}", ws(pad));
                    let mut parsed = Vec::new();
                    for (i, (name, value, bare, before, after)) in params.into_iter().enumerate() {
                        let bare = bare && !value.is_empty() && value.bytes().all(is_token_byte);
                        let written = if bare { value.clone() } else { quote(&value) };
                        text.push_str(if i == 0 { " " } else { ws(before) });
                        if i > 0 {
                            text.push(',');
                            text.push_str(ws(after));
                        }
                        text.push_str(&format!("{name}={written}"));
                        parsed.push((name.to_ascii_lowercase(), value));
                    }
                    text.push_str(ws(pad));
                    let challenge = Challenge {
                        scheme: scheme.to_owned(),
                        params: parsed,
                    };
                    (challenge, text)
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::default())]

            /// The parser reads back what the grammar writes, and the rewriter keeps every
            /// parameter but the realm, exactly (the checks of `fuzzing::challenge`).
            #[test]
            fn challenges_round_trip((challenge, text) in written_challenge()) {
                prop_assert_eq!(parse_challenge(&text), Some(challenge));
                crate::fuzzing::challenge(text.as_bytes());
            }
        }
    }

    #[test]
    fn locations_on_the_upstream_come_back_through_the_mirror() {
        let upstream = Url::parse("https://registry-1.docker.io").unwrap();
        assert_eq!(
            public_location(
                "https://registry-1.docker.io/v2/a/b/blobs/uploads/123?_state=x",
                &upstream,
                "http://mirror:5000/"
            )
            .as_deref(),
            Some("http://mirror:5000/v2/a/b/blobs/uploads/123?_state=x")
        );
        // The registry may build the URL with our X-Forwarded-Proto.
        assert!(
            public_location("http://registry-1.docker.io/v2/", &upstream, "http://m").is_some()
        );
        assert_eq!(
            public_location("https://cdn.example/blob", &upstream, "http://m"),
            None
        );
        assert_eq!(public_location("/v2/relative", &upstream, "http://m"), None);
        // Found by fuzzing: another scheme naming the registry host (and an empty path).
        assert_eq!(
            public_location("foo://registry-1.docker.io", &upstream, "http://m"),
            None
        );
    }
}
