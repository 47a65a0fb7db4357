//! hubferry: a streaming Docker Hub accelerator. One actix-web server carries the registry, the
//! token issuer, the search index and the blob CDN for clients that cannot reach them.

pub mod config;
mod error;
mod headers;
mod redirect;
mod routes;
mod upstream;

use std::sync::Arc;

use actix_web::{dev::ServiceResponse, middleware::Logger, web, App, HttpMessage, HttpServer};

use crate::{
    config::Config,
    routes::{Proxy, UpstreamTrace},
};

/// Runs the server until it is stopped (SIGINT/SIGTERM).
pub async fn serve(config: Config) -> std::io::Result<()> {
    let tls = upstream::tls_config(&config.upstream.extra_roots).map_err(std::io::Error::other)?;
    let config = Arc::new(config);
    log::info!(
        "hubferry {} with {} workers; registry {}, auth {}, index {}",
        env!("CARGO_PKG_VERSION"),
        config.workers,
        config.upstream.registry,
        config.upstream.auth,
        config.upstream.index,
    );
    let shared = config.clone();
    let mut server = HttpServer::new(move || {
        // Built here, once per worker: awc clients are not Send.
        let proxy = Proxy {
            client: upstream::build_client(
                tls.clone(),
                &shared.timeouts,
                shared.limits.upstream_pool,
            ),
            config: shared.clone(),
        };
        App::new()
            .app_data(web::Data::new(proxy))
            .wrap(access_log())
            .configure(routes::configure)
    })
    .workers(config.workers.get())
    .max_connections(config.limits.max_connections)
    .client_request_timeout(config.limits.request_head_timeout)
    .keep_alive(config.limits.keep_alive)
    .shutdown_timeout(config.shutdown_grace.as_secs().max(1));
    if let Some(listen) = config.listen {
        server = server.bind(listen)?;
        log::info!("serving plain HTTP on {listen}");
    }
    server.run().await
}

/// One line per request: client, request line, status, bytes sent, duration, which upstream
/// answered and how many redirects were followed. Written when the body ends, so the byte count
/// is what was really streamed.
fn access_log() -> Logger {
    let trace = |res: &ServiceResponse| res.request().extensions().get::<UpstreamTrace>().copied();
    Logger::new(r#"%a "%r" %s %b %Dms upstream=%{upstream}xo redirects=%{redirects}xo"#)
        .log_target("hubferry::access")
        .custom_response_replace("upstream", move |res| {
            trace(res).map_or_else(|| "-".to_owned(), |t| t.upstream.replace(' ', "_"))
        })
        .custom_response_replace("redirects", move |res| {
            trace(res).map_or(0, |t| t.redirects).to_string()
        })
}
