//! `[auth]`: how clients authenticate (see `auth::users`, `auth::grant`,
//! `auth::upstream_tokens`). Passthrough refuses the settings it would ignore; managed mode
//! reads its users and signing key.

use std::time::Duration;

use super::{
    invalid,
    settings::Raw,
    values::{AuthMode, FilePath},
    ConfigError, ManagedAuth, Problems,
};
use crate::{
    auth::grant::TokenKey,
    auth::users::Users,
    upstream::registries::{Registries, DOCKER_HUB},
};

/// The managed-auth settings, or `None` in passthrough mode. Every problem is reported.
pub fn managed(raw: &Raw, registries: &Registries) -> Result<Option<ManagedAuth>, ConfigError> {
    let mut problems = Problems::default();
    let tokens = raw.auth_tokens.0.clone();
    let htpasswd = &raw.auth_htpasswd.0;
    let key_file = &raw.auth_token_key_file.0;
    if raw.auth_mode == AuthMode::Passthrough {
        // Settings that would do nothing: refused, so nobody believes their mirror checks
        // users or uses an account when it does not.
        let unused = [
            ("auth.htpasswd", htpasswd.is_some()),
            ("auth.tokens", !tokens.is_empty()),
            ("auth.token_key_file", key_file.is_some()),
        ];
        for (key, _) in unused.iter().filter(|(_, set)| *set) {
            problems.take::<()>(Err(invalid(
                key,
                "is only used with auth.mode = \"managed\"",
            )));
        }
        for upstream in registries.all().iter().filter(|u| u.credentials.is_some()) {
            let key = if upstream.name == DOCKER_HUB {
                "upstream.username".to_owned()
            } else {
                format!("upstreams[{}].username", upstream.name)
            };
            problems.take::<()>(Err(invalid(
                &key,
                "upstream credentials are only used with auth.mode = \"managed\" \
                 (in passthrough mode clients send their own)",
            )));
        }
        return problems.finish(None);
    }
    let users = problems.take(match htpasswd {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| invalid("auth.htpasswd", format!("{}: {e}", path.display())))
            .and_then(|text| {
                Users::from_htpasswd(&text, tokens).map_err(|e| invalid("auth.htpasswd", e))
            }),
        None => Ok(Users::from_htpasswd("", tokens).expect("no lines")),
    });
    let anonymous = raw.auth_anonymous.0;
    if !anonymous && users.as_ref().is_some_and(Users::is_empty) {
        problems.take::<()>(Err(invalid(
            "auth.anonymous",
            "is false and neither auth.htpasswd nor auth.tokens names a user: \
             no client could pull",
        )));
    }
    let token_ttl = raw.auth_token_ttl.0;
    if token_ttl < Duration::from_secs(10) || token_ttl > Duration::from_secs(86_400) {
        problems.take::<()>(Err(invalid("auth.token_ttl", "must be from 10s to 24h")));
    }
    let token_key = problems.take(token_key(&raw.auth_token_key_file));
    problems.finish(())?;
    Ok(Some(ManagedAuth {
        users: users.expect("no problem, so read"),
        anonymous,
        token_ttl,
        token_key: token_key.expect("no problem, so read"),
        login_failures_per_minute: raw.auth_login_failures_per_minute.u32(),
    }))
}

fn token_key(file: &FilePath) -> Result<Option<TokenKey>, ConfigError> {
    let Some(path) = &file.0 else {
        return Ok(None);
    };
    let bytes = std::fs::read(path)
        .map_err(|e| invalid("auth.token_key_file", format!("{}: {e}", path.display())))?;
    if bytes.len() < 32 {
        return Err(invalid(
            "auth.token_key_file",
            "holds fewer than 32 bytes; use e.g. `head -c 32 /dev/urandom`",
        ));
    }
    Ok(Some(TokenKey::new(bytes)))
}
