//! JWT minting and grant rules shared by the token issuer and `World::token`.
//!
//! Tokens are exactly what distribution's `auth: token` accepts: RS256, `kid` = libtrust key
//! ID of a certificate in `rootcertbundle`, `iss`/`aud` matching its config, and an `access`
//! claim listing granted actions per resource.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// `service` of the registry and `aud` of its tokens, as on Docker Hub.
pub const SERVICE: &str = "registry.docker.io";
/// `iss` of every token; the registry is configured to trust only this issuer.
pub const ISSUER: &str = "hubferry-test-issuer";
/// The one account that exists: pull+push everywhere and the catalog.
pub const USERNAME: &str = "testuser";
pub const PASSWORD: &str = "testpass";
/// Token lifetime, as Docker Hub.
pub const EXPIRES_IN: u64 = 300;

/// One entry of the `access` claim.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// Who asked for a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    User(String),
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: &'a [Access],
}

pub struct Minter {
    key: EncodingKey,
    kid: String,
}

impl Minter {
    pub fn new(key_pem: &[u8], kid: String) -> Minter {
        let key = EncodingKey::from_rsa_pem(key_pem).expect("issuer key is an RSA PEM");
        Minter { key, kid }
    }

    /// A signed token for `audience` granting `access`.
    pub fn mint(&self, subject: &str, audience: &str, access: &[Access]) -> String {
        static JTI: AtomicU64 = AtomicU64::new(0);
        let now = unix_now();
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".into());
        header.kid = Some(self.kid.clone());
        let claims = Claims {
            iss: ISSUER,
            sub: subject,
            aud: audience,
            exp: now + EXPIRES_IN,
            // A little slack so a token is valid the instant it is minted.
            nbf: now.saturating_sub(1),
            iat: now,
            jti: format!("hubferry-{now}-{}", JTI.fetch_add(1, Ordering::Relaxed)),
            access,
        };
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign token")
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Split `type:name:actions` as distribution does: the name may itself contain ':'
/// (`repository:localhost:5000/foo:pull`), the actions are after the last ':'.
pub fn parse_scope(scope: &str) -> Option<Access> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some(Access {
        kind: kind.to_string(),
        name: name.to_string(),
        actions: actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// Every scope in `scopes`; each item may hold several space-separated scopes (OAuth form).
pub fn parse_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Vec<Access> {
    scopes
        .into_iter()
        .flat_map(str::split_whitespace)
        .filter_map(parse_scope)
        .collect()
}

/// The world's policy: anonymous may pull everything but `private/*`; the test user may pull
/// and push everything and read the catalog. Refused actions are dropped but the entry stays
/// (with possibly empty actions), as Docker Hub answers.
pub fn grant(identity: &Identity, requested: &[Access]) -> Vec<Access> {
    requested
        .iter()
        .map(|req| {
            let allowed: &[&str] = match (req.kind.as_str(), identity) {
                ("repository", Identity::User(_)) => &["pull", "push"],
                ("repository", Identity::Anonymous) if !req.name.starts_with("private/") => {
                    &["pull"]
                }
                ("registry", Identity::User(_)) if req.name == "catalog" => &["*"],
                _ => &[],
            };
            Access {
                actions: req
                    .actions
                    .iter()
                    .filter(|a| allowed.contains(&a.as_str()))
                    .cloned()
                    .collect(),
                ..req.clone()
            }
        })
        .collect()
}

/// Check `user`/`password` against the one account.
pub fn authenticate(user: &str, password: &str) -> Option<Identity> {
    (user == USERNAME && password == PASSWORD).then(|| Identity::User(user.to_string()))
}

#[test]
fn scope_with_port_in_name() {
    let a = parse_scope("repository:localhost:5000/foo:pull,push").unwrap();
    assert_eq!(a.name, "localhost:5000/foo");
    assert_eq!(a.actions, ["pull", "push"]);
}

#[test]
fn anonymous_cannot_pull_private() {
    let req = parse_scopes(["repository:private/secret:pull repository:library/a:pull,push"]);
    let got = grant(&Identity::Anonymous, &req);
    assert!(got[0].actions.is_empty());
    assert_eq!(got[1].actions, ["pull"]);
}
