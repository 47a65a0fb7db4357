//! Fuzzing entry points: the parsers that see hostile input (upstream headers, client queries
//! and paths), each wrapped in a check that panics when an invariant breaks. Not an API: only
//! `tests/fuzz_props.rs` (proptest, in `make test`) and the libFuzzer binaries in `fuzz/`
//! (`make fuzz`) call these, on arbitrary bytes. A new target is a function here and one line
//! in [`TARGETS`]; proptest then runs it too, and `fuzz/` gets a three-line binary for it.

use std::borrow::Cow;

use actix_web::http::header::HeaderValue;
use url::{form_urlencoded, Url};

use crate::{
    policy::images::{complete_library, ImagePolicy, Pattern, PatternList},
    proxy::target,
    proxy::{challenge, location},
    routes,
    upstream::egress,
    upstream::redirect,
};

/// A fuzz target: takes any bytes, panics only on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary in `fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("challenge", challenge),
    ("search_query", search_query),
    ("location", location),
    ("upstream_url", upstream_url),
    ("address", address),
    ("registry_path", registry_path),
    ("image_policy", image_policy),
];

fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

const REALM: &str = "https://mirror.example.com/token";

/// `WWW-Authenticate` from an upstream: a Bearer challenge always comes out naming our realm
/// once, first, with every other parameter kept in order; other schemes are left alone; a
/// valid header value stays one.
pub fn challenge(data: &[u8]) {
    let value = text(data);
    let parsed = challenge::parse_challenge(&value);
    let rewritten = challenge::rewrite_challenge(&value, REALM);
    if let Some(c) = &parsed {
        assert_eq!(
            rewritten.is_some(),
            c.scheme.eq_ignore_ascii_case("bearer"),
            "{value:?} -> {rewritten:?}"
        );
    }
    let Some(out) = rewritten else { return };
    let again = challenge::parse_challenge(&out)
        .unwrap_or_else(|| panic!("rewritten {value:?} does not parse: {out:?}"));
    assert_eq!(again.scheme, "Bearer");
    assert_eq!(again.params[0], ("realm".to_owned(), REALM.to_owned()));
    assert!(again.params[1..].iter().all(|(name, _)| name != "realm"));
    if let Some(c) = parsed {
        let kept: Vec<_> = c.params.into_iter().filter(|(n, _)| n != "realm").collect();
        assert_eq!(again.params[1..], kept[..], "{value:?} -> {out:?}");
    }
    if HeaderValue::from_str(&value).is_ok() {
        assert!(HeaderValue::from_str(&out).is_ok(), "{value:?} -> {out:?}");
    }
}

/// `/v1/search?...` from a client: the upstream query is a valid query of `q`, then `n` and
/// `page` when non-empty, with `q`'s leading `library/` removed.
pub fn search_query(data: &[u8]) {
    let raw = text(data);
    let out = routes::search::search_query(&raw);
    let url = Url::parse(&format!("http://index.example/v1/search?{out}")).unwrap();
    assert_eq!(url.query(), Some(out.as_str()), "the URL parser changed it");
    let pairs: Vec<(String, String)> = form_urlencoded::parse(out.as_bytes())
        .into_owned()
        .collect();
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        matches!(
            names[..],
            ["q"] | ["q", "n"] | ["q", "page"] | ["q", "n", "page"]
        ),
        "{raw:?} -> {out:?}"
    );
    assert!(pairs[1..].iter().all(|(_, v)| !v.is_empty()));
    let q = form_urlencoded::parse(raw.as_bytes())
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let expected = match q.strip_prefix("library/") {
        Some("") => "library",
        Some(rest) => rest,
        None => &q,
    };
    assert_eq!(pairs[0].1, expected);
}

/// A `Location` from an upstream: a followed redirect is an http(s) URL with a host that the
/// client can send; a Location pointed back at the mirror stays on the mirror.
pub fn location(data: &[u8]) {
    let location = text(data);
    let current = Url::parse("https://registry.example/v2/library/a/blobs/sha256:0").unwrap();
    if let Ok(next) = redirect::resolve_location(&current, &location) {
        assert!(matches!(next.scheme(), "http" | "https"), "{next}");
        assert!(next.host_str().is_some_and(|h| !h.is_empty()), "{next}");
        assert!(
            next.as_str().parse::<awc::http::Uri>().is_ok(),
            "the client cannot send {next}"
        );
    }
    let upstream = Url::parse("https://registry.example").unwrap();
    let public = "http://mirror.example:5000";
    if let Some(out) = location::public_location(&location, &upstream, public) {
        assert!(out.starts_with("http://mirror.example:5000/"), "{out}");
        let url = Url::parse(&out).unwrap_or_else(|e| panic!("{out:?}: {e}"));
        assert_eq!(url.host_str(), Some("mirror.example"), "{out}");
        assert!(HeaderValue::from_str(&out).is_ok(), "{out:?}");
    }
}

/// A request's path and query (as actix hands it over: starting with `/`) never takes the
/// upstream URL to another scheme, host or port.
pub fn upstream_url(data: &[u8]) {
    let path = text(data);
    for base in ["https://registry.example", "http://127.0.0.1:8080/prefix"] {
        let base = Url::parse(base).unwrap();
        let (path_only, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (&path[..], None),
        };
        let Ok(url) = routes::forward::upstream_url(&base, path_only, query) else {
            continue;
        };
        if path.starts_with('/') {
            assert_eq!(url.scheme(), base.scheme(), "{path:?} -> {url}");
            assert_eq!(url.host(), base.host(), "{path:?} -> {url}");
            assert_eq!(url.port(), base.port(), "{path:?} -> {url}");
        }
    }
}

/// Address classification: an IPv4 address and its IPv4-mapped IPv6 form are judged alike.
pub fn address(data: &[u8]) {
    let mut bytes = [0u8; 16];
    for (slot, b) in bytes.iter_mut().zip(data) {
        *slot = *b;
    }
    let v6 = std::net::Ipv6Addr::from(bytes);
    let _ = egress::non_public(v6.into());
    let v4 = std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
    assert_eq!(
        egress::non_public(v4.to_ipv6_mapped().into()),
        egress::non_public(v4.into()),
        "{v4}"
    );
}

/// A `/v2` request path: what passes the check is forwarded as it reads, so it must read one way
/// only (no dot segment, encoded slash, backslash or control character), pass the check again
/// as forwarded, with the same endpoint, and reach the upstream unchanged.
pub fn registry_path(data: &[u8]) {
    let raw = format!("/v2/{}", text(data));
    let Ok(checked) = target::registry_path(&raw) else {
        return;
    };
    let path = &checked.path;
    assert!(
        !path.split('/').any(|s| s == ".." || s == "."),
        "{raw:?} -> {path:?}"
    );
    assert!(
        !path.contains('\\') && !path.bytes().any(|b| b.is_ascii_control()),
        "{raw:?} -> {path:?}"
    );
    let again = target::registry_path(path)
        .unwrap_or_else(|e| panic!("{raw:?} passed, its forwarded form {path:?} did not: {e:?}"));
    assert_eq!(again.endpoint, checked.endpoint, "{raw:?}");
    let base = Url::parse("https://registry.example").unwrap();
    let url = routes::forward::upstream_url(&base, path, None)
        .unwrap_or_else(|e| panic!("{raw:?} passed but cannot be forwarded: {e}"));
    assert_eq!(url.path(), path, "{raw:?}");
}

/// Image allow and deny lists: the compiled lists decide every name exactly as the backtracking
/// glob matcher they replaced ([`reference_glob_match`]) did. The input is lines: the name, then
/// patterns, a `!` before a deny pattern (no pattern holds a `!`). Each name is checked as of
/// Docker Hub and of every upstream a pattern names, in its own case and in capitals.
pub fn image_policy(data: &[u8]) {
    // The reference takes exponential time in the `*`s of a pattern: keep each case small.
    const MAX_NAME: usize = 64;
    const MAX_STARS: usize = 4;
    let text = text(data);
    let mut lines = text.split('\n');
    let name = lines.next().unwrap_or_default();
    let (mut allow, mut deny) = (Vec::new(), Vec::new());
    for line in lines.take(4) {
        let (list, line) = match line.strip_prefix('!') {
            Some(line) => (&mut deny, line),
            None => (&mut allow, line),
        };
        let Ok(pattern) = Pattern::parse(line) else {
            continue;
        };
        if pattern.glob().matches('*').count() > MAX_STARS {
            return;
        }
        list.push(pattern);
    }
    if name.len() > MAX_NAME {
        return;
    }
    let policy = ImagePolicy {
        allow: PatternList::compile(&allow).expect("parsed patterns compile"),
        deny: PatternList::compile(&deny).expect("parsed patterns compile"),
        message: "refused".into(),
    };
    let mut upstreams = vec![crate::upstream::registries::DOCKER_HUB.to_owned()];
    for pattern in allow.iter().chain(&deny) {
        upstreams.push(pattern.upstream().to_owned());
        upstreams.push(pattern.upstream().to_ascii_uppercase());
    }
    for upstream in &upstreams {
        assert_eq!(
            policy.check(upstream, name).is_ok(),
            reference_check(&allow, &deny, upstream, name),
            "{upstream} {name:?} against allow {allow:?}, deny {deny:?}"
        );
    }
}

/// `ImagePolicy::check` as it was, pattern by pattern with [`reference_glob_match`].
fn reference_check(allow: &[Pattern], deny: &[Pattern], upstream: &str, name: &str) -> bool {
    if allow.is_empty() && deny.is_empty() {
        return true;
    }
    let name = complete_library(upstream, name);
    let matches = |p: &Pattern| {
        p.upstream().eq_ignore_ascii_case(upstream) && reference_glob_match(p.glob(), &name)
    };
    let denied = deny.iter().any(matches) || (!allow.is_empty() && !allow.iter().any(matches));
    !denied
}

/// The component-aware glob matcher image patterns were first matched with: `*` and `?` never
/// cross a `/`, `**` does. Kept only as the reference the compiled lists are checked against;
/// it backtracks, and takes time exponential in the number of `*`s (`*a*a*a*a*b` against a
/// long run of `a`s).
pub fn reference_glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p {
            [] => n.is_empty(),
            [b'*', b'*', rest @ ..] => {
                // `**/` may also match nothing at all: `a/**/b` matches `a/b`.
                if let [b'/', after @ ..] = rest {
                    if go(after, n) {
                        return true;
                    }
                }
                (0..=n.len()).any(|i| go(rest, &n[i..]))
            }
            [b'*', rest @ ..] => {
                let component = n.iter().position(|&c| c == b'/').unwrap_or(n.len());
                (0..=component).any(|i| go(rest, &n[i..]))
            }
            [b'?', rest @ ..] => matches!(n, [c, tail @ ..] if *c != b'/' && go(rest, tail)),
            [c, rest @ ..] => matches!(n, [d, tail @ ..] if c == d && go(rest, tail)),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}
