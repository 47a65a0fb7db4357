//! The route table: which handler answers which path, chosen once at start-up for the auth
//! mode. One file per endpoint family; `forward` is what every handler ends in.

pub(crate) mod forward; // its upstream URL building is a fuzz target (src/fuzzing.rs)
mod landing;
pub(crate) mod managed;
mod registry;
pub(crate) mod search; // its query rewrite is a fuzz target (src/fuzzing.rs)
mod token;

use actix_web::web;

/// How clients authenticate, chosen once at start-up: each mode has its own handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Clients' credentials go upstream (to the registry they are meant for).
    Passthrough,
    /// hubferry is the token issuer its clients see (`auth.mode = "managed"`); its state is
    /// app data of its own ([`Managed`](crate::auth::managed::Managed)).
    Managed,
}

impl Mode {
    pub fn of(managed: bool) -> Mode {
        if managed {
            Mode::Managed
        } else {
            Mode::Passthrough
        }
    }
}

/// The locations of the nginx config hubferry replaces, in the order nginx would pick them.
pub fn configure(cfg: &mut web::ServiceConfig, mode: Mode) {
    cfg.route("/v2/_catalog", web::to(registry::catalog));
    // A scope, not a regex route: `/v2` and everything below it, matched without a regex.
    let v2 = web::scope("/v2");
    match mode {
        Mode::Passthrough => cfg
            .service(v2.default_service(web::to(registry::v2)))
            .route("/token", web::to(token::token))
            .route("/token/{upstream}", web::to(token::upstream_token))
            .route("/token/{upstream}/{realm}", web::to(token::learned_token))
            .route("/v1/search", web::to(search::search)),
        Mode::Managed => cfg
            .service(v2.default_service(web::to(managed::v2)))
            .route("/token", web::to(managed::token_route))
            .route("/token/{upstream}", web::to(managed::token_route))
            .route("/token/{upstream}/{realm}", web::to(managed::token_route))
            .route("/v1/search", web::to(managed::search)),
    };
    // Browsers only (`Accept: text/html`); registry clients fall through to the default.
    cfg.service(landing::resource());
    match mode {
        Mode::Passthrough => cfg.default_service(web::to(registry::other)),
        Mode::Managed => cfg.default_service(web::to(managed::other)),
    };
}
