//! Where upstream names are resolved: the system's resolver (the default), or the DNS servers
//! `egress.dns` lists. The nginx config hubferry grew out of set `resolver 1.1.1.1` because a
//! server's own DNS may be poisoned; this is that setting, for every upstream, CDN and proxy
//! name. Either way the answers go through the egress policy afterwards (see `connector`).

use std::{error::Error, net::SocketAddr};

use actix_tls::connect::{Resolve, ResolverService};
use futures_util::future::LocalBoxFuture;
use hickory_resolver::{
    config::{NameServerConfig, NameServerConfigGroup, ResolverConfig},
    name_server::TokioConnectionProvider,
    proto::xfer::Protocol,
    TokioResolver,
};

/// Answers kept at most, per worker; each for its record's TTL.
const CACHE_ENTRIES: usize = 1024;

/// The resolver one worker's client uses: `servers` empty means the system's.
pub fn resolver(servers: &[SocketAddr]) -> ResolverService {
    if servers.is_empty() {
        return ResolverService::default();
    }
    // UDP first, then TCP (for answers too long for a datagram, and for networks that drop UDP
    // to outside servers).
    let mut group = NameServerConfigGroup::new();
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        for server in servers {
            group.push(NameServerConfig::new(*server, protocol));
        }
    }
    let config = ResolverConfig::from_parts(None, Vec::new(), group);
    let mut builder =
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
    builder.options_mut().cache_size = CACHE_ENTRIES;
    ResolverService::custom(DnsServers(builder.build()))
}

struct DnsServers(TokioResolver);

impl Resolve for DnsServers {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn Error>>> {
        Box::pin(async move {
            let found = self.0.lookup_ip(host).await?;
            Ok(found.iter().map(|ip| SocketAddr::new(ip, port)).collect())
        })
    }
}
