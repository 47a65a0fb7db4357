//! The server: its listeners (plain HTTP, TLS with certificate rotation, admin), the app each
//! worker runs, and graceful shutdown.

pub mod acme;
pub mod admin;
pub mod client_socket;
pub mod tls;

use std::{rc::Rc, sync::Arc};

use actix_web::{dev::ServerHandle, middleware::from_fn, web, App, HttpServer};

use crate::{
    auth::managed::Managed,
    config::{capacity, Acme, Config, StreamCap},
    metrics::Metrics,
    middleware::{access_control, access_log, upgrade},
    routes,
    upstream::{
        client::{build_client, tls_config},
        clients::{ClientSettings, Clients},
        connector::EgressConnector,
        egress,
        endpoints::Breakers,
        realms::Realms,
        resolver,
    },
    worker::Worker,
};
use acme::challenges::{self, Challenges};
use admin::Lifecycle;

/// actix-http's refill threshold for an HTTP/1.1 connection's write buffer: it asks the body
/// for another chunk only while less than this is waiting to be written. Kept at 1 KiB so
/// (a) a response head (well under 1 KiB) goes out in one `send` with a small body, and (b) the
/// buffer is refilled only when nearly empty. With a larger threshold, a slow client's buffer
/// is topped up while partly written, and `BytesMut` then doubles its capacity rather than
/// move the unwritten part forward: 500 slow clients' memory grew from 111 MB to 145 MB over
/// 30 s with 96 KiB. Body chunks of 8 KiB or more skip the buffer altogether (the patched
/// actix-http writes them from their own memory), so each of those goes out as it was read or
/// gathered: `stream::chunking`.
const CLIENT_WRITE_BUFFER: usize = 1024;

/// Runs the mirror (and its admin listener) until SIGTERM or SIGINT, then shuts down
/// gracefully: see [`shutdown_on_signal`].
pub async fn serve(config: Config) -> std::io::Result<()> {
    let tls = tls_config(&config.extra_roots).map_err(std::io::Error::other)?;
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let lifecycle = Arc::new(Lifecycle::default());
    // One table for every worker: a challenge seen on one names the realm another is asked for.
    let realms = Arc::new(Realms::default());
    let breakers = Arc::new(Breakers::new(&config.registries, config.breaker));
    for state in breakers.states() {
        metrics.endpoint_state(state.registry, &state.endpoint, state.up, false);
    }
    // One per process: a token issued on one worker is checked on another, and the upstream
    // token cache is shared.
    let managed = match &config.managed {
        Some(auth) => {
            let managed = Managed::new(auth.clone()).map_err(std::io::Error::other)?;
            log_managed(&config, &managed);
            Some(Arc::new(managed))
        }
        None => None,
    };
    log::info!(
        "hubferry {} with {} workers; registry {}, auth {}, index {}",
        env!("CARGO_PKG_VERSION"),
        config.workers,
        config.docker_hub.registry,
        config.docker_hub.auth,
        config.docker_hub.index,
    );
    for upstream in config.registries.all() {
        log::info!(
            "upstream {} at {}{}{}",
            upstream.name,
            upstream.registry,
            upstream
                .fallbacks
                .iter()
                .map(|url| format!(", falling back on {url}"))
                .collect::<String>(),
            if upstream.library {
                " (library/ rule)"
            } else {
                ""
            }
        );
    }
    log_stream_cap(config.limits.max_streams);
    if !config.ignored_env.is_empty() {
        log::warn!(
            "ignoring environment variables that name no setting: {}",
            config.ignored_env.join(", ")
        );
    }
    if config.public_url.is_none() && config.server_names.is_empty() {
        log::warn!(
            "neither public_url nor server_names is set: the token realm is built from each \
             request's Host header, which clients can forge; set one of them"
        );
    }
    // The admin listener is bound first, so that once the mirror's port accepts connections
    // the health and metrics endpoints do too (tests and probes rely on that order).
    let admin = match config.admin_listen {
        Some(addr) => {
            let admin = admin::server(addr, metrics.clone(), lifecycle.clone())?;
            log::info!("serving /healthz, /readyz and /metrics on {addr}");
            Some(admin)
        }
        None => None,
    };
    // Before the server accepts connections: every HTTP/2 connection advertises and enforces it.
    actix_http::h2::set_max_concurrent_streams(config.limits.h2_max_streams);
    let shared = config.clone();
    let shared_metrics = metrics.clone();
    // One per process: per-client limits count across workers.
    let guard = web::Data::new(access_control::Guard::new(&config, metrics.clone()));
    // With ACME: the answers to the CA's challenges, shared by every worker and the TLS
    // listener's certificate resolver.
    let acme_challenges = config
        .tls
        .as_ref()
        .and_then(|tls| tls.acme.as_ref())
        .map(|_| web::Data::new(Challenges::default()));
    let app_challenges = acme_challenges.clone();
    let mut server = HttpServer::new(move || {
        // Built here, once per worker: awc clients are not Send.
        let worker = Worker {
            clients: Clients::new(ClientSettings {
                tls: tls.clone(),
                timeouts: &shared.timeouts,
                pool: shared.limits.upstream_pool,
                policy: shared.egress_policy(),
                dns: &shared.egress.dns,
                default_route: shared.egress.route.clone(),
                routes: shared
                    .registries
                    .all()
                    .iter()
                    .map(|r| (r.label(), shared.egress.route_of(r.proxy.as_ref())))
                    .collect(),
            }),
            config: shared.clone(),
            metrics: shared_metrics.clone(),
            realms: realms.clone(),
            breakers: breakers.clone(),
        };
        let mut app = App::new().app_data(web::Data::new(worker));
        // Managed auth's state exists in that mode only, and only its routes ask for it.
        if let Some(managed) = &managed {
            app = app.app_data(web::Data::from(managed.clone()));
        }
        if let Some(challenges) = &app_challenges {
            app = app.app_data(challenges.clone());
        }
        let mode = routes::Mode::of(managed.is_some());
        app.app_data(guard.clone())
            // Inside the access log, so refusals are logged and counted like any answer.
            .wrap(from_fn(access_control::check))
            .wrap(from_fn(upgrade::check))
            // Before access control: the CA validates from addresses nobody can list.
            .wrap(from_fn(challenges::answer_http))
            .wrap(from_fn(access_log::observe))
            .configure(|cfg| routes::configure(cfg, mode))
    })
    .workers(config.workers.get())
    .max_connections(config.limits.max_connections)
    .client_request_timeout(config.limits.request_head_timeout)
    .keep_alive(config.limits.keep_alive)
    .h1_write_buffer_size(CLIENT_WRITE_BUFFER)
    // A client that stops reading a download is cut by the kernel: see `client_socket`.
    .on_connect(client_socket::on_connect(config.timeouts.body_idle))
    .shutdown_timeout(config.shutdown_grace.as_secs().max(1))
    .disable_signals();
    if let Some(listen) = config.listen {
        server = server.bind(listen)?;
        log::info!("serving plain HTTP on {listen}");
    }
    if let Some(listener) = &config.tls {
        // New connections get whatever pair is current: see `tls::spawn_rotation`.
        let certs = match (&listener.acme, &acme_challenges) {
            (Some(_), Some(challenges)) => {
                tls::Certificates::for_acme(listener, challenges.clone().into_inner())
            }
            _ => tls::Certificates::load(listener).map_err(std::io::Error::other)?,
        };
        certs.report_expiry(metrics.tls_certificate_expiry());
        let server_config = tls::server_config(certs.clone()).map_err(std::io::Error::other)?;
        server = server.bind_rustls_0_23(listener.listen, server_config)?;
        tls::spawn_rotation(certs.clone())?;
        log::info!("serving HTTPS (HTTP/2, HTTP/1.1) on {}", listener.listen);
        if let (Some(settings), Some(challenges)) = (&listener.acme, &acme_challenges) {
            let http = acme::AcmeHttp::spawn(acme_client(&config, settings)?);
            log::info!(
                "ACME: certificates for {} from {}, kept in {}",
                settings.domains.join(", "),
                settings.directory,
                settings.cache_dir.display()
            );
            acme::Issuer::new(
                settings.clone(),
                certs,
                challenges.clone().into_inner(),
                http,
            )
            .spawn();
        }
    }
    let server = server.run();

    let admin_handle = admin.as_ref().map(|a| a.handle());
    if let Some(admin) = admin {
        actix_rt::spawn(admin);
    }
    actix_rt::spawn(shutdown_on_signal(
        server.handle(),
        admin_handle,
        lifecycle.clone(),
        config.shutdown_grace,
    ));
    lifecycle.set_ready(true);
    server.await
}

/// The client the ACME issuer reaches its CA with: the egress route (proxy, DNS) every
/// upstream uses, the web's roots with `upstream.ca_file` and `tls.acme.ca_file`, and the CA's
/// own host trusted like a configured upstream (a private CA may be on the mirror's network).
fn acme_client(config: &Config, acme: &Acme) -> std::io::Result<awc::Client> {
    let roots: Vec<_> = config
        .extra_roots
        .iter()
        .chain(&acme.ca_roots)
        .cloned()
        .collect();
    let tls = tls_config(&roots).map_err(std::io::Error::other)?;
    let policy = egress::Policy::new(false, [&acme.directory])
        .trusting_proxies(config.egress.route.proxies());
    let connector = EgressConnector::new(
        Rc::new(policy),
        resolver::resolver(&config.egress.dns),
        Rc::new(config.egress.route.clone()),
    );
    Ok(build_client(tls, &config.timeouts, 0, connector).awc())
}

/// How many blob downloads may stream at once, and where the number comes from.
fn log_stream_cap(cap: StreamCap) {
    const MIB: u64 = 1024 * 1024;
    match cap {
        StreamCap::Set(0) => log::warn!(
            "limits.max_streams = 0: blob downloads are not capped, and enough of them at once \
             can exhaust the process's memory"
        ),
        StreamCap::Set(max) => log::info!("at most {max} blob downloads at once"),
        StreamCap::Derived {
            max,
            memory_limit: Some(limit),
        } => log::info!(
            "at most {max} blob downloads at once: the memory limit of {} MiB, less {} MiB, at \
             {} KiB each (limits.max_streams = auto)",
            limit / MIB,
            capacity::RESERVE / MIB,
            capacity::STREAM_COST / 1024,
        ),
        StreamCap::Derived {
            max,
            memory_limit: None,
        } => log::info!(
            "at most {max} blob downloads at once: no memory limit found \
             (limits.max_streams = auto)"
        ),
    }
}

/// What managed auth will do, said once at start-up: whose accounts, never their secrets.
fn log_managed(config: &Config, managed: &Managed) {
    let auth = &managed.auth;
    log::info!(
        "managed auth: hubferry issues tokens valid {:?} ({}); anonymous clients {}",
        auth.token_ttl,
        if auth.token_key.is_some() {
            "key from auth.token_key_file"
        } else {
            "random key: tokens are valid on this process only"
        },
        if auth.anonymous {
            "may pull"
        } else {
            "are refused"
        },
    );
    for upstream in config.registries.all() {
        if let Some(credentials) = &upstream.credentials {
            log::info!(
                "managed auth: upstream {} as user {}",
                upstream.name,
                credentials.username
            );
        }
    }
}

/// On SIGTERM or SIGINT: report not-ready, stop accepting, give in-flight requests (a layer
/// download may take minutes) up to `grace` to finish, then stop the admin listener last so
/// probes see the drain. A second signal stops at once.
async fn shutdown_on_signal(
    server: ServerHandle,
    admin: Option<ServerHandle>,
    lifecycle: Arc<Lifecycle>,
    grace: std::time::Duration,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot listen for SIGTERM/SIGINT: graceful shutdown is unavailable");
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    log::info!("shutting down: no new connections; in-flight requests get up to {grace:?}");
    lifecycle.set_ready(false);
    let graceful = server.stop(true);
    tokio::select! {
        _ = graceful => {},
        _ = term.recv() => { log::warn!("second signal: stopping now"); server.stop(false).await },
        _ = int.recv() => { log::warn!("second signal: stopping now"); server.stop(false).await },
    }
    if let Some(admin) = admin {
        admin.stop(true).await;
    }
    log::info!("stopped");
}
