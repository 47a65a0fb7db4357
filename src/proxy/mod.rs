//! What goes up to an upstream and what comes back down: the request target, header policies,
//! whose credentials go where, and repository names and token scopes as each side knows them.

pub mod challenge;
pub mod credentials;
pub mod headers;
pub mod location;
pub mod scope;
pub mod target;
