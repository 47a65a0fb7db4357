//! One worker's upstream clients: one per egress route (direct, the default proxy, each
//! upstream's own), so that every connection pool holds connections of one route, and each
//! registry's requests, with the CDN redirects they lead to, go out the way set for it.

use std::{net::SocketAddr, rc::Rc, sync::Arc};

use rustls::ClientConfig;

use crate::upstream::{
    client::{build_client, Timeouts, UpstreamClient},
    connector::EgressConnector,
    egress::Policy,
    proxy::Route,
    registries::RegistryName,
    resolver,
};

pub struct Clients {
    /// For a request no registry is named for (none today: every route names one).
    default: UpstreamClient,
    by_registry: Vec<(RegistryName, UpstreamClient)>,
}

/// What the clients of a worker are built from.
pub struct ClientSettings<'a> {
    pub tls: Arc<ClientConfig>,
    pub timeouts: &'a Timeouts,
    /// Connections open at once, per client (0: no cap).
    pub pool: usize,
    pub policy: Policy,
    /// `egress.dns`; empty: the system's resolver.
    pub dns: &'a [SocketAddr],
    pub default_route: Route,
    /// Each registry's route.
    pub routes: Vec<(RegistryName, Route)>,
}

impl Clients {
    pub fn new(settings: ClientSettings<'_>) -> Clients {
        let policy = Rc::new(settings.policy);
        let resolver = resolver::resolver(settings.dns);
        let mut built: Vec<(Route, UpstreamClient)> = Vec::new();
        let mut client_for = |route: &Route| {
            if let Some((_, client)) = built.iter().find(|(r, _)| r == route) {
                return client.clone();
            }
            let connector =
                EgressConnector::new(policy.clone(), resolver.clone(), Rc::new(route.clone()));
            let client = build_client(
                settings.tls.clone(),
                settings.timeouts,
                settings.pool,
                connector,
            );
            built.push((route.clone(), client.clone()));
            client
        };
        let default = client_for(&settings.default_route);
        let by_registry = settings
            .routes
            .iter()
            .map(|(name, route)| (*name, client_for(route)))
            .collect();
        Clients {
            default,
            by_registry,
        }
    }

    /// The client for requests to `registry` (and the redirects they lead to).
    pub fn for_registry(&self, registry: RegistryName) -> &UpstreamClient {
        self.by_registry
            .iter()
            .find(|(name, _)| *name == registry)
            .map_or(&self.default, |(_, client)| client)
    }
}
