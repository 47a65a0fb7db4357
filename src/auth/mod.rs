//! Who a client is and what it may do in managed mode, and hubferry's own upstream accounts' tokens.

pub mod grant;
pub mod login;
pub mod managed;
pub mod upstream_tokens;
pub mod users;
