//! hubferry: a streaming Docker Hub accelerator. One actix-web server carries the registry, the
//! token issuer, the search index and the blob CDN for clients that cannot reach them.
//!
//! The folders follow a request (docs/ARCHITECTURE.md): `server` accepts it, `middleware`
//! admits and logs it, `routes` picks its handler, `proxy` shapes what goes up and comes back,
//! `upstream` reaches the registries, `stream` carries the bodies; `auth`, `policy` and
//! `config` decide; `net`, `error` and `metrics` are the vocabulary all of them share.

pub mod auth;
pub mod config;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod held_body;
pub mod logging;
mod metrics;
mod middleware;
mod net;
mod policy;
mod proxy;
mod routes;
mod server;
mod stream;
#[cfg(test)]
mod test_support;
mod upstream;
mod worker;

pub use server::{admin::probe as healthcheck, serve};
