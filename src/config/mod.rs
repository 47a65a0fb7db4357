//! Settings: one raw struct that serde fills from defaults, a TOML file, `HUBFERRY_*` environment
//! variables and flags (in rising precedence), then `validate` turns it into the typed [`Config`]
//! the server runs on. Every problem is reported as one line naming the key.

use std::{fmt, net::SocketAddr, num::NonZeroUsize, path::PathBuf, time::Duration};

use clap::Parser;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::image_policy::{ImagePolicy, Pattern, PatternList};
use crate::{
    capacity,
    client_ip::Cidr,
    clients::{Credentials, Secret, Users},
    grant::TokenKey,
    origin::ServerName,
    request_target::is_name_component,
    upstreams::{self, Registries, Upstream, DOCKER_HUB},
};

/// Where the admin listener binds unless told otherwise: loopback, on a port that no exporter in
/// the Prometheus wiki's "Default port allocations" list uses. Exporters run on the same hosts
/// as hubferry, and a port one of them holds stops hubferry at start-up ("Address already in
/// use"): 9100, for one, is node_exporter's. 5002 sits beside the mirror's own 5000, and is not
/// 5001, which distribution's debug listener (its metrics) is usually given.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:5002";

/// Command-line flags. Each one overrides the setting of the same meaning from the file or the
/// environment; `--config` names the TOML file.
#[derive(Debug, Default, Parser)]
#[command(
    name = "hubferry",
    version,
    about = "A streaming Docker Hub accelerator"
)]
pub struct Flags {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to serve plain HTTP on [setting: listen; default 0.0.0.0:5000].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Number of worker threads, each with its own upstream client [setting: workers; default: number of CPUs].
    #[arg(long, value_name = "N")]
    pub workers: Option<String>,
    /// External base URL of this mirror, used to build the token realm, e.g. https://mirror.example.com
    /// [setting: public_url; default: the request's scheme and Host, see --server-name].
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// A host name (with an optional port) clients reach this mirror by, like nginx's server_name;
    /// repeat it or separate names with commas. Without public_url, a request's Host builds the
    /// token realm only when it is one of these; any other gets the first [setting: server_names].
    #[arg(
        long = "server-name",
        value_name = "HOST[:PORT]",
        value_delimiter = ','
    )]
    pub server_name: Vec<String>,
    /// Serve only images matching one of these patterns (`library/*`, `bitnami/**`,
    /// `ghcr.io/org/*`); repeat it or separate with commas [setting: images.allow; default: all].
    #[arg(long = "allow-image", value_name = "PATTERN", value_delimiter = ',')]
    pub allow_image: Vec<String>,
    /// Never serve images matching one of these patterns; wins over the allow list
    /// [setting: images.deny].
    #[arg(long = "deny-image", value_name = "PATTERN", value_delimiter = ',')]
    pub deny_image: Vec<String>,
    /// What clients refused an image are told [setting: images.denied_message].
    #[arg(long, value_name = "TEXT")]
    pub denied_message: Option<String>,
    /// Upstream registry [setting: upstream.registry; default https://registry-1.docker.io].
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// Upstream token issuer [setting: upstream.auth; default https://auth.docker.io].
    #[arg(long, value_name = "URL")]
    pub auth: Option<String>,
    /// Upstream search index [setting: upstream.index; default https://index.docker.io].
    #[arg(long, value_name = "URL")]
    pub index: Option<String>,
    /// Complete one-component names to library/NAME on the docker.io upstream: true or false
    /// [setting: upstream.library; default: true when upstream.registry is Docker Hub's].
    #[arg(long, value_name = "BOOL")]
    pub library: Option<String>,
    /// The upstream a request goes to when neither ?ns=, its host name nor a path prefix names
    /// one [setting: default_upstream; default docker.io].
    #[arg(long, value_name = "NAME")]
    pub default_upstream: Option<String>,
    /// Extra PEM CA certificates to trust for upstreams, on top of the standard web roots
    /// [setting: upstream.ca_file].
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<String>,
    /// Time allowed to connect to an upstream, TLS included [setting: timeouts.connect; default 10s].
    #[arg(long, value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Time allowed for an upstream to send its response headers [setting: timeouts.response_headers; default 30s].
    #[arg(long, value_name = "DURATION")]
    pub response_timeout: Option<String>,
    /// Longest silence allowed between two chunks of a body [setting: timeouts.body_idle; default 60s].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Most redirects followed for one blob request [setting: redirect.max_hops; default 5].
    #[arg(long, value_name = "N")]
    pub max_redirects: Option<String>,
    /// Resumes tried in a row without a byte of progress before a broken download is given up;
    /// 0 turns transparent resume off [setting: resume.attempts; default 5].
    #[arg(long, value_name = "N")]
    pub resume_attempts: Option<String>,
    /// Wait before the first resume of a broken download, doubled for each further try in a row
    /// (at most 10s) [setting: resume.backoff; default 500ms].
    #[arg(long, value_name = "DURATION")]
    pub resume_backoff: Option<String>,
    /// Follow redirects to loopback, link-local and private addresses: true or false
    /// [setting: redirect.allow_private; default false].
    #[arg(long, value_name = "BOOL")]
    pub allow_private_redirects: Option<String>,
    /// Address to serve HTTPS (HTTP/2 and HTTP/1.1) on [setting: tls.listen; default: off].
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<String>,
    /// PEM certificate chain for the TLS listener [setting: tls.cert].
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for the TLS listener [setting: tls.key].
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<String>,
    /// Address of the admin listener (/healthz, /readyz, /metrics); "off" disables it
    /// [setting: admin_listen; default 127.0.0.1:5002].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT [setting: shutdown_grace; default 30s].
    #[arg(long, value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// Access log format: text or json [setting: log_format; default text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Most client connections each worker holds at once [setting: limits.max_connections; default 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,
    /// Time a client gets to send its request head (slowloris guard) [setting: limits.request_head_timeout; default 10s].
    #[arg(long, value_name = "DURATION")]
    pub request_head_timeout: Option<String>,
    /// How long an idle client connection is kept open [setting: limits.keep_alive; default 75s].
    #[arg(long, value_name = "DURATION")]
    pub keep_alive: Option<String>,
    /// Most connections each worker opens to upstreams at once; 0 means no limit
    /// [setting: limits.upstream_pool; default 0].
    #[arg(long, value_name = "N")]
    pub upstream_pool: Option<String>,
    /// Networks allowed to use the mirror (CIDR or address); repeat or separate with commas.
    /// When any is given, every other client is refused [setting: access.allow; default: all].
    #[arg(long = "allow", value_name = "CIDR", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Networks refused even when allowed [setting: access.deny].
    #[arg(long = "deny", value_name = "CIDR", value_delimiter = ',')]
    pub deny: Vec<String>,
    /// Proxies in front of hubferry whose X-Forwarded-For is believed [setting: access.trusted_proxies].
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_delimiter = ',')]
    pub trusted_proxy: Vec<String>,
    /// Manifest requests each client (IPv4 address, IPv6 /64) may make per minute; 0 means no
    /// limit [setting: limits.manifests_per_minute; default 0].
    #[arg(long, value_name = "N")]
    pub manifests_per_minute: Option<String>,
    /// Blob downloads each client (IPv4 address, IPv6 /64) may have running at once; 0 means
    /// no limit [setting: limits.blob_streams_per_client; default 0].
    #[arg(long, value_name = "N")]
    pub blob_streams_per_client: Option<String>,
    /// Most HTTP/2 streams one client connection may have open at once, advertised as
    /// SETTINGS_MAX_CONCURRENT_STREAMS [setting: limits.h2_max_streams; default 100].
    #[arg(long, value_name = "N")]
    pub h2_max_streams: Option<String>,
    /// Most blob downloads the process streams at once; beyond it, 503 with Retry-After. auto
    /// sizes it from the cgroup memory limit (see README); 0 means no cap
    /// [setting: limits.max_streams; default auto].
    #[arg(long, value_name = "N|auto")]
    pub max_streams: Option<String>,
    /// passthrough (clients' credentials go upstream) or managed (hubferry issues its own
    /// tokens and uses its own upstream accounts) [setting: auth.mode; default passthrough].
    #[arg(long, value_name = "MODE")]
    pub auth_mode: Option<String>,
    /// htpasswd file (bcrypt entries only) of the users managed auth accepts [setting: auth.htpasswd].
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<String>,
    /// Whether clients without credentials may pull in managed mode: true or false
    /// [setting: auth.anonymous; default true].
    #[arg(long, value_name = "BOOL")]
    pub anonymous: Option<String>,
    /// Lifetime of the tokens managed auth issues [setting: auth.token_ttl; default 5m].
    #[arg(long, value_name = "DURATION")]
    pub token_ttl: Option<String>,
    /// Failed logins each client (IPv4 address, IPv6 /64) and each user name may have per
    /// minute in managed mode, as a burst refilled evenly; 0 means no limit
    /// [setting: auth.login_failures_per_minute; default 10].
    #[arg(long, value_name = "N")]
    pub login_failures_per_minute: Option<String>,
    /// File with at least 32 secret bytes to sign managed-auth tokens with, shared by replicas
    /// [setting: auth.token_key_file; default: a random key per process].
    #[arg(long, value_name = "FILE")]
    pub token_key_file: Option<String>,
    /// hubferry's own Docker Hub user name, for managed auth [setting: upstream.username].
    #[arg(long, value_name = "NAME")]
    pub upstream_username: Option<String>,
    /// File holding that account's password or access token (no flag takes the secret itself:
    /// command lines are visible to every local user) [setting: upstream.password_file].
    #[arg(long, value_name = "FILE")]
    pub upstream_password_file: Option<String>,
}

impl Flags {
    /// The settings key each given flag overrides, with its value.
    fn overrides(&self) -> Vec<(&'static str, String)> {
        let pairs = [
            ("listen", &self.listen),
            ("workers", &self.workers),
            ("public_url", &self.public_url),
            ("upstream.registry", &self.registry),
            ("upstream.auth", &self.auth),
            ("upstream.index", &self.index),
            ("upstream.library", &self.library),
            ("default_upstream", &self.default_upstream),
            ("upstream.ca_file", &self.ca_file),
            ("timeouts.connect", &self.connect_timeout),
            ("timeouts.response_headers", &self.response_timeout),
            ("timeouts.body_idle", &self.idle_timeout),
            ("redirect.max_hops", &self.max_redirects),
            ("resume.attempts", &self.resume_attempts),
            ("resume.backoff", &self.resume_backoff),
            ("redirect.allow_private", &self.allow_private_redirects),
            ("tls.listen", &self.tls_listen),
            ("tls.cert", &self.tls_cert),
            ("tls.key", &self.tls_key),
            ("admin_listen", &self.admin_listen),
            ("shutdown_grace", &self.shutdown_grace),
            ("log_format", &self.log_format),
            ("limits.max_connections", &self.max_connections),
            ("limits.request_head_timeout", &self.request_head_timeout),
            ("limits.keep_alive", &self.keep_alive),
            ("limits.upstream_pool", &self.upstream_pool),
            ("images.denied_message", &self.denied_message),
            ("limits.manifests_per_minute", &self.manifests_per_minute),
            (
                "limits.blob_streams_per_client",
                &self.blob_streams_per_client,
            ),
            ("limits.h2_max_streams", &self.h2_max_streams),
            ("limits.max_streams", &self.max_streams),
            ("auth.mode", &self.auth_mode),
            ("auth.htpasswd", &self.htpasswd),
            ("auth.anonymous", &self.anonymous),
            ("auth.token_ttl", &self.token_ttl),
            ("auth.token_key_file", &self.token_key_file),
            (
                "auth.login_failures_per_minute",
                &self.login_failures_per_minute,
            ),
            ("upstream.username", &self.upstream_username),
            ("upstream.password_file", &self.upstream_password_file),
        ];
        let mut overrides: Vec<_> = pairs
            .into_iter()
            .filter_map(|(key, value)| value.clone().map(|v| (key, v)))
            .collect();
        for (key, list) in [
            ("server_names", &self.server_name),
            ("images.allow", &self.allow_image),
            ("images.deny", &self.deny_image),
        ] {
            if !list.is_empty() {
                overrides.push((key, list.join(",")));
            }
        }
        for (key, list) in [
            ("access.allow", &self.allow),
            ("access.deny", &self.deny),
            ("access.trusted_proxies", &self.trusted_proxy),
        ] {
            if !list.is_empty() {
                overrides.push((key, list.join(",")));
            }
        }
        overrides
    }
}

/// Settings as written by the user; strings where the user writes strings, checked by `validate`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawSettings {
    listen: String,
    workers: Option<String>,
    public_url: Option<String>,
    server_names: RawList,
    upstream: RawUpstream,
    /// More registries (`[[upstreams]]` in the file), and overrides of the built-in ones.
    upstreams: Vec<RawRegistry>,
    default_upstream: String,
    timeouts: RawTimeouts,
    redirect: RawRedirect,
    resume: RawResume,
    tls: RawTls,
    admin_listen: String,
    shutdown_grace: String,
    log_format: String,
    limits: RawLimits,
    images: RawImages,
    access: RawAccess,
    auth: RawAuth,
}

/// `[auth]`: how clients authenticate (see `clients`, `grant`, `upstream_tokens`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    mode: String,
    htpasswd: Option<PathBuf>,
    tokens: RawList,
    anonymous: String,
    token_ttl: String,
    token_key_file: Option<PathBuf>,
    login_failures_per_minute: String,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            mode: "passthrough".into(),
            htpasswd: None,
            tokens: RawList::default(),
            // The point of managed mode: anonymous clients pull under the
            // account's rate limit.
            anonymous: "true".into(),
            // Docker Hub's own tokens live 300 s.
            token_ttl: "5m".into(),
            token_key_file: None,
            // A user who mistypes a few times goes on; a guesser gets one try every 6 s.
            login_failures_per_minute: "10".into(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawImages {
    allow: RawList,
    deny: RawList,
    denied_message: String,
}

impl Default for RawImages {
    fn default() -> Self {
        RawImages {
            allow: RawList::default(),
            deny: RawList::default(),
            denied_message: "this image is not served by this mirror".into(),
        }
    }
}

impl RawImages {
    fn validate(&self) -> Result<ImagePolicy, ConfigError> {
        let patterns = |key: &str, list: &RawList| {
            let parsed = list
                .items()
                .into_iter()
                .map(|p| Pattern::parse(p).map_err(|e| invalid(key, e)))
                .collect::<Result<Vec<_>, _>>()?;
            PatternList::compile(&parsed).map_err(|e| invalid(key, e))
        };
        Ok(ImagePolicy {
            allow: patterns("images.allow", &self.allow)?,
            deny: patterns("images.deny", &self.deny)?,
            message: self.denied_message.trim().to_owned(),
        })
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawAccess {
    allow: RawList,
    deny: RawList,
    trusted_proxies: RawList,
}

/// A list setting: a TOML array, or one string with commas between the items (how environment
/// variables and flags give it).
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
enum RawList {
    Items(Vec<String>),
    Text(String),
}

impl Default for RawList {
    fn default() -> Self {
        RawList::Items(Vec::new())
    }
}

impl RawList {
    fn items(&self) -> Vec<&str> {
        let items: Vec<&str> = match self {
            RawList::Items(items) => items.iter().map(String::as_str).collect(),
            RawList::Text(text) => text.split(',').collect(),
        };
        items
            .into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawTls {
    listen: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_connections: String,
    request_head_timeout: String,
    keep_alive: String,
    upstream_pool: String,
    manifests_per_minute: String,
    blob_streams_per_client: String,
    h2_max_streams: String,
    max_streams: String,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_connections: "10000".into(),
            request_head_timeout: "10s".into(),
            // Registry clients pull many blobs in a row; keep their connections warm.
            keep_alive: "75s".into(),
            upstream_pool: "0".into(),
            manifests_per_minute: "0".into(),
            blob_streams_per_client: "0".into(),
            // RFC 9113 §6.5.2 asks for no less than 100, so that clients keep their parallelism.
            h2_max_streams: "100".into(),
            max_streams: "auto".into(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    registry: String,
    auth: String,
    index: String,
    ca_file: Option<PathBuf>,
    /// Unset: on when `registry` is Docker Hub's own.
    library: Option<String>,
    /// hubferry's own account at Docker Hub (managed auth only).
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

/// One `[[upstreams]]` entry. Docker Hub's is configured by `[upstream]`; an entry named
/// `docker.io` may only add `host_names` (and `library`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawRegistry {
    name: String,
    registry: Option<String>,
    /// A fixed token realm (full URL); unset, it is learned from the upstream's challenges.
    realm: Option<String>,
    library: Option<String>,
    host_names: RawList,
    /// Passthrough mode: send clients' credentials here even when the request named this
    /// registry by path prefix or `?ns=` (see `credentials`).
    forward_credentials: Option<String>,
    /// hubferry's own account at this registry (managed auth only).
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimeouts {
    connect: String,
    response_headers: String,
    body_idle: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawRedirect {
    max_hops: String,
    allow_private: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawResume {
    attempts: String,
    backoff: String,
}

impl Default for RawResume {
    fn default() -> Self {
        RawResume {
            attempts: "5".into(),
            backoff: "500ms".into(),
        }
    }
}

impl Default for RawSettings {
    fn default() -> Self {
        RawSettings {
            listen: "0.0.0.0:5000".into(),
            workers: None,
            public_url: None,
            server_names: RawList::default(),
            upstream: RawUpstream::default(),
            upstreams: Vec::new(),
            default_upstream: DOCKER_HUB.into(),
            timeouts: RawTimeouts::default(),
            redirect: RawRedirect::default(),
            resume: RawResume::default(),
            tls: RawTls::default(),
            admin_listen: DEFAULT_ADMIN_LISTEN.into(),
            shutdown_grace: "30s".into(),
            log_format: "text".into(),
            limits: RawLimits::default(),
            images: RawImages::default(),
            access: RawAccess::default(),
            auth: RawAuth::default(),
        }
    }
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            registry: "https://registry-1.docker.io".into(),
            auth: "https://auth.docker.io".into(),
            index: "https://index.docker.io".into(),
            ca_file: None,
            library: None,
            username: None,
            password: None,
            password_file: None,
        }
    }
}

impl Default for RawTimeouts {
    fn default() -> Self {
        // Generous defaults: the whole point of a mirror is a slow, long-haul link to Docker Hub.
        RawTimeouts {
            connect: "10s".into(),
            response_headers: "30s".into(),
            body_idle: "60s".into(),
        }
    }
}

impl Default for RawRedirect {
    fn default() -> Self {
        RawRedirect {
            max_hops: "5".into(),
            // Off: a redirect must not reach the mirror's own network (SSRF); see `egress`.
            allow_private: "false".into(),
        }
    }
}

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
    pub upstream: Upstreams,
    /// Every registry mirrored, Docker Hub's (`upstream`) among them.
    pub registries: Registries,
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

/// Managed auth (see `routes::managed`): hubferry authenticates its clients, issues its own
/// tokens and talks to each upstream with that upstream's configured credentials.
#[derive(Debug, Clone)]
pub struct ManagedAuth {
    pub users: Users,
    /// Clients without credentials get a token too.
    pub anonymous: bool,
    /// Lifetime of the tokens hubferry issues.
    pub token_ttl: Duration,
    /// From `auth.token_key_file`; `None`: a random key per process.
    pub token_key: Option<TokenKey>,
    /// Failed logins per minute per client and per user name (see `login`); 0: no limit.
    pub login_failures_per_minute: u32,
}

/// Who may use the mirror (see `crate::guard`); empty lists: everyone.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// When not empty, only these networks are served.
    pub allow: Vec<Cidr>,
    /// Never served, even when in `allow`.
    pub deny: Vec<Cidr>,
    /// Peers whose `X-Forwarded-For` names the client (see `client_ip`).
    pub trusted_proxies: Vec<Cidr>,
}

#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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

#[derive(Debug, Clone)]
pub struct Upstreams {
    pub registry: Url,
    pub auth: Url,
    pub index: Url,
    /// Extra trust anchors from `upstream.ca_file`, already parsed.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response_headers: Duration,
    pub body_idle: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct RedirectPolicy {
    pub max_hops: u32,
    /// Redirects may lead to loopback, link-local and private addresses.
    pub allow_private: bool,
}

/// How broken downloads are resumed (see `crate::resume`).
#[derive(Debug, Clone, Copy)]
pub struct ResumePolicy {
    /// Tries in a row without progress; 0: resume is off.
    pub attempts: u32,
    /// Wait before the first try, doubled per further try in a row.
    pub backoff: Duration,
}

/// A configuration problem, always naming the key it is about.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(key: &str, problem: impl fmt::Display) -> ConfigError {
    ConfigError(format!("{key}: {problem}"))
}

impl Config {
    /// Loads defaults < file < environment < flags and validates the result.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let env = std::env::vars().filter(|(k, _)| k.starts_with("HUBFERRY_"));
        Self::load_from(flags, env)
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_from(
        flags: &Flags,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = &flags.config {
            if !file.is_file() {
                return Err(invalid(
                    "--config",
                    format!("no such file: {}", file.display()),
                ));
            }
            builder = builder
                .add_source(config::File::from(file.as_path()).format(config::FileFormat::Toml));
        }
        let (env, ignored_env) = settings_in_env(env);
        builder = builder.add_source(
            config::Environment::with_prefix("HUBFERRY")
                .prefix_separator("_")
                .separator("__")
                .source(Some(env)),
        );
        for (key, value) in flags.overrides() {
            builder = builder
                .set_override(key, value)
                .map_err(|e| invalid(key, e))?;
        }
        let raw: RawSettings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError(e.to_string()))?;
        let mut config = raw.validate()?;
        config.ignored_env = ignored_env;
        Ok(config)
    }
}

/// The `HUBFERRY_` variables of `env` that name a setting, and the names of those that do not.
/// Those are left out rather than refused: Kubernetes gives every pod `HUBFERRY_SERVICE_HOST`,
/// `HUBFERRY_PORT` and more when a Service is called `hubferry`, and none of them is ours. (An
/// unknown key in the file is still an error: that one was written for hubferry.)
fn settings_in_env(
    env: impl IntoIterator<Item = (String, String)>,
) -> (config::Map<String, String>, Vec<String>) {
    let known = setting_keys();
    let mut settings = config::Map::new();
    let mut ignored = Vec::new();
    for (name, value) in env {
        let key = name
            .strip_prefix("HUBFERRY_")
            .map(|rest| rest.to_ascii_lowercase().replace("__", "."));
        if key.is_some_and(|key| known.contains(&key)) {
            settings.insert(name, value);
        } else {
            ignored.push(name);
        }
    }
    ignored.sort();
    (settings, ignored)
}

/// Every settings key (`listen`, `upstream.registry` ...), read off the defaults, so that a new
/// setting is known here the moment it has a default.
fn setting_keys() -> std::collections::BTreeSet<String> {
    fn walk(
        prefix: &str,
        value: &serde_json::Value,
        keys: &mut std::collections::BTreeSet<String>,
    ) {
        if let serde_json::Value::Object(fields) = value {
            for (name, value) in fields {
                let key = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                if value.is_object() {
                    walk(&key, value, keys);
                } else {
                    keys.insert(key);
                }
            }
        }
    }
    let defaults = serde_json::to_value(RawSettings::default()).expect("settings serialise");
    let mut keys = std::collections::BTreeSet::new();
    walk("", &defaults, &mut keys);
    keys
}

impl RawSettings {
    fn validate(self) -> Result<Config, ConfigError> {
        let listen = parse_listen("listen", &self.listen)?;
        let workers = match self.workers.as_deref() {
            None => std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            Some(text) => text.trim().parse::<NonZeroUsize>().map_err(|_| {
                invalid(
                    "workers",
                    format!("'{text}' is not a whole number of at least 1"),
                )
            })?,
        };
        let public_url = self
            .public_url
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| parse_public_url(s).map_err(|e| invalid("public_url", e)))
            .transpose()?;
        let server_names = self
            .server_names
            .items()
            .into_iter()
            .map(|name| ServerName::parse(name).map_err(|e| invalid("server_names", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let upstream = Upstreams {
            registry: parse_upstream_url(&self.upstream.registry)
                .map_err(|e| invalid("upstream.registry", e))?,
            auth: parse_upstream_url(&self.upstream.auth)
                .map_err(|e| invalid("upstream.auth", e))?,
            index: parse_upstream_url(&self.upstream.index)
                .map_err(|e| invalid("upstream.index", e))?,
            extra_roots: match &self.upstream.ca_file {
                Some(path) if !path.as_os_str().is_empty() => {
                    crate::pem::certificates(path).map_err(|e| invalid("upstream.ca_file", e))?
                }
                _ => Vec::new(),
            },
        };
        let hub_credentials = credentials(
            "upstream",
            &self.upstream.username,
            &self.upstream.password,
            &self.upstream.password_file,
        )?;
        let registries = registries(
            &upstream,
            self.upstream.library.as_deref(),
            hub_credentials,
            self.upstreams,
            &self.default_upstream,
        )?;
        let managed = self.auth.validate(&registries)?;
        // Host names that pick an upstream are names clients reach the mirror by: believe them
        // for the token realm too (see `origin::public_base`).
        let mut server_names = server_names;
        if !server_names.is_empty() {
            for name in registries.all().iter().flat_map(|u| &u.host_names) {
                if !server_names.contains(name) {
                    server_names.push(name.clone());
                }
            }
        }
        let timeouts = Timeouts {
            connect: parse_duration("timeouts.connect", &self.timeouts.connect)?,
            response_headers: parse_duration(
                "timeouts.response_headers",
                &self.timeouts.response_headers,
            )?,
            body_idle: parse_duration("timeouts.body_idle", &self.timeouts.body_idle)?,
        };
        let max_hops = self
            .redirect
            .max_hops
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=20).contains(n))
            .ok_or_else(|| {
                invalid(
                    "redirect.max_hops",
                    format!(
                        "'{}' is not a whole number from 1 to 20",
                        self.redirect.max_hops
                    ),
                )
            })?;
        let tls = self.tls.validate()?;
        if listen.is_none() && tls.is_none() {
            return Err(invalid(
                "listen",
                "is off and no tls.listen is set: nothing would be served",
            ));
        }
        let log_format = match self.log_format.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log_format",
                    format!("'{other}' is not text or json"),
                ))
            }
        };
        Ok(Config {
            ignored_env: Vec::new(),
            listen,
            workers,
            public_url,
            server_names,
            upstream,
            registries,
            timeouts,
            redirect: RedirectPolicy {
                max_hops,
                allow_private: parse_bool("redirect.allow_private", &self.redirect.allow_private)?,
            },
            resume: self.resume.validate()?,
            tls,
            admin_listen: parse_listen("admin_listen", &self.admin_listen)?,
            shutdown_grace: parse_duration("shutdown_grace", &self.shutdown_grace)?,
            log_format,
            limits: self.limits.validate()?,
            images: self.images.validate()?,
            access: self.access.validate()?,
            managed,
        })
    }
}

/// Docker Hub (from `[upstream]`), the built-in registries, then `[[upstreams]]`: an entry with
/// the name of an earlier one replaces its settings, any other is added.
fn registries(
    hub: &Upstreams,
    hub_library: Option<&str>,
    hub_credentials: Option<Credentials>,
    raw: Vec<RawRegistry>,
    default_upstream: &str,
) -> Result<Registries, ConfigError> {
    // The rule is Docker Hub's: another registry standing in as docker.io (a private registry,
    // another mirror, a test double) may have one-component names of its own.
    let hub_is_docker_hub = matches!(
        hub.registry.host_str(),
        Some("registry-1.docker.io" | "docker.io" | "index.docker.io")
    );
    let hub_library = match hub_library.filter(|s| !s.trim().is_empty()) {
        Some(text) => parse_bool("upstream.library", text)?,
        None => hub_is_docker_hub,
    };
    let hub_realm = Url::parse(&format!(
        "{}/token",
        hub.auth.as_str().trim_end_matches('/')
    ))
    .map_err(|e| invalid("upstream.auth", e))?;
    let mut list = vec![Upstream {
        name: DOCKER_HUB.into(),
        registry: hub.registry.clone(),
        realm: Some(hub_realm),
        library: hub_library,
        host_names: Vec::new(),
        forward_credentials: false,
        credentials: hub_credentials,
    }];
    for (name, url) in upstreams::BUILT_IN {
        list.push(Upstream {
            name: name.into(),
            registry: Url::parse(url).expect("built-in URLs parse"),
            realm: None,
            library: false,
            host_names: Vec::new(),
            forward_credentials: false,
            credentials: None,
        });
    }
    let mut listed = Vec::new();
    for entry in raw {
        let name = entry.name.trim().to_ascii_lowercase();
        let key = |field: &str| format!("upstreams[{name}].{field}");
        // Names appear in paths (`/v2/<name>/...`, `/token/<name>`): one name component.
        if !is_name_component(&name) {
            return Err(invalid(
                "upstreams.name",
                format!(
                    "'{}' is not a registry name such as ghcr.io (lowercase letters, digits, . and -)",
                    entry.name
                ),
            ));
        }
        if listed.contains(&name) {
            return Err(invalid(
                "upstreams.name",
                format!("'{name}' is listed twice"),
            ));
        }
        listed.push(name.clone());
        let existing = list.iter().position(|u| u.name == name);
        if name == DOCKER_HUB && (entry.registry.is_some() || entry.realm.is_some()) {
            return Err(invalid(
                &key("registry"),
                "Docker Hub's registry and token issuer are upstream.registry and upstream.auth",
            ));
        }
        let own = credentials(
            &format!("upstreams[{name}]"),
            &entry.username,
            &entry.password,
            &entry.password_file,
        )?;
        if name == DOCKER_HUB && own.is_some() {
            return Err(invalid(
                &key("username"),
                "Docker Hub's account is upstream.username and upstream.password",
            ));
        }
        let registry = match (&entry.registry, existing) {
            (Some(text), _) => {
                parse_upstream_url(text).map_err(|e| invalid(&key("registry"), e))?
            }
            (None, Some(i)) => list[i].registry.clone(),
            (None, None) => return Err(invalid(&key("registry"), "is required")),
        };
        let realm = match &entry.realm {
            Some(text) if !text.trim().is_empty() => {
                Some(parse_http_url(text.trim()).map_err(|e| invalid(&key("realm"), e))?)
            }
            _ => existing.and_then(|i| list[i].realm.clone()),
        };
        let library = match &entry.library {
            Some(text) => parse_bool(&key("library"), text)?,
            None => existing.is_some_and(|i| list[i].library),
        };
        let host_names = entry
            .host_names
            .items()
            .into_iter()
            .map(|h| ServerName::parse(h).map_err(|e| invalid(&key("host_names"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let forward_credentials = match &entry.forward_credentials {
            Some(text) => parse_bool(&key("forward_credentials"), text)?,
            None => existing.is_some_and(|i| list[i].forward_credentials),
        };
        let credentials = own.or_else(|| existing.and_then(|i| list[i].credentials.clone()));
        let upstream = Upstream {
            name,
            registry,
            realm,
            library,
            host_names,
            forward_credentials,
            credentials,
        };
        match existing {
            Some(i) => list[i] = upstream,
            None => list.push(upstream),
        }
    }
    let mut seen: Vec<(&ServerName, &str)> = Vec::new();
    for upstream in &list {
        for host in &upstream.host_names {
            if let Some((_, other)) = seen.iter().find(|(h, _)| *h == host) {
                return Err(invalid(
                    &format!("upstreams[{}].host_names", upstream.name),
                    format!("'{host}' already selects {other}"),
                ));
            }
            seen.push((host, &upstream.name));
        }
    }
    let default_name = default_upstream.trim().to_ascii_lowercase();
    let default = list
        .iter()
        .position(|u| u.name == default_name)
        .ok_or_else(|| {
            invalid(
                "default_upstream",
                format!("'{default_upstream}' is not the name of an upstream"),
            )
        })?;
    Ok(Registries::new(list, default))
}

/// An upstream's `username` with its `password` or `password_file` (`section` names the keys).
/// The file is read once, at start-up; one trailing newline is not part of the password.
fn credentials(
    section: &str,
    username: &Option<String>,
    password: &Option<String>,
    password_file: &Option<PathBuf>,
) -> Result<Option<Credentials>, ConfigError> {
    let key = |field: &str| format!("{section}.{field}");
    let username = username.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let password = password.as_deref().filter(|p| !p.is_empty());
    let password_file = password_file.as_ref().filter(|p| !p.as_os_str().is_empty());
    let password = match (password, password_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                &key("password_file"),
                format!("give {} or this, not both", key("password")),
            ))
        }
        (Some(password), None) => Some(password.to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(&key("password_file"), format!("{}: {e}", path.display())))?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            if text.is_empty() {
                return Err(invalid(&key("password_file"), "the file is empty"));
            }
            Some(text.to_owned())
        }
        (None, None) => None,
    };
    match (username, password) {
        (Some(username), Some(password)) => Ok(Some(Credentials {
            username: username.to_owned(),
            password: Secret::new(password),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(
            &key("password"),
            format!(
                "{} is set without a password or password_file",
                key("username")
            ),
        )),
        (None, Some(_)) => Err(invalid(
            &key("username"),
            "a password is set without a username",
        )),
    }
}

impl RawAuth {
    fn validate(self, registries: &Registries) -> Result<Option<ManagedAuth>, ConfigError> {
        let tokens: Vec<Secret> = self.tokens.items().into_iter().map(Secret::new).collect();
        let htpasswd = self.htpasswd.filter(|p| !p.as_os_str().is_empty());
        let key_file = self.token_key_file.filter(|p| !p.as_os_str().is_empty());
        match self.mode.trim() {
            "passthrough" => {
                // Settings that would do nothing: refused, so nobody believes their mirror
                // checks users or uses an account when it does not.
                let unused = [
                    ("auth.htpasswd", htpasswd.is_some()),
                    ("auth.tokens", !tokens.is_empty()),
                    ("auth.token_key_file", key_file.is_some()),
                ];
                if let Some((key, _)) = unused.iter().find(|(_, set)| *set) {
                    return Err(invalid(key, "is only used with auth.mode = \"managed\""));
                }
                if let Some(upstream) = registries.all().iter().find(|u| u.credentials.is_some()) {
                    let key = if upstream.name == DOCKER_HUB {
                        "upstream.username".to_owned()
                    } else {
                        format!("upstreams[{}].username", upstream.name)
                    };
                    return Err(invalid(
                        &key,
                        "upstream credentials are only used with auth.mode = \"managed\" \
                         (in passthrough mode clients send their own)",
                    ));
                }
                Ok(None)
            }
            "managed" => {
                let users = match &htpasswd {
                    Some(path) => {
                        let text = std::fs::read_to_string(path).map_err(|e| {
                            invalid("auth.htpasswd", format!("{}: {e}", path.display()))
                        })?;
                        Users::from_htpasswd(&text, tokens)
                            .map_err(|e| invalid("auth.htpasswd", e))?
                    }
                    None => Users::from_htpasswd("", tokens).expect("no lines"),
                };
                let anonymous = parse_bool("auth.anonymous", &self.anonymous)?;
                if !anonymous && users.is_empty() {
                    return Err(invalid(
                        "auth.anonymous",
                        "is false and neither auth.htpasswd nor auth.tokens names a user: \
                         no client could pull",
                    ));
                }
                let token_ttl = parse_duration("auth.token_ttl", &self.token_ttl)?;
                if token_ttl < Duration::from_secs(10) || token_ttl > Duration::from_secs(86_400) {
                    return Err(invalid("auth.token_ttl", "must be from 10s to 24h"));
                }
                let token_key = match key_file {
                    Some(path) => {
                        let bytes = std::fs::read(&path).map_err(|e| {
                            invalid("auth.token_key_file", format!("{}: {e}", path.display()))
                        })?;
                        if bytes.len() < 32 {
                            return Err(invalid(
                                "auth.token_key_file",
                                "holds fewer than 32 bytes; use e.g. `head -c 32 /dev/urandom`",
                            ));
                        }
                        Some(TokenKey::new(bytes))
                    }
                    None => None,
                };
                Ok(Some(ManagedAuth {
                    users,
                    anonymous,
                    token_ttl,
                    token_key,
                    login_failures_per_minute: count_u32(
                        "auth.login_failures_per_minute",
                        &self.login_failures_per_minute,
                    )?,
                }))
            }
            other => Err(invalid(
                "auth.mode",
                format!("'{other}' is not passthrough or managed"),
            )),
        }
    }
}

impl RawTls {
    fn validate(self) -> Result<Option<TlsListener>, ConfigError> {
        let listen = match self.listen.as_deref() {
            None => None,
            Some(text) => parse_listen("tls.listen", text)?,
        };
        let Some(listen) = listen else {
            return Ok(None);
        };
        let file = |key: &str, path: Option<PathBuf>| match path {
            Some(path) if path.is_file() => Ok(path),
            Some(path) => Err(invalid(key, format!("no such file: {}", path.display()))),
            None => Err(invalid(key, "is required when tls.listen is set")),
        };
        Ok(Some(TlsListener {
            listen,
            cert: file("tls.cert", self.cert)?,
            key: file("tls.key", self.key)?,
        }))
    }
}

impl RawResume {
    fn validate(self) -> Result<ResumePolicy, ConfigError> {
        let attempts = self
            .attempts
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= 100)
            .ok_or_else(|| {
                invalid(
                    "resume.attempts",
                    format!("'{}' is not a whole number from 0 to 100", self.attempts),
                )
            })?;
        Ok(ResumePolicy {
            attempts,
            backoff: parse_duration("resume.backoff", &self.backoff)?,
        })
    }
}

impl RawLimits {
    fn validate(self) -> Result<Limits, ConfigError> {
        let count = |key: &str, text: &str, min: usize| {
            text.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= min)
                .ok_or_else(|| {
                    invalid(
                        key,
                        format!("'{text}' is not a whole number of at least {min}"),
                    )
                })
        };
        Ok(Limits {
            max_connections: count("limits.max_connections", &self.max_connections, 1)?,
            request_head_timeout: parse_duration(
                "limits.request_head_timeout",
                &self.request_head_timeout,
            )?,
            keep_alive: parse_duration("limits.keep_alive", &self.keep_alive)?,
            upstream_pool: count("limits.upstream_pool", &self.upstream_pool, 0)?,
            manifests_per_minute: count_u32(
                "limits.manifests_per_minute",
                &self.manifests_per_minute,
            )?,
            blob_streams_per_client: count_u32(
                "limits.blob_streams_per_client",
                &self.blob_streams_per_client,
            )?,
            h2_max_streams: u32::try_from(count("limits.h2_max_streams", &self.h2_max_streams, 1)?)
                .map_err(|_| {
                    invalid(
                        "limits.h2_max_streams",
                        format!("'{}' is more than {}", self.h2_max_streams, u32::MAX),
                    )
                })?,
            max_streams: stream_cap(&self.max_streams)?,
        })
    }
}

/// `limits.max_streams`: `auto` (from the memory limit, see `capacity`) or a number, 0 for no
/// cap.
fn stream_cap(text: &str) -> Result<StreamCap, ConfigError> {
    if text.trim().eq_ignore_ascii_case("auto") {
        let memory_limit = capacity::memory_limit();
        return Ok(StreamCap::Derived {
            max: capacity::max_streams_for(memory_limit),
            memory_limit,
        });
    }
    text.trim()
        .parse::<usize>()
        .map(StreamCap::Set)
        .map_err(|_| {
            invalid(
                "limits.max_streams",
                format!("'{text}' is not auto or a whole number (0 for no cap)"),
            )
        })
}

fn count_u32(key: &str, text: &str) -> Result<u32, ConfigError> {
    text.trim().parse::<u32>().map_err(|_| {
        invalid(
            key,
            format!("'{text}' is not a whole number (0 for no limit)"),
        )
    })
}

impl RawAccess {
    fn validate(self) -> Result<AccessPolicy, ConfigError> {
        let list = |key: &str, raw: &RawList| {
            raw.items()
                .into_iter()
                .map(|item| Cidr::parse(item).map_err(|e| invalid(key, e)))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(AccessPolicy {
            allow: list("access.allow", &self.allow)?,
            deny: list("access.deny", &self.deny)?,
            trusted_proxies: list("access.trusted_proxies", &self.trusted_proxies)?,
        })
    }
}

/// A listen address, or `None` for "off" / empty (the listener is switched off).
fn parse_listen(key: &str, text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse::<SocketAddr>().map(Some).map_err(|_| {
        invalid(
            key,
            format!("'{text}' is not an address like 0.0.0.0:5000 (or off)"),
        )
    })
}

fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("'{text}' is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("'{text}' must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{text}' has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("'{text}' must not have a query or fragment"));
    }
    Ok(url)
}

/// An upstream base URL; a path is allowed (a registry behind a path prefix) and kept without
/// its trailing slash so request paths can be appended.
fn parse_upstream_url(text: &str) -> Result<Url, String> {
    let mut url = parse_http_url(text)?;
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// Docker clients only accept a mirror at the root of an origin, so the public URL is an origin.
fn parse_public_url(text: &str) -> Result<Url, String> {
    let url = parse_http_url(text)?;
    if url.path() != "/" {
        return Err(format!(
            "'{text}' must be an origin such as https://mirror.example.com, without a path"
        ));
    }
    Ok(url)
}

fn parse_bool(key: &str, text: &str) -> Result<bool, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, format!("'{text}' is not true or false"))),
    }
}

fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let duration = humantime::parse_duration(text.trim()).map_err(|_| {
        invalid(
            key,
            format!("'{text}' is not a duration like 10s, 500ms or 2m"),
        )
    })?;
    if duration.is_zero() {
        return Err(invalid(key, "must be longer than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests;
