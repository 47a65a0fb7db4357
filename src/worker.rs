//! What each worker holds: its own upstream clients (awc clients are not `Send`, so every worker
//! builds its own; one per egress route) and what all workers share: the configuration, the metrics and the token realms
//! learned from challenges. Managed auth's state is app data of its own, registered only in
//! that mode (see `routes::configure`).

use std::sync::Arc;

use crate::{
    config::Config,
    metrics::Metrics,
    upstream::{clients::Clients, endpoints::Breakers, realms::Realms},
};

pub struct Worker {
    pub clients: Clients,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Token realms learned from challenges, shared by every worker.
    pub realms: Arc<Realms>,
    /// The circuit breakers of registries with several endpoints, shared by every worker.
    pub breakers: Arc<Breakers>,
}
