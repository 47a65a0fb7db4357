//! What crosses a redirect hop to another origin, the blob CDN, in either direction: allow
//! lists, so that a header nobody thought of stays on its side.

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::header_map as map;

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
}
