//! The request target (path and query) a client sent, checked before anything is forwarded.
//!
//! `/v2` paths must follow the distribution spec's grammar (repository names, tags, digests,
//! the known endpoints), and are forwarded in the exact form that was checked. Every forwarded
//! path and query must at least read one way only: an upstream (or a proxy in front of it) that
//! decodes `%2F`, resolves `..` or turns `\` into `/` must not see a different resource than the
//! one we checked. These are pure functions; `error.rs` decides what each [`Rejection`] becomes.

use crate::error::Rejection;

/// The registry API endpoint a `/v2` path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/` (and `/v2`): the version check, where the token challenge starts.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/manifests/<tag or digest>`.
    Manifest,
    /// `/v2/<name>/blobs/<digest>`.
    Blob,
    /// `/v2/<name>/blobs/uploads/` and `/v2/<name>/blobs/uploads/<session>`.
    Upload,
    /// `/v2/<name>/tags/list`.
    Tags,
    /// `/v2/<name>/referrers/<digest>`.
    Referrers,
}

/// A checked `/v2` path: the endpoint, and the path to forward (percent-decoded: every
/// character the grammar allows is safe in a path as it is, so what goes up is byte for byte
/// what was checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryPath {
    pub endpoint: Endpoint,
    pub path: String,
    /// The repository name (empty for `/v2/` and `/v2/_catalog`).
    pub name: String,
    /// What follows the name: `manifests/latest`, `blobs/uploads/`...
    pub tail: String,
}

impl RegistryPath {
    /// The same endpoint for another repository name (the one the upstream knows it by).
    pub fn with_name(&self, name: &str) -> String {
        format!("/v2/{name}/{}", self.tail)
    }
}

/// Longest repository name, slashes included (distribution spec).
const MAX_NAME_LEN: usize = 255;
/// Longest tag: one leading character and up to 127 more.
const MAX_TAG_LEN: usize = 128;

/// Checks a raw `/v2` path (as it arrived, still percent-encoded) against the registry API.
pub fn registry_path(raw: &str) -> Result<RegistryPath, Rejection> {
    let path = decode_path(raw)?;
    let rest = match path.strip_prefix("/v2") {
        Some("") | Some("/") => {
            return Ok(RegistryPath {
                endpoint: Endpoint::Base,
                path,
                name: String::new(),
                tail: String::new(),
            })
        }
        Some(rest) if rest.starts_with('/') => &rest[1..],
        _ => return Err(Rejection::Unsupported(format!("{raw:?} is not below /v2/"))),
    };
    if rest == "_catalog" {
        return Ok(RegistryPath {
            endpoint: Endpoint::Catalog,
            path,
            name: String::new(),
            tail: String::new(),
        });
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let unsupported = || Rejection::Unsupported(raw.to_owned());
    // The endpoint is read from the right: a name has one or more components, and may itself
    // hold a component called `manifests` or `blobs`.
    let (endpoint, name_len) = match segments.as_slice() {
        [.., "blobs", "uploads", session] => {
            check_session(session)?;
            (Endpoint::Upload, segments.len() - 3)
        }
        [.., "blobs", "uploads"] => (Endpoint::Upload, segments.len() - 2),
        [.., "manifests", reference] => {
            check_reference(reference)?;
            (Endpoint::Manifest, segments.len() - 2)
        }
        [.., "blobs", digest] => {
            check_digest(digest)?;
            (Endpoint::Blob, segments.len() - 2)
        }
        [.., "referrers", digest] => {
            check_digest(digest)?;
            (Endpoint::Referrers, segments.len() - 2)
        }
        [.., "tags", "list"] => (Endpoint::Tags, segments.len() - 2),
        _ => return Err(unsupported()),
    };
    if name_len == 0 {
        return Err(unsupported());
    }
    check_name(&segments[..name_len])?;
    Ok(RegistryPath {
        endpoint,
        name: segments[..name_len].join("/"),
        tail: segments[name_len..].join("/"),
        path,
    })
}

/// Checks a path that is forwarded without a grammar of its own (the catch-all route): it must
/// read one way only, and must not read as a registry API path to an upstream that decodes it
/// (`/%762/...`) or collapses empty segments (`//v2/...`, as Go's router does): the registry
/// API goes through [`registry_path`], its admission and image checks, or nowhere.
pub fn plain_path(raw: &str) -> Result<(), Rejection> {
    let decoded = decode_path(raw)?;
    if decoded.contains("//") {
        return Err(Rejection::Ambiguous("empty segment in the path".into()));
    }
    let first = decoded[1..].split('/').next().unwrap_or_default();
    if first.eq_ignore_ascii_case("v2") {
        return Err(Rejection::Ambiguous(format!(
            "{raw:?} reads as a registry API path once decoded"
        )));
    }
    Ok(())
}

/// Checks a raw query (without the `?`): well-formed percent-encoding and no control character,
/// encoded or not (a `%0D%0A` would split a header line in an upstream that logs or reuses it).
/// Encoded slashes are fine here: `?from=library%2Fnginx` is how a cross-mount names its source.
pub fn query(raw: &str) -> Result<(), Rejection> {
    let decoded = percent_decode(raw)?;
    if let Some(c) = decoded.iter().find(|b| is_control(**b)) {
        return Err(Rejection::Ambiguous(format!(
            "control character 0x{c:02x} in the query"
        )));
    }
    Ok(())
}

/// Percent-decodes a path and refuses what different decoders would read differently.
fn decode_path(raw: &str) -> Result<String, Rejection> {
    if !raw.starts_with('/') {
        return Err(Rejection::Ambiguous(format!(
            "{raw:?} does not start with /"
        )));
    }
    // Before decoding: a decoded `%2F` is indistinguishable from a real separator.
    if let Some(at) = raw.to_ascii_lowercase().find("%2f") {
        return Err(Rejection::Ambiguous(format!(
            "encoded slash at byte {at} of the path"
        )));
    }
    let decoded = percent_decode(raw)?;
    if let Some(c) = decoded.iter().find(|b| is_control(**b)) {
        return Err(Rejection::Ambiguous(format!(
            "control character 0x{c:02x} in the path"
        )));
    }
    // Some servers treat a backslash as a separator (and the url crate does, for http URLs).
    if decoded.contains(&b'\\') {
        return Err(Rejection::Ambiguous("backslash in the path".into()));
    }
    let decoded = String::from_utf8(decoded)
        .map_err(|_| Rejection::Ambiguous("the path is not UTF-8 once decoded".into()))?;
    if decoded.split('/').any(|s| s == "." || s == "..") {
        return Err(Rejection::Ambiguous("dot segment in the path".into()));
    }
    Ok(decoded)
}

fn percent_decode(raw: &str) -> Result<Vec<u8>, Rejection> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = bytes.get(i + 1..i + 3);
            let value = pair.and_then(|p| Some(hex(p[0])? << 4 | hex(p[1])?));
            let Some(value) = value else {
                return Err(Rejection::Ambiguous(format!(
                    "invalid percent-encoding at byte {i}"
                )));
            };
            out.push(value);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Name components `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*` joined by `/`, at most 255
/// characters in all.
fn check_name(components: &[&str]) -> Result<(), Rejection> {
    let len = components.iter().map(|c| c.len()).sum::<usize>() + components.len() - 1;
    if len > MAX_NAME_LEN {
        return Err(Rejection::Name(format!(
            "{len} characters, more than {MAX_NAME_LEN}"
        )));
    }
    for component in components {
        if !is_name_component(component) {
            return Err(Rejection::Name(format!(
                "{component:?} is not lowercase letters and digits, separated by ., _, __ or dashes"
            )));
        }
    }
    Ok(())
}

pub fn is_name_component(component: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between alphanumeric runs: one `.`, one `_`, `__`, or any number of `-`.
    bytes
        .split(alnum)
        .filter(|sep| !sep.is_empty())
        .all(|sep| matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|b| *b == b'-'))
}

/// A tag `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`, or a digest (anything with a `:`).
fn check_reference(reference: &str) -> Result<(), Rejection> {
    if reference.contains(':') {
        return check_digest(reference);
    }
    let bytes = reference.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    let valid = bytes.first().is_some_and(word)
        && bytes.len() <= MAX_TAG_LEN
        && bytes.iter().all(|b| word(b) || *b == b'.' || *b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Rejection::Reference(format!(
            "{reference:?} is not a tag (letters, digits, _, . and -, at most {MAX_TAG_LEN}, not starting with . or -) or a digest"
        )))
    }
}

/// `algorithm:encoded` as the OCI image spec writes it: algorithm components
/// `[a-z0-9]+` joined by `+._-`, encoded `[a-zA-Z0-9=_-]+`; for the registered algorithms
/// (sha256, sha512) exactly their length of lowercase hex.
fn check_digest(digest: &str) -> Result<(), Rejection> {
    let invalid = |why: &str| Err(Rejection::Digest(format!("{digest:?}: {why}")));
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return invalid("not algorithm:hex");
    };
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let algorithm_ok = algorithm
        .split(['+', '.', '_', '-'])
        .all(|part| !part.is_empty() && part.bytes().all(|b| alnum(&b)));
    if !algorithm_ok {
        return invalid("bad algorithm");
    }
    let encoded_ok = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-');
    if !encoded_ok {
        return invalid("bad encoded part");
    }
    let hex_len = match algorithm {
        "sha256" => Some(64),
        "sha512" => Some(128),
        _ => None,
    };
    if let Some(len) = hex_len {
        let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if encoded.len() != len || !encoded.bytes().all(lower_hex) {
            return invalid(&format!("{algorithm} takes {len} lowercase hex digits"));
        }
    }
    Ok(())
}

/// Upload sessions are named by the upstream (a UUID on distribution and Docker Hub): allow the
/// characters that need no encoding, and nothing that could be a separator.
fn check_session(session: &str) -> Result<(), Rejection> {
    let ok = session.len() <= 1024
        && session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~=+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Rejection::Upload(format!("{session:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn endpoint(raw: &str) -> Endpoint {
        match registry_path(raw) {
            Ok(checked) => {
                assert_eq!(checked.path, raw, "a clean path is forwarded as it came");
                checked.endpoint
            }
            Err(e) => panic!("{raw} refused: {e}"),
        }
    }

    #[test]
    fn name_and_tail_rebuild_the_path() {
        for (raw, name, tail) in [
            ("/v2/nginx/manifests/latest", "nginx", "manifests/latest"),
            (
                "/v2/ghcr.io/owner/image/blobs/uploads/",
                "ghcr.io/owner/image",
                "blobs/uploads/",
            ),
            ("/v2/a/tags/list", "a", "tags/list"),
        ] {
            let checked = registry_path(raw).unwrap();
            assert_eq!((checked.name.as_str(), checked.tail.as_str()), (name, tail));
            assert_eq!(checked.with_name(name), raw);
        }
        assert_eq!(
            registry_path("/v2/nginx/manifests/latest")
                .unwrap()
                .with_name("library/nginx"),
            "/v2/library/nginx/manifests/latest"
        );
        assert_eq!(registry_path("/v2/").unwrap().name, "");
    }

    #[test]
    fn real_client_paths_pass_unchanged() {
        assert_eq!(endpoint("/v2/"), Endpoint::Base);
        assert_eq!(endpoint("/v2"), Endpoint::Base);
        assert_eq!(endpoint("/v2/_catalog"), Endpoint::Catalog);
        for (path, want) in [
            ("/v2/library/nginx/manifests/latest", Endpoint::Manifest),
            ("/v2/nginx/manifests/1.25.3-alpine", Endpoint::Manifest),
            (
                &format!("/v2/library/nginx/manifests/{DIGEST}"),
                Endpoint::Manifest,
            ),
            (&format!("/v2/library/nginx/blobs/{DIGEST}"), Endpoint::Blob),
            ("/v2/library/pushed-1/blobs/uploads/", Endpoint::Upload),
            (
                "/v2/library/pushed-1/blobs/uploads/0b6e4cbd-58b2-4a4b-a1a5-1d4e6c3f1c2a",
                Endpoint::Upload,
            ),
            ("/v2/bitnami/redis/tags/list", Endpoint::Tags),
            (&format!("/v2/a/referrers/{DIGEST}"), Endpoint::Referrers),
            ("/v2/a.b/c_d/e__f/g--h/manifests/_x", Endpoint::Manifest),
            // A component may be called like an endpoint: the endpoint is read from the right.
            ("/v2/org/manifests/manifests/v1", Endpoint::Manifest),
            ("/v2/blobs/tags/list", Endpoint::Tags),
        ] {
            assert_eq!(endpoint(path), want, "{path}");
        }
    }

    #[test]
    fn unreserved_percent_encoding_is_decoded_for_forwarding() {
        let checked = registry_path("/v2/library/alpine/manifests/sha256%3A0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(
            checked.path,
            format!("/v2/library/alpine/manifests/{DIGEST}")
        );
        let checked = registry_path("/%76%32/library/alpine/manifests/latest").unwrap();
        assert_eq!(checked.path, "/v2/library/alpine/manifests/latest");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for raw in [
            "/v2/library/../secret/manifests/latest",
            "/v2/library/%2e%2E/secret/manifests/latest",
            "/v2/./library/alpine/manifests/latest",
            "/v2/library%2Falpine/manifests/latest",
            "/v2/library%2falpine/manifests/latest",
            "/v2/library/alpine/manifests/latest%00",
            "/v2/library/alpine/manifests/lat%0d%0aest",
            "/v2/library/alpine/manifests/%zz",
            "/v2/library/alpine/manifests/%4",
            "/v2/library/alpine/manifests/%",
            "/v2/a\\..\\b/manifests/latest",
            "/v2/a%5cb/manifests/latest",
            "/v2/a%ff/manifests/latest",
            "v2/a/manifests/latest",
        ] {
            assert!(
                matches!(registry_path(raw), Err(Rejection::Ambiguous(_))),
                "{raw}: {:?}",
                registry_path(raw)
            );
        }
    }

    #[test]
    fn names_follow_the_grammar() {
        for name in [
            "Library/alpine",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "a._b",
            "a//b",
            "_a",
            "a b",
            "é",
        ] {
            let raw = format!("/v2/{name}/manifests/latest");
            assert!(
                matches!(
                    registry_path(&raw),
                    Err(Rejection::Name(_) | Rejection::Ambiguous(_))
                ),
                "{raw}: {:?}",
                registry_path(&raw)
            );
        }
        let long = format!("/v2/{}/{}/tags/list", "a".repeat(200), "b".repeat(55));
        assert!(matches!(registry_path(&long), Err(Rejection::Name(_))));
        let longest = format!("/v2/{}/{}/tags/list", "a".repeat(200), "b".repeat(54));
        assert_eq!(endpoint(&longest), Endpoint::Tags);
    }

    #[test]
    fn references_and_digests_follow_the_grammar() {
        let tag = |t: &str| registry_path(&format!("/v2/a/manifests/{t}"));
        assert!(tag(&"t".repeat(128)).is_ok());
        for bad in [&"t".repeat(129), ".x", "-x", "x~y"] {
            assert!(matches!(tag(bad), Err(Rejection::Reference(_))), "{bad}");
        }
        for bad in [
            "sha256:abc",
            "sha256:",
            ":abc",
            "SHA256:00",
            "sha256:XYZ",
            "md5:!!",
        ] {
            assert!(matches!(tag(bad), Err(Rejection::Digest(_))), "{bad}");
            let blob = registry_path(&format!("/v2/a/blobs/{bad}"));
            assert!(matches!(blob, Err(Rejection::Digest(_))), "{bad}");
        }
        assert!(tag(&format!("sha512:{}", "ab".repeat(64))).is_ok());
        assert!(tag("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8").is_ok());
        let session = registry_path("/v2/a/blobs/uploads/x:y");
        assert!(matches!(session, Err(Rejection::Upload(_))));
    }

    #[test]
    fn other_v2_paths_are_unsupported() {
        for raw in [
            "/v2/library/alpine",
            "/v2/library/alpine/",
            "/v2/manifests/latest",
            "/v2/a/tags/lists",
            "/v2/a/blobs/uploads/x/y",
            "/v2/_catalog/x",
            "/v2x",
        ] {
            assert!(
                matches!(registry_path(raw), Err(Rejection::Unsupported(_))),
                "{raw}: {:?}",
                registry_path(raw)
            );
        }
    }

    #[test]
    fn queries_are_well_formed_and_free_of_control_characters() {
        for good in [
            "",
            "ns=docker.io",
            "n=10&last=",
            "n=&last=x",
            "_state=abc%3D%3D&digest=sha256%3A00",
            "mount=sha256:00&from=library%2Fnginx",
            "q=a+b",
        ] {
            assert_eq!(query(good), Ok(()), "{good}");
        }
        for bad in [
            "ns=docker.io%0d%0aX-Evil:1",
            "a=%00",
            "a=%0A",
            "a=%7f",
            "a=%zz",
            "a=%",
        ] {
            assert!(matches!(query(bad), Err(Rejection::Ambiguous(_))), "{bad}");
        }
    }

    #[test]
    fn plain_paths_read_one_way_only() {
        assert_eq!(plain_path("/some/other/path"), Ok(()));
        assert_eq!(plain_path("/v2foo"), Ok(()));
        assert_eq!(plain_path("/a%20b"), Ok(()));
        for bad in [
            "/a/../v2/x",
            "/v2%2F..",
            "/a%00",
            "/a\\b",
            "/%2e%2e/x",
            "/%",
        ] {
            assert!(plain_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_paths_never_read_as_the_registry_api() {
        assert_eq!(plain_path("/"), Ok(()));
        assert_eq!(plain_path("/trailing/"), Ok(()));
        for bad in [
            "//v2/library/nginx/manifests/latest",
            "/%762/library/nginx/manifests/latest",
            "/%76%32/",
            "/V2/library/nginx/manifests/latest",
            "/v%32",
            "/a//b",
        ] {
            assert!(
                matches!(plain_path(bad), Err(Rejection::Ambiguous(_))),
                "{bad}"
            );
        }
    }
}
