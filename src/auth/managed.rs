//! Managed auth (`auth.mode = "managed"`): its settings and its state, one per process and
//! shared by every worker. The routes that use it are in `routes::managed`.

use std::time::Duration;

use crate::auth::{grant::TokenKey, login::Logins, upstream_tokens::UpstreamTokens, users::Users};

/// Managed auth : hubferry authenticates its clients, issues its own
/// tokens and talks to each upstream with that upstream's configured credentials.
#[derive(Debug, Clone)]
pub struct ManagedAuth {
    pub users: Users,
    /// Clients without credentials get a token too.
    pub anonymous: bool,
    /// Lifetime of the tokens hubferry issues.
    pub token_ttl: Duration,
    /// From `auth.token_key_file`; `None`: a random key per process.
    pub token_key: Option<TokenKey>,
    /// Failed logins per minute per client and per user name (see `login`); 0: no limit.
    pub login_failures_per_minute: u32,
}

/// Managed auth's state, one per process and shared by every worker: the settings, the key
/// tokens are signed with, and the upstream token cache.
#[derive(Debug)]
pub struct Managed {
    pub auth: ManagedAuth,
    pub key: TokenKey,
    pub upstream_tokens: UpstreamTokens,
    /// Every password check goes through here (failure limits, a bounded bcrypt pool).
    pub logins: Logins,
}

impl Managed {
    /// The configured key, else a random one (tokens then last as long as this process).
    pub fn new(auth: ManagedAuth) -> Result<Managed, String> {
        let key = match &auth.token_key {
            Some(key) => key.clone(),
            None => TokenKey::random()?,
        };
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
        let logins = Logins::new(auth.users.clone(), auth.login_failures_per_minute, parallel);
        Ok(Managed {
            auth,
            key,
            upstream_tokens: UpstreamTokens::default(),
            logins,
        })
    }
}
