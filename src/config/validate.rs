//! From the typed settings to the [`Config`] the server runs on: the checks that relate
//! settings to each other or read the files they name. Independent checks all run, so that
//! their problems are reported together.

use std::num::NonZeroUsize;

use super::{
    auth, invalid,
    registries::{credentials, read_secret_file, registries},
    settings::Raw,
    values::{FilePath, List, MaxStreams},
    AccessPolicy, Acme, BreakerPolicy, Config, ConfigError, DockerHub, Egress, Limits, Problems,
    RedirectPolicy, ResumePolicy, StreamCap, Timeouts, TlsListener,
};
use crate::{
    config::{capacity, AcmeChallenge},
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
    if !raw.tls_acme_domains.0.is_empty() {
        return acme(raw).map(Some);
    }
    let Some(listen) = raw.tls_listen.0 else {
        return Ok(None);
    };
    let file = |key: &str, path: &FilePath| match &path.0 {
        Some(path) if path.is_file() => Ok(path.clone()),
        Some(path) => Err(invalid(key, format!("no such file: {}", path.display()))),
        None => Err(invalid(
            key,
            "is required when tls.listen is set (or tls.acme.domains, for a certificate from \
             an ACME CA)",
        )),
    };
    let cert = file("tls.cert", &raw.tls_cert);
    let key = file("tls.key", &raw.tls_key);
    match (cert, key) {
        (Ok(cert), Ok(key)) => Ok(Some(TlsListener {
            listen,
            cert,
            key,
            acme: None,
        })),
        (cert, key) => Err(ConfigError {
            problems: [cert.err(), key.err()]
                .into_iter()
                .flatten()
                .flat_map(|e| e.problems)
                .collect(),
        }),
    }
}

/// `tls.acme.*`: the TLS listener with a certificate hubferry gets itself.
fn acme(raw: &Raw) -> Result<TlsListener, ConfigError> {
    let listen = raw.tls_listen.0.ok_or_else(|| {
        invalid(
            "tls.acme.domains",
            "needs tls.listen: the certificate is for the TLS listener (0.0.0.0:443, the port \
             the CA and clients reach)",
        )
    });
    let exclusive = |key: &str, file: &FilePath| match file.0 {
        Some(_) => Err(invalid(
            key,
            "is set with tls.acme.domains: choose one, certificate files or ACME",
        )),
        None => Ok(()),
    };
    let cert_unset = exclusive("tls.cert", &raw.tls_cert);
    let key_unset = exclusive("tls.key", &raw.tls_key);
    let email = match raw.tls_acme_email.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(email) if is_email(email) => Ok(Some(email.to_owned())),
        Some(email) => Err(invalid(
            "tls.acme.email",
            format!("'{email}' is not an e-mail address"),
        )),
    };
    let ca_roots = match &raw.tls_acme_ca_file.0 {
        Some(path) => {
            crate::config::pem::certificates(path).map_err(|e| invalid("tls.acme.ca_file", e))
        }
        None => Ok(Vec::new()),
    };
    let challenge = match raw.tls_acme_challenge {
        AcmeChallenge::Http01 if raw.listen.0.is_none() => Err(invalid(
            "tls.acme.challenge",
            "is http-01, which is answered on the plain listener, and listen is off",
        )),
        challenge => Ok(challenge),
    };
    let cache_dir = raw.tls_acme_cache_dir.0.clone().ok_or_else(|| {
        invalid(
            "tls.acme.cache_dir",
            "is empty: the account key needs a home",
        )
    });
    let mut problems = Problems::default();
    let (listen, _, _, email, ca_roots, challenge, cache_dir) = (
        problems.take(listen),
        problems.take(cert_unset),
        problems.take(key_unset),
        problems.take(email),
        problems.take(ca_roots),
        problems.take(challenge),
        problems.take(cache_dir),
    );
    let (Some(listen), Some(email), Some(ca_roots), Some(challenge), Some(cache_dir)) =
        (listen, email, ca_roots, challenge, cache_dir)
    else {
        return Err(ConfigError {
            problems: problems.0,
        });
    };
    let acme = Acme {
        domains: dedup(raw.tls_acme_domains.0.iter().map(|d| d.0.clone())),
        email,
        directory: raw.tls_acme_directory.0.clone(),
        ca_roots,
        cache_dir,
        challenge,
        retry: raw.tls_acme_retry.0,
    };
    let (cert, key) = acme.certificate_files();
    problems.finish(TlsListener {
        listen,
        cert,
        key,
        acme: Some(acme),
    })
}

/// One `@` with something on each side and no spaces: what a CA will check further.
fn is_email(text: &str) -> bool {
    matches!(text.split_once('@'), Some((user, host))
        if !user.is_empty() && host.contains('.') && !host.contains('@')
            && !text.contains(char::is_whitespace))
}

/// In first-seen order, each once.
fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
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
