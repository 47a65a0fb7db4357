//! Which images the mirror serves: the operator's allow and deny lists of glob patterns, per
//! upstream. A public mirror is a way to pull anything through someone else's bandwidth and
//! Docker Hub account; these lists keep it to what the operator means to offer.
//!
//! A pattern is `[<upstream>/]<repository glob>`: `library/*`, `bitnami/**`,
//! `ghcr.io/myorg/*`. Without an upstream (a first component with a `.` or `:`, or
//! `localhost`, as Docker reads image names) it is about `docker.io`. In the glob, `*` matches
//! within one path component, `**` across components, `?` one character of a component.
//! Docker Hub names are matched in full: `nginx` is `library/nginx`.

use std::borrow::Cow;

use regex::bytes::{Regex, RegexBuilder};

/// The upstream a pattern without one is about.
pub use crate::upstream::registries::DOCKER_HUB as DEFAULT_UPSTREAM;

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
            complete_library(upstream, glob).into_owned()
        };
        Ok(Pattern {
            upstream: upstream.to_ascii_lowercase(),
            glob,
        })
    }

    /// The upstream the pattern is about, lower-cased.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The repository glob, `library/` already added where Docker Hub's rule asks for it.
    pub fn glob(&self) -> &str {
        &self.glob
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
pub(crate) fn complete_library<'a>(upstream: &str, name: &'a str) -> Cow<'a, str> {
    if upstream == DEFAULT_UPSTREAM && !name.contains('/') {
        Cow::Owned(format!("library/{name}"))
    } else {
        Cow::Borrowed(name)
    }
}

/// A glob as an unanchored regex: `**/` is "nothing, or anything ending in `/`" (so
/// `a/**/b` matches `a/b`), `**` anything, `*` anything but `/`, `?` one byte but `/`, every
/// other character itself.
fn glob_regex(glob: &str) -> String {
    let mut regex = String::with_capacity(glob.len() * 2);
    let mut rest = glob;
    while let Some(c) = rest.chars().next() {
        let (piece, len) = if rest.starts_with("**/") {
            ("(?:.*/)?", 3)
        } else if rest.starts_with("**") {
            (".*", 2)
        } else if c == '*' {
            ("[^/]*", 1)
        } else if c == '?' {
            ("[^/]", 1)
        } else {
            regex.push_str(&regex::escape(&rest[..c.len_utf8()]));
            rest = &rest[c.len_utf8()..];
            continue;
        };
        regex.push_str(piece);
        rest = &rest[len..];
    }
    regex
}

/// One list (allow or deny), compiled at start-up: per upstream it names, one anchored regex
/// that is every glob of that upstream as one alternation. A name is checked in time linear
/// in its length whatever the patterns; a backtracking glob matcher takes exponential time on
/// patterns like `*a*a*a*a*b` (see `fuzzing::reference_glob_match`), and this runs on every
/// manifest and blob request. The upstream is compared apart, as a whole word and ASCII
/// case-insensitively (host names are), so only the glob goes into the regex.
#[derive(Debug, Clone, Default)]
pub struct PatternList {
    by_upstream: Vec<(String, Regex)>,
}

impl PatternList {
    pub fn compile(patterns: &[Pattern]) -> Result<PatternList, String> {
        let mut upstreams: Vec<&str> = patterns.iter().map(|p| p.upstream.as_str()).collect();
        upstreams.sort_unstable();
        upstreams.dedup();
        let by_upstream = upstreams
            .into_iter()
            .map(|upstream| {
                let globs: Vec<String> = patterns
                    .iter()
                    .filter(|p| p.upstream == upstream)
                    .map(|p| glob_regex(&p.glob))
                    .collect();
                // Bytes, without Unicode: `?` is one byte and `.` any byte, newline included,
                // exactly as the globs were always read.
                let regex = RegexBuilder::new(&format!("^(?:{})$", globs.join("|")))
                    .unicode(false)
                    .dot_matches_new_line(true)
                    .build()
                    .map_err(|e| format!("the {upstream} patterns do not compile: {e}"))?;
                Ok((upstream.to_owned(), regex))
            })
            .collect::<Result<_, String>>()?;
        Ok(PatternList { by_upstream })
    }

    pub fn is_empty(&self) -> bool {
        self.by_upstream.is_empty()
    }

    /// Whether repository `name` (already completed with `library/`) of `upstream` matches
    /// one of the patterns.
    fn matches(&self, upstream: &str, name: &str) -> bool {
        self.by_upstream
            .iter()
            .any(|(u, regex)| u.eq_ignore_ascii_case(upstream) && regex.is_match(name.as_bytes()))
    }
}

/// The operator's lists. Deny wins over allow; an empty allow list allows everything.
#[derive(Debug, Clone, Default)]
pub struct ImagePolicy {
    pub allow: PatternList,
    pub deny: PatternList,
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
        let denied = self.deny.matches(upstream, &name)
            || (!self.allow.is_empty() && !self.allow.matches(upstream, &name));
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

    /// One glob, compiled as the lists compile theirs.
    fn glob_match(glob: &str, name: &str) -> bool {
        let pattern = Pattern {
            upstream: "registry.example".into(),
            glob: glob.into(),
        };
        PatternList::compile(&[pattern])
            .unwrap()
            .matches("registry.example", name)
    }

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
        // Regex syntax in a glob is itself: `.` is a dot, not any character.
        assert!(!glob_match("library/a.b", "library/axb"));
        assert!(glob_match("a/**/", "a/"));
        assert!(glob_match("a/**/", "a/b/c/"));
        assert!(!glob_match("a/**/", "a/b"));
        assert!(glob_match("a/***", "a/b/c"));
    }

    #[test]
    fn globs_become_regexes_one_piece_at_a_time() {
        assert_eq!(glob_regex("library/*"), "library/[^/]*");
        assert_eq!(glob_regex("a/**/b?.c"), "a/(?:.*/)?b[^/]\\.c");
        assert_eq!(glob_regex("**"), ".*");
        assert_eq!(glob_regex("***"), ".*[^/]*");
    }

    #[test]
    fn a_list_holds_one_regex_per_upstream_it_names() {
        let patterns: Vec<Pattern> = ["library/*", "bitnami/**", "GHCR.io/org/*", "ghcr.io/x"]
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect();
        let list = PatternList::compile(&patterns).unwrap();
        let upstreams: Vec<&str> = list.by_upstream.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(upstreams, ["docker.io", "ghcr.io"]);
        assert!(list.matches("ghcr.io", "org/tool"));
        assert!(list.matches("GHCR.IO", "x"));
        assert!(!list.matches("ghcr.io", "library/alpine"));
        assert!(list.matches("docker.io", "bitnami/charts/redis"));
    }

    /// The names a backtracking glob matcher takes exponential time on: every way of placing
    /// the `*`s is tried before the final `b` fails to match. With 8 of them and a 200-byte
    /// component that is beyond 10^13 tries.
    #[test]
    fn a_pathological_pattern_is_answered_at_once() {
        let p = policy(&["*a*a*a*a*a*a*a*a*b"], &["**/*a*a*a*a*a*a*a*a*c"]);
        let name = "a".repeat(200);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(p.check("docker.io", &name)).unwrap());
        let answer = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("no answer within 10 s: the matcher backtracks");
        assert_eq!(answer, Err("not here".into()));
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
        let list = |patterns: &[&str]| {
            let parsed: Vec<Pattern> = patterns
                .iter()
                .map(|p| Pattern::parse(p).unwrap())
                .collect();
            PatternList::compile(&parsed).unwrap()
        };
        ImagePolicy {
            allow: list(allow),
            deny: list(deny),
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
