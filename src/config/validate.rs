//! From the typed settings to the [`Config`] the server runs on: the checks that relate
//! settings to each other or read the files they name. Independent checks all run, so that
//! their problems are reported together.

use std::num::NonZeroUsize;

use super::{
    auth, invalid,
    registries::{credentials, read_secret_file, registries},
    settings::Raw,
    values::{FilePath, List, MaxStreams},
    AccessPolicy, BreakerPolicy, Config, ConfigError, DockerHub, Egress, Limits, Problems,
    RedirectPolicy, ResumePolicy, StreamCap, Timeouts, TlsListener,
};
use crate::{
    config::capacity,
    policy::images::{ImagePolicy, Pattern, PatternList},
    upstream::proxy::Route,
};

/// `proxy_env`: the proxy variables of the environment (`upstream::proxy::ENV_VARS`).
pub fn config(mut raw: Raw, proxy_env: &[(String, String)]) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let workers = match raw.workers {
        Some(count) => NonZeroUsize::new(count.usize()).expect("at least 1 by its type"),
        None => std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
    };
    let docker_hub = DockerHub {
        registry: raw.upstream_registry.0.clone(),
        auth: raw.upstream_auth.0.clone(),
        index: raw.upstream_index.0.clone(),
    };
    let extra_roots = problems
        .take(extra_roots(&raw.upstream_ca_file))
        .unwrap_or_default();
    let hub_credentials = problems
        .take(credentials(
            "upstream",
            &raw.upstream_username,
            &raw.upstream_password,
            &raw.upstream_password_file,
        ))
        .flatten();
    let registries = problems.take(registries(
        &docker_hub,
        raw.upstream_library.0.map(|library| library.0),
        hub_credentials,
        raw.upstreams.take().unwrap_or_default(),
        &raw.default_upstream,
    ));
    let managed = registries
        .as_ref()
        .and_then(|registries| problems.take(auth::managed(&raw, registries)));
    let egress = problems.take(egress(&raw, proxy_env));
    let tls = problems.take(tls(&raw));
    if raw.listen.0.is_none() && matches!(tls, Some(None)) {
        problems.take::<()>(Err(invalid(
            "listen",
            "is off and no tls.listen is set: nothing would be served",
        )));
    }
    let allow = problems.take(patterns("images.allow", &raw.images_allow));
    let deny = problems.take(patterns("images.deny", &raw.images_deny));
    let (Some(registries), Some(managed), Some(tls), Some(allow), Some(deny), Some(egress)) =
        (registries, managed, tls, allow, deny, egress)
    else {
        return Err(ConfigError {
            problems: problems.0,
        });
    };
    if !problems.0.is_empty() {
        return Err(ConfigError {
            problems: problems.0,
        });
    }
    // Host names that pick an upstream are names clients reach the mirror by: believe them for
    // the token realm too (see `origin::public_base`).
    let mut server_names = raw.server_names.0;
    if !server_names.is_empty() {
        for name in registries.all().iter().flat_map(|u| &u.host_names) {
            if !server_names.contains(name) {
                server_names.push(name.clone());
            }
        }
    }
    Ok(Config {
        ignored_env: Vec::new(),
        listen: raw.listen.0,
        workers,
        public_url: raw.public_url.0,
        server_names,
        docker_hub,
        ratelimit_warn_fraction: raw.upstream_ratelimit_warn_fraction.0,
        breaker: BreakerPolicy {
            failures: raw.upstream_breaker_failures.u32(),
            cooldown: raw.upstream_breaker_cooldown.0,
        },
        extra_roots,
        registries,
        egress,
        timeouts: Timeouts {
            connect: raw.timeouts_connect.0,
            response_headers: raw.timeouts_response_headers.0,
            body_idle: raw.timeouts_body_idle.0,
        },
        redirect: RedirectPolicy {
            max_hops: raw.redirect_max_hops.u32(),
            allow_private: raw.redirect_allow_private.0,
        },
        resume: ResumePolicy {
            attempts: raw.resume_attempts.u32(),
            backoff: raw.resume_backoff.0,
        },
        tls,
        admin_listen: raw.admin_listen.0,
        shutdown_grace: raw.shutdown_grace.0,
        log_format: raw.log_format,
        limits: Limits {
            max_connections: raw.limits_max_connections.usize(),
            request_head_timeout: raw.limits_request_head_timeout.0,
            keep_alive: raw.limits_keep_alive.0,
            upstream_pool: raw.limits_upstream_pool.usize(),
            manifests_per_minute: raw.limits_manifests_per_minute.u32(),
            blob_streams_per_client: raw.limits_blob_streams_per_client.u32(),
            h2_max_streams: raw.limits_h2_max_streams.u32(),
            max_streams: stream_cap(raw.limits_max_streams),
        },
        images: ImagePolicy {
            allow,
            deny,
            message: raw.images_denied_message.trim().to_owned(),
        },
        access: AccessPolicy {
            allow: raw.access_allow.0,
            deny: raw.access_deny.0,
            trusted_proxies: raw.access_trusted_proxies.0,
        },
        managed,
    })
}

fn extra_roots(
    file: &FilePath,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
    match &file.0 {
        Some(path) => {
            crate::config::pem::certificates(path).map_err(|e| invalid("upstream.ca_file", e))
        }
        None => Ok(Vec::new()),
    }
}

/// The default egress route: `egress.proxy` (with its password file) and `egress.no_proxy`
/// when set, else what the environment's proxy variables say; and the DNS servers.
fn egress(raw: &Raw, proxy_env: &[(String, String)]) -> Result<Egress, ConfigError> {
    let from_env = Route::from_env(|name| {
        proxy_env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    });
    let env_bypass = || {
        from_env
            .as_ref()
            .map(|r| r.bypass.clone())
            .unwrap_or_default()
    };
    let bypass = match raw.egress_no_proxy.0.is_empty() {
        false => raw.egress_no_proxy.0.clone(),
        true => env_bypass(),
    };
    let password_file = &raw.egress_proxy_password_file.0;
    let mut route = match &raw.egress_proxy.0 {
        Some(choice) => choice.route(&bypass),
        None if password_file.is_some() => {
            return Err(invalid(
                "egress.proxy_password_file",
                "is set but egress.proxy is not",
            ))
        }
        None => {
            let mut route = from_env.map_err(|problems| ConfigError {
                problems: problems
                    .into_iter()
                    .map(|p| format!("environment variable {p}"))
                    .collect(),
            })?;
            route.bypass = bypass;
            route
        }
    };
    if let Some(path) = password_file {
        let password =
            read_secret_file(path).map_err(|e| invalid("egress.proxy_password_file", e))?;
        let proxies = [route.https.as_mut(), route.http.as_mut()];
        for proxy in proxies.into_iter().flatten() {
            match &mut proxy.login {
                Some(login) => login.password = password.clone(),
                None => {
                    return Err(invalid(
                        "egress.proxy_password_file",
                        "egress.proxy names no user (http://USER@host:port) to give it to",
                    ))
                }
            }
        }
    }
    Ok(Egress {
        route,
        dns: raw.egress_dns.0.iter().map(|server| server.0).collect(),
    })
}

fn tls(raw: &Raw) -> Result<Option<TlsListener>, ConfigError> {
    let Some(listen) = raw.tls_listen.0 else {
        return Ok(None);
    };
    let file = |key: &str, path: &FilePath| match &path.0 {
        Some(path) if path.is_file() => Ok(path.clone()),
        Some(path) => Err(invalid(key, format!("no such file: {}", path.display()))),
        None => Err(invalid(key, "is required when tls.listen is set")),
    };
    let cert = file("tls.cert", &raw.tls_cert);
    let key = file("tls.key", &raw.tls_key);
    match (cert, key) {
        (Ok(cert), Ok(key)) => Ok(Some(TlsListener { listen, cert, key })),
        (cert, key) => Err(ConfigError {
            problems: [cert.err(), key.err()]
                .into_iter()
                .flatten()
                .flat_map(|e| e.problems)
                .collect(),
        }),
    }
}

fn patterns(key: &str, list: &List<Pattern>) -> Result<PatternList, ConfigError> {
    PatternList::compile(&list.0).map_err(|e| invalid(key, e))
}

/// `auto` is sized from the memory limit found now, at start-up (see `capacity`).
fn stream_cap(setting: MaxStreams) -> StreamCap {
    match setting {
        MaxStreams::Set(max) => StreamCap::Set(max),
        MaxStreams::Auto => {
            let memory_limit = capacity::memory_limit();
            StreamCap::Derived {
                max: capacity::max_streams_for(memory_limit),
                memory_limit,
            }
        }
    }
}
