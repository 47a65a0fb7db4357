//! The admin listener: liveness, readiness and metrics, on their own address (by default
//! loopback only) so they are never exposed with the mirror; and `hubferry --healthcheck`,
//! which asks a running hubferry's listener, for container health checks in images that have
//! no curl.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use actix_web::{dev::Server, web, App, HttpResponse, HttpServer};

use crate::metrics::Metrics;

/// Whether the mirror should receive traffic: true once serving, false from the moment a
/// shutdown starts (so load balancers drain it while in-flight downloads finish).
#[derive(Debug, Default)]
pub struct Lifecycle {
    ready: AtomicBool,
}

impl Lifecycle {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

struct AdminState {
    metrics: Arc<Metrics>,
    lifecycle: Arc<Lifecycle>,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    if state.lifecycle.is_ready() {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("shutting down\n")
    }
}

async fn render_metrics(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render())
}

/// The admin server, one worker, signals left to the caller (which stops it last).
pub fn server(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    lifecycle: Arc<Lifecycle>,
) -> std::io::Result<Server> {
    let state = web::Data::new(AdminState { metrics, lifecycle });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(render_metrics))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)?
    .run())
}

/// How long `--healthcheck` waits for the answer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `hubferry --healthcheck`: GET `/healthz` from the admin listener at `listen` (an unspecified
/// address is asked on loopback), `Ok` on a 2xx answer.
pub fn probe(listen: std::net::SocketAddr) -> Result<(), String> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!(
        "http://{}/healthz",
        std::net::SocketAddr::new(ip, listen.port())
    );
    actix_rt::System::new().block_on(async {
        let client = awc::Client::builder().timeout(PROBE_TIMEOUT).finish();
        let answer = client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("{url}: {}", answer.status()))
        }
    })
}
