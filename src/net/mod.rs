//! Addresses and names, as pure functions: who the client is (behind trusted proxies), CIDR
//! lists, IPv4 addresses embedded in IPv6 ones and written as text, and the origin clients are
//! told to use.

pub mod client_addr;
pub mod embedded_ipv4;
pub mod ip_text;
pub mod origin;
pub mod redact;
