//! The registries hubferry reaches: the registry table, the client that sends to them, where it
//! may connect, the redirects it follows, and the token realms it learned.

pub mod cdn;
pub mod client;
pub mod egress;
pub mod realms;
pub mod redirect;
pub mod registries;
