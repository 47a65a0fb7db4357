//! Settings. Each one is declared once, in `settings` (key, type, default, flag, help); from
//! that table come the flags (`flags`), the layers merged in rising precedence (defaults, a
//! TOML file, `HUBFERRY_*` environment variables, flags; `layers`), each setting read with its
//! own type (`values`), and the checks across settings (`validate`, `registries`, `auth`) that
//! make the typed [`Config`] the server runs on. Every problem found is reported at once, each
//! naming its key.

use std::{fmt, net::SocketAddr, num::NonZeroUsize, path::PathBuf, time::Duration};

use rustls::pki_types::CertificateDer;
use url::Url;

use crate::{
    net::{client_addr::Cidr, origin::ServerName},
    policy::images::ImagePolicy,
    upstream::{egress, proxy, proxy::Route, registries::Registries},
};
// Built here, defined where they are used.
pub use crate::{
    auth::managed::ManagedAuth,
    logging::LogFormat,
    stream::resume::ResumePolicy,
    upstream::{client::Timeouts, endpoints::BreakerPolicy, redirect::RedirectPolicy},
};

mod auth;
pub mod capacity;
mod flags;
mod layers;
pub mod pem;
mod registries;
mod setting;
mod settings;
mod validate;
mod values;

pub use flags::Flags;
pub use setting::Setting;
pub use settings::SETTINGS;
pub use values::AcmeChallenge;

/// Where the admin listener binds unless told otherwise: loopback, on a port that no exporter in
/// the Prometheus wiki's "Default port allocations" list uses. Exporters run on the same hosts
/// as hubferry, and a port one of them holds stops hubferry at start-up ("Address already in
/// use"): 9100, for one, is node_exporter's. 5002 sits beside the mirror's own 5000, and is not
/// 5001, which distribution's debug listener (its metrics) is usually given.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:5002";

/// The validated configuration the server runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HUBFERRY_` environment variables that name no setting, left out (logged at start-up).
    pub ignored_env: Vec<String>,
    /// Plain HTTP listener; `None` when only TLS is served.
    pub listen: Option<SocketAddr>,
    pub workers: NonZeroUsize,
    /// Origin clients reach this mirror at; `None` derives it from each request.
    pub public_url: Option<Url>,
    /// Host names a request's `Host` may name to be believed (see `origin::public_base`).
    pub server_names: Vec<ServerName>,
    /// Docker Hub's hosts (`[upstream]` in the file, for compatibility).
    pub docker_hub: DockerHub,
    /// `upstream.breaker_*`: when an endpoint of a registry with several is skipped.
    pub breaker: BreakerPolicy,
    /// `upstream.ratelimit_warn_fraction`: below this share of a pull budget, a warning.
    pub ratelimit_warn_fraction: f64,
    /// Extra trust anchors for every upstream, from `upstream.ca_file`, already parsed.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Every registry mirrored, Docker Hub's (`upstream`) among them.
    pub registries: Registries,
    /// How upstream connections leave: the proxy (if any) and the DNS servers.
    pub egress: Egress,
    pub timeouts: Timeouts,
    pub redirect: RedirectPolicy,
    pub resume: ResumePolicy,
    pub tls: Option<TlsListener>,
    /// `None` when switched off.
    pub admin_listen: Option<SocketAddr>,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub limits: Limits,
    /// Which images are served (allow and deny lists).
    pub images: ImagePolicy,
    pub access: AccessPolicy,
    /// `auth.mode = "managed"`: hubferry is its clients' token issuer; `None`: passthrough.
    pub managed: Option<ManagedAuth>,
}

/// Who may use the mirror (see `crate::middleware::access_control`); empty lists: everyone.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// When not empty, only these networks are served.
    pub allow: Vec<Cidr>,
    /// Never served, even when in `allow`.
    pub deny: Vec<Cidr>,
    /// Peers whose `X-Forwarded-For` names the client (see `net::client_addr`).
    pub trusted_proxies: Vec<Cidr>,
}

/// The TLS listener. With ACME, `cert` and `key` are the files in `tls.acme.cache_dir` that
/// hubferry writes and serves (see `server::acme`); they may not exist yet.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub acme: Option<Acme>,
}

/// `tls.acme.*`: the certificate comes from an ACME CA.
#[derive(Debug, Clone)]
pub struct Acme {
    /// Lower-case DNS names, in the order given; the first names the files.
    pub domains: Vec<String>,
    pub email: Option<String>,
    pub directory: Url,
    /// Trust anchors for the directory's HTTPS beside the web's roots (`tls.acme.ca_file`).
    pub ca_roots: Vec<CertificateDer<'static>>,
    pub cache_dir: PathBuf,
    pub challenge: AcmeChallenge,
    /// The first wait after a failure; doubled after each further one.
    pub retry: Duration,
}

impl Acme {
    /// The certificate chain and key files, named for the first name and a digest of the CA
    /// and all the names: another CA or another set of names asks for a new certificate, not
    /// one that does not fit.
    pub fn certificate_files(&self) -> (PathBuf, PathBuf) {
        let stem = format!(
            "{}-{}",
            self.domains[0],
            short_digest(&format!("{}\n{}", self.directory, self.domains.join(",")))
        );
        (
            self.cache_dir.join(format!("{stem}.crt")),
            self.cache_dir.join(format!("{stem}.key")),
        )
    }

    /// The account's credentials (its key and URL) at this CA.
    pub fn account_file(&self) -> PathBuf {
        self.cache_dir.join(format!(
            "account-{}.json",
            short_digest(self.directory.as_str())
        ))
    }
}

/// 16 hex digits of SHA-256: enough to tell a handful of files apart.
fn short_digest(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub request_head_timeout: Duration,
    pub keep_alive: Duration,
    /// 0: no limit.
    pub upstream_pool: usize,
    /// Per client key (see `client_ip::limit_key`); 0: no limit.
    pub manifests_per_minute: u32,
    /// Per client key; 0: no limit.
    pub blob_streams_per_client: u32,
    /// Per HTTP/2 connection; at least 1.
    pub h2_max_streams: u32,
    /// Blob downloads at once, process-wide.
    pub max_streams: StreamCap,
}

/// `limits.max_streams`: set, or derived from the memory limit (see `capacity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCap {
    /// As configured; 0: no cap.
    Set(usize),
    /// `auto`, from the memory limit found (`None`: none, so the fixed default).
    Derived {
        max: usize,
        memory_limit: Option<u64>,
    },
}

impl StreamCap {
    /// The cap; 0: none.
    pub fn max(self) -> usize {
        match self {
            StreamCap::Set(max) | StreamCap::Derived { max, .. } => max,
        }
    }
}

/// `[egress]`: how connections to upstreams leave this host.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    /// For every upstream without a `proxy` of its own.
    pub route: Route,
    /// `egress.dns`; empty: the system's resolver.
    pub dns: Vec<SocketAddr>,
}

impl Egress {
    /// The route of the upstream with this `proxy` setting.
    pub fn route_of(&self, own: Option<&proxy::ProxyChoice>) -> Route {
        match own {
            Some(choice) => choice.route(&self.route.bypass),
            None => self.route.clone(),
        }
    }
}

/// Docker Hub's three hosts: its registry, its token issuer and its search index.
#[derive(Debug, Clone)]
pub struct DockerHub {
    pub registry: Url,
    pub auth: Url,
    pub index: Url,
}

/// Every configuration problem found, each naming the key it is about.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: String) -> ConfigError {
        ConfigError {
            problems: vec![problem],
        }
    }

    /// One line per problem: `key: what is wrong`.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

/// One line, whatever the count, as start-up prints it: a log line per problem would be
/// separated from its context by log collectors.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            all => write!(
                f,
                "invalid configuration, {} problems: {}",
                all.len(),
                all.join("; ")
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Problems found so far, each naming its key: checks that do not depend on each other all
/// run, and report together.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    /// The value of a check that passed; `None`, with its problems noted, for one that failed.
    fn take<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|e| self.0.extend(e.problems)).ok()
    }

    /// `value` when no problem was noted, else every problem.
    fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError { problems: self.0 })
        }
    }
}

fn invalid(key: &str, problem: impl fmt::Display) -> ConfigError {
    ConfigError::one(format!("{key}: {problem}"))
}

impl Config {
    /// Where the upstream client may connect without the public-address check: Docker Hub's
    /// URLs, every configured registry and every configured realm, and every egress proxy
    /// (see `upstream::egress`).
    pub fn egress_policy(&self) -> egress::Policy {
        let hub = [
            &self.docker_hub.registry,
            &self.docker_hub.auth,
            &self.docker_hub.index,
        ];
        let registries = self
            .registries
            .all()
            .iter()
            .flat_map(|u| u.endpoints().chain(u.realm.as_ref()));
        let routes: Vec<Route> = self
            .registries
            .all()
            .iter()
            .map(|u| self.egress.route_of(u.proxy.as_ref()))
            .collect();
        egress::Policy::new(
            self.redirect.allow_private,
            hub.into_iter().chain(registries),
        )
        .trusting_proxies(
            self.egress
                .route
                .proxies()
                .chain(routes.iter().flat_map(Route::proxies)),
        )
    }

    /// Loads defaults < file < environment < flags and validates the result.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let env = std::env::vars()
            .filter(|(k, _)| k.starts_with("HUBFERRY_") || proxy::ENV_VARS.contains(&k.as_str()));
        Self::load_from(flags, env)
    }

    /// As [`Config::load`], with the environment given explicitly (tests): `HUBFERRY_*`
    /// settings and the proxy variables curl reads (`upstream::proxy::ENV_VARS`).
    ///
    /// Two stages, each reporting every problem it finds: the values, each on its own (and
    /// the file's unknown keys); then, once every value parses, the checks between settings
    /// and of the files they name. A check between values that do not parse would only repeat
    /// their problems in other words.
    pub fn load_from(
        flags: &Flags,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (proxy_env, env): (Vec<_>, Vec<_>) = env
            .into_iter()
            .partition(|(k, _)| proxy::ENV_VARS.contains(&k.as_str()));
        let (layers, ignored_env) = layers::merge(flags, env)?;
        let mut problems = layers::unknown_keys(&layers);
        let raw = settings::Raw::read(&layers).map_err(|found| problems.extend(found));
        let raw = match raw {
            Ok(raw) if problems.is_empty() => raw,
            _ => return Err(ConfigError { problems }),
        };
        let mut config = validate::config(raw, &proxy_env)?;
        config.ignored_env = ignored_env;
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
