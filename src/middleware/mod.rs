//! What every request passes through before and after its route: the access log, access control and
//! per-client limits, and the refusal of protocol upgrades.

pub mod access_control;
pub mod access_log;
pub mod upgrade;
