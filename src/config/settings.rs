//! Every setting, declared once: its key, value type, default, flag and help. The declarations
//! make the typed [`Raw`] values read from the layers, the [`SETTINGS`] table the flags, the
//! defaults layer and the environment are built from, and the README's configuration table is
//! checked against (`config::tests`).
//!
//! An entry reads
//! `field: Type { key: "a.b", default: "text", shown: "text", flag: "--name" "VALUE", help: "..." }`
//! where `default` is the value as a user would write it (parsed like one), `shown` is what the
//! README and `--help` say about the default beside or instead of it, and `flag` is absent for
//! settings no command line should carry. `repeated` after the flag's value name makes a list
//! flag (repeat it or separate with commas); `file only` keeps a setting out of the environment.

use super::{
    registries::RawRegistry,
    setting::{Flag, Setting},
    values::{
        AcmeChallenge, AcmeDirectory, AcmeDomain, AuthMode, Blank, Bool, Count, DnsServer,
        FilePath, Fraction, List, Listen, MaxStreams, PublicUrl, Span, UpstreamUrl, U32, USIZE,
    },
    LogFormat, DEFAULT_ADMIN_LISTEN,
};
use crate::{
    auth::users::Secret,
    net::client_addr::Cidr,
    net::origin::ServerName,
    policy::images::Pattern,
    upstream::{
        proxy::{Bypass, ProxyChoice},
        registries::DOCKER_HUB,
    },
};

/// The setting with this key.
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

macro_rules! some {
    () => {
        None
    };
    ($value:expr) => {
        Some($value)
    };
}

/// Whether an optional marker word (`repeated`, `only`) was written.
macro_rules! present {
    () => {
        false
    };
    ($($word:tt)+) => {
        true
    };
}

macro_rules! settings {
    ($(
        $field:ident: $ty:ty {
            key: $key:literal,
            $(default: $default:expr,)?
            $(shown: $shown:literal,)?
            $(flag: $long:literal $value_name:literal $($repeated:ident)?,)?
            $(file $only:ident,)?
            help: $help:literal $(,)?
        }
    )*) => {
        /// Every setting, typed, as the layers give it: checked one by one, not yet against
        /// each other (`validate` does that).
        #[derive(Debug)]
        pub struct Raw {
            $(pub $field: $ty,)*
        }

        impl Raw {
            /// Reads every setting from `layers`; the problems of all that do not parse,
            /// each naming its key.
            pub fn read(layers: &config::Config) -> Result<Raw, Vec<String>> {
                let mut problems = Vec::new();
                $(
                    let $field = super::layers::read::<$ty>(layers, $key)
                        .map_err(|problem| problems.push(format!("{}: {problem}", $key)))
                        .ok();
                )*
                match ($($field,)*) {
                    ($(Some($field),)*) => Ok(Raw { $($field,)* }),
                    _ => Err(problems),
                }
            }
        }

        pub static SETTINGS: &[Setting] = &[$(
            Setting {
                key: $key,
                default: some!($($default)?),
                shown: some!($($shown)?),
                flag: some!($(Flag {
                    long: $long,
                    value_name: $value_name,
                    repeated: present!($($repeated)?),
                })?),
                file_only: present!($($only)?),
                help: $help,
            },
        )*];
    };
}

settings! {
    listen: Listen {
        key: "listen",
        default: "0.0.0.0:5000",
        flag: "--listen" "ADDR",
        help: "Address to serve plain HTTP on; off to serve HTTPS only",
    }
    workers: Option<Count<1, USIZE>> {
        key: "workers",
        shown: "number of CPUs",
        flag: "--workers" "N",
        help: "Number of worker threads, each with its own upstream client",
    }
    public_url: PublicUrl {
        key: "public_url",
        shown: "from each request's `Host` (see `server_names`)",
        flag: "--public-url" "URL",
        help: "External base URL of this mirror, used to build the token realm, \
               e.g. https://mirror.example.com",
    }
    server_names: List<ServerName> {
        key: "server_names",
        flag: "--server-name" "HOST[:PORT]" repeated,
        help: "A host name (with an optional port) clients reach this mirror by, like nginx's \
               server_name. Without public_url, a request's Host builds the token realm only \
               when it is one of these; any other gets the first",
    }
    upstream_registry: UpstreamUrl {
        key: "upstream.registry",
        default: "https://registry-1.docker.io",
        flag: "--registry" "URL",
        help: "Upstream registry",
    }
    upstream_auth: UpstreamUrl {
        key: "upstream.auth",
        default: "https://auth.docker.io",
        flag: "--auth" "URL",
        help: "Upstream token issuer",
    }
    upstream_index: UpstreamUrl {
        key: "upstream.index",
        default: "https://index.docker.io",
        flag: "--index" "URL",
        help: "Upstream search index",
    }
    upstream_library: Blank<Bool> {
        key: "upstream.library",
        shown: "`true` when `upstream.registry` is Docker Hub's, else `false`",
        flag: "--library" "BOOL",
        help: "Complete one-component names to library/NAME on the docker.io upstream: true or false",
    }
    default_upstream: String {
        key: "default_upstream",
        default: DOCKER_HUB,
        flag: "--default-upstream" "NAME",
        help: "The upstream a request goes to when neither ?ns=, its host name nor a path \
               prefix names one",
    }
    upstreams: Option<Vec<RawRegistry>> {
        key: "upstreams",
        shown: "`docker.io` and the built-in registries",
        file only,
        help: "[[upstreams]] entries: more registries, and overrides of the built-in ones",
    }
    // Docker Hub's anonymous budget is 100 pulls per 6 h: a warning at 10 left.
    upstream_ratelimit_warn_fraction: Fraction {
        key: "upstream.ratelimit_warn_fraction",
        default: "0.1",
        flag: "--ratelimit-warn-fraction" "FRACTION",
        help: "Log a warning when an upstream's remaining pull budget falls below this \
               fraction of its limit (0 to 1; 0 never warns)",
    }
    // Three in a row: one lost connection does not take an endpoint out, a dead one is out
    // after three requests.
    upstream_breaker_failures: Count<1, 100> {
        key: "upstream.breaker_failures",
        default: "3",
        flag: "--breaker-failures" "N",
        help: "Failures in a row (no connection, a timeout, a 5xx or a 429) after which an \
               endpoint of a registry with several is skipped for upstream.breaker_cooldown",
    }
    upstream_breaker_cooldown: Span {
        key: "upstream.breaker_cooldown",
        default: "30s",
        flag: "--breaker-cooldown" "DURATION",
        help: "How long a failing endpoint is skipped before a request probes it again",
    }
    upstream_ca_file: FilePath {
        key: "upstream.ca_file",
        flag: "--ca-file" "FILE",
        help: "Extra PEM CA certificates to trust for upstreams, on top of the standard web roots",
    }
    // Unset, the conventional variables decide (see `upstream::proxy`).
    egress_proxy: Blank<ProxyChoice> {
        key: "egress.proxy",
        shown: "from `https_proxy`, `http_proxy`, `all_proxy` (either case); else none",
        flag: "--egress-proxy" "URL",
        help: "Proxy every upstream connection goes through: http://[user:pass@]host:port \
               (CONNECT for https upstreams), socks5://host:port (hubferry resolves names) or \
               socks5h://host:port (the proxy does); none to ignore the variables",
    }
    egress_no_proxy: List<Bypass> {
        key: "egress.no_proxy",
        shown: "from `no_proxy` (either case); else none",
        flag: "--no-proxy" "HOST" repeated,
        help: "Destinations that go direct, not through the proxy: host names (with their \
               subdomains), .domain suffixes, addresses, CIDR networks, or *",
    }
    egress_proxy_password_file: FilePath {
        key: "egress.proxy_password_file",
        flag: "--egress-proxy-password-file" "FILE",
        help: "File holding the password of egress.proxy's user (so it is not on a command \
               line); the URL then names the user only",
    }
    egress_dns: List<DnsServer> {
        key: "egress.dns",
        shown: "the system's resolver",
        flag: "--dns" "IP[:PORT]" repeated,
        help: "DNS servers to resolve every upstream, CDN and proxy name with (UDP, then TCP), \
               instead of the system's; answers are cached for their TTL",
    }
    // Generous timeouts: the whole point of a mirror is a slow, long-haul link to Docker Hub.
    timeouts_connect: Span {
        key: "timeouts.connect",
        default: "10s",
        flag: "--connect-timeout" "DURATION",
        help: "Time allowed to connect to an upstream, TLS included",
    }
    timeouts_response_headers: Span {
        key: "timeouts.response_headers",
        default: "30s",
        flag: "--response-timeout" "DURATION",
        help: "Time allowed for an upstream to send its response headers",
    }
    timeouts_body_idle: Span {
        key: "timeouts.body_idle",
        default: "60s",
        flag: "--idle-timeout" "DURATION",
        help: "Longest silence allowed between two chunks of a body",
    }
    redirect_max_hops: Count<1, 20> {
        key: "redirect.max_hops",
        default: "5",
        flag: "--max-redirects" "N",
        help: "Most redirects followed for one blob request (1-20)",
    }
    resume_attempts: Count<0, 100> {
        key: "resume.attempts",
        default: "5",
        flag: "--resume-attempts" "N",
        help: "Resumes tried in a row without a byte of progress before a broken download is \
               given up; 0 turns transparent resume off",
    }
    resume_backoff: Span {
        key: "resume.backoff",
        default: "500ms",
        flag: "--resume-backoff" "DURATION",
        help: "Wait before the first resume of a broken download, doubled for each further try \
               in a row (at most 10s)",
    }
    // Off: a redirect must not reach the mirror's own network (SSRF); see `egress`.
    redirect_allow_private: Bool {
        key: "redirect.allow_private",
        default: "false",
        flag: "--allow-private-redirects" "BOOL",
        help: "Follow redirects to loopback, link-local and private addresses: true or false",
    }
    tls_listen: Listen {
        key: "tls.listen",
        shown: "off",
        flag: "--tls-listen" "ADDR",
        help: "Address to serve HTTPS (HTTP/2 and HTTP/1.1) on",
    }
    tls_cert: FilePath {
        key: "tls.cert",
        flag: "--tls-cert" "FILE",
        help: "PEM certificate chain for the TLS listener",
    }
    tls_key: FilePath {
        key: "tls.key",
        flag: "--tls-key" "FILE",
        help: "PEM private key (PKCS#8, PKCS#1 or SEC1) for the TLS listener",
    }
    tls_acme_domains: List<AcmeDomain> {
        key: "tls.acme.domains",
        shown: "off",
        flag: "--acme-domain" "DOMAIN" repeated,
        help: "Names to get the TLS listener's certificate for from an ACME CA (Let's \
               Encrypt), renewed automatically; instead of tls.cert and tls.key",
    }
    tls_acme_email: Option<String> {
        key: "tls.acme.email",
        flag: "--acme-email" "ADDRESS",
        help: "Contact address the CA may write to about the certificates",
    }
    tls_acme_directory: AcmeDirectory {
        key: "tls.acme.directory",
        default: "letsencrypt",
        shown: "Let's Encrypt",
        flag: "--acme-directory" "URL",
        help: "The ACME CA's directory URL, or letsencrypt or letsencrypt-staging",
    }
    tls_acme_ca_file: FilePath {
        key: "tls.acme.ca_file",
        flag: "--acme-ca-file" "FILE",
        help: "PEM CA certificates to trust for the ACME CA's own HTTPS, beside the web's roots \
               (a private CA)",
    }
    tls_acme_cache_dir: FilePath {
        key: "tls.acme.cache_dir",
        default: "/var/lib/hubferry/acme",
        flag: "--acme-cache-dir" "DIR",
        help: "Where the ACME account key and the certificates are kept (made if missing)",
    }
    tls_acme_challenge: AcmeChallenge {
        key: "tls.acme.challenge",
        default: "auto",
        flag: "--acme-challenge" "TYPE",
        help: "tls-alpn-01 (answered on tls.listen), http-01 (on listen), or auto: \
               tls-alpn-01, then the other after a failure",
    }
    tls_acme_retry: Span {
        key: "tls.acme.retry",
        default: "1m",
        flag: "--acme-retry" "DURATION",
        help: "Wait after a failed issuance or renewal, doubled after each further failure, \
               at most 1h; the certificate in service stays",
    }
    admin_listen: Listen {
        key: "admin_listen",
        default: DEFAULT_ADMIN_LISTEN,
        flag: "--admin-listen" "ADDR",
        help: "Address of the admin listener (/healthz, /readyz, /metrics); off disables it",
    }
    shutdown_grace: Span {
        key: "shutdown_grace",
        default: "30s",
        flag: "--shutdown-grace" "DURATION",
        help: "Time in-flight requests get to finish after SIGTERM/SIGINT",
    }
    log_format: LogFormat {
        key: "log_format",
        default: "text",
        flag: "--log-format" "FORMAT",
        help: "Access log format: text or json",
    }
    limits_max_connections: Count<1, USIZE> {
        key: "limits.max_connections",
        default: "10000",
        flag: "--max-connections" "N",
        help: "Most client connections each worker holds at once",
    }
    limits_request_head_timeout: Span {
        key: "limits.request_head_timeout",
        default: "10s",
        flag: "--request-head-timeout" "DURATION",
        help: "Time a client gets to send its request head (slowloris guard)",
    }
    // Registry clients pull many blobs in a row; keep their connections warm.
    limits_keep_alive: Span {
        key: "limits.keep_alive",
        default: "75s",
        flag: "--keep-alive" "DURATION",
        help: "How long an idle client connection is kept open",
    }
    limits_upstream_pool: Count<0, USIZE> {
        key: "limits.upstream_pool",
        default: "0",
        shown: "no cap",
        flag: "--upstream-pool" "N",
        help: "Most connections each worker opens to upstreams at once; 0 means no limit",
    }
    images_allow: List<Pattern> {
        key: "images.allow",
        shown: "all images",
        flag: "--allow-image" "PATTERN" repeated,
        help: "Serve only images matching one of these patterns (library/*, bitnami/**, \
               ghcr.io/org/*)",
    }
    images_deny: List<Pattern> {
        key: "images.deny",
        flag: "--deny-image" "PATTERN" repeated,
        help: "Never serve images matching one of these patterns; wins over the allow list",
    }
    images_denied_message: String {
        key: "images.denied_message",
        default: "this image is not served by this mirror",
        flag: "--denied-message" "TEXT",
        help: "What clients refused an image are told",
    }
    limits_manifests_per_minute: Count<0, U32> {
        key: "limits.manifests_per_minute",
        default: "0",
        shown: "no limit",
        flag: "--manifests-per-minute" "N",
        help: "Manifest requests each client (IPv4 address, IPv6 /64) may make per minute; \
               0 means no limit",
    }
    limits_blob_streams_per_client: Count<0, U32> {
        key: "limits.blob_streams_per_client",
        default: "0",
        shown: "no limit",
        flag: "--blob-streams-per-client" "N",
        help: "Blob downloads each client (IPv4 address, IPv6 /64) may have running at once; \
               0 means no limit",
    }
    // RFC 9113 §6.5.2 asks for no less than 100, so that clients keep their parallelism.
    limits_h2_max_streams: Count<1, U32> {
        key: "limits.h2_max_streams",
        default: "100",
        flag: "--h2-max-streams" "N",
        help: "Most HTTP/2 streams one client connection may have open at once, advertised as \
               SETTINGS_MAX_CONCURRENT_STREAMS",
    }
    limits_max_streams: MaxStreams {
        key: "limits.max_streams",
        default: "auto",
        flag: "--max-streams" "N",
        help: "Most blob downloads the process streams at once; beyond it, 503 with \
               Retry-After. auto sizes it from the cgroup memory limit (see README); 0 means \
               no cap",
    }
    access_allow: List<Cidr> {
        key: "access.allow",
        shown: "none (everyone)",
        flag: "--allow" "CIDR" repeated,
        help: "Networks allowed to use the mirror (CIDR or address); when any is given, every \
               other client is refused",
    }
    access_deny: List<Cidr> {
        key: "access.deny",
        flag: "--deny" "CIDR" repeated,
        help: "Networks refused even when allowed",
    }
    access_trusted_proxies: List<Cidr> {
        key: "access.trusted_proxies",
        flag: "--trusted-proxy" "CIDR" repeated,
        help: "Proxies in front of hubferry whose X-Forwarded-For is believed",
    }
    auth_mode: AuthMode {
        key: "auth.mode",
        default: "passthrough",
        flag: "--auth-mode" "MODE",
        help: "passthrough (clients' credentials go upstream) or managed (hubferry issues its \
               own tokens and uses its own upstream accounts)",
    }
    auth_htpasswd: FilePath {
        key: "auth.htpasswd",
        flag: "--htpasswd" "FILE",
        help: "htpasswd file (bcrypt entries only) of the users managed auth accepts",
    }
    auth_tokens: List<Secret> {
        key: "auth.tokens",
        help: "Static tokens managed auth accepts as a password or a bearer token",
    }
    // The point of managed mode: anonymous clients pull under the account's rate limit.
    auth_anonymous: Bool {
        key: "auth.anonymous",
        default: "true",
        flag: "--anonymous" "BOOL",
        help: "Whether clients without credentials may pull in managed mode: true or false",
    }
    // Docker Hub's own tokens live 300 s.
    auth_token_ttl: Span {
        key: "auth.token_ttl",
        default: "5m",
        flag: "--token-ttl" "DURATION",
        help: "Lifetime of the tokens managed auth issues (10s to 24h)",
    }
    auth_token_key_file: FilePath {
        key: "auth.token_key_file",
        shown: "a random key per process",
        flag: "--token-key-file" "FILE",
        help: "File with at least 32 secret bytes to sign managed-auth tokens with, shared by \
               replicas",
    }
    // A user who mistypes a few times goes on; a guesser gets one try every 6 s.
    auth_login_failures_per_minute: Count<0, U32> {
        key: "auth.login_failures_per_minute",
        default: "10",
        flag: "--login-failures-per-minute" "N",
        help: "Failed logins each client (IPv4 address, IPv6 /64) and each user name may have \
               per minute in managed mode, as a burst refilled evenly; 0 means no limit",
    }
    upstream_username: Option<String> {
        key: "upstream.username",
        flag: "--upstream-username" "NAME",
        help: "hubferry's own Docker Hub user name, for managed auth",
    }
    // No flag: command lines are visible to every local user.
    upstream_password: Option<String> {
        key: "upstream.password",
        help: "That account's password or access token",
    }
    upstream_password_file: FilePath {
        key: "upstream.password_file",
        flag: "--upstream-password-file" "FILE",
        help: "File holding that account's password or access token",
    }
}
