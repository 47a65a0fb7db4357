//! The registries one hubferry mirrors, and which of them a request is for.
//!
//! A request names its upstream, in this order: containerd's `?ns=<registry>` (one hubferry as
//! the `hosts.toml` mirror of every registry of a node), the host name it was sent to
//! (`ghcr.mirror.example.com`, from an upstream's `host_names`), a path prefix
//! (`/v2/ghcr.io/owner/image/...`); otherwise the default upstream (Docker Hub).

use std::sync::{PoisonError, RwLock};

use url::Url;

use crate::{auth::users::Credentials, net::origin::ServerName, upstream::proxy::ProxyChoice};

pub use crate::error::{RegistryName, DOCKER_HUB};

/// The other registries every hubferry knows by name. Their token realms are learned from their
/// challenges (see `realms`).
pub const BUILT_IN: [(&str, &str); 7] = [
    ("ghcr.io", "https://ghcr.io"),
    ("quay.io", "https://quay.io"),
    ("gcr.io", "https://gcr.io"),
    ("registry.k8s.io", "https://registry.k8s.io"),
    ("mcr.microsoft.com", "https://mcr.microsoft.com"),
    ("nvcr.io", "https://nvcr.io"),
    ("public.ecr.aws", "https://public.ecr.aws"),
];

#[derive(Debug, Clone)]
pub struct Registry {
    /// How clients name it: `?ns=`, the path prefix, `/token/<name>`.
    pub name: String,
    /// Base URL of its registry API (may carry a path): its first endpoint.
    pub registry: Url,
    /// The endpoints to fall back on, in order (`[[upstreams]] endpoints` after the first):
    /// see `upstream::endpoints`.
    pub fallbacks: Vec<Url>,
    /// A token realm fixed by configuration (Docker Hub's `<upstream.auth>/token`). When set,
    /// every challenge from this upstream is sent to it and no realm is learned.
    pub realm: Option<Url>,
    /// Docker Hub's rule: a one-component name `x` is `library/x`.
    pub library: bool,
    /// Host names that select this upstream (`ghcr.mirror.example.com`).
    pub host_names: Vec<ServerName>,
    /// Passthrough mode: clients' credentials go here even when a request names this upstream
    /// by path prefix or `?ns=` rather than by the host name it was sent to (see
    /// `credentials`). Off by default: a password typed for one registry must not reach
    /// another's token issuer.
    pub forward_credentials: bool,
    /// hubferry's own account there, used in managed auth mode only (see `upstream_tokens`).
    pub credentials: Option<Credentials>,
    /// Its own egress proxy, or `none`; unset, `egress.proxy` (or the environment's) applies.
    pub proxy: Option<ProxyChoice>,
}

impl Registry {
    /// Its endpoints in order: `registry`, then the fallbacks.
    pub fn endpoints(&self) -> impl Iterator<Item = &Url> {
        std::iter::once(&self.registry).chain(&self.fallbacks)
    }

    /// Its name as a [`RegistryName`].
    pub fn label(&self) -> RegistryName {
        registry_name(&self.name)
    }

    /// Where clients get tokens for it on the mirror, when its realm is fixed by configuration:
    /// `/token` for Docker Hub (as before there were many upstreams), `/token/<name>` else.
    pub fn token_path(&self) -> String {
        if self.name == DOCKER_HUB {
            "/token".to_owned()
        } else {
            format!("/token/{}", self.name)
        }
    }
}

/// `name`, interned: the same `&'static str` for every call with that name. Names come from the
/// configuration only (a request resolves to a configured upstream or to none), so the few
/// leaked are bounded; looking one up is a read lock and a scan of a handful.
fn registry_name(name: &str) -> RegistryName {
    static NAMES: RwLock<Vec<&'static str>> = RwLock::new(Vec::new());
    let known = |names: &[&'static str]| names.iter().copied().find(|n| *n == name);
    if let Some(found) = known(&NAMES.read().unwrap_or_else(PoisonError::into_inner)) {
        return found;
    }
    let mut names = NAMES.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = known(&names) {
        return found;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.push(leaked);
    leaked
}

/// How a request found its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Ns,
    Host,
    /// The first component of the name was the upstream's name: it is stripped going up and put
    /// back on what comes down (challenge scopes, `Location`s).
    Prefix,
    Default,
}

/// A `?ns=` naming no configured upstream: answered 404 rather than served from the default
/// upstream, which would hand out another registry's image under that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownUpstream(pub String);

/// Every configured upstream; validated by `config` (unique names and host names, Docker Hub
/// present, the default one of them).
#[derive(Debug, Clone)]
pub struct Registries {
    list: Vec<Registry>,
    default: usize,
}

impl Registries {
    /// `list` must hold an entry named [`DOCKER_HUB`] and `default` must be an index into it.
    pub fn new(list: Vec<Registry>, default: usize) -> Registries {
        assert!(default < list.len() && list.iter().any(|u| u.name == DOCKER_HUB));
        Registries { list, default }
    }

    pub fn all(&self) -> &[Registry] {
        &self.list
    }

    pub fn get(&self, name: &str) -> Option<&Registry> {
        self.list.iter().find(|u| u.name == name)
    }

    pub fn default_upstream(&self) -> &Registry {
        &self.list[self.default]
    }

    pub fn docker_hub(&self) -> &Registry {
        self.get(DOCKER_HUB)
            .expect("validated: docker.io is configured")
    }

    /// The upstream for a request with query `ns`, `Host` `host` (reached over `proto`) and
    /// repository name `name` (`None` for `/v2/` and routes without one).
    pub fn resolve(
        &self,
        ns: Option<&str>,
        host: Option<&str>,
        proto: &str,
        name: Option<&str>,
    ) -> Result<(&Registry, Via), UnknownUpstream> {
        if let Some(ns) = ns.filter(|ns| !ns.is_empty()) {
            let ns = ns.to_ascii_lowercase();
            return self
                .get(&ns)
                .map(|u| (u, Via::Ns))
                .ok_or(UnknownUpstream(ns));
        }
        if let Some(upstream) = self.by_host(host, proto) {
            return Ok((upstream, Via::Host));
        }
        // Only with something after it: `/v2/ghcr.io/manifests/x` names a repository `ghcr.io`.
        let first = name.and_then(|n| n.split_once('/')).map(|(first, _)| first);
        if let Some(upstream) = first.and_then(|first| self.get(first)) {
            return Ok((upstream, Via::Prefix));
        }
        Ok((self.default_upstream(), Via::Default))
    }

    /// The upstream a request's host name stands for: the one whose `host_names` it is, else
    /// the default. A client's credentials for that host name are meant for this registry
    /// (`docker login mirror.example.com` logs in to what `mirror.example.com` serves), whatever
    /// `?ns=` or path prefix a request adds (see `credentials`).
    pub fn home(&self, host: Option<&str>, proto: &str) -> &Registry {
        self.by_host(host, proto)
            .unwrap_or_else(|| self.default_upstream())
    }

    fn by_host(&self, host: Option<&str>, proto: &str) -> Option<&Registry> {
        let host = host?;
        self.list.iter().find(|u| {
            u.host_names
                .iter()
                .any(|n| n.matches_request_host(host, proto))
        })
    }
}

/// containerd's `ns` parameter: the first one in the query.
pub fn ns_param(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "ns")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(name: &str, hosts: &[&str]) -> Registry {
        Registry {
            name: name.into(),
            registry: Url::parse(&format!("https://{name}")).unwrap(),
            fallbacks: Vec::new(),
            realm: None,
            library: name == DOCKER_HUB,
            host_names: hosts
                .iter()
                .map(|h| ServerName::parse(h).unwrap())
                .collect(),
            forward_credentials: false,
            credentials: None,
            proxy: None,
        }
    }

    fn registries() -> Registries {
        Registries::new(
            vec![
                upstream(DOCKER_HUB, &["hub.mirror.test"]),
                upstream("ghcr.io", &["ghcr.mirror.test", "localhost:5000"]),
                upstream("quay.io", &[]),
            ],
            0,
        )
    }

    fn pick(ns: Option<&str>, host: Option<&str>, name: Option<&str>) -> (String, Via) {
        let r = registries();
        let (u, via) = r.resolve(ns, host, "http", name).unwrap();
        (u.name.clone(), via)
    }

    #[test]
    fn ns_then_host_then_prefix_then_default() {
        let all = (
            Some("quay.io"),
            Some("ghcr.mirror.test"),
            Some("ghcr.io/a/b"),
        );
        assert_eq!(pick(all.0, all.1, all.2), ("quay.io".into(), Via::Ns));
        assert_eq!(pick(None, all.1, all.2), ("ghcr.io".into(), Via::Host));
        assert_eq!(
            pick(None, Some("other"), all.2),
            ("ghcr.io".into(), Via::Prefix)
        );
        assert_eq!(
            pick(None, None, Some("quay.io/a")),
            ("quay.io".into(), Via::Prefix)
        );
        assert_eq!(
            pick(None, Some("x"), Some("library/nginx")),
            (DOCKER_HUB.into(), Via::Default)
        );
        assert_eq!(
            pick(Some("DOCKER.IO"), None, Some("ghcr.io/a")),
            (DOCKER_HUB.into(), Via::Ns)
        );
        // A repository called like an upstream, with nothing below it, is not a prefix.
        assert_eq!(
            pick(None, None, Some("ghcr.io")),
            (DOCKER_HUB.into(), Via::Default)
        );
        assert_eq!(
            pick(Some(""), None, None),
            (DOCKER_HUB.into(), Via::Default)
        );
    }

    #[test]
    fn host_names_match_like_server_names() {
        assert_eq!(pick(None, Some("GHCR.mirror.test:8080"), None).0, "ghcr.io");
        assert_eq!(pick(None, Some("localhost:5000"), None).0, "ghcr.io");
        assert_eq!(pick(None, Some("localhost:5001"), None).0, DOCKER_HUB);
        assert_eq!(pick(None, Some("hub.mirror.test"), None).1, Via::Host);
    }

    #[test]
    fn an_unknown_ns_is_refused() {
        let r = registries();
        assert_eq!(
            r.resolve(Some("example.org"), None, "http", Some("a/b"))
                .unwrap_err(),
            UnknownUpstream("example.org".into())
        );
    }

    #[test]
    fn ns_is_read_from_the_query() {
        assert_eq!(ns_param(Some("ns=ghcr.io")).as_deref(), Some("ghcr.io"));
        assert_eq!(
            ns_param(Some("n=1&ns=docker.io&ns=x")).as_deref(),
            Some("docker.io")
        );
        assert_eq!(ns_param(Some("digest=sha256:x")), None);
        assert_eq!(ns_param(None), None);
    }

    #[test]
    fn labels_are_interned() {
        let ghcr = upstream("ghcr.io", &[]);
        let again = upstream("ghcr.io", &[]);
        assert_eq!(ghcr.label(), "ghcr.io");
        assert!(std::ptr::eq(ghcr.label(), again.label()));
        assert_eq!(upstream("quay.io", &[]).label(), "quay.io");
    }
}
