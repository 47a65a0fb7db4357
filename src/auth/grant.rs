//! Managed auth: the short-lived tokens hubferry issues to its own clients. Opaque to clients,
//! not JWTs (nothing but hubferry reads them): `hf1.<payload>.<mac>`, base64url, where the
//! payload is JSON with the subject, the expiry and the repositories granted (pull only), and
//! the mac is HMAC-SHA256 over `hf1.<payload>` with the process's key.
//!
//! The key is random per process unless `auth.token_key_file` gives one: with a random key, a
//! token from one replica behind a load balancer is refused by another (the client then just
//! fetches a new one, at the cost of a round trip); share a key file to avoid that.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const PREFIX: &str = "hf1.";

/// The HMAC key tokens are signed with.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

impl TokenKey {
    pub fn new(bytes: Vec<u8>) -> TokenKey {
        TokenKey(bytes)
    }

    /// 32 random bytes from the OS.
    pub fn random() -> Result<TokenKey, String> {
        let mut bytes = vec![0u8; 32];
        getrandom::getrandom(&mut bytes)
            .map_err(|e| format!("no randomness for the token key: {e}"))?;
        Ok(TokenKey(bytes))
    }

    fn mac(&self, data: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(data);
        mac
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Who it was issued to (`clients::Subject`, as text).
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Repository names (as the client named them) it may pull.
    pub pull: Vec<String>,
}

impl Grant {
    /// Whether it lets the client pull `name` (as the client wrote it in the path). Docker's
    /// clients complete `library/` themselves on Docker Hub names, others may not: both
    /// spellings of a one-component name count as the same repository.
    pub fn allows_pull(&self, name: &str) -> bool {
        let bare = |n: &str| n.strip_prefix("library/").unwrap_or(n).to_owned();
        let wanted = bare(name);
        self.pull
            .iter()
            .any(|granted| granted == name || (!wanted.contains('/') && bare(granted) == wanted))
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Signs a grant.
pub fn mint(key: &TokenKey, grant: &Grant) -> String {
    let payload = serde_json::to_vec(grant).expect("a grant serialises");
    let signed = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(payload));
    let tag = key.mac(signed.as_bytes()).finalize().into_bytes();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Why a token was refused (told to the client in the challenge's `error_description`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Malformed,
    BadSignature,
    Expired,
}

impl Invalid {
    pub fn describe(self) -> &'static str {
        match self {
            Invalid::Malformed => "not a token this mirror issued",
            Invalid::BadSignature => "not a token this mirror issued (or its key changed)",
            Invalid::Expired => "the token has expired",
        }
    }
}

/// Checks a token's signature and expiry at `now` (seconds since the epoch).
pub fn verify(key: &TokenKey, token: &str, now: u64) -> Result<Grant, Invalid> {
    let (signed, tag) = token.rsplit_once('.').ok_or(Invalid::Malformed)?;
    let payload = signed.strip_prefix(PREFIX).ok_or(Invalid::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| Invalid::Malformed)?;
    key.mac(signed.as_bytes())
        .verify_slice(&tag)
        .map_err(|_| Invalid::BadSignature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| Invalid::Malformed)?;
    let grant: Grant = serde_json::from_slice(&payload).map_err(|_| Invalid::Malformed)?;
    if grant.exp <= now {
        return Err(Invalid::Expired);
    }
    Ok(grant)
}

/// The repositories a token request may be granted: every `repository:<name>:<actions>` scope
/// whose actions include `pull` (managed mode serves pulls only, so `push` is never granted);
/// other scopes (`registry:catalog:*`) are not granted.
pub fn pull_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut names = Vec::new();
    for scope in scopes.into_iter().flat_map(|value| value.split(' ')) {
        let Some(("repository", rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let pull = actions.split(',').any(|a| a == "pull" || a == "*");
        if pull && !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(exp: u64) -> Grant {
        Grant {
            sub: "user:alice".into(),
            exp,
            pull: vec!["library/alpine".into(), "ghcr.io/o/i".into()],
        }
    }

    #[test]
    fn tokens_round_trip_and_refuse_tampering_and_age() {
        let key = TokenKey::new(b"k".repeat(32));
        let token = mint(&key, &grant(1_000));
        assert!(token.starts_with("hf1."));
        assert_eq!(verify(&key, &token, 999), Ok(grant(1_000)));
        assert_eq!(verify(&key, &token, 1_000), Err(Invalid::Expired));
        let other = TokenKey::new(b"x".repeat(32));
        assert_eq!(verify(&other, &token, 0), Err(Invalid::BadSignature));
        // A payload swapped for another grant's, keeping the first tag.
        let forged = mint(&other, &grant(u64::MAX));
        let (forged_payload, _) = forged.rsplit_once('.').unwrap();
        let (_, tag) = token.rsplit_once('.').unwrap();
        assert_eq!(
            verify(&key, &format!("{forged_payload}.{tag}"), 0),
            Err(Invalid::BadSignature)
        );
        for garbage in ["", "hf1.", "abc.def", "hf1.!!.!!", "eyJhbGciOi.x.y"] {
            assert!(verify(&key, garbage, 0).is_err(), "{garbage}");
        }
    }

    #[test]
    fn grants_cover_both_spellings_of_library_names() {
        let g = grant(1);
        assert!(g.allows_pull("library/alpine"));
        assert!(g.allows_pull("alpine"));
        assert!(g.allows_pull("ghcr.io/o/i"));
        assert!(!g.allows_pull("o/i"));
        assert!(!g.allows_pull("library/nginx"));
        let bare = Grant {
            pull: vec!["alpine".into()],
            ..grant(1)
        };
        assert!(bare.allows_pull("library/alpine"));
        assert!(!bare.allows_pull("other/alpine"));
    }

    #[test]
    fn only_pull_is_granted() {
        assert_eq!(
            pull_scopes([
                "repository:library/alpine:pull",
                "repository:a/b:push,pull repository:c/d:push",
                "registry:catalog:*",
                "repository:localhost:5000/x:pull",
                "repository:library/alpine:pull",
            ]),
            vec!["library/alpine", "a/b", "localhost:5000/x"]
        );
    }
}
