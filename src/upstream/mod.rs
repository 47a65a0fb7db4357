//! The registries hubferry reaches: the registry table, the clients that send to them (one per
//! egress route), where they may connect and through which proxy, how names are resolved, the
//! redirects they follow, and the token realms they learned.

pub mod cdn;
pub mod challenge;
pub mod client;
pub mod clients;
pub mod connector;
pub mod egress;
pub mod endpoints;
pub mod failover;
pub mod proxy;
pub mod ratelimit;
pub mod realms;
pub mod redirect;
pub mod registries;
pub mod resolver;
#[cfg(target_os = "linux")]
pub mod socket;
