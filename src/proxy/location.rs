//! Absolute `Location`s on an upstream, pointed back at the mirror.

use url::Url;

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
