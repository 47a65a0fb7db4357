//! Which images the mirror serves: the operator's allow and deny lists of glob patterns, per
//! upstream. A public mirror is a way to pull anything through someone else's bandwidth and
//! Docker Hub account; these lists keep it to what the operator means to offer.
//!
//! A pattern is `[<upstream>/]<repository glob>`: `library/*`, `bitnami/**`,
//! `ghcr.io/myorg/*`. Without an upstream (a first component with a `.` or `:`, or
//! `localhost`, as Docker reads image names) it is about `docker.io`. In the glob, `*` matches
//! within one path component, `**` across components, `?` one character of a component.
//! Docker Hub names are matched in full: `nginx` is `library/nginx`.

/// The upstream a pattern without one is about.
pub use crate::upstreams::DOCKER_HUB as DEFAULT_UPSTREAM;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    upstream: String,
    glob: String,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let text = text.trim();
        let (upstream, glob) = match text.split_once('/') {
            Some((first, rest)) if is_registry_host(first) => (first, rest),
            _ => (DEFAULT_UPSTREAM, text),
        };
        if glob.is_empty() || glob.split('/').any(str::is_empty) {
            return Err(format!("'{text}' has an empty path component"));
        }
        if let Some(bad) = glob
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-/*?".contains(*c)))
        {
            return Err(format!(
                "'{text}' has '{bad}': repository names hold only a-z, 0-9, . _ - and /, and \
                 patterns add * ** ?"
            ));
        }
        // `**` already means every name, official images included.
        let glob = if glob.contains("**") {
            glob.to_owned()
        } else {
            complete_library(upstream, glob)
        };
        Ok(Pattern {
            upstream: upstream.to_ascii_lowercase(),
            glob,
        })
    }

    fn matches(&self, upstream: &str, name: &str) -> bool {
        self.upstream.eq_ignore_ascii_case(upstream) && glob_match(&self.glob, name)
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.upstream, self.glob)
    }
}

/// Docker's rule for the first component of an image name: a registry host has a `.` or a
/// `:` (port), or is `localhost`.
fn is_registry_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// Docker Hub's official images live under `library/`: `nginx` means `library/nginx`.
fn complete_library(upstream: &str, name: &str) -> String {
    if upstream == DEFAULT_UPSTREAM && !name.contains('/') {
        format!("library/{name}")
    } else {
        name.to_owned()
    }
}

/// Component-aware glob matching: `*` and `?` never cross a `/`, `**` does.
pub fn glob_match(pattern: &str, name: &str) -> bool {
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

/// The operator's lists. Deny wins over allow; an empty allow list allows everything.
#[derive(Debug, Clone, Default)]
pub struct ImagePolicy {
    pub allow: Vec<Pattern>,
    pub deny: Vec<Pattern>,
    /// What a refused client is told.
    pub message: String,
}

impl ImagePolicy {
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// `Err` with the operator's message when repository `name` of `upstream` is not served.
    pub fn check(&self, upstream: &str, name: &str) -> Result<(), String> {
        if self.is_open() {
            return Ok(());
        }
        let name = complete_library(upstream, name);
        let denied = self.deny.iter().any(|p| p.matches(upstream, &name))
            || (!self.allow.is_empty() && !self.allow.iter().any(|p| p.matches(upstream, &name)));
        if denied {
            Err(self.message.clone())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_respect_components() {
        assert!(glob_match("library/*", "library/nginx"));
        assert!(!glob_match("library/*", "library/a/b"));
        assert!(glob_match("bitnami/**", "bitnami/redis"));
        assert!(glob_match("bitnami/**", "bitnami/charts/redis"));
        assert!(!glob_match("bitnami/**", "bitnamix/redis"));
        assert!(glob_match("a/**/b", "a/b"));
        assert!(glob_match("a/**/b", "a/x/y/b"));
        assert!(glob_match("lib?ary/ngin*", "library/nginx-unprivileged"));
        assert!(!glob_match("library/ng?nx", "library/ng/nx"));
        assert!(glob_match("**", "anything/at/all"));
        assert!(!glob_match("library/nginx", "library/nginx2"));
        assert!(glob_match("*/*", "someorg/tool"));
    }

    #[test]
    fn patterns_name_their_upstream_like_docker_does() {
        let p = Pattern::parse("library/*").unwrap();
        assert_eq!(p.to_string(), "docker.io/library/*");
        assert_eq!(
            Pattern::parse("nginx").unwrap().to_string(),
            "docker.io/library/nginx"
        );
        assert_eq!(
            Pattern::parse("ghcr.io/org/**").unwrap().to_string(),
            "ghcr.io/org/**"
        );
        assert_eq!(
            Pattern::parse("localhost:5000/x").unwrap().to_string(),
            "localhost:5000/x"
        );
        assert_eq!(Pattern::parse("**").unwrap().to_string(), "docker.io/**");
        assert!(Pattern::parse("library//x").is_err());
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("library/[ab]").is_err());
    }

    fn policy(allow: &[&str], deny: &[&str]) -> ImagePolicy {
        ImagePolicy {
            allow: allow.iter().map(|p| Pattern::parse(p).unwrap()).collect(),
            deny: deny.iter().map(|p| Pattern::parse(p).unwrap()).collect(),
            message: "not here".into(),
        }
    }

    #[test]
    fn deny_wins_and_an_allow_list_closes_the_rest() {
        let open = ImagePolicy::default();
        assert!(open.check("docker.io", "anything/at/all").is_ok());

        let p = policy(&["library/*", "bitnami/**"], &["library/nginx"]);
        assert!(p.check("docker.io", "library/alpine").is_ok());
        assert!(
            p.check("docker.io", "alpine").is_ok(),
            "library/ completion"
        );
        assert!(p.check("docker.io", "bitnami/charts/redis").is_ok());
        assert_eq!(
            p.check("docker.io", "library/nginx"),
            Err("not here".into())
        );
        assert_eq!(p.check("docker.io", "nginx"), Err("not here".into()));
        assert!(p.check("docker.io", "someorg/tool").is_err());
        assert!(
            p.check("ghcr.io", "library/alpine").is_err(),
            "per upstream"
        );

        let deny_only = policy(&[], &["private/**"]);
        assert!(deny_only.check("docker.io", "library/alpine").is_ok());
        assert!(deny_only.check("docker.io", "private/secret").is_err());
    }
}
