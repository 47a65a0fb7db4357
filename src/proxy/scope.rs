//! Repository names as a client writes them and as an upstream knows them, and the same mapping
//! for token `scope`s. Two rules apply: Docker Hub's `library/` completion (`nginx` is
//! `library/nginx`, for upstreams with the library rule only) and the path-prefix form
//! (`ghcr.io/owner/image` through the mirror is `owner/image` on `ghcr.io`). A token request can
//! carry several `scope` parameters, each with several space-separated scopes (OAuth2 form), and
//! every one is mapped: a single unmapped scope gets a token the registry then refuses.

use std::borrow::Cow;

use url::form_urlencoded;

/// The repository name to ask the upstream for: without the `<prefix>/` the client put in front
/// (when there is one and something follows it), then `library/`-completed when `library` is
/// set and one component is left.
pub fn upstream_name<'a>(name: &'a str, prefix: Option<&str>, library: bool) -> Cow<'a, str> {
    let name = match prefix {
        Some(prefix) => name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|rest| !rest.is_empty())
            .unwrap_or(name),
        None => name,
    };
    if library && !name.contains('/') && !name.is_empty() {
        Cow::Owned(format!("library/{name}"))
    } else {
        Cow::Borrowed(name)
    }
}

/// A `scope` value (one or more space-separated `type:name:actions`) with the name of every
/// `repository` scope passed through `map`; anything else is kept as it came.
pub fn map_scopes(value: &str, map: impl Fn(&str) -> String) -> String {
    value
        .split(' ')
        .map(|scope| map_one(scope, &map))
        .collect::<Vec<_>>()
        .join(" ")
}

fn map_one(scope: &str, map: &impl Fn(&str) -> String) -> String {
    // `type:name:actions`, where the name may itself hold `:` (`localhost:5000/foo`), as
    // distribution splits it: the type before the first `:`, the actions after the last.
    let Some((kind, rest)) = scope.split_once(':') else {
        return scope.to_owned();
    };
    let Some((name, actions)) = rest.rsplit_once(':') else {
        return scope.to_owned();
    };
    if kind != "repository" || name.is_empty() {
        return scope.to_owned();
    }
    format!("{kind}:{}:{actions}", map(name))
}

/// The repository names a `scope` value asks for.
pub fn repository_names(value: &str) -> impl Iterator<Item = &str> {
    value.split(' ').filter_map(|scope| {
        let (kind, rest) = scope.split_once(':')?;
        let (name, _) = rest.rsplit_once(':')?;
        (kind == "repository" && !name.is_empty()).then_some(name)
    })
}

/// Scopes of a token request for an upstream: each repository name as [`upstream_name`] maps
/// it. Used on the way up, for every `scope` a client sends.
pub fn scope_for_upstream(value: &str, prefix: &str, library: bool) -> String {
    map_scopes(value, |name| {
        upstream_name(name, Some(prefix), library).into_owned()
    })
}

/// Scopes of a challenge for a client that used the path-prefix form: each repository name with
/// the prefix put back, so the client asks for a token naming what it asked for (and
/// [`scope_for_upstream`] maps it back).
pub fn scope_for_client(value: &str, prefix: &str) -> String {
    map_scopes(value, |name| format!("{prefix}/{name}"))
}

/// A query string or form body (`a=1&b=2`) with every value of `key` passed through `map`.
/// Pairs that do not change stay byte for byte as they came; a changed value is re-encoded.
pub fn map_form_values<'a>(raw: &'a str, key: &str, map: impl Fn(&str) -> String) -> Cow<'a, str> {
    let mut changed = false;
    let pairs: Vec<Cow<'_, str>> = raw
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded_name = decode(name);
            if decoded_name != key {
                return Cow::Borrowed(pair);
            }
            let value = decode(value);
            let mapped = map(&value);
            if mapped == value {
                return Cow::Borrowed(pair);
            }
            changed = true;
            let encoded: String = form_urlencoded::byte_serialize(mapped.as_bytes()).collect();
            Cow::Owned(format!("{name}={encoded}"))
        })
        .collect();
    if changed {
        Cow::Owned(pairs.join("&"))
    } else {
        Cow::Borrowed(raw)
    }
}

/// One form-encoded name or value, decoded (`+` is a space).
fn decode(text: &str) -> String {
    form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_completion_applies_to_one_component_only() {
        assert_eq!(upstream_name("nginx", None, true), "library/nginx");
        assert_eq!(upstream_name("library/nginx", None, true), "library/nginx");
        assert_eq!(upstream_name("bitnami/redis", None, true), "bitnami/redis");
        assert_eq!(upstream_name("nginx", None, false), "nginx");
    }

    #[test]
    fn the_path_prefix_is_stripped_before_completion() {
        assert_eq!(
            upstream_name("ghcr.io/owner/image", Some("ghcr.io"), false),
            "owner/image"
        );
        assert_eq!(
            upstream_name("docker.io/nginx", Some("docker.io"), true),
            "library/nginx"
        );
        // Not the prefix: a component that merely starts like it, or nothing after it.
        assert_eq!(
            upstream_name("ghcr.iox/a", Some("ghcr.io"), false),
            "ghcr.iox/a"
        );
        assert_eq!(upstream_name("ghcr.io", Some("ghcr.io"), false), "ghcr.io");
    }

    #[test]
    fn every_repository_scope_is_mapped() {
        assert_eq!(
            scope_for_upstream("repository:nginx:pull", "docker.io", true),
            "repository:library/nginx:pull"
        );
        assert_eq!(
            scope_for_upstream(
                "repository:nginx:pull repository:docker.io/alpine:pull,push registry:catalog:*",
                "docker.io",
                true
            ),
            "repository:library/nginx:pull repository:library/alpine:pull,push registry:catalog:*"
        );
        assert_eq!(
            scope_for_upstream("repository:ghcr.io/owner/image:pull", "ghcr.io", false),
            "repository:owner/image:pull"
        );
        assert_eq!(
            scope_for_upstream("repository:localhost:5000/foo:pull", "ghcr.io", true),
            "repository:localhost:5000/foo:pull"
        );
        assert_eq!(scope_for_upstream("junk", "x", true), "junk");
        assert_eq!(
            scope_for_client("repository:owner/image:pull", "ghcr.io"),
            "repository:ghcr.io/owner/image:pull"
        );
    }

    #[test]
    fn repository_names_are_read_from_every_scope() {
        let names: Vec<_> = repository_names(
            "repository:a/b:pull registry:catalog:* repository:localhost:5000/c:push",
        )
        .collect();
        assert_eq!(names, ["a/b", "localhost:5000/c"]);
    }

    #[test]
    fn only_the_named_values_change_in_a_query() {
        let complete = |v: &str| scope_for_upstream(v, "docker.io", true);
        let raw = "service=registry.docker.io&scope=repository:nginx:pull&scope=repository%3Alibrary%2Falpine%3Apull&x=%41";
        assert_eq!(
            map_form_values(raw, "scope", complete),
            "service=registry.docker.io&scope=repository%3Alibrary%2Fnginx%3Apull&scope=repository%3Alibrary%2Falpine%3Apull&x=%41"
        );
        let untouched = "scope=repository:library/nginx:pull&service=s";
        assert!(matches!(
            map_form_values(untouched, "scope", complete),
            Cow::Borrowed(_)
        ));
        // The OAuth2 form: one field, space-separated scopes (`+` in the body).
        assert_eq!(
            map_form_values(
                "grant_type=password&scope=repository%3Aa%3Apull+repository%3Ab%2Fc%3Apull",
                "scope",
                complete
            ),
            "grant_type=password&scope=repository%3Alibrary%2Fa%3Apull+repository%3Ab%2Fc%3Apull"
        );
    }
}
