//! Settings: one raw struct that serde fills from defaults, a TOML file, `HUBFERRY_*` environment
//! variables and flags (in rising precedence), then `validate` turns it into the typed [`Config`]
//! the server runs on. Every problem is reported as one line naming the key.

use std::{
    fmt,
    net::SocketAddr,
    num::NonZeroUsize,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Parser;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use url::Url;

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
    /// [setting: public_url; default: the request's scheme and Host].
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Upstream registry [setting: upstream.registry; default https://registry-1.docker.io].
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// Upstream token issuer [setting: upstream.auth; default https://auth.docker.io].
    #[arg(long, value_name = "URL")]
    pub auth: Option<String>,
    /// Upstream search index [setting: upstream.index; default https://index.docker.io].
    #[arg(long, value_name = "URL")]
    pub index: Option<String>,
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
            ("upstream.ca_file", &self.ca_file),
            ("timeouts.connect", &self.connect_timeout),
            ("timeouts.response_headers", &self.response_timeout),
            ("timeouts.body_idle", &self.idle_timeout),
            ("redirect.max_hops", &self.max_redirects),
        ];
        pairs
            .into_iter()
            .filter_map(|(key, value)| value.clone().map(|v| (key, v)))
            .collect()
    }
}

/// Settings as written by the user; strings where the user writes strings, checked by `validate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSettings {
    listen: String,
    workers: Option<String>,
    public_url: Option<String>,
    upstream: RawUpstream,
    timeouts: RawTimeouts,
    redirect: RawRedirect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    registry: String,
    auth: String,
    index: String,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimeouts {
    connect: String,
    response_headers: String,
    body_idle: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRedirect {
    max_hops: String,
}

impl Default for RawSettings {
    fn default() -> Self {
        RawSettings {
            listen: "0.0.0.0:5000".into(),
            workers: None,
            public_url: None,
            upstream: RawUpstream::default(),
            timeouts: RawTimeouts::default(),
            redirect: RawRedirect::default(),
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
        }
    }
}

/// The validated configuration the server runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub workers: NonZeroUsize,
    /// Origin clients reach this mirror at; `None` derives it from each request.
    pub public_url: Option<Url>,
    pub upstream: Upstreams,
    pub timeouts: Timeouts,
    pub redirect: RedirectPolicy,
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
        let env: config::Map<String, String> = env.into_iter().collect();
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
        raw.validate()
    }
}

impl RawSettings {
    fn validate(self) -> Result<Config, ConfigError> {
        let listen = self.listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "listen",
                format!("'{}' is not an address like 0.0.0.0:5000", self.listen),
            )
        })?;
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
        let upstream = Upstreams {
            registry: parse_upstream_url(&self.upstream.registry)
                .map_err(|e| invalid("upstream.registry", e))?,
            auth: parse_upstream_url(&self.upstream.auth)
                .map_err(|e| invalid("upstream.auth", e))?,
            index: parse_upstream_url(&self.upstream.index)
                .map_err(|e| invalid("upstream.index", e))?,
            extra_roots: match &self.upstream.ca_file {
                Some(path) if !path.as_os_str().is_empty() => {
                    load_ca_file(path).map_err(|e| invalid("upstream.ca_file", e))?
                }
                _ => Vec::new(),
            },
        };
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
        Ok(Config {
            listen,
            workers,
            public_url,
            upstream,
            timeouts,
            redirect: RedirectPolicy { max_hops },
        })
    }
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

fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let flags = Flags::try_parse_from(std::iter::once("hubferry").chain(args.iter().copied()))
            .expect("flags parse");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_from(&flags, env)
    }

    #[test]
    fn defaults_point_at_docker_hub() {
        let config = load(&[], &[]).unwrap();
        assert_eq!(config.listen, "0.0.0.0:5000".parse().unwrap());
        assert_eq!(
            config.upstream.registry.as_str(),
            "https://registry-1.docker.io/"
        );
        assert_eq!(config.upstream.auth.as_str(), "https://auth.docker.io/");
        assert_eq!(config.upstream.index.as_str(), "https://index.docker.io/");
        assert!(config.public_url.is_none());
        assert_eq!(config.timeouts.connect, Duration::from_secs(10));
        assert_eq!(config.redirect.max_hops, 5);
        assert!(config.workers.get() >= 1);
    }

    #[test]
    fn flags_beat_environment_beats_file() {
        let dir = std::env::temp_dir().join(format!("hubferry-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hubferry.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:7000\"\nworkers = 3\n[upstream]\nregistry = \"http://file.example\"\nindex = \"http://index.file.example\"\n[timeouts]\nconnect = \"3s\"\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let env = [
            ("HUBFERRY_UPSTREAM__REGISTRY", "http://env.example"),
            ("HUBFERRY_WORKERS", "5"),
        ];
        let config = load(&["--config", file, "--workers", "7"], &env).unwrap();
        assert_eq!(config.workers.get(), 7);
        assert_eq!(config.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.upstream.registry.as_str(), "http://env.example/");
        assert_eq!(config.upstream.index.as_str(), "http://index.file.example/");
        assert_eq!(config.timeouts.connect, Duration::from_secs(3));
        let config = load(&["--config", file], &env).unwrap();
        assert_eq!(config.workers.get(), 5);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn zero_or_garbage_workers_are_refused_by_name() {
        let err = load(&["--workers", "0"], &[]).unwrap_err().to_string();
        assert!(err.contains("workers") && err.contains("'0'"), "{err}");
        let err = load(&[], &[("HUBFERRY_WORKERS", "lots")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("workers") && err.contains("lots"), "{err}");
    }

    #[test]
    fn bad_urls_are_refused_by_name() {
        let err = load(&["--registry", "registry-1.docker.io"], &[]).unwrap_err();
        assert!(err.to_string().contains("upstream.registry"), "{err}");
        let err = load(&["--auth", "ftp://auth.example"], &[]).unwrap_err();
        assert!(err.to_string().contains("upstream.auth"), "{err}");
        let err = load(&["--public-url", "https://m.example/sub"], &[]).unwrap_err();
        assert!(err.to_string().contains("public_url"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = load(&[], &[("HUBFERRY_LISTN", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("listn"), "{err}");
        let err = load(&[], &[("HUBFERRY_UPSTREAM__REGISTRI", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("registri"), "{err}");
    }

    #[test]
    fn durations_are_human_and_positive() {
        let config = load(
            &["--idle-timeout", "1m30s", "--response-timeout", "500ms"],
            &[],
        )
        .unwrap();
        assert_eq!(config.timeouts.body_idle, Duration::from_secs(90));
        assert_eq!(config.timeouts.response_headers, Duration::from_millis(500));
        let err = load(&["--connect-timeout", "soon"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("timeouts.connect"), "{err}");
        let err = load(&["--connect-timeout", "0s"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("timeouts.connect"), "{err}");
    }

    #[test]
    fn public_url_and_upstream_paths_are_normalised() {
        let config = load(
            &[
                "--public-url",
                "https://mirror.example.com/",
                "--registry",
                "http://r.example/prefix/",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            config.public_url.unwrap().as_str(),
            "https://mirror.example.com/"
        );
        assert_eq!(config.upstream.registry.as_str(), "http://r.example/prefix");
    }

    #[test]
    fn ca_file_must_hold_certificates() {
        let err = load(&["--ca-file", "/nonexistent/ca.pem"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream.ca_file"), "{err}");
    }
}
