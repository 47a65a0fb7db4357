//! Addresses and names, as pure functions: IPv4 addresses embedded in IPv6 ones, and the origin
//! clients are told to use.

pub mod embedded_ipv4;
pub mod origin;
