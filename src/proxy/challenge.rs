//! Token challenges (`WWW-Authenticate`): parsing them, quoting values, and the rewrite that
//! points a client at the mirror's token endpoint instead of the upstream's.

pub use crate::upstream::challenge::{parse_challenge, Challenge};

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

#[cfg(test)]
mod tests {
    use super::*;

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
        use crate::upstream::challenge::is_token_byte;
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
}
