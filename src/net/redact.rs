//! URLs as logs and answers show them: without what makes them capabilities. A signed CDN URL
//! (`?verify=...`), a presigned S3 URL (`?X-Amz-Signature=...`) or userinfo grants access for
//! as long as it is valid, to whoever reads it.

use url::Url;

/// How a URL hubferry asked is shown in answers and logs: scheme, host, port and path. Its
/// query and userinfo are left out: a signed CDN URL (`?verify=...`) or a presigned S3 URL
/// (`?X-Amz-Signature=...`) is a bearer capability for as long as it is valid.
pub fn shown(url: &Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    shown
}

/// As [`shown`], for a `Location` as an upstream wrote it (it may not parse): cut before its
/// query or fragment, without userinfo.
pub fn shown_text(location: &str) -> String {
    let end = location.find(['?', '#']).unwrap_or(location.len());
    let location = &location[..end];
    // `scheme://userinfo@host/...`: the userinfo ends at the last `@` before the path.
    let authority_start = match location.find("://") {
        Some(i) => i + 3,
        None if location.starts_with("//") => 2,
        None => return location.to_owned(),
    };
    let authority_end = location[authority_start..]
        .find('/')
        .map_or(location.len(), |i| authority_start + i);
    match location[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}{}",
            &location[..authority_start],
            &location[authority_start + at + 1..]
        ),
        None => location.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_capabilities() {
        let signed = Url::parse(
            "https://user:pw@cdn.example:8443/a/b%20c?verify=1700000000-SIG&X-Amz-Signature=s#f",
        )
        .unwrap();
        assert_eq!(shown(&signed), "https://cdn.example:8443/a/b%20c");
        assert_eq!(
            shown(&Url::parse("http://[::1]/x?y").unwrap()),
            "http://[::1]/x"
        );
        assert_eq!(
            shown_text("https://u:p@cdn.example/blob?sig=SECRET"),
            "https://cdn.example/blob"
        );
        assert_eq!(shown_text("//u@h/p?s"), "//h/p");
        assert_eq!(shown_text("/relative?sig=1"), "/relative");
        assert_eq!(shown_text("http://[::1?sig=1"), "http://[::1");
    }
}
