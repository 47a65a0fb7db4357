//! What every request passes through before and after its route: the access log, access control and
//! per-client limits, the client's address, and the refusal of protocol upgrades.

pub mod access_control;
pub mod access_log;
pub mod client_addr;
pub mod upgrade;
